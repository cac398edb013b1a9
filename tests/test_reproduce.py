"""`python -m e2vpt_viz reproduce`: the protocol's stages on a tiny dataset, resuming after an interruption without
retraining anything finished, and the table beside the papers' numbers."""
import json

import pytest

from e2vpt_viz import training
from e2vpt_viz.experiments.cli import main
from e2vpt_viz.experiments.config import PruneConfig
from e2vpt_viz.methods import E2VPTConfig
from e2vpt_viz.experiments.reproduce import FINAL_SEEDS, PAPER, base_config, reproduce
from e2vpt_viz.tables import mean_std


pytestmark = pytest.mark.usefixtures("one_thread")


def settings(root):
    return [f"data.root={root}", "train.batch_size=8"]


class Interrupted(Exception):
    pass


def count_epochs(monkeypatch, stop_after=None):
    """Count trained epochs (one training-state write each); raise after ``stop_after`` of them."""
    saved = []
    real = training._save_state

    def save(path, *args):
        real(path, *args)
        saved.append(f"{path.parent.parent.name}/{path.parent.name}")
        if stop_after is not None and len(saved) == stop_after:
            raise Interrupted

    monkeypatch.setattr(training, "_save_state", save)
    return saved


def test_paper_settings():
    cfg = base_config("cub", "e2vpt")
    assert cfg.data.root == "data/CUB_200_2011" and cfg.backbone.name == "vit_base_patch16_224.orig_in21k"
    assert cfg.method == E2VPTConfig(num_prompts=5, num_kv_prompts=5, dropout=0.1)
    assert (cfg.train.epochs, cfg.train.warmup_epochs, cfg.train.batch_size) == (100, 10, 128)
    assert base_config("cub", "linear").train.batch_size == 2048
    assert base_config("cub", "full").train.optimizer == "vpt-adamw" and cfg.train.schedule == "epoch"
    assert cfg.prune == PruneConfig() and cfg.prune.num_tokens is None  # the official candidate budgets
    assert cfg.compare == {}
    assert FINAL_SEEDS == (42, 44, 82, 100, 800) and PAPER["vpt-deep"]["cub"] == 88.5
    assert mean_std([88.0, 89.0, 90.0]) == (89.0, 1.0)


def test_e2vpt_protocol_resumes_after_an_interruption_without_retraining(tiny_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cub-like" / "e2vpt"
    # Uninterrupted, the tiny protocol trains 2 epochs each: 2 grid runs, 2 rewound candidates, seed 44 (seed 42 is
    # the rewinding's winner and the model before pruning is the grid's winner: both are reused) = 10 epochs.
    saved = count_epochs(monkeypatch, stop_after=3)  # killed in the second grid run, after its first epoch
    with pytest.raises(Interrupted):
        reproduce("starter", "e2vpt", out, overrides=settings(tiny_root), tiny=True, progress=False)
    assert saved == ["grid/lr5.0_wd0.0001", "grid/lr5.0_wd0.0001", "grid/lr2.5_wd0.0001"]
    monkeypatch.undo()
    saved = count_epochs(monkeypatch)
    args = ["reproduce", "--dataset", "starter", "--method", "e2vpt", "--tiny", "--quiet", "--out", str(out),
            *settings(tiny_root)]
    assert main(args) == 0
    assert saved[:5] == ["grid/lr2.5_wd0.0001", "rewind/t0_s1", "rewind/t0_s1", "rewind/t2_s1", "rewind/t2_s1"]
    assert saved[5:] == [f"seed44/{saved[-1].split('/')[1]}"] * 2  # 10 - 3 epochs: nothing finished was retrained
    results = json.loads((out / "results.json").read_text())
    final = results["final"]
    assert [r["seed"] for r in final] == [42, 44]
    pruning = results["pruning"]
    winner = [r for r in pruning["rewind_runs"] if (r["num_tokens"], r["num_segments"]) ==
              (pruning["best_budgets"]["num_tokens"], pruning["best_budgets"]["num_segments"])][0]
    assert final[0]["test_acc"] == winner["test_acc"]  # seed 42 is the rewinding's winner, read back
    assert results["test_acc_mean"] == pytest.approx(mean_std([100 * r["test_acc"] for r in final])[0])
    assert results["grid"]["best"]["base_lr"] in (5.0, 2.5) and len(results["grid"]["runs"]) == 2
    table = capsys.readouterr().out
    assert "| e2vpt | starter |" in table and "seeds 42, 44" in table and "--tiny" in table
    assert "| e2vpt | starter |" in (out.parent / "summary.md").read_text()
    saved.clear()  # a third run finds every stage done
    assert main(args) == 0 and saved == []
    assert json.loads((out / "results.json").read_text())["final"] == final


def test_linear_reuses_the_grid_run_for_seed_42_and_refuses_other_settings(tiny_root, tmp_path, monkeypatch):
    out = tmp_path / "linear"
    saved = count_epochs(monkeypatch)
    results = reproduce("starter", "linear", out, overrides=settings(tiny_root), tiny=True, seeds=[42, 44],
                        progress=False)
    assert sorted(set(saved)) == ["final/seed44", "grid/lr25.0_wd0.0001", "grid/lr50.0_wd0.0001"] and len(saved) == 6
    best = results["grid"]["best"]
    assert results["final"][0]["run_dir"] == best["output_dir"] and results["final"][0]["test_acc"] == best["test_acc"]
    assert results["paper"] is None and "| linear | starter |" in (out / "results.md").read_text()
    with pytest.raises(ValueError, match="other settings.*seeds"):
        reproduce("starter", "linear", out, overrides=settings(tiny_root), tiny=True, seeds=[42, 45], progress=False)
    with pytest.raises(ValueError, match="prompt-lengths"):
        reproduce("starter", "linear", tmp_path / "x", overrides=settings(tiny_root), tiny=True, prompt_lengths=[5])
