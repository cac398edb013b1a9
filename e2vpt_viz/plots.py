"""Pure functions that turn results into plotly figures (no widget state; widgets only wire these up)."""
from __future__ import annotations

import math
import re
import zlib
from typing import Mapping, Sequence

import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

CURVE_PANELS = (("train_loss", "training loss"), ("val_acc", "validation accuracy"))

# One colour per method in every figure and lesson (training curves, accuracy vs parameters, the pruning figures of
# E²VPT), so a method is recognised by its colour across panels. Keys are normalised names (see ``method_color``).
METHOD_COLORS: dict[str, str] = {
    "linear": "#7f7f7f",       # grey: the frozen backbone's own features
    "bias": "#8c564b",
    "partial": "#e377c2",
    "lora": "#bcbd22",
    "vpt-shallow": "#17becf",
    "vpt-deep": "#1f77b4",
    "e2vpt": "#d62728",
    "full": "#2ca02c",
    "pvp": "#9467bd",
    # the zoo: LoRA's relatives in blues and greens, the orthogonal tuners in reds, the adapters in purples
    "dora": "#9c9ede",
    "rslora": "#6b6ecf",
    "loha": "#b5cf6b",
    "lokr": "#637939",
    "vera": "#393b79",
    "fourierft": "#e7ba52",
    "ia3": "#fdae6b",
    "oft": "#e7969c",
    "boft": "#ad494a",
    "hra": "#8c6d31",
    "adaptformer": "#7b4173",
    "adapter": "#a55194",
    "ssf": "#e6550d",
}
# Names not in METHOD_COLORS get one of these, picked by a checksum of the name (the same colour in every session).
FALLBACK_COLORS = ("#ff7f0e", "#aec7e8", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#9edae5")


def nothing_to_draw(what: str, items, fix: str) -> None:
    """Raise ``ValueError`` in one line (``no {what} to draw: {fix}``) when ``items`` is None or empty."""
    if items is None or len(items) == 0:
        raise ValueError(f"no {what} to draw: {fix}")


def check_rows(what: str, rows, keys: Sequence[str], fix: str) -> None:
    """:func:`nothing_to_draw`, then one-line ``TypeError`` unless ``rows`` is a list of mappings that each hold
    ``keys`` (the rows a figure draws: method results, sweep results, few-shot rows)."""
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
        raise TypeError(f"{what} must be a list of rows (dicts), got {type(rows).__name__}: {fix}")
    nothing_to_draw(what, rows, fix)
    for row in rows:
        if not isinstance(row, Mapping):
            found = type(row).__name__
        elif missing := [k for k in keys if k not in row]:
            found = "one without " + ", ".join(missing)
        else:
            continue
        raise TypeError(f"each of the {what} must be a dict with {', '.join(keys)}; got {found}: {fix}")


def _method_key(name: str) -> str:
    return name.strip().lower().replace("²", "2").replace("_", "-").replace(" ", "-")


def method_color(name: str) -> str:
    """The colour of method ``name`` (``"E²VPT"``, ``"e2vpt"`` and ``"VPT_deep"`` are read as the METHOD_COLORS keys);
    an unknown name gets a fixed colour from FALLBACK_COLORS, derived from the name alone."""
    key = _method_key(name)
    if key in METHOD_COLORS:
        return METHOD_COLORS[key]
    return FALLBACK_COLORS[zlib.crc32(key.encode()) % len(FALLBACK_COLORS)]


def training_curves(histories: Mapping[str, Sequence[dict]], figure_class=go.Figure,
                    num_classes: int | None = None) -> go.Figure:
    """Loss and validation accuracy per epoch, one line per run: ``{name: history}`` -> 1 x 2 subplots.

    Trace ``2 * i + j`` is run ``i``'s panel ``j`` (the order :class:`~e2vpt_viz.widgets.LiveCurves` relies on). A
    run has one colour (:func:`method_color`) in both panels and one legend entry (legend group ``name``, shown from
    the loss panel). With ``num_classes`` C the loss panel gets a dotted line at ln C, the cross-entropy of a uniform
    guess ("chance loss").
    """
    fig = figure_class(make_subplots(rows=1, cols=2, subplot_titles=[title for _, title in CURVE_PANELS]))
    for name, history in histories.items():
        for col, trace in enumerate(_curve_traces(name, history), start=1):
            fig.add_trace(trace, row=1, col=col)
    if num_classes is not None:
        fig.add_hline(y=math.log(num_classes), line=dict(dash="dot", color="#555555", width=1.5), row=1, col=1,
                      exclude_empty_subplots=False,  # LiveCurves starts with no runs
                      annotation_text=f"chance loss ln C = {math.log(num_classes):.2f}",
                      annotation_position="top right", annotation_font_size=10)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    fig.update_layout(height=360, margin=dict(t=40, b=40, l=40, r=20))
    return fig


def _curve_traces(name: str, history: Sequence[dict]) -> list[go.Scatter]:
    """Run ``name``'s two traces, one per CURVE_PANELS entry, in its method colour; only the first is in the legend."""
    color = method_color(name)
    return [go.Scatter(x=[h["epoch"] for h in history], y=[h.get(key) for h in history], mode="lines+markers",
                       name=name, legendgroup=name, showlegend=col == 0, line=dict(color=color),
                       marker=dict(color=color))
            for col, (key, _) in enumerate(CURVE_PANELS)]


def short_names(names: Sequence[str], width: int = 20) -> list[str]:
    """Labels of at most ``width`` characters for class names, keeping distinct names distinct (equal names stay equal).

    A name loses a CUB-style id prefix ("017.") and underscores become spaces. A label still too long abbreviates
    words, those shared by the most names first: a word every name has (it tells none apart, e.g. "breasted" among
    the starter's finches) to its shortest unique prefix, any other word only by as much as the label is too long
    ("Yellow_bellied_Flycatcher" -> "Yellow bellied Flyc."). No abbreviation is shorter than the shortest prefix that
    no other word of ``names`` starts with, so each one stands for one word and distinct names stay distinct
    ("Blue_breasted_chestnut_tailed_Finch" -> "Blue br. chestnut t. F." at width 24). Only if that is not enough does
    the label lose its middle to "…" (and, should two such labels coincide, they are numbered "~1", "~2", ...).
    """
    if width < 4:
        raise ValueError(f"width must be at least 4 characters, got {width}.")
    unique = list(dict.fromkeys(names))
    cleaned = {n: " ".join(re.sub(r"^\d+\.", "", n).replace("_", " ").split()) or n for n in unique}
    if len(set(cleaned.values())) < len(unique):  # cleaning merged two names: keep them as given
        cleaned = {n: n for n in unique}
    words = {n: cleaned[n].split(" ") for n in unique}
    vocabulary = {w for ws in words.values() for w in ws}
    shared = {w: sum(w in ws for ws in words.values()) for w in vocabulary}

    def unique_prefix(word: str) -> int:
        others = [v for v in vocabulary if v != word]
        return next((k for k in range(1, len(word)) if not any(v.startswith(word[:k]) for v in others)), len(word))

    labels = {}
    for n in unique:
        tokens = list(words[n])
        excess = len(" ".join(tokens)) - width
        for i in sorted(range(len(tokens)), key=lambda i: (-shared[tokens[i]], -len(tokens[i]), i)):
            if excess <= 0:
                break
            word = tokens[i]
            cut = len(word) - unique_prefix(word) - 1  # the most "word" -> "wo." can save
            if shared[word] < len(unique):  # a word that tells names apart loses only what is needed
                cut = min(cut, excess)
            if cut > 0:
                tokens[i] = word[:len(word) - cut - 1] + "."
                excess -= cut
        label = " ".join(tokens)
        tail = (width - 1) // 2  # too long even so: keep both ends, where names usually differ
        labels[n] = label if len(label) <= width else label[:width - 1 - tail] + "…" + label[len(label) - tail:]
    counter = 0
    while len(set(labels.values())) < len(labels):  # only cut labels can coincide
        seen: dict[str, str] = {}
        for n, label in labels.items():
            if label in seen:
                counter += 1
                tag = f"~{counter}"
                labels[n] = label[:width - len(tag)] + tag
            else:
                seen[label] = n
    return [labels[n] for n in names]


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


def readable_scale(values: Sequence[float]) -> int:
    """The power of ten to divide ``values`` by so that their largest magnitude reads as 1 to 10; 0 when it already
    lies in [0.01, 1000) (or all are zero). Gradient scores of ~1e-7 would otherwise be ticked as "0.5µ"."""
    top = max((abs(float(v)) for v in values), default=0.0)
    if top == 0 or 1e-2 <= top < 1e3:
        return 0
    return math.floor(math.log10(top))


def _scaled(label: str, exponent: int) -> str:
    return label if exponent == 0 else f"{label} (×1e{exponent})"


def importance_heatmap(token_scores: Sequence[float], segment_scores: Sequence[Sequence[float]]) -> go.Figure:
    """Pruning importance: token scores S_k (P,) as bars and segment scores S_{k,r} (P, 16) as a heatmap.

    Lower scores are pruned first, so the lowest bar and the darkest cells go first. Tiny scores are shown divided
    by a power of ten that the axis and colourbar titles state, e.g. "token score S_k (×1e-7)" (:func:`readable_scale`);
    hovering shows the unscaled score.
    """
    nothing_to_draw("importance scores", token_scores, "compute them with importance_scores() on an E²VPT model.")
    P = len(token_scores)
    token_exp = readable_scale(token_scores)
    segment_exp = readable_scale([v for row in segment_scores for v in row])
    fig = make_subplots(rows=1, cols=2, column_widths=[0.3, 0.7], horizontal_spacing=0.12,
                        subplot_titles=["token score S_k", "segment score S_k,r"])
    tokens = [f"prompt {k}" for k in range(P)]
    fig.add_trace(go.Bar(x=[float(v) / 10 ** token_exp for v in token_scores], y=tokens, orientation="h",
                         showlegend=False, customdata=[float(v) for v in token_scores],
                         hovertemplate="%{y}: S_k = %{customdata:.3e}<extra></extra>",
                         marker_color=method_color("e2vpt")), row=1, col=1)
    fig.add_trace(go.Heatmap(z=[[float(v) / 10 ** segment_exp for v in row] for row in segment_scores],
                             x=list(range(len(segment_scores[0]))), y=tokens, colorscale="Viridis",
                             customdata=[[float(v) for v in row] for row in segment_scores],
                             hovertemplate="%{y}, segment %{x}: S_k,r = %{customdata:.3e}<extra></extra>",
                             colorbar=dict(title=dict(text=_scaled("S_k,r", segment_exp), side="right"))),
                  row=1, col=2)
    fig.update_xaxes(title_text=_scaled("S_k", token_exp), row=1, col=1)
    fig.update_yaxes(title_text="prompt token", row=1, col=1)
    fig.update_xaxes(title_text="segment r (channels r, r+16, ...)", row=1, col=2)
    fig.update_layout(height=140 + 40 * P, margin=dict(t=40, b=50, l=60, r=20))
    return fig


def pruning_tradeoff(sweep_results: Sequence[Mapping], rewound: Sequence[Mapping] = (),
                     highlight: float | None = None, chosen: Mapping | None = None) -> go.Figure:
    """Accuracy against tunable parameters: the instant-pruning curve (one point per ratio), optionally the rewound
    candidates, the candidate chosen on validation and a highlighted ratio (the slider's position).

    ``sweep_results``: :class:`~e2vpt_viz.pruning.PruningSweep` results (ratio, acc, parameters); ``rewound``: rows with
    ``tunable`` and ``test_acc`` (or ``val_acc``). Both are E²VPT models, drawn in its colour (:func:`method_color`):
    the line for instant pruning, diamonds for the rewound candidates. ``chosen`` (``prune_and_rewind``'s ``best``,
    or any mapping with ``num_tokens`` and ``num_segments`` naming one of ``rewound``) is drawn as a black star,
    legend entry "chosen on validation", at the same accuracy as the diamonds.

    Trace order: curve, rewound candidates, chosen, highlighted ratio (each only when given).
    """
    check_rows("sweep results", sweep_results, ("ratio", "acc", "parameters"),
               "run pruning_sweep() first (its .results, one per ratio).")
    color = method_color("e2vpt")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[r["parameters"]["tunable"] for r in sweep_results],
                             y=[100 * r["acc"] for r in sweep_results], mode="lines+markers", name="instant pruning",
                             text=[f"ratio {r['ratio']:.1f}" for r in sweep_results], line=dict(color=color),
                             marker=dict(color=color)))
    key = "test_acc" if rewound and rewound[0].get("test_acc") is not None else "val_acc"
    if rewound:
        fig.add_trace(go.Scatter(x=[r["tunable"] for r in rewound], y=[100 * r[key] for r in rewound],
                                 mode="markers", name=f"rewound ({key.split('_')[0]})",
                                 marker=dict(symbol="diamond", size=9, color=color, line=dict(color="white", width=1)),
                                 text=[f"{r['num_tokens']} tokens, {r['num_segments']} segments" for r in rewound]))
    if chosen is not None:
        pair = (chosen["num_tokens"], chosen["num_segments"])
        run = next((r for r in rewound if (r["num_tokens"], r["num_segments"]) == pair), chosen)
        key = key if run.get(key) is not None else "val_acc"
        fig.add_trace(go.Scatter(x=[run["tunable"]], y=[100 * run[key]], mode="markers", name="chosen on validation",
                                 marker=dict(symbol="star", size=17, color="black", line=dict(color="white", width=1)),
                                 text=[f"{pair[0]} tokens, {pair[1]} segments pruned"]))
    if highlight is not None:
        point = min(sweep_results, key=lambda r: abs(r["ratio"] - highlight))
        fig.add_trace(_highlight_trace(point))
    fig.update_layout(xaxis_title="tunable parameters", yaxis_title="accuracy (%)", height=380,
                      margin=dict(t=30, b=40, l=50, r=20))
    return fig


