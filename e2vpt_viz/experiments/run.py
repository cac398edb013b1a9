"""Runs described by a run config (:class:`~e2vpt_viz.experiments.config.RunConfig`: data + backbone + method +
training), as used by the CLI and the notebooks.

Configs are parsed once by :func:`~e2vpt_viz.experiments.config.load_run_config` (packaged name, YAML path, dict,
``section.field=value`` overrides) and passed around as objects; a run that needs other settings makes a copy with
``cfg.replace(train={"base_lr": lr}, output_dir=...)``.
"""
from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch

from . import distributed as dist
from .config import RunConfig, load_run_config, packaged_configs  # noqa: F401 (load_run_config is read from here too)
from ..checkpoint import load_prompts, write_json
from ..data import DatasetLayoutError, FGVCDataset, check_readable, loader_splits, make_loaders
from ..methods import apply_prompts, count_parameters
from ..model import PromptedViT
from ..run_folder import owning
from ..self_prompt import init_prompts_from_data
from ..training import PROMPTS_FILE, TrainConfig, evaluate, fit
from .. import pruning


def prepare_data(cfg: RunConfig, batch_size: int, seed: int) -> dict:
    """Train / val / test loaders; generates the synthetic starter dataset first when asked to and missing
    (a stale one is used with a warning).

    With ``data.on_device`` (default "auto": when training on CUDA) the images are decoded once and kept on the
    training device (:func:`~e2vpt_viz.experiments.device_data.make_device_loaders`); a dataset over the memory budget falls
    back to DataLoaders with a logged note. Under torchrun each process gets its share of every batch.
    """
    data = cfg.data
    root = Path(data.root).expanduser()
    if data.synthetic:
        from data_prep.synthetic import ensure_synthetic

        if dist.is_main():
            try:
                ensure_synthetic(root, task="target", workers=1)  # in-process: safe from scripts and notebooks
            except OSError as error:  # a read-only or full location: say where and what to do, before any work
                raise DatasetLayoutError(
                    f"The offline starter dataset is generated at data.root={root} when missing, but it cannot be "
                    f"written there ({type(error).__name__}: {error.strerror or error}); set data.root to a folder "
                    "you can write, or generate it once with: python -m data_prep synthetic --root <folder>") from None
        dist.barrier()
    check_readable({role: FGVCDataset(root, split) for role, split in loader_splits(data.train_split).items()},
                   data.max_unreadable)
    preprocessing = data.preprocessing(cfg.backbone.name)
    device = dist.processes().device(cfg.train)
    shard = (dist.rank(), dist.world_size()) if dist.is_distributed() else None
    loaders = None
    if data.on_device is True or (data.on_device == "auto" and device.type == "cuda"):
        from .device_data import make_device_loaders

        loaders = make_device_loaders(root, data.crop_size, batch_size, seed, device, data.device_budget_mb,
                                      max(1, data.num_workers), shard, preprocessing, data.train_split)
    if loaders is None and shard is not None:
        loaders = dist.make_sharded_loaders(root, data.crop_size, batch_size, shard, data.num_workers, data.cache,
                                            seed, device.type == "cuda", preprocessing, data.train_split)
    if loaders is None:
        loaders = make_loaders(root, data.crop_size, batch_size, data.num_workers, data.cache, seed,
                               device.type == "cuda", preprocessing, data.train_split)
    for loader in loaders.values():
        loader.dataset.max_unreadable = data.max_unreadable  # the share evaluation may skip (see evaluate)
    return loaders


def build_model(cfg: RunConfig, num_classes: int) -> PromptedViT:
    """Backbone by name + the method's prompts; both random inits are drawn from the run's seed.

    Seeding before the backbone matters for ``pretrained=False``: the frozen random backbone is not in the prompt
    checkpoint, so ``eval`` must rebuild exactly the one that ``train`` used.
    """
    torch.manual_seed(cfg.train.seed)
    backbone = cfg.backbone.load(cfg.data.crop_size)
    torch.manual_seed(cfg.train.seed)
    return apply_prompts(backbone, cfg.method, num_classes)


