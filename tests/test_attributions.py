"""Captum attributions on prompted ViTs (completeness, known answers, hand-computed Grad-CAM) and t-SNE embeddings."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from conftest import tiny_vit
from e2vpt_viz import apply_prompts, method_config
from e2vpt_viz.attention_maps import TokenLayout
from e2vpt_viz.attributions import (attribution_maps, cls_features, grad_cam, integrated_gradients,
                                    normalize_maps, occlusion, tsne_embedding, upsample_maps)
from e2vpt_viz.model import PromptedViT

PROMPTS = {"vpt-deep": dict(num_prompts=3), "e2vpt": dict(num_prompts=2, num_kv_prompts=2)}


def prompted(method, **vit):
    torch.manual_seed(0)
    return apply_prompts(tiny_vit(**vit), method_config(method, **PROMPTS.get(method, {})), 5)


def logits_of(model, images):
    model.eval()
    with torch.no_grad():
        return model(images)


@pytest.mark.parametrize("method", ["linear", "vpt-deep", "e2vpt", "lora"])
def test_integrated_gradients_are_complete_and_leave_the_model_as_it_was(method, images):
    model = prompted(method, reg_tokens=2).train()  # train mode: prompt dropout would be on
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    target = torch.tensor([0, 3, 4])
    attributions = integrated_gradients(model, images, target, steps=64)
    assert attributions.shape == images.shape
    assert model.training and flags == {n: p.requires_grad for n, p in model.named_parameters()}
    assert all(p.grad is None for p in model.parameters())  # gradients w.r.t. the input only
    rows = torch.arange(3)
    gap = logits_of(model, images)[rows, target] - logits_of(model, torch.zeros_like(images))[rows, target]
    assert torch.allclose(attributions.sum((1, 2, 3)), gap, atol=2e-3, rtol=1e-3)


class OnePatchLogits(PromptedViT):
    """Logit c = (c + 1) · (sum of the pixels of the patch at row 1, column 2); the backbone is not used."""

    def forward(self, images):
        return images[:, :, 8:16, 16:24].sum((1, 2, 3))[:, None] * torch.arange(1.0, 6.0)


def test_occlusion_finds_the_only_patch_the_logit_reads(images):
    model = OnePatchLogits(tiny_vit(img_size=(32, 48)), 5)  # 4 x 6 grid of 8-px patches
    wide = torch.rand(3, 3, 32, 48)
    maps = occlusion(model, wide, target=torch.tensor([4, 4, 0]))
    assert maps.shape == (3, 4, 6)
    patch_sums = wide[:, :, 8:16, 16:24].sum((1, 2, 3))
    expected = torch.zeros(3, 4, 6)
    expected[:, 1, 2] = patch_sums * torch.tensor([5.0, 5.0, 1.0])
    assert torch.allclose(maps, expected, atol=1e-4)


def test_occlusion_of_a_real_model_is_the_logit_drop_per_patch(images):
    model = prompted("e2vpt", reg_tokens=1)
    maps = occlusion(model, images, target=torch.tensor([1, 1, 1]))
    occluded = images.clone()
    occluded[:, :, 16:24, 0:8] = 0  # patch (row 2, col 0)
    drop = logits_of(model, images)[:, 1] - logits_of(model, occluded)[:, 1]
    assert torch.allclose(maps[:, 2, 0], drop, atol=1e-5)


def hand_grad_cam(model, images, target):
    """Grad-CAM written out: gradient of the target logit w.r.t. the last block's norm1 tokens, patches only."""
    layout = TokenLayout.of(model)
    first = layout.num_prefix + layout.num_prompts
    saved = {}

    def keep(module, args, out):
        saved["tokens"] = out
        out.retain_grad()

    model.eval()
    handle = model.backbone.blocks[-1].norm1.register_forward_hook(keep)
    model(images.clone().requires_grad_(True))[torch.arange(len(target)), target].sum().backward()
    handle.remove()
    tokens, grads = saved["tokens"][:, first:], saved["tokens"].grad[:, first:]  # (B, patches, D)
    weights = grads.mean(1, keepdim=True)  # (B, 1, D): mean gradient over the grid, per channel
    return torch.relu((weights * tokens).sum(-1)).unflatten(1, layout.grid).detach()


