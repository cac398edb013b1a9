"""HF peft's tuners on a timm ViT, by configuration: LoRA (with its DoRA and rank-stabilised variants), IA³, LoHa,
LoKr, OFT, BOFT, VeRA, FourierFT and HRA.

Each is a :class:`~e2vpt_viz.method_base.MethodConfig` whose options are the peft config's own (same names where
they mean the same thing), plus ``target_modules``: which linear layers of every block it adapts, by role,

==========  =======================================================================================
``qkv``     the attention's input projection: the fused ``attn.qkv`` (one update for q, k and v), or
            EVA's separate ``attn.q_proj`` / ``k_proj`` / ``v_proj``
``proj``    the attention's output projection ``attn.proj``
``fc1``     the MLP's first layer ``mlp.fc1`` (SwiGLU's ``mlp.fc1_g`` and ``mlp.fc1_x``)
``fc2``     the MLP's second layer ``mlp.fc2``
==========  =======================================================================================

Roles are resolved to the exact module names of the backbone at hand (``blocks.3.attn.qkv``) before peft sees them,
which avoids two traps of peft's suffix matching on timm models: ``"proj"`` also matches the patch embedding's
``patch_embed.proj`` convolution, and ``"all-linear"`` adapts the classifier too. The head is the wrapping model's, so
peft never freezes it.

Defaults (the adapted layers, chosen as the papers and the peer benchmarks place each method):

- LoRA, DoRA, rsLoRA, LoHa, LoKr: ``qkv``, rank 8, alpha 8 (PETL_Vision and NOAH put LoRA on the fused qkv);
- IA³: ``qkv`` and ``fc2``, with ``fc2`` a feed-forward module, so its vector scales the MLP's hidden activations
  (IA³ scales keys, values and the FFN's inner activations; on a fused qkv the queries are scaled too);
- OFT, BOFT, HRA: ``qkv``; VeRA and FourierFT: ``qkv`` and ``fc2``.

Every tuner but FourierFT starts as the identity (the adapted layer computes what the pre-trained one did); FourierFT
draws its spectral coefficients at random unless ``init_weights=True``, as peft does.
"""
from __future__ import annotations

import logging
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Optional

from torch import nn

from .checks import dropout_rate, non_negative_int, positive_int, positive_number
from .method_base import MethodConfig

TARGET_ROLES = {  # role -> the names of a timm block's linear layers that play it (relative to the block)
    "qkv": ("attn.qkv", "attn.q_proj", "attn.k_proj", "attn.v_proj"),
    "proj": ("attn.proj",),
    "fc1": ("mlp.fc1", "mlp.fc1_g", "mlp.fc1_x"),
    "fc2": ("mlp.fc2",),
}
BLOCK_MODULE = re.compile(r"blocks\.(\d+)\.(.+)")


def check_roles(option: str, roles: Any, allowed: tuple[str, ...] = tuple(TARGET_ROLES)) -> tuple[str, ...]:
    """``roles`` as a non-empty tuple of role names from ``allowed``, else one ``ValueError`` line naming ``option``."""
    if isinstance(roles, str):
        roles = (roles,)
    roles = tuple(roles)
    bad = [r for r in roles if r not in allowed]
    if not roles or bad:
        raise ValueError(f"{option} takes a list of the layer roles {list(allowed)} (e.g. [qkv, fc2]), got "
                         f"{list(roles)}.")
    return roles


def target_module_names(backbone: nn.Module, roles: tuple[str, ...]) -> list[str]:
    """The full names of ``backbone``'s linear layers that play ``roles`` in its blocks, in model order, e.g.
    ``["blocks.0.attn.qkv", "blocks.0.mlp.fc2", ...]``; a one-line ``ValueError`` when a role finds none."""
    wanted = {name: role for role in roles for name in TARGET_ROLES[role]}
    names, found = [], set()
    for name, module in backbone.named_modules():
        match = BLOCK_MODULE.fullmatch(name)
        if match and match.group(2) in wanted and isinstance(module, nn.Linear):
            names.append(name)
            found.add(wanted[match.group(2)])
    missing = [r for r in roles if r not in found]
    if missing:
        raise ValueError(f"target_modules {missing}: this backbone ({type(backbone).__name__}) has no linear layer "
                         f"named {[n for r in missing for n in TARGET_ROLES[r]]} in its blocks; choose from the roles "
                         f"it has, e.g. [qkv].")
    return names


