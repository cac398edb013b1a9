"""Widget wiring without a front end: moving the pruning slider reads the cache and moves the plotted point."""
import pytest

from e2vpt_viz.pruning import PruningSweep
from e2vpt_viz.widgets import PruningSlider, figure_widget_available


def sweep():
    rows = [{"ratio": r, "acc": acc, "parameters": {"tunable": n}, "pruned_tokens": tokens, "per_class_acc": per_class}
            for r, acc, n, tokens, per_class in [(0.0, 0.7, 1000, [], [0.8, 0.6]), (0.5, 0.6, 800, [1, 3], [0.8, 0.4]),
                                                 (0.9, 0.4, 600, [0, 1, 3, 4], [0.5, 0.3])]]
    return PruningSweep([0.0, 0.5, 0.9], {r["ratio"]: r for r in rows})


@pytest.mark.parametrize("static", [True, False])
def test_moving_the_slider_moves_the_point_and_the_label(static):
    if not static and not figure_widget_available():
        pytest.skip("plotly FigureWidget needs anywidget")
    widget = PruningSlider(sweep(), value=0.0, static=static)
    assert "70.0%" in widget.label.value and list(widget.figure.data[-1].x) == [1000]
    widget.slider.value = 0.9  # what a drag does: the observer fires
    assert "40.0%" in widget.label.value and "[0, 1, 3, 4]" in widget.label.value
    assert list(widget.figure.data[-1].x) == [600] and list(widget.figure.data[-1].y) == [40.0]
    assert list(widget.figure.data[-2].y) == pytest.approx([-30.0, -30.0])  # per-class change vs ratio 0
    assert widget.update(0.45)["ratio"] == 0.5  # nearest cached ratio
    assert widget.slider.value == 0.5 and "60.0%" in widget.label.value  # slider, label and point agree


def test_debounced_slider_applies_only_the_last_of_a_burst_inside_an_event_loop():
    import asyncio
    from e2vpt_viz.widgets import Debounced
    calls = []
    debounced = Debounced(calls.append, wait=0.02)
    debounced(1)  # no running loop: immediate
    assert calls == [1]

    async def drag():
        for value in (2, 3, 4):
            debounced(value)
        assert calls == [1]  # nothing yet: the burst is pending
        await asyncio.sleep(0.1)
    asyncio.run(drag())
    assert calls == [1, 4]


def test_attention_explorer_redraws_for_image_block_head_and_kv_prompt():
    import torch
    from e2vpt_viz.attention_maps import TokenLayout
    from e2vpt_viz.widgets import AttentionExplorer
    layout = TokenLayout(num_prefix=1, num_prompts=1, grid=(2, 2), has_class_token=True)
    g = torch.Generator().manual_seed(0)
    probs = [torch.rand(2, 3, 6, 2 + 6, generator=g), torch.rand(2, 3, 6, 6, generator=g)]  # KV prompts in block 0 only
    views = torch.zeros(2, 16, 16, 3, dtype=torch.uint8)
    views[1] += 255
    widget = AttentionExplorer(views, probs, layout, static=True)
    heat = lambda: [v for r in widget.figure.data[1].z for v in r]  # flattened
    mean_cls = probs[0][0, :, 0, 2 + 1 + 1:].mean(0)
    assert heat() == pytest.approx(mean_cls.tolist())
    assert list(widget.map.options)[1:] == ["patches → KV prompt 0", "patches → KV prompt 1"]
    assert list(widget.figure.data[2].y) == pytest.approx(probs[0][0, :, 0, :2].mean(0).tolist())  # CLS -> KV mass
    widget.head.value = 2
    assert list(widget.figure.data[2].y) == pytest.approx(probs[0][0, 2, 0, :2].tolist())
    assert heat() == pytest.approx(probs[0][0, 2, 0, 4:].tolist())
    widget.map.value = "patches → KV prompt 1"
    assert heat() == pytest.approx(probs[0][0, 2, 2:, 1].tolist())  # query = patch, key = KV 1
    widget.block.value = 1  # no KV prompts there: the map falls back to the class token, no bars
    assert list(widget.figure.data[2].y) == []
    assert widget.map.value == AttentionExplorer.CLS_MAP and list(widget.map.options) == [AttentionExplorer.CLS_MAP]
    assert heat() == pytest.approx(probs[1][0, 2, 0, 2:].tolist())
    widget.image.value = 1
    assert heat() == pytest.approx(probs[1][1, 2, 0, 2:].tolist())
    assert widget.figure.data[0].z[0][0] == (255, 255, 255) or list(widget.figure.data[0].z[0][0]) == [255, 255, 255]
    assert "block 1" in widget.figure.layout.title.text and "head 2" in widget.figure.layout.title.text
    controls = [widget.image, widget.block, widget.head, widget.map]
    assert widget.block.description == "block"  # the figure's word: "block", not "layer"
    assert not any("layer" in c.description for c in controls)


