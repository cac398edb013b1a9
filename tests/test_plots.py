"""Figure functions plot exactly the numbers they are given."""
import pytest
from e2vpt_viz.plots import importance_heatmap, pruning_tradeoff


def sweep_rows():
    return [{"ratio": r, "acc": acc, "parameters": {"tunable": n}}
            for r, acc, n in [(0.0, 0.70, 1000), (0.5, 0.60, 800), (0.9, 0.40, 600)]]


def test_importance_heatmap_shows_the_scores():
    fig = importance_heatmap([0.1, -0.2], [[float(r) for r in range(16)], [0.0] * 16])
    bar, heat = fig.data
    assert list(bar.x) == [0.1, -0.2] and list(bar.y) == ["prompt 0", "prompt 1"]
    assert [list(row) for row in heat.z][0] == list(range(16)) and len(heat.z) == 2


def test_tradeoff_plots_sweep_rewound_and_the_highlighted_ratio():
    rewound = [{"num_tokens": 2, "num_segments": 1, "tunable": 700, "val_acc": 0.5, "test_acc": 0.65}]
    fig = pruning_tradeoff(sweep_rows(), rewound, highlight=0.45)
    curve, diamonds, point = fig.data
    assert list(curve.x) == [1000, 800, 600] and list(curve.y) == [70.0, 60.0, 40.0]
    assert list(diamonds.y) == [65.0] and "test" in diamonds.name
    assert list(point.x) == [800] and list(point.y) == [60.0]  # nearest cached ratio to 0.45 is 0.5
    no_test = pruning_tradeoff(sweep_rows(), [{**rewound[0], "test_acc": None}])
    assert list(no_test.data[1].y) == [50.0] and "val" in no_test.data[1].name


def test_share_bars_stack_to_100_percent_per_block():
    from e2vpt_viz.plots import attention_share_bars
    shares = [{"kv_prompts": 0.2, "prefix": 0.1, "registers": 0.0, "visual_prompts": 0.3, "patches": 0.4},
              {"kv_prompts": 0.0, "prefix": 0.5, "registers": 0.0, "visual_prompts": 0.25, "patches": 0.25}]
    fig = attention_share_bars(shares)  # no registers: no register bar
    assert [t.name for t in fig.data] == ["key-value prompts", "class token(s)", "visual prompts", "patches"]
    for block in range(2):
        assert sum(t.y[block] for t in fig.data) == 100.0
    shares[1].update(prefix=0.2, registers=0.3)
    fig = attention_share_bars(shares)
    assert [t.name for t in fig.data] == ["key-value prompts", "class token(s)", "register tokens", "visual prompts",
                                          "patches"]
    assert list(fig.data[2].y) == [0.0, 30.0] and all(sum(t.y[b] for t in fig.data) == 100.0 for b in range(2))


def test_accuracy_by_backbone_groups_methods_with_their_seed_spread():
    from e2vpt_viz.plots import accuracy_by_backbone
    rows = [{"method": m, "test_acc": acc, "config": {"backbone": {"name": b}}, **extra}
            for b, m, acc, extra in [("a", "vpt-shallow", 0.5, {"mean_test_acc": 0.52, "sd_test_acc": 0.01}),
                                     ("a", "e2vpt", 0.6, {"mean_test_acc": 0.61, "sd_test_acc": 0.02}),
                                     ("b", "e2vpt", 0.7, {})]]
    fig = accuracy_by_backbone(rows)
    assert [(t.name, list(t.x)) for t in fig.data] == [("vpt-shallow", ["a", "b"]), ("e2vpt", ["a", "b"])]
    assert list(fig.data[0].y) == [52.0, None] and list(fig.data[1].y) == [61.0, 70.0]  # mean of seeds, else the run
    assert list(fig.data[1].error_y.array) == [2.0, 0.0]
    with pytest.raises(TypeError, match="run lesson_runs for each backbone first"):
        accuracy_by_backbone([{"method": "e2vpt", "test_acc": 0.5}])


