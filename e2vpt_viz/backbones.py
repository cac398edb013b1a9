"""Backbones by name: any timm Vision Transformer, or the offline starter's tiny ViT shipped with the package.

``load_backbone("vit_base_patch16_224.orig_in21k")`` downloads through timm on a machine with internet;
``load_backbone("vit_base_patch16_224", checkpoint="ViT-B_16.npz")`` loads a local file instead (``.safetensors``,
``.pth``/``.pt``/``.bin`` read with ``weights_only=True``, or the original JAX ``.npz``);
``load_backbone("starter-vit")`` builds the tiny ViT pre-trained by ``python -m e2vpt_viz pretrain-starter``.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Optional, Union

import timm
import torch
from safetensors import safe_open
from timm.models.vision_transformer import VisionTransformer

from .checkpoint import load_torch_state, read_safetensors
from .model import backbone_family, check_supported_backbone, family_refusal

WEIGHTS_DIR = Path(__file__).parent / "weights"

# The offline starter backbones: 64-px images, 8-px patches (8 x 8 grid), 12 blocks of width 96 with 6 heads of 16.
# starter-vit-reg4 adds 4 register tokens (Darcet et al., "Vision Transformers Need Registers", arXiv 2309.16588):
# learned tokens after the class token that every block reads and writes but no head pools, as in DINOv2-reg; it is
# pre-trained by the same command, data and seed as starter-vit, so the two differ only by the registers.
_STARTER_ARCH = dict(img_size=64, patch_size=8, embed_dim=96, depth=12, num_heads=6, mlp_ratio=4.0)
STARTER_BACKBONES: dict[str, dict] = {
    "starter-vit": _STARTER_ARCH,
    "starter-vit-reg4": dict(_STARTER_ARCH, reg_tokens=4),
}

# Normalisation used for every backbone by default, as in the VPT code (ImageNet statistics, also for the JAX
# weights); ``data.normalize=backbone`` uses each backbone's own (backbone_mean_std).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneError(ValueError):
    """A backbone name or weights file that cannot be used; the message says what to do instead."""


def starter_weights_path(name: str = "starter-vit") -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def _close_vit_names(name: str) -> list[str]:
    candidates = list(STARTER_BACKBONES) + timm.list_models("vit_*") + timm.list_models("deit*")
    close = difflib.get_close_matches(name.split(".")[0], candidates, n=5, cutoff=0.5)
    return close or ["vit_base_patch16_224", "vit_small_patch16_224", "deit3_small_patch16_224", "starter-vit"]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights from a local file, loaded safely: no pickled code is executed, and a truncated, corrupted or
    pickle-bearing file raises :class:`~e2vpt_viz.checkpoint.CheckpointReadError`."""
    if path.suffix == ".safetensors":
        return read_safetensors(path, "Backbone weights")[1]
    state = load_torch_state(path, "Backbone weights", require_zip=False)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def _load_starter(name: str, pretrained: bool, checkpoint: Optional[Path]) -> VisionTransformer:
    model = VisionTransformer(num_classes=0, **STARTER_BACKBONES[name])
    if checkpoint is None and not pretrained:
        return model
    path = checkpoint or starter_weights_path(name)
    if not path.exists():
        raise BackboneError(f"Starter weights {path} are missing. Re-create them with "
                            f"`python -m e2vpt_viz pretrain-starter --out {path}` or pass pretrained=False.")
    state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith("head.")}
    model.load_state_dict(state)
    return model


