"""The lessons' shipped results: every run the notebooks show, trained once on the offline starter by one command.

    python -m e2vpt_viz lesson-results --out e2vpt_viz/lesson_results/starter     # about 3 hours on 2 CPU cores

trains, at the papers' 100-epoch schedule and with the starter config's per-method settings (its ``compare``
section), every method of notebooks 01-05 for three training seeds (42, 1, 2), the pruning candidates of notebook 03
(rewound under frozen masks, seed 42), the few-shot runs of notebook 05 (random vs PVP initialisation) and notebook
06's VPT-shallow and E²VPT runs on the starter with registers (three seeds), then
exports what the lessons read into ``--out``:

- ``runs/<method>-seed<seed>.json``: the run's record (test / validation accuracy, per-class accuracy, history,
  parameter counts, its config, training seconds);
- ``runs/<method>-seed<seed>.safetensors``: the trained tensors (prompts, masks, head, tuned backbone weights) with
  the config, seed, command and version in the metadata; not for ``full`` and ``partial``, whose tuned weights are
  megabytes (their records ship, and the lessons say they are read, not computed);
- ``prune/rewind.json`` and ``prune/best.safetensors``: the rewinding candidates and the chosen one's tensors;
- ``backbones/<name>/runs/``: the same, for notebook 06's runs on the other starter backbones (``starter-vit-reg4``);
- ``fewshot.json``: the few-shot rows (per shot count and seed, both initialisations);
- ``quick.json``: E²VPT at a few short schedules (validation accuracy, seconds), what ``TRAIN="quick"`` is chosen from;
- ``zoo_search.json``: the zoo methods' starter settings searched on validation (stage ``zoo-search``);
- ``costs.json``: every method's training images/s, peak training memory and inference cost on the starter, measured in
  one run through the training loop (:mod:`~e2vpt_viz.experiments.costs`; notebook 04's cost view);
- ``manifest.json``: command, versions, date, seconds per stage, and every file's size and SHA-256.

The work (resumable run folders with their training state) goes to ``--work``; an interrupted command continues where
it stopped, stage by stage, and the export is refreshed after every stage. ``--out`` is required: a default never
replaces the files that ship in the package.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from tqdm.auto import tqdm

from .. import __version__, pruning
from ..checkpoint import load_prompts, save_prompts, write_json
from ..run_folder import LOCK_FILE, RunFolderBusyError, owning
from ..training import PROMPTS_FILE, short_schedule_warmup
from .config import RunConfig, load_run_config, settings_digest
from .fewshot import few_shot_comparison, packaged_prompts
from .run import build_model, finished_run, prepare_data, train_run

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "lesson_results" / "starter"
SEEDS = (42, 1, 2)
# Trained in this order: what notebooks 02 and 03 build on first.
LESSON_METHODS = ("e2vpt", "vpt-deep", "linear", "vpt-shallow", "lora", "bias", "partial", "full")
RECORD_ONLY = ("full", "partial")  # tuned backbone weights of megabytes: the record ships, not the tensors
PRUNE_SEED = 42
REWIND_TOKENS, REWIND_SEGMENTS = (0, 2, 4), (6, 12)  # notebook 03's candidates (official: 5 x 8 pairs for P = 5)
SWEEP_RATIOS = tuple(round(0.1 * i, 1) for i in range(10))
FEW_SHOTS, FEW_SHOT_SEEDS, FEW_SHOT_EPOCHS = (1, 2, 4, 8, 16), (0, 1, 2), 50
QUICK_CANDIDATES = (15, 30, 45)  # epochs (10 % warm-up) tried for the lessons' "quick" mode, on validation
STARTER_BACKBONE = "starter-vit"  # the backbone of every lesson run, in runs/
# Notebook 06's other starter backbones and the methods trained on each (in backbones/<name>/runs/, same settings).
OTHER_BACKBONES = {"starter-vit-reg4": ("vpt-shallow", "e2vpt")}
STAGES = ("methods-seed42", "prune", "fewshot", "methods-seed1", "methods-seed2", "quick",
          "backbones-seed42", "backbones-seed1", "backbones-seed2", "costs", "zoo-search")
# Notebook 04's method zoo beyond the lesson methods: HF peft's other tuners, the adapters and SSF. Their starter
# settings are searched on validation (stage zoo-search: ZOO_SEARCH's schedule and lrs, AdamW with weight decay 0.01
# as the lesson's LoRA, seed 42), the same way the lesson methods' were (docs/calibration.md's settings sweep).
ZOO_METHODS = ("dora", "rslora", "ia3", "loha", "lokr", "oft", "boft", "vera", "fourierft", "hra", "adaptformer",
               "adapter", "ssf")
ZOO_SEARCH = {"epochs": 30, "warmup_epochs": 3, "optimizer": "adamw", "weight_decay": 0.01,
              "base_lrs": (0.01, 0.04, 0.16)}
SEEDED_STAGE = re.compile(r"(methods|backbones)-seed(\d+)")


def run_name(method: str, seed: int) -> str:
    """``e2vpt-seed42``: the stem of a shipped run's files."""
    return f"{method}-seed{seed}"


def runs_dir(root: Union[str, Path], backbone: str = STARTER_BACKBONE) -> Path:
    """Where the shipped runs on ``backbone`` are: ``root/runs`` for the starter-vit, ``root/backbones/<name>/runs``
    for the others (:data:`OTHER_BACKBONES`)."""
    return Path(root) / "runs" if backbone == STARTER_BACKBONE else Path(root) / "backbones" / backbone / "runs"


def method_config_for(cfg: RunConfig, method: str, seed: int, out_dir: Union[str, Path]) -> RunConfig:
    """The run config of one shipped run: the method with its ``compare`` presets, the seed, a folder of its own."""
    return cfg.with_presets(method).replace(train={"seed": seed}, output_dir=str(Path(out_dir) / run_name(method, seed)))