@contextmanager
def quiet_peft_notes() -> Iterator[None]:
    """Silence two notes peft prints at every model build: BOFT probing for its optional CUDA kernel (a warning and a
    torch log line; without the kernel peft multiplies the butterfly factors in PyTorch), and VeRA's advice to save its
    random projections (they are drawn again from ``projection_prng_key``, as the checkpoints here expect)."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(CUDA extension|boft_n_butterfly_factor|not save vera_A).*")
            yield
    finally:
        logger.setLevel(level)


@dataclass
class PeftTunerConfig(MethodConfig):
    """A peft tuner injected into the backbone's linear layers of the given roles; only its own weights train."""

    part_prefix: ClassVar[str] = ""  # how peft names this tuner's parameters and modules (its tuner's ``prefix``)
    target_modules: tuple[str, ...] = ("qkv",)

    def __post_init__(self) -> None:
        self.target_modules = check_roles("target_modules", self.target_modules)

    def peft_config(self, target_names: list[str]):
        """The peft config of this tuner for the modules ``target_names``."""
        raise NotImplementedError

    def prepare_backbone(self, backbone: nn.Module) -> nn.Module:
        from peft import inject_adapter_in_model
        from peft.utils import PeftType

        names = target_module_names(backbone, self.target_modules)
        with quiet_peft_notes():
            config = self.peft_config(names)
            if config.peft_type == PeftType.VERA:  # shared projections live on the tuner: no low-level injection
                from peft.tuners.vera import VeraModel

                return VeraModel(backbone, config, "default").model
            return inject_adapter_in_model(config, backbone)

    def is_method_part(self, name: str) -> bool:
        return f".{self.part_prefix}" in f".{name}"


@dataclass
class LoRAConfig(PeftTunerConfig):
    """LoRA through peft: ``W + (alpha / rank) · B A`` with B = 0 at init (DoRA: ``use_dora``, a learned magnitude per
    output; rank-stabilised: ``use_rslora``, scaling ``alpha / sqrt(rank)``)."""

    name: ClassVar[str] = "lora"
    part_prefix: ClassVar[str] = "lora_"
    rank: int = 8
    alpha: int = 8
    dropout: float = 0.0
    use_dora: bool = False
    use_rslora: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rank = positive_int("rank", self.rank)
        self.alpha = positive_int("alpha", self.alpha)
        self.dropout = dropout_rate(self.dropout)

    def method_name(self) -> str:
        return "dora" if self.use_dora else "rslora" if self.use_rslora else "lora"

    def peft_config(self, target_names: list[str]):
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, use_dora=self.use_dora,
                          use_rslora=self.use_rslora, target_modules=target_names)


@dataclass
class IA3Config(PeftTunerConfig):
    """IA³ through peft: learned vectors (ones at init) that scale the outputs of the ``target_modules`` and, for the
    ``feedforward_modules`` among them, their inputs (the MLP's hidden activations when that is ``fc2``)."""

    name: ClassVar[str] = "ia3"
    part_prefix: ClassVar[str] = "ia3_"
    target_modules: tuple[str, ...] = ("qkv", "fc2")
    feedforward_modules: tuple[str, ...] = ("fc2",)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.feedforward_modules = (() if not self.feedforward_modules else
                                    check_roles("feedforward_modules", self.feedforward_modules, self.target_modules))

    def peft_config(self, target_names: list[str]):
        from peft import IA3Config as PeftIA3Config

        ff = {name for role in self.feedforward_modules for name in TARGET_ROLES[role]}
        return PeftIA3Config(target_modules=target_names, feedforward_modules=[
            n for n in target_names if BLOCK_MODULE.fullmatch(n).group(2) in ff])