def test_patch_map_overlay_places_cells_on_the_image_grid():
    import numpy as np
    from e2vpt_viz.plots import patch_map_overlay
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    fig = patch_map_overlay(image, [[0.0, 1.0], [2.0, 3.0]])
    heat = fig.data[1]
    assert heat.dx == 32 and heat.dy == 32 and heat.x0 == 15.5  # cell centres of a 2 x 2 grid on 64 px
    assert [list(r) for r in heat.z] == [[0.0, 1.0], [2.0, 3.0]]


def test_pruning_dashboard_adds_per_class_changes_and_keeps_the_point_last():
    from e2vpt_viz.plots import pruning_dashboard
    rows = [{**r, "per_class_acc": pc} for r, pc in zip(sweep_rows(), [[0.9, 0.5], [0.9, 0.3], [0.4, 0.4]])]
    fig = pruning_dashboard(rows, highlight=0.9, class_names=["wren", "finch"])
    bars, point = fig.data[-2], fig.data[-1]
    assert list(bars.x) == [0, 1] and list(bars.hovertext) == ["wren", "finch"] and list(bars.y) == pytest.approx([-50.0, -10.0])
    assert list(point.x) == [600] and list(point.y) == [40.0] and point.xaxis == "x" and bars.xaxis == "x2"


def test_attention_map_grid_and_grounding_heatmaps():
    import numpy as np
    from e2vpt_viz.plots import attention_map_grid, grounding_heatmaps
    views = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    maps = {"plain": np.array([[[0.0, 2.0], [1.0, 0.0]]] * 2), "prompted": np.ones((2, 2, 2))}
    fig = attention_map_grid(views, maps)
    assert len(fig.data) == 2 * 2 * 2  # image + heatmap per cell
    assert [list(r) for r in fig.data[1].z] == [[0.0, 1.0], [0.5, 0.0]]  # scaled to the map's maximum
    assert [a.text for a in fig.layout.annotations] == ["plain", "prompted"]
    heat = grounding_heatmaps({"vpt": [[0.5, 0.25]], "e2vpt": [[1.0, 0.0]]}, chance=0.2)
    assert [list(r) for r in heat.data[1].z] == [[100.0, 0.0]]


def colour_at(fig, trace, value: float) -> tuple[float, float, float]:
    """The RGB colour plotly gives ``value`` in ``trace`` (its own scale, or the shared colour axis it names)."""
    import plotly.colors
    scale = fig.layout[trace.coloraxis] if trace.coloraxis else trace
    low, high = (scale.cmin, scale.cmax) if trace.coloraxis else (trace.zmin, trace.zmax)
    stops = scale.colorscale
    if isinstance(stops, str):
        stops = plotly.colors.make_colorscale(plotly.colors.get_colorscale(stops))
    stops = [(p, plotly.colors.unlabel_rgb(plotly.colors.convert_colors_to_same_type(c, "rgb")[0][0]))
             for p, c in stops]
    x = (value - low) / (high - low)
    for (p0, c0), (p1, c1) in zip(stops, stops[1:]):
        if p0 <= x <= p1:
            t = (x - p0) / (p1 - p0)
            return tuple(a + t * (b - a) for a, b in zip(c0, c1))
    raise ValueError(f"{value} is outside the colour scale")


def test_grounding_heatmaps_centre_one_shared_diverging_scale_on_chance():
    from e2vpt_viz.plots import grounding_heatmaps
    chance = 0.138
    fig = grounding_heatmaps({"frozen": [[0.05, 0.30]], "VPT-deep": [[0.9, 0.1]], "E²VPT": [[0.14, 0.6]]}, chance)
    for trace in fig.data:
        red, green, blue = colour_at(fig, trace, 100 * chance)
        assert min(red, green, blue) > 240  # chance is white
        red, _, blue = colour_at(fig, trace, 30.0)  # above chance (but below 50): red side
        assert red > blue + 20
        red, _, blue = colour_at(fig, trace, 5.0)  # below chance: blue side
        assert blue > red + 20
    assert {t.coloraxis for t in fig.data} == {"coloraxis"}  # one scale: same range and midpoint in every panel
    axis = fig.layout.coloraxis
    assert (axis.cmin, axis.cmax) == (0, 100)  # in %, the units of z
    white = [p for p, c in axis.colorscale if c == "rgb(247,247,247)"]  # RdBu's middle colour
    assert len(white) == 1 and axis.cmin + white[0] * (axis.cmax - axis.cmin) == pytest.approx(100 * chance)
    assert "chance 13.8%" in axis.colorbar.title.text and "grounding (%)" in axis.colorbar.title.text