def ships_tensors(method: str, seed: int) -> bool:
    """Whether the shipped run of ``method`` with ``seed`` includes its tuned tensors, or only its record: the tensors
    of every seed of the eight lesson methods but full and partial (:data:`RECORD_ONLY`), and of seed 42 for the zoo
    (enough to evaluate and explain each zoo method now; its other seeds' accuracies are read from their records)."""
    return method not in RECORD_ONLY and (method not in ZOO_METHODS or seed == SEEDS[0])


def _command() -> Optional[str]:
    return " ".join(["python -m e2vpt_viz", *sys.argv[1:]]) if sys.argv[1:2] == ["lesson-results"] else None


def _train(cfg: RunConfig, progress: bool) -> dict:
    """A finished run's record (read back), else train it (resuming from its folder)."""
    done = finished_run(cfg)
    if done is not None:
        return done
    result = train_run(cfg, progress=progress)
    return {k: v for k, v in result.items() if k != "model"}


def _exported(cfg: RunConfig, out: Path) -> Optional[dict]:
    """The exported record of the run ``cfg`` describes, when ``out`` holds it (with its tensors, for a method that
    ships them) and it was trained with exactly this config; else None. A stage then spans sessions that do not keep
    their work folder: what was exported is not trained again."""
    runs = runs_dir(out, cfg.backbone.name)
    path = runs / f"{run_name(cfg.method_name, cfg.train.seed)}.json"
    if not path.is_file() or (ships_tensors(cfg.method_name, cfg.train.seed)
                              and not path.with_suffix(".safetensors").is_file()):
        return None
    record = json.loads(path.read_text())
    try:
        same = RunConfig.from_dict(record["config"]).replace(output_dir=cfg.output_dir) == cfg
    except (KeyError, ValueError):
        return None
    return record if same else None


def _export_run(cfg: RunConfig, record: dict, out: Path, command: Optional[str]) -> None:
    method, seed = record["method"], cfg.train.seed
    stem = run_name(method, seed)
    slim = {k: v for k, v in record.items() if k != "model"}
    runs = runs_dir(out, cfg.backbone.name)
    record_path, tensors_path = runs / f"{stem}.json", runs / f"{stem}.safetensors"
    tensors = ships_tensors(method, seed)
    if _unchanged(record_path, slim) and (not tensors or tensors_path.is_file()):
        return  # exported before (safetensors headers do not keep their order: rewriting would change the bytes)
    write_json(record_path, slim, indent=None)
    if not tensors:
        return
    model = build_model(cfg, len(record["per_class_acc"]))
    load_prompts(model, Path(cfg.output_dir) / PROMPTS_FILE)
    save_prompts(model, tensors_path, config=cfg.to_dict(), seed=seed, command=command,
                 version=__version__, torch=torch.__version__, test_acc=record["test_acc"])


def _unchanged(path: Path, data) -> bool:
    """True when ``path`` already holds ``data`` as JSON."""
    return path.is_file() and json.loads(path.read_text()) == json.loads(json.dumps(data))


def _prune(cfg: RunConfig, work: Path, out: Path, command: Optional[str], progress: bool) -> None:
    """Notebook 03's runs: scores of the seed-42 E²VPT run, the instant sweep, rewinding under frozen masks."""
    base = method_config_for(cfg, "e2vpt", PRUNE_SEED, work / "runs")
    record = _train(base, progress)
    loaders = prepare_data(base, base.train.batch_size, seed=0)
    num_classes = loaders["train"].dataset.num_classes
    model = load_prompts(build_model(base, num_classes), Path(base.output_dir) / PROMPTS_FILE)
    scores = pruning.importance_scores(model, loaders["train"], score="signed")
    sweep = pruning.pruning_sweep(model, loaders["test"], SWEEP_RATIOS, scores=scores)
    rewind = pruning.prune_and_rewind(lambda: build_model(base, num_classes), loaders["train"], loaders["val"],
                                      replace(base.train, progress=progress), scores, work / "prune" / "rewind",
                                      REWIND_TOKENS, REWIND_SEGMENTS, test_loader=loaders["test"], progress=progress)
    best = load_prompts(build_model(base, num_classes), Path(rewind["best_dir"]) / PROMPTS_FILE)
    summary = {"runs": rewind["runs"], "best": rewind["best"], "base_run": run_name("e2vpt", PRUNE_SEED),
               "scores": scores.to_dict(), "sweep_test_acc": {str(r): sweep.results[r]["acc"] for r in sweep.ratios},
               "before_test_acc": record["test_acc"]}
    if _unchanged(out / "prune" / "rewind.json", summary) and (out / "prune" / "best.safetensors").is_file():
        return
    write_json(out / "prune" / "rewind.json", summary, indent=None)
    save_prompts(best, out / "prune" / "best.safetensors", config=base.to_dict(), seed=PRUNE_SEED, command=command,
                 version=__version__, torch=torch.__version__, test_acc=rewind["best"]["test_acc"],
                 budgets={"num_tokens": rewind["best"]["num_tokens"], "num_segments": rewind["best"]["num_segments"]})


def _fewshot(cfg: RunConfig, work: Path, out: Path, progress: bool) -> None:
    prompts = packaged_prompts(cfg)
    rows = few_shot_comparison(cfg, prompts, FEW_SHOTS, FEW_SHOT_SEEDS, FEW_SHOT_EPOCHS, progress=progress,
                               record=work / "fewshot_runs.json")
    write_json(out / "fewshot.json", {"prompts": prompts.name, "epochs": FEW_SHOT_EPOCHS, "rows": rows}, indent=None)


def _quick(cfg: RunConfig, work: Path, out: Path, progress: bool) -> None:
    """The short schedules a lesson's ``TRAIN="quick"`` could use: E²VPT (seed 42) for each of
    :data:`QUICK_CANDIDATES` epochs, validation accuracy and training seconds, into ``quick.json``."""
    rows = []
    for epochs in QUICK_CANDIDATES:
        run_cfg = cfg.with_presets(QUICK_METHOD).replace(
            train={"seed": SEEDS[0], "epochs": epochs, "warmup_epochs": short_schedule_warmup(epochs)},
            output_dir=str(work / "quick" / f"{QUICK_METHOD}-{epochs}ep"))
        record = _train(run_cfg, progress)
        rows.append({"epochs": epochs, "warmup_epochs": run_cfg.train.warmup_epochs, "val_acc": record["val_acc"],
                     "train_seconds": record["train_seconds"], "test_acc": record["test_acc"]})
    write_json(out / "quick.json", {"method": QUICK_METHOD, "seed": SEEDS[0], "rows": rows,
                                    "torch_threads": torch.get_num_threads()})


