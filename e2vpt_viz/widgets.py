"""Notebook widgets: thin wiring between plotly figures from :mod:`e2vpt_viz.plots` and training callbacks.

Where the widget front end is unavailable (no ``anywidget``, VS Code, nbconvert, CI) the same figures are shown as
static plotly figures refreshed through a display handle.
"""
from __future__ import annotations

import asyncio
from typing import Optional

import plotly.graph_objects as go

from .attention_maps import cls_to_kv_prompts, cls_to_patches, kv_prompt_maps
from .plots import (CURVE_PANELS, attention_explorer_figure, nothing_to_draw, per_class_change, pruning_dashboard,
                    training_curves)


def figure_widget_available() -> bool:
    """True when plotly's FigureWidget can be built (plotly >= 6 needs anywidget)."""
    try:
        go.FigureWidget()
        return True
    except ImportError:
        return False


REOPEN_NOTE = ("Reopened this notebook and the controls or the figure above show an error instead? Widgets live in the "
               "running kernel: run this cell again (shipped and finished runs are read back, not retrained).")


def show_reopen_note() -> None:
    """Show :data:`REOPEN_NOTE` as a plain output under a widget: saved with the notebook, it is what a student reads
    after reopening it, when the widget itself cannot be drawn any more."""
    from IPython.display import HTML, display

    display(HTML(f"<small style='color:#666'>{REOPEN_NOTE}</small>"))


class LiveCurves:
    """Live loss / accuracy curves for several runs; pass ``curves.callback(name)`` to ``fit`` or ``train_run``.

    Uses a ``go.FigureWidget`` updated once per epoch inside ``batch_update`` (one message to the front end), or a
    static figure re-displayed through a display handle when widgets are unavailable (``static=True`` forces it).
    Each run keeps its method colour in both panels (:func:`~e2vpt_viz.plots.training_curves`); with ``num_classes``
    the loss panel shows the chance loss ln C.
    """

    def __init__(self, static: Optional[bool] = None, num_classes: Optional[int] = None) -> None:
        self.static = not figure_widget_available() if static is None else static
        self.histories: dict[str, list[dict]] = {}
        self.figure = training_curves({}, go.Figure if self.static else go.FigureWidget, num_classes=num_classes)
        self._handle = None

    def show(self) -> "LiveCurves":
        from IPython.display import display

        self._handle = display(self.figure, display_id=True)
        if not self.static:
            show_reopen_note()
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


class Debounced:
    """Calls ``function(value)`` once ``value`` has stopped changing for ``wait`` seconds, so dragging a slider does not
    queue one redraw per intermediate value. Inside a running asyncio loop (a Jupyter kernel) the call is deferred
    with ``loop.call_later`` and a newer value cancels the pending one; without a loop it happens at once."""

    def __init__(self, function, wait: float = 0.05) -> None:
        self.function, self.wait = function, wait
        self._pending = None

    def __call__(self, value) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.function(value)
            return
        if self._pending is not None:
            self._pending.cancel()
        self._pending = loop.call_later(self.wait, self.function, value)


class PruningSlider:
    """A pruning-ratio dashboard over a cached :class:`~e2vpt_viz.pruning.PruningSweep`: moving the slider is a
    dictionary read that moves the highlighted point on the trade-off curve, redraws the per-class accuracy changes
    and rewrites the label (no model call). Slider moves are debounced (:class:`Debounced`).

    ``rewound`` rows (from ``prune_and_rewind``) are drawn as extra points; ``class_names`` label the per-class bars.
    Static figure fallback as in LiveCurves.

    The slider is a ``SelectionSlider`` over the sweep's ratios: its positions are exactly the cached ratios (the
    front end exchanges an index, not a float), so a value set from code stays where it was set. (A ``FloatSlider``
    with the float step ``0.2 - 0.1 = 0.09999999999999998`` made the page snap 0.3 back to another value.)
    """

    def __init__(self, sweep, rewound=(), value: float = 0.5, static: Optional[bool] = None,
                 class_names=None, debounce: float = 0.05) -> None:
        import ipywidgets as widgets

        if not getattr(sweep, "ratios", None):
            raise ValueError(f"PruningSlider needs a PruningSweep with at least one ratio (from pruning_sweep()), got "
                             f"{type(sweep).__name__} {sweep!r:.60}.")
        self.sweep = sweep
        self.rows = [sweep.results[r] for r in sweep.ratios]
        self.reference = self.rows[0]
        self.static = not figure_widget_available() if static is None else static
        figure = pruning_dashboard(self.rows, rewound, highlight=value, class_names=class_names)
        self.figure = figure if self.static else go.FigureWidget(figure)
        self.slider = widgets.SelectionSlider(options=[(f"{r:g}", r) for r in sweep.ratios],
                                              value=self._nearest(value), description="pruning ratio",
                                              continuous_update=True, style={"description_width": "initial"})
        self.label = widgets.HTML()
        self._handle = None
        self._debounced = Debounced(self.update, debounce)
        self._syncing = False  # True while update() moves the slider itself
        self.slider.observe(lambda change: None if self._syncing else self._debounced(change["new"]), names="value")
        self.update(value)

    def _nearest(self, ratio: float) -> float:
        """The sweep ratio nearest to ``ratio`` (one of the slider's options)."""
        return min(self.sweep.ratios, key=lambda r: abs(r - ratio))

    def update(self, ratio: float) -> dict:
        """Show the cached result nearest to ``ratio`` (the slider moves there too) and return it."""
        nearest = self._nearest(ratio)
        result = self.sweep.results[nearest]
        if self.slider.value != nearest:
            self._syncing = True
            try:
                self.slider.value = nearest
            finally:
                self._syncing = False
        self.label.value = (f"ratio {result['ratio']:.1f}: test accuracy <b>{100 * result['acc']:.1f}%</b> with "
                            f"<b>{result['parameters']['tunable']:,}</b> tunable parameters; "
                            f"pruned tokens {result['pruned_tokens']}")
        with self.figure.batch_update():
            bars, point = self.figure.data[-2], self.figure.data[-1]
            bars.y = per_class_change(result, self.reference)
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
        show_reopen_note()
        return self


