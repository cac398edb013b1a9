"""Input attributions (Captum) and class-token embeddings for a PromptedViT of any method; tensors only, no plotting.

Three attributions of one target logit per image, all on the normalised model input:

* :func:`integrated_gradients`: pixels (B, 3, H, W); completeness: they sum to f(x) − f(baseline) for the target.
* :func:`occlusion`: one value per patch (B, rows, cols): how much the logit drops when that patch is replaced by
  the baseline (windows and strides are the backbone's patch size).
* :func:`grad_cam`: Grad-CAM on the tokens entering the last block, patch tokens only, on the model's grid
  (B, rows, cols). Prefix (class, register) tokens and visual prompts sit before the patches and are skipped.

The backbone may be frozen: gradients are taken with respect to the inputs (or a layer's activations), never the
weights, so no ``requires_grad`` flag is touched and no ``.grad`` is written. Attributions run in eval mode (no
prompt dropout); the model's train/eval mode is restored afterwards.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from .attention_maps import TokenLayout
from .model import PromptedViT

ATTRIBUTIONS = ("integrated_gradients", "occlusion", "grad_cam")


def check_images(model: PromptedViT, images: torch.Tensor) -> None:
    """A clear error unless ``images`` is a (B, 3, H, W) batch of the backbone's input size."""
    size = tuple(model.backbone.patch_embed.img_size)
    if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != size:
        raise ValueError(f"Expected images of shape (B, 3, {size[0]}, {size[1]}) for this backbone, got "
                         f"{tuple(images.shape)}; resize them with build_transforms({size[0]}, train=False).")