def _zoo_search(cfg: RunConfig, work: Path, out: Path, methods: Sequence[str], progress: bool,
                log: Callable[[str], None]) -> None:
    """Each zoo method at :data:`ZOO_SEARCH`'s lrs (one seed, short schedule), the best last-epoch validation accuracy
    chosen (ties: the smaller lr), into ``zoo_search.json``; when the best is the largest lr, the grid grows upward by
    a factor of 4, at most twice. Finished runs are read back, and a method the export already holds with the same
    settings is not searched again, so it resumes (also without its work folder). Each choice is then checked against
    the full schedule (:func:`_reject_diverged`)."""
    from .run import grid_search

    path = out / "zoo_search.json"
    found = json.loads(path.read_text())["methods"] if path.is_file() else {}
    for method in methods:
        base = cfg.with_presets(method).replace(train={
            "seed": SEEDS[0], "epochs": ZOO_SEARCH["epochs"], "warmup_epochs": ZOO_SEARCH["warmup_epochs"],
            "optimizer": ZOO_SEARCH["optimizer"], "weight_decay": ZOO_SEARCH["weight_decay"]})
        entry = found.get(method)
        if not (entry and entry["method"] == base.to_dict()["method"] and
                [r["base_lr"] for r in entry["runs"]][:len(ZOO_SEARCH["base_lrs"])] == list(ZOO_SEARCH["base_lrs"])):
            lrs = list(ZOO_SEARCH["base_lrs"])  # not searched before with these settings (the export would hold it)
            while True:  # a choice at the grid's top edge extends the grid upward (x4), twice at most
                search = grid_search(base, lrs, [ZOO_SEARCH["weight_decay"]], work / "zoo_search" / method,
                                     progress=progress)
                if search["best"]["base_lr"] != lrs[-1] or len(lrs) >= len(ZOO_SEARCH["base_lrs"]) + 2:
                    break
                lrs.append(round(4 * lrs[-1], 6))
            entry = {"method": base.to_dict()["method"],
                     "runs": [{k: r[k] for k in ("base_lr", "val_acc", "test_acc")} for r in search["runs"]]}
            entry["chosen"] = _zoo_choice(entry)
            log(f"  {method}: val " + ", ".join(f"lr {r['base_lr']:g} {100 * r['val_acc']:.1f}%" for r in search["runs"])
                + f" -> lr {entry['chosen']['train.base_lr']:g}")
        entry = _reject_diverged(cfg, method, entry, work, out, log)
        if entry != found.get(method):
            found[method] = entry
            write_json(path, {"schedule": {k: v for k, v in ZOO_SEARCH.items() if k != "base_lrs"},
                              "base_lrs": list(ZOO_SEARCH["base_lrs"]), "seed": SEEDS[0],
                              "selection": "last-epoch val_acc", "torch_threads": torch.get_num_threads(),
                              "methods": found})


def _zoo_choice(entry: dict) -> dict:
    """The settings a search entry chooses: the best last-epoch validation accuracy (ties: the smaller lr) among the
    lrs not rejected at the full schedule (``entry["diverged"]``)."""
    rejected = {d["base_lr"] for d in entry.get("diverged", [])}
    best = max((r for r in entry["runs"] if r["base_lr"] not in rejected), key=lambda r: (r["val_acc"], -r["base_lr"]))
    return {"train.base_lr": best["base_lr"], "train.optimizer": ZOO_SEARCH["optimizer"],
            "train.weight_decay": ZOO_SEARCH["weight_decay"]}


def diverged(history: Sequence[dict]) -> bool:
    """Whether a run fell apart: its last epoch's training accuracy is below half of its best epoch's (the loss
    blew up and never came back; a run that merely stops improving keeps its accuracy)."""
    accuracy = [h["train_acc"] for h in history]
    return bool(accuracy) and accuracy[-1] < 0.5 * max(accuracy)


def _reject_diverged(cfg: RunConfig, method: str, entry: dict, work: Path, out: Path,
                     log: Callable[[str], None]) -> dict:
    """A search's choice checked at the full schedule: the short search cannot see a loss that blows up later. When the
    method's seed-42 run of the ``methods-seed42`` stage (in ``work``) finished with the chosen settings and
    :func:`diverged`, its lr is recorded under ``entry["diverged"]`` with the evidence, the next best lr on
    validation is chosen, and the method's runs at the rejected settings are set aside: their work folders move to
    ``work/zoo_search/<method>/diverged-lr<lr>/`` and their exported files are removed, so that the methods stages
    train the new choice (once the starter config's ``compare`` preset holds it). Returns the entry (unchanged when
    there is nothing to reject)."""
    chosen = entry["chosen"]
    metrics_path = runs_dir(work) / run_name(method, SEEDS[0]) / "metrics.json"
    if not metrics_path.is_file():
        return entry
    record = json.loads(metrics_path.read_text())
    train = record["config"]["train"]
    if record["config"]["method"] != entry["method"] or train["epochs"] != cfg.train.epochs or \
            search_settings(train) != chosen or not diverged(record["history"]):
        return entry
    best = max(range(len(record["history"])), key=lambda i: record["history"][i]["train_acc"])
    evidence = {"base_lr": chosen["train.base_lr"], "seed": SEEDS[0], "epochs": train["epochs"],
                "best_train_acc": record["history"][best]["train_acc"], "best_epoch": best + 1,
                "last_train_acc": record["history"][-1]["train_acc"], "test_acc": record["test_acc"]}
    entry = {**entry, "diverged": [*entry.get("diverged", []), evidence]}
    entry["chosen"] = _zoo_choice(entry)
    aside = work / "zoo_search" / method / f"diverged-lr{chosen['train.base_lr']:g}"
    for folder in (runs_dir(work), runs_dir(out)):
        for seed_path in sorted(folder.glob(f"{method}-seed*")):
            if seed_path.is_dir():  # a work folder: trained (or training) with the rejected preset
                aside.mkdir(parents=True, exist_ok=True)
                with owning(seed_path):  # not while another process trains in it
                    seed_path.rename(aside / seed_path.name)
                (aside / seed_path.name / LOCK_FILE).unlink(missing_ok=True)
            elif seed_path.suffix == ".json" and \
                    search_settings(json.loads(seed_path.read_text())["config"]["train"]) == chosen:
                seed_path.unlink()  # an exported run trained with the rejected preset
                seed_path.with_suffix(".safetensors").unlink(missing_ok=True)
    log(f"  {method}: lr {chosen['train.base_lr']:g} diverged at {train['epochs']} epochs (seed {SEEDS[0]}: train "
        f"acc {100 * evidence['best_train_acc']:.1f}% at epoch {best + 1}, {100 * evidence['last_train_acc']:.1f}% "
        f"at the end) -> lr {entry['chosen']['train.base_lr']:g}; its runs moved to {aside}")
    return entry


