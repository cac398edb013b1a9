"""Numbers behind the attention figures, computed from recorded attention probabilities (no plotting here).

Record with :func:`~e2vpt_viz.attention.record_attention`; block ``l`` gives probabilities (B, heads, N, T_l + N)
whose key axis is ``[T_l key-value prompts | prefix (class, then register) tokens | P visual prompts | patches]`` and
whose query axis is the N tokens ``[prefix | P visual prompts | patches]``. The patch grid is read from the model,
never assumed to be 14 × 14.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Sequence

import torch

from .attention import record_attention
from .data import FGVC, Preprocessing, fixed_transforms, random_transforms, resize_size
from .model import PromptedViT

KEY_GROUPS = ("kv_prompts", "prefix", "registers", "visual_prompts", "patches")


@dataclass(frozen=True)
class TokenLayout:
    """Where each kind of token sits: prefix tokens (the class and distillation tokens, then ``num_registers``
    register tokens), visual prompts, then a (rows, cols) grid of patches."""

    num_prefix: int
    num_prompts: int
    grid: tuple[int, int]
    has_class_token: bool
    num_registers: int = 0

    @classmethod
    def of(cls, model: PromptedViT) -> "TokenLayout":
        bb = model.backbone
        prompts = model.num_prompts if model.prompts_enabled else 0
        registers = bb.reg_token.shape[1] if getattr(bb, "reg_token", None) is not None else 0
        return cls(bb.num_prefix_tokens, prompts, tuple(bb.patch_embed.grid_size), bb.cls_token is not None, registers)

    @property
    def num_tokens(self) -> int:
        return self.num_prefix + self.num_prompts + self.grid[0] * self.grid[1]

    def key_slices(self, num_kv: int) -> dict[str, slice]:
        """Slices of the key axis of one block's probabilities (num_kv = that block's T)."""
        first_prompt = num_kv + self.num_prefix
        first_patch = first_prompt + self.num_prompts
        first_register = first_prompt - self.num_registers
        return {"kv_prompts": slice(0, num_kv), "prefix": slice(num_kv, first_register),
                "registers": slice(first_register, first_prompt), "visual_prompts": slice(first_prompt, first_patch),
                "patches": slice(first_patch, first_patch + self.grid[0] * self.grid[1])}

    def check(self, probs: torch.Tensor) -> int:
        """Number of key-value prompts T of a (B, heads, N, T + N) tensor; a clear error if N does not fit."""
        if probs.dim() != 4 or probs.shape[2] != self.num_tokens or probs.shape[3] < self.num_tokens:
            raise ValueError(f"Attention probabilities of shape {tuple(probs.shape)} do not fit a model with "
                             f"{self.num_tokens} tokens ({self.num_prefix} prefix, {self.num_prompts} prompts, "
                             f"{self.grid[0]}x{self.grid[1]} patches); record them from the same model.")
        return probs.shape[3] - self.num_tokens


def attention_shares(probs_per_layer: Sequence[torch.Tensor], layout: TokenLayout,
                     queries: str = "cls") -> list[dict[str, float]]:
    """Per block, the share of attention that goes to each key group (KEY_GROUPS), averaged over images, heads and
    the chosen queries ("cls": the class token; "patches"; "all"). The shares of a block sum to 1."""
    rows = []
    for probs in probs_per_layer:
        num_kv = layout.check(probs)
        q = _query_slice(layout, queries)
        selected = probs[:, :, q]  # (B, H, Q, T + N)
        rows.append({group: selected[..., s].sum(-1).mean().item()
                     for group, s in layout.key_slices(num_kv).items()})
    return rows


def cls_to_patches(probs: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Attention from the class token to every patch: (B, heads, rows, cols)."""
    num_kv = layout.check(probs)
    patches = layout.key_slices(num_kv)["patches"]
    return probs[:, :, _query_slice(layout, "cls"), patches].squeeze(2).unflatten(-1, layout.grid)


