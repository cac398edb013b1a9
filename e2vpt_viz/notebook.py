"""The lessons' kernel set-up: clear one-line errors, cell-order hints, and a thread count that suits the machine.

The set-up cell of every lesson starts with::

    from e2vpt_viz.notebook import lesson_setup
    lesson_setup("01_train_cub.ipynb")

It does three things in the running kernel:

* **One-line errors.** The library's own errors, the ones a student fixes by changing a parameter (a mismatched
  checkpoint, a dataset layout, a backbone that cannot load, a setting the shipped results were not made with, ...),
  show as one line naming the value and the fix, instead of a long traceback with the useful line off-screen.
* **Torch threads** (:func:`use_free_cores`): one per core that is not already busy, so a second busy core slows
  training about 2x, not 3-10x (two threads fighting one busy core).
* **Cell-order hints** (:func:`cell_order_hints`), below.

From then on, in that kernel, a ``NameError`` for a name that one of the notebook's cells defines shows one line
instead of a traceback, e.g.::

    loaders, signed, rows are not defined yet: run the cells up to “3 · Instant pruning: the trade-off curve” first
    (after a kernel restart: Run ▸ Run All Above Selected Cell).

The map from names to sections is read from the notebook file itself: every name a code cell binds at top level
(assignment, ``for`` target, import, ``def``, ``class``, ``with ... as``) belongs to the first cell that binds it, and
that cell to the last markdown heading above it. Any other ``NameError`` (a typo, a name the student introduced, or
one raised inside library code) keeps IPython's usual traceback. The hook lives in the kernel, so a cell run before the
set-up cell itself after a kernel restart still gets Python's plain ``NameError``; the set-up cell, run first, names
the parameters cell.
"""
from __future__ import annotations

import ast
import builtins
import json
import linecache
import os
import re
import time
from pathlib import Path
from typing import Optional

import torch

from .backbones import BackboneError
from .checkpoint import CheckpointMismatchError, CheckpointReadError, CheckpointWriteError
from .data import DatasetLayoutError
from .pruning import PruningError
from .run_folder import RunFolderBusyError
from .training import TrainingDivergedError, TrainingOutOfMemoryError

RUN_ALL_ABOVE = "(after a kernel restart: Run ▸ Run All Above Selected Cell)"


class LessonSettingsError(ValueError):
    """A lesson parameter that cannot work with the others (e.g. ``TRAIN="shipped"`` with another schedule); the
    message names the parameter and the value to use instead."""


# Errors a student fixes by changing a parameter or preparing data: one line in a lesson (set up by lesson_setup).
USER_ERRORS = (LessonSettingsError, BackboneError, CheckpointMismatchError, CheckpointReadError, CheckpointWriteError,
               DatasetLayoutError, PruningError, RunFolderBusyError, TrainingDivergedError, TrainingOutOfMemoryError,
               FileNotFoundError)


def _cpu_times(cpus: set[int]) -> Optional[dict[int, tuple[int, int]]]:
    """``{cpu: (busy ticks, busy + idle ticks)}`` for ``cpus`` from ``/proc/stat`` (None where it is not Linux)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    times = {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            user, nice, system, idle, iowait, irq, softirq = map(int, fields[:7])  # steal left out: not ours to use
            busy = user + nice + system + irq + softirq
            times[int(name[3:])] = (busy, busy + idle + iowait)
    return times


def free_cores(sample_s: float = 0.5) -> int:
    """Cores of this process's CPU set that other work is not using now, at least 1: the set's size minus the busy
    share of its cores over ``sample_s`` seconds (``/proc/stat``; elsewhere the 1-minute load average), rounded.

    A sample, not the load average, on Linux: the load average still counts a lesson that finished a minute ago."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # macOS, Windows
        cpus = set(range(os.cpu_count() or 1))
    before = _cpu_times(cpus)
    if before:
        time.sleep(sample_s)
        after = _cpu_times(cpus)
        busy = sum((after[c][0] - before[c][0]) / max(1, after[c][1] - before[c][1]) for c in before)
    else:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):
            busy = 0.0
    return max(1, min(len(cpus), len(cpus) - round(busy)))


