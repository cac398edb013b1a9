"""Docs pages from result files: every measured number a reader sees comes from ``docs/results/*.json``.

``python -m e2vpt_viz docs`` fills the marked blocks of ``README.md`` and ``docs/*.md``::

    <!-- generated:calibration-table -->
    ... (rewritten from docs/results/calibration.json) ...
    <!-- /generated -->

and writes ``docs/results.md``, the index of every result file with its claim and provenance (command, commit, date,
device, torch). ``python -m e2vpt_viz docs --check`` only reports the files that are not current (``tests/test_docs.py``
runs it). Text outside the blocks is hand-written and left alone.

A re-measurement is dropped in with ``python -m e2vpt_viz record``, which rewrites one result file from what the
project's own commands wrote (keeping its claim and labels, stamping commit, date, device and torch version):

* ``record seeds docs/results/calibration.json RUN_DIR ...``: one ``report --out RUN_DIR`` folder per training seed
  (each holds ``<method>/metrics.json``); also ``main_job.json`` and ``baselines.json``;
* ``record prune docs/results/pruning.json OUTPUT_DIR``: the ``prune.json`` and ``sweep.json`` of a ``prune`` run;
* ``record pvp docs/results/pvp_fewshot.json OUT``: the ``pvp_fewshot.json`` of a ``pvp-fewshot --out OUT`` run, or
  the ``fewshot.json`` of a ``lesson-results --out OUT`` export;
* ``record variants docs/results/precision.json RUN_DIR ...``: one method trained with two values of the setting the
  result names (``varies``; e.g. ``train.amp`` false and bf16), the same seeds each: ``report --out`` or run folders.

Accuracies in result files are percentages; parameter counts follow the papers' convention (``count_parameters``).
"""
from __future__ import annotations

import datetime
import json
import math
import re
import subprocess
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from ..tables import markdown_table, mean_std
from ..training import result_settings

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = Path("docs") / "results"
BLOCK = re.compile(r"(<!-- generated:([a-z0-9-]+) -->\n)(.*?)(<!-- /generated -->)", re.S)


# ----------------------------------------------------------------------------------------------------- reading

def load_results(root: Union[str, Path] = ROOT) -> dict[str, dict]:
    """``{file stem: parsed JSON}`` for every ``docs/results/*.json`` under the repository ``root``."""
    folder = Path(root) / RESULTS_DIR
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def _f(value: float, fmt: str = ".1f") -> str:
    return "—" if value is None else format(value, fmt).replace("-", "−")


def _commit(result: dict) -> str:
    measured = result.get("measured")
    return f"`{measured['commit'][:7]}`, {measured['date']}" if measured else "not measured"


def _provenance(result: dict, name: str) -> str:
    torch = f", torch {result['torch']}" if result.get("torch") else ""
    return (f"Measured at commit {_commit(result)} on {result['device']}{torch} with `{result['command']}`; "
            f"from [`docs/results/{name}.json`](results/{name}.json).")


def _seconds(values: Sequence[Optional[float]]) -> str:
    return " and ".join(f"{v:.0f} s" for v in values if v is not None)


# ------------------------------------------------------------------------------------------------- the blocks

def seeds_table(result: dict) -> str:
    """A ``kind: seeds`` result (one row per method; N seeds) as a Markdown table."""
    seeds = result["seeds"]
    if len(seeds) > 1:
        header = ["method", f"test acc (%), mean ± sd of {len(seeds)} seeds",
                  "seeds " + " / ".join(map(str, seeds))]
        cells = [lambda m: f"{_f(m['test_acc_mean'])} ± {_f(m['test_acc_sd'])}",
                 lambda m: " / ".join(_f(a) for a in m["test_acc"])]
    else:
        header, cells = ["method", f"test acc (%), seed {seeds[0]}"], [lambda m: _f(m["test_acc_mean"])]
    if "tunable" in result["methods"][0]:
        header += ["tunable params", "tunable (%)"]
        cells += [lambda m: f"{m['tunable']:,}", lambda m: f"{m['tunable_pct']:.2f}"]
    if any(m.get("train_seconds", [None])[0] is not None for m in result["methods"]):
        header.append(f"train time (s), seed {seeds[0]}")
        cells.append(lambda m: _f(m["train_seconds"][0], ".0f"))
    return markdown_table(header, [[m["label"], *(cell(m) for cell in cells)] for m in result["methods"]])


def _by_method(result: dict) -> dict[str, dict]:
    return {m["method"]: m for m in result["methods"]}


def main_job_text(r: dict[str, dict]) -> str:
    job, times, linear = r["main_job"], r["setup_time"], _by_method(r["calibration"])["linear"]
    install, run = times["install"], times["main_job"]
    e2vpt = _by_method(job)["e2vpt"]
    seeds = " / ".join(map(str, job["seeds"]))
    runs = f" in {len(run['seconds'])} runs" if len(run["seconds"]) > 1 else ""
    return (f"**1. The main job**: install, then train E²VPT on the offline starter for {job['schedule']['epochs']} "
            f"epochs ({job['schedule']['warmup_epochs']} of them warm-up) and write `results/starter/report.md` and "
            f"`report.html`. Measured on 2 CPU cores: the install (a fresh clone, no pip cache) took {install['seconds']} s ({install['package_seconds']} s "
            f"the package, {install['extras_seconds']} s its extras; most of it is pip fetching torch's CUDA build), "
            f"the report {_seconds(run['seconds'])}{runs} ({_seconds(run['train_seconds'])} of it training). "
            f"Test accuracy: {_f(e2vpt['test_acc_mean'])} ± {_f(e2vpt['test_acc_sd'])}% over training seeds {seeds} "
            f"({' / '.join(_f(a) for a in e2vpt['test_acc'])}), "
            f"{_f(e2vpt['test_acc_mean'] - linear['test_acc_mean'])} points above the linear probe's "
            f"{_f(linear['test_acc_mean'])}% of the [calibration](docs/calibration.md). Drop `train.epochs=60` for the "
            f"papers' 100-epoch schedule (about {run['minutes_100_epochs']} minutes); add `--methods linear "
            f"vpt-shallow vpt-deep e2vpt full` for the calibration's seed-42 column (about "
            f"{run['minutes_five_methods_100_epochs']} minutes). Provenance: [docs/results.md](docs/results.md).")


