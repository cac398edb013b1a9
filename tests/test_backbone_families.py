"""Every timm ViT family: prompts work with the family's invariants, or are refused in one line that says why and
what works instead (never a crash inside the forward). One small random-init model per family, at its input size."""
import re

import pytest
import timm
import torch
import torch.nn.functional as F

from e2vpt_viz import E2VPTConfig, VPTConfig, apply_prompts, count_parameters, method_config, record_attention
from e2vpt_viz.backbones import BackboneError, load_backbone

WORKS = {  # family: a timm name and the changes that make it small
    "plain ViT": ("vit_small_patch16_224", {}),
    "registers (DINOv2)": ("vit_small_patch14_reg4_dinov2", dict(img_size=56)),
    "MAP pooling (SigLIP)": ("vit_base_patch16_siglip_224", dict(embed_dim=64, num_heads=2)),
    "average pooling": ("vit_medium_patch16_gap_256", dict(embed_dim=64, num_heads=2)),
    "pre-norm (CLIP)": ("vit_base_patch16_clip_224", dict(embed_dim=64, num_heads=2)),
    "DeiT III": ("deit3_small_patch16_224", {}),
    "DeiT distilled": ("deit_small_distilled_patch16_224", {}),
    "EVA-02": ("eva02_tiny_patch14_224", {}),
    "RoPE ViT": ("vit_small_patch16_rope_224", {}),
    "RoPE ViT, mixed": ("vit_small_patch16_rope_mixed_224", {}),
    "Perception Encoder": ("vit_pe_core_tiny_patch16_384", dict(img_size=128)),
    "DINOv3 (dynamic image size)": ("vit_small_patch16_dinov3", {}),
    "BEiT": ("beit_base_patch16_224", dict(embed_dim=64, num_heads=2)),
    "BEiT, shared bias": ("beit_base_patch16_224", dict(embed_dim=64, num_heads=2, use_rel_pos_bias=False,
                                                        use_shared_rel_pos_bias=True)),
    "relative-position ViT": ("vit_relpos_small_patch16_224", {}),
    "relative-position ViT, class token": ("vit_relpos_medium_patch16_cls_224", dict(embed_dim=64, num_heads=2)),
    "relative-position ViT, shared bias": ("vit_srelpos_small_patch16_224", {}),
}
REFUSED = {
    "NaFlex ViT": ("naflexvit_base_patch16_gap", "variable number of patches", {}),
    "SAM image encoder": ("samvit_base_patch16", "attend within windows", {}),
    "post-norm blocks": ("vit_relpos_small_patch16_rpn_224", r"\(ResPostRelPosBlock\) is not one: it normalises after",
                         {}),
    "parallel blocks": ("vit_base_patch16_xp_224", r"\(ParallelScalingBlock\) is not one: it runs attention and MLP",
                        {}),
    "grouped-query attention (Sapiens2)": ("vit_base_patch16_sapiens2", "6 key-value heads among 12 query heads",
                                           dict(num_kv_heads=6)),
}
METHODS = {"vpt-shallow": VPTConfig(num_prompts=3), "vpt-deep": VPTConfig(num_prompts=3, deep=True),
           "e2vpt": E2VPTConfig(num_prompts=3, num_kv_prompts=2)}


def small(name, **changes):
    return timm.create_model(name, pretrained=False, num_classes=0, **{"depth": 2, **changes})


def images_for(backbone, n=2):
    return torch.randn(n, 3, *backbone.patch_embed.img_size)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", WORKS)
def test_supported_families_keep_the_invariants(family, method):
    name, changes = WORKS[family]
    torch.manual_seed(0)
    backbone = small(name, **changes).eval()
    images = images_for(backbone)
    model = apply_prompts(backbone, METHODS[method], 5).eval()
    expected = backbone.forward_features(images)  # frozen, as inside the model (autograd picks other kernels)
    logits = model(images)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    with model.disable_prompts():
        assert torch.equal(model.forward_features(images), expected)  # prompts off: the backbone exactly
    with model.using(fused_attn=False):
        torch.testing.assert_close(model(images), logits, rtol=1e-4, atol=1e-5)  # fused = explicit attention
    with model.using(skip_unread_tokens=False):
        torch.testing.assert_close(model(images), logits, rtol=1e-4, atol=1e-5)  # the fast path = every token
    with record_attention(model) as rec:  # the token layout comes from the model
        model(images)
    tokens = model.num_prefix_tokens + backbone.patch_embed.num_patches
    T = METHODS[method].num_kv_prompts if method == "e2vpt" else 0
    assert [tuple(p.shape[2:]) for p in rec.probs] == [(tokens, T + tokens)] * len(backbone.blocks)
    counts = count_parameters(model)
    depth = len(backbone.blocks) if method != "vpt-shallow" else 1
    assert counts["visual_prompts"] == depth * 3 * backbone.embed_dim
    assert counts["kv_prompts"] == (len(backbone.blocks) * 2 * backbone.embed_dim if method == "e2vpt" else 0)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    F.cross_entropy(model(images), torch.tensor([0, 1])).backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0).step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(not n.startswith("backbone.") for n in changed)  # only the method's own parameters


