"""A timm Vision Transformer with visual prompts (VPT) and key-value prompts (E²VPT).

The backbone is wrapped, never forked: :class:`PromptedViT` reads the backbone's own modules (patch embedding,
position embedding, blocks, final norm, pooling) and only changes the token sequence between blocks and the keys and
values inside attention.

Token layout inside the blocks: ``[prefix (class + register tokens) | P visual prompts | patches]``.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import AttentionRecorder, attention_forward

NUM_SEGMENTS = 16  # E²VPT segment count R: segment r of a prompt is the strided channel set {r, r+R, r+2R, ...}


@dataclass(frozen=True)
class PromptLayout:
    """Where prompts go; made by a method config, consumed by :class:`PromptedViT`.

    Attributes:
        num_prompts: visual prompts P per layer that has them.
        prompt_depth: number of leading blocks that get fresh visual prompts (0 none, 1 shallow, depth = deep).
        prompt_dropout: dropout on visual prompts in train mode.
        num_kv_prompts: key-value prompts T per head.
        kv_depth: number of leading blocks with key-value prompts (0 none, 1 first only, depth = all).
        shared_kv: one tensor serves as key and value prompt (E²VPT default); else separate value prompts.
        masks: learnable token mask (P,) and segment mask (P, 16) multiplied into the visual prompts.
    """

    num_prompts: int = 0
    prompt_depth: int = 0
    prompt_dropout: float = 0.0
    num_kv_prompts: int = 0
    kv_depth: int = 0
    shared_kv: bool = True
    masks: bool = False


@dataclass(frozen=True)
class ModelOptions:
    """How :class:`PromptedViT` computes; never what: every combination gives the same logits and gradients.

    Attributes:
        fused_attn: ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels), timm's flag of the same
            name; False computes the explicit ``softmax(q kᵀ / sqrt(d)) v`` (the benchmarks' official-style baseline).
        skip_unread_tokens: the fast path: blocks compute only the output rows something reads (see
            :meth:`PromptedViT.live_rows`); False computes every token in every block (the official style).
        grad_checkpointing: recompute each block's activations in the backward pass (less memory, ~30% slower).
    """

    fused_attn: bool = True
    skip_unread_tokens: bool = True
    grad_checkpointing: bool = False


def require_prompted(model: Any, caller: str) -> "PromptedViT":
    """``model`` when it is a :class:`PromptedViT`, else one-line ``TypeError`` naming ``caller`` and the fix."""
    if not isinstance(model, PromptedViT):
        raise TypeError(f"{caller} needs a model made by e2vpt_viz.apply_prompts, got {type(model).__name__}. Wrap a "
                        "timm ViT first: model = apply_prompts(backbone, config, num_classes).")
    return model


# timm ViT families whose blocks compute positions inside attention or over a variable sequence, which prompts do
# not fit yet: why, in one clause each (the refusal names it and what works instead).
UNSUPPORTED_FAMILIES = {
    "NaFlexVit": "it embeds a variable number of patches per image with masks (NaFlex), not a fixed token layout",
    "VisionTransformerSAM": "its blocks attend within windows of a 2-D token grid (SAM's image encoder), so there is "
                            "no token sequence to add prompts to",
}
SUPPORTED_EXAMPLES = ("vit_base_patch16_224.orig_in21k, vit_base_patch14_reg4_dinov2, vit_base_patch16_clip_224, "
                      "vit_base_patch16_siglip_224, deit3_base_patch16_224, deit_base_distilled_patch16_224, "
                      "eva02_base_patch14_224, vit_base_patch16_rope_224, beit_base_patch16_224, "
                      "vit_relpos_base_patch16_224")
POST_NORM_BLOCKS = ("EvaBlockPostNorm", "ResPostBlock", "ResPostRelPosBlock")


def backbone_family(backbone: nn.Module) -> Optional[str]:
    """Which timm ViT family ``backbone`` is, as far as prompts care: "vit" (``VisionTransformer``, DeiT), "eva"
    (``Eva``: EVA-02, RoPE ViTs, Perception Encoder; rotary patch positions), "beit" (``Beit``) or "relpos"
    (``VisionTransformerRelPos``; both with a relative position bias); None for anything else."""
    from timm.models.beit import Beit
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer
    from timm.models.vision_transformer_relpos import VisionTransformerRelPos

    for kind, family in ((Eva, "eva"), (Beit, "beit"), (VisionTransformerRelPos, "relpos"), (VisionTransformer, "vit")):
        if isinstance(backbone, kind):
            return family
    return None


def family_refusal(backbone: nn.Module) -> Optional[str]:
    """Why prompts refuse ``backbone``'s timm family, and what works instead (one sentence); None when they do not."""
    name = type(backbone).__name__
    if name not in UNSUPPORTED_FAMILIES:
        return None
    return (f"Prompts do not support timm's {name} backbones yet: {UNSUPPORTED_FAMILIES[name]}. These work, e.g.: "
            f"{SUPPORTED_EXAMPLES}.")


def check_supported_backbone(backbone: nn.Module) -> None:
    """Raise a clear error unless ``backbone`` is a timm ViT of a supported family with pre-norm blocks."""
    name = type(backbone).__name__
    refusal = family_refusal(backbone)
    if refusal is not None:
        raise TypeError(refusal)
    family = backbone_family(backbone)
    if family is None:
        raise TypeError(
            f"apply_prompts needs a timm Vision Transformer (VisionTransformer, Eva, Beit, VisionTransformerRelPos), "
            f"got {name}. Create one with e2vpt_viz.load_backbone('vit_base_patch16_224') or timm.create_model('vit_...')."
        )
    scale = ("gamma_1", "gamma_2") if family in ("eva", "beit") else ("ls1", "ls2")
    block_parts = ("norm1", "attn", "drop_path1", "norm2", "mlp", "drop_path2", *scale)
    for i, blk in enumerate(backbone.blocks):
        kind = type(blk).__name__
        missing = [p for p in block_parts if not hasattr(blk, p)]
        if not (hasattr(blk, "attn") and (hasattr(blk.attn, "qkv") or hasattr(blk.attn, "q_proj"))):
            missing.append("attn.qkv")
        kv_heads = getattr(getattr(blk, "attn", None), "num_kv_heads", None)
        if kind in POST_NORM_BLOCKS:
            why = "it normalises after each branch (post-norm)"
        elif kind.startswith(("Parallel", "DiffParallel")):
            why = "it runs attention and MLP side by side (parallel blocks)"
        elif missing:
            why = f"it lacks {', '.join(missing)}"
        elif kv_heads is not None and kv_heads != blk.attn.num_heads:
            why = f"its attention shares {kv_heads} key-value heads among {blk.attn.num_heads} query heads " \
                  "(grouped-query attention)"
        else:
            continue
        raise TypeError(f"Prompts read standard pre-norm timm blocks with one key-value head per query head, and block "
                        f"{i} of this ViT ({kind}) is not one: {why}. These work, e.g.: {SUPPORTED_EXAMPLES}.")


def attention_head_dim(attn: nn.Module) -> int:
    """The width of one attention head of a timm attention module (``head_dim``, or its projections' width over the
    heads: the fused qkv holds 3 · heads · head_dim outputs), also when a method has wrapped the projections."""
    if getattr(attn, "head_dim", None):
        return attn.head_dim
    qkv = getattr(attn, "qkv", None)
    proj = getattr(qkv if qkv is not None else attn.q_proj, "base_layer", qkv if qkv is not None else attn.q_proj)
    return proj.weight.shape[0] // (3 if qkv is not None else 1) // attn.num_heads


def position_bias(blk: nn.Module, shared: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The relative position bias ((1,) heads, N0, N0) a BEiT or relative-position ViT block adds over the backbone's
    own N0 tokens (its own table and the backbone's shared one, as the block adds them); None for other blocks."""
    attn = blk.attn
    if getattr(attn, "relative_position_bias_table", None) is not None:  # BEiT
        own = attn._get_rel_pos_bias()
        return own if shared is None else own + shared
    if getattr(attn, "rel_pos", None) is not None:  # relative-position ViT: its own module replaces the shared one
        return attn.rel_pos.get_bias()
    return shared


def bias_with_prompts(bias: torch.Tensor, prefix: int, num_prompts: int, num_kv: int) -> torch.Tensor:
    """A block's position bias (1, heads, N0, N0) over [prefix | patches] widened to [prefix | prompts | patches]
    queries and [key-value prompts | prefix | prompts | patches] keys: (1, heads, N0 + P, T + N0 + P).

    Prompts have no position, so every bias to or from a visual or key-value prompt is 0; the bias between the
    backbone's own tokens is unchanged. A (heads, N0, N0) bias (BEiT's shared one) is read as (1, heads, N0, N0).
    """
    bias = bias.unsqueeze(0) if bias.dim() == 3 else bias
    if num_prompts:
        rows = torch.zeros(*bias.shape[:2], num_prompts, bias.shape[3], dtype=bias.dtype, device=bias.device)
        bias = torch.cat([bias[:, :, :prefix], rows, bias[:, :, prefix:]], dim=2)
        cols = torch.zeros(*bias.shape[:3], num_prompts, dtype=bias.dtype, device=bias.device)
        bias = torch.cat([bias[..., :prefix], cols, bias[..., prefix:]], dim=3)
    if num_kv:
        bias = torch.cat([torch.zeros(*bias.shape[:3], num_kv, dtype=bias.dtype, device=bias.device), bias], dim=3)
    return bias


def _layer_scale(blk: nn.Module, which: int, y: torch.Tensor) -> torch.Tensor:
    """A block branch's layer scale: timm Block's ``ls1`` / ``ls2`` modules, EvaBlock's ``gamma_1`` / ``gamma_2``
    tensors (None: no scale)."""
    if hasattr(blk, f"ls{which}"):
        return getattr(blk, f"ls{which}")(y)
    gamma = getattr(blk, f"gamma_{which}")
    return y if gamma is None else gamma * y


class PromptedViT(nn.Module):
    """A frozen timm ViT plus prompts and a linear head on the pooled, final-normed features.

    Args:
        backbone: a timm ``VisionTransformer`` whose classifier has been removed (``num_classes=0``).
        num_classes: classes of the task head.
        layout: which prompts to add (see :class:`PromptLayout`).
        options: how to compute (see :class:`ModelOptions`); :meth:`using` changes them for a ``with`` block.
        method_config: the method config that made this model (:func:`~e2vpt_viz.apply_prompts` passes it; saved in
            checkpoints).
        backbone_train_mode: the backbone follows the model into train mode (its dropout on; full fine-tuning);
            by default it stays in eval mode and only the prompt dropout follows.
        mode_following: names of backbone submodules that follow the model's train / eval mode even while the
            backbone stays in eval mode: the dropout of parts a method added (an adapter's, LoRA's).

    Temporary modes are context managers that restore the model on exit: :meth:`evaluating` (eval mode),
    :meth:`disable_prompts` (the plain backbone), :meth:`recording_attention` (the explicit path, probabilities
    recorded), :meth:`using` (other options).

    Parameters it adds (None when the layout has none):
        visual_prompts: (prompt_depth, P, D); (1, P, D) for shallow prompts.
        kv_prompts: (kv_depth, heads, T, head_dim), the key prompts and, when shared, also the value prompts.
        value_prompts: (kv_depth, heads, T, head_dim) when key and value prompts are separate.
        token_mask: (P,) gates γ; segment_mask: (P, 16) gates Γ; all ones = no effect.
        head: ``nn.Linear(D, num_classes)``.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, layout: PromptLayout = PromptLayout(),
                 options: ModelOptions = ModelOptions(), method_config: Optional[object] = None,
                 backbone_train_mode: bool = False, mode_following: Sequence[str] = ()) -> None:
        super().__init__()
        check_supported_backbone(backbone)
        self.backbone = backbone
        self.layout = layout
        self.options = options
        self.method_config = method_config
        self.backbone_train_mode = backbone_train_mode
        self.mode_following = tuple(mode_following)
        self.num_classes = num_classes
        embed_dim = backbone.embed_dim
        attn = backbone.blocks[0].attn
        head_dim = attention_head_dim(attn)
        self.num_backbone_prefix = backbone.num_prefix_tokens
        self.family = backbone_family(backbone)  # vit, eva (rotary positions), beit / relpos (position bias)
        self.num_prompts = layout.num_prompts if layout.prompt_depth else 0
        self.num_prefix_tokens = self.num_backbone_prefix + self.num_prompts  # tokens before the patches
        self.prompts_enabled = True  # False inside disable_prompts()
        self.attention_recorder: Optional[AttentionRecorder] = None  # set inside recording_attention()

        self.visual_prompts = self.token_mask = self.segment_mask = None
        self.kv_prompts = self.value_prompts = None
        if self.num_prompts:
            patch_h, patch_w = backbone.patch_embed.patch_size
            bound = math.sqrt(6.0 / (3 * patch_h * patch_w + embed_dim))  # xavier bound of the patch projection
            self.visual_prompts = nn.Parameter(torch.empty(layout.prompt_depth, self.num_prompts, embed_dim))
            nn.init.uniform_(self.visual_prompts, -bound, bound)
            if layout.masks:
                self.token_mask = nn.Parameter(torch.ones(self.num_prompts))
                self.segment_mask = nn.Parameter(torch.ones(self.num_prompts, NUM_SEGMENTS))
                self.register_buffer("segment_of_channel", torch.arange(embed_dim) % NUM_SEGMENTS, persistent=False)
        self.prompt_dropout = nn.Dropout(layout.prompt_dropout) if layout.prompt_dropout > 0 else nn.Identity()
        if layout.kv_depth:
            shape = (layout.kv_depth, attn.num_heads, layout.num_kv_prompts, head_dim)
            bound = math.sqrt(6.0 / (layout.num_kv_prompts * head_dim))  # kaiming-uniform, fan_in = T·head_dim
            self.kv_prompts = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
            if not layout.shared_kv:
                self.value_prompts = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))

        self.head = nn.Linear(backbone.num_features, num_classes)
        nn.init.kaiming_normal_(self.head.weight, mode="fan_out")
        nn.init.constant_(self.head.bias, -math.log((1 - 0.01) / 0.01))  # prior probability 0.01, as in VPT
        self.backbone.eval()

    def train(self, mode: bool = True) -> "PromptedViT":
        """Train mode for the prompt dropout; the backbone stays in eval mode unless ``backbone_train_mode`` (the
        :attr:`mode_following` parts of it follow ``mode``)."""
        super().train(mode)
        self.backbone.train(mode and self.backbone_train_mode)
        for name in self.mode_following:
            self.backbone.get_submodule(name).train(mode)
        return self

    @contextmanager
    def disable_prompts(self) -> Iterator[None]:
        """Run the plain backbone (no visual or key-value prompts) inside the block."""
        previous, self.prompts_enabled = self.prompts_enabled, False
        try:
            yield
        finally:
            self.prompts_enabled = previous

    @contextmanager
    def evaluating(self) -> Iterator["PromptedViT"]:
        """Eval mode inside the block (no prompt dropout); the previous mode afterwards."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    @contextmanager
    def recording_attention(self) -> Iterator[AttentionRecorder]:
        """The explicit attention path with every token computed; the probabilities of each block go to the
        yielded :class:`~e2vpt_viz.attention.AttentionRecorder` (see :func:`~e2vpt_viz.record_attention`)."""
        previous, self.attention_recorder = self.attention_recorder, AttentionRecorder()
        try:
            yield self.attention_recorder
        finally:
            self.attention_recorder = previous

    @contextmanager
    def using(self, **options) -> Iterator["PromptedViT"]:
        """Other :class:`ModelOptions` inside the block, e.g. ``with model.using(grad_checkpointing=True): ...``."""
        previous, self.options = self.options, replace(self.options, **options)
        try:
            yield self
        finally:
            self.options = previous

    def mask_matrix(self) -> torch.Tensor:
        """γ_k · Γ_{k, j mod 16} for every prompt k and channel j: (P, D)."""
        return self.token_mask[:, None] * self.segment_mask[:, self.segment_of_channel]

    def masked_prompts(self) -> torch.Tensor:
        """Visual prompts of every prompted layer with the token and segment masks applied: (prompt_depth, P, D).

        Computed once per forward; masking before the (element-wise) dropout equals masking after it.
        """
        if self.token_mask is None:
            return self.visual_prompts
        return self.visual_prompts * self.mask_matrix()

    def _block(self, blk: nn.Module, x: torch.Tensor, layer: int, rows: Optional[torch.Tensor] = None,
               rope: Optional[torch.Tensor] = None, shared_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One pre-norm timm Block (or EvaBlock) with this layer's key-value prompts: (B, N, D) -> (B, M, D).

        ``rows``: (M,) indices of the tokens whose output is computed (None = all N); all N tokens are keys and values.
        ``rope``: the rotary embedding (..., patches, dim) of the patches (Eva backbones), the last tokens of ``x``.
        ``shared_bias``: the backbone's shared relative position bias (BEiT, relative-position ViTs), or None.
        """
        keys = values = None
        if self.prompts_enabled and layer < self.layout.kv_depth:
            keys = self.kv_prompts[layer]
            values = None if self.value_prompts is None else self.value_prompts[layer]
        rope_start = x.shape[1] - rope.shape[-2] if rope is not None else 0  # the patches are the last tokens
        bias = position_bias(blk, shared_bias)
        prompts = x.shape[1] - bias.shape[-1] if bias is not None else 0  # the visual prompt slots this layer holds
        if bias is not None and (prompts or keys is not None):
            bias = bias_with_prompts(bias, self.num_backbone_prefix, prompts, 0 if keys is None else keys.shape[1])
        attn_out = attention_forward(blk.attn, blk.norm1(x), keys, values, self.attention_recorder,
                                     fused=self.options.fused_attn, query_rows=rows, rope=rope, rope_start=rope_start,
                                     bias=bias)
        x = (x if rows is None else x.index_select(1, rows)) + blk.drop_path1(_layer_scale(blk, 1, attn_out))
        return x + blk.drop_path2(_layer_scale(blk, 2, blk.mlp(blk.norm2(x))))

    def _embed(self, images: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Images (B, 3, H, W) -> (the backbone's tokens (B, prefix + patches, D), the patches' rotary embedding or
        None, the backbone's shared relative position bias or None), exactly as the backbone embeds them."""
        bb = self.backbone
        if self.family == "eva":
            x, rope = bb._pos_embed(bb.patch_embed(images))  # Eva applies its patch dropout inside
            return bb.norm_pre(x), rope, None
        if self.family in ("beit", "relpos"):
            x = bb.patch_embed(images)
            if bb.cls_token is not None:
                x = torch.cat((bb.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
            if self.family == "beit":
                x = bb.pos_drop(x if bb.pos_embed is None else x + bb.pos_embed)
                return x, None, bb.rel_pos_bias() if bb.rel_pos_bias is not None else None
            return x, None, bb.shared_rel_pos.get_bias() if bb.shared_rel_pos is not None else None
        return bb.norm_pre(bb.patch_drop(bb._pos_embed(bb.patch_embed(images)))), None, None

    def forward_features(self, images: torch.Tensor, class_token_only: bool = False) -> torch.Tensor:
        """Images (B, 3, H, W) -> all tokens after the final norm (B, prefix + P + patches, D).

        With prompts disabled the prompt slots are absent: (B, prefix + patches, D). ``class_token_only``: only the
        leading tokens the pooling reads (:attr:`pooled_tokens`), (B, 1, D) for a class token, (B, 2, D) for DeiT's
        class and distillation tokens; the last block computes only those rows.
        """
        bb = self.backbone
        x, rope, shared_bias = self._embed(images)  # (B, prefix + patches, D); rotary embedding; position bias
        n, P = self.num_backbone_prefix, self.num_prompts
        use_prompts = self.prompts_enabled and P > 0
        prompts_per_layer = self.masked_prompts() if use_prompts else None  # (prompt_depth, P, D)
        num_patches = x.shape[1] - n
        live_rows = self.live_rows(n + (P if use_prompts else 0) + num_patches, class_token_only, x.device)
        for layer, (blk, rows) in enumerate(zip(bb.blocks, live_rows)):
            if use_prompts and layer < self.layout.prompt_depth:
                prompts = self.prompt_dropout(prompts_per_layer[layer].expand(x.shape[0], -1, -1))  # (B, P, D)
                patches = x[:, x.shape[1] - num_patches:]  # deep prompts replace the previous layer's, if it kept them
                x = torch.cat([x[:, :n], prompts, patches], dim=1)
            block_rope = rope[layer] if rope is not None and getattr(bb, "rope_mixed", False) else rope
            if self.options.grad_checkpointing and self.training:
                x = checkpoint(self._block, blk, x, layer, rows, block_rope, shared_bias, use_reentrant=False)
            else:
                x = self._block(blk, x, layer, rows, block_rope, shared_bias)
        return bb.norm(x)

    # -------------------------------------------------------------------------------------------------- fast path

    def live_rows(self, num_tokens: int, class_token_only: bool, device: torch.device) -> list[Optional[torch.Tensor]]:
        """Per block, the indices of its output rows that anything reads (None = all rows, the plain forward).

        ``num_tokens``: prefix + P + patches. Deep prompts' outputs are dead when the next layer replaces them, and
        class-token pooling reads only row 0 of the last block: skipping those queries (and their MLP rows) gives
        the same logits and gradients for less compute. All None with ``options.skip_unread_tokens=False`` and
        while attention is recorded (the recorded maps keep every query).
        """
        rows: list[Optional[torch.Tensor]] = [None] * len(self.backbone.blocks)
        if self.attention_recorder is not None or not self.options.skip_unread_tokens:
            return rows
        if self.prompts_enabled and self.num_prompts:
            n, P = self.num_backbone_prefix, self.num_prompts
            without_prompts = torch.cat([torch.arange(n, device=device), torch.arange(n + P, num_tokens, device=device)])
            rows[:self.layout.prompt_depth - 1] = [without_prompts] * (self.layout.prompt_depth - 1)
        if class_token_only:
            rows[-1] = torch.arange(max(1, self.pooled_tokens), device=device)
        return rows

    # ------------------------------------------------------------------------------------------------------------

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, N, D) from :meth:`forward_features`, or its class token alone (B, 1, D) -> logits
        (B, num_classes), or pooled features (B, D) with ``pre_logits``.

        Prompt tokens are dropped first, so the backbone's own pooling (class token, or mean over patches) and
        its ``fc_norm`` see exactly the tokens they were trained on.
        """
        n = self.num_backbone_prefix
        if self.prompts_enabled and self.num_prompts and tokens.shape[1] > max(1, self.pooled_tokens):
            tokens = torch.cat([tokens[:, :n], tokens[:, n + self.num_prompts:]], dim=1)
        features = self.backbone.forward_head(tokens, pre_logits=True)  # pool -> fc_norm -> head_drop
        return features if pre_logits else self.head(features)

    @property
    def pooled_tokens(self) -> int:
        """How many leading tokens the backbone's pooling reads and nothing else: 1 for a class token (timm
        ``global_pool='token'``), 2 for DeiT's class and distillation tokens (their mean), 0 when it reads more
        (average or attention pooling)."""
        if self.backbone.global_pool != "token" or getattr(self.backbone, "attn_pool", None) is not None:
            return 0
        return 2 if getattr(self.backbone, "dist_token", None) is not None else 1

    @property
    def reads_class_token(self) -> bool:
        """Whether the pooling reads only leading prefix tokens (the class token, and DeiT's distillation token)."""
        return self.pooled_tokens > 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(images, class_token_only=self.reads_class_token))
