"""Figure functions plot exactly the numbers they are given."""
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
    shares = [{"kv_prompts": 0.2, "prefix": 0.1, "visual_prompts": 0.3, "patches": 0.4},
              {"kv_prompts": 0.0, "prefix": 0.5, "visual_prompts": 0.25, "patches": 0.25}]
    fig = attention_share_bars(shares)
    assert [t.name for t in fig.data] == ["key-value prompts", "class / register tokens", "visual prompts", "patches"]
    for block in range(2):
        assert sum(t.y[block] for t in fig.data) == 100.0


def test_patch_map_overlay_places_cells_on_the_image_grid():
    import numpy as np
    from e2vpt_viz.plots import patch_map_overlay
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    fig = patch_map_overlay(image, [[0.0, 1.0], [2.0, 3.0]])
    heat = fig.data[1]
    assert heat.dx == 32 and heat.dy == 32 and heat.x0 == 15.5  # cell centres of a 2 x 2 grid on 64 px
    assert [list(r) for r in heat.z] == [[0.0, 1.0], [2.0, 3.0]]
