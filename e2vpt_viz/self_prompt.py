"""Self-Prompt Tuning's initialisation: visual prompts that start as prototypes of the downstream data's tokens.

Prompts that VPT learns end up close to the patch tokens they sit beside (Wang et al., "Revisiting the Power of
Prompt for Visual Tuning", ICML 2024, arXiv 2402.02382), so SPT starts them there: for every layer that gets fresh
prompts, run the frozen backbone on training images, collect the patch tokens entering that layer, and take P of their
prototypes as that layer's P prompts. Here the prototypes are k-means centres (k = P, k-means++ seeding, Lloyd
steps), one of the paper's choices; ``prototypes="sample"`` takes P tokens at random instead, its cheapest one.
Key-value prompts keep their random start (they live in head space, where no token sits).

    init_prompts_from_data(model, loaders["train"], max_images=256, seed=0)
    # or, in a run config: method.prompt_init=spt (VPT and E²VPT)
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch

from .checks import positive_int
from .model import require_prompted

PROTOTYPES = ("kmeans", "sample")


@torch.no_grad()
def kmeans(tokens: torch.Tensor, k: int, steps: int = 20, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """k-means centres (k, D) of ``tokens`` (M, D), M >= k: k-means++ seeding, then ``steps`` Lloyd steps (a centre
    that loses every token keeps its place)."""
    tokens = tokens.float()
    first = torch.randint(len(tokens), (1,), generator=generator)
    centres = [tokens[first[0]]]
    nearest = (tokens - centres[0]).pow(2).sum(1)
    for _ in range(1, k):
        pick = torch.multinomial(nearest + 1e-12, 1, generator=generator)[0]
        centres.append(tokens[pick])
        nearest = torch.minimum(nearest, (tokens - tokens[pick]).pow(2).sum(1))
    centres = torch.stack(centres)
    for _ in range(steps):
        owner = torch.cdist(tokens, centres).argmin(1)  # (M,)
        sums = torch.zeros_like(centres).index_add_(0, owner, tokens)
        counts = torch.bincount(owner, minlength=k).unsqueeze(1)
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
    return centres


@torch.no_grad()
def block_inputs(model, images: torch.Tensor, layers: int) -> list[torch.Tensor]:
    """The patch tokens entering each of the first ``layers`` blocks of the plain backbone (prompts disabled), each
    (B, patches, D), for images (B, 3, H, W)."""
    model = require_prompted(model, "block_inputs")
    with model.evaluating(), model.disable_prompts(), model.using(skip_unread_tokens=False):
        x, rope, shared_bias = model._embed(images)
        n = model.num_backbone_prefix
        inputs = []
        for layer, blk in enumerate(model.backbone.blocks[:layers]):
            inputs.append(x[:, n:])
            block_rope = rope[layer] if rope is not None and getattr(model.backbone, "rope_mixed", False) else rope
            x = model._block(blk, x, layer, None, block_rope, shared_bias)
    return inputs


@torch.no_grad()
def init_prompts_from_data(model, batches: Iterable, max_images: int = 256, prototypes: str = "kmeans",
                           max_tokens: int = 20000, seed: int = 0) -> dict:
    """Set every prompted layer's visual prompts (prompt_depth, P, D) to P prototypes of the patch tokens entering
    that layer, over the first ``max_images`` images of ``batches`` (an iterable of (images, labels), e.g. the train
    loader); at most ``max_tokens`` tokens per layer (a seeded random subset) go into the clustering.

    Returns ``{"images": n, "tokens_per_layer": m, "prototypes": ...}``.
    """
    model = require_prompted(model, "init_prompts_from_data")
    if model.visual_prompts is None:
        raise ValueError("init_prompts_from_data needs a model with visual prompts (vpt-shallow, vpt-deep, e2vpt); "
                         f"this one ({model.method_config.method_name()}) has none.")
    if prototypes not in PROTOTYPES:
        raise ValueError(f"prototypes must be one of {list(PROTOTYPES)}, got {prototypes!r}.")
    max_images, max_tokens = positive_int("max_images", max_images), positive_int("max_tokens", max_tokens)
    depth, P = model.visual_prompts.shape[:2]
    device = model.visual_prompts.device
    per_layer: list[list[torch.Tensor]] = [[] for _ in range(depth)]
    seen = 0
    for images, _ in batches:
        images = images[:max_images - seen].to(device)
        for layer, tokens in enumerate(block_inputs(model, images, depth)):
            per_layer[layer].append(tokens.reshape(-1, tokens.shape[-1]).float().cpu())
        seen += len(images)
        if seen >= max_images:
            break
    if seen == 0:
        raise ValueError("init_prompts_from_data got no images; pass the training loader.")
    generator = torch.Generator().manual_seed(seed)
    centres = []
    for chunks in per_layer:
        tokens = torch.cat(chunks)
        if len(tokens) > max_tokens:
            tokens = tokens[torch.randperm(len(tokens), generator=generator)[:max_tokens]]
        if len(tokens) < P:
            raise ValueError(f"{len(tokens)} tokens cannot give {P} prototypes; pass more images (max_images).")
        if prototypes == "kmeans":
            centres.append(kmeans(tokens, P, generator=generator))
        else:
            centres.append(tokens[torch.randperm(len(tokens), generator=generator)[:P]])
    model.visual_prompts.copy_(torch.stack(centres).to(model.visual_prompts.dtype))
    return {"images": seen, "tokens_per_layer": min(max_tokens, sum(len(chunk) for chunk in per_layer[0])),
            "prototypes": prototypes}