def starter_metadata(name: str = "starter-vit") -> dict:
    """How the committed starter weights were made (seed, command, data spec, accuracy), from the file's metadata."""
    with safe_open(str(starter_weights_path(name)), framework="pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


def check_backbone_name(name: str) -> None:
    """Raise :class:`BackboneError` (with close matches) unless ``name`` is a starter or a timm model name."""
    if not isinstance(name, str) or not (name in STARTER_BACKBONES or timm.is_model(name)):
        raise BackboneError(f"Unknown backbone {name!r}. Close matches: {_close_vit_names(str(name))}. Any timm ViT "
                            "name works (timm.list_models('vit_*')), or 'starter-vit' offline.")


def backbone_mean_std(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel (mean, std) a backbone's weights were pre-trained with: timm's ``pretrained_cfg`` of ``name``
    (e.g. CLIP's (0.481, 0.458, 0.408) / (0.269, 0.261, 0.276), SigLIP's and the original ImageNet-21k ViT-B/16's
    0.5 / 0.5); ImageNet's for the starters, which were pre-trained with it."""
    check_backbone_name(name)
    if name in STARTER_BACKBONES:
        return IMAGENET_MEAN, IMAGENET_STD
    cfg = timm.models.get_pretrained_cfg(name)
    mean, std = getattr(cfg, "mean", None), getattr(cfg, "std", None)
    if mean is None or std is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def backbone_input_size(name: str) -> tuple[int, int, int]:
    """The (channels, height, width) a backbone was made for: the starter's ``img_size``, or timm's ``pretrained_cfg``
    ``input_size`` of ``name`` (224 px when timm gives none; e.g. (3, 518, 518) for DINOv2)."""
    check_backbone_name(name)
    if name in STARTER_BACKBONES:
        size = STARTER_BACKBONES[name]["img_size"]
        return (3, size, size)
    return tuple(getattr(timm.models.get_pretrained_cfg(name), "input_size", None) or (3, 224, 224))


def load_backbone(name: str, pretrained: bool = True,
                  checkpoint: Union[str, Path, None] = None, **timm_kwargs) -> VisionTransformer:
    """A timm Vision Transformer (``VisionTransformer``, DeiT, ``Eva``: EVA-02 and RoPE ViTs, ``Beit``,
    ``VisionTransformerRelPos``) by name, without a classifier (``num_classes=0``).

    Args:
        name: a timm ViT name (``vit_base_patch16_224``, ``vit_base_patch16_224.orig_in21k``, ``deit3_small_...``)
            or a starter name (``starter-vit``).
        pretrained: load pre-trained weights (timm download, or the committed starter weights).
        checkpoint: a local weights file to load instead of downloading.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``img_size=384``).

    Raises:
        BackboneError: unknown or non-ViT name (with close matches), weights that cannot be fetched or do not fit.
    """
    path = Path(checkpoint).expanduser() if checkpoint is not None else None
    if path is not None and not path.exists():
        raise BackboneError(f"Checkpoint file {path} does not exist.")
    check_backbone_name(name)
    if name in STARTER_BACKBONES:
        return _load_starter(name, pretrained, path)
    model = timm.create_model(name, pretrained=False, num_classes=0, **timm_kwargs)
    if backbone_family(model) is None and family_refusal(model) is None:
        raise BackboneError(f"{name!r} is a {type(model).__name__}, not a Vision Transformer; prompts need a ViT. "
                            f"ViT names to try: {_close_vit_names(name)}.")
    try:
        check_supported_backbone(model)  # refused families and blocks, before any weights are fetched
    except TypeError as err:
        raise BackboneError(f"{name!r}: {err}") from None
    if path is None and not pretrained:
        return model
    try:
        overlay = None
        if path is not None:
            overlay = (dict(file=str(path), custom_load=True)  # timm's own JAX .npz reader (ViT-B_16.npz)
                       if path.suffix == ".npz" else dict(state_dict=_read_state_dict(path)))
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=0,
                                 **timm_kwargs)
    except RuntimeError as err:
        if path is not None:
            raise BackboneError(f"Weights in {path} do not fit {name!r}: {str(err).splitlines()[0]} ... "
                                "Check that the file was saved from this architecture.") from None
        raise _download_error(name, err) from None
    except Exception as err:  # network and hub errors come in many types (OSError, HTTPError, LocalEntryNotFound)
        if path is not None:
            raise BackboneError(f"Could not read weights from {path} (only plain tensors are loaded): "
                                f"{str(err).splitlines()[0][:300]}") from None
        raise _download_error(name, err) from None


def _download_error(name: str, err: Exception) -> BackboneError:
    return BackboneError(
        f"Could not fetch pre-trained weights for {name!r} ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
        f"Without internet, download the weights elsewhere and pass the file: "
        f"load_backbone({name!r}, checkpoint='path/to/weights.safetensors' or '.npz'), "
        "or use the offline starter: load_backbone('starter-vit').")
