"""PVP: pre-trained prompt modules as the initialisation of few-shot prompt tuning (the prompt-module file format).

Prompt tuning from a random initialisation is weak with 1-2 images per class. PVP first trains the prompt modules
(visual prompts and key-value prompts) on a large *source* task with the same frozen backbone, saves them without the
head, and starts every downstream task from them (new head, masks reset to ones).

The file holds the prompts *as they act*: E²VPT multiplies its visual prompts by the token and segment masks
(P·γ·Γ), so the file stores that product, and a downstream model whose masks start at ones computes at step 0
exactly what the pre-trained model computed (given the same head).

    save_prompt_modules(source_model, "pvp.safetensors", source="...")   # after training on the source task
    load_prompt_modules(downstream_model, "pvp.safetensors")               # downstream init

Pre-training on a source task and the few-shot comparison are in :mod:`e2vpt_viz.experiments.fewshot`.

On the offline starter the source task is the synthetic *source* species; for real use any prepared FGVC root
(train/val/test.json) or an ImageNet-format folder (``train/<class>/*.jpg`` and ``val/<class>/*.jpg``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

import torch

from .checkpoint import CheckpointMismatchError, backbone_signature, read_safetensors, save_safetensors
from .model import PromptedViT

PROMPT_MODULES = ("visual_prompts", "kv_prompts", "value_prompts")
FILE_FORMAT = "2"  # 2: visual prompts saved as they act (P·γ·Γ); files without it hold the raw prompts without masks


def _prompt_modules(model: PromptedViT) -> dict[str, torch.Tensor]:
    """The model's prompt parameters by name (visual prompts raw, without their masks)."""
    modules = {name: getattr(model, name) for name in PROMPT_MODULES if getattr(model, name) is not None}
    if not modules:
        raise ValueError("This model has no prompt modules to pre-train; use a prompt method (e2vpt, vpt-deep, "
                         "vpt-shallow).")
    return modules


def save_prompt_modules(model: PromptedViT, path: Union[str, Path], **metadata) -> Path:
    """Write the prompts as they act (visual prompts times their masks, P·γ·Γ; key-value prompts) with the backbone
    signature, atomically; no head, no masks."""
    state = {name: p.detach().cpu().contiguous() for name, p in _prompt_modules(model).items()}
    with torch.no_grad():
        state["visual_prompts"] = model.masked_prompts().detach().cpu().contiguous()  # (depth, P, D)
    meta = {"backbone": json.dumps(backbone_signature(model)), "method": json.dumps(model.method_config.to_dict()),
            "format": json.dumps(FILE_FORMAT), **{k: json.dumps(v) for k, v in metadata.items()}}
    return save_safetensors(state, path, meta)


def _read_prompt_file(path: Union[str, Path]) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(raw metadata, tensors) of a PVP file; a clear error when it is missing, truncated or corrupted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PVP prompt file {path} does not exist; make one with "
                                "`python -m e2vpt_viz pvp-pretrain --config CONFIG --source ROOT --out FILE`.")
    return read_safetensors(path, "PVP prompt file")


def prompt_file_info(path: Union[str, Path]) -> dict:
    """What a PVP file holds: its metadata (backbone, method, source, source_val_acc, command, ...) decoded, and
    ``shapes`` of its prompt tensors."""
    meta, saved = _read_prompt_file(path)
    return {**{k: json.loads(v) for k, v in meta.items()}, "shapes": {k: tuple(v.shape) for k, v in saved.items()}}


def load_prompt_modules(model: PromptedViT, path: Union[str, Path]) -> PromptedViT:
    """Initialise ``model``'s prompt modules from a PVP file; the head stays new and the masks stay ones, so the
    prompts act as they did in the pre-trained model.

    Raises :class:`CheckpointMismatchError` naming both sides when the backbone or a prompt shape differs, or when
    the file was written before prompts were saved as they act (its masks are lost; pre-train again).
    """
    meta, saved = _read_prompt_file(path)
    if json.loads(meta.get("format", '"1"')) != FILE_FORMAT:
        raise CheckpointMismatchError(
            f"PVP prompts {path} were saved by an earlier e2vpt-viz without their token and segment masks, so they "
            "would not act as they did when pre-trained; run its pvp-pretrain command again (it reads the finished "
            "source run back and rewrites the file).")
    found_backbone = json.loads(meta.get("backbone", "{}"))
    expected_backbone = backbone_signature(model)
    diffs = [f"{k}: file {found_backbone.get(k)!r} vs model {v!r}" for k, v in expected_backbone.items()
             if found_backbone.get(k) != v]
    targets = _prompt_modules(model)
    if set(saved) != set(targets):
        diffs.append(f"prompt modules: file {sorted(saved)} vs model {sorted(targets)}")
    diffs += [f"{name} shape: file {tuple(saved[name].shape)} vs model {tuple(p.shape)}"
              for name, p in targets.items() if name in saved and saved[name].shape != p.shape]
    if diffs:
        raise CheckpointMismatchError(f"PVP prompts {path} do not fit this model; " + "; ".join(diffs)
                                      + ". Pre-train them with the same backbone and prompt counts.")
    with torch.no_grad():
        for name, p in targets.items():
            p.copy_(saved[name])
    return model
