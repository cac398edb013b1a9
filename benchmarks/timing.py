"""Helpers shared by the benchmarks (run them as scripts: ``python benchmarks/<name>.py``): timing, and the JSON
record a benchmark writes with ``--write benchmarks/results/<name>.json`` (what ``python -m e2vpt_viz docs`` renders
into docs/performance.md)."""
from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

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


class Record:
    """What a benchmark prints (:meth:`say`), kept for its JSON record at ``path`` (:meth:`write`; None: no record).
    A ``path`` that is not a ``.json`` file is refused at once, before the benchmark runs."""

    def __init__(self, path: Optional[str]) -> None:
        if path is not None and not path.endswith(".json"):
            raise SystemExit(f"error: --write {path}: records are JSON files, e.g. benchmarks/results/<name>.json")
        self.path = path
        self.lines: list[str] = []

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)

    def write(self, script: str, argv: Optional[Sequence[str]], device: str) -> None:
        """Write ``{"benchmark", "command", "device", "torch", "date", "output", "notes"}`` to the record's path.
        ``notes`` starts empty: a person adds what the numbers mean."""
        if self.path is None:
            return
        args = sys.argv[1:] if argv is None else list(argv)
        record = {"benchmark": f"benchmarks/{script}", "command": " ".join(["python", f"benchmarks/{script}", *args]),
                  "device": device, "torch": torch.__version__, "date": datetime.date.today().isoformat(),
                  "output": self.lines, "notes": []}
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        Path(self.path).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
