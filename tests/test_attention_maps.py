"""Attention numbers for the figures: shares, CLS maps, KV-prompt maps and rollout on recorded probabilities."""
import pytest
import torch

from e2vpt_viz import E2VPTConfig, VPTConfig, apply_prompts, record_attention
from e2vpt_viz.attention_maps import (TokenLayout, attention_rollout, attention_shares, class_token_attention,
                                      cls_to_patches, kv_prompt_maps)

from conftest import tiny_vit


def recorded(model, images):
    model.eval()
    with torch.no_grad(), record_attention(model) as rec:
        model(images)
    return rec.probs


@pytest.mark.parametrize("vit", [dict(), dict(reg_tokens=2)])
def test_shares_sum_to_one_and_match_a_hand_count(vit, images):
    model = apply_prompts(tiny_vit(**vit), E2VPTConfig(num_prompts=3, num_kv_prompts=2), 4)
    probs = recorded(model, images)
    layout = TokenLayout.of(model)
    assert layout.num_prefix == 1 + vit.get("reg_tokens", 0) and layout.grid == (4, 4)
    for queries in ("cls", "patches", "all"):
        for row in attention_shares(probs, layout, queries):
            assert sum(row.values()) == pytest.approx(1.0, abs=1e-5)
    first = probs[0]  # (B, H, N, T + N); keys: 2 KV | prefix | 3 prompts | 16 patches
    n = layout.num_prefix
    by_hand = first[:, :, 0, :2].sum(-1).mean().item()
    assert attention_shares(probs, layout)[0]["kv_prompts"] == pytest.approx(by_hand)
    assert attention_shares(probs, layout)[0]["patches"] == pytest.approx(first[:, :, 0, 2 + n + 3:].sum(-1).mean().item())
    R = vit.get("reg_tokens", 0)  # registers: the last R prefix tokens, after the class token
    assert layout.num_registers == R
    assert attention_shares(probs, layout)[0]["prefix"] == pytest.approx(first[:, :, 0, 2:3].sum(-1).mean().item())
    assert attention_shares(probs, layout)[0]["registers"] == pytest.approx(first[:, :, 0, 3:3 + R].sum(-1).mean().item())
    found = class_token_attention(model, images)
    assert found["shares"] == attention_shares(probs, layout) and found["last_block"].shape == (3, 4, 4)
    assert sum(found["mean_shares"].values()) == pytest.approx(1.0, abs=1e-5)
    frozen = class_token_attention(model, images, prompts=False)
    assert frozen["mean_shares"]["visual_prompts"] == frozen["mean_shares"]["kv_prompts"] == 0.0
    assert (frozen["mean_shares"]["registers"] > 0) == (R > 0)


def test_maps_have_the_models_grid_and_come_from_the_right_entries(images):
    model = apply_prompts(tiny_vit(img_size=48), E2VPTConfig(num_prompts=2, num_kv_prompts=3), 4)  # 6 x 6 grid
    probs = recorded(model, torch.nn.functional.interpolate(images, size=48))
    layout = TokenLayout.of(model)
    cls = cls_to_patches(probs[1], layout)
    assert cls.shape == (3, 2, 6, 6)
    assert torch.equal(cls[0, 1, 0, 2], probs[1][0, 1, 0, 3 + 1 + 2 + 2])  # key index T + prefix + P + patch
    kv = kv_prompt_maps(probs[1], layout)
    assert kv.shape == (3, 2, 3, 6, 6)
    assert torch.equal(kv[0, 0, 1, 1, 0], probs[1][0, 0, 1 + 2 + 6, 1])  # query = patch (row 1, col 0), key = KV 1


def test_rollout_of_identity_attention_puts_nothing_on_patches(images):
    model = apply_prompts(tiny_vit(), VPTConfig(num_prompts=2, deep=True), 4)
    layout = TokenLayout.of(model)
    N = layout.num_tokens
    identity = [torch.eye(N).expand(3, 2, N, N) for _ in range(3)]
    assert torch.count_nonzero(attention_rollout(identity, layout)) == 0
    uniform = [torch.full((3, 2, N, N), 1.0 / N) for _ in range(3)]
    rolled = attention_rollout(uniform, layout)  # every step mixes half of the mass uniformly
    assert rolled.shape == (3, 4, 4) and torch.allclose(rolled, torch.full_like(rolled, (1 - 0.5 ** 3) / N))
    real = attention_rollout(recorded(model, images), layout)
    assert bool((real > 0).all()) and bool((real.sum((1, 2)) < 1).all())


def test_clear_errors_for_wrong_requests(images):
    vpt = apply_prompts(tiny_vit(), VPTConfig(num_prompts=2, deep=True), 4)
    probs = recorded(vpt, images)
    with pytest.raises(ValueError, match="no key-value prompts"):
        kv_prompt_maps(probs[0], TokenLayout.of(vpt))
    other = apply_prompts(tiny_vit(), VPTConfig(num_prompts=5, deep=True), 4)
    with pytest.raises(ValueError, match="do not fit a model with 22 tokens"):
        cls_to_patches(probs[0], TokenLayout.of(other))
    pooled = apply_prompts(tiny_vit(class_token=False, global_pool="avg"), VPTConfig(num_prompts=2), 4)
    with pytest.raises(ValueError, match="no class token"):
        attention_shares(recorded(pooled, images), TokenLayout.of(pooled))
    with pytest.raises(ValueError, match="queries must be"):
        attention_shares(probs, TokenLayout.of(vpt), "heads")


