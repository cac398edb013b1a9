"""Docs pages are generated from result files, and the result files state what they claim.

Every measured number in README.md and docs/*.md is rendered by ``python -m e2vpt_viz docs`` from
``docs/results/*.json``; these tests check that the committed pages are exactly what the generator gives, and check the
published claims' arithmetic on the JSON (never on prose).
"""
import json
import re
import shutil
import statistics
from pathlib import Path

import pytest

from e2vpt_viz.experiments import docs
from e2vpt_viz.experiments.cli import build_parser, main
from e2vpt_viz.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = docs.load_results(ROOT)
ROUNDING = 0.1  # points: stated means and seed values are rounded to 0.1


# ---------------------------------------------------------------------------------------------- the generator

def test_committed_pages_and_readme_blocks_are_what_the_generator_writes():
    assert docs.stale(ROOT) == [], "run `python -m e2vpt_viz docs` and commit the pages"


def test_every_docs_page_with_numbers_has_its_blocks_filled():
    for name in ("main-job", "tests"):
        assert f"<!-- generated:{name} -->" in (ROOT / "README.md").read_text()
    for page, block in [("calibration", "calibration"), ("pruning", "pruning"), ("pvp", "pvp"),
                        ("performance", "benchmarks"), ("lessons", "lesson-results")]:
        text = (ROOT / "docs" / f"{page}.md").read_text()
        filled = text.split(f"<!-- generated:{block} -->\n", 1)[1].split("<!-- /generated -->", 1)[0]
        assert filled.strip(), (page, block)


def _copy_repo(tmp_path: Path) -> Path:
    for part in ("README.md", "docs", "benchmarks/results", "e2vpt_viz/lesson_results"):
        src, dst = ROOT / part, tmp_path / part
        if not src.exists():
            continue
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy(src, dst)
    return tmp_path


def test_a_changed_result_file_makes_the_pages_stale_and_regenerating_puts_the_number_in(tmp_path):
    root = _copy_repo(tmp_path)
    assert docs.stale(root) == []
    path = root / "docs" / "results" / "main_job.json"
    result = json.loads(path.read_text())
    result["methods"][0]["test_acc"] = [80.04, 81.0, 82.0]
    result["methods"][0]["test_acc_mean"], result["methods"][0]["test_acc_sd"] = 81.01, 0.98
    path.write_text(json.dumps(result))
    assert docs.stale(root) == [root / "README.md"]
    assert root / "README.md" in docs.write_docs(root)
    readme = (root / "README.md").read_text()
    assert "81.0 ± 1.0% over training seeds 42 / 1 / 2 (80.0 / 81.0 / 82.0)" in readme
    assert docs.stale(root) == []


def test_an_unknown_block_is_refused_naming_it(tmp_path):
    root = _copy_repo(tmp_path)
    (root / "docs" / "extra.md").write_text("<!-- generated:nonsense -->\n<!-- /generated -->\n")
    with pytest.raises(ValueError, match="extra.md: unknown generated block 'nonsense'"):
        docs.render(root)


def test_a_folder_without_result_files_is_refused_in_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no result files in .*source checkout"):
        docs.render(tmp_path)


def test_readme_is_at_most_1500_words_and_lists_the_docs_command():
    text = (ROOT / "README.md").read_text()
    assert len(text.split()) <= 1500
    assert "`docs`" in text and "docs" in build_parser().parse_args(["docs"]).command


def test_one_markdown_table_renderer():
    assert markdown_table(["a", "b"], [[1, "x"], [2.5, ""]]) == "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 |  |"
    with pytest.raises(ValueError, match="3 cells, the header 2"):
        markdown_table(["a", "b"], [[1, 2, 3]])


# -------------------------------------------------------------------------------------- the claims, on the JSON

def test_every_result_file_records_its_provenance():
    assert {"main_job", "setup_time", "calibration", "baselines", "pruning", "pvp_fewshot", "settings_sweep",
            "notebooks", "gpu"} <= set(RESULTS)
    for name, result in RESULTS.items():
        assert result["claim"] and result["device"] and "torch" in result, name
        parts = [result] if "command" in result else [v for v in result.values() if isinstance(v, dict)
                                                       and "command" in v]
        assert parts, name
        for part in parts:
            measured = part.get("measured", result.get("measured"))
            if result["kind"] == "targets":
                assert measured is None  # the GPU targets: stated as unmeasured
                continue
            assert re.fullmatch(r"[0-9a-f]{40}", measured["commit"]), name
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", measured["date"]), name


