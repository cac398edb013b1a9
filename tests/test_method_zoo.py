"""The method zoo: HF peft's tuners by configuration, the hand-written adapters and SSF against a reference forward
written from each paper's equation, and Self-Prompt Tuning's data-initialised prompts."""
import copy
import json
import zlib

import pytest
import timm
import torch
import torch.nn.functional as F

from e2vpt_viz import apply_prompts, count_parameters, load_backbone, method_config
from e2vpt_viz.adapters import ScaleShift, merge_ssf
from e2vpt_viz.experiments.cli import main
from e2vpt_viz.experiments.config import load_run_config
from e2vpt_viz.experiments.run import compare_methods
from e2vpt_viz.peft_tuners import PEFT_METHODS, target_module_names
from e2vpt_viz.self_prompt import block_inputs, init_prompts_from_data, kmeans

pytestmark = pytest.mark.usefixtures("one_thread")

NEW_METHODS = [*PEFT_METHODS, "adaptformer", "adapter", "ssf"]
# Options under which each method starts as the identity, where the method defines such a start (FourierFT's
# spectrum is random unless init_weights; SSF and the sequential adapter start near the identity, exactly at std 0).
IDENTITY_OPTIONS = {"fourierft": {"init_weights": True}, "ssf": {"init_std": 0.0}, "adapter": {"init_std": 0.0}}
IMAGES = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def starter(seed: int = 0):
    torch.manual_seed(seed)
    return load_backbone("starter-vit")


def pooled(model, images=IMAGES):
    """Pooled, final-normed features (B, D) in eval mode."""
    with model.evaluating(), torch.no_grad():
        return model.forward_head(model.forward_features(images), pre_logits=True)


@pytest.mark.parametrize("method", NEW_METHODS)
def test_zero_init_methods_leave_the_backbone_output_unchanged(method):
    plain = pooled(apply_prompts(starter(), method_config("linear"), 5))
    tuned = pooled(apply_prompts(starter(), method_config(method, **IDENTITY_OPTIONS.get(method, {})), 5))
    assert torch.allclose(tuned, plain, atol=2e-5), (tuned - plain).abs().max()


@pytest.mark.parametrize("method", ["fourierft", "ssf", "adapter"])
def test_methods_with_a_random_start_move_the_output_by_their_defaults(method):
    plain = pooled(apply_prompts(starter(), method_config("linear"), 5))
    moved = (pooled(apply_prompts(starter(), method_config(method), 5)) - plain).abs().max()
    assert moved > 1e-4


@pytest.mark.parametrize("method", NEW_METHODS)
def test_a_training_step_changes_only_the_methods_own_parameters_and_the_head(method):
    model = apply_prompts(starter(), method_config(method), 5)
    config = model.method_config
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"} | {
        f"backbone.{n}" for n, _ in model.backbone.named_parameters() if config.is_method_part(n)}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(2):  # zero-init factors (LoRA's A, VeRA's d) get a gradient once their partner has moved
        loss = F.cross_entropy(model(IMAGES), torch.tensor([0, 1, 2, 3]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed <= trainable
    assert any(k.startswith("backbone.") for k in changed), changed
    counts = count_parameters(model)
    plain = sum(p.numel() for p in starter().parameters()) - sum(p.numel() for p in starter().head.parameters())
    assert counts["backbone"] == plain
    assert counts["backbone_tuned"] == sum(p.numel() for n, p in model.backbone.named_parameters()
                                           if config.is_method_part(n)) > 0
    assert counts["tunable"] == counts["backbone_tuned"] + counts["head"]


def test_roles_resolve_to_the_blocks_linear_layers_and_never_the_patch_embedding():
    backbone = starter()
    assert target_module_names(backbone, ("proj",)) == [f"blocks.{i}.attn.proj" for i in range(12)]
    assert target_module_names(backbone, ("qkv", "fc2"))[:2] == ["blocks.0.attn.qkv", "blocks.0.mlp.fc2"]
    model = apply_prompts(starter(), method_config("lora", target_modules=["proj", "fc1"]), 5)
    adapted = {n.rsplit(".lora_", 1)[0] for n, _ in model.backbone.named_parameters() if ".lora_" in n}
    assert adapted == {f"blocks.{i}.{m}" for i in range(12) for m in ("attn.proj", "mlp.fc1")}
    eva = timm.create_model("eva02_tiny_patch14_224", pretrained=False, num_classes=0)
    names = target_module_names(eva, ("qkv",))
    assert len(names) >= 12 and all(".attn." in n for n in names)


@pytest.mark.parametrize("options, message", [
    ({"target_modules": ["proj2"]}, "layer roles"),
    ({"rank": 0}, "rank must be a positive integer"),
])
def test_bad_options_are_one_line(options, message):
    with pytest.raises(ValueError, match=message) as error:
        method_config("lora", **options)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"init_std must be a number >= 0 \(SSF's 0.02; 0 starts at the identity\), "
                                         r"got -0.1") as error:
        method_config("ssf", init_std=-0.1)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"init_std must be a number >= 0 \(Houlsby's 0.01\), got True"):
        method_config("adapter", init_std=True)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="feedforward_modules"):
        method_config("ia3", target_modules=["qkv"], feedforward_modules=["fc2"])