def _inputs_and_target(model: PromptedViT, images: torch.Tensor,
                       target: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images on the model's device (a fresh tensor that requires grad) and the target class per image (B,):
    the given one, or the model's prediction (call it in eval mode)."""
    check_images(model, images)
    device = next(model.parameters()).device
    images = images.detach().to(device).clone().requires_grad_(True)
    if target is None:
        with torch.no_grad():
            target = model(images).argmax(-1)
    target = torch.as_tensor(target, device=device).long()
    if target.shape != (images.shape[0],):
        raise ValueError(f"target must hold one class per image: shape ({images.shape[0]},), "
                         f"got {tuple(target.shape)}.")
    return images, target


def integrated_gradients(model: PromptedViT, images: torch.Tensor, target: Optional[torch.Tensor] = None,
                         baseline: float = 0.0, steps: int = 32) -> torch.Tensor:
    """Integrated Gradients along the straight path from a constant ``baseline`` image to ``images``.

    Args:
        images: (B, 3, H, W) normalised model input; ``baseline`` 0 is the normalisation's mean colour (ImageNet's,
            or the backbone's own with ``data.normalize=backbone``).
        target: (B,) class per image; None explains the predicted class.
        steps: Gauss-Legendre points on the path; more steps give a smaller completeness error.

    Returns:
        (B, 3, H, W) attributions; per image they sum to logit_target(images) − logit_target(baseline).
    """
    from captum.attr import IntegratedGradients

    with model.evaluating():
        images, target = _inputs_and_target(model, images, target)
        return IntegratedGradients(model).attribute(images, baselines=baseline, target=target, n_steps=steps).detach()


def occlusion(model: PromptedViT, images: torch.Tensor, target: Optional[torch.Tensor] = None,
              baseline: float = 0.0, perturbations_per_eval: int = 16) -> torch.Tensor:
    """Occlusion with one window per patch: (B, 3, H, W) images -> (B, rows, cols) drop of the target logit when that
    patch is set to ``baseline`` (positive: the patch is evidence for the class)."""
    from captum.attr import Occlusion

    patch = tuple(model.backbone.patch_embed.patch_size)
    with model.evaluating(), torch.no_grad():
        images, target = _inputs_and_target(model, images, target)
        pixels = Occlusion(model).attribute(images, sliding_window_shapes=(3, *patch), strides=(3, *patch),
                                            baselines=baseline, target=target,
                                            perturbations_per_eval=perturbations_per_eval)
    return F.avg_pool2d(pixels.mean(1), patch)  # every pixel of a window holds that window's value


def grad_cam(model: PromptedViT, images: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Grad-CAM (Captum ``LayerGradCam``, ReLU applied) on the patch tokens entering the last block:
    (B, 3, H, W) images -> (B, rows, cols), on the grid read from the model.

    The tokens are the last block's ``norm1`` output, ``[prefix | P visual prompts | patches]``; the patch tokens are
    reshaped to (B, D, rows, cols) so that Grad-CAM's channel weights are the mean gradient over the grid. The last
    block's *output* would not do for a class-token readout: its patch tokens never reach the logits, so their
    gradient is exactly zero.
    """
    from captum.attr import LayerGradCam

    layout = TokenLayout.of(model)
    first_patch = layout.num_prefix + layout.num_prompts
    grid_tap = nn.Identity()  # Captum hooks this module: its input and output are the (B, D, rows, cols) patches

    def through_grid(module: nn.Module, args: tuple, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, first_patch:].transpose(1, 2).unflatten(2, layout.grid)  # (B, D, rows, cols)
        patches = grid_tap(patches).flatten(2).transpose(1, 2)
        return torch.cat([tokens[:, :first_patch], patches], dim=1)

    with model.evaluating():
        images, target = _inputs_and_target(model, images, target)
        handle = model.backbone.blocks[-1].norm1.register_forward_hook(through_grid)
        try:
            maps = LayerGradCam(model, grid_tap).attribute(images, target=target, relu_attributions=True)
        finally:
            handle.remove()
    return maps.detach().squeeze(1)


def pixel_map(attributions: torch.Tensor) -> torch.Tensor:
    """Per-pixel magnitude of input attributions: (B, 3, H, W) -> (B, H, W), |sum over colour channels|."""
    return attributions.sum(1).abs()


def normalize_maps(maps: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """Maps (B, h, w) scaled for display to [0, 1] per image: negative values clipped to 0, the ``percentile``-th
    value becomes 1 (larger ones are clipped too, so a few extreme pixels do not wash out the rest). An all-zero
    map stays zero."""
    positive = maps.clamp(min=0).flatten(1)
    scale = torch.quantile(positive, percentile / 100, dim=1, keepdim=True)
    scale = torch.where(scale > 0, scale, positive.amax(1, keepdim=True)).clamp(min=1e-12)
    return (positive / scale).clamp(max=1).view_as(maps)


def upsample_maps(maps: torch.Tensor, size: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """Grid maps (B, rows, cols) -> (B, H, W) at the input size (``mode``: any ``F.interpolate`` mode)."""
    align = False if mode in ("bilinear", "bicubic") else None
    return F.interpolate(maps[:, None], size=tuple(size), mode=mode, align_corners=align)[:, 0]


def attribution_maps(model: PromptedViT, images: torch.Tensor, target: Optional[torch.Tensor] = None,
                     methods: Sequence[str] = ATTRIBUTIONS, steps: int = 32) -> dict[str, torch.Tensor]:
    """Display-ready maps of several attributions, each :func:`normalize_maps`-ed to [0, 1]:
    ``integrated_gradients`` (B, H, W) as :func:`pixel_map`; ``occlusion`` and ``grad_cam`` (B, rows, cols)."""
    unknown = [m for m in methods if m not in ATTRIBUTIONS]
    if unknown:
        raise ValueError(f"Unknown attribution methods {unknown}; choose from {list(ATTRIBUTIONS)}.")
    maps = {}
    for method in methods:
        if method == "integrated_gradients":
            raw = pixel_map(integrated_gradients(model, images, target, steps=steps))
        else:
            raw = occlusion(model, images, target) if method == "occlusion" else grad_cam(model, images, target)
        maps[method] = normalize_maps(raw).cpu()
    return maps


@torch.no_grad()
def cls_features(model: PromptedViT, loader: DataLoader, max_items: Optional[int] = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's input (``pre_logits``: class token, or pooled patches, after the final norm) for a loader's images:
    (N, D) features and (N,) labels in the loader's order. ``max_items`` keeps that many evenly spaced images of its
    dataset instead (every k-th, in dataset order), so a split stored class by class still shows every class."""
    dataset = loader.dataset
    if max_items is not None and max_items < len(dataset):
        picks = torch.linspace(0, len(dataset) - 1, max_items).round().long().tolist()
        loader = DataLoader(Subset(dataset, picks), batch_size=loader.batch_size, num_workers=loader.num_workers)
    device = next(model.parameters()).device
    features, labels = [], []
    with model.evaluating():
        for images, batch_labels in loader:
            features.append(model.forward_head(model.forward_features(images.to(device)), pre_logits=True).cpu())
            labels.append(batch_labels)
    if not features:
        raise ValueError("cls_features got an empty loader.")
    return torch.cat(features), torch.cat(labels)


def tsne_embedding(features: torch.Tensor, seed: int = 0, perplexity: float = 30.0) -> torch.Tensor:
    """2-D t-SNE (scikit-learn, PCA initialisation) of (N, D) features -> (N, 2).

    It runs on one thread, so the same seed gives the same map bit for bit on any machine (a multi-threaded gradient
    sums in another order); for the few thousand points of a figure one thread is also the fastest on a busy CPU.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = features.shape[0]
    if not 0 < perplexity < n:
        raise ValueError(f"perplexity must be between 0 and the number of points ({n}), got {perplexity}; "
                         "use more points or a smaller perplexity (5-50 is usual).")
    with threadpool_limits(limits=1):
        embedding = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            features.detach().double().cpu().numpy())
    return torch.from_numpy(embedding).float()