def seed_results():
    return [(name, r) for name, r in RESULTS.items() if r["kind"] in ("seeds", "variants")]


@pytest.mark.parametrize("name", [name for name, _ in seed_results()])
def test_seed_means_and_spreads_are_those_of_the_seeds(name):
    result = RESULTS[name]
    for m in result["methods"]:
        accs = m["test_acc"]
        assert len(accs) == len(result["seeds"]), (name, m["method"])
        assert abs(m["test_acc_mean"] - statistics.fmean(accs)) <= ROUNDING / 2 + 1e-9, (name, m)
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        assert abs(m["test_acc_sd"] - sd) <= ROUNDING / 2 + 1e-9, (name, m)
        if "tunable" in m:
            assert m["tunable"] > 0 and 0 < m["tunable_pct"]


def test_calibration_states_the_papers_ordering_on_the_seed_means():
    """The VPT (arXiv:2203.12119) and E²VPT (arXiv:2307.13770) papers' FGVC results: linear well below VPT-deep and
    E²VPT, VPT-shallow in between; the starter's calibration claims the same on its seed means."""
    result = RESULTS["calibration"]
    assert result["seeds"] == [42, 1, 2] and result["schedule"]["epochs"] == 100
    acc = {m["method"]: m["test_acc_mean"] for m in result["methods"]}
    assert set(acc) == {"linear", "vpt-shallow", "vpt-deep", "e2vpt", "full"}
    assert acc["linear"] + 5 <= min(acc["vpt-deep"], acc["e2vpt"])
    assert acc["linear"] < acc["vpt-shallow"] < min(acc["vpt-deep"], acc["e2vpt"])
    tunable = {m["method"]: m["tunable"] for m in result["methods"]}
    assert abs(tunable["e2vpt"] - tunable["vpt-deep"]) / tunable["vpt-deep"] < 0.05  # about the same budget


def test_main_job_is_well_above_the_linear_probe():
    """The main job against the calibration's linear probe (its schedule is checked against the README's command in
    tests/test_packaging.py): every E²VPT seed beats every linear-probe seed by at least 3 points, so the README's
    comparison does not rest on a lucky seed. (The re-measurement of 2026-12-03, 73.3 / 74.2 / 74.3 against 69.3 to
    69.5, has a smaller mean gap than the record of 2026-12-02, 4.5 points instead of 6.2; see main_job.json's note.)"""
    linear = next(m for m in RESULTS["calibration"]["methods"] if m["method"] == "linear")
    assert [m["method"] for m in RESULTS["main_job"]["methods"]] == ["e2vpt"]
    assert min(RESULTS["main_job"]["methods"][0]["test_acc"]) >= max(linear["test_acc"]) + 3


def test_pvp_gain_is_the_difference_of_the_means_and_shrinks_with_shots():
    result = RESULTS["pvp_fewshot"]
    rows = result["rows"]
    assert [r["shots"] for r in rows] == sorted(r["shots"] for r in rows)
    for r in rows:
        assert abs(r["gain"] - (r["pvp_mean"] - r["random_mean"])) <= ROUNDING + 1e-9, r
        for seed, pair in r.get("per_seed", {}).items():
            assert int(seed) in result["seeds"]
            if r["pvp_wins"] is not None and pair["pvp"] < pair["random"]:
                assert r["pvp_wins"] < len(result["seeds"]), r
    assert all(r["gain"] > 0 and r["pvp_wins"] == len(result["seeds"]) for r in rows[:2])  # 1 and 2 shots
    assert rows[0]["gain"] > rows[-1]["gain"]


def test_pruning_result_is_consistent():
    p = RESULTS["pruning"]
    sweep = p["sweep"]
    assert [s["ratio"] for s in sweep] == sorted(s["ratio"] for s in sweep)
    tunable = [p["before"]["tunable"], *(s["tunable"] for s in sweep)]
    assert tunable == sorted(tunable, reverse=True)
    assert 0 <= p["best_budgets"]["num_tokens"] < p["num_prompts"]
    assert p["rewound"]["tunable"] < p["before"]["tunable"]
    cands = p["candidates"]
    lo, hi = cands["test_acc_range"]
    assert lo <= p["rewound"]["test_acc"] <= hi and cands["best_test"]["test_acc"] == hi
    assert p["before"]["tunable"] == next(m["tunable"] for m in RESULTS["calibration"]["methods"]
                                          if m["method"] == "e2vpt")
    assert p["command"].endswith("train.epochs=60")  # the main job's schedule: the model before pruning is its own


