"""choose_run_config, the CLI end to end on a tiny synthetic dataset, and its error messages (the run-config parser
is tested in test_run_config.py)."""
import json
import subprocess
import sys

import pytest

from data_prep.synthetic import generate_synthetic
from e2vpt_viz.backbones import STARTER_BACKBONES
from e2vpt_viz.experiments.cli import main
from e2vpt_viz.experiments.config import RunConfig
from e2vpt_viz.experiments.run import choose_run_config
from e2vpt_viz.methods import E2VPTConfig

def overrides(root, out, **extra):
    items = {"data.root": str(root), "backbone.pretrained": False, "train.epochs": 2, "train.warmup_epochs": 1,
             "train.batch_size": 8, "output_dir": str(out), **extra}
    return [f"{k}={v}" for k, v in items.items()]


def test_choose_run_config_falls_back_to_the_starter(tmp_path):
    cfg, note = choose_run_config("auto", tmp_path, epochs=3, device="cpu")
    assert isinstance(cfg, RunConfig) and cfg.method == E2VPTConfig(num_prompts=5, num_kv_prompts=5)
    assert cfg.backbone.name == "starter-vit" and "Offline starter" in note
    assert cfg.data.root == str(tmp_path / "starter") and cfg.train.device == "cpu"
    assert (cfg.train.epochs, cfg.train.warmup_epochs) == (3, 0)  # 10% of 3 epochs rounds to 0
    (tmp_path / "CUB_200_2011").mkdir()
    (tmp_path / "CUB_200_2011" / "train.json").write_text("{}")
    cfg, note = choose_run_config("auto", tmp_path, backbone="vit_small_patch16_224")
    assert cfg.backbone.name == "vit_small_patch16_224" and "Real CUB" in note and "vit_small_patch16_224" in note
    assert cfg.data.root == str(tmp_path / "CUB_200_2011") and (cfg.train.epochs, cfg.train.batch_size) == (100, 128)