def use_free_cores() -> str:
    """Set torch's CPU threads to :func:`free_cores` and say so in one line.

    Why: on 2 cores with one busy, two torch threads wait on each other at every synchronisation point (measured in
    ``benchmarks/results/threads_cpu.json``); one thread on the free core is faster. On a GPU the CPU threads barely
    matter. ``OMP_NUM_THREADS`` set by the user wins.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return f"torch uses {torch.get_num_threads()} CPU threads (OMP_NUM_THREADS)."
    free = free_cores()
    torch.set_num_threads(free)
    return f"torch uses {free} CPU thread{'s' * (free > 1)} (the cores not busy with other work)."


def lesson_setup(notebook: str | Path) -> str:
    """The set-up of a lesson's kernel: one-line errors, cell-order hints, torch threads. Returns a one-line note
    for the set-up cell to show (the thread count)."""
    cell_order_hints(notebook)
    return use_free_cores()


def _bound_names(statements: list[ast.stmt]) -> list[str]:
    """Names that module-level ``statements`` bind, in order (not those bound inside functions or comprehensions)."""
    names: list[str] = []

    def targets(node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            names.append(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for element in node.elts:
                targets(element)
        elif isinstance(node, ast.Starred):
            targets(node.value)

    for statement in statements:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(statement.name)  # what the body binds is local to it
            continue
        if isinstance(statement, ast.Assign):
            for target in statement.targets:
                targets(target)
        elif isinstance(statement, (ast.AugAssign, ast.AnnAssign)):
            targets(statement.target)
        elif isinstance(statement, (ast.Import, ast.ImportFrom)):
            names += [alias.asname or alias.name.split(".")[0] for alias in statement.names if alias.name != "*"]
        elif isinstance(statement, (ast.For, ast.AsyncFor)):
            targets(statement.target)
        elif isinstance(statement, (ast.With, ast.AsyncWith)):
            for item in statement.items:
                if item.optional_vars is not None:
                    targets(item.optional_vars)
        for block in ("body", "orelse", "finalbody"):  # if / for / while / with / try blocks run at module level
            names += _bound_names(getattr(statement, block, []))
        for handler in getattr(statement, "handlers", []):
            if handler.name:
                names.append(handler.name)
            names += _bound_names(handler.body)
    return names


def _parse(source: str) -> ast.Module | None:
    """The cell's syntax tree; None for cells Python cannot parse (IPython magics, shell escapes)."""
    try:
        return ast.parse(source)
    except SyntaxError:
        return None


def defining_sections(notebook: dict) -> dict[str, str]:
    """``{name: heading of the section whose cell first binds it}`` for every name the notebook's code cells bind.

    Args:
        notebook: the notebook's JSON (``cells`` with ``cell_type`` and ``source``, a string or a list of lines),
            as ``json.load`` or nbformat reads it.
    """
    sections: dict[str, str] = {}
    heading = "the top of the notebook"
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            text = re.sub(r"^```.*?^```", "", source, flags=re.M | re.S)  # a '# comment' in code is no heading
            titles = re.findall(r"^#+\s+(.+?)\s*#*\s*$", text, flags=re.M)
            heading = titles[-1] if titles else heading
        elif cell["cell_type"] == "code" and (tree := _parse(source)) is not None:
            for name in _bound_names(tree.body):
                sections.setdefault(name, heading)
    return sections


def _names_used(source: str) -> list[str]:
    """Names the cell reads without binding them itself, in order of first use."""
    tree = _parse(source)
    if tree is None:
        return []
    bound = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load)}
    bound |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    bound |= set(_bound_names(tree.body))
    used = sorted((node for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)),
                  key=lambda node: (node.lineno, node.col_offset))
    used = [node.id for node in used]
    return [name for name in dict.fromkeys(used) if name not in bound]