def test_settings_sweep_is_labelled_as_measured_before_the_unread_token_skipping():
    sweep = RESULTS["settings_sweep"]
    assert sweep["before_unread_token_skipping"] is True
    assert "before the unread-token skipping" in docs.sweep_text(RESULTS)


# -------------------------------------------------------------------------------------------------- recording

def _metrics(folder: Path, method: str, seed: int, acc: float, seconds: float, amp=True) -> None:
    (folder / method).mkdir(parents=True)
    (folder / method / "metrics.json").write_text(json.dumps({
        "method": method, "test_acc": acc, "train_seconds": seconds, "epochs": 60,
        "parameters": {"tunable": 13545, "tunable_pct": 0.99},
        "config": {"train": {"seed": seed, "warmup_epochs": 6, "amp": amp}}}))


def test_record_seeds_drops_report_folders_into_a_result_file(tmp_path):
    path = tmp_path / "main_job.json"
    shutil.copy(ROOT / "docs" / "results" / "main_job.json", path)
    runs = []
    for seed, acc in [(42, 0.75), (1, 0.76), (2, 0.80)]:
        runs.append(tmp_path / f"seed{seed}")
        _metrics(runs[-1], "e2vpt", seed, acc, 100.0 + seed)
    assert main(["record", "seeds", str(path), *map(str, runs)]) == 0
    result = json.loads(path.read_text())
    e2vpt = result["methods"][0]
    assert result["seeds"] == [42, 1, 2] and result["schedule"] == {"epochs": 60, "warmup_epochs": 6}
    assert e2vpt["test_acc"] == pytest.approx([75.0, 76.0, 80.0])
    assert e2vpt["test_acc_mean"] == pytest.approx(77.0) and e2vpt["test_acc_sd"] == pytest.approx(2.6457513)
    assert e2vpt["label"] == "e2vpt (P = T = 5)" and result["claim"].startswith("Command 1")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", result["measured"]["date"]) and result["torch"]


def test_record_pvp_and_prune_read_what_the_commands_wrote(tmp_path):
    pvp_file, prune_file = tmp_path / "pvp.json", tmp_path / "prune.json"
    shutil.copy(ROOT / "docs" / "results" / "pvp_fewshot.json", pvp_file)
    shutil.copy(ROOT / "docs" / "results" / "pruning.json", prune_file)
    (tmp_path / "pvp").mkdir()
    (tmp_path / "pvp" / "pvp_fewshot.json").write_text(json.dumps([
        {"shots": 1, "random_mean": 0.3, "random_std": 0.02, "pvp_mean": 0.4, "pvp_std": 0.01,
         "random": [0.3, 0.28, 0.32], "pvp": [0.4, 0.39, 0.41]}]))
    assert main(["record", "pvp", str(pvp_file), str(tmp_path / "pvp")]) == 0
    row = json.loads(pvp_file.read_text())["rows"][0]
    assert row["gain"] == pytest.approx(10.0) and row["pvp_wins"] == 3 and row["per_seed"]["2"]["pvp"] == 41.0

    run = tmp_path / "prune_run"
    run.mkdir()
    params = lambda n: {"tunable": n}  # noqa: E731
    (run / "prune.json").write_text(json.dumps({
        "before": {"test_acc": 0.7, "parameters": params(100)}, "best_budgets": {"num_tokens": 2, "num_segments": 1},
        "instant_test_acc": 0.65, "rewound": {"test_acc": 0.66, "val_acc": 0.6, "parameters": params(80)},
        "rewind_runs": [{"num_tokens": 2, "num_segments": 1, "val_acc": 0.6, "tunable": 80, "test_acc": 0.66},
                        {"num_tokens": 0, "num_segments": 6, "val_acc": 0.5, "tunable": 90, "test_acc": 0.71}]}))
    ratios = [0.1, 0.4, 0.5, 0.8]
    (run / "sweep.json").write_text(json.dumps({"ratios": ratios, "results": [
        {"acc": 0.7 - r / 10, "parameters": params(int(100 - 10 * r))} for r in ratios]}))
    assert main(["record", "prune", str(prune_file), str(run)]) == 0
    p = json.loads(prune_file.read_text())
    assert p["candidates"]["best_test"] == {"num_tokens": 0, "num_segments": 6, "test_acc": 71.0, "tunable": 90}
    assert p["candidates"]["val_acc_range"] == [50.0, 60.0] and p["sweep"][1]["tunable"] == 96
    assert p["instant_test_acc"] == 65.0 and p["rewound"] == {"test_acc": 66.0, "tunable": 80}