def _highlight_trace(point: Mapping) -> go.Scatter:
    """The slider's position on the trade-off curve: an open black ring around the sweep point ``point``."""
    return go.Scatter(x=[point["parameters"]["tunable"]], y=[100 * point["acc"]], mode="markers",
                      name=f"ratio {point['ratio']:.1f}",
                      marker=dict(size=16, symbol="circle-open", color="black", line=dict(width=2)))


def per_class_change(result: Mapping, reference: Mapping) -> list[float]:
    """Per-class accuracy change in points between a pruned result and the unpruned reference (same class order)."""
    return [100 * (a - b) for a, b in zip(result["per_class_acc"], reference["per_class_acc"])]


def pruning_dashboard(sweep_results: Sequence[Mapping], rewound: Sequence[Mapping] = (), highlight: float = 0.0,
                      class_names: Sequence[str] | None = None) -> go.Figure:
    """The slider's figure: the trade-off curve with the highlighted ratio (left) and every class's accuracy change
    against the unpruned model at that ratio (right).

    Trace order: the :func:`pruning_tradeoff` traces, then the per-class bars (``data[-2]``), then the highlighted
    point (``data[-1]``), which :class:`~e2vpt_viz.widgets.PruningSlider` updates.
    """
    check_rows("sweep results", sweep_results, ("ratio", "acc", "parameters"),
               "run pruning_sweep() first (its .results, one per ratio).")
    reference = min(sweep_results, key=lambda r: r["ratio"])
    point = min(sweep_results, key=lambda r: abs(r["ratio"] - highlight))
    count = len(point["per_class_acc"])
    names = list(class_names) if class_names is not None else [f"class {i}" for i in range(count)]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.12,
                        subplot_titles=["accuracy vs tunable parameters",
                                        f"per-class change vs ratio {reference['ratio']:.1f}"])
    for trace in pruning_tradeoff(sweep_results, rewound).data:
        fig.add_trace(trace, row=1, col=1)
    fig.add_trace(go.Bar(x=list(range(count)), y=per_class_change(point, reference), hovertext=names,
                         name="per-class change", showlegend=False, marker_color=method_color("e2vpt")), row=1, col=2)
    fig.add_trace(_highlight_trace(point), row=1, col=1)
    fig.update_xaxes(title_text="tunable parameters", row=1, col=1)
    fig.update_yaxes(title_text="accuracy (%)", row=1, col=1)
    fig.update_yaxes(range=[-100, 100], title_text="accuracy change (points)", row=1, col=2)
    fig.update_xaxes(title_text="class (hover: name)", row=1, col=2)
    fig.update_layout(height=420, margin=dict(t=40, b=60, l=50, r=20),
                      legend=dict(orientation="h", yanchor="bottom", y=-0.35, x=0))
    return fig