def _held(folder: Path):
    """The run folder, owned by this process while it works there (the main process under torchrun)."""
    return owning(folder) if dist.is_main() else nullcontext()


def output_dir(cfg: RunConfig, default: str = "results/run") -> Path:
    """The run's output folder (``default`` when the config names none)."""
    return Path(cfg.output_dir or default)


def _setup(cfg: RunConfig, progress: bool) -> tuple[TrainConfig, dict, PromptedViT, Path]:
    """Training settings, loaders, model and output folder of a run config."""
    train_config = replace(cfg.train, progress=progress)
    loaders = prepare_data(cfg, train_config.batch_size, train_config.seed)
    model = build_model(cfg, loaders["train"].dataset.num_classes)
    return train_config, loaders, model, output_dir(cfg)


def train_run(cfg: RunConfig, callbacks: Sequence[Callable] = (), progress: bool = True) -> dict:
    """Train one run, evaluate on test, write ``metrics.json`` beside the checkpoints; resumes if interrupted.

    ``metrics.json`` (and the returned dict, plus ``model``) holds the config as a plain dict (``cfg.to_dict()``).
    """
    with _held(output_dir(cfg)):
        train_config, loaders, model, out = _setup(cfg, progress)
        if getattr(cfg.method, "prompt_init", "random") == "spt":  # Self-Prompt Tuning: prompts from the data's tokens
            model.to(dist.processes().device(cfg.train))  # under torchrun, DDP then starts every process from rank 0's
            init_prompts_from_data(model, loaders["train"], seed=train_config.seed)
        started = time.perf_counter()
        processes = dist.processes()
        history = fit(model, loaders["train"], loaders.get("val"), train_config, out, callbacks, processes)
        seconds = time.perf_counter() - started
        test = evaluate(model, loaders["test"], amp=train_config.amp, processes=processes)
        metrics = {"method": model.method_config.method_name(), "backbone": cfg.backbone.name,
                   "test_acc": test["acc"], "val_acc": history[-1].get("val_acc"), "train_seconds": seconds,
                   "epochs": len(history), "parameters": count_parameters(model),
                   "per_class_acc": test["per_class_acc"], "test_skipped": test["skipped"], "history": history,
                   "config": cfg.to_dict()}
        if dist.is_main():
            write_json(out / "metrics.json", metrics)
        return {**metrics, "model": model}


def finished_run(cfg: RunConfig) -> Optional[dict]:
    """The ``metrics.json`` of a run that already finished with exactly this config, else None (nothing is built).

    The stored config is parsed again before comparing, so one written with defaults left out still matches.
    """
    path = output_dir(cfg) / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    try:
        same = RunConfig.from_dict(metrics.get("config")) == cfg
    except ValueError:
        return None
    return metrics if same else None


def evaluate_run(cfg: RunConfig, checkpoint: Union[str, Path, None] = None, split: str = "test") -> dict:
    """Accuracy of the prompts saved by a run (default ``output_dir/prompts.safetensors``) on one split."""
    train_config, loaders, model, out = _setup(cfg, progress=False)
    if split not in loaders:
        raise ValueError(f"split {split!r}: this run trained on data.train_split={cfg.data.train_split}, which holds "
                         f"the validation images; evaluate {' or '.join(loaders)} instead.")
    load_prompts(model, checkpoint or out / PROMPTS_FILE)
    model.to(train_config.resolve_device())
    return evaluate(model, loaders[split], amp=train_config.amp)


def compare_methods(cfg: RunConfig, methods: Sequence[str], out_dir: Union[str, Path], progress: bool = True,
                    callback_for: Optional[Callable[[str], Callable]] = None) -> list[dict]:
    """Train several methods on the same data and backbone; per-method overrides come from the ``compare`` section.

    ``callback_for(method)`` may return an epoch callback per method (e.g. ``LiveCurves().callback``).
    """
    results = []
    for method in methods:
        run_cfg = cfg.with_presets(method).replace(output_dir=str(Path(out_dir) / method))
        callbacks = [callback_for(method)] if callback_for else []
        results.append(train_run(run_cfg, callbacks, progress=progress))
    return results