def tests_text(r: dict[str, dict]) -> str:
    suite = r["setup_time"]["test_suite"]
    if suite.get("ci_minutes") is None:
        ci = f"{suite['ci_note']}."
    else:
        note = f" ({suite['ci_note']})" if suite.get("ci_note") else ""
        ci = (f"the whole of `.ci/run` (install, this tier and the slow tier below) took {suite['ci_minutes']:.1f} "
              f"minutes there{note}.")
    return (f"**2. The tests**: install, then run the contributor's tier (unit and invariant tests, each lesson once in "
            f"smoke mode): {suite['minutes']:.1f} minutes on 2 CPU cores after the install, measured on a fresh clone. "
            + ci[0].upper() + ci[1:])


def calibration_text(r: dict[str, dict]) -> str:
    cal = r["calibration"]
    acc = {m: v["test_acc_mean"] for m, v in _by_method(cal).items()}
    seed42 = {m: v["test_acc"][0] for m, v in _by_method(cal).items()}
    rounding, timing = cal["rounding_effect"], cal["timing_note"]
    return "\n".join([
        _provenance(cal, "calibration") + f" Schedule: {cal['schedule']['epochs']} epochs ({cal['schedule']['warmup_epochs']} "
        f"warm-up), batch {cal['schedule']['batch_size']}; {cal['data']['classes']} target species, "
        f"{cal['data']['train']} / {cal['data']['val']} / {cal['data']['test']} train / val / test images. The seed-42 "
        f"command takes about {cal['seed_42_command_minutes']} minutes.", "",
        seeds_table(cal), "",
        f"On the means the linear probe is {_f(acc['e2vpt'] - acc['linear'])} points below E²VPT and "
        f"{_f(acc['vpt-deep'] - acc['linear'])} below VPT-deep, with VPT-shallow ({_f(acc['vpt-shallow'])}) in "
        f"between. Single runs of the prompt methods differ by up to {rounding['max_seed_spread']} points between "
        f"seeds, and float rounding alone moved the seed-42 runs when the unread tokens stopped being computed "
        f"(E²VPT {_f(rounding['e2vpt'][0])} → {_f(rounding['e2vpt'][1])}%, VPT-deep "
        f"{_f(rounding['vpt-deep'][0])} → {_f(rounding['vpt-deep'][1])}%); the seed-42 E²VPT run is "
        f"{_f(seed42['e2vpt'] - seed42['linear'])} points above the probe. Train times are seed 42's, on a VM that "
        f"ran about {timing['machine_slower_pct']}% slower that day than on the earlier measurement (linear: "
        f"{_f(cal['methods'][0]['train_seconds'][0], '.0f')} s against {timing['linear_seconds_earlier']} s)."])


def baselines_text(r: dict[str, dict]) -> str:
    base = r["baselines"]
    return "\n".join([_provenance(base, "baselines") + f" {base['schedule']['epochs']} epochs, {base['minutes']} minutes.", "",
                      seeds_table(base)])


def sweep_text(r: dict[str, dict]) -> str:
    sweep = r["settings_sweep"]
    best_val = {}
    for row in sweep["rows"]:
        for run in row["30"]:
            best_val[row["method"]] = max(best_val.get(row["method"], 0.0), run["val_acc"])

    def cell(row: dict, epochs: int) -> str:
        runs = row[str(epochs)]
        if epochs == 30:
            pairs = [f"{_f(run['test_acc'])} / {_f(run['val_acc'])}" for run in runs]
            return ", ".join(f"**{p}**" if run["val_acc"] == best_val[row["method"]] else p
                             for p, run in zip(pairs, runs))
        return ", ".join(f"{_f(run['test_acc'])} / {_f(run['val_acc'])} ({run['setting']})" for run in runs)

    header = ["run", *(f"{e} epochs" for e in sweep["epochs"])]
    table = markdown_table(header, [[row["label"], *(cell(row, e) for e in sweep["epochs"])] for row in sweep["rows"]])
    early = sweep["earlier_6_block_starter"]
    accs = ", ".join(f"{m} {_f(a)}" for m, a in early["test_acc"].items())
    probe = early["tail_colour_decodable_pct"]
    return "\n".join([
        _provenance(sweep, "settings_sweep") + " Test / val accuracy (%), one seed; **measured before the unread-token skipping**, so "
        "single 100-epoch runs differ from the calibration's by float rounding. Bold: the best validation accuracy "
        "of each method's 30-epoch sweep.", "", table, "",
        f"- At 30 epochs the frozen-backbone methods fit at most {sweep['schedule_effect']['fit_at_30_epochs_max_pct']}% "
        f"of the augmented training images (full fine-tuning {sweep['schedule_effect']['full_fit_at_30_epochs_pct']}%).",
        f"- The earlier 6-block, 3-head starter ({early['epochs']} epochs): {accs}; VPT-deep with P = 50: "
        f"{_f(early['vpt_deep_p50'])}. With 8 blocks E²VPT gained up to {early['e2vpt_gain_with_8_blocks_up_to']} "
        f"points over the probe. The target's tail colour was {probe['tail_patch_token'][0]}–"
        f"{probe['tail_patch_token'][1]}% decodable from the tail's patch token at every layer, "
        f"{probe['class_token']}% from the class token.",
        "- Generator designs that did not work (6-block backbone): "
        + "; ".join(f"{p['design']} ({p['result']})" for p in sweep["generator_probes_6_block"]) + "."])


def pruning_text(r: dict[str, dict]) -> str:
    p = r["pruning"]
    before, chosen, rewound, cands = p["before"], p["best_budgets"], p["rewound"], p["candidates"]
    sweep = p["sweep"]
    best = cands["best_test"]
    return "\n".join([
        _provenance(p, "pruning") + f" Seed {p['seed']}, {p['minutes']} minutes.", "",
        markdown_table(["", "test acc (%)", "tunable params"],
                       [["before pruning", _f(before["test_acc"]), f"{before['tunable']:,}"],
                        *[[f"instant pruning, ratio {s['ratio']}", _f(s["test_acc"]), f"{s['tunable']:,}"]
                          for s in sweep],
                        [f"chosen on val ({chosen['num_tokens']} of {p['num_prompts']} tokens, {chosen['num_segments']} "
                         f"of {p['segments_per_token']} segments pruned), instant", _f(p["instant_test_acc"]), "—"],
                        ["the same, rewound", _f(rewound["test_acc"]), f"{rewound['tunable']:,}"],
                        [f"best of the {cands['count']} rewound candidates on test ({best['num_tokens']} tokens, "
                         f"{best['num_segments']} segment{'s' if best['num_segments'] != 1 else ''} pruned)", _f(best["test_acc"]), f"{best['tunable']:,}"]]),
        "",
        f"The rewound model has {100 * (1 - rewound['tunable'] / before['tunable']):.0f}% fewer tunable parameters. "
        f"The {cands['count']} rewound candidates reached {_f(cands['test_acc_range'][0])}–"
        f"{_f(cands['test_acc_range'][1])}% test but only {_f(cands['val_acc_range'][0])}–"
        f"{_f(cands['val_acc_range'][1])}% validation accuracy on {cands['val_images']} images (one image = "
        f"{100 / cands['val_images']:.1f} points), so selection on validation is noisy"
        + (", and here it did not pick the best candidate on test" if best["test_acc"] > rewound["test_acc"] else "")
        + (f". Rewinding the chosen pair {'beat' if rewound['test_acc'] > p['instant_test_acc'] else 'did not beat'} "
           f"instant pruning of it ({_f(rewound['test_acc'])} against {_f(p['instant_test_acc'])}%); in the E²VPT "
           "paper rewinding helps.")])