SHARE_LABELS = {"kv_prompts": "key-value prompts", "prefix": "class token(s)", "registers": "register tokens",
                "visual_prompts": "visual prompts", "patches": "patches"}


def attention_share_bars(shares: Sequence[Mapping[str, float]], title: str = "where the class token attends") -> go.Figure:
    """Per block, stacked shares of attention by key group (from :func:`~e2vpt_viz.attention_maps.attention_shares`)."""
    nothing_to_draw("attention shares", shares, "compute them with attention_shares().")
    fig = go.Figure()
    blocks = [f"block {i}" for i in range(len(shares))]
    for group, label in SHARE_LABELS.items():
        if group == "registers" and not any(row.get(group) for row in shares):
            continue  # a backbone without registers
        fig.add_trace(go.Bar(x=blocks, y=[100 * row[group] for row in shares], name=label))
    fig.update_layout(barmode="stack", yaxis_title="share of attention (%)", title=title, height=360,
                      margin=dict(t=50, b=40, l=50, r=20))
    return fig


def patch_map_overlay(image, patch_map, title: str = "", opacity: float = 0.55) -> go.Figure:
    """A (rows, cols) map over the patch grid drawn on the (H, W, 3) uint8 image it was computed for."""
    fig = go.Figure(_image_trace(image))
    fig.add_trace(_map_trace(image, patch_map, opacity).update(showscale=True))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, height=320, width=340, margin=dict(t=40, b=0, l=0, r=0))
    return fig