def test_attribution_maps_per_pixel_and_per_patch_share_the_image_grid():
    import numpy as np
    from e2vpt_viz.plots import attention_map_grid
    views = np.zeros((3, 64, 64, 3), dtype=np.uint8)
    maps = {"linear": np.ones((3, 8, 8)), "full": np.ones((3, 64, 64))}  # Grad-CAM grid vs Integrated Gradients
    fig = attention_map_grid(views, maps, title="grad_cam")
    assert len(fig.data) == 3 * 2 * 2 and fig.layout.title.text == "grad_cam"
    grid, pixels = fig.data[1], fig.data[7]  # row 1 of column 1 and of column 2
    assert grid.dx == 8 and len(grid.z) == 8 and pixels.dx == 1 and len(pixels.z) == 64
    assert [a.text for a in fig.layout.annotations] == ["linear", "full"]


def test_accuracy_vs_parameters_is_one_marker_per_method_on_a_log_axis():
    from e2vpt_viz.plots import accuracy_vs_parameters
    results = [{"method": "linear", "test_acc": 0.5, "parameters": {"tunable": 1940}},
               {"method": "full", "test_acc": 0.875, "parameters": {"tunable": 698036}}]
    fig = accuracy_vs_parameters(results)
    assert [t.name for t in fig.data] == ["linear", "full"] and fig.layout.xaxis.type == "log"
    assert list(fig.data[1].x) == [698036] and list(fig.data[1].y) == [87.5]


def test_tsne_scatter_has_one_panel_per_method_and_one_colour_per_class():
    import numpy as np
    from e2vpt_viz.plots import tsne_scatter
    methods = ["linear", "bias", "lora", "e2vpt", "full"]
    points = {m: np.arange(6.0).reshape(3, 2) * (i + 1) for i, m in enumerate(methods)}
    fig = tsne_scatter(points, labels=[0, 1, 0], class_names=["wren", "finch"], cols=4)
    assert len(fig.data) == 5 and [a.text for a in fig.layout.annotations] == list(points)
    assert fig.data[4].xaxis == "x5" and list(fig.data[4].x) == [0.0, 10.0, 20.0]  # second row, first panel
    colours = fig.data[0].marker.color
    assert colours[0] == colours[2] != colours[1] and tuple(fig.data[3].marker.color) == tuple(colours)
    assert list(fig.data[0].text) == ["wren", "finch", "wren"]
    with pytest.raises(ValueError, match="3 labels"):
        tsne_scatter({"linear": np.zeros((2, 2))}, labels=[0, 1, 0])


def test_few_shot_curves_plot_means_and_stds_per_initialisation():
    from e2vpt_viz.plots import few_shot_curves
    rows = [{"shots": 1, "random_mean": 0.2, "random_std": 0.05, "pvp_mean": 0.3, "pvp_std": 0.01},
            {"shots": 4, "random_mean": 0.5, "random_std": 0.02, "pvp_mean": 0.55, "pvp_std": 0.0}]
    random, pvp = few_shot_curves(rows).data
    assert list(random.x) == [1, 4] and list(random.y) == pytest.approx([20.0, 50.0])
    assert list(pvp.y) == pytest.approx([30.0, 55.0]) and list(random.error_y.array) == pytest.approx([5.0, 2.0])
    from e2vpt_viz.plots import METHOD_COLORS
    assert (random.line.color, pvp.line.color) == (METHOD_COLORS["e2vpt"], METHOD_COLORS["pvp"])  # E²VPT vs PVP