def pvp_text(r: dict[str, dict]) -> str:
    from .fewshot import FEWSHOT_COLUMNS

    pvp = r["pvp_fewshot"]
    pre = pvp["pretrained_prompts"]
    n = len(pvp["seeds"])
    rows = [[row["shots"], f"{_f(row['random_mean'])} ± {_f(row['random_sd'])}",
             f"{_f(row['pvp_mean'])} ± {_f(row['pvp_sd'])}", _f(row["gain"], "+.1f"),
             "—" if row["pvp_wins"] is None else f"{row['pvp_wins']} of {n}"] for row in pvp["rows"]]
    seed_notes = "; ".join(f"at {row['shots']} shots seed {seed}: PVP {_f(v['pvp'])} against random {_f(v['random'])}%"
                           for row in pvp["rows"] for seed, v in row.get("per_seed", {}).items()
                           if v["pvp"] <= v["random"]) or "none"
    return "\n".join([
        _provenance(pvp, "pvp_fewshot") + f" {pvp['method']}, {pvp['epochs']} epochs per run, test accuracy on the full "
        f"{pvp['test_images']}-image test split, mean ± sd over seeds {', '.join(map(str, pvp['seeds']))}; "
        f"{pvp['minutes']} minutes.", "",
        markdown_table([*FEWSHOT_COLUMNS, "seeds PVP wins"], rows), "",
        f"Seeds where PVP did not win: {seed_notes}. The committed prompt file was pre-trained with `{pre['command']}` (commit "
        f"{_commit(pre)}; source val {_f(pre['source_val_acc'])}%, {pre['minutes']} minutes on 2 CPU cores)."])


def starter_text(r: dict[str, dict]) -> str:
    """The committed starter backbones (``record starter``: read from the weights files' own metadata)."""
    s = r["starter_backbone"]
    rows = [[f"`{name}`", b["parameters_millions"], b["megabytes"], _f(b["source_val_acc"]), round(b["minutes"]),
             b["torch"], b["date"], f"`{b['command']}`"] for name, b in s["backbones"].items()]
    return ("Pre-trained from scratch on the starter's 100 source species, each by the command in its weights' "
            "metadata, on 2 CPU cores (the minutes are that run's, beside whatever else the machine was doing):\n\n"
            + markdown_table(["backbone", "parameters (M)", "MB", "source val acc (%)", "minutes", "torch", "date",
                              "command"], rows) + f"\n\nRecorded at commit {_commit(s)} with `{s['command']}`.")


def backbones_text(r: dict[str, dict]) -> str:
    """``docs/results/backbones.json`` (``python -m e2vpt_viz backbones --write``): the families' examples re-checked
    with random weights, then every probed timm name counted by class, and the refused ones with their reason."""
    b = r["backbones"]
    examples = [[f"`{e['name']}`", f"`{e['class']}`", " × ".join(map(str, e["input_size"][1:])),
                 "works" if e["result"] == "works" else "refused",
                 (f"prompts off = backbone (max abs difference {e['prompts_off_max_abs_diff']:g})"
                  if e["result"] == "works" else e["message"].split(". These work")[0].rstrip(".") + ".")]
                for e in b["examples"]]
    by_class: dict[str, list[int]] = {}
    refused: dict[str, list[str]] = {}
    for name, e in b["models"].items():
        counts = by_class.setdefault(e["class"] or "(not built)", [0, 0])
        counts[0 if e["supported"] else 1] += 1
        if not e["supported"]:
            refused.setdefault(e["why"], []).append(name)
    works = sum(c[0] for c in by_class.values())
    classes = [[f"`{c}`", n[0], n[1]] for c, n in sorted(by_class.items(), key=lambda kv: -sum(kv[1]))]
    reasons = "\n".join(f"- {why} ({len(names)}: {', '.join(f'`{n}`' for n in names[:4])}"
                         f"{', ...' if len(names) > 4 else ''})" for why, names in sorted(refused.items()))
    return (f"Each family's example, built with random weights at its default input size, wrapped with E²VPT "
            f"(3 visual and 2 key-value prompts) and run forward:\n\n"
            + markdown_table(["timm name", "class", "input", "result", "what happens"], examples)
            + f"\n\nEvery model of timm {b['timm']}'s ViT modules ({', '.join(f'`{m}`' for m in b['modules'])}), "
            f"probed on the meta device (the same wrapping and a forward at the default input size): **{works} of "
            f"{len(b['models'])} names take prompts**. `python -m e2vpt_viz backbones` lists them (`--all` with "
            f"the refused ones).\n\n" + markdown_table(["timm class", "names that work", "names refused"], classes)
            + f"\n\nWhy the others are refused:\n\n{reasons}\n\n{_provenance(b, 'backbones')}")