def search_settings(train: dict) -> dict:
    """The settings a zoo search chooses among, read from a run config's ``train`` section (as ``to_dict`` writes it):
    ``{"train.base_lr": ..., "train.optimizer": ..., "train.weight_decay": ...}``, the form of ``chosen``."""
    return {f"train.{key}": train.get(key) for key in ("base_lr", "optimizer", "weight_decay")}


def file_digest(path: Path) -> str:
    """SHA-256 of a file, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(out: Path, command: Optional[str], stage: str, seconds: float) -> dict:
    """Rewrite ``manifest.json`` after a stage; its seconds add up over resumptions (and over processes that run
    stages side by side: one process at a time holds ``out`` while it reads and rewrites the manifest; the others
    wait). Hidden files (a lock, another process's half-written temporaries) are not listed."""
    while True:
        try:
            with owning(out):
                return _rewrite_manifest(out, command, stage, seconds)
        except RunFolderBusyError:
            time.sleep(0.2)


def _rewrite_manifest(out: Path, command: Optional[str], stage: str, seconds: float) -> dict:
    path = out / "manifest.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    stage_seconds = previous.get("stage_seconds", {})
    stage_seconds[stage] = round(stage_seconds.get(stage, 0) + seconds, 1)
    stage_commands = previous.get("stage_commands", {})
    if command is not None:
        stage_commands[stage] = command
    stage_threads = previous.get("stage_threads") or {s: previous.get("torch_threads", 1) for s in stage_seconds}
    stage_threads[stage] = torch.get_num_threads()
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json" and not p.name.startswith("."))
    manifest = {"command": "python -m e2vpt_viz lesson-results --out e2vpt_viz/lesson_results/starter",
                "stage_commands": stage_commands, "version": __version__, "torch": torch.__version__,
                "date": datetime.date.today().isoformat(), "seeds": list(SEEDS),
                "methods": list(LESSON_METHODS + ZOO_METHODS),
                "stage_seconds": stage_seconds, "stage_threads": stage_threads,
                "note": "stage_seconds are wall-clock seconds summed over resumptions; stages may run side by side",
                "files": {str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": file_digest(p)} for p in files}}
    manifest["total_bytes"] = sum(f["bytes"] for f in manifest["files"].values())
    write_json(out / "manifest.json", manifest)
    return manifest


def make_lesson_results(out: Union[str, Path], work: Union[str, Path] = "results/lesson_results_work",
                        config: Union[str, RunConfig] = "starter", stages: Sequence[str] = STAGES,
                        methods: Sequence[str] = LESSON_METHODS, progress: bool = True,
                        log: Callable[[str], None] = print) -> dict:
    """Train and export the lessons' results (see the module docstring); returns the manifest.

    ``stages`` (in this order, each resumable): ``methods-seed42`` (the eight methods, seed 42), ``prune`` (notebook
    03's scores, sweep and rewinding), ``fewshot`` (notebook 05), ``methods-seed1``, ``methods-seed2``, ``quick``
    (the short schedules the lessons' ``TRAIN="quick"`` is chosen from, on validation), ``backbones-seed42`` / ``1`` /
    ``2`` (notebook 06: the methods of :data:`OTHER_BACKBONES` on the other starter backbones), ``costs`` (every
    method's cost, ``costs.json``; run it alone, so that nothing else shares the cores while it times), ``zoo-search``
    (the settings of :data:`ZOO_METHODS` on validation, ``zoo_search.json``; ``methods`` picks some). Two
    processes may run different stages side by side into the same ``out`` and ``work``.
    """
    unknown = [s for s in stages if s not in STAGES and not SEEDED_STAGE.fullmatch(s)]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {list(STAGES)} (or methods-seedN / "
                         "backbones-seedN for seed N).")
    strange = [m for m in methods if m not in LESSON_METHODS + ZOO_METHODS]
    if strange:
        raise ValueError(f"unknown method(s) {strange}; choose from {list(LESSON_METHODS + ZOO_METHODS)}.")
    cfg = load_run_config(config) if isinstance(config, str) else config
    out, work = Path(out), Path(work)
    command = _command()
    for stage in sorted(dict.fromkeys(stages), key=lambda s: STAGES.index(s) if s in STAGES else len(STAGES)):
        started = time.perf_counter()
        log(f"lesson-results: stage {stage}")
        seeded = SEEDED_STAGE.fullmatch(stage)
        if seeded:
            seed = int(seeded[2])
            runs = ([(STARTER_BACKBONE, m) for m in methods] if seeded[1] == "methods" else
                    [(b, m) for b, chosen in OTHER_BACKBONES.items() for m in chosen if m in methods])
            for backbone, method in runs:
                on = cfg.replace(backbone={"name": backbone})
                run_cfg = method_config_for(on, method, seed, runs_dir(work, backbone))
                record = _exported(run_cfg, out) or _train(run_cfg, progress)
                _export_run(run_cfg, record, out, command)
                log(f"  {backbone} {run_name(method, seed)}: test {100 * record['test_acc']:.1f}%")
        elif stage == "prune":
            _prune(cfg, work, out, command, progress)
        elif stage == "fewshot":
            _fewshot(cfg, work, out, progress)
        elif stage == "quick":
            _quick(cfg, work, out, progress)
        elif stage == "zoo-search":
            _zoo_search(cfg, work, out, [m for m in methods if m in ZOO_METHODS] or ZOO_METHODS, progress, log)
        elif stage == "costs":
            from ..methods import METHODS
            from .costs import measure_method_costs

            write_json(out / "costs.json", measure_method_costs(cfg, list(METHODS), progress=progress,
                                                                command=command))
        manifest = _manifest(out, command, stage, time.perf_counter() - started)
    log(f"lesson-results: {manifest['total_bytes'] / 1024:.0f} KB in {out}")
    return manifest



# ---------------------------------------------------------------------------------------------------------------
# Reading them in a lesson: TRAIN = "shipped" | "quick" | "full"
# ---------------------------------------------------------------------------------------------------------------

TRAIN_MODES = ("auto", "shipped", "quick", "full")
QUICK_METHOD = "e2vpt"
QUICK_BUDGET_S = 120  # "quick" trains one method live in about 2 minutes on 2 idle CPU cores
# "quick": the quick method's schedule: of QUICK_CANDIDATES (validation accuracy in the shipped quick.json), the
# longest whose training fits QUICK_BUDGET_S at the epoch time of benchmarks/results/threads_cpu.json
# (:func:`choose_quick_epochs`; tests/test_lesson_results.py checks the two agree).
QUICK_SCHEDULE = {"epochs": 15, "warmup_epochs": 1}


def choose_quick_epochs(rows: Sequence[dict], epoch_seconds: float, budget_s: float = QUICK_BUDGET_S) -> int:
    """The quick schedule's epochs: the longest candidate row (``{"epochs", "val_acc", ...}`` from ``quick.json``)
    whose training takes at most ``budget_s`` at ``epoch_seconds`` per epoch; the shortest when none fits. Longer
    schedules reach higher validation accuracy on the starter, so the budget decides."""
    fitting = [r["epochs"] for r in rows if r["epochs"] * epoch_seconds <= budget_s]
    return max(fitting) if fitting else min(r["epochs"] for r in rows)


def shipped_manifest(root: Union[str, Path] = SHIPPED_DIR) -> Optional[dict]:
    """The shipped results' manifest, or None when none ship."""
    path = Path(root) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def lesson_costs(cfg: RunConfig, methods: Sequence[str], mode: str, root: Union[str, Path] = SHIPPED_DIR,
                 progress: bool = True) -> dict:
    """Notebook 04's cost file for ``methods``: the shipped ``costs.json`` (its rows for ``methods``) in the
    ``"shipped"`` and ``"quick"`` modes, else measured now with ``cfg`` (:func:`~.costs.measure_method_costs`; the
    shipped manifest's ``stage_seconds["costs"]`` says how long every method took on the starter's CPU)."""
    from .costs import measure_method_costs

    path = Path(root) / "costs.json"
    if mode in ("shipped", "quick") and path.is_file():
        costs = json.loads(path.read_text())
        return {**costs, "rows": [r for r in costs["rows"] if r["method"] in methods]}
    return measure_method_costs(cfg, list(methods), progress=progress)


def shipped_seeds(method: str, root: Union[str, Path] = SHIPPED_DIR, backbone: str = STARTER_BACKBONE) -> list[int]:
    """The training seeds that ship a record of ``method`` on ``backbone``, in :data:`SEEDS` order."""
    return [s for s in SEEDS if (runs_dir(root, backbone) / f"{run_name(method, s)}.json").is_file()]


def choose_train_mode(cfg: RunConfig, train: str = "auto", root: Union[str, Path] = SHIPPED_DIR) -> tuple[str, str]:
    """The lesson's ``TRAIN`` parameter resolved: ``("shipped" | "quick" | "full", a one-line note for the reader)``.

    ``"auto"`` is ``"shipped"`` on the offline starter on a CPU with the shipped schedule, else ``"full"`` (a GPU,
    real CUB, another backbone or schedule: train). ``"shipped"`` and ``"quick"`` need the starter's shipped results
    and settings; asked for elsewhere they stop with one line saying what to set instead.
    """
    from ..notebook import LessonSettingsError

    if train not in TRAIN_MODES:
        raise LessonSettingsError(f"TRAIN={train!r} is not a mode; use one of {', '.join(map(repr, TRAIN_MODES))}.")
    reason = _shipped_mismatch(cfg, root)
    if train == "auto":
        on_gpu = cfg.train.resolve_device().type == "cuda"
        train = "full" if reason or on_gpu else "shipped"
        if train == "full":
            return train, f"TRAIN='auto' trains here ({'a GPU is present' if on_gpu else reason})."
    if train in ("shipped", "quick") and reason:
        raise LessonSettingsError(f"TRAIN={train!r} needs the shipped starter results, but {reason}; set "
                                  "TRAIN='full' to train with these settings.")
    if train == "full":  # nothing shipped is read: also for backbones and data that have no shipped runs
        return train, "TRAIN='full': every method trains now with these settings (finished runs are read back)."
    seeds = shipped_seeds(QUICK_METHOD, root, cfg.backbone.name)
    epochs = json.loads((runs_dir(root, cfg.backbone.name) / f"{run_name(QUICK_METHOD, SEEDS[0])}.json").read_text()
                        )["epochs"]
    notes = {
        "shipped": f"TRAIN='shipped': the runs shipped with the package ({epochs} epochs): seed {seeds[0]}'s prompts "
                   "evaluated now on the test split, the mean ± sd of seeds "
                   f"{', '.join(map(str, seeds))} from their records; the curves are their recorded training histories.",
        "quick": f"TRAIN='quick': {QUICK_METHOD} trains now for {QUICK_SCHEDULE['epochs']} epochs; the other methods "
                 f"are the shipped {epochs}-epoch runs (seed {seeds[0]} evaluated now).",
    }
    return train, notes[train]


def _shipped_mismatch(cfg: RunConfig, root: Union[str, Path]) -> Optional[str]:
    """Why the shipped results do not fit ``cfg`` (one clause), or None when they do."""
    manifest = shipped_manifest(root)
    if manifest is None:
        return "no shipped results are installed"
    if not cfg.data.synthetic or cfg.backbone.name not in (STARTER_BACKBONE, *OTHER_BACKBONES):
        return (f"the shipped runs are the offline starter's, on {', '.join((STARTER_BACKBONE, *OTHER_BACKBONES))} "
                f"(this lesson uses {cfg.backbone.name} on {cfg.data.root})")
    path = runs_dir(root, cfg.backbone.name) / f"{run_name(QUICK_METHOD, SEEDS[0])}.json"
    if not path.is_file():
        return f"the shipped results in {root} lack {path.name}"
    record = json.loads(path.read_text())
    shipped, here = record["config"], cfg.with_presets(QUICK_METHOD).to_dict()
    for key in ("epochs", "warmup_epochs", "batch_size"):
        if shipped["train"][key] != here["train"][key]:
            return f"they were trained with train.{key}={shipped['train'][key]}, not {here['train'][key]}"
    return None


def _replay(callback: Optional[Callable], history: Sequence[dict]) -> None:
    """Feed a finished run's recorded history to an epoch callback (the live curves then show it too)."""
    if callback is not None:
        for record in history:
            callback(record, None)


def _shipped_run(cfg: RunConfig, method: str, loaders: dict, root: Path, device: torch.device,
                 bar: Optional["tqdm"] = None) -> dict:
    """One method's shipped runs: the first shipped seed's prompts evaluated now on the test split (with its model),
    plus every shipped seed's recorded test accuracy and their mean and sd (``seed_test_acc`` / ``mean_test_acc`` /
    ``sd_test_acc``: read from the records, which a slow test checks against evaluating every shipped file)."""
    from ..tables import mean_std
    from ..training import evaluate

    backbone, runs = cfg.backbone.name, runs_dir(root, cfg.backbone.name)
    seeds = shipped_seeds(method, root, backbone)
    if not seeds:
        raise FileNotFoundError(f"no shipped run of {method!r} in {runs}; shipped methods: "
                                f"{[m for m in LESSON_METHODS if shipped_seeds(m, root, backbone)]}.")
    records = {s: json.loads((runs / f"{run_name(method, s)}.json").read_text()) for s in seeds}
    seed, record = seeds[0], records[seeds[0]]
    tensors = runs / f"{run_name(method, seed)}.safetensors"
    model, acc, test, evaluated = None, record["test_acc"], None, tensors.is_file()
    if evaluated:
        model = load_prompts(build_model(method_config_for(cfg, method, seed, "."), len(record["per_class_acc"])),
                             tensors).to(device)
        test = evaluate(model, loaders["test"])
        acc, record = test["acc"], {**record, "per_class_acc": test["per_class_acc"]}
    if bar is not None:
        bar.update()
    per_seed = {s: r["test_acc"] for s, r in records.items()}
    mean, sd = mean_std(list(per_seed.values()))
    return {**record, "model": model, "test_acc": acc, "test_metrics": test,
            "recorded_test_acc": records[seed]["test_acc"], "evaluated": evaluated, "source": "shipped", "seed": seed, "seed_test_acc": per_seed,
            "mean_test_acc": mean, "sd_test_acc": sd}


def lesson_runs(cfg: RunConfig, methods: Sequence[str], train: str = "auto", out_dir: Union[str, Path] = "results",
                callback_for: Optional[Callable[[str], Callable]] = None,
                root: Union[str, Path] = SHIPPED_DIR, progress: bool = True) -> list[dict]:
    """The runs a lesson shows, one dict per method in the form of :func:`~.run.train_run`'s result (``method``,
    ``model``, ``test_acc``, ``history``, ``parameters``, ``per_class_acc``, ``config``) plus ``source`` ("shipped"
    or "trained"), ``evaluated`` (False: a shipped record read, not computed: ``full`` and ``partial``, whose tuned
    weights do not ship, and then ``model`` is None), ``test_metrics`` (:func:`~e2vpt_viz.training.evaluate`'s result on
    the test split, when this call computed it, else None) and, for shipped runs, ``seed_test_acc`` / ``mean_test_acc`` /
    ``sd_test_acc``: the shipped seeds' recorded accuracies (the first seed's is also computed now: ``test_acc``).

    ``train`` as in :func:`choose_train_mode`; a method with no shipped run is left out, with one printed line
    naming it. Trained runs go to ``out_dir/<method>-<settings digest>``: other
    settings train in a folder of their own, and a finished run is read back, not retrained. ``callback_for(method)``
    gets every run's epochs, live while training, and the recorded history of shipped and finished runs.
    ``progress``: a bar over the shipped runs being evaluated (the live curves show training).
    """
    from ..training import evaluate

    mode, _ = choose_train_mode(cfg, train, root)
    root = Path(root)
    loaders = prepare_data(cfg, cfg.train.batch_size, seed=cfg.train.seed)
    device = cfg.train.resolve_device()
    shipped_methods = [m for m in methods if mode == "shipped" or (mode == "quick" and m != QUICK_METHOD)]
    missing = [m for m in shipped_methods if not shipped_seeds(m, root, cfg.backbone.name)]
    shipped_methods = [m for m in shipped_methods if m not in missing]
    bar = tqdm(total=len(shipped_methods), desc="shipped runs evaluated",
               disable=not (progress and shipped_methods))
    results = []
    for method in (m for m in methods if m not in missing):
        callback = callback_for(method) if callback_for else None
        if method in shipped_methods:
            result = _shipped_run(cfg, method, loaders, root, device, bar)
            _replay(callback, result["history"])
            results.append(result)
            continue
        run_cfg = cfg.with_presets(method)
        if mode == "quick":
            run_cfg = run_cfg.replace(train=QUICK_SCHEDULE)
        run_cfg = run_cfg.replace(output_dir=str(Path(out_dir) / f"{method}-{settings_digest(run_cfg)}"))
        done = finished_run(run_cfg)
        if done is not None:
            model = load_prompts(build_model(run_cfg, len(done["per_class_acc"])),
                                 Path(run_cfg.output_dir) / PROMPTS_FILE).to(device)
            test = evaluate(model, loaders["test"])
            _replay(callback, done["history"])
            result = {**done, "model": model, "test_acc": test["acc"], "per_class_acc": test["per_class_acc"],
                      "test_metrics": test}
        else:
            result = {**train_run(run_cfg, [callback] if callback else [], progress=False), "test_metrics": None}
        results.append({**result, "source": "trained", "evaluated": True})
    bar.close()
    if missing:
        print(f"Not in the shipped runs of {root}: {', '.join(missing)}; shown without them (TRAIN='full' trains "
              "them).")
    return results


# Notebook 06 on real data: the papers' supervised ViT-B/16 (the config's), then the backbones users ask for most.
REAL_BACKBONES = ("vit_base_patch14_reg4_dinov2.lvd142m", "vit_base_patch16_clip_224.openai", "vit_base_patch16_224.mae")


def lesson_backbones(cfg: RunConfig, backbones: Union[str, Sequence[str]] = "auto") -> list[str]:
    """Notebook 06's ``BACKBONES`` resolved: ``"auto"`` is the starter backbones (``starter-vit`` and
    :data:`OTHER_BACKBONES`) on the offline starter, and on real data the config's backbone (supervised ViT-B/16)
    followed by :data:`REAL_BACKBONES` (DINOv2 with registers, CLIP, MAE); a list of names is checked and kept."""
    from ..backbones import check_backbone_name
    from ..notebook import LessonSettingsError

    if isinstance(backbones, str) and backbones != "auto":
        raise LessonSettingsError(f"BACKBONES={backbones!r}: give 'auto' or a list of names, e.g. "
                                  f"['starter-vit', 'starter-vit-reg4'] or ['vit_base_patch16_224.orig_in21k', ...].")
    if backbones == "auto":
        return ([STARTER_BACKBONE, *OTHER_BACKBONES] if cfg.data.synthetic
                else list(dict.fromkeys([cfg.backbone.name, *REAL_BACKBONES])))
    for name in backbones:
        check_backbone_name(name)
    return list(backbones)


RUNS_COLUMNS = ("method", "test acc (%), computed now", "mean ± sd over seeds (%), recorded", "tunable params",
                "tunable (%)", "where it comes from")


def runs_markdown(results: Sequence[dict]) -> str:
    """:func:`lesson_runs`' results as a Markdown table: the accuracy computed now (or read, for the records that ship
    without tensors, marked so), the mean ± sd of the shipped seeds' records, parameter counts and the source of each
    row; a first column names the backbone when the rows come from more than one."""
    from ..tables import markdown_table

    backbones = [r["config"]["backbone"]["name"] for r in results]
    several = len(set(backbones)) > 1
    rows = []
    for backbone, r in zip(backbones, results):
        now = f"{100 * r['test_acc']:.1f}" + ("" if r.get("evaluated", True) else " (read from the record)")
        seeds = r.get("seed_test_acc")
        spread = (f"{100 * r['mean_test_acc']:.1f} ± {100 * r['sd_test_acc']:.1f} (seeds {', '.join(map(str, seeds))})"
                  if seeds else "one run")
        source = (f"shipped, seed {r['seed']}" if r.get("source") == "shipped"
                  else f"trained here, {r['epochs']} epochs, seed {r['config']['train']['seed']}")
        rows.append((*([backbone] if several else []), r["method"], now, spread, f"{r['parameters']['tunable']:,}",
                     f"{r['parameters']['tunable_pct']:.2f}", source))
    return markdown_table((*(["backbone"] if several else []), *RUNS_COLUMNS), rows)


def search_cells(entry: dict, accuracy: Sequence[str] = ("val_acc", "test_acc")) -> str:
    """One method's settings search (a ``zoo_search.json`` entry) in one cell: ``lr <base lr>: <accuracy %> / ...``
    per searched lr, ``; ``-separated, the chosen lr in bold, an lr rejected at the full schedule with its evidence."""
    chosen = entry["chosen"]["train.base_lr"]
    rejected = {d["base_lr"]: d for d in entry.get("diverged", [])}
    cells = []
    for run in entry["runs"]:
        cell = f"lr {run['base_lr']:g}: " + " / ".join(f"{100 * run[k]:.1f}" for k in accuracy)
        if run["base_lr"] in rejected:
            d = rejected[run["base_lr"]]
            cell += (f" (diverged at {d['epochs']} epochs: train acc {100 * d['best_train_acc']:.0f}% at epoch "
                     f"{d['best_epoch']}, {100 * d['last_train_acc']:.0f}% at the end)")
        cells.append(f"**{cell}**" if run["base_lr"] == chosen else cell)
    return "; ".join(cells)


def method_settings_markdown(cfg: RunConfig, methods: Sequence[str], root: Union[str, Path] = SHIPPED_DIR) -> str:
    """The settings each of ``methods`` trains with in a lesson (the run config's ``compare`` presets over its
    ``train`` section) and where the lr comes from: on the starter, a zoo method whose options and lr are those the
    settings search in ``root/zoo_search.json`` chose shows that search's validation accuracy per lr (the choice in
    bold); the eight lesson methods' starter settings come from the calibration."""
    from ..tables import markdown_table

    path = Path(root) / "zoo_search.json"
    starter = cfg.data.synthetic and cfg.backbone.name == STARTER_BACKBONE
    search = json.loads(path.read_text()) if path.is_file() and starter else {"methods": {}}
    rows = []
    for method in methods:
        run = cfg.with_presets(method)
        options = [f"{k.split('.', 1)[1]} {v}" for k, v in cfg.compare.get(method, {}).items() if k.startswith("method.")]
        train = f"{run.train.optimizer}, base lr {run.train.base_lr:g}, weight decay {run.train.weight_decay:g}"
        entry = search["methods"].get(method)
        if entry and entry["method"] == run.to_dict()["method"] and \
                entry["chosen"] == search_settings(run.to_dict()["train"]):
            origin = (f"validation search, {search['schedule']['epochs']} epochs, val acc (%): "
                      + search_cells(entry, ("val_acc",)))
        elif starter and method in LESSON_METHODS:
            origin = "the starter's calibration on validation (`docs/calibration.md`)"
        elif method in cfg.compare:
            origin = "the run config's `compare` section"
        else:
            origin = f"no `compare` preset: the run config's own `train` settings (those of {cfg.method_name})"
        rows.append((method, ", ".join(options) or "defaults", train, origin))
    return markdown_table(("method", "options (others: the method's defaults)", "training", "where the lr comes from"),
                          rows)


def lesson_rewinding(cfg: RunConfig, mode: str, scores: pruning.ImportanceScores, loaders: dict,
                     num_tokens: Sequence[int] = REWIND_TOKENS, num_segments: Sequence[int] = REWIND_SEGMENTS,
                     out_dir: Union[str, Path] = "results", root: Union[str, Path] = SHIPPED_DIR) -> dict:
    """Notebook 03's rewinding: ``{"runs", "best", "model", "source"}`` with ``model`` the chosen candidate.

    ``mode="shipped"`` or ``"quick"``: the shipped candidates (trained from the shipped seed-42 E²VPT run's scores;
    their records are read) and the chosen one's prompts, evaluated now (``best["test_acc"]`` is computed here,
    ``best["recorded_test_acc"]`` is the record's). ``"full"``: every candidate trains now under
    ``out_dir/rewind-<settings digest>`` (resumable), as :func:`~e2vpt_viz.pruning.prune_and_rewind`.
    """
    from ..notebook import LessonSettingsError
    from ..training import evaluate

    root = Path(root)
    base = cfg.with_presets("e2vpt")
    num_classes = loaders["train"].dataset.num_classes
    if mode == "full":
        out = Path(out_dir) / f"rewind-{settings_digest(base)}"
        rewind = pruning.prune_and_rewind(lambda: build_model(base, num_classes), loaders["train"], loaders["val"],
                                          replace(base.train, progress=False), scores, out, num_tokens, num_segments,
                                          test_loader=loaders["test"], progress=True)
        model = load_prompts(build_model(base, num_classes), Path(rewind["best_dir"]) / PROMPTS_FILE)
        return {"runs": rewind["runs"], "best": rewind["best"], "model": model, "source": "trained"}
    if not (root / "prune" / "rewind.json").is_file():
        raise LessonSettingsError(f"the shipped runs in {root} hold no rewinding candidates; set TRAIN='full' to "
                                  "train them here.")
    shipped = json.loads((root / "prune" / "rewind.json").read_text())
    pairs = sorted({(r["num_tokens"], r["num_segments"]) for r in shipped["runs"]})
    if pairs != sorted((t, s) for t in num_tokens for s in num_segments):
        raise LessonSettingsError(
            f"the shipped rewinding tried tokens {sorted({t for t, _ in pairs})} x segments "
            f"{sorted({s for _, s in pairs})}; set REWIND_TOKENS / REWIND_SEGMENTS to those, or TRAIN='full' to "
            "train these candidates.")
    model = load_prompts(build_model(base.replace(train={"seed": PRUNE_SEED}), num_classes),
                         root / "prune" / "best.safetensors").to(cfg.train.resolve_device())
    acc = evaluate(model, loaders["test"])["acc"]
    best = {**shipped["best"], "test_acc": acc, "recorded_test_acc": shipped["best"]["test_acc"]}
    return {"runs": shipped["runs"], "best": best, "model": model, "source": "shipped"}


def lesson_few_shot(cfg: RunConfig, prompts: Union[str, Path], mode: str, shots: Sequence[int] = FEW_SHOTS,
                    seeds: Sequence[int] = FEW_SHOT_SEEDS, epochs: int = FEW_SHOT_EPOCHS,
                    root: Union[str, Path] = SHIPPED_DIR) -> dict:
    """Notebook 05's few-shot comparison: ``{"rows", "source", "prompts", "epochs"}``.

    ``"full"``: every (shots, seed, initialisation) run trains now (:func:`~.fewshot.few_shot_comparison`, with a
    progress bar per run). ``"shipped"`` / ``"quick"``: the shipped rows, read (instant);
    :func:`few_shot_row_now` then trains one of them again.
    """
    from ..notebook import LessonSettingsError

    if mode == "full":
        rows = few_shot_comparison(cfg, prompts, shots, seeds, epochs, progress=True)
        return {"rows": rows, "source": "trained", "prompts": str(prompts), "epochs": epochs}
    shipped = json.loads((Path(root) / "fewshot.json").read_text())
    if Path(prompts).name != shipped["prompts"] or epochs != shipped["epochs"]:
        raise LessonSettingsError(f"the shipped few-shot runs used {shipped['prompts']} for {shipped['epochs']} "
                                  "epochs; set PROMPTS='auto' and EPOCHS to that, or TRAIN='full' to train yours.")
    rows = [r for r in shipped["rows"] if r["shots"] in shots]
    return {"rows": rows, "source": "shipped", "prompts": str(prompts), "epochs": epochs}


def few_shot_row_now(cfg: RunConfig, few_shot: dict, seed: int = FEW_SHOT_SEEDS[0]) -> dict:
    """The first row's shot count and ``seed``, both initialisations, trained now (a progress bar per run) to set
    beside :func:`lesson_few_shot`'s row: the same runs, so the same accuracies up to CPU arithmetic. Rows that were
    trained now (``"full"``) are returned as they are. ``{"shots", "random": [acc], "pvp": [acc], ...}``."""
    first = few_shot["rows"][0]
    if few_shot["source"] == "trained":
        return first
    return few_shot_comparison(cfg, few_shot["prompts"], shots=[first["shots"]], seeds=[seed],
                               epochs=few_shot["epochs"], progress=True)[0]
