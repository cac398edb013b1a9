"""The base of every tuning method's config: what a method adds to a timm ViT and which weights it trains.

A method is a small dataclass; :func:`~e2vpt_viz.methods.apply_prompts` reads it to build the model. Prompt methods
say where prompts go (:meth:`MethodConfig.layout`); methods that change the backbone's modules (HF peft tuners,
adapters, SSF) do it in :meth:`MethodConfig.prepare_backbone` and name their own parts with
:meth:`MethodConfig.is_method_part`, so that parameter counts keep the pre-trained backbone apart from what the method
added, and the method's own dropout follows the model's train / eval mode while the frozen backbone stays in eval mode.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

from torch import nn

from .model import PromptLayout


@dataclass
class MethodConfig:
    """Base of all method configs: what to add to the backbone and which backbone weights to train."""

    name: ClassVar[str] = ""

    def layout(self, depth: int) -> PromptLayout:
        """Prompts to add to a backbone with ``depth`` blocks."""
        return PromptLayout()

    def prepare_backbone(self, backbone: nn.Module) -> nn.Module:
        """Modify the backbone before wrapping (peft tuners, adapters and SSF add their modules here)."""
        return backbone

    def is_method_part(self, name: str) -> bool:
        """Whether the backbone parameter or module called ``name`` was added by :meth:`prepare_backbone` (an adapter's
        weights, a peft tuner's factors) rather than pre-trained; False for methods that add nothing."""
        return False

    def trains_backbone_param(self, param_name: str, depth: int) -> bool:
        """Whether a backbone parameter stays trainable (by default: exactly the parts the method added)."""
        return self.is_method_part(param_name)

    def backbone_train_mode(self) -> bool:
        """Whether the backbone runs in train mode (its dropout on) while the model trains; every method but full
        fine-tuning keeps it in eval mode, as the official VPT code does (``froze_enc``, and the prompted
        transformer's ``train()``). Dropout inside the parts a method added follows the model's mode regardless."""
        return False

    def method_name(self) -> str:
        return self.name

    def to_dict(self) -> dict:
        """Serialisable form, read back by :func:`~e2vpt_viz.methods.config_from_dict`."""
        return {"method": self.method_name(), **asdict(self)}