@dataclass
class LycorisConfig(PeftTunerConfig):
    """The options LoHa and LoKr share (peft's ``LycorisConfig``): rank, alpha (scaling alpha / rank) and two dropouts,
    of the rank components and of the whole update."""

    rank: int = 8
    alpha: int = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rank = positive_int("rank", self.rank)
        self.alpha = positive_int("alpha", self.alpha)
        self.rank_dropout = dropout_rate(self.rank_dropout, "rank_dropout")
        self.module_dropout = dropout_rate(self.module_dropout, "module_dropout")

    def lycoris_options(self) -> dict:
        return dict(r=self.rank, alpha=self.alpha, rank_dropout=self.rank_dropout, module_dropout=self.module_dropout)


@dataclass
class LoHaConfig(LycorisConfig):
    """LoHa through peft: a low-rank Hadamard-product update ``(B1 A1) ⊙ (B2 A2)``, zero at init."""

    name: ClassVar[str] = "loha"
    part_prefix: ClassVar[str] = "hada_"

    def peft_config(self, target_names: list[str]):
        from peft import LoHaConfig as PeftLoHaConfig

        return PeftLoHaConfig(**self.lycoris_options(), target_modules=target_names)


@dataclass
class LoKrConfig(LycorisConfig):
    """LoKr through peft: a Kronecker-product update ``W1 ⊗ (B2 A2)``, zero at init (``decompose_factor``: None lets
    peft choose the factorisation, its -1)."""

    name: ClassVar[str] = "lokr"
    part_prefix: ClassVar[str] = "lokr_"
    decompose_both: bool = False
    decompose_factor: Optional[int] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decompose_factor is not None:
            self.decompose_factor = positive_int("decompose_factor", self.decompose_factor)

    def peft_config(self, target_names: list[str]):
        from peft import LoKrConfig as PeftLoKrConfig

        return PeftLoKrConfig(**self.lycoris_options(), decompose_both=self.decompose_both,
                              decompose_factor=-1 if self.decompose_factor is None else self.decompose_factor,
                              target_modules=target_names)


@dataclass
class OFTConfig(PeftTunerConfig):
    """OFT through peft: the pre-trained weight times a learned block-diagonal orthogonal matrix (blocks of
    ``block_size`` inputs, the identity at init)."""

    name: ClassVar[str] = "oft"
    part_prefix: ClassVar[str] = "oft_"
    block_size: int = 32
    coft: bool = False
    eps: float = 6e-5
    block_share: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.block_size = positive_int("block_size", self.block_size)
        self.eps = positive_number("eps", self.eps)

    def peft_config(self, target_names: list[str]):
        from peft import OFTConfig as PeftOFTConfig

        return PeftOFTConfig(r=0, oft_block_size=self.block_size, coft=self.coft, eps=self.eps,
                             block_share=self.block_share, target_modules=target_names)


@dataclass
class BOFTConfig(PeftTunerConfig):
    """BOFT through peft: an orthogonal matrix built from butterfly factors of ``block_size`` blocks (the identity at
    init). peft multiplies the factors with a CUDA kernel when it can build one; ``butterfly_factor`` > 1 needs it."""

    name: ClassVar[str] = "boft"
    part_prefix: ClassVar[str] = "boft_"
    block_size: int = 4
    butterfly_factor: int = 1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.block_size = positive_int("block_size", self.block_size)
        self.butterfly_factor = positive_int("butterfly_factor", self.butterfly_factor)
        self.dropout = dropout_rate(self.dropout)

    def peft_config(self, target_names: list[str]):
        from peft import BOFTConfig as PeftBOFTConfig

        return PeftBOFTConfig(boft_block_size=self.block_size, boft_n_butterfly_factor=self.butterfly_factor,
                              boft_dropout=self.dropout, target_modules=target_names)


