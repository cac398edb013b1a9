"""The prompted ViT: token layout, equivalence with hand-written references, masks, freezing, parameter counts."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from conftest import VARIANTS, tiny_vit
from e2vpt_viz import (METHODS, E2VPTConfig, LinearConfig, VPTConfig, apply_prompts, count_parameters,
                       method_config, record_attention)


def reference_vpt_tokens(backbone, prompts, images):
    """VPT written out by hand with timm's own Block.forward: (depth or 1, P, D) prompts -> final-normed tokens."""
    n, P = backbone.num_prefix_tokens, prompts.shape[1]
    x = backbone.norm_pre(backbone._pos_embed(backbone.patch_embed(images)))
    for i, blk in enumerate(backbone.blocks):
        if i < prompts.shape[0]:
            p = prompts[i].expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :n], p, x[:, n:] if i == 0 else x[:, n + P:]], dim=1)
        x = blk(x)
    return backbone.norm(x)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("method", METHODS)
def test_forward_shapes_every_layout(variant, method, images):
    model = apply_prompts(tiny_vit(**VARIANTS[variant]), method_config(method), num_classes=7).eval()
    logits = model(images)
    assert logits.shape == (3, 7) and torch.isfinite(logits).all()
    tokens = model.forward_features(images)
    n_prefix = model.backbone.num_prefix_tokens
    assert tokens.shape == (3, n_prefix + model.num_prompts + 16, 32)
    assert model.num_prefix_tokens == n_prefix + model.num_prompts


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("deep", [False, True])
def test_vpt_equals_hand_written_reference(variant, deep, images):
    model = apply_prompts(tiny_vit(**VARIANTS[variant]), VPTConfig(num_prompts=4, deep=deep), 5).eval()
    assert model.visual_prompts.shape == ((3 if deep else 1), 4, 32)
    expected = reference_vpt_tokens(model.backbone, model.visual_prompts, images)
    assert torch.allclose(model.forward_features(images), expected, atol=1e-6)


def test_readout_drops_prompts_before_pooling(images):
    backbone = tiny_vit(**VARIANTS["mean_pool"])
    model = apply_prompts(backbone, VPTConfig(num_prompts=4, deep=True), 5).eval()
    tokens = model.forward_features(images)
    patches = tokens[:, 4:]  # no class token: prompts first, then the 16 patches
    expected = model.head(backbone.fc_norm(patches.mean(dim=1)))
    assert torch.allclose(model(images), expected, atol=1e-6)


def test_e2vpt_equals_hand_written_attention(images):
    """Key-value prompts concatenated to K and V after the projection, softmax written out."""
    model = apply_prompts(tiny_vit(), E2VPTConfig(num_prompts=3, num_kv_prompts=2), 5).eval()
    bb, H, hd = model.backbone, 2, 16
    P, n = 3, 1
    x = bb.norm_pre(bb._pos_embed(bb.patch_embed(images)))
    for i, blk in enumerate(bb.blocks):
        p = model.visual_prompts[i].expand(x.shape[0], -1, -1)
        x = torch.cat([x[:, :n], p, x[:, n:] if i == 0 else x[:, n + P:]], dim=1)
        h = blk.norm1(x)
        B, N, C = h.shape
        q, k, v = blk.attn.qkv(h).reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)
        kv = model.kv_prompts[i].expand(B, -1, -1, -1)  # (B, H, T, hd), shared key = value prompt
        k, v = torch.cat([kv, k], 2), torch.cat([kv, v], 2)
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1)
        x = x + blk.attn.proj((attn @ v).transpose(1, 2).reshape(B, N, C))
        x = x + blk.mlp(blk.norm2(x))
    assert torch.allclose(model.forward_features(images), bb.norm(x), atol=1e-5)