@pytest.mark.parametrize("family", ["EVA-02", "RoPE ViT", "RoPE ViT, mixed"])
def test_rotary_embeddings_reach_the_patches_and_never_the_prompts(family):
    """VPT on a rotary-position ViT equals timm's own blocks run over [prefix | prompts | patches] with the prompts
    counted among the tokens that get no rotation."""
    name, changes = WORKS[family]
    torch.manual_seed(0)
    backbone = small(name, **changes).eval()
    images = images_for(backbone)
    model = apply_prompts(backbone, VPTConfig(num_prompts=3, deep=True), 5).eval()
    x, rope = backbone._pos_embed(backbone.patch_embed(images))
    x = backbone.norm_pre(x)
    n, P = backbone.num_prefix_tokens, 3
    for i, blk in enumerate(backbone.blocks):
        prompts = model.visual_prompts[i].expand(x.shape[0], -1, -1)
        x = torch.cat([x[:, :n], prompts, x[:, n + (P if i else 0):]], dim=1)
        blk.attn.num_prefix_tokens = n + P
        x = blk(x, rope=rope[i] if getattr(backbone, "rope_mixed", False) else rope)
        blk.attn.num_prefix_tokens = n
    torch.testing.assert_close(model.forward_features(images), backbone.norm(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", REFUSED)
def test_unsupported_families_are_refused_in_one_line_with_what_works(family):
    name, why, changes = REFUSED[family]
    with pytest.raises(TypeError) as err:
        apply_prompts(small(name, **changes), E2VPTConfig(num_prompts=3, num_kv_prompts=2), 5)
    message = str(err.value)
    assert "\n" not in message and re.search(why, message) and "vit_base_patch14_reg4_dinov2" in message
    with pytest.raises(BackboneError, match=why):
        load_backbone(name, pretrained=False, **{"depth": 2, **changes})


@pytest.mark.parametrize("name", ["vit_small_patch16_dinov3", "vit_small_patch16_224"])
def test_backbones_with_a_dynamic_image_size_take_other_sizes_with_prompts(name):
    torch.manual_seed(0)
    backbone = small(name, dynamic_img_size=True).eval()
    model = apply_prompts(backbone, E2VPTConfig(num_prompts=3, num_kv_prompts=2), 5).eval()
    images = torch.randn(2, 3, 160, 128)  # not the default 224 x 224
    with model.disable_prompts():
        assert torch.equal(model.forward_features(images), backbone.forward_features(images))
    assert model.forward_features(images).shape == (2, backbone.num_prefix_tokens + 3 + 10 * 8, backbone.embed_dim)
    with model.using(fused_attn=False):
        explicit = model(images)
    torch.testing.assert_close(model(images), explicit, rtol=1e-4, atol=1e-5)


def test_prompts_have_no_position_bias_and_the_backbones_own_bias_is_kept():
    from e2vpt_viz.model import bias_with_prompts

    bias = torch.randn(1, 2, 5, 5)  # [class | 4 patches]
    wide = bias_with_prompts(bias, prefix=1, num_prompts=3, num_kv=2)  # keys: [2 kv | class | 3 prompts | 4 patches]
    assert wide.shape == (1, 2, 8, 10)
    own_rows, own_cols = [0, 4, 5, 6, 7], [2, 6, 7, 8, 9]
    assert torch.equal(wide[:, :, own_rows][..., own_cols], bias)
    assert not wide[:, :, 1:4].any() and not wide[..., [0, 1, 3, 4, 5]].any()


def test_lora_trains_on_an_eva_backbone():
    torch.manual_seed(0)
    model = apply_prompts(small("eva02_tiny_patch14_224"), method_config("lora"), 5).train()
    images = images_for(model.backbone)
    F.cross_entropy(model(images), torch.tensor([0, 1])).backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]  # B starts at 0, so A has no gradient yet
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_load_backbone_builds_every_supported_family_without_weights():
    for name in ("eva02_tiny_patch14_224", "vit_small_patch16_rope_224", "deit_tiny_distilled_patch16_224"):
        backbone = load_backbone(name, pretrained=False)
        apply_prompts(backbone, E2VPTConfig(num_prompts=2, num_kv_prompts=2), 3)  # accepted as it is
