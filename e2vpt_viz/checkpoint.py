"""Prompt-only checkpoints (safetensors, kilobytes per task) and atomic file writes.

A prompt checkpoint stores what a method trained (prompts, masks, head, and trained backbone weights for the
baselines) plus, as metadata, the method config and the backbone's shape signature, so loading into a model of
another backbone or config fails with a clear message instead of silently mis-loading.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .model import PromptedViT


class CheckpointMismatchError(ValueError):
    """A checkpoint made for another backbone, method config or task."""


def atomic_write(path: Union[str, Path], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    Readers see either the old file or the complete new one, never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def backbone_signature(model: PromptedViT) -> dict:
    """Shape facts that a checkpoint must agree with: width, depth, heads, patch and image size, prefix tokens."""
    bb = model.backbone
    return {"embed_dim": bb.embed_dim, "depth": len(bb.blocks), "num_heads": bb.blocks[0].attn.num_heads,
            "patch_size": list(bb.patch_embed.patch_size), "img_size": list(bb.patch_embed.img_size),
            "num_prefix_tokens": bb.num_prefix_tokens}


def model_signature(model: PromptedViT) -> dict:
    """Everything that fixes the shapes of a model's trained tensors."""
    return {"backbone": backbone_signature(model), "method": model.method_config.to_dict(),
            "num_classes": model.num_classes}


def trained_state(model: PromptedViT) -> dict[str, torch.Tensor]:
    """The tensors a method trains (requires_grad) plus the masks, detached and contiguous on CPU."""
    state = {}
    for name, param in model.named_parameters():
        if param.requires_grad or name in ("token_mask", "segment_mask"):
            state[name] = param.detach().cpu().contiguous()
    return state


def restore_trained_state(model: PromptedViT, state: dict[str, torch.Tensor], source: str) -> PromptedViT:
    """Copy saved trained tensors (see :func:`trained_state`) into ``model``; every one it trains must be there."""
    missing = set(trained_state(model)) - set(state)
    if missing:
        raise CheckpointMismatchError(f"{source} lacks {sorted(missing)[:5]}.")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, value in state.items():
            params[key].copy_(value)
    return model


def check_signature(found: dict, expected: dict, source: str) -> None:
    """Raise :class:`CheckpointMismatchError` naming each field that differs."""
    diffs = [f"{key}: checkpoint {found.get(key)!r} vs model {expected[key]!r}"
             for key in expected if found.get(key) != expected[key]]
    if diffs:
        raise CheckpointMismatchError(f"{source} was made for another model; " + "; ".join(diffs)
                                      + ". Build the model with the same backbone, method config and classes.")


def save_prompts(model: PromptedViT, path: Union[str, Path], **metadata) -> Path:
    """Write the trained tensors and the model signature to a safetensors file, atomically."""
    meta = {"signature": json.dumps(model_signature(model)),
            **{k: json.dumps(v) for k, v in metadata.items()}}
    state = trained_state(model)
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def read_prompt_metadata(path: Union[str, Path]) -> dict:
    """The JSON metadata of a prompt checkpoint (signature and whatever was passed to :func:`save_prompts`)."""
    with safe_open(str(path), framework="pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


def load_prompts(model: PromptedViT, path: Union[str, Path]) -> PromptedViT:
    """Load a prompt checkpoint into a model built with the same backbone and method config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Prompt checkpoint {path} does not exist.")
    meta = read_prompt_metadata(path)
    check_signature(meta.get("signature", {}), model_signature(model), f"Checkpoint {path}")
    with safe_open(str(path), framework="pt") as f:
        state = {key: f.get_tensor(key) for key in f.keys()}
    return restore_trained_state(model, state, f"Checkpoint {path}")
