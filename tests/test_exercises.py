"""The lessons' exercises answer with a hint, not a traceback: :func:`e2vpt_viz.notebook.check_answer` and a scan of
every lesson's code cells (the notebooks are read, not executed)."""
import json
from pathlib import Path

import pytest

from e2vpt_viz.notebook import FILL_IN, check_answer

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_a_wrong_answer_prints_the_hint_and_never_the_truth(capsys):
    assert check_answer(46_000, 46_080, hint="count the prompts of every block, not only the first.") is False
    out = capsys.readouterr().out
    assert out == "Not quite: count the prompts of every block, not only the first.\n"
    assert "46080" not in out and "46,080" not in out
    assert check_answer("L * P * D", 46_080, hint="write a number, not text.") is False  # no TypeError either
    assert "46080" not in capsys.readouterr().out


def test_a_right_answer_prints_correct_with_the_optional_follow_up(capsys):
    assert check_answer(46_080, 46_080, hint="-") is True
    assert capsys.readouterr().out == "Correct!\n"
    assert check_answer([1, 2, 3], [1, 2, 3], hint="-", correct="Segment budgets: [1, 3].") is True
    assert capsys.readouterr().out == "Correct! Segment budgets: [1, 3].\n"


def test_tolerance_accepts_answers_close_enough(capsys):
    assert check_answer(5.03, 5.0, hint="subtract the two means.", tolerance=0.1) is True
    assert check_answer(5.2, 5.0, hint="subtract the two means.", tolerance=0.1) is False
    assert capsys.readouterr().out == "Correct!\nNot quite: subtract the two means.\n"
    assert check_answer(5.03, 5.0, hint="exact, please.") is False  # no tolerance: equality


def test_no_answer_yet_asks_for_one(capsys):
    assert check_answer(None, 3, hint="-") is False
    assert capsys.readouterr().out == FILL_IN + "\n"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem.split("_")[0])
def test_lesson_exercises_use_check_answer_not_assert(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    asserting = [s for s in code if "assert answer" in s]
    assert not asserting, f"{path.name}: an exercise asserts (a wrong answer would get a traceback)"
    exercises = [s for s in code if "answer = None" in s]
    assert len(exercises) == 1 and "check_answer(answer, " in exercises[0], f"{path.name}: use check_answer"