def test_training_curves_draw_each_method_in_one_colour_on_both_panels_and_in_the_legend():
    from e2vpt_viz.plots import METHOD_COLORS, training_curves
    methods = ["linear", "vpt-shallow", "vpt-deep", "e2vpt"]
    histories = {m: [{"epoch": e, "train_loss": 2.0 + i, "val_acc": 0.1 * i} for e in (1, 2)]
                 for i, m in enumerate(methods)}
    fig = training_curves(histories)
    colours = {}
    for method in methods:
        traces = [t for t in fig.data if t.name == method]
        assert sorted(t.xaxis for t in traces) == ["x", "x2"]  # loss panel and accuracy panel
        assert {t.legendgroup for t in traces} == {method}
        shown = [t for t in traces if t.showlegend is not False]
        assert len(shown) == 1  # one legend entry per method ...
        used = {t.line.color for t in traces} | {t.marker.color for t in traces}
        assert used == {shown[0].line.color}  # ... in the colour of its lines on both panels
        colours[method] = shown[0].line.color
    assert len(set(colours.values())) == len(methods)  # different methods differ
    assert colours == {m: METHOD_COLORS[m] for m in methods}


def test_method_colours_are_shared_across_figures_with_a_fixed_fallback():
    from e2vpt_viz.plots import (FALLBACK_COLORS, METHOD_COLORS, accuracy_vs_parameters, method_color,
                                 training_curves)
    results = [{"method": m, "test_acc": 0.5, "parameters": {"tunable": 10 ** (i + 3)}}
               for i, m in enumerate(["linear", "full", "e2vpt"])]
    markers = {t.name: t.marker.color for t in accuracy_vs_parameters(results).data}
    assert markers == {m: METHOD_COLORS[m] for m in markers}
    curve = pruning_tradeoff(sweep_rows(), [{"num_tokens": 1, "num_segments": 2, "tunable": 900, "test_acc": 0.6}])
    assert curve.data[0].line.color == curve.data[1].marker.color == METHOD_COLORS["e2vpt"]  # E²VPT pruned
    assert method_color("E²VPT") == method_color("e2vpt") and method_color("VPT_deep") == METHOD_COLORS["vpt-deep"]
    unknown = method_color("my-adapter")
    assert unknown in FALLBACK_COLORS and not set(FALLBACK_COLORS) & set(METHOD_COLORS.values())
    from e2vpt_viz import METHODS
    assert set(METHODS) <= set(METHOD_COLORS)  # every method of the library, the zoo included, has its own colour
    assert len(set(METHOD_COLORS.values())) == len(METHOD_COLORS)
    curves = training_curves({"my-adapter": [{"epoch": 1, "train_loss": 1.0, "val_acc": 0.5}]})
    assert curves.data[1].line.color == unknown


def test_training_curves_mark_the_chance_loss_when_given_the_class_count():
    import math
    from e2vpt_viz.plots import training_curves
    history = {"e2vpt": [{"epoch": 1, "train_loss": 11.0, "val_acc": 0.3}]}
    assert not training_curves(history).layout.shapes
    fig = training_curves(history, num_classes=20)
    (line,) = fig.layout.shapes
    assert line.y0 == line.y1 == pytest.approx(math.log(20)) and line.yref == "y"  # on the loss panel
    assert line.line.dash == "dot"
    assert any("chance loss ln C" in a.text and "3.00" in a.text for a in fig.layout.annotations)


def colorbar_overlaps(fig) -> list[str]:
    """Colourbars whose horizontal extent (in paper units) reaches into another subplot's x-domain or into the strip
    left of it where its y-axis tick labels and title are drawn. The extent counts plotly's padding on both sides,
    the bar and room for tick labels and a title; widths in px are converted with the figure's plot-area width."""
    layout = fig.layout
    plot_width = (layout.width or 700) - (layout.margin.l or 0) - (layout.margin.r or 0)
    problems = []
    for trace in fig.data:
        bar = getattr(trace, "colorbar", None)
        if bar is None or not getattr(trace, "showscale", False):
            continue
        px = 2 * (10 if bar.xpad is None else bar.xpad) + (bar.thickness or 30) + 40 + (20 if bar.title.text else 0)
        width = px / plot_width
        start = bar.x - {"left": 0, "center": width / 2, "right": width}[bar.xanchor or "left"]
        end = start + width
        own = "xaxis" + (trace.xaxis or "x")[1:]
        for name in [k for k in layout.to_plotly_json() if k.startswith("xaxis") and k != own]:
            low, high = layout[name].domain
            y_axis = layout["yaxis" + name[5:]]
            if y_axis.visible is not False:
                low -= 60 / plot_width  # the y-axis tick labels and title of that subplot
            if start < high and end > low:
                problems.append(f"colourbar [{start:.3f}, {end:.3f}] overlaps {name} [{low:.3f}, {high:.3f}]")
    return problems