def test_cli_train_eval_and_resume(tiny_root, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--config", "starter", "--quiet", *overrides(tiny_root, out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "e2vpt: test accuracy" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and len(metrics["per_class_acc"]) == 4
    assert (out / "prompts.safetensors").stat().st_size < 200_000
    assert main(["eval", "--config", "starter", *overrides(tiny_root, out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["count"] == 12 and evaluated["acc"] == pytest.approx(metrics["test_acc"])
    # a finished run started again resumes at its end: same metrics, no extra epochs
    assert main(args) == 0
    assert json.loads((out / "metrics.json").read_text())["history"] == metrics["history"]


def test_cli_report_writes_markdown_and_html(tiny_root, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", "--quiet", "--methods", "linear", "vpt-deep", "--out", str(out),
                 *overrides(tiny_root, tmp_path / "unused")]) == 0
    table = (out / "report.md").read_text()
    cells = (line.strip("| ").split(" | ") for line in table.splitlines())
    rows = {row[0]: row for row in cells if row[0] in ("linear", "vpt-deep")}
    assert set(rows) == {"linear", "vpt-deep"}
    assert all(row[5:7] == ["2 (1)", "42"] for row in rows.values()), rows  # schedule (warm-up) and seed
    html = (out / "report.html").read_text()
    assert "<table>" in html and "plotly" in html.lower()
    assert {p.name for p in out.iterdir()} >= {"linear", "vpt-deep", "report.md", "report.html"}


def test_cli_errors_are_one_line_without_traceback(tmp_path, capsys):
    cases = [
        (["train", "--config", "starter", f"data.root={tmp_path / 'nothing'}", "data.synthetic=false"],
         "does not exist"),
        (["train", "--config", "starter", "backbone.name=vit_bsae_patch16_224"], "Close matches"),
        (["train", "--config", str(tmp_path / "missing.yaml")], "neither a file nor a packaged config"),
    ]
    for argv, message in cases:  # in this process (an exception would fail the test)
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and err.count("\n") == 1, err
    # and as a user runs it: a process that exits with 2 and prints one line, no traceback
    done = subprocess.run([sys.executable, "-m", "e2vpt_viz", "train", "--config", "starter",
                           "backbone.pretraind=false"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: unknown key backbone.pretraind; did you mean backbone.pretrained?")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


def test_checkpoint_from_another_config_is_refused_by_the_cli(tiny_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", "starter", "--quiet", *overrides(tiny_root, out)]) == 0
    state = (out / "train_state.pt").read_bytes()
    assert main(["train", "--config", "starter", "--quiet", *overrides(tiny_root, out),
                 "method.num_prompts=7"]) == 2
    assert "num_prompts" in capsys.readouterr().err
    assert (out / "train_state.pt").read_bytes() == state


def test_cli_prune_runs_the_protocol_and_resumes(tiny_root, tmp_path, capsys):
    out = tmp_path / "prune"
    args = ["prune", "--config", "starter", "--quiet", *overrides(tiny_root, out),
            "prune.num_tokens=[0,2]", "prune.num_segments=[1,12]", "prune.sweep_ratios=[0,0.5]"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "chosen on val" in printed
    summary = json.loads((out / "prune.json").read_text())
    runs = summary["rewind_runs"]
    assert [(r["num_tokens"], r["num_segments"]) for r in runs] == [(0, 1), (0, 12), (2, 1), (2, 12)]
    best = max(runs, key=lambda r: (r["val_acc"], r["num_tokens"], r["num_segments"]))
    assert summary["best_budgets"] == {"num_tokens": best["num_tokens"], "num_segments": best["num_segments"]}
    kept_entries = (5 - best["num_tokens"]) * (16 - best["num_segments"]) * (96 // 16)
    assert summary["rewound"]["parameters"]["visual_prompts"] == STARTER_BACKBONES["starter-vit"]["depth"] * kept_entries
    assert summary["rewound"]["parameters"]["masks"] == 0
    assert summary["rewound"]["parameters"]["tunable"] == best["tunable"]
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["ratios"] == [0.0, 0.5]
    assert sweep["results"][0]["acc"] == pytest.approx(summary["before"]["test_acc"])
    # Everything is on disk: a second run trains nothing and gives the same summary.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("train_state.pt")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("train_state.pt")} == stamps
    assert json.loads((out / "prune.json").read_text())["rewind_runs"] == runs


def test_cli_pvp_pretrain_then_few_shot(tiny_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the source run's resumable state goes to ./results/pvp_source/
    source = generate_synthetic(tmp_path / "src", task="source", seed=2, num_classes=4, train_per_class=4,
                                val_per_class=1, test_per_class=1)
    prompts = tmp_path / "pvp.safetensors"
    common = ["--config", "starter", f"data.root={tiny_root}", "train.batch_size=8", "train.warmup_epochs=1"]
    assert main(["pvp-pretrain", "--source", str(source), "--out", str(prompts), "--epochs", "2", "--quiet",
                 *common]) == 0
    assert prompts.is_file() and "written to" in capsys.readouterr().out
    states = list((tmp_path / "results" / "pvp_source").glob("pvp-*/train_state.pt"))  # pvp-<digest of the work>
    assert len(states) == 1
    out = tmp_path / "fewshot"
    assert main(["pvp-fewshot", "--prompts", str(prompts), "--shots", "1", "2", "--seeds", "0", "--epochs", "2",
                 "--out", str(out), *common]) == 0
    rows = json.loads((out / "pvp_fewshot.json").read_text())
    assert [r["shots"] for r in rows] == [1, 2] and all(len(r["pvp"]) == 1 and r["pvp_std"] == 0 for r in rows)
    assert "| 1 |" in (out / "pvp_fewshot.md").read_text()
    assert main(["pvp-fewshot", "--prompts", str(tmp_path / "missing.safetensors"), "--shots", "1",
                 "--out", str(out), *common]) == 2
    assert "pvp-pretrain" in capsys.readouterr().err
