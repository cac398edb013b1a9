"""Tuning methods as small config dataclasses plus one wrapping call, ``apply_prompts(backbone, config, num_classes)``.

Every method, prompts and baselines alike, goes through the same entry point, so a notebook or the CLI can compare
them by name::

    model = apply_prompts(load_backbone("vit_base_patch16_224"), E2VPTConfig(num_prompts=5, num_kv_prompts=5), 200)
    model = apply_prompts(backbone, method_config("vpt-deep", num_prompts=50), 200)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Optional

import torch
from torch import nn

from .adapters import AdapterConfig, AdaptFormerConfig, SSFConfig
from .checks import dropout_rate, positive_int
from .method_base import MethodConfig
from .model import ModelOptions, PromptedViT, PromptLayout, check_supported_backbone, require_prompted
from .peft_tuners import PEFT_METHODS, LoRAConfig  # noqa: F401 (LoRAConfig is imported from here too)


@dataclass
class LinearConfig(MethodConfig):
    """Linear probe: only the head trains."""

    name: ClassVar[str] = "linear"


def set_backbone_dropout(backbone: nn.Module, rate: float) -> None:
    """Dropout ``rate`` where the official ViT-B config puts its ``dropout_rate``: after the position embedding and
    after both MLP layers of every block (attention dropout stays 0, as its ``attention_dropout_rate``); timm's
    ``pos_drop`` and ``mlp.drop1`` / ``mlp.drop2``."""
    for module in [getattr(backbone, "pos_drop", None)] + [getattr(blk.mlp, name, None) for blk in backbone.blocks
                                                          for name in ("drop1", "drop2")]:
        if isinstance(module, nn.Dropout):
            module.p = rate


@dataclass
class FullConfig(MethodConfig):
    """Full fine-tuning: every backbone weight trains, with the backbone in train mode as the official baseline
    (VPT's ``end2end``) trains it, so the backbone's dropout is on while it trains.

    ``dropout``: None keeps the backbone's own rates as it was created (timm's pre-trained ViTs: 0; the starter's: 0);
    a number sets them where the official ViT-B config puts its ``dropout_rate`` (:func:`set_backbone_dropout`).
    The official ViT-B/16 baseline uses 0.1 (VPT ``src/configs/vit_configs.py``), which ``reproduce`` sets.
    """

    name: ClassVar[str] = "full"
    dropout: Optional[float] = None

    def __post_init__(self) -> None:
        if self.dropout is not None:
            self.dropout = dropout_rate(self.dropout)

    def prepare_backbone(self, backbone: nn.Module) -> nn.Module:
        if self.dropout is not None:
            set_backbone_dropout(backbone, self.dropout)
        return backbone

    def trains_backbone_param(self, param_name: str, depth: int) -> bool:
        return True

    def backbone_train_mode(self) -> bool:
        return True


@dataclass
class BiasConfig(MethodConfig):
    """Bias-only tuning (BitFit): every bias of the backbone trains."""

    name: ClassVar[str] = "bias"

    def trains_backbone_param(self, param_name: str, depth: int) -> bool:
        return param_name.endswith("bias")


@dataclass
class PartialConfig(MethodConfig):
    """Partial-k: the last ``num_blocks`` blocks and the final norm train."""

    name: ClassVar[str] = "partial"
    num_blocks: int = 1

    def __post_init__(self) -> None:
        self.num_blocks = positive_int("num_blocks", self.num_blocks)

    def trains_backbone_param(self, param_name: str, depth: int) -> bool:
        if self.num_blocks > depth:
            raise ValueError(f"partial tuning of {self.num_blocks} blocks needs a backbone with at least that many; "
                             f"this one has {depth}.")
        tuned_blocks = tuple(f"blocks.{i}." for i in range(depth - self.num_blocks, depth))
        return param_name.startswith(tuned_blocks + ("norm.", "fc_norm."))


PROMPT_INITS = ("random", "spt")  # visual prompts: VPT's random start, or data prototypes (Self-Prompt Tuning)


def check_prompt_init(value: str) -> None:
    if value not in PROMPT_INITS:
        raise ValueError(f"prompt_init must be random (VPT's uniform init) or spt (prototypes of the training "
                         f"images' tokens), got {value!r}.")


@dataclass
class VPTConfig(MethodConfig):
    """Visual Prompt Tuning: ``num_prompts`` learned tokens after the prefix tokens, no position embedding.

    Shallow prompts enter before block 0 and flow through; deep prompts are replaced before every block.
    ``dropout`` defaults to 0.1 for deep and 0 for shallow prompts (the paper's settings). ``prompt_init``: "random"
    (VPT's uniform init) or "spt" (Self-Prompt Tuning: prototypes of the training images' tokens, set by the run
    before training; see :mod:`e2vpt_viz.self_prompt`).
    """

    name: ClassVar[str] = "vpt"
    num_prompts: int = 50
    deep: bool = False
    dropout: Optional[float] = None
    prompt_init: str = "random"

    def __post_init__(self) -> None:
        self.num_prompts = positive_int("num_prompts", self.num_prompts)
        if self.dropout is None:
            self.dropout = 0.1 if self.deep else 0.0
        self.dropout = dropout_rate(self.dropout)
        check_prompt_init(self.prompt_init)

    def method_name(self) -> str:
        return "vpt-deep" if self.deep else "vpt-shallow"

    def layout(self, depth: int) -> PromptLayout:
        return PromptLayout(num_prompts=self.num_prompts, prompt_depth=depth if self.deep else 1,
                            prompt_dropout=self.dropout)


@dataclass
class E2VPTConfig(MethodConfig):
    """E²VPT: deep visual prompts + per-layer, per-head key-value prompts + token/segment pruning masks.

    Args:
        num_prompts: visual prompts P per layer.
        num_kv_prompts: key-value prompts T per head and layer.
        dropout: prompt dropout on the visual prompts.
        shared_kv: one tensor is both the key and the value prompt (paper setting); False gives separate ones.
        kv_layers: "all" blocks or only the "first" get key-value prompts.
        masks: learnable token (P,) and segment (P, 16) masks, the handles for pruning.
        prompt_init: "random" or "spt" (the visual prompts start as prototypes of the training images' tokens; the
            key-value prompts stay random), as for :class:`VPTConfig`.
    """

    name: ClassVar[str] = "e2vpt"
    num_prompts: int = 5
    num_kv_prompts: int = 5
    dropout: float = 0.1
    shared_kv: bool = True
    kv_layers: Literal["all", "first"] = "all"
    masks: bool = True
    prompt_init: str = "random"

    def __post_init__(self) -> None:
        self.num_prompts = positive_int("num_prompts", self.num_prompts)
        self.num_kv_prompts = positive_int("num_kv_prompts", self.num_kv_prompts)
        self.dropout = dropout_rate(self.dropout)
        check_prompt_init(self.prompt_init)
        if self.kv_layers not in ("all", "first"):
            raise ValueError(f"kv_layers must be 'all' or 'first', got {self.kv_layers!r}.")

    def layout(self, depth: int) -> PromptLayout:
        return PromptLayout(num_prompts=self.num_prompts, prompt_depth=depth, prompt_dropout=self.dropout,
                            num_kv_prompts=self.num_kv_prompts, kv_depth=depth if self.kv_layers == "all" else 1,
                            shared_kv=self.shared_kv, masks=self.masks)


METHODS: dict[str, tuple[type[MethodConfig], dict]] = {
    "linear": (LinearConfig, {}),
    "full": (FullConfig, {}),
    "bias": (BiasConfig, {}),
    "partial": (PartialConfig, {}),
    "vpt-shallow": (VPTConfig, {"deep": False}),
    "vpt-deep": (VPTConfig, {"deep": True}),
    "e2vpt": (E2VPTConfig, {}),
    **PEFT_METHODS,
    "adaptformer": (AdaptFormerConfig, {}),
    "adapter": (AdapterConfig, {}),
    "ssf": (SSFConfig, {}),
}


def method_config(method: str, **overrides: Any) -> MethodConfig:
    """Config of a method by name (see ``METHODS``), with field overrides: ``method_config("vpt-deep", num_prompts=10)``."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {sorted(METHODS)}.")
    cls, defaults = METHODS[method]
    try:
        return cls(**{**defaults, **overrides})
    except TypeError as err:
        fields = sorted(cls.__dataclass_fields__)
        raise ValueError(f"Bad option for method {method!r} ({err}); its options are {fields}.") from None


def config_from_dict(data: dict) -> MethodConfig:
    """Inverse of ``MethodConfig.to_dict``."""
    data = dict(data)
    return method_config(data.pop("method"), **data)


WRAPPED = "_wrapped_by_apply_prompts"  # set on a backbone once a model owns it


def apply_prompts(backbone: nn.Module, config: MethodConfig, num_classes: int,
                  options: ModelOptions = ModelOptions()) -> PromptedViT:
    """Wrap a timm ViT for a tuning method: add prompts and a new head, freeze what the method does not train.

    Args:
        backbone: a timm ``VisionTransformer`` (its classifier is removed in place); the model owns it, so a second
            ``apply_prompts`` on the same backbone object is refused (load a fresh one for each model).
        config: a method config, e.g. ``E2VPTConfig(num_prompts=5, num_kv_prompts=5)``.
        num_classes: classes of the downstream task.
        options: how the model computes (fused attention, the unread-token fast path, gradient checkpointing);
            see :class:`~e2vpt_viz.model.ModelOptions`.

    Returns:
        A :class:`PromptedViT` whose trainable parameters are the prompts, masks, head and whatever backbone weights
        the method tunes.
    """
    if not isinstance(config, MethodConfig):
        raise TypeError(f"config must be a method config such as E2VPTConfig(...), got {type(config).__name__}.")
    num_classes = positive_int("num_classes", num_classes)
    check_supported_backbone(backbone)
    if getattr(backbone, WRAPPED, False):
        raise ValueError("this backbone already belongs to a model made by apply_prompts; two models on one backbone "
                         "share its weights and trainable flags. Load a fresh backbone for each model "
                         "(load_backbone(name)), or deep-copy the backbone before its first apply_prompts.")
    backbone.reset_classifier(0)
    backbone = config.prepare_backbone(backbone)
    depth = len(backbone.blocks)
    own_dropout = [name for name, module in backbone.named_modules()
                   if isinstance(module, nn.Dropout) and config.is_method_part(name)]  # follows the model's mode
    model = PromptedViT(backbone, num_classes, config.layout(depth), options, method_config=config,
                        backbone_train_mode=config.backbone_train_mode(), mode_following=own_dropout)
    for name, param in backbone.named_parameters():
        param.requires_grad_(config.trains_backbone_param(name, depth))
    setattr(backbone, WRAPPED, True)
    return model


def count_parameters(model: PromptedViT) -> dict[str, Any]:
    """Parameter counts in the papers' convention.

    Visual prompts count ``layers × non-zero entries of (γ_k · Γ_{k,r})`` when masks exist, so pruned entries are
    subtracted; masks count while they are trainable (before pruning). ``backbone`` is the pre-trained backbone
    (the weights a method added are excluded: peft tuners', adapters', SSF's), ``backbone_tuned`` the trainable
    backbone weights (full, bias, partial; the added weights of peft tuners, adapters and SSF),
    ``tunable_pct`` = 100 · tunable / backbone (ours). The official VPT / E²VPT code logs "tuned percent" over every
    parameter the model holds (VPT ``src/models/build_model.py``): ``model_total`` and
    ``tunable_pct_model`` = 100 · tunable / model_total give that convention beside ours.
    """
    require_prompted(model, "count_parameters")
    visual = 0
    if model.visual_prompts is not None:
        depth = model.visual_prompts.shape[0]
        visual = (depth * int(torch.count_nonzero(model.mask_matrix().detach())) if model.token_mask is not None
                  else model.visual_prompts.numel())
    kv = sum(p.numel() for p in (model.kv_prompts, model.value_prompts) if p is not None)
    masks = sum(p.numel() for p in (model.token_mask, model.segment_mask) if p is not None and p.requires_grad)
    head = sum(p.numel() for p in model.head.parameters())
    added = model.method_config.is_method_part if model.method_config is not None else (lambda name: False)
    backbone = sum(p.numel() for n, p in model.backbone.named_parameters() if not added(n))
    backbone_tuned = sum(p.numel() for p in model.backbone.parameters() if p.requires_grad)
    tunable = visual + kv + masks + head + backbone_tuned
    model_total = sum(p.numel() for p in model.parameters())
    return {"visual_prompts": visual, "kv_prompts": kv, "masks": masks, "head": head,
            "backbone_tuned": backbone_tuned, "backbone": backbone, "tunable": tunable,
            "tunable_pct": 100.0 * tunable / backbone, "model_total": model_total,
            "tunable_pct_model": 100.0 * tunable / model_total}