def cls_to_kv_prompts(probs: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Attention mass from the class token to each key-value prompt: (B, heads, T) (T = 0 for a block without them)."""
    num_kv = layout.check(probs)
    return probs[:, :, _query_slice(layout, "cls"), :num_kv].squeeze(2)


def kv_prompt_maps(probs: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Attention from each patch to each key-value prompt, on the patch grid: (B, heads, T, rows, cols)."""
    num_kv = layout.check(probs)
    if num_kv == 0:
        raise ValueError("This block has no key-value prompts: use an E2VPT model (kv_layers='all' for every block, "
                         "'first' has them in block 0 only).")
    maps = probs[:, :, _query_slice(layout, "patches"), :num_kv]  # (B, H, patches, T)
    return maps.transpose(-1, -2).unflatten(-1, layout.grid)


def attention_rollout(probs_per_layer: Sequence[torch.Tensor], layout: TokenLayout) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) from the class token to the patches: (B, rows, cols).

    Per block: the token-to-token part of the head-averaged attention (key-value prompts are keys without a token, so
    their mass is dropped and rows renormalised), plus the identity for the residual path, rows renormalised; the
    blocks are multiplied in order.
    """
    rollout = None
    for probs in probs_per_layer:
        num_kv = layout.check(probs)
        tokens = probs[..., num_kv:].mean(1)  # (B, N, N)
        tokens = tokens / tokens.sum(-1, keepdim=True)
        step = 0.5 * tokens + 0.5 * torch.eye(tokens.shape[-1], dtype=tokens.dtype, device=tokens.device)
        rollout = step if rollout is None else step @ rollout
    return rollout[:, _query_slice(layout, "cls").start, _query_slice(layout, "patches")].unflatten(-1, layout.grid)


def _query_slice(layout: TokenLayout, queries: str) -> slice:
    if queries == "cls":
        if not layout.has_class_token:
            raise ValueError("This backbone has no class token (it pools patches); use queries='patches' or 'all'.")
        return slice(0, 1)
    if queries == "patches":
        return slice(layout.num_prefix + layout.num_prompts, layout.num_tokens)
    if queries == "all":
        return slice(0, layout.num_tokens)
    raise ValueError(f"queries must be 'cls', 'patches' or 'all', got {queries!r}.")


def parts_to_input(parts: torch.Tensor, image_size: tuple[int, int], crop_size: int,
                   preprocessing: Preprocessing = FGVC) -> torch.Tensor:
    """Part keypoints (K, 3) x, y, visible in original-image pixels -> the model input's pixels after the eval
    transform (crop pipeline: resize the short side to crop·256/224, centre crop; square: resize to crop × crop);
    parts cropped away become invisible."""
    width, height = image_size
    if preprocessing.resize == "square":
        new_w = new_h = crop_size
    else:
        scale = resize_size(crop_size) / min(width, height)
        new_w, new_h = round(width * scale), round(height * scale)
    left, top = (new_w - crop_size) // 2, (new_h - crop_size) // 2
    x = parts[:, 0] * new_w / width - left
    y = parts[:, 1] * new_h / height - top
    inside = (x >= 0) & (x < crop_size) & (y >= 0) & (y < crop_size)
    return torch.stack([x, y, parts[:, 2] * inside], dim=1)


def grounding_score(maps: torch.Tensor, parts: torch.Tensor, patch_size: int) -> torch.Tensor:
    """How often the attention peak falls on an annotated part: maps (B, heads, rows, cols), parts (B, K, 3) in input
    pixels (see :func:`parts_to_input`) -> (heads,) fraction of images whose peak patch holds a visible keypoint."""
    B, H, rows, cols = maps.shape
    peak = maps.flatten(2).argmax(-1)  # (B, H)
    peak_row, peak_col = peak // cols, peak % cols
    part_row = (parts[:, :, 1] // patch_size).long()  # (B, K)
    part_col = (parts[:, :, 0] // patch_size).long()
    visible = parts[:, :, 2] > 0
    hit = ((peak_row[:, :, None] == part_row[:, None]) & (peak_col[:, :, None] == part_col[:, None])
           & visible[:, None]).any(-1)  # (B, H)
    return hit.float().mean(0)


@torch.no_grad()
def capture_attention(model: PromptedViT, images: torch.Tensor, prompts: bool = True) -> list[torch.Tensor]:
    """Attention probabilities of every block for ``images`` (B, 3, H, W), in eval mode: a list of
    (B, heads, N, T_l + N) tensors on the CPU. ``prompts=False`` records the plain frozen backbone."""

    device = next(model.parameters()).device
    with model.evaluating(), record_attention(model) as recorder, \
            (nullcontext() if prompts else model.disable_prompts()):
        model(images.to(device))
    return [p.float().cpu() for p in recorder.probs]


def class_token_attention(model: PromptedViT, images: torch.Tensor, prompts: bool = True) -> dict:
    """Where the class token of ``model`` looks on ``images`` (B, 3, H, W), with the token layout read from the model.

    Returns ``{"shares": one dict per block (:func:`attention_shares`, queries "cls"), "mean_shares": those shares
    averaged over the blocks, "last_block": (B, rows, cols) the last block's class-token attention over the patches,
    averaged over heads}``; ``prompts=False``: the frozen backbone alone.
    """
    probs = capture_attention(model, images, prompts)
    layout = TokenLayout.of(model)
    if not prompts:
        layout = replace(layout, num_prompts=0)
    shares = attention_shares(probs, layout, "cls")
    return {"shares": shares, "mean_shares": {g: sum(row[g] for row in shares) / len(shares) for g in KEY_GROUPS},
            "last_block": cls_to_patches(probs[-1], layout).mean(1)}


def grounding_by_layer(probs_per_layer: Sequence[torch.Tensor], layout: TokenLayout, parts: torch.Tensor,
                       patch_size: int) -> torch.Tensor:
    """Grounding score of the class token's attention peak for every block and head: (layers, heads)."""
    return torch.stack([grounding_score(cls_to_patches(p, layout), parts, patch_size) for p in probs_per_layer])