def test_attention_explorer_colourbar_sits_beside_the_heatmap_with_a_title():
    import numpy as np
    from e2vpt_viz.plots import attention_explorer_figure
    fig = attention_explorer_figure(np.zeros((32, 32, 3), dtype=np.uint8), [[0.1, 0.2], [0.3, 0.4]], [0.2, 0.5, 0.1])
    heat = fig.data[1]
    assert heat.showscale and colorbar_overlaps(fig) == []
    assert heat.colorbar.x >= fig.layout.xaxis.domain[1]  # right of the image panel, not on top of it
    assert heat.colorbar.title.text  # and it says what it shows
    assert list(fig.data[2].y) == [0.2, 0.5, 0.1]


def test_importance_heatmap_states_the_scale_of_tiny_scores_and_names_its_axes():
    import re
    token = [5e-7, -2e-7, 1e-7]
    segment = [[1e-8 * r for r in range(16)], [0.0] * 16, [-3e-8] * 16]
    fig = importance_heatmap(token, segment)
    bar, heat = fig.data
    flat = [v for row in segment for v in row]
    shown = {"S_k": (fig.layout.xaxis.title.text, list(bar.x), token),
             "S_k,r": (heat.colorbar.title.text, [v for row in heat.z for v in row], flat)}
    for name, (title, values, scores) in shown.items():
        found = re.search(r"×1e(-?\d+)", title or "")
        assert found and name in title, f"{name}: the title {title!r} does not state the factor"
        assert 1 <= max(abs(v) for v in values) < 10  # ticks read 1..10, not "0.5µ"
        assert [v * 10 ** int(found.group(1)) for v in values] == pytest.approx(scores)
    assert fig.layout.yaxis.title.text == "prompt token" and "segment" in fig.layout.xaxis2.title.text


def title_problems(fig, char_width: float = 0.55) -> list[str]:
    """Subplot titles that would not fit: wider than the figure allows (estimated at ``char_width`` font sizes per
    character of the longest <br>-separated line, at the figure's width or plotly's default 700 px) or taller than
    the top margin above the top row."""
    layout = fig.layout
    width = layout.width or 700
    left, right, top = layout.margin.l or 0, layout.margin.r or 0, layout.margin.t or 0
    plot = width - left - right
    reserved = 30 if layout.title.text else 0  # the figure title's line
    problems = []
    for note in layout.annotations:
        if note.xref != "paper" or note.yref != "paper" or not note.text:
            continue
        lines = note.text.split("<br>")
        size = note.font.size or 16
        half = max(len(line) for line in lines) * size * char_width / 2
        centre = left + note.x * plot
        if centre - half < 0 or centre + half > width:
            problems.append(f"{note.text!r} ({2 * half:.0f} px) runs past the figure's edge")
        if note.y >= 1 and top < reserved + len(lines) * size * 1.25 + 4:
            problems.append(f"{note.text!r} needs more than the top margin of {top} px")
    return problems