def choose_run_config(dataset: str = "auto", data_dir: Union[str, Path] = "data",
                      backbone: str = "auto", epochs: Optional[int] = None,
                      device: str = "auto") -> tuple[RunConfig, str]:
    """The notebooks' switch between real CUB + a pre-trained ViT-B/16 and the offline starter.

    Args:
        dataset: "cub", "starter", or "auto" (CUB when ``data_dir/CUB_200_2011`` holds a prepared split, else the
            starter, generated at ``data_dir/starter`` if missing).
        backbone: a timm ViT name, or "auto" (the config's: ViT-B/16 IN-21k for CUB, ``starter-vit`` offline).
        epochs: shorten the schedule (warm-up shrinks in proportion); None keeps the config's.

    Returns:
        (run config, a one-line note saying what was chosen and why).
    """
    if dataset not in ("auto", "cub", "starter"):
        raise ValueError(f"dataset must be 'auto', 'cub' or 'starter', got {dataset!r}.")
    cub_root, starter_root = Path(data_dir) / "CUB_200_2011", Path(data_dir) / "starter"
    if dataset == "cub" or (dataset == "auto" and (cub_root / "train.json").is_file()):
        cfg = load_run_config("cub_e2vpt").replace(data={"root": str(cub_root)})
        note = f"Real CUB-200-2011 from {cub_root}."
    else:
        cfg = load_run_config("starter").replace(data={"root": str(starter_root)})
        note = ("Offline starter: synthetic fine-grained birds and a tiny ViT pre-trained on other species "
                f"(no prepared CUB at {cub_root}; `python -m data_prep cub --root {cub_root}` prepares it).")
    cfg = cfg.replace(backbone={"name": backbone} if backbone != "auto" else {},
                      train={"device": device, **({"epochs": epochs} if epochs is not None else {})})
    return cfg, note + f" Backbone: {cfg.backbone.name}."


def grid_search(cfg: RunConfig, base_lrs: Sequence[float], weight_decays: Sequence[float], out_dir: Union[str, Path],
                progress: bool = False, select: str = "last") -> dict:
    """The papers' lr x wd grid: train each pair, pick the best validation accuracy (ties: smaller lr).

    ``select="last"``: last-epoch validation accuracy (VPT's VTAB script); ``"best"``: the best validation accuracy of
    any epoch (E²VPT's released FGVC script).

    Returns ``{"best": {"base_lr", "weight_decay", "val_acc", "best_val_acc", "test_acc", "output_dir"},
    "runs": [...]}``; each run keeps its checkpoint under ``out_dir/lr{lr}_wd{wd}``, so an interrupted search resumes,
    and a finished run (its ``metrics.json`` made with the same config) is read back without training.
    """
    if select not in ("last", "best"):
        raise ValueError(f"select must be 'last' or 'best', got {select!r}.")
    runs = []
    for lr in base_lrs:
        for wd in weight_decays:
            run_cfg = cfg.replace(train={"base_lr": lr, "weight_decay": wd},
                                  output_dir=str(Path(out_dir) / f"lr{lr}_wd{wd}"))
            result = finished_run(run_cfg) or train_run(run_cfg, progress=progress)
            runs.append({"base_lr": lr, "weight_decay": wd, "val_acc": result["val_acc"],
                         "best_val_acc": max(r.get("val_acc", float("-inf")) for r in result["history"]),
                         "test_acc": result["test_acc"], "output_dir": run_cfg.output_dir})
    key = "val_acc" if select == "last" else "best_val_acc"
    best = max(runs, key=lambda r: (r[key], -r["base_lr"]))
    return {"best": best, "runs": runs, "select": select}