def attention_explorer_figure(view, patch_map, kv_mass: Sequence[float]) -> go.Figure:
    """The attention explorer's figure: a (rows, cols) map over the (H, W, 3) image (traces 0 and 1) and the class
    token's attention mass on each key-value prompt as bars (trace 2).

    The map's colourbar stands in the gap right of the image panel, clear of the bar chart's axis labels (the gap is
    sized for the bar, its tick labels and its title).
    """
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.21,
                        subplot_titles=["", "class token → KV prompts"])
    fig.add_trace(_image_trace(view), row=1, col=1)
    image_end = fig.layout.xaxis.domain[1]
    fig.add_trace(_map_trace(view, patch_map, 0.55).update(
        showscale=True, colorbar=dict(x=image_end + 0.01, xanchor="left", xpad=4, thickness=12, len=1.0, y=0.5,
                                      yanchor="middle", title=dict(text="attention probability", side="right"))),
        row=1, col=1)
    fig.add_trace(go.Bar(x=[f"KV {t}" for t in range(len(kv_mass))], y=[float(v) for v in kv_mass],
                         showlegend=False, marker_color=method_color("e2vpt")), row=1, col=2)
    fig.update_xaxes(visible=False, row=1, col=1)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", row=1, col=1)
    fig.update_yaxes(title_text="attention mass", rangemode="tozero", row=1, col=2)
    fig.update_layout(height=380, width=760, margin=dict(t=60, b=30, l=10, r=20))
    return fig