def kv_prompt_grounding(probs_per_layer: Sequence[torch.Tensor], layout: TokenLayout, parts: torch.Tensor,
                        patch_size: int) -> torch.Tensor:
    """For every block with key-value prompts and every prompt t: how often the patch that attends most to t (heads
    averaged) holds a visible part. (layers with prompts, T)."""
    rows = []
    for probs in probs_per_layer:
        if layout.check(probs) == 0:
            break
        maps = kv_prompt_maps(probs, layout).mean(1)  # (B, T, rows, cols)
        rows.append(grounding_score(maps, parts, patch_size))
    if not rows:
        raise ValueError("The model has no key-value prompts: grounding of KV prompts needs an E2VPT model.")
    return torch.stack(rows)


def grounding_chance(parts: torch.Tensor, grid: tuple[int, int], patch_size: int) -> float:
    """The grounding score of a peak drawn uniformly at random: the mean fraction of patches holding a visible part."""
    rows, cols = grid
    hits = []
    for image_parts in parts:
        visible = image_parts[image_parts[:, 2] > 0]
        cells = {(int(y // patch_size), int(x // patch_size)) for x, y, _ in visible.tolist()}
        hits.append(len({c for c in cells if 0 <= c[0] < rows and 0 <= c[1] < cols}) / (rows * cols))
    return float(sum(hits) / max(1, len(hits)))


def annotated_batch(dataset, indices: Sequence[int], crop_size: int,
                    preprocessing: Preprocessing = FGVC) -> dict[str, torch.Tensor]:
    """Eval-transformed images of an FGVC dataset (built without a transform) with what the figures need;
    ``preprocessing`` as the model was trained with (a run config's ``cfg.data.preprocessing(cfg.backbone.name)``).

    Returns ``images`` (B, 3, crop, crop) normalised model input, ``views`` (B, crop, crop, 3) uint8 of the same
    crop for display, ``labels`` (B,), and ``parts`` (B, K, 3) keypoints in input pixels (CUB-format roots only;
    absent otherwise).
    """
    from PIL import Image


    view = fixed_transforms(crop_size, False, preprocessing)  # show and feed one crop
    normalise = random_transforms(crop_size, False, preprocessing)
    batch: dict[str, list] = {"images": [], "views": [], "labels": [], "parts": []}
    for i in indices:
        image, label = dataset[i]
        if not isinstance(image, Image.Image):
            raise TypeError("annotated_batch needs a dataset that returns PIL images: build it with transform=None.")
        crop = view(image)  # (3, crop, crop) uint8
        batch["images"].append(normalise(crop))
        batch["views"].append(crop.permute(1, 2, 0))
        batch["labels"].append(label)
        try:
            batch["parts"].append(parts_to_input(torch.from_numpy(dataset.parts(i)), image.size, crop_size,
                                                 preprocessing))
        except FileNotFoundError:  # not a CUB-format root: no part annotations
            pass
    out = {"images": torch.stack(batch["images"]), "views": torch.stack(batch["views"]),
           "labels": torch.tensor(batch["labels"])}
    if len(batch["parts"]) == len(indices):
        out["parts"] = torch.stack(batch["parts"])
    return out
