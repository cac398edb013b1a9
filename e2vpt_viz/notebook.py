"""Cell order in the lesson notebooks: a cell run before the cells it builds on stops with one clear line.

After a kernel restart, or when a student jumps ahead, a cell that uses ``results`` or ``loaders`` would fail with a
bare ``NameError``. Each such cell starts with::

    from e2vpt_viz.notebook import require
    require("results", "num_classes", after="“3 · Train the methods side by side”")

and then stops with ``RunEarlierCellsError: results, num_classes are not defined yet: run the cells up to
“3 · Train the methods side by side” first ...`` (no traceback in Jupyter) when they are missing.
"""
from __future__ import annotations

import sys


class RunEarlierCellsError(RuntimeError):
    """A notebook cell ran before the cells that define what it uses."""

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback: the message is the whole story."""
        return [f"{type(self).__name__}: {self}"]


def require(*names: str, after: str) -> None:
    """Stop the calling notebook cell unless every one of ``names`` is defined.

    Args:
        names: variables (or imported names) that the cell uses from earlier cells.
        after: the earlier cell to run first, as a student sees it, e.g. "“1 · The data”" or "the set-up cell".

    Raises:
        RunEarlierCellsError: naming the missing variables and the cell to run first.
    """
    namespace = sys._getframe(1).f_globals  # the notebook's namespace when called from a cell
    missing = [name for name in names if name not in namespace]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise RunEarlierCellsError(f"{', '.join(missing)} {verb} not defined yet: run the cells up to {after} first "
                                   "(after a kernel restart: Run ▸ Run All Above Selected Cell).")
