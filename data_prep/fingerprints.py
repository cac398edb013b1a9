"""Committed split fingerprints: sha256 of each split's sorted keys joined by newlines, for ``--seed 0``.

After preparing a dataset, ``python -m data_prep`` compares its splits with these values and refuses a
mismatch, so a changed split (other dataset files, changed split code) is caught.

None means "not known yet": these tables were written without access to the real archives, so nobody has
computed them. The first run on the real data prints a line to paste here, e.g.
``"cub": {"train": "…", "val": "…", "test": "…"},`` (also saved as ``split_fingerprints.json`` in the root).
"""

SEED = 0

COMMITTED: dict[str, dict[str, str | None]] = {
    "cub": {"train": None, "val": None, "test": None},
    "nabirds": {"train": None, "val": None, "test": None},
    "flowers": {"train": None, "val": None, "test": None},
    "dogs": {"train": None, "val": None, "test": None},
    "cars": {"train": None, "val": None, "test": None},
}
