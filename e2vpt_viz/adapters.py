"""Adapters and SSF, written here: small modules placed around a timm block's own layers.

With ``h`` the residual stream after a block's attention branch, ``z`` its normed MLP input and
``Adapter(u) = W_up · drop(act(W_down · u + b_down)) + b_up`` a bottleneck of width r:

- **AdaptFormer** (Chen et al., arXiv 2205.13535, Eq. 4-5): a scaled adapter *beside* the MLP, fed the un-normed
  stream, ``out = h + MLP(LN(h)) + s · Adapter(h)`` (ReLU, dropout 0.1, r = 64, s = 0.1 fixed as in the official
  code); ``W_up`` and both biases start at 0, so the block is unchanged at init.
- **Sequential adapter** (Houlsby et al., arXiv 1902.00751): after the attention's and after the MLP's output
  projection, before each residual add, each with its own skip: ``y + Adapter(y)`` (GELU, r = 64), weights drawn
  from a normal with std 0.01 truncated at 2 std and zero biases (the paper's near-identity init).
- **SSF** (Lian et al., arXiv 2210.08823): a learned per-channel scale and shift ``γ ⊙ y + β`` after the patch
  embedding, both norms of every block, the qkv and output projections, the MLP's first layer (before its
  activation) and second layer, and the final norm; γ ~ N(1, 0.02²), β ~ N(0, 0.02²) as in the paper's code
  (``init_std=0`` gives the identity). A linear layer's scale and shift fold into its weight and bias after training
  (:func:`merge_ssf`), so inference costs nothing extra.

Placement is by wrapping modules the model calls (:class:`~e2vpt_viz.model.PromptedViT` calls ``blk.mlp``,
``blk.attn.proj``, the norms and projections by name), so timm's own block forward computes the same thing too.
Each wrapper keeps the pre-trained module as ``base_layer`` (peft's name for it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .checks import dropout_rate, non_negative_number, positive_int, positive_number
from .method_base import MethodConfig

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class Bottleneck(nn.Module):
    """``up(drop(act(down(u))))``: (..., dim) -> (..., dim) through ``rank`` hidden channels."""

    def __init__(self, dim: int, rank: int, activation: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank)
        self.act = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(rank, dim)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.up(self.dropout(self.act(self.down(u))))


class ParallelAdapterMLP(nn.Module):
    """A block's MLP branch with AdaptFormer's adapter beside it: takes the un-normed stream h (B, N, D) and returns
    ``MLP(norm(h)) + scale · Adapter(h)`` (B, N, D). It replaces ``blk.mlp``, and the block's ``norm2`` moves inside
    it (the block's own ``norm2`` becomes the identity), because the adapter reads h before the norm."""

    def __init__(self, norm: nn.Module, mlp: nn.Module, dim: int, rank: int, scale: float, dropout: float) -> None:
        super().__init__()
        self.norm = norm
        self.base_layer = mlp
        self.adapter = Bottleneck(dim, rank, "relu", dropout)
        self.scale = scale
        nn.init.kaiming_uniform_(self.adapter.down.weight, a=math.sqrt(5))  # AdaptFormer's "lora" init
        for tensor in (self.adapter.down.bias, self.adapter.up.weight, self.adapter.up.bias):
            nn.init.zeros_(tensor)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.base_layer(self.norm(h)) + self.scale * self.adapter(h)


class SequentialAdapter(nn.Module):
    """A module followed by a residual bottleneck adapter: ``y + Adapter(y)`` with ``y = base_layer(x)``."""

    def __init__(self, base_layer: nn.Module, dim: int, rank: int, init_std: float) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adapter = Bottleneck(dim, rank, "gelu")
        for layer in (self.adapter.down, self.adapter.up):
            if init_std:
                nn.init.trunc_normal_(layer.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
            else:
                nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        return y + self.adapter(y)


class ScaleShift(nn.Module):
    """SSF around a module: ``γ ⊙ base_layer(x) + β`` over channel axis ``channel_dim`` (-1 for tokens (B, N, C), 1
    for the patch embedding's convolution output (B, C, H, W))."""

    def __init__(self, base_layer: nn.Module, channels: int, init_std: float, channel_dim: int = -1) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.ssf_scale = nn.Parameter(torch.empty(channels).normal_(1.0, init_std) if init_std else torch.ones(channels))
        self.ssf_shift = nn.Parameter(torch.empty(channels).normal_(0.0, init_std) if init_std else torch.zeros(channels))
        self.channel_dim = channel_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        shape = [1] * y.dim()
        shape[self.channel_dim] = -1
        return y * self.ssf_scale.view(shape) + self.ssf_shift.view(shape)


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    """Set the submodule called ``name`` (dotted) of ``root`` to ``module``."""
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


@dataclass
class AdaptFormerConfig(MethodConfig):
    """AdaptFormer: a parallel bottleneck adapter of ``rank`` channels beside every block's MLP, scaled by ``scale``
    (see the module docstring)."""

    name: ClassVar[str] = "adaptformer"
    rank: int = 64
    scale: float = 0.1
    dropout: float = 0.1

    def __post_init__(self) -> None:
        self.rank = positive_int("rank", self.rank)
        self.dropout = dropout_rate(self.dropout)
        self.scale = positive_number("scale", self.scale)

    def prepare_backbone(self, backbone: nn.Module) -> nn.Module:
        for blk in backbone.blocks:
            blk.mlp = ParallelAdapterMLP(blk.norm2, blk.mlp, backbone.embed_dim, self.rank, self.scale, self.dropout)
            blk.norm2 = nn.Identity()
        return backbone

    def is_method_part(self, name: str) -> bool:
        return ".adapter." in f".{name}."


@dataclass
class AdapterConfig(MethodConfig):
    """Sequential (Houlsby) adapters: a residual bottleneck of ``rank`` channels after every block's attention and
    MLP output projections (see the module docstring)."""

    name: ClassVar[str] = "adapter"
    rank: int = 64
    init_std: float = 0.01

    def __post_init__(self) -> None:
        self.rank = positive_int("rank", self.rank)
        self.init_std = non_negative_number("init_std", self.init_std, "Houlsby's 0.01")

    def prepare_backbone(self, backbone: nn.Module) -> nn.Module:
        dim = backbone.embed_dim
        for blk in backbone.blocks:
            blk.attn.proj = SequentialAdapter(blk.attn.proj, dim, self.rank, self.init_std)
            blk.mlp = SequentialAdapter(blk.mlp, dim, self.rank, self.init_std)
        return backbone

    def is_method_part(self, name: str) -> bool:
        return ".adapter." in f".{name}."


# SSF's places in a timm block (relative names), each wrapped when the block has it as a module with weights.
SSF_BLOCK_PLACES = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")


@dataclass
class SSFConfig(MethodConfig):
    """SSF: learned per-channel scale and shift after the backbone's operations (see the module docstring)."""

    name: ClassVar[str] = "ssf"
    init_std: float = 0.02

    def __post_init__(self) -> None:
        self.init_std = non_negative_number("init_std", self.init_std, "SSF's 0.02; 0 starts at the identity")

    def prepare_backbone(self, backbone: nn.Module) -> nn.Module:
        places = [("patch_embed.proj", 1), ("patch_embed.norm", -1), ("norm", -1)]
        places += [(f"blocks.{i}.{p}", -1) for i in range(len(backbone.blocks)) for p in SSF_BLOCK_PLACES]
        for name, channel_dim in places:
            try:
                module = backbone.get_submodule(name)
            except AttributeError:
                continue
            channels = _output_channels(module)
            if channels is not None:
                _replace(backbone, name, ScaleShift(module, channels, self.init_std, channel_dim))
        return backbone

    def is_method_part(self, name: str) -> bool:
        return name.rpartition(".")[2] in ("ssf_scale", "ssf_shift")


def _output_channels(module: nn.Module):
    """The output channels of a linear, convolution or norm layer with weights; None for anything else (timm's
    ``Identity`` norms of ViTs without them)."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    weight = getattr(module, "weight", None)  # a norm with an affine weight (LayerNorm, RmsNorm, ...)
    return weight.shape[0] if isinstance(weight, torch.Tensor) and weight.dim() == 1 else None


@torch.no_grad()
def merge_ssf(backbone: nn.Module) -> int:
    """Fold every SSF scale and shift of ``backbone`` into the layer it follows and unwrap it: a linear or
    convolution layer gets ``W' = diag(γ) W``, ``b' = γ ⊙ b + β``, a norm ``w' = γ ⊙ w``, ``b' = γ ⊙ b + β``. The
    outputs are unchanged (up to rounding) and inference runs the plain backbone. Returns how many were merged."""
    wrapped = [(name, m) for name, m in backbone.named_modules() if isinstance(m, ScaleShift)]
    for name, wrapper in wrapped:
        base, gamma, beta = wrapper.base_layer, wrapper.ssf_scale, wrapper.ssf_shift
        shape = (-1,) + (1,) * (base.weight.dim() - 1)
        base.weight.mul_(gamma.view(shape))
        if base.bias is None:
            base.bias = nn.Parameter(torch.zeros_like(beta), requires_grad=False)
        base.bias.mul_(gamma).add_(beta)
        _replace(backbone, name, base)
    return len(wrapped)