@dataclass
class VeRAConfig(PeftTunerConfig):
    """VeRA through peft: frozen random projections A (rank × in) and B (out × rank), shared by every adapted layer
    and drawn from ``projection_prng_key``, with trained scaling vectors (``d_initial`` and zeros at init)."""

    name: ClassVar[str] = "vera"
    part_prefix: ClassVar[str] = "vera_"
    target_modules: tuple[str, ...] = ("qkv", "fc2")
    rank: int = 256
    d_initial: float = 0.1
    dropout: float = 0.0
    projection_prng_key: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rank = positive_int("rank", self.rank)
        self.dropout = dropout_rate(self.dropout)
        self.d_initial = positive_number("d_initial", self.d_initial)
        self.projection_prng_key = non_negative_int("projection_prng_key", self.projection_prng_key)

    def peft_config(self, target_names: list[str]):
        from peft import VeraConfig as PeftVeraConfig

        return PeftVeraConfig(r=self.rank, d_initial=self.d_initial, vera_dropout=self.dropout,
                              projection_prng_key=self.projection_prng_key, save_projection=False,
                              target_modules=target_names)


@dataclass
class FourierFTConfig(PeftTunerConfig):
    """FourierFT through peft: ``n_frequency`` learned spectral coefficients per layer at fixed random frequencies
    (``random_loc_seed``), turned into a weight update by an inverse 2-D DFT times ``scaling``. Random at init, as
    peft does, unless ``init_weights`` (zeros: the identity). peft's docstring suggests scaling 300 for ViT image
    classification."""

    name: ClassVar[str] = "fourierft"
    part_prefix: ClassVar[str] = "fourierft_"
    target_modules: tuple[str, ...] = ("qkv", "fc2")
    n_frequency: int = 1000
    scaling: float = 150.0
    random_loc_seed: int = 777
    init_weights: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.n_frequency = positive_int("n_frequency", self.n_frequency)
        self.scaling = positive_number("scaling", self.scaling)
        self.random_loc_seed = non_negative_int("random_loc_seed", self.random_loc_seed)

    def peft_config(self, target_names: list[str]):
        from peft import FourierFTConfig as PeftFourierFTConfig

        return PeftFourierFTConfig(n_frequency=self.n_frequency, scaling=self.scaling,
                                   random_loc_seed=self.random_loc_seed, init_weights=self.init_weights,
                                   target_modules=target_names)


@dataclass
class HRAConfig(PeftTunerConfig):
    """HRA through peft: the pre-trained weight times a chain of ``rank`` Householder reflections (paired so that
    the chain is the identity at init; use an even rank)."""

    name: ClassVar[str] = "hra"
    part_prefix: ClassVar[str] = "hra_"
    rank: int = 8
    apply_GS: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rank = positive_int("rank", self.rank)

    def peft_config(self, target_names: list[str]):
        from peft import HRAConfig as PeftHRAConfig

        return PeftHRAConfig(r=self.rank, apply_GS=self.apply_GS, target_modules=target_names)


PEFT_METHODS: dict[str, tuple[type[MethodConfig], dict]] = {
    "lora": (LoRAConfig, {"use_dora": False, "use_rslora": False}),
    "dora": (LoRAConfig, {"use_dora": True, "use_rslora": False}),
    "rslora": (LoRAConfig, {"use_dora": False, "use_rslora": True}),
    "ia3": (IA3Config, {}),
    "loha": (LoHaConfig, {}),
    "lokr": (LoKrConfig, {}),
    "oft": (OFTConfig, {}),
    "boft": (BOFTConfig, {}),
    "vera": (VeRAConfig, {}),
    "fourierft": (FourierFTConfig, {}),
    "hra": (HRAConfig, {}),
}

