"""Pre-train the offline starter's tiny ViT on the synthetic *source* species (disjoint from the target species).

This is the miniature of ImageNet-21k pre-training: ``python -m e2vpt_viz pretrain-starter`` trains the
``starter-vit`` backbone from scratch with AdamW and writes its weights (without the source head) as safetensors,
with the seed, command, data spec and accuracy stored in the file's metadata. The committed weights were made by
exactly this command, so anyone can reproduce them.
"""
from __future__ import annotations

import datetime
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional, Union

import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from ..backbones import STARTER_BACKBONES, starter_weights_path
from ..checkpoint import atomic_write
from ..data import make_loaders
from ..methods import FullConfig, apply_prompts
from ..training import TrainConfig, evaluate, fit, result_settings

# From-scratch recipe: AdamW, lr 1e-3 at batch 128 (base_lr is scaled by batch/256), short warm-up, cosine decay.
PRETRAIN_CONFIG = TrainConfig(epochs=30, warmup_epochs=2, batch_size=128, base_lr=2e-3, weight_decay=0.05,
                              optimizer="adamw", seed=0)


DEFAULT_OUT = "results/starter_backbone"


def pretrain_starter(data_root: Union[str, Path] = "data/starter-source", out: Union[str, Path, None] = None,
                     epochs: Optional[int] = None, seed: int = 0, name: str = "starter-vit",
                     progress: bool = True, overwrite: bool = False) -> Path:
    """Train ``name`` from scratch on the source species and save its backbone weights.

    Args:
        data_root: source dataset root; generated with ``data_prep.synthetic`` (task "source") if missing; one with
            another spec is used with a warning (the spec goes into the weights' metadata).
        out: weights file; default ``results/starter_backbone/<name>.safetensors``. The packaged weights are replaced
            only when ``out`` names them and ``overwrite`` is set; an existing file is never replaced without it.
        epochs: override the recipe's epoch count. seed: initialisation and data-order seed.
        overwrite: allow replacing an existing ``out``.

    Returns:
        The path written.
    """
    from data_prep.synthetic import ensure_synthetic

    path = Path(out) if out else Path(DEFAULT_OUT) / f"{name}.safetensors"
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; give a weights file such as {path / (name + '.safetensors')}.")
    if path.exists() and not overwrite:
        packaged = path.resolve() == starter_weights_path(name).resolve()
        raise ValueError(f"{path} exists; choose another --out, or add --overwrite to replace it"
                         + (" (it is the packaged starter backbone)." if packaged else "."))
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"--epochs {epochs!r}: give a whole number of epochs, at least 1 (the recipe trains "
                         f"{PRETRAIN_CONFIG.epochs}).")
    config = replace(PRETRAIN_CONFIG, seed=seed, progress=progress, **(
        {"epochs": epochs, "warmup_epochs": min(PRETRAIN_CONFIG.warmup_epochs, epochs - 1)} if epochs else {}))
    root = Path(data_root)
    ensure_synthetic(root, task="source", seed=seed)
    crop = STARTER_BACKBONES[name]["img_size"]
    loaders = make_loaders(root, crop, config.batch_size, num_workers=0, cache=True, seed=seed)
    torch.manual_seed(seed)
    backbone = VisionTransformer(num_classes=0, **STARTER_BACKBONES[name])
    model = apply_prompts(backbone, FullConfig(), loaders["train"].dataset.num_classes)
    started = time.perf_counter()
    history = fit(model, loaders["train"], loaders["val"], config)
    val = evaluate(model, loaders["val"])
    spec_file = root / "synthetic_spec.json"
    metadata = {
        "name": name, "architecture": STARTER_BACKBONES[name], "seed": seed,
        "command": " ".join(["python -m e2vpt_viz pretrain-starter", *sys.argv[2:]]) if sys.argv[1:2] == [
            "pretrain-starter"] else f"pretrain_starter({str(data_root)!r}, epochs={epochs}, seed={seed})",
        "train_config": result_settings(asdict(config)),
        "data_spec": json.loads(spec_file.read_text()) if spec_file.exists() else None,
        "source_val_acc": val["acc"], "final_train_loss": history[-1]["train_loss"],
        "train_seconds": round(time.perf_counter() - started, 1), "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
    state = {k: v.detach().contiguous() for k, v in model.backbone.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={k: json.dumps(v) for k, v in metadata.items()}))
    return path
