"""E²VPT pruning: scores against finite differences, budgets, masks, rewinding, the instant sweep, token removal."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from e2vpt_viz import E2VPTConfig, TrainConfig, VPTConfig, apply_prompts, count_parameters, evaluate
from e2vpt_viz.pruning import (ImportanceScores, PruningError, PruningSweep, RewindRun, _select, importance_scores,
                               instantly_pruned, prune_and_rewind, pruning_masks, pruning_sweep, ratio_budgets,
                               remove_pruned_tokens, segment_budgets, set_masks, token_budgets)

from conftest import tiny_vit

NUM_CLASSES = 3


def e2vpt_model(seed=0, num_prompts=4, dtype=torch.float32, dropout=0.1):
    torch.manual_seed(seed)
    model = apply_prompts(tiny_vit(), E2VPTConfig(num_prompts=num_prompts, num_kv_prompts=2, dropout=dropout),
                          NUM_CLASSES)
    with torch.no_grad():  # trained-looking masks, so pruning has something to multiply into
        model.token_mask.uniform_(0.5, 1.5)
        model.segment_mask.uniform_(0.5, 1.5)
    return model.to(dtype)


def loader(n=12, batch=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(n, 3, 32, 32, generator=g).to(dtype), torch.randint(0, NUM_CLASSES, (n,), generator=g))
    return DataLoader(data, batch_size=batch)


def batch_loss(model, images, labels):
    return F.cross_entropy(model(images), labels).item()


def test_scores_equal_finite_differences():
    model = e2vpt_model(dtype=torch.float64)
    data = loader(dtype=torch.float64)
    scores = importance_scores(model, data, score="signed")
    eps = 1e-5  # central differences: rounding error ~1e-16 / eps, truncation ~eps²
    model.eval()

    def fd(param, index):
        total = 0.0
        for images, labels in data:
            with torch.no_grad():
                param[index] += eps
                up = batch_loss(model, images, labels)
                param[index] -= 2 * eps
                down = batch_loss(model, images, labels)
                param[index] += eps
            total += (up - down) / (2 * eps)
        return total / len(data)

    for k in range(4):
        assert scores.token[k].item() == pytest.approx(fd(model.token_mask, k), rel=1e-5, abs=1e-9)
    for k, r in [(0, 0), (1, 5), (3, 15)]:
        assert scores.segment[k, r].item() == pytest.approx(fd(model.segment_mask, (k, r)), rel=1e-5, abs=1e-9)
    assert model.token_mask.grad is None and model.training is False  # nothing accumulated, nothing updated


def test_abs_score_is_the_mean_of_absolute_batch_gradients_and_ranks_differently():
    model = e2vpt_model()
    data = loader()
    signed = importance_scores(model, data, score="signed")
    absolute = importance_scores(model, data, score="abs")
    per_batch = []
    model.eval()
    for images, labels in data:
        per_batch.append(torch.autograd.grad(F.cross_entropy(model(images), labels), model.token_mask)[0])
    assert torch.allclose(absolute.token, torch.stack(per_batch).abs().mean(0), atol=1e-7)
    assert torch.all(absolute.token >= signed.token.abs() - 1e-7)
    # Documented ranking: lowest score pruned first, so signed prunes the most negative, abs the least important.
    crafted = ImportanceScores(torch.tensor([-3.0, 0.5, 1.0, 2.0]), torch.zeros(4, 16))
    assert pruning_masks(crafted, 1, 0)[0].tolist() == [0, 1, 1, 1]
    crafted_abs = ImportanceScores(crafted.token.abs(), torch.zeros(4, 16), "abs")
    assert pruning_masks(crafted_abs, 1, 0)[0].tolist() == [1, 0, 1, 1]


def test_both_score_kinds_from_one_pass_equal_two_passes():
    from e2vpt_viz.pruning import importance_score_kinds

    model, data = e2vpt_model(), loader()
    both = importance_score_kinds(model, data)
    for kind in ("signed", "abs"):
        alone = importance_scores(model, data, score=kind)
        assert both[kind].score == alone.score == kind
        assert torch.equal(both[kind].token, alone.token) and torch.equal(both[kind].segment, alone.segment)
    assert not torch.equal(both["signed"].token, both["abs"].token)
    with pytest.raises(PruningError, match="'magnitude'"):
        importance_score_kinds(model, data, ("signed", "magnitude"))


def test_budget_lists_match_the_official_rule():
    assert token_budgets(5) == [0, 1, 2, 3, 4]
    assert token_budgets(10) == list(range(1, 10))
    assert token_budgets(32) == [3, 6, 9, 12, 16, 19, 22, 25, 28]
    assert token_budgets(1) == [0]
    assert segment_budgets() == [1, 3, 4, 6, 8, 9, 11, 12]


def test_masks_prune_lowest_scores_per_token():
    scores = ImportanceScores(torch.tensor([0.3, -0.1, 0.2]), torch.arange(48.0).reshape(3, 16).flip(1))
    token_mask, segment_mask = pruning_masks(scores, 1, 3)
    assert token_mask.tolist() == [1, 0, 1]
    assert segment_mask[0].tolist() == [1] * 13 + [0] * 3  # row scores decrease along r: the last 3 go
    assert segment_mask[1].tolist() == [1] * 16  # a pruned token's segments are irrelevant and left at 1
    with pytest.raises(PruningError, match="at least one prompt stays"):
        pruning_masks(scores, 3, 0)


def test_masked_model_equals_hand_zeroed_prompts(images):
    model = e2vpt_model(dropout=0.0)
    scores = importance_scores(model, loader())
    token_mask, segment_mask = pruning_masks(scores, 1, 6)
    set_masks(model, token_mask, segment_mask)
    reference = e2vpt_model(dropout=0.0)
    with torch.no_grad():
        reference.token_mask.fill_(1.0)
        reference.segment_mask.fill_(1.0)
        channel_segment = torch.arange(32) % 16
        keep = token_mask[:, None] * segment_mask[:, channel_segment]  # (P, D)
        reference.visual_prompts.mul_(keep)
    model.eval(), reference.eval()
    assert torch.equal(model(images), reference(images))


def test_frozen_masks_stay_frozen_through_training_and_counts_match():
    model = e2vpt_model()
    token_mask, segment_mask = pruning_masks(importance_scores(model, loader()), 2, 4)
    set_masks(model, token_mask, segment_mask)
    prompts_before = model.visual_prompts.detach().clone()
    fit_config = TrainConfig(epochs=2, warmup_epochs=1, batch_size=4, base_lr=1.0, device="cpu", progress=False)
    from e2vpt_viz import fit
    fit(model, loader(), None, fit_config)
    assert torch.equal(model.token_mask, token_mask) and torch.equal(model.segment_mask, segment_mask)
    assert not torch.equal(model.visual_prompts, prompts_before)
    counts = count_parameters(model)
    depth, D = 3, 32
    kept_entries = 2 * (16 - 4) * (D // 16)  # 2 kept tokens x 12 kept segments x 2 channels per segment
    assert counts["visual_prompts"] == depth * kept_entries
    assert counts["masks"] == 0  # frozen masks are not tuned parameters


def test_sweep_ratio_zero_equals_plain_evaluation_and_is_cached(tmp_path):
    model = e2vpt_model()
    data = loader()
    scores = importance_scores(model, data)
    masks_before = model.token_mask.detach().clone(), model.segment_mask.detach().clone()
    sweep = pruning_sweep(model, data, (0.0, 0.5, 0.9), scores=scores)
    plain = evaluate(model, data)
    assert sweep.at(0.0)["acc"] == plain["acc"] and sweep.at(0.0)["loss"] == pytest.approx(plain["loss"])
    assert torch.equal(model.token_mask, masks_before[0]) and model.token_mask.requires_grad  # restored
    half = sweep.at(0.52)  # nearest cached ratio
    assert half["ratio"] == 0.5 and (half["pruned_token_count"], half["pruned_segment_count"]) == (2, 8)
    assert len(half["pruned_tokens"]) == 2
    assert half["parameters"]["visual_prompts"] == 3 * 2 * 8 * 2
    assert sweep.at(0.9)["parameters"]["tunable"] < half["parameters"]["tunable"] < sweep.at(0)["parameters"]["tunable"]
    with instantly_pruned(model, *pruning_masks(scores, 2, 8)):
        assert evaluate(model, data)["acc"] == half["acc"]
    loaded = PruningSweep.load(sweep.save(tmp_path / "sweep.json"))
    assert loaded.at(0.5) == json.loads(json.dumps(half))


def test_sweep_reuses_a_given_unpruned_evaluation_for_ratio_zero(monkeypatch):
    import e2vpt_viz.pruning as pruning_module

    model, data = e2vpt_model(), loader()
    scores = importance_scores(model, data)
    plain = evaluate(model, data)
    expected = pruning_sweep(model, data, (0.0, 0.5), scores=scores)
    passes = []
    monkeypatch.setattr(pruning_module, "evaluate", lambda *a, **k: passes.append(1) or evaluate(*a, **k))
    reused = pruning_sweep(model, data, (0.0, 0.5), scores=scores, unpruned=plain)
    assert len(passes) == 1 and json.dumps(reused.results) == json.dumps(expected.results)


def test_ratio_budgets_and_bad_ratios():
    assert ratio_budgets(0.0, 5) == (0, 0)
    assert ratio_budgets(0.5, 5) == (2, 8)
    assert ratio_budgets(0.99, 5) == (4, 12)
    for bad in (1.0, -0.1, "0.5", True):
        with pytest.raises(PruningError, match=r"in \[0, 1\)"):
            ratio_budgets(bad, 5)


def test_models_without_masks_cannot_be_pruned():
    for config in (VPTConfig(num_prompts=3, deep=True), E2VPTConfig(masks=False)):
        model = apply_prompts(tiny_vit(), config, NUM_CLASSES)
        with pytest.raises(PruningError, match="E2VPTConfig"):
            importance_scores(model, loader())
    with pytest.raises(PruningError, match="'signed'"):
        importance_scores(e2vpt_model(), loader(), score="magnitude")


def test_selection_prefers_accuracy_then_more_pruning():
    runs = [RewindRun(0, 1, 0.8, 100), RewindRun(2, 1, 0.8, 80), RewindRun(2, 3, 0.8, 70), RewindRun(1, 12, 0.7, 50)]
    assert (_select(runs).num_tokens, _select(runs).num_segments) == (2, 3)
    assert _select(runs[:1] + [RewindRun(3, 12, 0.81, 10)]).num_tokens == 3


def test_prune_and_rewind_trains_fresh_models_under_frozen_masks_and_resumes(tmp_path, monkeypatch):
    data = loader()
    scores = importance_scores(e2vpt_model(), data)
    config = TrainConfig(epochs=1, warmup_epochs=0, batch_size=4, base_lr=0.5, device="cpu", progress=False)
    built = []

    def make_model():
        built.append(e2vpt_model(seed=1))
        return built[-1]

    result = prune_and_rewind(make_model, data, data, config, scores, tmp_path, num_tokens=[0, 2], num_segments=[1, 4])
    assert len(built) == 4 and [(r["num_tokens"], r["num_segments"]) for r in result["runs"]] == [
        (0, 1), (0, 4), (2, 1), (2, 4)]
    for model, (t, s) in zip(built, [(0, 1), (0, 4), (2, 1), (2, 4)]):
        token_mask, segment_mask = pruning_masks(scores, t, s)
        assert torch.equal(model.token_mask, token_mask) and not model.token_mask.requires_grad
        assert (tmp_path / f"t{t}_s{s}" / "prompts.safetensors").is_file()
    best = max(result["runs"], key=lambda r: (r["val_acc"], r["num_tokens"], r["num_segments"]))
    assert result["best"] == best
    # A second call finds every candidate in rewind.json and trains nothing.
    again = prune_and_rewind(make_model, data, data, config, scores, tmp_path, num_tokens=[0, 2], num_segments=[1, 4])
    assert len(built) == 4 and again["runs"] == result["runs"]
    other = ImportanceScores(scores.token.flip(0), scores.segment)
    with pytest.raises(PruningError, match="other importance scores"):
        prune_and_rewind(make_model, data, data, config, other, tmp_path, num_tokens=[0], num_segments=[1])


def excluded_attention_reference(model, images, excluded):
    """Zeroed prompts kept in the sequence but given -inf attention logits: what removing them should equal."""
    bb = model.backbone
    n, P = bb.num_prefix_tokens, model.num_prompts
    T = model.kv_prompts.shape[2]
    x = bb.norm_pre(bb._pos_embed(bb.patch_embed(images)))
    B = x.shape[0]
    prompts = model.masked_prompts()
    for layer, blk in enumerate(bb.blocks):
        rest = x[:, n:] if layer == 0 else x[:, n + P:]
        x = torch.cat([x[:, :n], prompts[layer].expand(B, -1, -1), rest], dim=1)
        attn, N = blk.attn, x.shape[1]
        q, k, v = attn.qkv(blk.norm1(x)).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        kv = model.kv_prompts[layer].expand(B, -1, -1, -1)
        k, v = torch.cat([kv, k], 2), torch.cat([kv, v], 2)
        logits = (q * attn.scale) @ k.transpose(-2, -1)
        logits[..., [T + n + p for p in excluded]] = float("-inf")
        out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, N, -1)
        x = x + attn.proj(out)
        x = x + blk.mlp(blk.norm2(x))
    x = bb.norm(x)
    return model.head(x[:, 0])


def test_removing_pruned_tokens_equals_excluding_them_from_attention_not_zeroing(images):
    model = e2vpt_model(dropout=0.0).eval()
    token_mask, segment_mask = pruning_masks(importance_scores(model, loader()), 2, 3)
    set_masks(model, model.token_mask.detach() * token_mask, model.segment_mask.detach() * segment_mask)
    compact = remove_pruned_tokens(model)
    assert compact.visual_prompts.shape == (3, 2, 32) and compact.num_prompts == 2
    assert compact.layout.num_prompts == 2 and compact.token_mask is None and not compact.layout.masks  # built, not patched
    assert compact.method_config == model.method_config and not compact.visual_prompts.requires_grad
    excluded = torch.nonzero(token_mask == 0).flatten().tolist()
    with torch.no_grad():
        removed = compact(images)
        reference = excluded_attention_reference(model, images, excluded)
        zeroed = model(images)
    assert torch.allclose(removed, reference, atol=1e-5)
    assert (removed - zeroed).abs().max() > 1e-4  # a zeroed token still has the key W_k·β + b_k
    assert model.num_prompts == 4 and model.backbone is compact.backbone  # the original is untouched


def test_scores_do_not_depend_on_what_ran_before():
    """Shuffled data with a ragged last batch: the batch means depend on the order, which the pass seeds itself."""
    g = torch.Generator().manual_seed(3)
    data = TensorDataset(torch.randn(10, 3, 32, 32, generator=g), torch.randint(0, NUM_CLASSES, (10,), generator=g))
    shuffled = DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator())
    model = e2vpt_model()
    first = importance_scores(model, shuffled)
    torch.manual_seed(123)
    next(iter(shuffled))  # consume randomness, as a finished or resumed training run would
    again = importance_scores(model, shuffled)
    assert torch.equal(first.token, again.token) and torch.equal(first.segment, again.segment)
    assert not torch.equal(importance_scores(model, shuffled, seed=1).token, first.token)
