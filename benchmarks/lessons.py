"""How long a student waits: each lesson run top to bottom in a real Jupyter kernel with its default parameters.

For every notebook, from "Run All" in a started kernel (nbclient, the notebook's folder as working directory):

* the first figure: seconds until the first output that is a figure (plotly, a widget view that is not a progress
  bar, an image) reaches the notebook;
* the lesson's central element: seconds until the cell that builds it has finished (01 pruning slider, 02 attention
  explorer, 03 score heatmap and slider, 04 accuracy-vs-parameters, 05 few-shot curves, 06
  accuracy by backbone);
* the whole notebook;
* every cell over 10 s, and whether it showed progress (a progress bar or a figure updated while it ran).

Budgets on 2 CPU cores: first figure <= 30 s, central element <= 60 s, whole notebook <= 180 s. Run it on idle cores
(the numbers are what a student sees on a quiet laptop):

    python benchmarks/lessons.py --write benchmarks/results/lessons_cpu.json
    python benchmarks/lessons.py --notebooks 01_train_cub.ipynb      # one lesson
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

import nbformat
from nbclient import NotebookClient

from timing import Record

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("01_train_cub.ipynb", "02_kv_prompt_attention.ipynb", "03_pruning_tradeoffs.ipynb",
             "04_method_zoo.ipynb", "05_pvp_few_shot.ipynb", "06_backbones.ipynb")
# The call that builds each lesson's central interactive element (the first code cell containing it).
CENTRAL = {"01": "PruningSlider(", "02": "AttentionExplorer(", "03": "PruningSlider(", "04": "accuracy_vs_parameters(",
           "05": "few_shot_curves(", "06": "accuracy_by_backbone("}
BUDGETS = {"first_figure_s": 30, "central_s": 60, "total_s": 180}
FIGURE_MIMES = ("application/vnd.plotly.v1+json", "application/vnd.jupyter.widget-view+json", "image/png")
PROGRESS_MARKS = ("application/vnd.jupyter.widget-view+json", "%|")  # tqdm.auto's widget or text bar, a live figure


def _is_progress_bar(data: dict) -> bool:
    """A tqdm.auto bar: a widget view whose text form is the bar (``  40%|████      | 4/10 ...``)."""
    return PROGRESS_MARKS[1] in str(data.get("text/plain", ""))


class _TimedClient(NotebookClient):
    """nbclient that notes when the first figure (not a progress bar) reaches the notebook: what a student sees."""

    started: float = 0.0
    first_figure_s: Optional[float] = None

    def output(self, outs, msg, display_id, cell_index):
        data = msg.get("content", {}).get("data", {})
        if (self.first_figure_s is None and any(m in FIGURE_MIMES for m in data) and not _is_progress_bar(data)):
            self.first_figure_s = time.perf_counter() - self.started
        return super().output(outs, msg, display_id, cell_index)


def time_lesson(workspace: Path, name: str, timeout: int = 1200) -> dict:
    """Run one lesson in a fresh kernel; seconds to its first figure (when it arrives), its central element (when
    the cell that builds it has finished) and its end."""
    nb = nbformat.read(workspace / "notebooks" / name, as_version=4)
    client = _TimedClient(nb, timeout=timeout, kernel_name="python3",
                          resources={"metadata": {"path": str(workspace / "notebooks")}})
    central_marker = CENTRAL[name[:2]]
    central_index = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and central_marker in c.source)
    times: dict[str, float] = {}
    slow_cells = []
    with client.setup_kernel(env={k: v for k, v in os.environ.items() if k != "E2VPT_NOTEBOOK_SMOKE"}):
        start = client.started = time.perf_counter()
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            began = time.perf_counter()
            client.execute_cell(cell, index)
            done = time.perf_counter() - start
            if index == central_index:
                times["central_s"] = done
            if time.perf_counter() - began > 10:
                shown = (any(m in PROGRESS_MARKS[:1] for o in cell.outputs for m in o.get("data", {}))
                         or PROGRESS_MARKS[1] in "".join(o.get("text", "") for o in cell.outputs))
                slow_cells.append({"cell": index, "seconds": round(time.perf_counter() - began, 1),
                                   "first_line": cell.source.splitlines()[0][:80], "progress_shown": shown})
        times["total_s"] = time.perf_counter() - start
        times["first_figure_s"] = client.first_figure_s if client.first_figure_s is not None else times["total_s"]
    times = {k: times[k] for k in ("first_figure_s", "central_s", "total_s")}
    return {"notebook": name, **{k: round(v, 1) for k, v in times.items()}, "slow_cells": slow_cells,
            "within_budget": all(times[k] <= b for k, b in BUDGETS.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", nargs="+", default=list(NOTEBOOKS))
    parser.add_argument("--write", help="also write a JSON record (e.g. benchmarks/results/lessons_cpu.json)")
    args = parser.parse_args()
    record = Record(args.write)
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        shutil.copytree(REPO / "notebooks", workspace / "notebooks",
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        (REPO / "data").mkdir(exist_ok=True)
        (workspace / "data").symlink_to(REPO / "data", target_is_directory=True)
        from data_prep.synthetic import ensure_synthetic

        ensure_synthetic(REPO / "data" / "starter", task="target", workers=1)  # generated once, not timed
        rows = [time_lesson(workspace, name) for name in args.notebooks]
    record.say(f"budgets (s): first figure <= {BUDGETS['first_figure_s']}, central element <= {BUDGETS['central_s']}, "
               f"whole notebook <= {BUDGETS['total_s']}; {os.cpu_count()} CPU cores, default parameters")
    for row in rows:
        slow = "; ".join(f"cell {c['cell']} {c['seconds']} s{' (progress shown)' if c['progress_shown'] else ' (NO progress)'}"
                         for c in row["slow_cells"]) or "none"
        record.say(f"{row['notebook']}: first figure {row['first_figure_s']} s, central element {row['central_s']} s, "
                   f"whole notebook {row['total_s']} s; within budget: {row['within_budget']}; cells over 10 s: {slow}")
    record.write("lessons.py", None, f"{os.cpu_count()} CPU cores, no GPU")
    if args.write:  # the rows as data too, for the docs and the budget test
        import json

        data = json.loads(Path(args.write).read_text())
        data["rows"], data["budgets"] = rows, BUDGETS
        Path(args.write).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
