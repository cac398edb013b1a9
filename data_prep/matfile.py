"""Reading MATLAB ``.mat`` annotation files (Flowers, Dogs, Cars) with scipy into plain Python values."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import loadmat

from data_prep.layout import DatasetLayoutError


def load_mat(path: Path, *keys: str) -> dict:
    """The variables ``keys`` of ``path`` (squeezed: cell arrays become 1-d object arrays, structs records)."""
    try:
        content = loadmat(path, squeeze_me=True)
    except (OSError, ValueError) as error:
        raise DatasetLayoutError(f"cannot read {path}: {error}") from None
    missing = [key for key in keys if key not in content]
    if missing:
        raise DatasetLayoutError(f"{path} has no {', '.join(missing)} variable")
    return {key: content[key] for key in keys}


def strings(array) -> list[str]:
    """A MATLAB cell array of char (or a struct field of strings) as a list of str."""
    return [str(item) for item in np.atleast_1d(array)]


def ints(array) -> list[int]:
    """A MATLAB numeric array (any shape) as a flat list of int."""
    return [int(item) for item in np.atleast_1d(array).ravel()]
