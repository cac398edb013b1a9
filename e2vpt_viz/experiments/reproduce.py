"""The papers' FGVC protocol end to end: ``python -m e2vpt_viz reproduce --dataset cub --method e2vpt``.

What runs, following the papers and their official code, named at each step: VPT (Jia et al., ECCV 2022,
arXiv:2203.12119; github.com/KMnP/vpt) and E²VPT (Han et al., ICCV 2023, arXiv:2307.13770;
github.com/ChengHan111/E2VPT).

1. **Grid** (VPT's ``tune_fgvc.py``; E²VPT's released FGVC commands): every (base lr, weight decay) pair trains on ``train`` and evaluates
   ``val`` every epoch. Grids: weight decay {0.01, 0.001, 0.0001, 0}; base lr for prompts (VPT, E²VPT)
   {5, 2.5, 1, 50, 25, 10, 0.5, 0.25, 0.1}, linear {50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05}, full fine-tuning,
   partial-1 and bias {0.001, 0.0001, 0.0005, 0.005} (VPT's ``finetune`` grid); VPT-shallow adds the large grid {500, 1000, 250, 100} (VPT ``tune_fgvc.py``,
   ``prompt_largerlr``, which the paper used for VPT-shallow on some tasks); the lr is scaled by batch / 256
   (VPT's ``tune_fgvc.py``). The pair with the best validation
   accuracy of **any epoch** wins (E²VPT's FGVC script; VPT's FGVC selection was done on val, VPT Appendix A), ties to
   the smaller lr. VPT's prompt length can be searched too: ``--prompt-lengths paper`` searches the paper's
   {1, 5, 10, 50, 100, 200} (VPT Appendix A) jointly with lr and wd on val; by default it is fixed (10 prompts).
2. **E²VPT only, pruning and rewinding** (E²VPT Sec. 3.3 and its official pruning code, via :func:`~e2vpt_viz.experiments.run.prune_run`): the grid's
   best run is the pre-pruning model (step 2 retrains exactly that run, so its checkpoint is reused); signed
   importance scores on the training split; the official candidate budgets (P = 5: 5 token × 8 segment budgets);
   a fresh model trained under each pair of frozen masks; the pair with the best last-epoch validation accuracy wins
   (ties: more pruning).
3. **Final runs** (VPT Appendix A; E²VPT's released commands): seeds 42, 44, 82, 100, 800 with the selected settings (and masks), trained on
   ``train`` only (FGVC has no train+val split in VPT's data); the reported number is the **last-epoch test top-1**,
   mean ± standard deviation over the seeds. A final run that is the very run already trained (seed 42 = the grid's or
   the rewinding's run) is read back, not retrained.
4. **Table**: ``results.md`` / ``results.json`` beside the papers' numbers (VPT Table 1, E²VPT Table 1), and
   ``../summary.md`` over every method reproduced on the same dataset.

Settings per method, each with its source (``docs/protocol.md`` lists them and every remaining deviation):

- schedule: 100 epochs, 10 of warm-up (VPT Table 8), the official warm-up-cosine stepped once per epoch, so
  epoch 0 trains at lr 0 (VPT ``src/solver/lr_scheduler.py``; ``train.schedule=epoch``);
- precision: fp32 (``train.amp=false``), as the official code trains: bf16 autocast moved E²VPT on the starter
  below the fp32 seeds (``docs/results/precision.json``);
- optimiser: SGD momentum 0.9 for prompts and linear (VPT ``configs/base-prompt.yaml``, ``base-linear.yaml``); for
  full, partial-1 and bias the official fine-tuning AdamW (``train.optimizer=vpt-adamw``: eps 1e-6, decay 0.01 on
  all but biases, SGD when the grid's wd is 0; VPT ``src/solver/optimizer.py``), so the grid's three weight
  decays above 0 are one setting and train once;
- batch: 128 for E²VPT, VPT with P < 100, full and bias; 64 for VPT with P >= 100, decided per searched prompt
  length; 2048 for linear; 1280 for partial-1 (VPT Table 8);
- full fine-tuning trains the backbone in train mode with the ViT-B config's dropout 0.1 (VPT ``end2end``);
- backbone (``--backbone``): ``in21k``, the VPT paper's ImageNet-21k ViT-B/16, by default; ``in21k-ft-in1k``, the
  ImageNet-21k checkpoint fine-tuned on ImageNet-1k that E²VPT's released commands load (``BACKBONES``).

**VTAB-1k** (``--dataset vtab-<task>``, roots prepared by ``python -m data_prep vtab``; all tasks and the group
means: :mod:`e2vpt_viz.experiments.vtab`), as VPT's ``tune_vtab.py`` and E²VPT's VTAB scripts do it: the input
pipeline resizes every image to 224 × 224 (bilinear, aspect ignored), scales to [0, 1] and normalises with ImageNet's
statistics, without augmentation (VPT ``src/data/datasets/tf_dataset.py``; ``data.resize=square``); the grid trains on
``train`` (train800) and selects on the **last-epoch** ``val`` (val200) accuracy, ties to the smaller lr, with 0.05
added to the prompt lrs (``tune_vtab.py``); E²VPT prunes and rewinds on train800 / val200 as above; the five final
runs train on ``trainval`` (train800val200) with the selected settings (and masks) and report the last-epoch test
top-1, so none of them is read back from the grid. Batch 64 for the prompt methods (E²VPT's VTAB commands); E²VPT's
prompt counts per task are its released ones (``VTAB_E2VPT_PROMPTS``). ``vtab-starter_distance`` is the offline
structured task (the starter backbone, 64 px), prepared on first use.

Resuming: every stage writes its result atomically (``grid.json``, ``prune/prune.json``, ``final/seed*/result.json``)
and every run checkpoints each epoch, so running the same command again continues where it stopped and retrains
nothing that finished. ``--tiny`` shrinks everything (2 × 1 grid, 2 epochs, 2 seeds, 2 rewinding candidates) for CI.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence, Union

from data_prep.vtab import OFFLINE_TASKS, TASKS as VTAB_TASKS, prepare_vtab

from . import run as runs
from .config import PruneConfig, RunConfig, load_run_config
from ..checkpoint import atomic_write, write_json, write_text
from ..checks import positive_int
from ..tables import markdown_table, mean_std
from ..methods import method_config
from ..pruning import ImportanceScores, prune_and_rewind
from ..training import STATE_FILE

FINAL_SEEDS = (42, 44, 82, 100, 800)
WEIGHT_DECAYS = (0.01, 0.001, 0.0001, 0.0)
PROMPT_LRS = (5.0, 2.5, 1.0, 50.0, 25.0, 10.0, 0.5, 0.25, 0.1)
LARGE_PROMPT_LRS = (500.0, 1000.0, 250.0, 100.0)  # VPT tune_fgvc.py "prompt_largerlr", for VPT-shallow
LINEAR_LRS = (50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05)
FINETUNE_LRS = (0.001, 0.0001, 0.0005, 0.005)
PAPER_PROMPT_LENGTHS = (1, 5, 10, 50, 100, 200)  # VPT Appendix A: searched on val with lr and wd
LONG_PROMPTS, LONG_PROMPT_BATCH = 100, 64  # VPT Table 8: batch 64 for VPT with P >= 100
METHODS = ("e2vpt", "vpt-deep", "vpt-shallow", "linear", "full", "bias", "partial")

# The two ViT-B/16 checkpoints of the official code, by the name ``--backbone`` takes.
BACKBONES = {
    "in21k": {"timm": "vit_base_patch16_224.orig_in21k", "official": "sup_vitb16_imagenet21k (imagenet21k_ViT-B_16.npz)",
              "note": "ImageNet-21k only: the VPT paper's backbone (VPT README and demo), and every paper number here"},
    "in21k-ft-in1k": {"timm": "vit_base_patch16_224.orig_in21k_ft_in1k", "official": "sup_vitb16_224 (ViT-B_16-224.npz)",
                      "note": "ImageNet-21k fine-tuned on ImageNet-1k: what E²VPT's released commands and result "
                              "parser load (its README names the ImageNet-21k file)"},
}
DEFAULT_BACKBONE = "in21k"

# Dataset: (default root, name in the tables). The real ones are prepared by `python -m data_prep <name> --root ...`.
DATASETS = {
    "cub": ("data/CUB_200_2011", "CUB-200-2011"),
    "nabirds": ("data/nabirds", "NABirds"),
    "flowers": ("data/flowers", "Oxford Flowers"),
    "dogs": ("data/dogs", "Stanford Dogs"),
    "cars": ("data/cars", "Stanford Cars"),
    "starter": ("data/starter", "offline starter"),
}
FGVC = ("cub", "nabirds", "flowers", "dogs", "cars")
# VTAB-1k: one dataset per task, "vtab-<task>", in the folders `python -m data_prep vtab --root data/vtab-1k` writes.
VTAB_PREFIX, VTAB_ROOT = "vtab-", "data/vtab-1k"
DATASETS.update({f"{VTAB_PREFIX}{task}": (f"{VTAB_ROOT}/{task}", f"VTAB-1k {task}") for task in VTAB_TASKS})
DATASETS.update({f"{VTAB_PREFIX}{task}": (f"{VTAB_ROOT}/{task}", f"{task} (offline, VTAB-1k layout)")
                 for task in OFFLINE_TASKS})
OFFLINE = ("starter", *(f"{VTAB_PREFIX}{task}" for task in OFFLINE_TASKS))  # the starter backbone, no --backbone
VTAB_BATCH = 64  # E²VPT's VTAB commands (VPT's demo uses 64 or 128 per task) for the prompt methods
VTAB_PROMPT_LRS = PROMPT_LRS + (0.05,)  # VPT tune_vtab.py and E²VPT's VTAB script add 0.05
# E²VPT's released VTAB commands: (visual prompts P, key-value prompts T) per task; (10, 5) for the others.
VTAB_E2VPT_PROMPTS = {"caltech101": (32, 5), "cifar100": (5, 5), "oxford_flowers102": (1, 1),
                      "patch_camelyon": (10, 10), "dsprites_loc": (5, 5), "dsprites_ori": (5, 5)}
VTAB_E2VPT_DEFAULT_PROMPTS = (10, 5)


def vtab_task(dataset: str) -> Optional[str]:
    """The VTAB-1k task of a ``vtab-<task>`` dataset name (None for the others)."""
    return dataset[len(VTAB_PREFIX):] if dataset.startswith(VTAB_PREFIX) else None

# Test top-1 (%) of ViT-B/16 (supervised ImageNet-21k) on FGVC in the papers, only where a row can be cited: the
# per-dataset values of VPT's per-task FGVC results (arXiv:2203.12119, Tables 1 and 14) and each method's FGVC mean
# (VPT Table 1; E²VPT arXiv:2307.13770 Table 1). A method without a citable per-dataset row has only its mean.
PAPER = {
    "full": {"cub": 87.3, "nabirds": 82.7, "flowers": 98.8, "dogs": 89.4, "cars": 84.5},
    "vpt-deep": {"cub": 88.5, "nabirds": 84.2, "flowers": 99.0, "dogs": 90.2, "cars": 83.6},
    "bias": {"cub": 88.4, "nabirds": 84.2, "flowers": 98.8, "dogs": 91.2, "cars": 79.4},
    "linear": {}, "vpt-shallow": {}, "partial": {}, "e2vpt": {},
}
PAPER_MEAN = {"full": 88.54, "linear": 79.32, "partial": 82.63, "bias": 88.41, "vpt-shallow": 84.62,
              "vpt-deep": 89.11, "e2vpt": 89.22}
PAPER_SOURCE = {
    "full": "VPT (arXiv:2203.12119) Tables 1 and 14, row Full",
    "linear": "VPT (arXiv:2203.12119) Table 1, row Linear, FGVC mean",
    "partial": "VPT (arXiv:2203.12119) Table 1, row Partial-1, FGVC mean",
    "bias": "VPT (arXiv:2203.12119) Tables 1 and 14, row Bias",
    "vpt-shallow": "VPT (arXiv:2203.12119) Table 1, row VPT-Shallow, FGVC mean",
    "vpt-deep": "VPT (arXiv:2203.12119) Tables 1 and 14, row VPT-Deep",
    "e2vpt": "E²VPT (arXiv:2307.13770) Table 1, row E²VPT, FGVC mean",
}

# VTAB-1k test top-1 (%) per task of ViT-B/16 (ImageNet-21k), VPT (arXiv:2203.12119) Table 13, in the task order
# of data_prep.vtab.TASKS (natural, specialized, structured); each row gives VPT Table 1's group means.
_VTAB_ORDER = tuple(VTAB_TASKS)
VTAB_PAPER = {
    "full": dict(zip(_VTAB_ORDER, (68.9, 87.7, 64.3, 97.2, 86.9, 87.4, 38.8, 79.7, 95.7, 84.2, 73.9,
                                   56.3, 58.6, 41.7, 65.5, 57.5, 46.7, 25.7, 29.1))),
    "vpt-shallow": dict(zip(_VTAB_ORDER, (77.7, 86.9, 62.6, 97.5, 87.3, 74.5, 51.2, 78.2, 92.0, 75.6, 72.9,
                                          50.5, 58.6, 40.5, 67.1, 68.7, 36.1, 20.2, 34.1))),
    "vpt-deep": dict(zip(_VTAB_ORDER, (78.8, 90.8, 65.8, 98.0, 88.3, 78.1, 49.6, 81.8, 96.1, 83.4, 68.4,
                                       68.5, 60.0, 46.5, 72.8, 73.6, 47.9, 32.9, 37.8))),
}
VTAB_PAPER_SOURCE = "VPT (arXiv:2203.12119) Table 13"
# The papers' VTAB-1k group means (natural, specialized, structured) and how their overall mean is formed.
VTAB_PAPER_GROUPS = {
    "full": {"groups": (75.88, 83.36, 47.64), "source": "VPT (arXiv:2203.12119) Table 1, row Full"},
    "linear": {"groups": (68.93, 77.16, 26.84), "source": "VPT (arXiv:2203.12119) Table 1, row Linear"},
    "partial": {"groups": (69.44, 78.53, 34.17), "source": "VPT (arXiv:2203.12119) Table 1, row Partial-1"},
    "bias": {"groups": (73.30, 78.25, 44.09), "source": "VPT (arXiv:2203.12119) Table 1, row Bias"},
    "vpt-shallow": {"groups": (76.81, 79.66, 46.98), "source": "VPT (arXiv:2203.12119) Table 1, row VPT-Shallow"},
    "vpt-deep": {"groups": (78.48, 82.43, 54.98), "source": "VPT (arXiv:2203.12119) Table 1, row VPT-Deep"},
    "e2vpt": {"groups": (80.01, 84.43, 57.39), "source": "E²VPT (arXiv:2307.13770) Table 1, row E²VPT"},
    "pvp": {"groups": None, "mean": 78.02,
            "source": "PVP (arXiv:2304.13639), VTAB-1k mean as listed by Papers with Code; the paper's per-group "
                      "numbers and its mean convention could not be checked"},
}

# Per-method settings on the real datasets (the starter keeps its own batch size; every method gets the official
# per-epoch schedule).
FINETUNE = {"optimizer": "vpt-adamw", "schedule": "epoch"}
METHOD_SETTINGS = {
    "e2vpt": {"method": {"name": "e2vpt", "num_prompts": 5, "num_kv_prompts": 5, "dropout": 0.1},
              "train": {"batch_size": 128, "optimizer": "sgd"}, "lrs": PROMPT_LRS},
    "vpt-deep": {"method": {"name": "vpt-deep", "num_prompts": 10}, "train": {"batch_size": 128, "optimizer": "sgd"},
                 "lrs": PROMPT_LRS},
    "vpt-shallow": {"method": {"name": "vpt-shallow", "num_prompts": 10},
                    "train": {"batch_size": 128, "optimizer": "sgd"}, "lrs": PROMPT_LRS + LARGE_PROMPT_LRS},
    "linear": {"method": {"name": "linear"}, "train": {"batch_size": 2048, "optimizer": "sgd"}, "lrs": LINEAR_LRS},
    "full": {"method": {"name": "full", "dropout": 0.1}, "train": {"batch_size": 128, **FINETUNE},
             "lrs": FINETUNE_LRS},
    "bias": {"method": {"name": "bias"}, "train": {"batch_size": 128, **FINETUNE}, "lrs": FINETUNE_LRS},
    "partial": {"method": {"name": "partial", "num_blocks": 1}, "train": {"batch_size": 1280, **FINETUNE},
                "lrs": FINETUNE_LRS},
}
# What still differs from the official code (VPT: github.com/KMnP/vpt; E²VPT: github.com/ChengHan111/E2VPT), why, and
# which result file measures the effect on the starter (None: not measured). docs/protocol.md renders this table.
DEVIATIONS = [
    {"setting": "learning-rate schedule of the `starter` config (the lessons, the main job)",
     "official": "warm-up-cosine stepped once per epoch, epoch 0 at lr 0 (VPT src/solver/lr_scheduler.py)",
     "here": "per step (`train.schedule=step`), the first step above 0, cosine to 0; `reproduce` and the "
             "`cub_e2vpt` config use the official one (`train.schedule=epoch`)",
     "why": "no epoch spent at lr 0 and no jumps on the starter's 15-step epochs; the starter's settings were "
            "found with it", "effect": None},
    {"setting": "the starter's baselines (lessons, `report`, the calibration)",
     "official": "full, partial and bias with the fine-tuning AdamW (eps 1e-6, decay 0.01 on all but biases); full "
                 "with the ViT-B config's dropout 0.1",
     "here": "torch AdamW with the starter's calibrated lr and decay (0.01 on all but the head bias); full with the "
             "starter backbone's own dropout, none, in train mode; `reproduce` uses the official settings",
     "why": "the starter's settings were found with them; starter-vit was pre-trained without dropout",
     "effect": None},
    {"setting": "precision of `train`, `report` and the lessons on a GPU",
     "official": "fp32 (VPT src/engine/trainer.py has no autocast)",
     "here": "bf16 autocast on CUDA by default (`train.amp=true`); `reproduce` trains in fp32 (`train.amp=false`), as "
             "the official code does",
     "why": "about twice the throughput on H100/H200; the protocol runner keeps fp32 because of the measured effect",
     "effect": "precision"},
    {"setting": "AdamW arithmetic (full, partial, bias)",
     "official": "an HF-style AdamW: eps added before the bias correction, decay applied after the update "
                 "(VPT src/solver/optimizer.py)",
     "here": "torch.optim.AdamW with the official eps 1e-6, decay 0.01 and no-decay filter (`vpt-adamw`); decay "
             "before the update",
     "why": "a maintained optimiser; the two differ by terms of order eps and lr·wd per step", "effect": None},
    {"setting": "seeds of the final E²VPT runs",
     "official": "the rewinding runs are unseeded (SEED None in E²VPT's tune_fgvc_PruningRewind.py)",
     "here": "every final run is seeded (42, 44, 82, 100, 800)",
     "why": "a reproduction that can be repeated", "effect": None},
    {"setting": "batch size and warm-up of full fine-tuning",
     "official": "configs/base-finetune.yaml: batch 384, warm-up 5; VPT Table 8: batch 128, warm-up 10",
     "here": "batch 128, warm-up 10 (VPT Table 8)",
     "why": "the paper's table states what produced its numbers", "effect": None},
    {"setting": "batch size of the linear probe",
     "official": "configs/base-linear.yaml: 1024; VPT Table 8: 2048",
     "here": "2048 (VPT Table 8)", "why": "as above", "effect": None},
    {"setting": "VPT-shallow learning rates",
     "official": "the large grid {500, 1000, 250, 100} was a separate tuning run for some tasks (VPT tune_fgvc.py)",
     "here": "always searched together with the standard grid, on val",
     "why": "which tasks used it was not released; selection on val decides", "effect": None},
    {"setting": "FGVC train / val splits",
     "official": "JSON splits released on Dropbox / Google Drive, no longer downloadable",
     "here": "a seeded, stratified 90/10 split of the official train set (Flowers: its official splits), with the "
             "papers' counts (`python -m data_prep`)",
     "why": "the released splits cannot be obtained; validation images differ, test images do not", "effect": None},
    {"setting": "image resizing",
     "official": "torchvision Resize on PIL images",
     "here": "torchvision transforms v2 Resize on uint8 tensors (antialiased bilinear), then the same crops, flip "
             "and normalisation",
     "why": "one pipeline for the CPU and the on-device data path; pixel values differ by rounding", "effect": None},
    {"setting": "attention arithmetic",
     "official": "explicit softmax(QKᵀ/√d)V in a port of the JAX ViT",
     "here": "timm's ViT, fused scaled-dot-product attention (the explicit path gives the same outputs to float "
             "rounding, `tests/test_model.py`)",
     "why": "speed and memory on the GPU; any timm ViT", "effect": None},
    {"setting": "prompt length of VPT",
     "official": "searched per task over {1, 5, 10, 50, 100, 200} (VPT Appendix A)",
     "here": "fixed at 10 unless `--prompt-lengths paper` (or a list) is given",
     "why": "the search multiplies the grid by six", "effect": None},
    {"setting": "backbone of E²VPT's commands",
     "official": "sup_vitb16_224, ImageNet-21k fine-tuned on ImageNet-1k (E²VPT's commands and result parser)",
     "here": "`--backbone in21k` (the VPT paper's ImageNet-21k checkpoint) by default; `--backbone in21k-ft-in1k` "
             "loads the one E²VPT's commands load",
     "why": "the papers' tables and E²VPT's README name the ImageNet-21k checkpoint", "effect": None},
]

TINY = {"lrs": 2, "wds": (0.0001,), "epochs": 2, "seeds": (42, 44), "num_tokens": [0, 2], "num_segments": [1],
        "sweep_ratios": [0.0, 0.5]}


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.is_file() else None


def backbone_choice(dataset: str, backbone: Optional[str]) -> Optional[str]:
    """The ``--backbone`` name a reproduction uses: the default for real datasets, none for the offline ones."""
    if dataset in OFFLINE:
        if backbone is not None:
            raise ValueError(f"--backbone {backbone} applies to the FGVC datasets; the offline starter has its own "
                             "backbone (starter-vit). Leave --backbone out.")
        return None
    backbone = backbone or DEFAULT_BACKBONE
    if backbone not in BACKBONES:
        raise ValueError(f"--backbone {backbone!r} is not one of {list(BACKBONES)} (in21k: the VPT paper's "
                         "ImageNet-21k ViT-B/16; in21k-ft-in1k: the checkpoint E²VPT's commands load).")
    return backbone


def long_prompt_batch(dataset: str, method: str, num_prompts: Optional[int], batch_size: int) -> int:
    """The batch size VPT Table 8 gives a VPT run with ``num_prompts`` prompts: 64 from 100 prompts on."""
    if dataset not in OFFLINE and method.startswith("vpt") and num_prompts is not None and num_prompts >= LONG_PROMPTS:
        return LONG_PROMPT_BATCH
    return batch_size


def base_config(dataset: str, method: str, config: Union[str, Path, dict, RunConfig, None] = None,
                overrides: Sequence[str] = (), tiny: bool = False, backbone: Optional[str] = None) -> RunConfig:
    """The run config of one method on one dataset before the grid fills in lr and wd (and the prompt length)."""
    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}.")
    if method not in METHODS:
        raise ValueError(f"reproduce supports the methods {list(METHODS)}, got {method!r}.")
    backbone = backbone_choice(dataset, backbone)
    settings = METHOD_SETTINGS[method]
    if config is None:
        config = "starter" if dataset in OFFLINE else "cub_e2vpt"
    options = dict(settings["method"])
    task = vtab_task(dataset)
    if method == "e2vpt" and task in VTAB_TASKS:
        options["num_prompts"], options["num_kv_prompts"] = VTAB_E2VPT_PROMPTS.get(task, VTAB_E2VPT_DEFAULT_PROMPTS)
    changes: dict = {"method": method_config(options.pop("name"), **options), "prune": PruneConfig(), "compare": {}}
    train: dict = {"schedule": "epoch", "amp": False}  # the official code trains in fp32 (docs/results/precision.json)
    if dataset not in OFFLINE:
        changes["data"] = {"root": DATASETS[dataset][0]}
        changes["backbone"] = {"name": BACKBONES[backbone]["timm"]}
        train.update(settings["train"], epochs=100, warmup_epochs=10)
        if task is not None and settings["train"]["optimizer"] == "sgd" and method != "linear":
            train["batch_size"] = VTAB_BATCH
        train["batch_size"] = long_prompt_batch(dataset, method, options.get("num_prompts"), train["batch_size"])
    elif settings["train"]["optimizer"] != "sgd":
        train["optimizer"] = settings["train"]["optimizer"]
    if task is not None:  # VPT's VTAB pipeline: the whole image to crop x crop, no augmentation; tuned on train800
        changes["data"] = {**changes.get("data", {}), "root": DATASETS[dataset][0], "resize": "square",
                           "train_split": "train", **({"synthetic": False} if dataset in OFFLINE else {})}
    if tiny:
        train.update(epochs=TINY["epochs"], warmup_epochs=1)
    return load_run_config(config).replace(**changes, train=train).with_overrides(overrides)


def grid_weight_decays(cfg: RunConfig, wds: Sequence[float]) -> list[float]:
    """The weight decays that train differently: with the official fine-tuning AdamW every wd above 0 is the fixed
    0.01, so the grid keeps one of them (0.01) beside 0."""
    if cfg.train.optimizer != "vpt-adamw":
        return list(wds)
    return sorted({0.01 if wd > 0 else 0.0 for wd in wds}, reverse=True)


def prompt_length_config(cfg: RunConfig, dataset: str, method: str, length: Optional[int]) -> RunConfig:
    """``cfg`` with ``length`` prompts and the batch size VPT uses for that length (unchanged for None)."""
    if length is None:
        return cfg
    batch = long_prompt_batch(dataset, method, length, cfg.train.batch_size)
    return cfg.replace(method={"num_prompts": length}, train={"batch_size": batch})


# Settings that do not change the results; a resumed reproduction may differ in them.
_FREE = {"train": ("device", "compile", "grad_checkpointing", "progress"),
         "data": ("num_workers", "on_device", "device_budget_mb", "cache")}


def _plan(dataset: str, method: str, cfg: RunConfig, lrs, wds, seeds, prompt_lengths, tiny: bool,
          backbone: Optional[str]) -> dict:
    """What fixes a reproduction's numbers; a resume must agree with the ``protocol.json`` it finds.

    ``batch_sizes`` gives the batch of every searched prompt length (the config's own when none is searched)."""
    config = {k: v for k, v in cfg.to_dict().items() if k != "output_dir"}
    for section, keys in _FREE.items():
        config[section] = {k: v for k, v in config[section].items() if k not in keys}
    batches = {str(length): prompt_length_config(cfg, dataset, method, length).train.batch_size
               for length in prompt_lengths or [None]}
    return json.loads(json.dumps({"dataset": dataset, "method": method, "backbone": backbone, "lrs": list(lrs),
                                  "wds": list(wds), "seeds": list(seeds), "prompt_lengths": prompt_lengths,
                                  "batch_sizes": batches, "tiny": tiny, "config": config}))


def _grid(cfg: RunConfig, out: Path, lrs, wds, prompt_lengths, progress: bool, dataset: str, method: str) -> dict:
    """Stage 1: the lr × wd (× prompt length) grid, selected on the best validation accuracy of any epoch (FGVC,
    E²VPT's script) or on the last epoch's (VTAB-1k, VPT's and E²VPT's VTAB scripts)."""
    path = out / "grid.json"
    if path.is_file():
        return json.loads(path.read_text())
    select = "last" if vtab_task(dataset) else "best"
    searches = []
    for length in prompt_lengths or [None]:
        run_cfg = prompt_length_config(cfg, dataset, method, length)
        folder = out / "grid" if length is None else out / "grid" / f"p{length}"
        search = runs.grid_search(run_cfg, lrs, wds, folder, progress=progress, select=select)
        for r in search["runs"]:
            r["num_prompts"] = length
        searches.append(search)
    all_runs = [r for s in searches for r in s["runs"]]
    key = "val_acc" if select == "last" else "best_val_acc"
    best = max(all_runs, key=lambda r: (r[key], -r["base_lr"]))
    grid = {"best": best, "runs": all_runs, "select": (f"{'last-epoch' if select == 'last' else 'best of any epoch'} "
                                                       "validation accuracy; ties: smaller lr")}
    write_json(path, grid)
    return grid


def _selected_config(cfg: RunConfig, grid: dict, dataset: str, method: str) -> RunConfig:
    best = grid["best"]
    return prompt_length_config(cfg, dataset, method, best.get("num_prompts")).replace(
        train={"base_lr": best["base_lr"], "weight_decay": best["weight_decay"]})


def _prune(cfg: RunConfig, grid: dict, out: Path, tiny: bool, progress: bool) -> dict:
    """Stage 2 (E²VPT): scores, candidates, rewinding; the grid's best run is the model before pruning."""
    path = out / "prune" / "prune.json"
    if path.is_file():
        return json.loads(path.read_text())
    before = out / "prune" / "before_pruning"
    grid_state = Path(grid["best"]["output_dir"]) / STATE_FILE
    if not (before / STATE_FILE).exists() and grid_state.exists():
        before.mkdir(parents=True, exist_ok=True)
        atomic_write(before / STATE_FILE, lambda tmp: shutil.copyfile(grid_state, tmp))
    prune = {k: TINY[k] for k in ("num_tokens", "num_segments", "sweep_ratios")} if tiny else {}
    result = runs.prune_run(cfg.replace(output_dir=str(out / "prune"), prune=prune), progress=progress)
    return {k: v for k, v in result.items() if k not in ("model", "sweep")}


def _final_run(cfg: RunConfig, seed: int, grid: dict, pruned: Optional[dict], out: Path, progress: bool,
               trainval: bool = False) -> dict:
    """Stage 3: one final seed; its result.json marks it done. ``trainval``: train on train + val (VTAB-1k's
    train800val200), so no final run is the grid's or the rewinding's run."""
    path = out / "final" / f"seed{seed}" / "result.json"
    if path.is_file():
        return json.loads(path.read_text())
    seed_cfg = cfg.replace(train={"seed": seed}, output_dir=str(path.parent),
                           **({"data": {"train_split": "trainval"}} if trainval else {}))
    same_as_selected = seed == cfg.train.seed and not trainval
    if pruned is None:
        if same_as_selected:  # the grid's best run is this very run
            seed_cfg = seed_cfg.replace(output_dir=grid["best"]["output_dir"])
        metrics = runs.finished_run(seed_cfg) or runs.train_run(seed_cfg, progress=progress)
        result = {"seed": seed, "test_acc": metrics["test_acc"], "val_acc": metrics["val_acc"],
                  "tunable": metrics["parameters"]["tunable"], "run_dir": seed_cfg.output_dir}
    else:
        budgets = pruned["best_budgets"]
        chosen = [r for r in pruned["rewind_runs"] if (r["num_tokens"], r["num_segments"])
                  == (budgets["num_tokens"], budgets["num_segments"])][0]
        if same_as_selected:  # the rewinding's winner is this very run
            result = {"seed": seed, "test_acc": chosen["test_acc"], "val_acc": chosen["val_acc"],
                      "tunable": chosen["tunable"], "run_dir": str(out / "prune" / "rewind")}
        else:
            scores = ImportanceScores.from_dict(json.loads((out / "prune" / "scores.json").read_text()))
            train_config = replace(seed_cfg.train, progress=progress)
            loaders = runs.prepare_data(seed_cfg, train_config.batch_size, seed)
            num_classes = loaders["train"].dataset.num_classes
            rewound = prune_and_rewind(lambda: runs.build_model(seed_cfg, num_classes), loaders["train"],
                                       loaders.get("val"), train_config, scores, path.parent,
                                       [budgets["num_tokens"]], [budgets["num_segments"]],
                                       test_loader=loaders["test"], progress=progress)["best"]
            result = {"seed": seed, "test_acc": rewound["test_acc"], "val_acc": rewound["val_acc"],
                      "tunable": rewound["tunable"], "run_dir": str(path.parent)}
    write_json(path, result)
    return result


def _number(value: Optional[float], fmt: str = ".1f") -> str:
    return "—" if value is None else format(value, fmt)


def paper_numbers(method: str, dataset: str) -> dict:
    """The papers' numbers a result is shown beside: ``paper`` (this dataset, or None where no row can be cited),
    ``paper_mean`` (the method's FGVC mean over the five datasets, FGVC only) and ``paper_source``."""
    task = vtab_task(dataset)
    if task in VTAB_TASKS:
        paper = VTAB_PAPER.get(method, {}).get(task)
        return {"paper": paper, "paper_mean": None, "paper_source": (
            VTAB_PAPER_SOURCE if paper is not None else
            "no per-task VTAB-1k number of this method can be cited; group means: the VTAB summary")}
    if dataset not in FGVC:
        return {"paper": None, "paper_mean": None,
                "paper_source": f"no paper number (offline {'starter' if dataset == 'starter' else 'task'})"}
    paper = PAPER[method].get(dataset)
    source = PAPER_SOURCE[method] + ("" if paper is not None else
                                     "; no citable per-dataset number, so only the FGVC mean is shown")
    return {"paper": paper, "paper_mean": PAPER_MEAN[method], "paper_source": source}


def _percentages(results: dict) -> str:
    """The tunable count as a share of the backbone (ours) and of every model parameter (the official code's)."""
    tunable, counts = results["final"][0]["tunable"], results.get("denominators")
    if not counts:
        return f"{tunable:,}"
    return (f"{tunable:,} ({100 * tunable / counts['backbone']:.2f}% of the backbone's {counts['backbone']:,}, our "
            f"convention; {100 * tunable / counts['model']:.2f}% of all {counts['model']:,} model parameters, the "
            "official code's \"tuned percent\")")


def _backbone_note(plan: dict) -> str:
    if plan.get("backbone") is None:
        return f"backbone {plan['config']['backbone']['name']}"
    chosen = BACKBONES[plan["backbone"]]
    note = f"backbone {plan['backbone']} = {chosen['timm']} (the official code's {chosen['official']}: {chosen['note']})"
    if plan["backbone"] != DEFAULT_BACKBONE:
        note += "; the papers' numbers shown were measured with the ImageNet-21k backbone, so they differ in backbone"
    return note


def markdown(results: dict) -> str:
    """The reproduction table of one method beside the paper's number, with what was selected and per-seed values."""
    p, grid, final = results["protocol"], results["grid"], results["final"]
    mean, std, paper = results["test_acc_mean"], results["test_acc_std"], results["paper"]
    best = grid["best"]
    seeds = ", ".join(str(s) for s in p["seeds"])
    per_seed = ", ".join(f"{r['seed']}: {100 * r['test_acc']:.1f} / "
                         f"{'—' if r['val_acc'] is None else format(100 * r['val_acc'], '.1f')}" for r in final)
    prompts = f", {best['num_prompts']} prompts" if best.get("num_prompts") else ""
    table = markdown_table(
        ("method", "dataset", f"test top-1 (%), mean ± std over seeds {seeds}", "paper (%)", "difference (points)",
         "paper source"),
        [(results["method"], p["dataset"], f"{mean:.1f} ± {std:.1f}", _number(paper),
          _number(None if paper is None else mean - paper, "+.1f"), results["paper_source"])])
    trained_on = (" Final runs train on train800val200 (no validation split: — marks it)."
                  if vtab_task(p["dataset"]) else "")
    lines = [f"# {results['method']} on {DATASETS[p['dataset']][1]}: the papers' protocol", "", table, "",
             f"Per seed (test / val %): {per_seed}.{trained_on}",
             f"Selected on validation ({grid['select'].split(';')[0]} over {len(grid['runs'])} grid runs): base_lr "
             f"{best['base_lr']}, weight_decay {best['weight_decay']}{prompts} (val {100 * best['best_val_acc']:.1f}%).",
             f"Tunable parameters: {_percentages(results)}."]
    if results.get("paper_mean") is not None:
        lines.append(f"Paper FGVC mean over the five datasets: {results['paper_mean']:.2f}% ({results['paper_source']}).")
    if results.get("pruning"):
        pr = results["pruning"]
        lines.append(f"Pruning (chosen on last-epoch val over {len(pr['rewind_runs'])} rewound candidates): "
                     f"{pr['best_budgets']['num_tokens']} tokens and {pr['best_budgets']['num_segments']} segments "
                     f"per token pruned; before pruning test {100 * pr['before']['test_acc']:.1f}%.")
    train = p["config"]["train"]
    search = f"grid lr {p['lrs']} × wd {p['wds']}"
    if p["prompt_lengths"]:
        search += f" × prompts {p['prompt_lengths']}"
    if p.get("batch_sizes") and len(set(p["batch_sizes"].values())) > 1:
        search += " (batch " + ", ".join(f"{b} for {n} prompts" for n, b in p["batch_sizes"].items()) + ")"
    lines += ["", f"Protocol: {train['epochs']} epochs (warm-up {train['warmup_epochs']}, lr schedule per "
              f"{train.get('schedule', 'step')}), batch {train['batch_size']}, {train['optimizer']}, "
              f"{_backbone_note(p)}, {search}{' (--tiny)' if p['tiny'] else ''}."]
    return "\n".join(lines) + "\n"


def summary_markdown(folder: Path) -> Optional[str]:
    """One table over every ``*/results.json`` of a dataset folder (one row per method)."""
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*/results.json"))]
    rows = [r for r in rows if "protocol" in r]
    if not rows:
        return None
    return markdown_table(
        ("method", "dataset", "test top-1 (%)", "paper (%)", "difference (points)", "seeds", "tunable"),
        [(r["method"], r["protocol"]["dataset"], f"{r['test_acc_mean']:.1f} ± {r['test_acc_std']:.1f}",
          _number(r["paper"]), _number(None if r["paper"] is None else r["test_acc_mean"] - r["paper"], "+.1f"),
          len(r["final"]), f"{r['final'][0]['tunable']:,}") for r in rows]) + "\n"


def prompt_length_list(method: str, prompt_lengths: Union[str, Sequence[int], None]) -> Optional[list[int]]:
    """``--prompt-lengths``: None (fixed), ``"paper"`` (VPT's {1, 5, 10, 50, 100, 200}) or a list of counts >= 1."""
    if not prompt_lengths:
        return None
    if not method.startswith("vpt"):
        raise ValueError("--prompt-lengths applies to vpt-deep and vpt-shallow (E²VPT's P is fixed at 5 in its "
                         "released FGVC configs).")
    if prompt_lengths == "paper" or list(prompt_lengths) == ["paper"]:
        return list(PAPER_PROMPT_LENGTHS)
    lengths = []
    for length in prompt_lengths:
        try:
            lengths.append(positive_int("--prompt-lengths", int(length)))
        except (TypeError, ValueError):
            raise ValueError(f"--prompt-lengths takes prompt counts >= 1 or 'paper' (VPT's "
                             f"{list(PAPER_PROMPT_LENGTHS)}), got {length!r}.") from None
    return lengths


def ensure_vtab_task(task: str, root: Path) -> None:
    """Refuse, in one line and before any training, a VTAB-1k task root that is not prepared; prepare the offline
    task (generated, no download) when its folder is missing."""
    if (root / "trainval.json").is_file():
        return
    if task in OFFLINE_TASKS and root.name == task:
        prepare_vtab(root.parent, tasks=[task])
        return
    source = "" if task in OFFLINE_TASKS else " (--archive DIR | --tfds-data-dir DIR)"
    raise ValueError(f"VTAB-1k task {task} is not prepared at {root} (no trainval.json); prepare it with "
                     f"`python -m data_prep vtab --root {root.parent}{source} --tasks {task}`, or point data.root "
                     "at its folder.")


def reproduction_plan(dataset: str, method: str, config: Union[str, Path, dict, RunConfig, None] = None,
                      overrides: Sequence[str] = (), tiny: bool = False, lrs: Optional[Sequence[float]] = None,
                      wds: Optional[Sequence[float]] = None, seeds: Optional[Sequence[int]] = None,
                      prompt_lengths: Union[str, Sequence[int], None] = None,
                      backbone: Optional[str] = None) -> tuple[RunConfig, dict]:
    """What :func:`reproduce` would run, without running it: the base run config and the plan it writes to
    ``protocol.json`` (grid, seeds, prompt lengths with their batch sizes, backbone, config); the arguments are
    :func:`reproduce`'s. ``python -m e2vpt_viz reproduce ... --plan`` prints it."""
    cfg = base_config(dataset, method, config, overrides, tiny, backbone)
    backbone = backbone_choice(dataset, backbone)
    lengths = prompt_length_list(method, prompt_lengths)
    grid_lrs = VTAB_PROMPT_LRS if vtab_task(dataset) and METHOD_SETTINGS[method]["lrs"] == PROMPT_LRS else None
    lrs = list(lrs or (grid_lrs or METHOD_SETTINGS[method]["lrs"])[:TINY["lrs"] if tiny else None])
    wds = grid_weight_decays(cfg, wds or (TINY["wds"] if tiny else WEIGHT_DECAYS))
    seeds = list(seeds or (TINY["seeds"] if tiny else FINAL_SEEDS))
    return cfg, _plan(dataset, method, cfg, lrs, wds, seeds, lengths, tiny, backbone)


def reproduce(dataset: str, method: str, out: Union[str, Path, None] = None,
              config: Union[str, Path, dict, RunConfig, None] = None, overrides: Sequence[str] = (), tiny: bool = False,
              lrs: Optional[Sequence[float]] = None, wds: Optional[Sequence[float]] = None,
              seeds: Optional[Sequence[int]] = None, prompt_lengths: Union[str, Sequence[int], None] = None,
              progress: bool = True, backbone: Optional[str] = None) -> dict:
    """Run (or resume) the protocol for one method on one dataset; returns what ``results.json`` holds.

    Args:
        dataset: cub, nabirds, flowers, dogs, cars (prepared with ``python -m data_prep``), starter, or a VTAB-1k
            task ``vtab-<task>`` (``python -m data_prep vtab``; ``vtab-starter_distance`` offline).
        method: one of ``METHODS`` (e2vpt, vpt-deep, vpt-shallow, linear, full, bias, partial).
        out: output folder (default ``results/reproduce/<dataset>/<method>``).
        config / overrides: base run config (default: ``cub_e2vpt`` for real data, ``starter``) and
            ``section.field=value`` overrides (e.g. ``data.root=...``, ``backbone.checkpoint=...``).
        tiny: the CI setting (see ``TINY``). lrs / wds / seeds: replace the papers' lists.
        prompt_lengths: VPT only: search these prompt lengths with lr and wd, or ``"paper"`` for VPT's list.
        backbone: ``BACKBONES`` key (default ``in21k``, the VPT paper's); FGVC datasets only.
    """
    cfg, plan = reproduction_plan(dataset, method, config, overrides, tiny, lrs, wds, seeds, prompt_lengths, backbone)
    lrs, wds, lengths, seeds = plan["lrs"], plan["wds"], plan["prompt_lengths"], plan["seeds"]
    if vtab_task(dataset) is not None:
        ensure_vtab_task(vtab_task(dataset), Path(cfg.data.root))
    out = Path(out or f"results/reproduce/{dataset}/{method}")
    previous = _read_json(out / "protocol.json")
    if previous is not None and previous != plan:
        changed = sorted(k for k in plan if previous.get(k) != plan[k])
        raise ValueError(f"{out} holds a reproduction with other settings ({', '.join(changed)} differ); "
                         "pass another --out or the same settings to resume it.")
    write_json(out / "protocol.json", plan)

    grid = _grid(cfg.replace(output_dir=str(out)), out, lrs, wds, lengths, progress, dataset, method)
    selected = _selected_config(cfg, grid, dataset, method)
    pruned = _prune(selected, grid, out, tiny, progress) if method == "e2vpt" else None
    final = [_final_run(selected, seed, grid, pruned, out, progress, trainval=vtab_task(dataset) is not None)
             for seed in seeds]
    mean, std = mean_std([100 * r["test_acc"] for r in final])
    best_metrics = _read_json(Path(grid["best"]["output_dir"]) / "metrics.json") or {}
    counts = best_metrics.get("parameters") or {}
    denominators = ({"backbone": counts["backbone"], "model": counts["model_total"]}
                    if "model_total" in counts else None)
    results = {"method": method, "protocol": plan, "grid": grid, "pruning": pruned, "final": final,
               "test_acc_mean": mean, "test_acc_std": std, "denominators": denominators,
               **paper_numbers(method, dataset)}
    write_json(out / "results.json", results)
    write_text(out / "results.md", markdown(results))
    summary = summary_markdown(out.parent)
    if summary:
        write_text(out.parent / "summary.md", summary)
    return results
