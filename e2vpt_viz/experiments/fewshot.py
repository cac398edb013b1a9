"""PVP's protocol: pre-train prompt modules on a source task, then compare few-shot tuning from random vs
pre-trained prompts (the file format and loading are in :mod:`e2vpt_viz.pvp`).

    path = pretrain_prompts(cfg, "data/starter-source", "pvp.safetensors")     # source task
    table = few_shot_comparison(cfg, path, shots=(1, 2, 4, 8, 16), seeds=(0, 1, 2))

On the offline starter the source task is the synthetic *source* species; for real use any prepared FGVC root
(train/val/test.json) or an ImageNet-format folder (``train/<class>/*.jpg`` and ``val/<class>/*.jpg``).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from .. import tables
from ..tables import mean_std
from ..data import FGVC, DatasetLayoutError, Preprocessing, build_transforms, load_rgb, make_loaders, split_loader
from ..checkpoint import write_json
from ..pvp import load_prompt_modules, save_prompt_modules
from ..training import evaluate, fit, result_settings, short_schedule_warmup

if TYPE_CHECKING:
    from .config import RunConfig

logger = logging.getLogger(__name__)


class _RGBImageFolder(ImageFolder):
    """ImageFolder that converts every image to RGB like FGVCDataset."""

    def __init__(self, root: Path, transform) -> None:
        super().__init__(str(root), transform=transform, loader=load_rgb)
        self.num_classes = len(self.classes)


def packaged_prompts(cfg: "RunConfig") -> Path:
    """The PVP file shipped for the run config's backbone and method (``weights/<backbone>-<method>-pvp``); a clear
    error saying how to make one when none ships (only the offline starter's E2VPT prompts do)."""
    from ..backbones import WEIGHTS_DIR

    method = cfg.method_name
    path = WEIGHTS_DIR / f"{cfg.backbone.name}-{method}-pvp.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"No pre-trained prompts ship for backbone {cfg.backbone.name!r} with {method}. Make them on a source "
            "task (an ImageNet-format folder or a prepared FGVC root) with `python -m e2vpt_viz pvp-pretrain --config "
            "CONFIG --source ROOT --out FILE`, then pass that file.")
    return path


def source_loaders(root: Union[str, Path], crop_size: int, batch_size: int, seed: int = 0,
                   cache: bool = True, preprocessing: Preprocessing = FGVC) -> dict[str, DataLoader]:
    """Train / val loaders of a source task: an FGVC root (train/val/test.json) or an ImageNet-format folder
    (``train/<class>/*`` and ``val/<class>/*``), both with ``preprocessing`` (default VPT's FGVC transforms)."""
    root = Path(root)
    if (root / "train.json").is_file():
        return make_loaders(root, crop_size, batch_size, num_workers=0, cache=cache, seed=seed,
                            preprocessing=preprocessing)
    if (root / "train").is_dir() and (root / "val").is_dir():
        folders = {split: _RGBImageFolder(root / split, build_transforms(crop_size, split == "train", preprocessing))
                   for split in ("train", "val")}
        train, val = set(folders["train"].classes), set(folders["val"].classes)
        if train != val:  # ImageFolder numbers each split's folders on its own: the labels would not match
            raise DatasetLayoutError(
                f"PVP source {root}: val/ lacks the class folders {sorted(train - val)[:5]} of train/ and has "
                f"{sorted(val - train)[:5]} that train/ lacks; both need the same class folders.")
        return {split: split_loader(folder, split == "train", batch_size, seed=seed) for split, folder in folders.items()}
    raise FileNotFoundError(
        f"PVP source {root} is neither an FGVC root (train.json, val.json, test.json) nor an ImageNet-format folder "
        "(train/<class>/*.jpg and val/<class>/*.jpg). For the offline starter: "
        f"`python -m data_prep synthetic --root {root} --task source`.")


def pretrain_prompts(cfg: "RunConfig", source_root: Union[str, Path], out: Union[str, Path],
                     epochs: Optional[int] = None, progress: bool = True,
                     run_dir: Union[str, Path, None] = None) -> Path:
    """Train the run config's prompt method on the source task (frozen backbone) and save its prompt modules.

    The resumable training state goes to ``run_dir`` (default ``results/pvp_source/<out file stem>-<digest>``, the
    digest naming the source dataset, the run config and the schedule), so an interrupted pre-training continues where
    it stopped, and only the same work ever resumes from it.
    """
    from .run import build_model

    source_root = Path(source_root)
    if cfg.data.synthetic:
        from data_prep.synthetic import ensure_synthetic

        ensure_synthetic(source_root, task="source", workers=1)  # the starter's source species
    schedule = {"epochs": epochs, "warmup_epochs": min(cfg.train.warmup_epochs, epochs - 1)} if epochs else {}
    config = replace(cfg.train, progress=progress, **schedule)
    loaders = source_loaders(source_root, cfg.data.crop_size, config.batch_size, config.seed,
                             preprocessing=cfg.data.preprocessing(cfg.backbone.name))
    model = build_model(cfg, loaders["train"].dataset.num_classes)
    started = time.perf_counter()
    if run_dir is None:
        from .config import settings_digest

        work = settings_digest(cfg.replace(train=schedule), source=str(source_root.resolve()))
        run_dir = Path("results") / "pvp_source" / f"{Path(out).stem}-{work}"
    history = fit(model, loaders["train"], loaders["val"], config, run_dir)
    command = " ".join(["python -m e2vpt_viz", *sys.argv[1:]]) if sys.argv[1:2] == ["pvp-pretrain"] else None
    return save_prompt_modules(model, out, source=str(source_root), source_val_acc=history[-1]["val_acc"],
                               command=command, date=datetime.date.today().isoformat(),
                               train_config=result_settings(asdict(config)),
                               seconds=round(time.perf_counter() - started, 1), torch=torch.__version__)