@pytest.mark.parametrize("method, vit, grid", [
    ("vpt-deep", dict(reg_tokens=2), (4, 4)),
    ("e2vpt", dict(reg_tokens=1, img_size=(32, 48)), (4, 6)),
    ("linear", dict(img_size=64), (8, 8)),  # the starter's 8 x 8 grid of 8-px patches at 64 px
    ("vpt-shallow", dict(class_token=False, global_pool="avg", reg_tokens=2), (4, 4)),
])
def test_grad_cam_uses_the_patch_tokens_on_the_models_grid(method, vit, grid):
    model = prompted(method, **vit)
    size = model.backbone.patch_embed.img_size
    batch = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([2, 0])
    maps = grad_cam(model, batch, target)
    assert maps.shape == (2, *grid) and bool(torch.isfinite(maps).all()) and maps.max() > 0
    assert all(p.grad is None for p in model.parameters())
    assert torch.allclose(maps, hand_grad_cam(prompted(method, **vit), batch, target), atol=1e-5)


def test_display_maps_for_every_attribution(images):
    model = prompted("vpt-deep", reg_tokens=2)
    flags = [p.requires_grad for p in model.parameters()]
    maps = attribution_maps(model, images, steps=8)  # explains the predicted classes
    assert {k: tuple(v.shape) for k, v in maps.items()} == {
        "integrated_gradients": (3, 32, 32), "occlusion": (3, 4, 4), "grad_cam": (3, 4, 4)}
    for m in maps.values():
        assert float(m.min()) >= 0.0 and float(m.max()) == pytest.approx(1.0)
    assert flags == [p.requires_grad for p in model.parameters()]


def test_clear_errors_for_bad_input(images):
    model = prompted("linear")
    with pytest.raises(ValueError, match=r"Expected images of shape \(B, 3, 32, 32\).*got \(3, 3, 64, 64\)"):
        grad_cam(model, torch.zeros(3, 3, 64, 64))
    with pytest.raises(ValueError, match="one class per image"):
        occlusion(model, images, target=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="Unknown attribution methods"):
        attribution_maps(model, images, methods=["saliency"])


def test_normalize_clips_negatives_and_outliers_and_keeps_zero_maps():
    maps = torch.stack([torch.arange(100.0).view(10, 10) - 50, torch.zeros(10, 10)])
    maps[0, 9, 9] = 1e6  # one outlier
    shown = normalize_maps(maps, percentile=98)
    assert shown.shape == maps.shape and float(shown.min()) == 0.0 and float(shown.max()) == 1.0
    assert float(shown[0, 5, 0]) == 0.0 and 0 < float(shown[0, 9, 0]) < 1  # negative -> 0; inliers keep their order
    assert torch.count_nonzero(shown[1]) == 0


def test_upsample_stretches_grid_maps_to_the_input_size():
    grid = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    nearest = upsample_maps(grid, (4, 6), mode="nearest")
    assert nearest.shape == (1, 4, 6) and nearest[0, 3, 5] == 3.0 and nearest[0, 0, 2] == 0.0
    assert upsample_maps(grid, (64, 64)).shape == (1, 64, 64)


def test_cls_features_are_the_heads_input_in_loader_order(images):
    model = prompted("e2vpt", reg_tokens=1)
    loader = DataLoader(TensorDataset(images, torch.tensor([4, 0, 2])), batch_size=2)
    features, labels = cls_features(model, loader)
    assert features.shape == (3, 32) and labels.tolist() == [4, 0, 2]
    assert torch.allclose(model.head(features), logits_of(model, images), atol=1e-5)
    spread, spread_labels = cls_features(model, loader, max_items=2)  # evenly spaced: images 0 and 2
    assert torch.allclose(spread, features[[0, 2]], atol=1e-6) and spread_labels.tolist() == [4, 2]


def test_tsne_is_deterministic_for_a_seed():
    points = torch.cat([torch.randn(20, 8), torch.randn(20, 8) + 6])  # two clusters
    a, b = tsne_embedding(points, seed=3, perplexity=10), tsne_embedding(points, seed=3, perplexity=10)
    assert a.shape == (40, 2) and torch.equal(a, b)
    centre_gap = (a[:20].mean(0) - a[20:].mean(0)).norm()
    assert centre_gap > 3 * a[:20].std(0).norm()  # the clusters stay apart
    with pytest.raises(ValueError, match="perplexity"):
        tsne_embedding(points[:5], perplexity=30)