def performance_text(r: dict[str, dict]) -> str:
    nb, skip, gpu = r["notebooks"], r["unread_tokens"], r["gpu"]
    t = gpu["targets"]
    trained = ", ".join(f"`{name}` {count}" for name, count in nb["methods_trained"].items())
    return "\n".join([
        f"- **Lessons**: in their default mode (the shipped runs evaluated now) see [how long a lesson "
        "takes](lessons.md#how-long-a-lesson-takes) on 2 CPU cores. Training every method "
        f"now (`TRAIN = \"full\"`, commit {_commit(nb)}): at the full 100-epoch schedule on the offline starter each "
        f"of the calibrated methods takes about {nb['minutes_per_method'][0]} to {nb['minutes_per_method'][1]} minutes "
        "on 2 CPU cores, and the zoo's train at the images/s of [the cost table](methods.md#what-each-method-costs); "
        f"methods trained per notebook: {trained} (03 also rewinds {nb['rewound_candidates_03']} candidates).",
        f"- **Unread tokens** (commit {_commit(skip)}, torch {skip['torch']}): not computing them saves "
        f"{skip['starter_epoch_saving_pct']}% of a starter epoch (E²VPT).",
        f"- **GPU**: unmeasured. The targets ({t['device']}): ≥ {t['train_images_per_second']:,} training images/s, "
        f"≥ {t['bf16_peak_fraction_pct']}% of the bf16 peak, ≥ {t['speed_ratio_vs_official_style']}× the official "
        f"style, evaluation ≥ {t['eval_images_per_second']:,} images/s, a 100-epoch CUB run in < "
        f"{t['cub_100_epoch_minutes']} minutes. `{gpu['command']}` measures them."])


def benchmarks_text(root: Path) -> str:
    """Every ``benchmarks/results/*.json`` record (written by ``python benchmarks/<name>.py --write FILE``): its
    command, device and versions, the benchmark's output verbatim, then the notes on what the numbers mean."""
    parts = []
    for path in sorted((root / "benchmarks" / "results").glob("*.json")):
        r = json.loads(path.read_text())
        settings = f" ({r['settings']})" if r.get("settings") else ""
        notes = "".join(f"\n- {note}" for note in r.get("notes", []))
        parts.append(f"### `benchmarks/results/{path.name}`\n\n- command: `{r['command']}`{settings}\n- device: "
                     f"{r['device']}; torch {r['torch']}; {r['date']}\n\n```\n" + "\n".join(r["output"])
                     + f"\n```\n{notes}".rstrip())
    return "\n\n".join(parts)


def lesson_timings_text(root: Path) -> str:
    """The lessons' timings from Run All in a kernel (``benchmarks/results/lessons_cpu.json``, written by
    ``python benchmarks/lessons.py --write ...``): first figure, central element, whole notebook, against the budgets."""
    path = root / "benchmarks" / "results" / "lessons_cpu.json"
    if not path.is_file():
        return "The lessons' timings are not in this checkout."
    r = json.loads(path.read_text())
    b = r["budgets"]
    rows = [[row["notebook"], f"{row['first_figure_s']:.0f} s", f"{row['central_s']:.0f} s", f"{row['total_s']:.0f} s",
             "yes" if row["within_budget"] else "**no**"] for row in r["rows"]]
    silent = [f"{row['notebook']} cell {c['cell']}" for row in r["rows"] for c in row["slow_cells"]
              if not c["progress_shown"]]
    progress = ("Every cell that runs over 10 s shows a progress bar or a figure that fills as it runs." if not silent
                else f"Cells over 10 s without progress: {', '.join(silent)}.")
    return (f"Run All in a fresh kernel with the default parameters, {r['device']}, torch {r['torch']}, {r['date']} "
            f"(`{r['command']}`). Budgets: first figure ≤ {b['first_figure_s']} s, the lesson's central element "
            f"(01 pruning slider, 02 attention explorer, 03 slider, 04 accuracy vs parameters, 05 few-shot curves, "
            f"06 accuracy by backbone) ≤ "
            f"{b['central_s']} s, whole notebook ≤ {b['total_s']} s. {progress}\n\n"
            + markdown_table(["lesson", "first figure", "central element", "whole notebook", "within budget"], rows))


def _threads(manifest: dict) -> str:
    """The torch threads each stage ran with: "1", or "1 (fewshot: 2)" when they differ."""
    threads = manifest.get("stage_threads") or {stage: manifest["torch_threads"] for stage in manifest["stage_seconds"]}
    common = max(set(threads.values()), key=list(threads.values()).count)
    others = ", ".join(f"{stage}: {n}" for stage, n in threads.items() if n != common)
    return f"{common}" + (f" ({others})" if others else "")