# The methods of TRAINABLE (below), and the zoo's modules that act inside a block on every token (an adapter, scale and shift,
# a peft tuner on the MLP): skipping rows must not change what they compute for the rows that stay.
FAST_PATH_METHODS = ["linear", "full", "bias", "partial", "lora", "vpt-shallow", "vpt-deep", "e2vpt",
                     "adaptformer", "adapter", "ssf", "ia3"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("method", FAST_PATH_METHODS)
def test_unread_tokens_are_skipped_with_the_same_logits_and_gradients(variant, method, images):
    """Rows nothing reads (deep prompts the next layer replaces; every token but the class token in the last block
    of a class-token-pooling backbone) are not computed: same logits and gradients as computing every token, fewer
    FLOPs, and attention recording still sees every token."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = apply_prompts(tiny_vit(**VARIANTS[variant]), method_config(method), 5).eval()
    labels = torch.arange(3)

    def step(skip: bool):
        model.zero_grad(set_to_none=True)
        with FlopCounterMode(display=False) as counter, model.using(skip_unread_tokens=skip):
            logits = model(images)
            F.cross_entropy(logits, labels).backward()
        grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
        return logits.detach(), grads, counter.get_total_flops()

    (skipped, skipped_grads, skipped_flops), (full, full_grads, full_flops) = step(True), step(False)
    assert torch.allclose(skipped, full, atol=1e-5)
    assert skipped_grads.keys() == full_grads.keys() and skipped_grads
    for name, grad in full_grads.items():  # float32 summation order: errors scale with the tensor's magnitude
        assert torch.allclose(skipped_grads[name], grad, atol=1e-5 * max(1.0, grad.abs().max().item()), rtol=1e-4), name
    if model.reads_class_token or model.layout.prompt_depth > 1:
        assert skipped_flops < full_flops
    else:  # mean pooling reads every patch, and shallow prompts are never replaced
        assert skipped_flops == full_flops
    assert model.options.skip_unread_tokens  # restored after each step
    with record_attention(model) as rec:
        recorded = model(images)
    assert torch.allclose(recorded, full, atol=1e-5)
    N = model.num_prefix_tokens + 16
    assert [p.shape[2] for p in rec.probs] == [N] * 3


@pytest.mark.parametrize("method", ["vpt-shallow", "vpt-deep", "e2vpt", "linear", "lora"])
def test_disabled_prompts_reproduce_frozen_backbone_exactly(method, images):
    backbone = tiny_vit(reg_tokens=1)
    model = apply_prompts(backbone, method_config(method), 5).eval()
    with model.disable_prompts():
        tokens = model.forward_features(images)
    assert torch.equal(tokens, backbone.forward_features(images))
    if method == "linear":  # no prompts at all: identical to the backbone without any switch
        assert torch.equal(model.forward_features(images), backbone.forward_features(images))
        assert torch.equal(model.forward_head(tokens, pre_logits=True), backbone.forward_head(tokens, pre_logits=True))


@pytest.mark.parametrize("config", [VPTConfig(num_prompts=4, deep=True), E2VPTConfig(num_prompts=4, num_kv_prompts=3),
                                    E2VPTConfig(shared_kv=False, kv_layers="first")])
def test_fused_and_manual_attention_agree(config, images):
    model = apply_prompts(tiny_vit(reg_tokens=2), config, 5).eval()
    fused = model.forward_features(images)
    with record_attention(model) as rec:
        manual = model.forward_features(images)
    assert (fused - manual).abs().max() < 1e-5
    N = 1 + 2 + config.num_prompts + 16
    T = getattr(config, "num_kv_prompts", 0)
    kv_layers = 1 if getattr(config, "kv_layers", "all") == "first" else 3
    assert [p.shape for p in rec.probs] == [(3, 2, N, (T if i < kv_layers else 0) + N) for i in range(3)]
    assert torch.allclose(rec.probs[0].sum(-1), torch.ones(3, 2, N))
    assert model.attention_recorder is None  # back on the fused path after the block


def test_all_ones_masks_equal_no_masks(images):
    torch.manual_seed(0)
    masked = apply_prompts(tiny_vit(), E2VPTConfig(masks=True), 5).eval()
    torch.manual_seed(0)
    unmasked = apply_prompts(tiny_vit(), E2VPTConfig(masks=False), 5).eval()
    unmasked.load_state_dict(masked.state_dict(), strict=False)
    assert unmasked.token_mask is None and torch.equal(masked.token_mask, torch.ones(5))
    assert torch.equal(masked(images), unmasked(images))


def test_segment_mask_is_strided_over_channels(images):
    model = apply_prompts(tiny_vit(), E2VPTConfig(num_prompts=2), 5).eval()
    with torch.no_grad():
        model.segment_mask[1, 3] = 0.0
        model.token_mask[0] = 0.5
    mask = model.mask_matrix()
    assert mask.shape == (2, 32)
    assert torch.all(mask[0] == 0.5)
    assert mask[1].eq(0).nonzero().flatten().tolist() == [3, 19]  # channels r, r + 16


def test_init_bounds():
    model = apply_prompts(tiny_vit(), E2VPTConfig(num_prompts=50, num_kv_prompts=20), 5)
    visual_bound = math.sqrt(6 / (3 * 8 * 8 + 32))
    kv_bound = math.sqrt(6 / (20 * 16))
    assert model.visual_prompts.abs().max() <= visual_bound
    assert model.visual_prompts.abs().max() > 0.95 * visual_bound
    assert model.kv_prompts.abs().max() <= kv_bound
    assert model.kv_prompts.abs().max() > 0.95 * kv_bound
    assert torch.allclose(model.head.bias, torch.full((5,), -math.log(99)))


def test_backbone_stays_in_eval_and_prompt_dropout_is_active(images):
    model = apply_prompts(tiny_vit(), VPTConfig(num_prompts=4, deep=True), 5)
    model.train()
    assert model.training and not model.backbone.training
    assert not any(m.training for m in model.backbone.modules())
    assert not torch.equal(model(images), model(images))  # dropout 0.1 on deep prompts
    model.eval()
    assert torch.equal(model(images), model(images))
    assert apply_prompts(tiny_vit(), VPTConfig(num_prompts=4), 5).layout.prompt_dropout == 0.0


TRAINABLE = {
    "linear": lambda n: n.startswith("head."),
    "full": lambda n: True,
    "bias": lambda n: n.startswith("head.") or n.endswith("bias"),
    "partial": lambda n: n.startswith(("head.", "backbone.blocks.2.", "backbone.norm.")),
    "lora": lambda n: n.startswith("head.") or "lora_" in n,
    "vpt-shallow": lambda n: n in ("visual_prompts", "head.weight", "head.bias"),
    "vpt-deep": lambda n: n in ("visual_prompts", "head.weight", "head.bias"),
    "e2vpt": lambda n: n in ("visual_prompts", "kv_prompts", "token_mask", "segment_mask", "head.weight", "head.bias"),
}


@pytest.mark.parametrize("method", TRAINABLE)  # the zoo's other methods: tests/test_method_zoo.py
def test_only_method_parameters_change_after_training_steps(method, images):
    model = apply_prompts(tiny_vit(), method_config(method), 5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    labels = torch.tensor([0, 1, 2])
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    expected = {n for n in before if TRAINABLE[method](n)}
    if method == "lora":  # lora_B starts at zero, so lora_A gets no gradient in the first step; B must move
        expected = {n for n in expected if "lora_A" not in n}
        assert {n for n in changed if "lora_A" in n} <= {n for n in before if "lora_A" in n}
        changed = {n for n in changed if "lora_A" not in n}
    assert changed == expected
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {n for n in before if TRAINABLE[method](n)}


def test_paper_parameter_counts_vit_b16():
    backbone = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    counts = count_parameters(apply_prompts(backbone, E2VPTConfig(num_prompts=5, num_kv_prompts=5), 200))
    assert (counts["visual_prompts"], counts["kv_prompts"], counts["masks"], counts["head"]) == (46080, 46080, 85, 153800)
    assert counts["tunable"] == 246045 and counts["backbone_tuned"] == 0
    assert counts["backbone"] == 85_798_656
    assert counts["tunable_pct"] == pytest.approx(100 * 246045 / 85_798_656)


def test_counts_for_baselines_and_pruned_masks():
    linear = count_parameters(apply_prompts(tiny_vit(), LinearConfig(), 10))
    assert linear["tunable"] == 32 * 10 + 10
    lora = count_parameters(apply_prompts(tiny_vit(), method_config("lora", rank=4), 10))
    assert lora["backbone_tuned"] == 3 * 4 * (32 + 96)  # per block: A (r x 32) + B (96 x r)
    assert lora["backbone"] == linear["backbone"]  # adapters are not counted as backbone weights
    model = apply_prompts(tiny_vit(), E2VPTConfig(num_prompts=4), 10)
    with torch.no_grad():
        model.token_mask[0] = 0
        model.segment_mask[1, :2] = 0
    assert count_parameters(model)["visual_prompts"] == 3 * (4 * 32 - 32 - 2 * 2)  # layers x kept entries


def test_gradient_checkpointing_gives_same_gradients(images):
    torch.manual_seed(0)
    model = apply_prompts(tiny_vit(), E2VPTConfig(dropout=0.0), 5).train()
    grads = []
    for enable in (False, True):
        model.zero_grad()
        with model.using(grad_checkpointing=enable):
            F.cross_entropy(model(images), torch.tensor([0, 1, 2])).backward()
        grads.append((model.visual_prompts.grad.clone(), model.kv_prompts.grad.clone()))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "5", None])
def test_bad_prompt_counts_raise_value_error(bad):
    with pytest.raises(ValueError, match="positive integer"):
        VPTConfig(num_prompts=bad)
    with pytest.raises(ValueError, match="positive integer"):
        E2VPTConfig(num_kv_prompts=bad)


def test_bad_method_and_backbone_inputs():
    with pytest.raises(ValueError, match="Unknown method 'vpt'.*e2vpt"):
        method_config("vpt")
    with pytest.raises(ValueError, match="options are"):
        method_config("e2vpt", num_tokens=5)
    with pytest.raises(ValueError, match="kv_layers"):
        E2VPTConfig(kv_layers="last")
    with pytest.raises(TypeError, match="needs a timm Vision Transformer"):
        apply_prompts(torch.nn.Linear(3, 3), LinearConfig(), 5)
    with pytest.raises(ValueError, match="num_classes"):
        apply_prompts(tiny_vit(), LinearConfig(), 0)
    with pytest.raises(ValueError, match="at least"):
        apply_prompts(tiny_vit(), method_config("partial", num_blocks=4), 5)


def test_record_attention_rejects_plain_models():
    with pytest.raises(TypeError, match="apply_prompts"):
        with record_attention(tiny_vit()):
            pass


def test_options_come_through_the_constructor_and_temporary_modes_restore_them(images):
    """How the model computes is fixed at construction (ModelOptions); `using` changes it for a block only, also when
    the block raises; every combination computes the same logits."""
    from e2vpt_viz import ModelOptions

    torch.manual_seed(0)
    fast = apply_prompts(tiny_vit(), E2VPTConfig(num_prompts=3, num_kv_prompts=2), 5).eval()
    official = ModelOptions(fused_attn=False, skip_unread_tokens=False)
    torch.manual_seed(0)
    slow = apply_prompts(tiny_vit(), E2VPTConfig(num_prompts=3, num_kv_prompts=2), 5, official).eval()
    assert fast.options == ModelOptions() and slow.options == official
    assert slow.method_config == fast.method_config == E2VPTConfig(num_prompts=3, num_kv_prompts=2)
    assert torch.allclose(fast(images), slow(images), atol=1e-5)
    with pytest.raises(RuntimeError, match="inside"):
        with fast.using(fused_attn=False, grad_checkpointing=True):
            assert fast.options == ModelOptions(fused_attn=False, grad_checkpointing=True)
            raise RuntimeError("inside")
    assert fast.options == ModelOptions()
    with pytest.raises(TypeError):
        with fast.using(fused_attention=False):  # not an option: nothing is set silently
            pass
