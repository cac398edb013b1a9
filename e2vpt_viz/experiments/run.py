"""Runs described by a YAML config: data + backbone + method + training, as used by the CLI and the notebooks.

A run config has the sections ``data``, ``backbone``, ``method``, ``train`` and an ``output_dir``; packaged
configs are addressed by name (``starter``, ``cub_e2vpt``) or by path, and any field can be overridden with
``section.field=value`` (the value is parsed as YAML: ``train.epochs=5``, ``method.name=vpt-deep``).
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
import yaml

from . import distributed as dist
from ..backbones import load_backbone
from ..checkpoint import atomic_write, load_prompts
from ..data import make_loaders
from ..methods import apply_prompts, count_parameters, method_config
from ..model import PromptedViT
from ..training import PROMPTS_FILE, TrainConfig, evaluate, fit
from .. import pruning

CONFIG_DIR = Path(__file__).parent / "configs"
SECTIONS = ("data", "backbone", "method", "train", "output_dir", "compare", "prune")


@dataclass
class DataConfig:
    """Where the images are and how to read them.

    Attributes:
        root: FGVC root with train/val/test.json.
        synthetic: generate the offline starter dataset at ``root`` if it is missing.
        crop_size: model input size (224 for ViT-B/16, 64 for the starter).
        cache: keep decoded images in memory. num_workers: DataLoader workers (decoding threads on the device path).
        on_device: keep the decoded images on the training device and augment there
            (:mod:`e2vpt_viz.experiments.device_data`): "auto" (when training on CUDA), true (also on the CPU) or false.
        device_budget_mb: most memory the images may take on the device (default: half of what is free); a dataset
            that needs more falls back to the DataLoader path with a note.
    """

    root: str
    synthetic: bool = False
    crop_size: int = 224
    cache: bool = False
    num_workers: int = 4
    on_device: Union[str, bool] = "auto"
    device_budget_mb: Optional[float] = None

    def __post_init__(self) -> None:
        if self.on_device not in ("auto", True, False):
            raise ValueError(f"data.on_device must be auto, true or false, got {self.on_device!r}.")
        if self.device_budget_mb is not None and not (isinstance(self.device_budget_mb, (int, float))
                                                      and self.device_budget_mb >= 0):
            raise ValueError(f"data.device_budget_mb must be a number of MB >= 0 or null, got {self.device_budget_mb!r}.")


def packaged_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _set_dotted(cfg: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = cfg
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"Override {dotted!r}: {key!r} is not a section.")
    node[keys[-1]] = value


def _scaled_warmup(train: dict, epochs) -> int:
    """The warm-up for a schedule changed to ``epochs``: the same fraction of it, below ``epochs``."""
    if not isinstance(epochs, int) or not isinstance(train.get("epochs"), int) or train["epochs"] < 1:
        return train["warmup_epochs"]  # TrainConfig reports the bad value
    return max(0, min(epochs - 1, round(train["warmup_epochs"] * epochs / train["epochs"])))


def load_run_config(config: Union[str, Path, dict], overrides: Sequence[str] = ()) -> dict:
    """A run config from a packaged name, a YAML path or a dict, with ``section.field=value`` overrides applied.

    ``train.epochs=N`` without ``train.warmup_epochs`` keeps the warm-up's share of the schedule (the starter's
    100 epochs with 10 of warm-up become 30 with 3).
    """
    if isinstance(config, dict):
        cfg = copy.deepcopy(config)
    else:
        path = Path(config)
        if not path.is_file():
            path = CONFIG_DIR / f"{config}.yaml"
        if not path.is_file():
            raise ValueError(f"Config {config!r} is neither a file nor a packaged config ({packaged_configs()}).")
        cfg = yaml.safe_load(path.read_text()) or {}
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"Override {item!r} must look like section.field=value, e.g. train.epochs=5.")
        key, raw = item.split("=", 1)
        parsed.append((key.strip(), yaml.safe_load(raw)))
    # A new method name comes first and drops the old method's options (they belong to another method).
    parsed.sort(key=lambda kv: kv[0] not in ("method", "method.name"))
    keys = {key for key, _ in parsed}
    schedule = dict(cfg.get("train", {}))
    for key, value in parsed:
        if key == "method.name" and value != cfg.get("method", {}).get("name"):
            cfg["method"] = {}
        _set_dotted(cfg, key, value)
    if "train.epochs" in keys and "train.warmup_epochs" not in keys and "warmup_epochs" in schedule:
        cfg["train"]["warmup_epochs"] = _scaled_warmup(schedule, cfg["train"]["epochs"])
    unknown = sorted(set(cfg) - set(SECTIONS))
    missing = [s for s in ("data", "backbone", "method", "train") if s not in cfg]
    if unknown or missing:
        raise ValueError(f"Run config sections must be {list(SECTIONS)}; unknown {unknown}, missing {missing}.")
    DataConfig(**cfg["data"]), TrainConfig(**cfg["train"]), _method(cfg)  # validate every section now
    PruneConfig(**cfg.get("prune", {}))
    return cfg


def _method(cfg: dict):
    options = dict(cfg["method"])
    return method_config(options.pop("name"), **options)


def prepare_data(cfg: dict, batch_size: int, seed: int) -> dict:
    """Train / val / test loaders; generates the synthetic starter dataset first when asked to and missing
    (a stale one is used with a warning).

    With ``data.on_device`` (default "auto": when training on CUDA) the images are decoded once and kept on the
    training device (:func:`~e2vpt_viz.experiments.device_data.make_device_loaders`); a dataset over the memory budget falls
    back to DataLoaders with a logged note. Under torchrun each process gets its share of every batch.
    """
    data = DataConfig(**cfg["data"])
    root = Path(data.root).expanduser()
    if data.synthetic:
        from data_prep.synthetic import ensure_synthetic

        if dist.is_main():
            ensure_synthetic(root, task="target", workers=1)  # in-process: safe from scripts and notebooks
        dist.barrier()
    device = dist.processes().device(TrainConfig(**cfg["train"]))
    shard = (dist.rank(), dist.world_size()) if dist.is_distributed() else None
    if data.on_device is True or (data.on_device == "auto" and device.type == "cuda"):
        from .device_data import make_device_loaders

        loaders = make_device_loaders(root, data.crop_size, batch_size, seed, device, data.device_budget_mb,
                                      max(1, data.num_workers), shard)
        if loaders is not None:
            return loaders
    if shard is not None:
        return dist.make_sharded_loaders(root, data.crop_size, batch_size, shard, data.num_workers, data.cache, seed,
                                         pin_memory=device.type == "cuda")
    return make_loaders(root, data.crop_size, batch_size, data.num_workers, data.cache, seed,
                        pin_memory=device.type == "cuda")


def build_model(cfg: dict, num_classes: int) -> PromptedViT:
    """Backbone by name + the method's prompts; both random inits are drawn from the run's seed.

    Seeding before the backbone matters for ``pretrained=False``: the frozen random backbone is not in the prompt
    checkpoint, so ``eval`` must rebuild exactly the one that ``train`` used.
    """
    seed = cfg["train"].get("seed", 42)
    torch.manual_seed(seed)
    backbone = load_backbone(**cfg["backbone"])
    torch.manual_seed(seed)
    return apply_prompts(backbone, _method(cfg), num_classes)


def _setup(cfg: dict, progress: bool) -> tuple[TrainConfig, dict, PromptedViT, Path]:
    """Training settings, loaders, model and output folder of a run config."""
    train_config = TrainConfig(**{**cfg["train"], "progress": progress})
    loaders = prepare_data(cfg, train_config.batch_size, train_config.seed)
    model = build_model(cfg, loaders["train"].dataset.num_classes)
    return train_config, loaders, model, Path(cfg.get("output_dir") or "results/run")


def train_run(cfg: dict, callbacks: Sequence[Callable] = (), progress: bool = True) -> dict:
    """Train one run, evaluate on test, write ``metrics.json`` beside the checkpoints; resumes if interrupted."""
    train_config, loaders, model, out = _setup(cfg, progress)
    started = time.perf_counter()
    processes = dist.processes()
    history = fit(model, loaders["train"], loaders["val"], train_config, out, callbacks, processes)
    seconds = time.perf_counter() - started
    test = evaluate(model, loaders["test"], amp=train_config.amp, processes=processes)
    metrics = {"method": model.method_config.method_name(), "backbone": cfg["backbone"]["name"],
               "test_acc": test["acc"], "val_acc": history[-1].get("val_acc"), "train_seconds": seconds,
               "epochs": len(history), "parameters": count_parameters(model),
               "per_class_acc": test["per_class_acc"], "history": history, "config": cfg}
    if dist.is_main():
        atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=1)))
    return {**metrics, "model": model}


def finished_run(cfg: dict) -> Optional[dict]:
    """The ``metrics.json`` of a run that already finished with exactly this config, else None (nothing is built)."""
    path = Path(cfg.get("output_dir") or "results/run") / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    return metrics if metrics.get("config") == json.loads(json.dumps(cfg)) else None


def evaluate_run(cfg: dict, checkpoint: Union[str, Path, None] = None, split: str = "test") -> dict:
    """Accuracy of the prompts saved by a run (default ``output_dir/prompts.safetensors``) on one split."""
    train_config, loaders, model, out = _setup(cfg, progress=False)
    load_prompts(model, checkpoint or out / PROMPTS_FILE)
    model.to(train_config.resolve_device())
    return evaluate(model, loaders[split], amp=train_config.amp)


def compare_methods(cfg: dict, methods: Sequence[str], out_dir: Union[str, Path], progress: bool = True,
                    callback_for: Optional[Callable[[str], Callable]] = None) -> list[dict]:
    """Train several methods on the same data and backbone; per-method overrides come from the ``compare`` section.

    ``callback_for(method)`` may return an epoch callback per method (e.g. ``LiveCurves().callback``).
    """
    presets = cfg.get("compare", {})
    results = []
    for method in methods:
        overrides = [f"{k}={json.dumps(v)}" for k, v in presets.get(method, {}).items()]
        run_cfg = load_run_config(cfg, [f"method={json.dumps({'name': method})}", *overrides,
                                        f"output_dir={Path(out_dir) / method}"])
        callbacks = [callback_for(method)] if callback_for else []
        results.append(train_run(run_cfg, callbacks, progress=progress))
    return results


def choose_run_config(dataset: str = "auto", data_dir: Union[str, Path] = "data",
                      backbone: str = "auto", epochs: Optional[int] = None,
                      device: str = "auto") -> tuple[dict, str]:
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
        cfg = load_run_config("cub_e2vpt", [f"data.root={cub_root}"])
        note = f"Real CUB-200-2011 from {cub_root}."
    else:
        cfg = load_run_config("starter", [f"data.root={starter_root}"])
        note = ("Offline starter: synthetic fine-grained birds and a tiny ViT pre-trained on other species "
                f"(no prepared CUB at {cub_root}; `python -m data_prep cub --root {cub_root}` prepares it).")
    if backbone != "auto":
        cfg["backbone"]["name"] = backbone
    cfg["train"]["device"] = device
    return load_run_config(cfg, [f"train.epochs={epochs}"] if epochs is not None else []), \
        note + f" Backbone: {cfg['backbone']['name']}."


def grid_search(cfg: dict, base_lrs: Sequence[float], weight_decays: Sequence[float], out_dir: Union[str, Path],
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
            run_cfg = load_run_config(cfg, [f"train.base_lr={lr}", f"train.weight_decay={wd}",
                                            f"output_dir={Path(out_dir) / f'lr{lr}_wd{wd}'}"])
            result = finished_run(run_cfg) or train_run(run_cfg, progress=progress)
            runs.append({"base_lr": lr, "weight_decay": wd, "val_acc": result["val_acc"],
                         "best_val_acc": max(r.get("val_acc", float("-inf")) for r in result["history"]),
                         "test_acc": result["test_acc"], "output_dir": run_cfg["output_dir"]})
    key = "val_acc" if select == "last" else "best_val_acc"
    best = max(runs, key=lambda r: (r[key], -r["base_lr"]))
    return {"best": best, "runs": runs, "select": select}


@dataclass
class PruneConfig:
    """The ``prune`` section: E²VPT's pruning-and-rewinding protocol.

    Attributes:
        score: "signed" (official code) or "abs" (paper formula); see :func:`pruning.importance_scores`.
        num_tokens / num_segments: candidate budgets; None = the official lists for P and 16 segments.
        sweep_ratios: instant-pruning ratios evaluated on test for the slider.
    """

    score: str = "signed"
    num_tokens: Optional[list] = None
    num_segments: Optional[list] = None
    sweep_ratios: tuple = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

    def __post_init__(self) -> None:
        if self.score not in ("signed", "abs"):
            raise ValueError(f"prune.score must be 'signed' or 'abs', got {self.score!r}.")
        for name in ("num_tokens", "num_segments"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, list) or not value
                                      or not all(isinstance(v, int) and v >= 0 for v in value)):
                raise ValueError(f"prune.{name} must be a non-empty list of counts >= 0 (or null), got {value!r}.")
        for ratio in self.sweep_ratios:
            pruning.check_ratio(ratio)


def prune_run(cfg: dict, progress: bool = True) -> dict:
    """The E²VPT protocol end to end, resumable at every stage, under ``output_dir``:

    1. ``before_pruning/``: train with masks (as :func:`train_run`);
    2. ``scores.json``: importance scores on the training split, one pass;
    3. ``sweep.json``: instant pruning at ``sweep_ratios`` on test (what the notebook's slider reads);
    4. ``rewind/``: a fresh model trained under each candidate pair of frozen masks, the best chosen on validation;
    5. ``prune.json``: the chosen budgets and test accuracy before pruning, after instant pruning and after rewinding.
    """
    prune_cfg = PruneConfig(**cfg.get("prune", {}))
    out = Path(cfg.get("output_dir") or "results/prune")
    before = train_run(load_run_config(cfg, [f"output_dir={out / 'before_pruning'}"]), progress=progress)
    model = before["model"]
    train_config = TrainConfig(**{**cfg["train"], "progress": progress})
    loaders = prepare_data(cfg, train_config.batch_size, train_config.seed)
    scores_path = out / "scores.json"
    if scores_path.exists():
        scores = pruning.ImportanceScores.from_dict(json.loads(scores_path.read_text()))
    else:
        scores = pruning.importance_scores(model, loaders["train"], prune_cfg.score, progress=progress)
        atomic_write(scores_path, lambda tmp: Path(tmp).write_text(json.dumps(scores.to_dict())))
    sweep = pruning.pruning_sweep(model, loaders["test"], prune_cfg.sweep_ratios, scores=scores, progress=progress)
    sweep.save(out / "sweep.json")
    num_classes = loaders["train"].dataset.num_classes
    rewind = pruning.prune_and_rewind(lambda: build_model(cfg, num_classes), loaders["train"], loaders["val"],
                                      train_config, scores, out / "rewind", prune_cfg.num_tokens,
                                      prune_cfg.num_segments, test_loader=loaders["test"], progress=progress)
    best_model = build_model(cfg, num_classes)
    load_prompts(best_model, Path(rewind["best_dir"]) / PROMPTS_FILE)
    pruning.set_masks(best_model, best_model.token_mask.detach().clone(), best_model.segment_mask.detach().clone())
    best_model.to(train_config.resolve_device())
    best = rewind["best"]
    with pruning.instantly_pruned(model, *pruning.pruning_masks(scores, best["num_tokens"], best["num_segments"])):
        instant_acc = evaluate(model, loaders["test"], amp=train_config.amp)["acc"]
    summary = {"method": model.method_config.method_name(), "score": prune_cfg.score,
               "before": {"test_acc": before["test_acc"], "parameters": before["parameters"]},
               "best_budgets": {"num_tokens": best["num_tokens"], "num_segments": best["num_segments"]},
               "instant_test_acc": instant_acc,
               "rewound": {"test_acc": best["test_acc"],  # measured by prune_and_rewind right after training
                           "val_acc": best["val_acc"], "parameters": count_parameters(best_model)},
               "rewind_runs": rewind["runs"], "config": cfg}
    atomic_write(out / "prune.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
    return {**summary, "model": best_model, "sweep": sweep}