def attention_map_grid(views, columns: Mapping[str, object], opacity: float = 0.55, title: str = "") -> go.Figure:
    """Maps over the image side by side: rows are images, columns are ``{title: maps}`` with maps (B, h, w) each, on
    the patch grid or per pixel (attributions); ``views`` (B, H, W, 3) uint8 are the model's input crops. Each map is
    scaled to its own maximum, so the columns compare where attention (or attribution) goes, not how much."""
    names = list(columns)
    count = len(views)
    fig = make_subplots(rows=count, cols=len(names), column_titles=names, horizontal_spacing=0.01,
                        vertical_spacing=0.02)
    for col, name in enumerate(names, start=1):
        for row in range(count):
            fig.add_trace(_image_trace(views[row]), row=row + 1, col=col)
            fig.add_trace(_map_trace(views[row], columns[name][row], opacity, normalise=True), row=row + 1, col=col)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.update_layout(title=title or None, height=150 * count + (100 if title else 60),
                      margin=dict(t=80 if title else 40, b=0, l=0, r=0))
    return fig


def diverging_colorscale(midpoint: float, colors: Sequence[str] = plotly.colors.diverging.RdBu_r) -> list[list]:
    """A plotly colourscale whose middle colour (white for RdBu_r) sits at ``midpoint`` in [0, 1] instead of at 0.5:
    the lower half of ``colors`` (an odd-length diverging scale) is spread over [0, midpoint], the upper half over
    [midpoint, 1]. Plotly ignores ``zmid`` once ``zmin`` and ``zmax`` are fixed, so this is how a fixed 0-100 % scale
    can be centred on a chance level."""
    mid = len(colors) // 2
    midpoint = min(max(midpoint, 1e-6), 1 - 1e-6)  # keep both halves, positions strictly increasing
    low = [[midpoint * i / mid, c] for i, c in enumerate(colors[:mid])]
    high = [[midpoint + (1 - midpoint) * i / mid, c] for i, c in enumerate(colors[mid:])]
    high[-1][0] = 1.0  # exactly: plotly.js drops a scale that does not end at 1 (and falls back to its default)
    return low + high