def check_prunable(cfg: RunConfig) -> None:
    """Refuse, before any training, a prune run that cannot work: a method without pruning masks, or candidate
    budgets that would remove every prompt or every segment, or training on train + val (nothing left to choose
    the budgets on)."""
    if cfg.data.train_split != "train":
        raise pruning.PruningError(
            f"prune chooses its budgets on the validation split, but data.train_split={cfg.data.train_split} trains "
            "on it; prune with data.train_split=train (VTAB-1k: train800 / val200) and train the final runs on "
            "trainval with the chosen budgets, as `reproduce` does.")
    method = cfg.method
    if not getattr(method, "masks", False):
        raise pruning.PruningError(
            f"prune needs E²VPT with masks; method {method.method_name()!r} has none. Use --config with "
            "method.name=e2vpt (method.masks=true, the default).")
    limits = {"num_tokens": method.num_prompts, "num_segments": pruning.NUM_SEGMENTS}
    for name, limit in limits.items():
        impossible = [n for n in (getattr(cfg.prune, name) or []) if n >= limit]
        if impossible:
            raise pruning.PruningError(
                f"prune.{name} {impossible} would remove all {limit} "
                f"{'prompts' if name == 'num_tokens' else 'segments'}; give counts in [0, {limit - 1}].")


def prune_run(cfg: RunConfig, progress: bool = True) -> dict:
    """The E²VPT protocol end to end, resumable at every stage, under ``output_dir``:

    1. ``before_pruning/``: train with masks (as :func:`train_run`);
    2. ``scores.json``: importance scores on the training split, one pass;
    3. ``sweep.json``: instant pruning at ``sweep_ratios`` on test (what the notebook's slider reads);
    4. ``rewind/``: a fresh model trained under each candidate pair of frozen masks, the best chosen on validation;
    5. ``prune.json``: the chosen budgets and test accuracy before pruning, after instant pruning and after rewinding.
    """
    check_prunable(cfg)
    out = output_dir(cfg, "results/prune")
    with _held(out):
        prune_cfg = cfg.prune
        before = train_run(cfg.replace(output_dir=str(out / "before_pruning")), progress=progress)
        model = before["model"]
        train_config = replace(cfg.train, progress=progress)
        loaders = prepare_data(cfg, train_config.batch_size, train_config.seed)
        scores_path = out / "scores.json"
        if scores_path.exists():
            scores = pruning.ImportanceScores.from_dict(json.loads(scores_path.read_text()))
        else:
            scores = pruning.importance_scores(model, loaders["train"], prune_cfg.score, progress=progress)
            write_json(scores_path, scores.to_dict(), indent=None)
        sweep = pruning.pruning_sweep(model, loaders["test"], prune_cfg.sweep_ratios, scores=scores,
                                      progress=progress)
        sweep.save(out / "sweep.json")
        num_classes = loaders["train"].dataset.num_classes
        rewind = pruning.prune_and_rewind(lambda: build_model(cfg, num_classes), loaders["train"], loaders["val"],
                                          train_config, scores, out / "rewind", prune_cfg.num_tokens,
                                          prune_cfg.num_segments, test_loader=loaders["test"], progress=progress)
        best_model = build_model(cfg, num_classes)
        load_prompts(best_model, Path(rewind["best_dir"]) / PROMPTS_FILE)
        pruning.set_masks(best_model, best_model.token_mask.detach().clone(),
                          best_model.segment_mask.detach().clone())
        best_model.to(train_config.resolve_device())
        best = rewind["best"]
        instant_masks = pruning.pruning_masks(scores, best["num_tokens"], best["num_segments"])
        with pruning.instantly_pruned(model, *instant_masks):
            instant_acc = evaluate(model, loaders["test"], amp=train_config.amp)["acc"]
        summary = {"method": model.method_config.method_name(), "score": prune_cfg.score,
                   "before": {"test_acc": before["test_acc"], "parameters": before["parameters"]},
                   "best_budgets": {"num_tokens": best["num_tokens"], "num_segments": best["num_segments"]},
                   "instant_test_acc": instant_acc,
                   "rewound": {"test_acc": best["test_acc"],  # measured by prune_and_rewind right after training
                               "val_acc": best["val_acc"], "parameters": count_parameters(best_model)},
                   "rewind_runs": rewind["runs"], "config": cfg.to_dict()}
        write_json(out / "prune.json", summary)
        return {**summary, "model": best_model, "sweep": sweep}
