"""The papers' VTAB-1k protocol (`reproduce --dataset vtab`): its settings per task, the papers' tables it is shown
beside, the summary's arithmetic, and the whole runner end to end on the offline structured task."""
from __future__ import annotations

import json

import pytest

from data_prep.vtab import GROUPS, TASKS, summary
from e2vpt_viz.data import FGVCDataset
from e2vpt_viz.experiments.cli import main
from e2vpt_viz.experiments.reproduce import (FINAL_SEEDS, VTAB_PAPER, VTAB_PAPER_GROUPS, base_config, reproduce,
                                              reproduction_plan)
from e2vpt_viz.experiments.vtab import summary_document, summary_markdown
from e2vpt_viz.methods import E2VPTConfig



@pytest.mark.parametrize("method", ["full", "vpt-shallow", "vpt-deep"])
def test_vpt_per_task_table_gives_its_group_means(method):
    """VPT Table 13's per-task rows, averaged by our summary, give VPT Table 1's group means (to its rounding)."""
    found = summary(VTAB_PAPER[method])
    for group, paper in zip(GROUPS, VTAB_PAPER_GROUPS[method]["groups"]):
        assert found[group]["value"] == pytest.approx(paper, abs=0.03)
    assert found["mean_of_groups"]["value"] == pytest.approx(sum(VTAB_PAPER_GROUPS[method]["groups"]) / 3, abs=0.02)
    assert set(VTAB_PAPER[method]) == set(TASKS)


def test_vtab_settings_follow_the_official_vtab_scripts(one_thread):
    cfg, plan = reproduction_plan("vtab-dtd", "e2vpt")
    assert cfg.data.root == "data/vtab-1k/dtd" and cfg.backbone.name == "vit_base_patch16_224.orig_in21k"
    assert (cfg.data.resize, cfg.data.normalize, cfg.data.train_split, cfg.data.crop_size) == (
        "square", "imagenet", "train", 224)  # tuned on train800 / val200; the final runs switch to trainval
    assert cfg.method == E2VPTConfig(num_prompts=10, num_kv_prompts=5, dropout=0.1)  # E²VPT's VTAB commands
    assert (cfg.train.epochs, cfg.train.warmup_epochs, cfg.train.batch_size) == (100, 10, 64)
    assert plan["lrs"][-1] == 0.05 and len(plan["lrs"]) == 10 and plan["wds"] == [0.01, 0.001, 0.0001, 0.0]
    assert plan["seeds"] == list(FINAL_SEEDS)
    assert base_config("vtab-caltech101", "e2vpt").method.num_prompts == 32
    assert base_config("vtab-oxford_flowers102", "e2vpt").method.num_kv_prompts == 1
    assert base_config("vtab-dtd", "linear").train.batch_size == 2048  # VPT Table 8, as on FGVC
    assert base_config("cub", "e2vpt").data.resize == "crop"  # FGVC keeps VPT's crop pipeline
    offline = base_config("vtab-starter_distance", "vpt-deep")
    assert (offline.backbone.name, offline.data.crop_size, offline.data.synthetic) == ("starter-vit", 64, False)


