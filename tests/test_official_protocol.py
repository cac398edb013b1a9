"""The baselines and the protocol as the official VPT / E²VPT code runs them: the per-epoch schedule, the fine-tuning
optimiser, full fine-tuning's dropout, and what ``reproduce`` plans (batch, lr grid, prompt lengths, backbone)."""
import math

import pytest
import torch

from conftest import tiny_vit
from e2vpt_viz import BiasConfig, FullConfig, PartialConfig, TrainConfig, apply_prompts, fit
from e2vpt_viz.experiments.cli import main
from e2vpt_viz.experiments.reproduce import (BACKBONES, PAPER, PAPER_MEAN, PAPER_SOURCE, base_config, paper_numbers,
                                             reproduction_plan)
from e2vpt_viz.training import get_lr, make_optimizer
from test_training import loader, toy_data


def official_factor(epoch, warmup, epochs):
    """VPT's WarmupCosineSchedule (src/solver/lr_scheduler.py) at the scheduler step ``epoch``."""
    if epoch < warmup:
        return epoch / max(1.0, warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / max(1, epochs - warmup))))


def test_epoch_schedule_is_the_official_one():
    steps, epochs, warmup = 3, 10, 2
    lrs = [get_lr(s, epochs * steps, warmup * steps, 2.0, steps, "epoch") for s in range(epochs * steps)]
    expected = [2.0 * official_factor(s // steps, warmup, epochs) for s in range(epochs * steps)]
    assert lrs == pytest.approx(expected)
    assert lrs[:3] == [0.0, 0.0, 0.0]  # epoch 0 trains at lr 0
    assert lrs[-1] > 0.05  # the cosine ends above zero
    assert len(set(lrs[3:6])) == 1  # constant within an epoch


def test_fit_with_the_epoch_schedule_records_the_official_lrs_and_does_not_move_in_epoch_0():
    torch.manual_seed(0)
    model = apply_prompts(tiny_vit(), FullConfig(dropout=0.0), 4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    after_epoch = []
    snapshot = lambda record, m: after_epoch.append({n: p.detach().clone() for n, p in m.named_parameters()})
    config = TrainConfig(epochs=4, warmup_epochs=2, schedule="epoch", base_lr=0.256, progress=False)
    history = fit(model, loader(toy_data(n=32)), None, config, callbacks=[snapshot])
    peak = 0.256 * 16 / 256  # base lr scaled by batch / 256
    assert [r["lr"] for r in history] == pytest.approx([peak * official_factor(e, 2, 4) for e in range(4)])
    assert all(torch.equal(before[n], p) for n, p in after_epoch[0].items())  # epoch 0 at lr 0 changes nothing
    assert any(not torch.equal(before[n], p) for n, p in after_epoch[1].items())


def test_the_default_per_step_schedule_is_unchanged():
    assert TrainConfig().schedule == "step"
    assert get_lr(0, 100, 10, 1.0) == pytest.approx(0.1)


def groups_of(optimizer, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return [({names[id(p)] for p in g["params"]}, g["weight_decay"]) for g in optimizer.param_groups]


def test_vpt_adamw_is_the_official_fine_tuning_optimiser():
    model = apply_prompts(tiny_vit(), FullConfig(), 4)
    optimizer = make_optimizer(model, TrainConfig(optimizer="vpt-adamw", weight_decay=0.0001, base_lr=0.001))
    assert isinstance(optimizer, torch.optim.AdamW)
    (decayed, wd), (exempt, zero) = groups_of(optimizer, model)
    assert wd == 0.01 and zero == 0.0  # 0.01 whatever weight_decay says (> 0)
    assert exempt == {n for n, _ in model.named_parameters() if "bias" in n}  # every bias, the head's too
    assert "backbone.blocks.0.norm1.weight" in decayed  # norms decay: the official filter names LayerNorm only
    assert all(g["eps"] == 1e-6 for g in optimizer.param_groups)
    sgd = make_optimizer(model, TrainConfig(optimizer="vpt-adamw", weight_decay=0.0))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    assert sgd.param_groups[0]["weight_decay"] == 0


def test_plain_adamw_and_sgd_keep_our_recipe():
    model = apply_prompts(tiny_vit(), FullConfig(), 4)
    (decayed, wd), (exempt, zero) = groups_of(make_optimizer(model, TrainConfig(optimizer="adamw",
                                                                                weight_decay=0.05)), model)
    assert wd == 0.05 and exempt == {"head.bias"}


def test_full_fine_tuning_trains_with_the_backbone_in_train_mode_and_dropout():
    torch.manual_seed(0)
    model = apply_prompts(tiny_vit(), FullConfig(dropout=0.1), 4)
    images = torch.randn(2, 3, 32, 32)
    model.train()
    assert model.backbone.training and model.backbone.pos_drop.p == 0.1
    assert model.backbone.blocks[0].mlp.drop1.p == 0.1 and model.backbone.blocks[0].attn.attn_drop.p == 0.0
    assert not torch.equal(model(images), model(images))  # dropout is on
    model.eval()
    assert not model.backbone.training and torch.equal(model(images), model(images))
    off = apply_prompts(tiny_vit(), FullConfig(dropout=0.0), 4).train()
    assert off.backbone.training and torch.equal(off(images), off(images))
    own = apply_prompts(tiny_vit(proj_drop_rate=0.2), FullConfig(), 4)  # None keeps the backbone's own rates
    assert own.backbone.blocks[0].mlp.drop1.p == 0.2 and own.train().backbone.training


@pytest.mark.parametrize("config", [BiasConfig(), PartialConfig(num_blocks=1)], ids=["bias", "partial"])
def test_bias_and_partial_keep_the_backbone_in_eval_mode_as_the_official_code_does(config):
    model = apply_prompts(tiny_vit(), config, 4).train()
    assert not model.backbone.training and model.backbone.pos_drop.p == 0.0


@pytest.mark.parametrize("lengths, batches", [(["100"], {"100": 64}), (["5", "100", "200"], {"5": 128, "100": 64,
                                                                                          "200": 64})])
def test_reproduce_gives_vpt_batch_64_from_100_prompts_per_searched_length(lengths, batches):
    _, plan = reproduction_plan("cub", "vpt-deep", prompt_lengths=lengths)
    assert plan["prompt_lengths"] == [int(n) for n in lengths] and plan["batch_sizes"] == batches


def test_reproduce_searches_the_papers_prompt_lengths_and_the_large_lrs_for_vpt_shallow():
    _, plan = reproduction_plan("cub", "vpt-shallow", prompt_lengths="paper")
    assert plan["prompt_lengths"] == [1, 5, 10, 50, 100, 200]
    assert plan["batch_sizes"] == {"1": 128, "5": 128, "10": 128, "50": 128, "100": 64, "200": 64}
    assert {500.0, 1000.0, 250.0, 100.0} <= set(plan["lrs"]) and len(plan["lrs"]) == 13
    assert {500.0, 1000.0} & set(reproduction_plan("cub", "vpt-deep")[1]["lrs"]) == set()
    with pytest.raises(ValueError, match="--prompt-lengths applies to vpt-deep and vpt-shallow"):
        reproduction_plan("cub", "e2vpt", prompt_lengths=[10])
    with pytest.raises(ValueError, match="--prompt-lengths takes prompt counts >= 1 or 'paper'"):
        reproduction_plan("cub", "vpt-deep", prompt_lengths=["ten"])


@pytest.mark.parametrize("method", ["full", "bias", "partial"])
def test_reproduce_trains_the_fine_tuning_baselines_as_the_official_code(method):
    cfg, plan = reproduction_plan("cub", method)
    assert cfg.train.optimizer == "vpt-adamw" and cfg.train.schedule == "epoch"
    assert plan["wds"] == [0.01, 0.0]  # every wd > 0 is the official AdamW's fixed 0.01: one run, not three
    assert cfg.train.batch_size == {"full": 128, "bias": 128, "partial": 1280}[method]  # VPT Table 8
    assert cfg.method.backbone_train_mode() == (method == "full")
    if method == "full":
        assert cfg.method.dropout == 0.1  # the official ViT-B config's dropout_rate


def test_reproduce_offers_both_official_backbones_by_name(capsys):
    assert base_config("cub", "e2vpt").backbone.name == "vit_base_patch16_224.orig_in21k"
    assert (base_config("cub", "e2vpt", backbone="in21k-ft-in1k").backbone.name
            == "vit_base_patch16_224.orig_in21k_ft_in1k")
    assert set(BACKBONES) == {"in21k", "in21k-ft-in1k"}
    assert main(["reproduce", "--dataset", "cub", "--method", "e2vpt", "--backbone", "in21k-ft-in1k", "--plan"]) == 0
    assert '"backbone": "in21k-ft-in1k"' in capsys.readouterr().out
    with pytest.raises(ValueError, match="--backbone in21k applies to the FGVC datasets"):
        base_config("starter", "e2vpt", backbone="in21k")


def test_paper_numbers_are_cited_or_missing():
    for method, rows in PAPER.items():
        assert "recall" not in PAPER_SOURCE[method] and "arXiv:" in PAPER_SOURCE[method]
        if rows:  # a per-dataset row: all five datasets, averaging to the cited mean (the paper rounds each value)
            assert set(rows) == {"cub", "nabirds", "flowers", "dogs", "cars"}
            assert sum(rows.values()) / 5 == pytest.approx(PAPER_MEAN[method], abs=0.015)
    assert paper_numbers("e2vpt", "cub")["paper"] is None and paper_numbers("e2vpt", "cub")["paper_mean"] == 89.22
    assert paper_numbers("vpt-deep", "cub")["paper"] == 88.5
    assert paper_numbers("full", "starter") == {"paper": None, "paper_mean": None,
                                                "paper_source": "no paper number (offline starter)"}