def test_grounding_score_counts_peaks_on_visible_parts():
    from e2vpt_viz.attention_maps import grounding_score, parts_to_input
    maps = torch.zeros(2, 2, 4, 4)
    maps[0, 0, 1, 2] = 1.0  # image 0, head 0: peak at row 1, col 2 -> pixels x 16..23, y 8..15 (patch 8)
    maps[0, 1, 3, 3] = 1.0  # head 1: peak elsewhere
    maps[1, 0, 1, 2] = 1.0  # image 1, head 0: same patch, but the part there is hidden
    maps[1, 1, 0, 0] = 1.0
    parts = torch.tensor([[[20.0, 9.0, 1.0], [1.0, 1.0, 0.0]],
                          [[20.0, 9.0, 0.0], [3.0, 4.0, 1.0]]])
    assert grounding_score(maps, parts, patch_size=8).tolist() == [0.5, 0.5]
    # original 80 x 80 image -> resize 73 -> centre crop 64 (offset 4): x 40 -> 40 * 73 / 80 - 4 = 32.5
    moved = parts_to_input(torch.tensor([[40.0, 40.0, 1.0], [0.0, 2.0, 1.0]]), (80, 80), 64)
    assert moved[0].tolist() == pytest.approx([32.5, 32.5, 1.0]) and moved[1, 2] == 0  # cropped away: invisible


def test_capture_records_every_block_with_and_without_prompts_and_restores_the_mode(images):
    from e2vpt_viz.attention_maps import capture_attention
    model = apply_prompts(tiny_vit(reg_tokens=1), E2VPTConfig(num_prompts=3, num_kv_prompts=2), 4).train()
    with_prompts = capture_attention(model, images)
    plain = capture_attention(model, images, prompts=False)
    assert model.training and model.prompts_enabled  # mode and prompts restored
    assert [p.shape for p in with_prompts] == [(3, 2, 2 + 3 + 16, 2 + 2 + 3 + 16)] * 3
    assert [p.shape for p in plain] == [(3, 2, 2 + 16, 2 + 16)] * 3
    # Without prompts the probabilities are the plain timm ViT's: same as a linear-probe model's attention.
    from e2vpt_viz import LinearConfig
    linear = apply_prompts(tiny_vit(reg_tokens=1), LinearConfig(), 4)
    linear.backbone.load_state_dict(model.backbone.state_dict())
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, capture_attention(linear, images)))


def test_grounding_by_layer_and_per_kv_prompt_count_peaks_on_parts():
    from e2vpt_viz.attention_maps import grounding_by_layer, grounding_chance, kv_prompt_grounding
    layout = TokenLayout(num_prefix=1, num_prompts=0, grid=(2, 2), has_class_token=True)
    N, T = layout.num_tokens, 2
    probs = torch.full((1, 2, N, T + N), 1e-3)  # 1 image, 2 heads, 2 KV prompts
    probs[0, 0, 0, T + 1 + 3] = 1.0  # head 0: class token peaks on patch 3 (row 1, col 1)
    probs[0, 1, 0, T + 1 + 0] = 1.0  # head 1: on patch 0
    probs[0, :, 1 + 3, 0] = 1.0  # KV prompt 0 is attended most by patch 3
    probs[0, :, 1 + 1, 1] = 1.0  # KV prompt 1 by patch 1
    parts = torch.tensor([[[12.0, 12.0, 1.0], [4.0, 12.0, 1.0]]])  # patch 3 and patch 2 (patch size 8)
    assert grounding_by_layer([probs, probs], layout, parts, 8).tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert kv_prompt_grounding([probs], layout, parts, 8).tolist() == [[1.0, 0.0]]
    assert grounding_chance(parts, (2, 2), 8) == 0.5  # 2 of 4 patches hold a visible part
    no_kv = probs[..., T:]
    with pytest.raises(ValueError, match="no key-value prompts"):
        kv_prompt_grounding([no_kv], layout, parts, 8)


def test_annotated_batch_gives_model_input_display_crop_and_parts(tmp_path):
    from data_prep.synthetic import generate_synthetic
    from e2vpt_viz import FGVCDataset, build_transforms
    from e2vpt_viz.attention_maps import annotated_batch
    root = generate_synthetic(tmp_path / "syn", num_classes=2, train_per_class=1, val_per_class=1, test_per_class=2,
                              workers=1)
    raw = FGVCDataset(root, "test")
    batch = annotated_batch(raw, [0, 3], crop_size=64)
    assert batch["images"].shape == (2, 3, 64, 64) and batch["views"].shape == (2, 64, 64, 3)
    assert batch["views"].dtype == torch.uint8 and batch["labels"].tolist() == [raw.samples[0][1], raw.samples[3][1]]
    assert torch.allclose(batch["images"][1], build_transforms(64, train=False)(raw[3][0]))
    assert batch["parts"].shape == (2, len(raw.part_names), 3)
    visible = batch["parts"][batch["parts"][..., 2] > 0]
    assert len(visible) > 0 and bool(((visible[:, :2] >= 0) & (visible[:, :2] < 64)).all())
    with pytest.raises(TypeError, match="transform=None"):
        annotated_batch(FGVCDataset(root, "test", build_transforms(64, False)), [0], 64)
