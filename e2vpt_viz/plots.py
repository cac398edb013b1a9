"""Pure functions that turn results into plotly figures (no widget state; widgets only wire these up)."""
from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

CURVE_PANELS = (("train_loss", "training loss"), ("val_acc", "validation accuracy"))


def training_curves(histories: Mapping[str, Sequence[dict]], figure_class=go.Figure) -> go.Figure:
    """Loss and validation accuracy per epoch, one line per run: ``{name: history}`` -> 1 x 2 subplots.

    Trace ``2 * i + j`` is run ``i``'s panel ``j`` (the order :class:`~e2vpt_viz.widgets.LiveCurves` relies on).
    """
    fig = figure_class(make_subplots(rows=1, cols=2, subplot_titles=[title for _, title in CURVE_PANELS]))
    for name, history in histories.items():
        for col, (key, _) in enumerate(CURVE_PANELS, start=1):
            fig.add_trace(go.Scatter(x=[h["epoch"] for h in history], y=[h.get(key) for h in history],
                                     mode="lines+markers", name=name, legendgroup=name, showlegend=col == 1),
                          row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    fig.update_layout(height=360, margin=dict(t=40, b=40, l=40, r=20))
    return fig


def image_grid(images: Sequence, titles: Sequence[str], cols: int = 6) -> go.Figure:
    """RGB images (H, W, 3 uint8 arrays) in a grid with a title each."""
    rows = (len(images) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(titles), horizontal_spacing=0.01,
                        vertical_spacing=0.08)
    for i, image in enumerate(images):
        fig.add_trace(go.Image(z=image), row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font_size=9)
    fig.update_layout(height=150 * rows + 40, margin=dict(t=30, b=0, l=0, r=0))
    return fig
