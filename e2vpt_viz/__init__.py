"""e2vpt-viz: visual prompt tuning (VPT, E²VPT, PVP) for any timm Vision Transformer, with notebooks and plots."""
from .attention import AttentionRecorder as AttentionRecorder, record_attention as record_attention
from .backbones import BackboneError as BackboneError, load_backbone as load_backbone
from .checkpoint import (CheckpointMismatchError as CheckpointMismatchError,
                         CheckpointReadError as CheckpointReadError, CheckpointWriteError as CheckpointWriteError,
                         load_prompts as load_prompts, save_prompts as save_prompts)
from .data import (DatasetLayoutError as DatasetLayoutError, FGVCDataset as FGVCDataset,
                   build_transforms as build_transforms, make_loaders as make_loaders)
from .methods import (METHODS as METHODS, BiasConfig as BiasConfig, E2VPTConfig as E2VPTConfig,
                      FullConfig as FullConfig, LinearConfig as LinearConfig, LoRAConfig as LoRAConfig,
                      MethodConfig as MethodConfig, PartialConfig as PartialConfig, VPTConfig as VPTConfig,
                      apply_prompts as apply_prompts, count_parameters as count_parameters,
                      method_config as method_config)
from .model import ModelOptions as ModelOptions, PromptedViT as PromptedViT
from .training import (TrainConfig as TrainConfig, TrainingDivergedError as TrainingDivergedError,
                       evaluate as evaluate, fit as fit)

__version__ = "0.1.0"