def grounding_heatmaps(scores: Mapping[str, Sequence[Sequence[float]]], chance: float,
                       x_title: str = "head") -> go.Figure:
    """Grounding scores per block (rows) and head or prompt (columns), one panel per method; scores and ``chance``
    (the score of a random peak) are fractions in [0, 1], drawn in %.

    Every panel shares one colour axis from 0 to 100 % (``layout.coloraxis``) whose white is the chance level: red
    cells are above chance, blue cells below, on the same scale in every panel.
    """
    nothing_to_draw("grounding scores", scores, "pass {key group: per-block shares}.")
    names = list(scores)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.04, shared_yaxes=True)
    for col, name in enumerate(names, start=1):
        z = [[100 * float(v) for v in row] for row in scores[name]]
        fig.add_trace(go.Heatmap(z=z, x=list(range(len(z[0]))), y=[f"block {i}" for i in range(len(z))],
                                 coloraxis="coloraxis", hovertemplate="block %{y}, " + x_title +
                                 " %{x}: %{z:.1f}%<extra>" + name + "</extra>"), row=1, col=col)
        fig.update_xaxes(title_text=x_title, row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    level = 100 * chance
    ticks = {0: "0", level: f"{level:.1f} chance", 100: "100"} | ({50: "50"} if abs(level - 50) > 12 else {})
    fig.update_layout(coloraxis=dict(colorscale=diverging_colorscale(chance), cmin=0, cmax=100,
                                     colorbar=dict(title=dict(text=f"grounding (%)<br>white = chance {level:.1f}%",
                                                              side="top"),
                                                   tickvals=list(ticks), ticktext=list(ticks.values()))),
                      height=320, margin=dict(t=40, b=40, l=60, r=20))
    return fig


def accuracy_vs_parameters(results: Sequence[Mapping]) -> go.Figure:
    """Test accuracy against tunable parameters (log scale), one marker per run of
    :func:`~e2vpt_viz.experiments.run.compare_methods` (rows with ``method``, ``test_acc`` and
    ``parameters["tunable"]``) in the method's colour (:func:`method_color`)."""
    check_rows("method results", results, ("method", "test_acc", "parameters"), "train at least one method first.")
    fig = go.Figure()
    for r in results:
        fig.add_trace(go.Scatter(x=[r["parameters"]["tunable"]], y=[100 * r["test_acc"]], mode="markers+text",
                                 name=r["method"], text=[r["method"]], textposition="top center",
                                 marker=dict(size=11, color=method_color(r["method"]))))
    fig.update_xaxes(type="log", title_text="tunable parameters (log scale)")
    fig.update_layout(yaxis_title="test accuracy (%)", height=400, showlegend=False,
                      margin=dict(t=30, b=40, l=50, r=20))
    return fig


COST_AXES = (("tunable", "tunable parameters (log)", "log"),
             ("peak_train_bytes", "peak training memory (MiB)", "linear"),
             ("train_images_per_s", "training images/s", "linear"))


def accuracy_vs_cost(results: Sequence[Mapping], costs: Sequence[Mapping]) -> go.Figure:
    """Test accuracy against what each method costs, three panels: tunable parameters (log), peak training memory and
    training images/s. ``results``: rows with ``method`` and ``test_acc`` (the mean over seeds, ``mean_test_acc``,
    when a row has it); ``costs``: the rows of a cost file (:func:`~e2vpt_viz.experiments.costs.measure_method_costs`).
    A method is drawn where it has both, in its colour."""
    check_rows("method results", results, ("method", "test_acc"), "train or load the methods first.")
    check_rows("cost rows", costs, ("method", "tunable", "peak_train_bytes", "train_images_per_s"),
               "measure them with `python -m e2vpt_viz costs` or read the shipped costs.json.")
    by_method = {c["method"]: c for c in costs}
    fig = make_subplots(rows=1, cols=len(COST_AXES), shared_yaxes=True,
                        subplot_titles=[title for _, title, _ in COST_AXES], horizontal_spacing=0.04)
    for r in results:
        cost = by_method.get(r["method"])
        if cost is None:
            continue
        accuracy = 100 * r.get("mean_test_acc", r["test_acc"])
        for col, (key, _, _) in enumerate(COST_AXES, start=1):
            x = cost[key] / 2 ** 20 if key == "peak_train_bytes" else cost[key]
            fig.add_trace(go.Scatter(x=[x], y=[accuracy], mode="markers+text", name=r["method"], text=[r["method"]],
                                     textposition="top center", showlegend=False, legendgroup=r["method"],
                                     marker=dict(size=10, color=method_color(r["method"]))), row=1, col=col)
    for col, (_, _, scale) in enumerate(COST_AXES, start=1):
        fig.update_xaxes(type=scale, row=1, col=col)
    fig.update_yaxes(title_text="test accuracy (%)", row=1, col=1)
    fig.update_layout(height=420, margin=dict(t=40, b=40, l=50, r=20))
    return fig


def accuracy_by_backbone(results: Sequence[Mapping]) -> go.Figure:
    """Test accuracy of each method on each backbone, as grouped bars: x the backbones (in the order met), one bar per
    method in its colour; the bar is the mean over the shipped seeds with their sd as error bar when the row has them
    (``mean_test_acc``, ``sd_test_acc``), else the run's ``test_acc``. Rows as :func:`lesson_runs` gives them (with
    ``config["backbone"]["name"]``)."""
    check_rows("method results", results, ("method", "test_acc", "config"), "run lesson_runs for each backbone first.")
    backbones = list(dict.fromkeys(r["config"]["backbone"]["name"] for r in results))
    fig = go.Figure()
    for method in dict.fromkeys(r["method"] for r in results):
        rows = {r["config"]["backbone"]["name"]: r for r in results if r["method"] == method}
        mean = [100 * rows[b].get("mean_test_acc", rows[b]["test_acc"]) if b in rows else None for b in backbones]
        sd = [100 * rows[b].get("sd_test_acc", 0.0) if b in rows else 0.0 for b in backbones]
        fig.add_trace(go.Bar(x=backbones, y=mean, name=method, marker_color=method_color(method),
                             error_y=dict(type="data", array=sd, visible=any(sd)),
                             text=[None if m is None else f"{m:.1f}" for m in mean], textposition="outside"))
    fig.update_layout(barmode="group", yaxis_title="test accuracy (%)", xaxis_title="backbone", height=400,
                      margin=dict(t=30, b=40, l=50, r=20))
    return fig


def tsne_scatter(embeddings: Mapping[str, Sequence], labels: Sequence[int], class_names: Sequence[str] | None = None,
                 cols: int = 4) -> go.Figure:
    """2-D embeddings side by side, one panel per ``{title: (N, 2) points}``, every point coloured by its class.

    All panels show the same N images, so ``labels`` (N,) serves every panel and a class has one colour throughout.
    """
    palette = plotly.colors.qualitative.Alphabet
    labels = [int(c) for c in labels]
    names = [class_names[c] if class_names is not None else f"class {c}" for c in labels]
    titles = list(embeddings)
    rows = (len(titles) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=min(cols, len(titles)), subplot_titles=titles, horizontal_spacing=0.03,
                        vertical_spacing=0.08)
    for i, title in enumerate(titles):
        points = [[float(v) for v in p] for p in embeddings[title]]
        if len(points) != len(labels):
            raise ValueError(f"{title!r} has {len(points)} points but there are {len(labels)} labels.")
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="markers", name=title,
                                 text=names, hoverinfo="text", showlegend=False,
                                 marker=dict(size=5, color=[palette[c % len(palette)] for c in labels])),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(height=260 * rows + 40, margin=dict(t=40, b=10, l=10, r=10))
    return fig


