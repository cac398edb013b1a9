"""Timing helper shared by the benchmarks (run them as scripts: ``python benchmarks/<name>.py``)."""
from __future__ import annotations

import time
from typing import Callable

import torch


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds that ``fn()`` takes, with CUDA synchronised before and after so queued kernels are counted."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start
