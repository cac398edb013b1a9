"""Case 9: notebooks 01 and 03 run twice in one kernel, and again after a kernel restart, give the same results; a
later cell run first after a restart says which cells to run first (no NameError).

The notebooks run with nbclient on a temporary copy, E2VPT_NOTEBOOK_SMOKE=1 and one CPU thread, on a tiny starter
dataset (3 species, 16 training images each) in ``../data/starter``; notebook 01 gets ``EPOCHS = 6`` and two of its
methods (papermill style, a cell after the parameters cell), so that its accuracy checks hold on that tiny set and
the three passes stay short.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from data_prep.synthetic import generate_synthetic

from .conftest import REPO, same_numbers

PROBES = {
    "01_train_cub.ipynb": """
import json as _json
print("PROBE", _json.dumps({
    "methods": {r["method"]: {"test_acc": r["test_acc"], "history": [[h["train_loss"], h["val_acc"]] for h in r["history"]],
                              "tunable": r["parameters"]["tunable"]} for r in results},
    "counts": counts, "scores": scores.token.tolist(), "segment_scores": scores.segment.tolist(),
    "sweep": {str(ratio): result["acc"] for ratio, result in sweep.results.items()}}))
""",
    "03_pruning_tradeoffs.ipynb": """
import json as _json
print("PROBE", _json.dumps({
    "before": before["test_acc"], "history": [[h["train_loss"], h["val_acc"]] for h in before["history"]],
    "signed": signed.token.tolist(), "abs": absolute.token.tolist(), "segment": signed.segment.tolist(),
    "sweep": {str(ratio): result["acc"] for ratio, result in sweep.results.items()},
    "rewind": rewind["runs"], "best": best}))
""",
}
# A cell run first after a restart, and what it must say.
LATER_CELL = {
    "01_train_cub.ipynb": ("display(Markdown(markdown_table(results)))",
                           "results, num_classes are not defined yet: run the cells up to “3 · Train the methods side "
                           "by side” first (after a kernel restart: Run ▸ Run All Above Selected Cell)."),
    "03_pruning_tradeoffs.ipynb": ("rewind = prune_and_rewind(",
                                   "cfg, loaders, signed, rows, REWIND_TOKENS, REWIND_SEGMENTS are not defined yet: run "
                                   "the cells up to “3 · Instant pruning” first"),
}
INJECTED = {"01_train_cub.ipynb": 'EPOCHS = 6\nMETHODS = ["linear", "e2vpt"]', "03_pruning_tradeoffs.ipynb": "EPOCHS = 2"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A copy of the notebooks beside ``data/starter`` (tiny) and the ``results/`` they write."""
    base = tmp_path_factory.mktemp("notebooks")
    (base / "notebooks").mkdir()
    for name in PROBES:
        shutil.copyfile(REPO / "notebooks" / name, base / "notebooks" / name)
    generate_synthetic(base / "data" / "starter", task="target", seed=0, num_classes=3, train_per_class=16,
                       val_per_class=2, test_per_class=6)
    return base


def load(workspace: Path, name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(workspace / "notebooks" / name, as_version=4)
    position = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    injected = nbformat.v4.new_code_cell(INJECTED[name])
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(position + 1, injected)
    return nb


class Kernel:
    """One kernel running cells of a notebook, in any order, from the notebook's folder."""

    def __init__(self, workspace: Path, nb: nbformat.NotebookNode) -> None:
        self.nb = nb
        self.client = NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(workspace / "notebooks")}})
        self.env = {**os.environ, "E2VPT_NOTEBOOK_SMOKE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def __enter__(self) -> "Kernel":
        self.context = self.client.setup_kernel(env=self.env)
        self.context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.context.__exit__(*exc)

    def run_all(self) -> None:
        for index, cell in enumerate(self.nb.cells):
            if cell.cell_type == "code":
                self.client.execute_cell(cell, index)

    def run(self, source: str) -> str:
        """Execute ``source`` as an extra cell; its printed output."""
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        try:
            self.client.execute_cell(cell, len(self.nb.cells) - 1)
        finally:
            self.nb.cells.pop()
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")

    def probe(self, name: str) -> dict:
        line = next(line for line in self.run(PROBES[name]).splitlines() if line.startswith("PROBE "))
        return json.loads(line[len("PROBE "):])


@pytest.mark.parametrize("name", list(PROBES))
def test_run_twice_then_restart_and_jump_ahead(name, workspace, outcome):
    """9 · a notebook's cells run twice, then after a restart a later cell first → same results / 'run … first'"""
    nb = load(workspace, name)
    with Kernel(workspace, nb) as kernel:
        kernel.run_all()
        first = kernel.probe(name)
        kernel.run_all()  # every cell again, same kernel: checkpoints are read back, nothing retrains
        second = kernel.probe(name)
    assert same_numbers(first, second)

    start, message = LATER_CELL[name]
    index, later = next((i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code" and start in c.source)
    with Kernel(workspace, nb) as kernel:  # a restarted kernel: nothing is defined
        with pytest.raises(CellExecutionError) as error:
            kernel.client.execute_cell(later, index)
        assert error.value.ename == "RunEarlierCellsError" and message in error.value.evalue
        assert "NameError" not in str(error.value)
        kernel.run_all()  # then Run All, as the message says
        third = kernel.probe(name)
    assert same_numbers(first, third)
    where = "cell" if name.startswith("01") else "rewinding cell"
    outcome(f"run twice + after restart: same {', '.join(sorted(first))}; {where} first after restart: "
            f"RunEarlierCellsError: {error.value.evalue[:70]}…")
