"""Notebook widgets: thin wiring between plotly figures from :mod:`e2vpt_viz.plots` and training callbacks.

Where the widget front end is unavailable (no ``anywidget``, VS Code, nbconvert, CI) the same figures are shown as
static plotly figures refreshed through a display handle.
"""
from __future__ import annotations

from typing import Optional

import plotly.graph_objects as go

from .plots import CURVE_PANELS, pruning_tradeoff, training_curves


def figure_widget_available() -> bool:
    """True when plotly's FigureWidget can be built (plotly >= 6 needs anywidget)."""
    try:
        go.FigureWidget()
        return True
    except ImportError:
        return False


class LiveCurves:
    """Live loss / accuracy curves for several runs; pass ``curves.callback(name)`` to ``fit`` or ``train_run``.

    Uses a ``go.FigureWidget`` updated once per epoch inside ``batch_update`` (one message to the front end), or a
    static figure re-displayed through a display handle when widgets are unavailable (``static=True`` forces it).
    """

    def __init__(self, static: Optional[bool] = None) -> None:
        self.static = not figure_widget_available() if static is None else static
        self.histories: dict[str, list[dict]] = {}
        self.figure = training_curves({}, go.Figure if self.static else go.FigureWidget)
        self._handle = None

    def show(self) -> "LiveCurves":
        from IPython.display import display

        self._handle = display(self.figure, display_id=True)
        return self

    def callback(self, name: str):
        """A ``callback(record, model)`` that appends each epoch's record to run ``name``."""
        def on_epoch(record: dict, model=None) -> None:
            self.add(name, record)
        return on_epoch

    def add(self, name: str, record: dict) -> None:
        """Append one epoch record to run ``name`` and refresh the figure."""
        if name not in self.histories:
            self.histories[name] = []
            for col, trace in enumerate(training_curves({name: []}).data, start=1):
                self.figure.add_trace(trace, row=1, col=col)
        self.histories[name].append(record)
        run = list(self.histories).index(name)
        history = self.histories[name]
        with self.figure.batch_update():
            for col, (key, _) in enumerate(CURVE_PANELS):
                trace = self.figure.data[2 * run + col]
                trace.x = [h["epoch"] for h in history]
                trace.y = [h.get(key) for h in history]
        if self.static and self._handle is not None:
            self._handle.update(self.figure)


class PruningSlider:
    """A pruning-ratio slider over a cached :class:`~e2vpt_viz.pruning.PruningSweep`: moving it is a dictionary read
    that moves the highlighted point on the trade-off curve and rewrites the label (no model call).

    ``rewound`` rows (from ``prune_and_rewind``) are drawn as extra points. Static figure fallback as in LiveCurves.
    """

    def __init__(self, sweep, rewound=(), value: float = 0.5, static: Optional[bool] = None) -> None:
        import ipywidgets as widgets

        self.sweep = sweep
        self.rows = [sweep.results[r] for r in sweep.ratios]
        self.static = not figure_widget_available() if static is None else static
        figure = pruning_tradeoff(self.rows, rewound, highlight=value)
        self.figure = figure if self.static else go.FigureWidget(figure)
        step = min((b - a for a, b in zip(sweep.ratios, sweep.ratios[1:])), default=0.1)
        self.slider = widgets.FloatSlider(value=value, min=min(sweep.ratios), max=max(sweep.ratios), step=step,
                                          description="pruning ratio", continuous_update=False)
        self.label = widgets.HTML()
        self._handle = None
        self.slider.observe(lambda change: self.update(change["new"]), names="value")
        self.update(value)

    def update(self, ratio: float) -> dict:
        """Show the cached result nearest to ``ratio`` and return it."""
        result = self.sweep.at(ratio)
        self.label.value = (f"ratio {result['ratio']:.1f}: test accuracy <b>{100 * result['acc']:.1f}%</b> with "
                            f"<b>{result['parameters']['tunable']:,}</b> tunable parameters; "
                            f"pruned tokens {result['pruned_tokens']}")
        with self.figure.batch_update():
            point = self.figure.data[-1]
            point.x, point.y = [result["parameters"]["tunable"]], [100 * result["acc"]]
            point.name = f"ratio {result['ratio']:.1f}"
        if self.static and self._handle is not None:
            self._handle.update(self.figure)
        return result

    def show(self) -> "PruningSlider":
        import ipywidgets as widgets
        from IPython.display import display

        display(widgets.VBox([self.slider, self.label]))
        self._handle = display(self.figure, display_id=True)
        return self