def test_subplot_titles_of_multi_panel_figures_fit():
    import numpy as np
    from e2vpt_viz.plots import (attention_explorer_figure, attention_map_grid, grounding_heatmaps, pruning_dashboard,
                                 training_curves, tsne_scatter)
    rows = [{**r, "per_class_acc": [0.5, 0.4]} for r in sweep_rows()]
    views = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    methods = ["linear", "bias", "partial", "lora", "vpt-shallow", "vpt-deep", "e2vpt", "full"]
    figures = {
        "training_curves": training_curves({"e2vpt": [{"epoch": 1, "train_loss": 1.0, "val_acc": 0.5}]}),
        "importance_heatmap": importance_heatmap([0.1] * 5, [[0.1] * 16] * 5),
        "pruning_dashboard": pruning_dashboard(rows, highlight=0.5),
        "grounding_heatmaps": grounding_heatmaps({k: [[0.5]] for k in ("frozen backbone", "VPT-deep", "E²VPT")}, 0.1),
        "attention_explorer_figure": attention_explorer_figure(views[0], [[0.5]], [0.5]).update_layout(
            title="block 11 · mean over heads"),
        "attention_map_grid": attention_map_grid(views, {k: np.ones((1, 2, 2)) for k in (
            "class token, frozen", "class token, E²VPT", "rollout, frozen", "rollout, E²VPT")}),
        "tsne_scatter": tsne_scatter({m: np.zeros((2, 2)) for m in methods}, [0, 1]),
    }
    problems = {name: found for name, fig in figures.items() if (found := title_problems(fig))}
    assert problems == {}


def test_short_names_keep_distinct_names_distinct_within_the_width():
    from e2vpt_viz.plots import short_names
    finches = [f"{i:03d}.{breast}_breasted_{tail}_tailed_Finch" for i, (breast, tail) in enumerate(
        [(b, t) for b in ("Blue", "Red", "Black", "Yellow", "White", "Orange") for t in ("chestnut", "black", "blue",
                                                                                       "white")], start=1)]
    cub = ["001.Black_footed_Albatross", "043.Yellow_bellied_Flycatcher", "040.Olive_sided_Flycatcher",
           "158.Black_throated_Blue_Warbler", "112.Black_throated_Sparrow", "141.Artic_Tern", "144.Common_Tern",
           "185.American_Three_toed_Woodpecker", "187.Red_bellied_Woodpecker", "188.Red_cockaded_Woodpecker"]
    tails = [f"A_very_long_shared_prefix_that_never_ends_{k}" for k in range(12)]  # differ only past the width
    for names in (finches, cub, tails):
        for width in (12, 18, 24):
            short = short_names(names, width)
            assert all(len(s) <= width for s in short), (width, short)
            assert len(set(short)) == len(names), (width, short)  # distinct in, distinct out
    assert len({n.split(".", 1)[1][:18] for n in finches}) < len(finches)  # what a plain cut did
    assert short_names(["141.Artic_Tern", "144.Common_Tern", "141.Artic_Tern"], 18) == [
        "Artic Tern", "Common Tern", "Artic Tern"]  # short names only lose the id; equal names stay equal
    assert short_names(["043.Yellow_bellied_Flycatcher", "040.Olive_sided_Flycatcher"], 20) == [
        "Yellow bellied F.", "Olive sided F."]  # the shared word goes first
    with pytest.raises(ValueError, match="at least 4"):
        short_names(["a"], 3)


def test_tradeoff_marks_the_pair_chosen_on_validation():
    runs = [{"num_tokens": t, "num_segments": 6, "tunable": 900 - 100 * t, "val_acc": v, "test_acc": a}
            for t, v, a in [(0, 0.5, 0.62), (2, 0.7, 0.58), (4, 0.6, 0.66)]]
    best = max(runs, key=lambda r: r["val_acc"])
    for chosen in (best, {"num_tokens": 2, "num_segments": 6}):  # prune_and_rewind's best, or just the pair
        fig = pruning_tradeoff(sweep_rows(), runs, chosen=chosen)
        star = [t for t in fig.data if t.name == "chosen on validation"]
        assert len(star) == 1 and star[0].showlegend is not False
        assert list(star[0].x) == [700] and list(star[0].y) == pytest.approx([58.0])  # the chosen run, test accuracy
        others = {t.marker.symbol for t in fig.data if t is not star[0]}
        assert star[0].marker.symbol not in others  # a marker of its own
    assert not any(t.name == "chosen on validation" for t in pruning_tradeoff(sweep_rows(), runs).data)