def zoo_search_text(root: Path) -> str:
    """The zoo methods' starter settings (``zoo_search.json`` of the shipped lesson results): validation and test
    accuracy at each searched lr, the choice in bold, and whether the starter config's presets hold it."""
    from .config import load_run_config
    from .lesson_results import ZOO_METHODS, search_cells

    folder = root / "e2vpt_viz" / "lesson_results" / "starter"
    if not (folder / "zoo_search.json").is_file():
        return "The zoo's settings search has not run: `python -m e2vpt_viz lesson-results --out ... --stages zoo-search`."
    search = json.loads((folder / "zoo_search.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    cfg = load_run_config("starter")
    rows = []
    for method, entry in search["methods"].items():
        chosen = entry["chosen"]["train.base_lr"]
        options = ", ".join(f"{k} {v}" for k, v in entry["method"].items() if k != "name")
        preset = cfg.compare.get(method, {}).get("train.base_lr")
        rows.append([method, options, search_cells(entry), f"{chosen:g}", "yes" if preset == chosen else f"no ({preset})"])
    missing = [m for m in ZOO_METHODS if m not in search["methods"]]
    schedule = search["schedule"]
    return (markdown_table(["method", "options", "val / test accuracy (%) per base lr", "chosen lr",
                            "in the starter config"], rows)
            + f"\n\n{schedule['epochs']} epochs ({schedule['warmup_epochs']} warm-up), {schedule['optimizer']} with "
            f"weight decay {schedule['weight_decay']}, seed {search['seed']}, {search['torch_threads']} torch threads; "
            f"chosen on {search['selection']} (ties: the smaller lr); a choice whose seed-42 run at the full "
            f"schedule diverged (its last epoch's train accuracy under half its best) is rejected for the next best "
            f"lr, and the lr is marked. "
            f"`{manifest['stage_commands'].get('zoo-search', 'python -m e2vpt_viz lesson-results --stages zoo-search')}`"
            + (f". Not searched yet: {', '.join(missing)}." if missing else "."))


def method_costs_text(root: Path) -> str:
    """Every method's cost on the offline starter (the shipped ``costs.json``) beside its test accuracy over the
    shipped seeds (mean ± sd of the run records; "not shipped yet" for a method without runs)."""
    from .costs import COST_COLUMNS
    from .lesson_results import runs_dir

    folder = root / "e2vpt_viz" / "lesson_results" / "starter"
    if not (folder / "costs.json").is_file():
        return "No cost file ships in this checkout: `python -m e2vpt_viz lesson-results --out ... --stages costs`."
    costs = json.loads((folder / "costs.json").read_text())
    rows = []
    for r in costs["rows"]:
        records = sorted(runs_dir(folder).glob(f"{r['method']}-seed*.json"))
        accs = [100 * json.loads(path.read_text())["test_acc"] for path in records]
        accuracy = f"{_f(mean_std(accs)[0])} ± {_f(mean_std(accs)[1])} ({len(accs)})" if accs else "not shipped yet"
        rows.append([r["method"], accuracy, f"{r['tunable']:,}", f"{r['train_images_per_s']:.0f}",
                     f"{r['peak_train_bytes'] / 2 ** 20:.1f}", f"{r['eval_images_per_s']:.0f}",
                     f"{r['inference_gflops_per_image']:.3f}"])
    header = [COST_COLUMNS[0], "test acc (%), mean ± sd (seeds)", *COST_COLUMNS[1:]]
    kinds = sorted({r["memory_kind"] for r in costs["rows"]})
    return (markdown_table(header, rows) + f"\n\nMeasured {costs['date']} on {costs['device']} (torch {costs['torch']}), "
            f"{costs['backbone']} at {costs['crop_size']} px, batch {costs['batch_size']}, the median of "
            f"{costs['rounds']} turns of {costs['batches']} batches per method; `{costs['command']}`. Peak memory: "
            + "; ".join(costs["memory"][k] for k in kinds) + ". Accuracy: the shipped 100-epoch runs' test accuracy "
            "(`e2vpt_viz/lesson_results/starter/runs`).")


def lesson_results_text(root: Path) -> str:
    """The lessons' shipped results (``e2vpt_viz/lesson_results/starter``): the command that re-makes them, its run
    time, their size, and every method's test accuracy over the shipped seeds, from the manifest and run records."""
    folder = root / "e2vpt_viz" / "lesson_results" / "starter"
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return "No lesson results ship in this checkout."
    manifest = json.loads(manifest_path.read_text())
    from .lesson_results import OTHER_BACKBONES, STARTER_BACKBONE, runs_dir

    rows = []
    for backbone, methods in [(STARTER_BACKBONE, manifest["methods"]), *OTHER_BACKBONES.items()]:
        runs = runs_dir(folder, backbone)
        for method in methods:
            records = [json.loads((runs / f"{method}-seed{seed}.json").read_text())
                       for seed in manifest["seeds"] if (runs / f"{method}-seed{seed}.json").is_file()]
            if not records:
                continue
            accs = [100 * r["test_acc"] for r in records]
            mean, sd = mean_std(accs)
            tensors = [seed for seed in manifest["seeds"] if (runs / f"{method}-seed{seed}.safetensors").is_file()]
            shipped = ("records and tensors" if len(tensors) == len(records) else
                       f"records, tensors of seed {' / '.join(map(str, tensors))}" if tensors else "records only")
            rows.append([backbone, method, f"{_f(mean)} ± {_f(sd)}", " / ".join(_f(a) for a in accs),
                         " / ".join(str(r["config"]["train"]["seed"]) for r in records),
                         f"{records[0]['parameters']['tunable']:,}", shipped])
    epoch_minutes = {}  # per methods stage: the epochs' own seconds, summed over every run (resumptions included)
    for seed in manifest["seeds"]:
        histories = [json.loads(p.read_text())["history"] for p in sorted((folder / "runs").glob(f"*-seed{seed}.json"))]
        epoch_minutes[f"methods-seed{seed}"] = sum(h.get("seconds", 0) for run in histories for h in run) / 60
    others = ", ".join(f"{stage} {seconds / 60:.0f} min" for stage, seconds in manifest["stage_seconds"].items()
                       if stage not in epoch_minutes)
    methods = ", ".join(f"{stage} {minutes:.0f} min" for stage, minutes in epoch_minutes.items())
    text = (f"{len(manifest['files'])} files, {manifest['total_bytes'] / 1024:.0f} KB in all, made with "
            f"`{manifest['command']}` (e2vpt-viz {manifest['version']}, torch {manifest['torch']}, "
            f"{manifest['date']}; torch threads per process: {_threads(manifest)}; stages run side by side "
            f"in two or three processes on 2 CPU cores, so each ran slower than alone). Training time of the "
            f"starter-vit runs per seed, summed over their epochs: {methods}. Wall-clock time of the other stages (as "
            f"recorded by the processes that finished them): {others}. Test accuracy on the starter's 600 test "
            "images, 100 epochs:\n\n")
    text += markdown_table(["backbone", "method", "test acc (%), mean ± sd", "per seed", "seeds", "tunable params",
                            "shipped"], rows)
    rewind = folder / "prune" / "rewind.json"
    if rewind.is_file():
        r = json.loads(rewind.read_text())
        best = r["best"]
        text += (f"\n\nRewinding (notebook 03), from the seed-{r['base_run'].rsplit('seed', 1)[1]} E²VPT run "
                 f"({_f(100 * r['before_test_acc'])}% before pruning): {len(r['runs'])} candidates, chosen on "
                 f"validation: {best['num_tokens']} tokens and {best['num_segments']} segments per token pruned, test "
                 f"{_f(100 * best['test_acc'])}%.")
    text += "\n\n" + quick_text(root, folder)
    return text


def quick_text(root: Path, folder: Path) -> str:
    """How ``TRAIN = "quick"``'s schedule was chosen: the candidates' validation accuracy (``quick.json``) and the
    epoch time on 2 idle cores (``benchmarks/results/threads_cpu.json``)."""
    from .lesson_results import QUICK_BUDGET_S, QUICK_METHOD, QUICK_SCHEDULE, choose_quick_epochs

    quick, threads = folder / "quick.json", root / "benchmarks" / "results" / "threads_cpu.json"
    if not quick.is_file() or not threads.is_file():
        return "The quick schedule's measurements are not in this checkout."
    rows = json.loads(quick.read_text())["rows"]
    t = json.loads(threads.read_text())
    epoch = t["epoch_seconds"]["idle"][str(t["cores"])]
    candidates = ", ".join(f"{r['epochs']} epochs {_f(100 * r['val_acc'])}%" for r in rows)
    chosen = choose_quick_epochs(rows, epoch)
    return (f"`TRAIN = \"quick\"` trains {QUICK_METHOD} for {QUICK_SCHEDULE['epochs']} epochs "
            f"({QUICK_SCHEDULE['warmup_epochs']} warm-up). Validation accuracy of the candidates (seed 42): "
            f"{candidates}. One training epoch takes {epoch:.1f} s on {t['cores']} idle cores "
            f"(`{t['command']}`, {t['date']}), so {chosen} epochs is the longest candidate whose training fits the "
            f"{QUICK_BUDGET_S / 60:.0f}-minute budget ({chosen * epoch:.0f} s, validation passes not included).")


def variants_effect(name: str) -> Callable[[dict[str, dict]], Optional[str]]:
    """The measured-effect sentence of a ``kind: variants`` result (None until it is measured): both means, and
    whether the second variant's mean lies inside the first's seed range."""
    def effect(r: dict[str, dict]) -> Optional[str]:
        result = r.get(name)
        if result is None or not result["methods"]:
            return None
        base, other = result["methods"]
        low, high = min(base["test_acc"]), max(base["test_acc"])
        inside = low <= other["test_acc_mean"] <= high
        pairs = " / ".join(f"{_f(b)} vs {_f(o)}" for b, o in zip(base["test_acc"], other["test_acc"]))
        return (f"{result['method']} on the starter, {result['schedule']['epochs']} epochs, seeds "
                f"{' / '.join(map(str, result['seeds']))}: {other['method']} {_f(other['test_acc_mean'])} ± "
                f"{_f(other['test_acc_sd'])}%, {base['method']} {_f(base['test_acc_mean'])} ± {_f(base['test_acc_sd'])}% "
                f"({base['method']} vs {other['method']} per seed: {pairs}); the {other['method']} mean is "
                f"{'inside' if inside else 'outside'} the {base['method']} seed range, "
                f"{_f(other['test_acc_mean'] - base['test_acc_mean'], '+.1f')} points "
                f"([{name}.json](results/{name}.json))")
    return effect


EFFECTS: dict[str, Callable[[dict[str, dict]], Optional[str]]] = {"precision": variants_effect("precision")}

SPT_COMMAND = ("python -m e2vpt_viz report --methods vpt-deep --out results/spt_init/INIT-seedSEED train.seed=SEED "
               "compare.vpt-deep.method.prompt_init=INIT")


def spt_init_text(r: dict[str, dict]) -> str:
    """Self-Prompt Tuning's data initialisation against the random one, VPT-deep on the starter (``spt_init.json``),
    or how to measure it."""
    effect = variants_effect("spt_init")(r)
    if effect is None:
        return (f"Not measured yet: `{SPT_COMMAND}` for INIT in random, spt and SEED in 42, 1, 2, then `python -m "
                "e2vpt_viz record variants docs/results/spt_init.json results/spt_init/*`.")
    return f"Measured: {effect}."


def deviations_text(r: dict[str, dict]) -> str:
    """The remaining differences from the official code (:data:`~e2vpt_viz.experiments.reproduce.DEVIATIONS`), each
    with its measured effect where a result file holds one."""
    from .reproduce import DEVIATIONS

    rows = [[d["setting"], d["official"], d["here"], d["why"],
             (EFFECTS[d["effect"]](r) if d["effect"] else None) or "not measured"] for d in DEVIATIONS]
    return markdown_table(["setting", "official code", "here", "why", "measured effect"], rows)


def paper_numbers_text(r: dict[str, dict]) -> str:
    """The papers' FGVC numbers that ``reproduce`` shows, each with its citation; — where no row can be cited."""
    from .reproduce import DATASETS, FGVC, METHODS, PAPER, PAPER_MEAN, PAPER_SOURCE

    rows = [[method, *(_f(PAPER[method].get(d)) for d in FGVC), f"{PAPER_MEAN[method]:.2f}", PAPER_SOURCE[method]]
            for method in METHODS]
    return markdown_table(["method", *(DATASETS[d][1] for d in FGVC), "FGVC mean", "source"], rows)


def vtab_paper_numbers_text(r: dict[str, dict]) -> str:
    """The papers' VTAB-1k numbers the VTAB summary shows: group means, the mean of the three group means (the VPT /
    E²VPT convention) and, where every task has a cited number, the flat mean over the 19 tasks; each cited."""
    from data_prep.vtab import GROUPS, summary
    from .reproduce import VTAB_PAPER, VTAB_PAPER_GROUPS

    rows = []
    for method, paper in VTAB_PAPER_GROUPS.items():
        groups = paper.get("groups")
        flat = summary(VTAB_PAPER[method])["flat_mean"]["value"] if method in VTAB_PAPER else None
        mean = sum(groups) / 3 if groups else None
        rows.append([method, *(_f(g, ".2f") for g in (groups or (None,) * len(GROUPS))),
                     _f(mean, ".2f") if mean is not None else "—",
                     _f(flat, ".2f") if flat is not None else "—",
                     f"{paper['mean']:.2f}, convention not stated" if paper.get("mean") else "—", paper["source"]
                     + ("; flat mean from VPT Table 13's per-task row" if flat is not None else "")])
    return markdown_table(["method", "natural", "specialized", "structured", "mean of the 3 group means",
                           "flat mean of 19 tasks", "other reported mean", "source"], rows)


BLOCKS: dict[str, Callable[[dict[str, dict]], str]] = {
    "main-job": main_job_text, "tests": tests_text, "calibration": calibration_text, "baselines": baselines_text,
    "settings-sweep": sweep_text, "pruning": pruning_text, "pvp": pvp_text, "starter": starter_text,
    "performance": performance_text, "backbones": backbones_text, "deviations": deviations_text, "paper-numbers": paper_numbers_text,
    "vtab-paper-numbers": vtab_paper_numbers_text, "spt-init": spt_init_text,
}


def results_index(results: dict[str, dict]) -> str:
    """``docs/results.md``: one row per result file with its claim and provenance."""
    rows = []
    for name, r in results.items():
        parts = [r] if "command" in r else [v for v in r.values() if isinstance(v, dict) and "command" in v]
        rows.append([f"[`{name}.json`](results/{name}.json)", r["claim"], "; ".join(_commit(p) for p in parts),
                     r.get("torch") or "—", r["device"], "; ".join(f"`{p['command']}`" for p in parts)])
    return ("# Result files\n\n<!-- Generated by `python -m e2vpt_viz docs` from docs/results/*.json; do not edit. -->\n\n"
            "Every measured number in the README and the docs pages is rendered from one of these files. A "
            "re-measurement goes in with `python -m e2vpt_viz record` (see `e2vpt_viz/experiments/docs.py`), then "
            "`python -m e2vpt_viz docs` regenerates the pages.\n\n"
            + markdown_table(["file", "claim", "measured at", "torch", "device", "command"], rows) + "\n")


# -------------------------------------------------------------------------------------------------- rendering

def render(root: Union[str, Path] = ROOT) -> dict[Path, str]:
    """``{path: the text it should have}`` for every file the generator owns or fills; nothing is written."""
    root = Path(root)
    results = load_results(root)
    if not results:
        raise FileNotFoundError(f"no result files in {root / RESULTS_DIR}: run `python -m e2vpt_viz docs` from a "
                                "source checkout of the repository (pip install -e .).")
    blocks = {**{name: fn(results) for name, fn in BLOCKS.items()}, "benchmarks": benchmarks_text(root),
              "lesson-results": lesson_results_text(root), "lesson-timings": lesson_timings_text(root),
              "method-costs": method_costs_text(root), "zoo-search": zoo_search_text(root)}
    pages = {root / "docs" / "results.md": results_index(results)}
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        if path in pages:
            continue
        text = path.read_text()

        def fill(match: re.Match) -> str:
            if match[2] not in blocks:
                raise ValueError(f"{path.name}: unknown generated block {match[2]!r}; known: {', '.join(blocks)}")
            return f"{match[1]}{blocks[match[2]]}\n{match[4]}"

        pages[path] = BLOCK.sub(fill, text)
    return pages


def stale(root: Union[str, Path] = ROOT) -> list[Path]:
    """The files whose committed text differs from what :func:`render` gives."""
    return [path for path, text in render(root).items() if not path.is_file() or path.read_text() != text]


def write_docs(root: Union[str, Path] = ROOT) -> list[Path]:
    """Regenerate every page and block; returns the files that changed."""
    changed = stale(root)
    pages = render(root)
    for path in changed:
        path.write_text(pages[path])
    return changed


# -------------------------------------------------------------------------------------------------- recording

def _last_commit(path: Path) -> str:
    """The last commit that changed ``path`` (the commit a committed file was made at), or "unknown"."""
    try:
        return subprocess.run(["git", "log", "-1", "--format=%H", "--", str(path)], cwd=path.parent, capture_output=True,
                              text=True, check=True).stdout.strip() or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def measured_now(root: Union[str, Path] = ROOT) -> dict:
    """A result file's ``measured`` entry: ``{"commit": <HEAD of the git work tree at root, or "unknown">,
    "date": today}``."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"commit": commit, "date": datetime.date.today().isoformat()}


def _stamp(result: dict, root: Path) -> dict:
    import torch

    device = (f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
              else f"{torch.get_num_threads()} CPU threads, no GPU")
    return {**result, "measured": measured_now(root), "device": device, "torch": torch.__version__}


def _read(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass the folder the command wrote ({what}).")
    return json.loads(path.read_text())


def record_seeds(result: dict, run_dirs: Sequence[Union[str, Path]]) -> dict:
    """The ``kind: seeds`` result re-measured: one ``report --out`` folder per seed, each with ``<method>/metrics.json``
    for every method of ``result``; labels and claim are kept."""
    methods, runs = [], [Path(d) for d in run_dirs]
    metrics = {m["method"]: [_read(d / m["method"] / "metrics.json", "report --out DIR") for d in runs]
               for m in result["methods"]}
    for entry in result["methods"]:
        per_seed = metrics[entry["method"]]
        accs = [100 * m["test_acc"] for m in per_seed]
        mean, sd = mean_std(accs)
        methods.append({**entry, "test_acc": accs, "test_acc_mean": mean, "test_acc_sd": sd,
                        **({"tunable": per_seed[0]["parameters"]["tunable"],
                            "tunable_pct": per_seed[0]["parameters"]["tunable_pct"]} if "tunable" in entry else {}),
                        **({"train_seconds": [m["train_seconds"] for m in per_seed]} if "train_seconds" in entry
                           else {})})
    first = next(iter(metrics.values()))
    train = [m["config"]["train"] for m in first]
    return {**result, "seeds": [t["seed"] for t in train], "methods": methods,
            "schedule": {**result.get("schedule", {}), "epochs": first[0]["epochs"],
                         "warmup_epochs": train[0]["warmup_epochs"]}}


def record_prune(result: dict, run_dir: Union[str, Path]) -> dict:
    """The ``kind: pruning`` result from a ``prune`` run's ``prune.json`` and ``sweep.json`` (the sweep at the
    result's ratios)."""
    run_dir = Path(run_dir)
    prune = _read(run_dir / "prune.json", "the run's output_dir")
    sweep = _read(run_dir / "sweep.json", "the run's output_dir")
    by_ratio = dict(zip(sweep["ratios"], sweep["results"]))
    ratios = [s["ratio"] for s in result["sweep"]]
    candidates = prune["rewind_runs"]
    best = max(candidates, key=lambda c: c["test_acc"])
    return {**result,
            "before": {"test_acc": 100 * prune["before"]["test_acc"],
                       "tunable": prune["before"]["parameters"]["tunable"]},
            "sweep": [{"ratio": r, "test_acc": 100 * by_ratio[r]["acc"],
                       "tunable": by_ratio[r]["parameters"]["tunable"]} for r in ratios],
            "best_budgets": prune["best_budgets"], "instant_test_acc": 100 * prune["instant_test_acc"],
            "rewound": {"test_acc": 100 * prune["rewound"]["test_acc"],
                        "tunable": prune["rewound"]["parameters"]["tunable"]},
            "candidates": {**result["candidates"], "count": len(candidates),
                           "test_acc_range": [100 * min(c["test_acc"] for c in candidates),
                                              100 * max(c["test_acc"] for c in candidates)],
                           "val_acc_range": [100 * min(c["val_acc"] for c in candidates),
                                             100 * max(c["val_acc"] for c in candidates)],
                           "best_test": {"num_tokens": best["num_tokens"], "num_segments": best["num_segments"],
                                         "test_acc": 100 * best["test_acc"], "tunable": best["tunable"]}}}


def record_pvp(result: dict, out_dir: Union[str, Path]) -> dict:
    """The ``kind: pvp_fewshot`` result from the ``pvp_fewshot.json`` that ``pvp-fewshot --out OUT`` wrote, or from a
    ``lesson-results`` export (its ``fewshot.json``, the same comparison; command and minutes from its manifest); the
    pre-trained prompts' provenance is read from the prompt file's own metadata."""
    from ..backbones import WEIGHTS_DIR
    from ..pvp import prompt_file_info

    out_dir = Path(out_dir)
    if (out_dir / "fewshot.json").is_file() and (out_dir / "manifest.json").is_file():
        export = _read(out_dir / "fewshot.json", "lesson-results --out DIR")
        manifest = _read(out_dir / "manifest.json", "lesson-results --out DIR")
        rows, prompts = export["rows"], WEIGHTS_DIR / export["prompts"]
        result = {**result, "command": f"python -m e2vpt_viz lesson-results --out {out_dir} --stages fewshot",
                  "minutes": round(manifest["stage_seconds"]["fewshot"] / 60), "epochs": export["epochs"]}
    else:
        rows = _read(out_dir / "pvp_fewshot.json", "pvp-fewshot --out DIR")
        prompts = None
    if prompts is not None:
        info = prompt_file_info(prompts)
        result = {**result, "pretrained_prompts": {
            **result.get("pretrained_prompts", {}), "command": info["command"], "source_val_acc":
            round(100 * info["source_val_acc"], 1), "minutes": round(info["seconds"] / 60, 1),
            "measured": {"commit": _last_commit(prompts), "date": info["date"]}}}
    return {**result, "rows": [
        {"shots": r["shots"], "random_mean": 100 * r["random_mean"], "random_sd": 100 * r["random_std"],
         "pvp_mean": 100 * r["pvp_mean"], "pvp_sd": 100 * r["pvp_std"],
         "gain": 100 * (r["pvp_mean"] - r["random_mean"]),
         "pvp_wins": sum(p > q for p, q in zip(r["pvp"], r["random"])),
         "per_seed": {str(s): {"random": 100 * q, "pvp": 100 * p}
                      for s, p, q in zip(result["seeds"], r["pvp"], r["random"])}} for r in rows]}


def _run_metrics(folder: Path, method: str) -> dict:
    """The ``metrics.json`` of one run: a ``report --out`` folder (``<method>/metrics.json``) or a run folder."""
    path = folder / method / "metrics.json" if (folder / method / "metrics.json").is_file() else folder / "metrics.json"
    return _read(path, "report --out DIR, or a run's output_dir")


def _setting(metrics: dict, dotted: str):
    section, key = dotted.split(".")
    values = metrics["config"][section]
    return (result_settings(values) if section == "train" else values).get(key)  # older records: earlier defaults


def record_variants(result: dict, run_dirs: Sequence[Union[str, Path]]) -> dict:
    """The ``kind: variants`` result: one method trained with two values of one setting (``result["varies"]``: the
    dotted setting and ``{label: value}``), the same seeds each; the runs are ``report --out`` folders or run
    folders, grouped by the value their config holds."""
    method, varies = result["method"], result["varies"]
    runs = [_run_metrics(Path(d), method) for d in run_dirs]
    seeds = list(dict.fromkeys(m["config"]["train"]["seed"] for m in runs))
    entries = []
    for label, value in varies["values"].items():
        group = [m for m in runs if _setting(m, varies["setting"]) == value]
        if sorted(m["config"]["train"]["seed"] for m in group) != sorted(seeds):
            raise ValueError(f"`record variants` needs the seeds {seeds} with {varies['setting']}={value} ({label}); "
                             f"found {[m['config']['train']['seed'] for m in group]}.")
        group.sort(key=lambda m: seeds.index(m["config"]["train"]["seed"]))
        accs = [100 * m["test_acc"] for m in group]
        mean, sd = mean_std(accs)
        entries.append({"method": label, "label": f"{method}, {label}", "test_acc": accs, "test_acc_mean": mean,
                        "test_acc_sd": sd, "train_seconds": [m["train_seconds"] for m in group]})
    epochs = {m["epochs"] for m in runs}
    if len(epochs) != 1:
        raise ValueError(f"`record variants` compares runs of one schedule; these have {sorted(epochs)} epochs.")
    return {**result, "seeds": seeds, "methods": entries,
            "schedule": {"epochs": runs[0]["epochs"], "warmup_epochs": runs[0]["config"]["train"]["warmup_epochs"]}}


def record_starter(result: dict, weights: Sequence[Union[str, Path]]) -> dict:
    """The ``kind: starter_backbones`` result from starter weights files (``pretrain-starter`` writes the command,
    seed, accuracy, seconds, torch version and date into each file's metadata)."""
    from safetensors import safe_open

    backbones = {}
    for path in map(Path, weights):
        with safe_open(str(path), framework="pt") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
            count = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
        if "name" not in meta or "source_val_acc" not in meta:
            raise ValueError(f"{path} has no pretrain-starter metadata; pass weights written by "
                             "`python -m e2vpt_viz pretrain-starter`.")
        backbones[meta["name"]] = {
            "file": path.name, "command": meta["command"], "seed": meta["seed"], "architecture": meta["architecture"],
            "parameters_millions": round(count / 1e6, 2), "megabytes": round(path.stat().st_size / 1e6, 1),
            "source_val_acc": 100 * meta["source_val_acc"], "minutes": meta["train_seconds"] / 60,
            "torch": meta.get("torch"), "date": meta.get("date")}
    return {**result, "backbones": backbones}


RECORDERS = {"seeds": record_seeds, "prune": record_prune, "pvp": record_pvp, "variants": record_variants,
             "starter": record_starter}
KINDS = {"seeds": "seeds", "prune": "pruning", "pvp": "pvp_fewshot", "variants": "variants",
         "starter": "starter_backbones"}
MANY_SOURCES = ("seeds", "variants", "starter")  # kinds that read one folder (or file) per run


def record(kind: str, result_file: Union[str, Path], sources: Sequence[Union[str, Path]],
           root: Union[str, Path] = ROOT) -> Path:
    """Rewrite ``result_file`` (a ``docs/results/*.json``) from the files a command wrote under ``sources``."""
    path = Path(result_file)
    result = _read(path, "an existing docs/results/*.json")
    if result.get("kind") != KINDS[kind]:
        raise ValueError(f"{path} holds a {result.get('kind')!r} result; `record {kind}` writes "
                         f"{KINDS[kind]!r} results.")
    if kind not in MANY_SOURCES and len(sources) != 1:
        raise ValueError(f"`record {kind}` reads one folder; got {len(sources)}.")
    new = RECORDERS[kind](result, sources if kind in MANY_SOURCES else sources[0])
    path.write_text(json.dumps(_stamp(new, Path(root)), indent=1, ensure_ascii=False) + "\n")
    return path