def _image_trace(view) -> go.Image:
    return go.Image(z=view.tolist() if hasattr(view, "tolist") else view)


def _map_trace(view, patch_map, opacity: float, normalise: bool = False) -> go.Heatmap:
    """A (rows, cols) map stretched over an (H, W, 3) image."""
    height, width = view.shape[:2]
    z = [[float(v) for v in row] for row in patch_map]
    if normalise:
        top = max(max(row) for row in z) or 1.0
        z = [[v / top for v in row] for row in z]
    rows, cols = len(z), len(z[0])
    return go.Heatmap(z=z, x0=width / cols / 2 - 0.5, dx=width / cols, y0=height / rows / 2 - 0.5,
                      dy=height / rows, opacity=opacity, colorscale="Inferno", showscale=False,
                      zmin=0 if normalise else None, zmax=1 if normalise else None)


def few_shot_curves(rows: Sequence[Mapping]) -> go.Figure:
    """Few-shot test accuracy against shots per class, random vs PVP initialisation, mean ± std over seeds (rows from
    :func:`~e2vpt_viz.experiments.fewshot.few_shot_comparison`). The random start (E²VPT's prompts trained from
    scratch) is drawn in E²VPT's colour, the PVP start in PVP's (:data:`METHOD_COLORS`)."""
    check_rows("few-shot rows", rows, ("shots", "random_mean", "pvp_mean"), "run few_shot_comparison() first.")
    fig = go.Figure()
    shots = [r["shots"] for r in rows]
    for init, label, method in (("random", "random init", "e2vpt"), ("pvp", "PVP init", "pvp")):
        color = method_color(method)
        fig.add_trace(go.Scatter(x=shots, y=[100 * r[f"{init}_mean"] for r in rows], name=label,
                                 mode="lines+markers", line=dict(color=color), marker=dict(color=color),
                                 error_y=dict(type="data", array=[100 * r[f"{init}_std"] for r in rows], color=color)))
    fig.update_xaxes(type="log", tickvals=shots, title_text="training images per class")
    fig.update_yaxes(title_text="test accuracy (%)")
    fig.update_layout(height=360, margin=dict(t=30, b=40, l=50, r=20))
    return fig