class AttentionExplorer:
    """Pick an image, block, head and map; the heatmap over the image shows where attention goes, and bars show the
    class token's attention mass on each key-value prompt of that block and head.

    Maps: "class token → patches" (:func:`~e2vpt_viz.attention_maps.cls_to_patches`) and, for blocks with key-value
    prompts, "patches → KV prompt t" (:func:`~e2vpt_viz.attention_maps.kv_prompt_maps`). ``probs_per_layer`` comes
    from :func:`~e2vpt_viz.attention_maps.capture_attention` for the images whose (B, H, W, 3) uint8 crops are
    ``views``. Changing a control recomputes one small map from the stored probabilities (no model call). The
    controls and the figure say "block" (a transformer block, the index into ``probs_per_layer``) throughout.
    """

    CLS_MAP = "class token → patches"

    def __init__(self, views, probs_per_layer, layout, titles=None, static: Optional[bool] = None) -> None:
        import ipywidgets as widgets

        nothing_to_draw("images", views, "pass the (B, H, W, 3) uint8 crops the attention was captured on.")
        nothing_to_draw("attention maps", probs_per_layer, "capture them with attention_maps.capture_attention().")
        self.views, self.probs, self.layout = views, probs_per_layer, layout
        self.titles = list(titles) if titles is not None else [f"image {i}" for i in range(len(views))]
        self.static = not figure_widget_available() if static is None else static
        heads = probs_per_layer[0].shape[1]
        self.image = widgets.Dropdown(options=[(t, i) for i, t in enumerate(self.titles)], value=0,
                                      description="image")
        self.block = widgets.Dropdown(options=list(range(len(probs_per_layer))), value=0, description="block")
        self.head = widgets.Dropdown(options=[("mean", -1)] + [(str(h), h) for h in range(heads)], value=-1,
                                     description="head")
        self.map = widgets.Dropdown(options=self._map_options(0), value=self.CLS_MAP, description="map")
        figure = attention_explorer_figure(views[0], self.current_map().tolist(), self.current_kv_mass())
        self.figure = figure if self.static else go.FigureWidget(figure)
        self._handle = None
        self._syncing = False  # True while update() rewrites the map list (that fires the observer again)
        for control in (self.image, self.block, self.head, self.map):
            control.observe(lambda change: None if self._syncing else self.update(), names="value")
        self.update()

    def _map_options(self, block: int) -> list[str]:
        num_kv = self.layout.check(self.probs[block])
        return [self.CLS_MAP] + [f"patches → KV prompt {t}" for t in range(num_kv)]

    def current_map(self):
        """The selected (rows, cols) map."""
        probs = self.probs[self.block.value][self.image.value:self.image.value + 1]
        if self.map.value == self.CLS_MAP:
            maps = cls_to_patches(probs, self.layout)[0]  # (heads, rows, cols)
        else:
            maps = kv_prompt_maps(probs, self.layout)[0, :, int(self.map.value.rsplit(" ", 1)[1])]
        return maps.mean(0) if self.head.value < 0 else maps[self.head.value]

    def current_kv_mass(self) -> list[float]:
        """The class token's attention mass on each key-value prompt of the selected image, block and head."""
        probs = self.probs[self.block.value][self.image.value:self.image.value + 1]
        mass = cls_to_kv_prompts(probs, self.layout)[0]  # (heads, T)
        return (mass.mean(0) if self.head.value < 0 else mass[self.head.value]).tolist()

    def update(self) -> None:
        """Redraw after a control changed (the map list follows the block's key-value prompts)."""
        options = self._map_options(self.block.value)
        if list(self.map.options) != options:
            keep = self.map.value if self.map.value in options else self.CLS_MAP
            self._syncing = True
            try:
                self.map.options = options
                self.map.value = keep
            finally:
                self._syncing = False
        head = "mean over heads" if self.head.value < 0 else f"head {self.head.value}"
        with self.figure.batch_update():
            self.figure.data[0].z = self.views[self.image.value].tolist()
            self.figure.data[1].z = self.current_map().tolist()
            kv_mass = self.current_kv_mass()
            self.figure.data[2].x, self.figure.data[2].y = [f"KV {t}" for t in range(len(kv_mass))], kv_mass
            self.figure.layout.title.text = f"block {self.block.value} · {head}"
        if self.static and self._handle is not None:
            self._handle.update(self.figure)

    def show(self) -> "AttentionExplorer":
        import ipywidgets as widgets
        from IPython.display import display

        display(widgets.HBox([self.image, self.block, self.head, self.map]))
        self._handle = display(self.figure, display_id=True)
        show_reopen_note()
        return self
