"""Lesson 06 on the real-data path: named timm backbones whose weights come through timm's own download code.

The Hub is a loopback stand-in (tests/fake_hub.py) serving random weights with the real checkpoints' keys and shapes,
and CUB is a tiny synthetic root in CUB's prepared layout, so this runs offline; everything between them is what a
user with a GPU and the internet runs.
"""
from __future__ import annotations

import pytest
import safetensors.torch

from data_prep.synthetic import generate_synthetic
from fake_hub import FakeHub, timm_weights
from notebook_kernel import LessonKernel, make_workspace

# A supervised ViT with a class token only, and DINOv2 with four registers made for 518 px (its position embedding is
# resampled to 224 px by timm when it loads): the two token layouts the lesson contrasts.
BACKBONES = {"vit_tiny_patch16_224.augreg_in21k": dict(patch=16, registers=0),
             "vit_small_patch14_reg4_dinov2.lvd142m": dict(patch=14, registers=4)}


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_lesson_06_trains_named_timm_backbones_downloaded_through_the_hub(tmp_path):
    """Protects lesson 06's real-data promise (issue 20): with prepared CUB and the internet, BACKBONES names any
    timm ViTs, their pre-trained weights load through timm's download path, and the token layout, the attention
    shares and the accuracy table come from those models (registers only where the backbone has them)."""
    served = {name: timm_weights(name, seed=i) for i, name in enumerate(BACKBONES)}
    files = {f"timm/{name}/model.safetensors": data for name, data in served.items()}
    root = generate_synthetic(tmp_path / "data" / "CUB_200_2011", task="target", seed=1, num_classes=4,
                              train_per_class=4, val_per_class=2, test_per_class=2)
    workspace = make_workspace(tmp_path / "lessons")
    with FakeHub(files) as hub, LessonKernel(workspace, "06_backbones.ipynb",
                                             env={"E2VPT_NOTEBOOK_SMOKE": "0", **hub.environment(tmp_path / "hf")}) \
            as lesson:
        params = lesson.index("import os")
        lesson.nb.cells[params].source += (
            f'\nDATASET = "cub"\nDATA_DIR = {str(root.parent)!r}\nBACKBONES = {list(BACKBONES)!r}\n'
            f'TRAIN = "full"\nEPOCHS = 1\nNUM_IMAGES = 2\nOUTPUT_DIR = {str(tmp_path / "results")!r}\n')
        setup = lesson.index("from e2vpt_viz.notebook import lesson_setup")  # CUB's 8 loader workers: none on 2 cores
        lesson.nb.cells[setup].source = lesson.nb.cells[setup].source.replace(
            'cfg = cfg.replace(data={"normalize": NORMALIZE})',
            'cfg = cfg.replace(data={"normalize": NORMALIZE, "num_workers": 0})')
        lesson.run_all()
        got = lesson.value(
            '{"backbones": backbones, "note": note, "runs": [[r["config"]["backbone"]["name"], r["method"], '
            'r["source"], r["test_acc"]] for r in results], "layouts": {f"{b} {m}": [l.num_prefix, l.num_registers, '
            'l.num_prompts, list(l.grid), l.num_tokens] for (b, m), l in layouts.items()}, '
            '"P": {m: cfg.with_presets(m).method.num_prompts for m in METHODS}, '
            '"shares": {f"{b} {k}": a["mean_shares"] for (b, k), a in attention.items()}, '
            '"qkv": {f"{b} {m}": model.backbone.blocks[0].attn.qkv.weight.detach().sum().item() '
            'for (b, m), model in models.items()}, "crop": cfg.data.crop_size}')
        for name in BACKBONES:
            assert hub.downloaded(f"timm/{name}/model.safetensors"), hub.requests
    assert "Real CUB" in got["note"] and got["backbones"] == list(BACKBONES) and got["crop"] == 224
    assert [(b, m, s) for b, m, s, _ in got["runs"]] == [
        (b, m, "trained") for b in BACKBONES for m in ("vpt-shallow", "e2vpt")]
    assert all(0 <= acc <= 1 for *_, acc in got["runs"])
    for name, facts in BACKBONES.items():
        weights = safetensors.torch.load(served[name])["blocks.0.attn.qkv.weight"]
        side = 224 // facts["patch"]
        for method in ("vpt-shallow", "e2vpt"):
            key = f"{name} {method}"
            assert got["qkv"][key] == pytest.approx(weights.sum().item(), rel=1e-5, abs=1e-3)  # the served tensors
            P, R = got["P"][method], facts["registers"]
            assert got["layouts"][key] == [1 + R, R, P, [side, side], 1 + R + P + side * side]
        for kind in ("frozen", "e2vpt"):
            shares = got["shares"][f"{name} {kind}"]
            assert sum(shares.values()) == pytest.approx(1, abs=1e-4)
            assert (shares["registers"] > 0) == (facts["registers"] > 0)
            assert (shares["kv_prompts"] > 0) == (kind == "e2vpt")