def missing_names_message(name: str, cell_source: str, namespace: dict, sections: dict[str, str]) -> str | None:
    """The one-line hint for a ``NameError`` on ``name`` in a cell, or None when the notebook does not define it.

    Args:
        name: the undefined name.
        cell_source: the source of the cell that raised (its other undefined names are listed too).
        namespace: the kernel's user namespace (what is defined now).
        sections: :func:`defining_sections` of the notebook.
    """
    if name not in sections:
        return None
    order = list(sections)
    missing = [n for n in _names_used(cell_source)
               if n in sections and n not in namespace and not hasattr(builtins, n)]
    missing = missing if name in missing else [name, *missing]
    section = sections[max(missing, key=order.index)]
    verb = "is" if len(missing) == 1 else "are"
    return f"{', '.join(missing)} {verb} not defined yet: run the cells up to “{section}” first {RUN_ALL_ABOVE}."


def _undefined_name(error: NameError) -> str | None:
    name = getattr(error, "name", None)
    if name:
        return name
    found = re.search(r"name '(\w+)' is not defined", str(error))
    return found.group(1) if found else None


def cell_order_hints(notebook: str | Path) -> bool:
    """Turn a ``NameError`` for a name that a cell of ``notebook`` defines into a one-line "run ... first" hint.

    Call once, at the top of the lesson's set-up cell (calling again replaces the hook). Registers an IPython custom
    exception handler for ``NameError`` and :data:`USER_ERRORS` in the running kernel.

    Args:
        notebook: the lesson's file name, relative to the kernel's working directory (the notebook's folder).

    Returns:
        True when the hook is installed (the library's :data:`USER_ERRORS` become one line too); False outside
        IPython. When the notebook file cannot be read, ``NameError`` keeps its usual traceback.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    try:
        # Read as JSON, not with nbformat, whose import takes seconds (its schema validation).
        sections = defining_sections(json.loads(Path(notebook).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):  # an unreadable notebook only costs the hints, never the lesson
        sections = {}

    def handler(shell, etype, value, tb, tb_offset=None):
        """IPython's custom exception handler: the hint as the whole error output, else the usual traceback."""
        frames, step = [], tb
        while step is not None:
            frames.append(step.tb_frame)
            step = step.tb_next
        cell_frames = [frame for frame in frames if frame.f_globals is shell.user_ns]
        if isinstance(value, USER_ERRORS) and not isinstance(value, NameError):
            message = f"{etype.__name__}: {value}"
            shell._showtraceback(etype, value, [message])
            return [message]
        name = None if isinstance(value, UnboundLocalError) else _undefined_name(value)
        message = None
        if name and cell_frames and frames[-1] is cell_frames[-1]:  # raised by notebook code, not inside a library
            source = "".join(linecache.getlines(cell_frames[0].f_code.co_filename))
            message = missing_names_message(name, source, shell.user_ns, sections)
        if message is None:
            shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
            return None
        shell._showtraceback(etype, value, [message])  # the error output (and execute reply) carry this one line
        return [message]

    shell.set_custom_exc((NameError, *USER_ERRORS), handler)
    return True


FILL_IN = "Fill in `answer` and run this cell again."


def check_answer(answer, truth, hint: str, tolerance: float = 0, correct: str = "") -> bool:
    """Check a lesson exercise and say so in one printed line, never raising and never printing ``truth``.

    Args:
        answer: the student's answer; None (the exercise's starting value) asks for one.
        truth: the right answer, computed by the cell (e.g. from ``count_parameters``).
        hint: what to look at when the answer is wrong; it must not give the answer away.
        tolerance: for numbers, the largest accepted ``abs(answer - truth)``; 0 asks for equality.
        correct: an optional follow-up printed after "Correct!" (a next question, a related number).

    Returns:
        True when the answer is right. Prints :data:`FILL_IN` for None, "Correct!" (and ``correct``) for a right
        answer, otherwise "Not quite: " and ``hint``.
    """
    if answer is None:
        print(FILL_IN)
        return False
    try:
        right = abs(answer - truth) <= tolerance if tolerance else bool(answer == truth)
    except (TypeError, ValueError):  # an answer of another kind (a string for a number, an array, ...) is wrong
        right = False
    print(f"Correct! {correct}".rstrip() if right else f"Not quite: {hint}")
    return bool(right)
