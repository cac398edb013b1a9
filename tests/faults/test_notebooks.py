"""Case 9: notebooks 01 and 03 run twice in one kernel, and again after a kernel restart, give the same results; a
cell run before the cells it builds on says which cells to run first (one line, no NameError traceback).

The first run is the test-suite's shared run of the lesson in its default mode (the ``lesson`` fixture of tests/conftest.py, which
tests/test_notebooks.py reads too): nothing here trains a lesson again. Running every cell a second time, in the same
kernel or in a restarted one, reads back the checkpoints that run wrote; those two cases execute the whole lesson
again, so they are marked slow.
"""
from __future__ import annotations

import pytest

from notebook_kernel import LessonKernel

from .conftest import same_numbers

LESSONS = ["01_train_cub.ipynb", "03_pruning_tradeoffs.ipynb"]
# Every number a lesson shows, read from its kernel.
PROBES = {
    "01_train_cub.ipynb": """{
    "methods": {r["method"]: {"test_acc": r["test_acc"], "history": [[h["train_loss"], h["val_acc"]] for h in r["history"]],
                              "tunable": r["parameters"]["tunable"]} for r in results},
    "counts": counts, "scores": scores.token.tolist(), "segment_scores": scores.segment.tolist(),
    "sweep": {str(ratio): result["acc"] for ratio, result in sweep.results.items()}}""",
    "03_pruning_tradeoffs.ipynb": """{
    "before": before["test_acc"], "history": [[h["train_loss"], h["val_acc"]] for h in before["history"]],
    "signed": signed.token.tolist(), "abs": absolute.token.tolist(), "segment": signed.segment.tolist(),
    "sweep": {str(ratio): result["acc"] for ratio, result in sweep.results.items()},
    "rewind": rewind["runs"], "best": best}""",
}
# A cell run too early in a restarted kernel (after the parameters and set-up cells), and the one line it must show.
LATER_CELL = {
    "01_train_cub.ipynb": ("display(Markdown(runs_markdown(results)))",
                           "results is not defined yet: run the cells up to “3 · Train the methods side by side” first "
                           "(after a kernel restart: Run ▸ Run All Above Selected Cell)."),
    "03_pruning_tradeoffs.ipynb": ("rewind = lesson_rewinding(",
                                   "signed, loaders, rows are not defined yet: run the cells up to “3 · Instant pruning: "
                                   "the trade-off curve” first (after a kernel restart: Run ▸ Run All Above Selected "
                                   "Cell)."),
}
# The set-up cell run before the parameters cell: the parameters it reads.
SETUP_READS = {"01_train_cub.ipynb": "DATASET, DATA_DIR, BACKBONE, EPOCHS, DEVICE, TRAIN",
               "03_pruning_tradeoffs.ipynb": "DATASET, DATA_DIR, BACKBONE, EPOCHS, DEVICE, TRAIN"}


def setup_index(kernel: LessonKernel) -> int:
    return kernel.index("from e2vpt_viz.notebook import lesson_setup")


@pytest.mark.parametrize("name", LESSONS, ids=["01", "03"])
def test_restart_then_a_later_cell_first(name, lesson_workspace, outcome):
    """9a · restarted kernel: the set-up cell before the parameters, then a later cell first → one line each"""
    with LessonKernel(lesson_workspace, name) as kernel:  # a restarted kernel: nothing is defined
        setup = setup_index(kernel)
        first = kernel.error(setup)
        assert first["ename"] == "NameError" and first["traceback"] == [
            f"{SETUP_READS[name]} are not defined yet: run the cells up to “Parameters” first "
            "(after a kernel restart: Run ▸ Run All Above Selected Cell)."]
        kernel.run_cell(next(i for i, c in enumerate(kernel.nb.cells) if "parameters" in c.metadata.get("tags", [])))
        kernel.run_cell(setup)
        start, message = LATER_CELL[name]
        later = kernel.error(kernel.index(start))
        assert later["traceback"] == [message]
    outcome(f"set-up cell first: {first['traceback'][0][:60]}…; then a later cell: {later['traceback'][0][:70]}…")


@pytest.mark.slow  # re-executes a lesson; notebook 01 stands for the lessons (03's cell order is case 9a)
@pytest.mark.parametrize("lesson", LESSONS[:1], indirect=True, ids=["01"])
def test_run_every_cell_again_in_the_same_kernel(lesson, outcome):
    """9b · every cell of a lesson run a second time in the same kernel → the same numbers, nothing retrains

    Protects: Run All twice (a student's habit) finds the checkpoints the first run wrote and shows the same results.
    """
    first = lesson.value(PROBES[lesson.name])
    lesson.run_all()
    second = lesson.value(PROBES[lesson.name])
    assert same_numbers(first, second)
    outcome(f"run twice in one kernel: same {', '.join(sorted(first))}")


@pytest.mark.slow  # re-executes a lesson; notebook 01 stands for the lessons (03's cell order is case 9a)
@pytest.mark.parametrize("lesson", LESSONS[:1], indirect=True, ids=["01"])
def test_run_all_after_a_restart(lesson, lesson_workspace, outcome):
    """9c · Run All in a restarted kernel → the same numbers as the first run

    Protects: after a kernel restart (or a crash, or the next day) the lesson shows exactly the results shown
    before: the shipped runs evaluated again, trained runs read back from OUTPUT_DIR.
    """
    first = lesson.value(PROBES[lesson.name])
    with LessonKernel(lesson_workspace, lesson.name) as kernel:
        kernel.run_all()
        again = kernel.value(PROBES[lesson.name])
    assert same_numbers(first, again)
    outcome(f"Run All after a restart: same {', '.join(sorted(first))}")