def test_record_variants_groups_runs_by_the_setting_that_varies(tmp_path, capsys):
    path = tmp_path / "precision.json"
    shutil.copy(ROOT / "docs" / "results" / "precision.json", path)
    runs = []
    for amp, accs in [(False, [0.70, 0.74, 0.72]), ("bf16", [0.71, 0.73, 0.75])]:
        for seed, acc in zip((42, 1, 2), accs):
            runs.append(tmp_path / f"{amp}-seed{seed}")
            _metrics(runs[-1], "e2vpt", seed, acc, 10.0, amp=amp)
    assert main(["record", "variants", str(path), *map(str, runs)]) == 0
    result = json.loads(path.read_text())
    by = {m["method"]: m for m in result["methods"]}
    assert result["seeds"] == [42, 1, 2] and by["fp32"]["test_acc"] == pytest.approx([70.0, 74.0, 72.0])
    assert by["bf16"]["test_acc_mean"] == pytest.approx(73.0)
    assert "the bf16 mean is inside the fp32 seed range, +1.0 points" in docs.EFFECTS["precision"]({"precision": result})
    assert main(["record", "variants", str(path), *map(str, runs[:4])]) == 2  # bf16 lacks seeds 1 and 2
    assert "needs the seeds [42, 1, 2] with train.amp=bf16 (bf16)" in capsys.readouterr().err


def test_the_protocol_trains_in_fp32_because_bf16_moved_the_starter_beyond_the_fp32_seeds():
    """The official code trains in fp32 (VPT src/engine/trainer.py); ours autocasts to bf16 on CUDA by default. On the
    starter the bf16 mean of three seeds lies outside the fp32 seeds' range, so `reproduce` keeps fp32."""
    from e2vpt_viz.experiments.reproduce import base_config

    result = RESULTS["precision"]
    fp32, bf16 = result["methods"]
    assert len(result["seeds"]) == 3 and [fp32["method"], bf16["method"]] == list(result["varies"]["values"])
    assert not min(fp32["test_acc"]) <= bf16["test_acc_mean"] <= max(fp32["test_acc"])
    assert all(base_config("cub", m).train.amp is False for m in ("e2vpt", "vpt-deep", "linear", "full"))


def test_record_pvp_reads_the_lessons_export(tmp_path):
    path = tmp_path / "pvp.json"
    shutil.copy(ROOT / "docs" / "results" / "pvp_fewshot.json", path)
    export = tmp_path / "export"
    export.mkdir()
    (export / "fewshot.json").write_text(json.dumps({"prompts": "starter-vit-e2vpt-pvp.safetensors", "epochs": 50,
        "rows": [{"shots": 1, "random_mean": 0.3, "random_std": 0.02, "pvp_mean": 0.4, "pvp_std": 0.01,
                  "random": [0.3, 0.28, 0.32], "pvp": [0.4, 0.39, 0.41]}]}))
    (export / "manifest.json").write_text(json.dumps({"stage_seconds": {"fewshot": 1800.0}}))
    assert main(["record", "pvp", str(path), str(export)]) == 0
    result = json.loads(path.read_text())
    assert result["command"] == f"python -m e2vpt_viz lesson-results --out {export} --stages fewshot"
    assert result["minutes"] == 30 and result["rows"][0]["gain"] == pytest.approx(10.0)
    from e2vpt_viz.pvp import prompt_file_info
    from e2vpt_viz.backbones import WEIGHTS_DIR
    info = prompt_file_info(WEIGHTS_DIR / "starter-vit-e2vpt-pvp.safetensors")
    assert result["pretrained_prompts"]["source_val_acc"] == round(100 * info["source_val_acc"], 1)
    assert re.fullmatch(r"[0-9a-f]{40}", result["pretrained_prompts"]["measured"]["commit"])


def test_record_refuses_the_wrong_kind_of_result_file_in_one_line(tmp_path, capsys):
    path = tmp_path / "calibration.json"
    shutil.copy(ROOT / "docs" / "results" / "calibration.json", path)
    assert main(["record", "pvp", str(path), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a 'seeds' result; `record pvp` writes 'pvp_fewshot' results" in err