def test_live_curves_keep_one_colour_per_method_on_both_panels_and_in_the_legend():
    from e2vpt_viz.plots import METHOD_COLORS
    from e2vpt_viz.widgets import LiveCurves
    curves = LiveCurves(static=True, num_classes=20)
    for epoch in (1, 2):
        for i, method in enumerate(["linear", "vpt-deep", "e2vpt"]):
            curves.add(method, {"epoch": epoch, "train_loss": 3.0 - i, "val_acc": 0.2 * i})
    colours = {}
    for method in curves.histories:
        traces = [t for t in curves.figure.data if t.name == method]
        assert len(traces) == 2 and {t.xaxis for t in traces} == {"x", "x2"}
        legend = [t for t in traces if t.showlegend is not False]
        assert len(legend) == 1 and {t.legendgroup for t in traces} == {method}
        assert {t.line.color for t in traces} | {t.marker.color for t in traces} == {legend[0].line.color}
        colours[method] = legend[0].line.color
    assert colours == {m: METHOD_COLORS[m] for m in colours} and len(set(colours.values())) == 3
    assert [list(t.y) for t in curves.figure.data if t.name == "e2vpt"] == [[1.0, 1.0], [0.4, 0.4]]
    assert len(curves.figure.layout.shapes) == 1  # the chance-loss line ln 20


@pytest.mark.parametrize("ratios", [[round(0.1 * k, 1) for k in range(10)], [0.0, 0.3, 0.5, 0.7, 0.9]],
                         ids=["uniform", "uneven"])
def test_pruning_slider_reaches_every_ratio_exactly_and_keeps_the_requested_value(ratios):
    import ipywidgets as widgets
    rows = {r: {"ratio": r, "acc": 0.8 - r / 2, "parameters": {"tunable": int(1000 * (1 - r))}, "pruned_tokens": [],
                "per_class_acc": [0.5, 0.5]} for r in ratios}
    widget = PruningSlider(PruningSweep(ratios, rows), value=0.3, static=True)
    slider = widget.slider
    if isinstance(slider, widgets.FloatSlider):  # a float grid must hit every ratio exactly
        assert all(any(slider.min + k * slider.step == r for k in range(100)) for r in ratios), slider.step
    else:  # a selection slider's positions are the ratios themselves
        assert [value for _, value in slider.options] == ratios
    assert slider.value == 0.3 and "ratio 0.3" in widget.label.value  # kept, not snapped elsewhere
    assert list(widget.figure.data[-1].x) == [700]
    slider.value = 0.9
    assert list(widget.figure.data[-1].x) == [int(1000 * (1 - 0.9))]


def test_every_widget_leaves_a_saved_note_saying_to_rerun_its_cell_after_reopening(monkeypatch):
    """A reopened notebook cannot draw widgets (their models lived in the old kernel): the plain output each widget
    cell leaves says to run the cell again."""
    import IPython.display

    from e2vpt_viz import widgets

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    widgets.show_reopen_note()
    assert len(shown) == 1 and "run this cell again" in shown[0].data and "show an error" in shown[0].data