def subset_cache(root: Path) -> Path:
    """Where the K-shot split files of a read-only data ``root`` go: ``$XDG_CACHE_HOME`` (else ``~/.cache``)
    ``/e2vpt-viz/subsets/<root's name>-<digest of its absolute path>``."""
    from .backbone_support import user_cache_dir

    resolved = str(Path(root).resolve())
    return user_cache_dir() / "subsets" / f"{Path(resolved).name}-{hashlib.sha256(resolved.encode()).hexdigest()[:12]}"


def _subset_folder(root: Path, shots: int, seed: int) -> Path:
    """The K-shot subset's split files, in ``root/subsets`` when the root is writable, else in :func:`subset_cache`
    (a course's shared, read-only dataset): the same files either way, so the same results."""
    from data_prep.fgvc import write_subset

    try:
        return write_subset(root, None, shots, seed)
    except OSError as error:
        cache = subset_cache(root)
        logger.info("%s is not writable (%s); the %d-shot split files go to %s", root, type(error).__name__, shots,
                    cache)
        return write_subset(root, None, shots, seed, into=cache)


def few_shot_comparison(cfg: "RunConfig", prompts: Union[str, Path], shots: Sequence[int] = (1, 2, 4, 8, 16),
                        seeds: Sequence[int] = (0, 1, 2), epochs: int = 50, progress: bool = False,
                        record: Union[str, Path, None] = None) -> list[dict]:
    """Few-shot prompt tuning on the run's dataset from a random vs a PVP initialisation.

    For every K in ``shots`` and every seed, a K-shot training subset is drawn with that seed (nested: the 1-shot set
    is inside the 2-shot set) and the same model is trained twice, once per initialisation, with the same seed and
    schedule; accuracy is measured on the full test split.

    ``record``: a JSON file that keeps every finished run's accuracy, so an interrupted comparison continues where it
    stopped; it belongs to one piece of work (the prompts file's SHA-256, the run config and the schedule) and is
    refused for any other.

    Returns one row per K: ``{"shots", "random_mean", "random_std", "pvp_mean", "pvp_std", "random", "pvp"}``
    (accuracies in [0, 1]; std over seeds, 0 for one seed).
    """
    from .run import build_model, prepare_data

    full = prepare_data(cfg, 1, 0)  # make sure the (starter) dataset exists
    load_prompt_modules(build_model(cfg, full["train"].dataset.num_classes), prompts)  # fail now, not after K runs
    root = Path(cfg.data.root)
    work = {"prompts_sha256": hashlib.sha256(Path(prompts).read_bytes()).hexdigest(), "epochs": epochs,
            "config": cfg.to_dict()}
    done: dict[str, float] = {}
    if record is not None and Path(record).is_file():
        from .config import result_settings_of

        stored = json.loads(Path(record).read_text())
        previous = stored.get("work") or {}
        same = (all(previous.get(k) == work[k] for k in ("prompts_sha256", "epochs"))
                and result_settings_of(previous.get("config") or {}) == result_settings_of(work["config"]))
        if not same:  # settings that do not change a result (device, folders, progress) may differ
            raise FileExistsError(f"{record} records few-shot runs of other prompts, settings or schedule; pass "
                                  "another record file (or delete this one to start over).")
        done = stored["runs"]
    rows = []
    for k in shots:
        accs: dict[str, list[float]] = {"random": [], "pvp": []}
        for seed in seeds:
            if all(f"{k}/{seed}/{init}" in done for init in accs):
                for init in accs:
                    accs[init].append(done[f"{k}/{seed}/{init}"])
                continue
            subset = _subset_folder(root, k, seed)
            run_cfg = cfg.replace(data={"root": str(subset)},
                                  train={"seed": seed, "epochs": epochs, "warmup_epochs": short_schedule_warmup(epochs)})
            train_config = replace(run_cfg.train, progress=progress)
            loaders = prepare_data(run_cfg, train_config.batch_size, seed)
            for init in ("random", "pvp"):
                model = build_model(run_cfg, loaders["train"].dataset.num_classes)
                if init == "pvp":
                    load_prompt_modules(model, prompts)
                fit(model, loaders["train"], None, train_config)
                accs[init].append(evaluate(model, loaders["test"])["acc"])
                if record is not None:
                    done[f"{k}/{seed}/{init}"] = accs[init][-1]
                    write_json(record, {"work": work, "runs": done})
        stats = {init: mean_std(values) for init, values in accs.items()}
        rows.append({"shots": k, **{f"{init}_{name}": value for init, pair in stats.items()
                                    for name, value in zip(("mean", "std"), pair)}, **accs})
    return rows


FEWSHOT_COLUMNS = ("shots per class", "random init (%)", "PVP init (%)", "PVP gain (points)")


def few_shot_markdown(rows: Sequence[dict]) -> str:
    """The few-shot comparison as a markdown table (test accuracy %, mean ± std over seeds)."""
    return tables.markdown_table(
        FEWSHOT_COLUMNS,
        [(r["shots"], f"{100 * r['random_mean']:.1f} ± {100 * r['random_std']:.1f}",
          f"{100 * r['pvp_mean']:.1f} ± {100 * r['pvp_std']:.1f}", f"{100 * (r['pvp_mean'] - r['random_mean']):+.1f}")
         for r in rows])

