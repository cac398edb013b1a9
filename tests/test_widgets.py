"""Widget wiring without a front end: moving the pruning slider reads the cache and moves the plotted point."""
import pytest

from e2vpt_viz.pruning import PruningSweep
from e2vpt_viz.widgets import PruningSlider, figure_widget_available


def sweep():
    rows = [{"ratio": r, "acc": acc, "parameters": {"tunable": n}, "pruned_tokens": tokens}
            for r, acc, n, tokens in [(0.0, 0.7, 1000, []), (0.5, 0.6, 800, [1, 3]), (0.9, 0.4, 600, [0, 1, 3, 4])]]
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
    assert widget.update(0.45)["ratio"] == 0.5  # nearest cached ratio
