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


def _number(name: str, value: Any, ok: Any, must_be: str) -> float:
    """``value`` as a plain number (numpy / torch scalars accepted; bools are not) for which ``ok(value)`` holds."""
    value = plain_scalar(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
        raise ValueError(f"{name} must be {must_be}, got {value!r}.")
    return value


def dropout_rate(value: Any, name: str = "dropout") -> float:
    """``value`` as a dropout probability in [0, 1)."""
    return _number(name, value, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def positive_number(name: str, value: Any) -> float:
    """``value`` as a number > 0."""
    return _number(name, value, lambda v: v > 0, "a number > 0")


def non_negative_number(name: str, value: Any, hint: str = "") -> float:
    """``value`` as a number >= 0; ``hint`` (e.g. the method's usual value) goes in brackets in the message."""
    return _number(name, value, lambda v: v >= 0, "a number >= 0" + (f" ({hint})" if hint else ""))
