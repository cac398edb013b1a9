"""Argument checks shared by the library's public functions: each returns the value as a plain Python number or
raises a one-line ``ValueError`` that names the argument and what it must be."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def plain_scalar(value: Any) -> Any:
    """A numpy or one-element torch scalar as the Python number it holds; anything else unchanged."""
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return value.item()
    return value


def positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` > 0 (numpy / torch scalars accepted; bools and floats are not)."""
    value = plain_scalar(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def non_negative_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` >= 0 (numpy / torch scalars accepted; bools and floats are not)."""
    value = plain_scalar(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")
    return value


def dropout_rate(value: Any, name: str = "dropout") -> float:
    """``value`` as a dropout probability in [0, 1) (numpy / torch scalars accepted; bools are not)."""
    value = plain_scalar(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}.")
    return value


def positive_number(name: str, value: Any) -> float:
    """``value`` as a number > 0 (numpy / torch scalars accepted; bools are not)."""
    value = plain_scalar(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}.")
    return value