def _randomise(model, pattern: str) -> None:
    """Draw every parameter whose name contains ``pattern`` from N(0, 0.1), so a reference sees them act."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if pattern in name:
                param.normal_(0, 0.1, generator=torch.Generator().manual_seed(zlib.crc32(name.encode())))


def _embed(bb, images):
    return bb.norm_pre(bb.patch_drop(bb._pos_embed(bb.patch_embed(images))))


def _attention(attn, x):
    """timm's Attention written out: softmax(q kᵀ / sqrt(d)) v, then the output projection."""
    B, N, C = x.shape
    q, k, v = attn.qkv(x).reshape(B, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(q), attn.k_norm(k)
    out = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1) @ v
    return attn.proj(out.transpose(1, 2).reshape(B, N, C))


def test_adaptformer_equals_its_equation():
    """out = h + MLP(LN(h)) + s · up(ReLU(down(h))), h = x + Attn(LN(x)) (AdaptFormer, arXiv 2205.13535, Eq. 4-5)."""
    reference = starter()
    model = apply_prompts(copy.deepcopy(reference), method_config("adaptformer", rank=8, scale=0.3), 5)
    _randomise(model, ".adapter.")
    x = _embed(reference, IMAGES)
    with torch.no_grad():
        for blk, wrapped in zip(reference.blocks, model.backbone.blocks):
            ad = wrapped.mlp.adapter
            h = x + blk.ls1(_attention(blk.attn, blk.norm1(x)))
            x = h + blk.ls2(blk.mlp(blk.norm2(h))) + 0.3 * ad.up(F.relu(ad.down(h)))
        expected = reference.norm(x)[:, 0]
    assert torch.allclose(pooled(model), expected, atol=1e-5)


def test_the_sequential_adapter_equals_houlsbys_placement():
    """y + A(y) after the attention's and the MLP's output projections, before each residual add (Houlsby et al.,
    arXiv 1902.00751, Fig. 2)."""
    reference = starter()
    model = apply_prompts(copy.deepcopy(reference), method_config("adapter", rank=8), 5)
    _randomise(model, ".adapter.")

    def adapted(ad, y):
        return y + ad.up(F.gelu(ad.down(y)))

    x = _embed(reference, IMAGES)
    with torch.no_grad():
        for blk, wrapped in zip(reference.blocks, model.backbone.blocks):
            h = x + adapted(wrapped.attn.proj.adapter, _attention(blk.attn, blk.norm1(x)))
            x = h + adapted(wrapped.mlp.adapter, blk.mlp(blk.norm2(h)))
        expected = reference.norm(x)[:, 0]
    assert torch.allclose(pooled(model), expected, atol=1e-5)


def test_ssf_scales_and_shifts_after_every_operation_and_merges_into_the_weights():
    """γ ⊙ y + β after the patch embedding, both norms, qkv, the attention projection, fc1 (before GELU), fc2 and the
    final norm (SSF, arXiv 2210.08823, Fig. 2)."""
    reference = starter()
    model = apply_prompts(copy.deepcopy(reference), method_config("ssf", init_std=0.2), 5)
    wrapped = {n: m for n, m in model.backbone.named_modules() if isinstance(m, ScaleShift)}
    assert len(wrapped) == 2 + 6 * 12  # patch embedding + final norm + six places per block

    def ssf(name, y, channel_dim=-1):
        shape = [1] * y.dim()
        shape[channel_dim] = -1
        return y * wrapped[name].ssf_scale.view(shape) + wrapped[name].ssf_shift.view(shape)

    bb = reference
    with torch.no_grad():
        patches = ssf("patch_embed.proj", bb.patch_embed.proj(IMAGES), 1).flatten(2).transpose(1, 2)
        x = bb.norm_pre(bb._pos_embed(patches))
        for i, blk in enumerate(bb.blocks):
            p = f"blocks.{i}."
            n1 = ssf(p + "norm1", blk.norm1(x))
            B, N, C = n1.shape
            q, k, v = ssf(p + "attn.qkv", blk.attn.qkv(n1)).reshape(B, N, 3, blk.attn.num_heads, -1).permute(
                2, 0, 3, 1, 4)
            att = (((q * blk.attn.scale) @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).reshape(B, N, C)
            h = x + ssf(p + "attn.proj", blk.attn.proj(att))
            n2 = ssf(p + "norm2", blk.norm2(h))
            x = h + ssf(p + "mlp.fc2", blk.mlp.fc2(F.gelu(ssf(p + "mlp.fc1", blk.mlp.fc1(n2)))))
        expected = ssf("norm", bb.norm(x))[:, 0]
    features = pooled(model)
    assert torch.allclose(features, expected, atol=1e-5)
    assert merge_ssf(model.backbone) == len(wrapped)
    assert not any(isinstance(m, ScaleShift) for m in model.backbone.modules())
    assert torch.allclose(pooled(model), features, atol=1e-5)


def test_adapter_dropout_follows_the_model_while_the_backbone_stays_in_eval_mode():
    model = apply_prompts(starter(), method_config("adaptformer", dropout=0.5), 5)
    _randomise(model, ".adapter.")
    model.train()
    dropout = model.backbone.blocks[0].mlp.adapter.dropout
    assert dropout.training and not model.backbone.training and not model.backbone.blocks[0].attn.training
    with torch.no_grad():
        assert not torch.equal(model(IMAGES), model(IMAGES))  # the adapter's dropout acts in training
    model.eval()
    assert not dropout.training
    with torch.no_grad():
        assert torch.equal(model(IMAGES), model(IMAGES))


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    tokens = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centres])
    found = kmeans(tokens, 3, generator=torch.Generator().manual_seed(1))
    assert torch.cdist(found, centres).min(1).values.max() < 0.1


