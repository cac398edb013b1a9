"""A lesson notebook run by nbclient in a kernel that stays alive, so that tests can read what its cells computed.

Used by tests/test_notebooks.py and tests/faults/test_notebooks.py, through the session fixtures ``lesson_workspace``
and ``lesson`` of tests/conftest.py.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
CELL_TIMEOUT_S = 900
_VALUE = "@@lesson-value@@ "


def make_workspace(base: Path) -> Path:
    """``base/notebooks`` (a copy of the lessons) beside ``base/data``, a link to the repository's ``data/``.

    The lessons read ``DATA_DIR = "../data"`` (the offline starter is generated there once and kept) and write
    ``../results/notebookNN``, which stays under ``base``: every test session trains afresh.
    """
    shutil.copytree(REPO / "notebooks", base / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    (REPO / "data").mkdir(exist_ok=True)
    (base / "data").symlink_to(REPO / "data", target_is_directory=True)
    return base


class LessonKernel:
    """One kernel running the cells of one lesson, in any order, from the lesson's folder, with smoke parameters.

    Use as a context manager (the kernel shuts down on exit). ``nb`` is this kernel's copy of the notebook: tests may
    change a cell's source before running it.
    """

    def __init__(self, workspace: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.nb = nbformat.read(workspace / "notebooks" / name, as_version=4)
        self.client = NotebookClient(self.nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(workspace / "notebooks")}})
        self.env = {**os.environ, "E2VPT_NOTEBOOK_SMOKE": "1", **(env or {})}

    def __enter__(self) -> "LessonKernel":
        self._context = self.client.setup_kernel(env=self.env)
        self._context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._context.__exit__(*exc)

    def index(self, start: str) -> int:
        """Index of the code cell whose source starts with ``start``."""
        return next(i for i, c in enumerate(self.nb.cells) if c.cell_type == "code" and c.source.startswith(start))

    def run_cell(self, index: int) -> nbformat.NotebookNode:
        """Execute the notebook's cell ``index``; the cell with its outputs (``CellExecutionError`` if it raised)."""
        return self.client.execute_cell(self.nb.cells[index], index)

    def run_all(self) -> None:
        """Every code cell in order, as Run ▸ Run All Cells does."""
        for index, cell in enumerate(self.nb.cells):
            if cell.cell_type == "code":
                self.run_cell(index)

    def run(self, source: str) -> str:
        """Execute ``source`` as an extra cell in the lesson's namespace; what it printed."""
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        try:
            self.client.execute_cell(cell, len(self.nb.cells) - 1)
        finally:
            self.nb.cells.pop()
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")

    def value(self, expression: str, setup: str = ""):
        """The JSON value of ``expression`` in the lesson's namespace (after running ``setup``, if given)."""
        printed = self.run(f"{setup}\nimport json as _lesson_json\n"
                           f"print({_VALUE!r} + _lesson_json.dumps({expression}))")
        line = next(line for line in printed.splitlines() if line.startswith(_VALUE))
        return json.loads(line[len(_VALUE):])

    def error(self, index: int) -> dict:
        """Run cell ``index``, which must raise: its error output (``ename``, ``evalue``, ``traceback`` lines)."""
        cell = self.nb.cells[index]
        try:
            self.run_cell(index)
        except Exception:  # nbclient's CellExecutionError; the error output below says what the student saw
            pass
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert len(errors) == 1, f"{self.name} cell {index} did not raise: {cell.outputs}"
        return errors[0]
