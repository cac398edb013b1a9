"""Self-attention of a timm ViT block, with optional E²VPT key-value prompts.

Two paths compute the same maths:

* fused: ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels), used for training and inference;
* manual: explicit ``softmax(q kᵀ / sqrt(d)) v`` that also returns the attention probabilities, used only while an
  :class:`AttentionRecorder` is active (``with record_attention(model) as rec: ...``).

Key-value prompts live in head space: they are concatenated to the keys and values *after* the frozen
``qkv`` projection, so they never pass through W_K / W_V. The query count is unchanged.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn


class AttentionRecorder:
    """Collects attention probabilities, one tensor per block, while it is attached to a model.

    ``probs[i]`` has shape (B, heads, N, T_i + N): N queries over T_i key-value prompts followed by the N tokens
    (T_i = 0 for blocks without key-value prompts).
    """

    def __init__(self) -> None:
        self.probs: list[torch.Tensor] = []

    def add(self, probs: torch.Tensor) -> None:
        self.probs.append(probs.detach())


def project_qkv(attn: nn.Module, x: torch.Tensor, rope: Optional[torch.Tensor] = None,
                rope_start: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and values (each (B, heads, N, head_dim)) of ``x`` (B, N, C) through the frozen projections of a
    timm ``Attention`` or ``EvaAttention``, computed as the module computes them.

    ``rope``: the backbone's rotary position embedding of the patches (EVA-02, RoPE ViTs), applied to the queries and
    keys of the tokens from ``rope_start`` on (the patches): never to the class, register or prompt tokens before them.
    """
    B, N, _ = x.shape
    if getattr(attn, "qkv", None) is None:  # EvaAttention with separate projections
        q, k, v = (proj(x).reshape(B, N, attn.num_heads, -1).transpose(1, 2)
                   for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    else:
        if getattr(attn, "q_bias", None) is None:
            qkv = attn.qkv(x)
        else:  # EvaAttention: bias-free fused projection plus (q, 0, v) biases
            bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
            separate = attn.qkv_bias_separate or type(attn.qkv) is not nn.Linear  # e.g. LoRA-wrapped
            qkv = attn.qkv(x) + bias if separate else F.linear(x, weight=attn.qkv.weight, bias=bias)
        q, k, v = qkv.reshape(B, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    if getattr(attn, "q_norm", None) is not None:  # BEiT's attention has no q / k norms
        q, k = attn.q_norm(q), attn.k_norm(k)
    if rope is not None:
        from timm.layers import apply_rot_embed_cat

        half = getattr(attn, "rotate_half", False)
        q, k = (torch.cat([t[:, :, :rope_start], apply_rot_embed_cat(t[:, :, rope_start:], rope, half=half)], 2).type_as(v)
                for t in (q, k))
    return q, k, v


def attention_forward(
        attn: nn.Module,
        x: torch.Tensor,
        key_prompts: Optional[torch.Tensor] = None,
        value_prompts: Optional[torch.Tensor] = None,
        recorder: Optional[AttentionRecorder] = None,
        fused: bool = True,
        query_rows: Optional[torch.Tensor] = None,
        rope: Optional[torch.Tensor] = None,
        rope_start: int = 0,
        bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Run a timm ``Attention`` (or ``EvaAttention``) module's weights on ``x`` with key-value prompts.

    Args:
        attn: a ``timm.layers.Attention`` or ``EvaAttention`` (its projections, ``q_norm``, ``k_norm``, ``norm``,
            ``gate`` and ``proj`` are reused).
        x: tokens (B, N, C), already normalised by the block's ``norm1``.
        key_prompts: (heads, T, head_dim) prompts prepended to the keys, or None.
        value_prompts: (heads, T, head_dim) prompts prepended to the values; None shares ``key_prompts``.
        recorder: when given, the manual path runs and the probabilities (B, heads, N, T+N) are recorded.
        fused: False forces the manual path without recording (explicit softmax, as the official code computes it;
            the benchmarks' baseline).
        query_rows: (M,) indices of the tokens whose output is wanted; None = all N.
            Every token is still a key and a value.
        rope / rope_start: rotary position embeddings of the patches, which start at token ``rope_start`` (see
            :func:`project_qkv`); key-value prompts are concatenated after it, so they carry no position.
        bias: (1, heads, N, T + N) additive attention bias (relative position bias: BEiT, relative-position ViTs),
            over the T key-value prompts and the N tokens; None for none.

    Returns:
        (B, M, C) attention output after the output projection (M = N without ``query_rows``).
    """
    B, N, C = x.shape
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    q, k, v = project_qkv(attn, x, rope, rope_start)  # each (B, heads, N, head_dim)
    if query_rows is not None:
        q = q.index_select(2, query_rows)
        gate = None if gate is None else gate.index_select(1, query_rows)

    if key_prompts is not None:
        value_prompts = key_prompts if value_prompts is None else value_prompts
        k = torch.cat([key_prompts.to(k.dtype).expand(B, -1, -1, -1), k], dim=2)  # (B, heads, T+N, head_dim)
        v = torch.cat([value_prompts.to(v.dtype).expand(B, -1, -1, -1), v], dim=2)

    if bias is not None and query_rows is not None:
        bias = bias.index_select(bias.dim() - 2, query_rows)  # the query axis of (1, heads, N, K) or (heads, N, K)
    dropout_p = attn.attn_drop.p if attn.training else 0.0
    if recorder is None and fused:
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.to(q.dtype),
                                           dropout_p=dropout_p)
    else:
        scores = (q * attn.scale) @ k.transpose(-2, -1)  # (B, heads, N, T+N)
        probs = (scores if bias is None else scores + bias).softmax(dim=-1)
        if recorder is not None:
            recorder.add(probs)
        x = attn.attn_drop(probs) @ v

    x = x.transpose(1, 2).reshape(B, q.shape[2], attn.num_heads * q.shape[-1])
    if getattr(attn, "norm", None) is not None:
        x = attn.norm(x)
    if gate is not None:
        x = x * gate
    return attn.proj_drop(attn.proj(x))


@contextmanager
def record_attention(model: nn.Module) -> Iterator[AttentionRecorder]:
    """Switch a :class:`~e2vpt_viz.model.PromptedViT` to the explicit attention path and record probabilities.

    Example::

        with record_attention(model) as rec:
            model(images)
        rec.probs[-1]  # (B, heads, N, T + N) for the last block

    The model returns to its own path when the block exits, also after an exception.
    """
    from .model import require_prompted  # the model module imports this one

    with require_prompted(model, "record_attention").recording_attention() as recorder:
        yield recorder