@pytest.mark.parametrize("method", ["vpt-deep", "e2vpt"])
def test_spt_prompts_are_prototypes_of_each_layers_tokens(method):
    model = apply_prompts(starter(), method_config(method, num_prompts=3), 5)
    kv = None if model.kv_prompts is None else model.kv_prompts.detach().clone()
    stats = init_prompts_from_data(model, [(IMAGES[:2], None), (IMAGES[2:], None)], max_images=3)
    assert stats["images"] == 3 and stats["tokens_per_layer"] == 3 * 64  # 8 x 8 patches
    tokens = block_inputs(model, IMAGES[:3], 12)
    for layer, prompts in enumerate(model.visual_prompts.detach()):
        cloud = tokens[layer].reshape(-1, tokens[layer].shape[-1])
        owner = torch.cdist(cloud, prompts).argmin(1)
        assert set(owner.tolist()) == {0, 1, 2}  # every prompt is a centre of some tokens...
        means = torch.stack([cloud[owner == j].mean(0) for j in range(3)])
        assert torch.allclose(prompts, means, atol=1e-4)  # ...and the mean of its own (a k-means fixed point)
    if kv is not None:
        assert torch.equal(model.kv_prompts, kv)
    sampled = apply_prompts(starter(), method_config(method, num_prompts=3), 5)
    init_prompts_from_data(sampled, [(IMAGES, None)], prototypes="sample")
    cloud = block_inputs(sampled, IMAGES, 1)[0].reshape(-1, 96)
    gaps = (sampled.visual_prompts[0].detach()[:, None] - cloud[None]).abs().amax(-1)  # (P, tokens)
    assert gaps.min(1).values.max() < 1e-6  # every prompt is one of the tokens


def test_new_methods_train_through_compare_methods_and_the_cli(tiny_root, tmp_path, capsys):
    cfg = load_run_config("starter", [f"data.root={tiny_root}", "backbone.pretrained=false", "train.epochs=1",
                                      "train.warmup_epochs=0", "train.batch_size=8"])
    methods = [m for m in NEW_METHODS if m != "lora"]  # LoRA trains in notebook 04 and its shipped runs
    results = compare_methods(cfg, methods, tmp_path / "compare", progress=False)
    assert [r["method"] for r in results] == methods
    for r in results:
        assert 0.0 <= r["test_acc"] <= 1.0 and r["parameters"]["backbone_tuned"] > 0
        assert json.loads((tmp_path / "compare" / r["method"] / "metrics.json").read_text())["method"] == r["method"]
    out = tmp_path / "spt"
    assert main(["train", "--config", "starter", "--quiet", f"data.root={tiny_root}", "backbone.pretrained=false",
                 "train.epochs=1", "train.warmup_epochs=0", "train.batch_size=8", "method.name=vpt-deep",
                 "method.num_prompts=3", "method.prompt_init=spt", f"output_dir={out}"]) == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["method"]["prompt_init"] == "spt"
    assert main(["train", "--config", "starter", "method.name=e2vpt", "method.prompt_init=kmeans",
                 f"output_dir={tmp_path / 'bad'}"]) == 2
    err = capsys.readouterr().err
    assert "prompt_init must be random" in err and err.count("\n") == 1


@pytest.mark.parametrize("method", ["dora", "ssf"])
def test_an_interrupted_zoo_run_resumes_from_its_training_state(tiny_root, tmp_path, method):
    """A peft tuner's options hold tuples (target_modules), which a training state keeps as tuples and a signature
    compares as lists; resuming must see them as equal."""
    from e2vpt_viz.experiments.run import train_run

    cfg = load_run_config("starter", [f"data.root={tiny_root}", "backbone.pretrained=false", "train.epochs=2",
                                      "train.warmup_epochs=0", "train.batch_size=8", f"method.name={method}",
                                      f"output_dir={tmp_path / method}"])

    class Stop(Exception):
        pass

    def stop(record, model):
        raise Stop

    with pytest.raises(Stop):
        train_run(cfg, [stop], progress=False)  # interrupted after epoch 1, its training state written
    seen = []
    again = train_run(cfg, [lambda record, model: seen.append(record["epoch"])], progress=False)["history"]
    assert len(again) == 2 and seen == [2]  # epoch 1 read back from the state, only epoch 2 trained
