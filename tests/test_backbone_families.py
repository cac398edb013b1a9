"""Every timm ViT family: prompts work with the family's invariants, or are refused in one line that says why and
what works instead (never a crash inside the forward). One small random-init model per family, at its default input
size."""
import pytest
import timm
import torch

from e2vpt_viz import E2VPTConfig, VPTConfig, apply_prompts
from e2vpt_viz.backbones import BackboneError, load_backbone

SMALL = dict(depth=2, pretrained=False, num_classes=0)
WORKS = {  # family: a timm name and the changes that make it small
    "plain ViT": ("vit_small_patch16_224", {}),
    "registers (DINOv2)": ("vit_small_patch14_reg4_dinov2", dict(img_size=56)),
    "MAP pooling (SigLIP)": ("vit_base_patch16_siglip_224", dict(embed_dim=64, num_heads=2)),
    "average pooling": ("vit_medium_patch16_gap_256", dict(embed_dim=64, num_heads=2)),
    "pre-norm (CLIP)": ("vit_base_patch16_clip_224", dict(embed_dim=64, num_heads=2)),
    "DeiT III": ("deit3_small_patch16_224", {}),
    "DeiT distilled": ("deit_small_distilled_patch16_224", {}),
}
REFUSED = {
    "EVA-02": ("eva02_tiny_patch14_224", "rotary position embeddings"),
    "RoPE ViT": ("vit_small_patch16_rope_224", "rotary position embeddings"),
    "BEiT": ("beit_base_patch16_224", "relative position bias"),
    "relative-position ViT": ("vit_relpos_small_patch16_224", "relative position bias"),
    "NaFlex ViT": ("naflexvit_base_patch16_gap", "variable number of patches"),
}


def small(name, **changes):
    return timm.create_model(name, **{**SMALL, **changes})


@pytest.mark.parametrize("config", [VPTConfig(num_prompts=3), VPTConfig(num_prompts=3, deep=True),
                                    E2VPTConfig(num_prompts=3, num_kv_prompts=2)], ids=["shallow", "deep", "e2vpt"])
@pytest.mark.parametrize("family", WORKS)
def test_supported_families_keep_the_invariants(family, config):
    name, changes = WORKS[family]
    torch.manual_seed(0)
    backbone = small(name, **changes)
    size = backbone.pretrained_cfg["input_size"] if "img_size" not in changes else (3, changes["img_size"],
                                                                                    changes["img_size"])
    images = torch.randn(2, *size)
    expected = backbone.eval().forward_features(images)
    model = apply_prompts(backbone, config, 5).eval()
    assert model(images).shape == (2, 5)
    with model.disable_prompts():
        assert torch.equal(model.forward_features(images), expected)  # prompts off: the backbone exactly
    with model.using(fused_attn=False):
        explicit = model(images)
    torch.testing.assert_close(model(images), explicit, rtol=1e-4, atol=1e-5)  # fused = explicit attention


@pytest.mark.parametrize("family", REFUSED)
def test_unsupported_families_are_refused_in_one_line_with_what_works(family):
    name, why = REFUSED[family]
    with pytest.raises(TypeError) as err:
        apply_prompts(small(name), E2VPTConfig(num_prompts=3, num_kv_prompts=2), 5)
    message = str(err.value)
    assert "\n" not in message and why in message and "vit_base_patch14_reg4_dinov2" in message
    with pytest.raises(BackboneError, match=why):
        load_backbone(name, pretrained=False)