def test_an_unprepared_task_is_one_line_before_any_training(tmp_path, capsys):
    status = main(["reproduce", "--dataset", "vtab", "--tasks", "dtd", "--method", "e2vpt", "--tiny", "--quiet",
                   "--vtab-root", str(tmp_path / "vtab"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.count("\n") == 0 and "python -m data_prep vtab --root" in err and "--tasks dtd" in err
    assert not (tmp_path / "out").exists()
    assert main(["reproduce", "--dataset", "vtab-nope", "--method", "e2vpt"]) == 2
    assert "Unknown dataset 'vtab-nope'" in capsys.readouterr().err


def _results(value: float, task: str) -> dict:
    return {"test_acc_mean": value, "test_acc_std": 0.5, "final": [{}] * 5, "paper": VTAB_PAPER["vpt-deep"][task],
            "protocol": {"tiny": False, "dataset": f"vtab-{task}"}}


def test_summary_labels_both_means_and_marks_an_incomplete_group():
    accuracies = {task: 50.0 + i for i, task in enumerate(TASKS)}  # 50, 51, ..., 68
    document = summary_document("vpt-deep", {t: _results(v, t) for t, v in accuracies.items()})
    found = document["summary"]
    natural, specialized, structured = 53.0, 58.5, 64.5  # means of 50..56, 57..60, 61..68
    assert [found[g]["value"] for g in GROUPS] == [natural, specialized, structured]
    assert found["mean_of_groups"]["value"] == pytest.approx((natural + specialized + structured) / 3)
    assert found["flat_mean"]["value"] == pytest.approx(59.0)
    text = summary_markdown(document)
    assert "mean of the 3 group means" in text and "flat mean over the 19 tasks" in text
    assert f"{(natural + specialized + structured) / 3:.2f}" in text and "paper 71.96" in text  # VPT-deep's 3 groups
    del accuracies["dmlab"]
    partial = summary_markdown(summary_document("vpt-deep", {t: _results(v, t) for t, v in accuracies.items()}))
    assert "7 of 8 tasks run" in partial and f"{natural:.2f}" in partial
    assert "mean of the 3 group means (VPT / E²VPT / NOAH 'mean'): —" in partial


def test_vtab_runner_end_to_end_on_the_offline_task(vtab_offline_root, tmp_path, capsys):
    """The VTAB code path in CI: the offline structured task as `python -m data_prep vtab` prepared it, the grid on
    train800 / val200 (last-epoch selection), a final run on train800val200, the summary; a rerun trains nothing.
    (All the machine's threads: nothing else runs beside it, and it trains 4 epochs on 800-1,000 images.)"""
    root, out = vtab_offline_root[0], tmp_path / "out"
    args = ["reproduce", "--dataset", "vtab", "--tasks", "starter_distance", "--method", "vpt-deep", "--tiny",
            "--quiet", "--lrs", "2.5", "--seeds", "42", "--vtab-root", str(root), "--out", str(out),
            "train.epochs=1", "train.warmup_epochs=0"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    task_root = root / "starter_distance"
    assert {split: len(FGVCDataset(task_root, split)) for split in ("train", "val", "trainval")} == {
        "train": 800, "val": 200, "trainval": 1000}
    folder = out / "starter_distance" / "vpt-deep"
    results = json.loads((folder / "results.json").read_text())
    assert results["grid"]["select"].startswith("last-epoch") and results["final"][0]["val_acc"] is None
    grid_run = json.loads(next((folder / "grid").glob("*/metrics.json")).read_text())
    final_run = json.loads((folder / "final" / "seed42" / "metrics.json").read_text())
    assert grid_run["config"]["data"]["train_split"] == "train" and grid_run["val_acc"] is not None
    assert final_run["config"]["data"]["train_split"] == "trainval" and final_run["config"]["data"]["resize"] == "square"
    assert len(final_run["history"]) == 1 and results["final"][0]["test_acc"] == final_run["test_acc"]
    document = json.loads((out / "vpt-deep-summary.json").read_text())
    assert document["summary"]["offline"] == {"starter_distance": pytest.approx(results["test_acc_mean"])}
    assert document["summary"]["mean_of_groups"]["value"] is None  # the offline task is in none of the 19-task means
    text = (out / "vpt-deep-summary.md").read_text()
    assert "offline task, in none of the means: starter_distance" in text and "paper 71.96" in text
    assert "a check of the code path, not a result" in text and text.strip() in printed
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    assert main(args) == 0  # resumed: everything is read back
    assert stamps and {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")} == stamps


def test_e2vpt_prunes_on_train_and_val_then_trains_its_final_runs_on_both(trainval_root, tmp_path, one_thread):
    """E²VPT on a VTAB task: budgets chosen on val200 after rewinding on train800; each final seed then trains under
    the chosen masks on train800val200 (one candidate, no validation), none of them read back from the rewinding."""
    out = tmp_path / "e2vpt"
    results = reproduce("vtab-starter_distance", "e2vpt", out, tiny=True, progress=False, seeds=[42],
                        overrides=[f"data.root={trainval_root}", "train.batch_size=8"])
    assert len(results["pruning"]["rewind_runs"]) == 2 and all(r["val_acc"] is not None
                                                               for r in results["pruning"]["rewind_runs"])
    rewind = json.loads((out / "final" / "seed42" / "rewind.json").read_text())
    chosen = results["pruning"]["best_budgets"]
    assert [(r["num_tokens"], r["num_segments"], r["val_acc"]) for r in rewind["runs"]] == [
        (chosen["num_tokens"], chosen["num_segments"], None)]
    assert results["final"][0]["run_dir"] == str(out / "final" / "seed42")
    assert results["final"][0]["test_acc"] == rewind["runs"][0]["test_acc"]


def test_the_packaged_vtab_config_is_the_protocols_setting_for_dtd(one_thread):
    from e2vpt_viz.experiments.config import load_run_config

    packaged, protocol = load_run_config("vtab"), base_config("vtab-dtd", "e2vpt")
    assert packaged.data == protocol.data and packaged.method == protocol.method
    assert packaged.backbone.name == protocol.backbone.name
    for field in ("epochs", "warmup_epochs", "schedule", "batch_size", "optimizer", "amp"):
        assert getattr(packaged.train, field) == getattr(protocol.train, field), field
