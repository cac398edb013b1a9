"""Typed run configs: one :class:`RunConfig` of dataclasses, parsed once at the edge and passed as an object.

A run config has the sections ``data`` (:class:`DataConfig`), ``backbone`` (:class:`BackboneConfig`), ``method``
(a method config of :mod:`e2vpt_viz.methods`, written as ``name`` + that method's options), ``train``
(:class:`~e2vpt_viz.training.TrainConfig`), ``prune`` (:class:`PruneConfig`), ``compare`` (per-method overrides
for :func:`~e2vpt_viz.experiments.run.compare_methods`) and ``output_dir``. It comes from a packaged name
(``starter``, ``cub_e2vpt``), a YAML file or a dict, with command-line overrides::

    cfg = load_run_config("starter", ["train.epochs=30", "method.name=vpt-deep", "method.num_prompts=10"])
    cfg.train.warmup_epochs                        # 3
    short = cfg.replace(train={"base_lr": 2.5}, output_dir="results/lr2.5")

Parsing uses OmegaConf structured configs built from the dataclasses themselves, so every section rejects unknown
keys and converts and checks types; each dataclass then checks its values. Every error is one ``ValueError`` line
naming the key and the fix.

Override grammar (``section.field=value``), and the rules :meth:`RunConfig.replace` shares:

- The value is read as YAML (``5``, ``false``, ``null``, ``[0, 2]``, ``{name: linear}``) and then converted to the
  field's type; a value containing ``#`` is taken as written (``output_dir=/runs/base #2`` is ``/runs/base #2``,
  not a YAML comment), and ``${...}`` is not interpolated.
- ``section=value`` replaces a whole section (``prune={}`` restores its defaults); ``compare.<method>=<mapping>``
  sets one method's presets.
- A ``method.name`` that differs from the current one is applied first and drops the old method's options (they
  belong to another method): ``method.name=vpt-deep method.num_prompts=10`` gives VPT-deep with 10 prompts and its
  own defaults otherwise. The same name keeps the options.
- ``train.epochs=N`` without ``train.warmup_epochs`` keeps the warm-up's share of the schedule, below ``N``
  (the starter's 100 epochs with 10 of warm-up become 30 with 3, or 2 with 0).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import (ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException)

from .. import pruning
from ..backbones import (IMAGENET_MEAN, IMAGENET_STD, STARTER_BACKBONES, BackboneError, backbone_input_size,
                         backbone_mean_std, check_backbone_name, load_backbone)
from ..data import MAX_UNREADABLE, RESIZES, TRAINVAL, Preprocessing
from ..methods import METHODS, MethodConfig
from ..training import TrainConfig, result_settings

CONFIG_DIR = Path(__file__).parent / "configs"
SECTIONS = ("data", "backbone", "method", "train", "prune", "compare", "output_dir")
REQUIRED_SECTIONS = ("data", "backbone", "method", "train")
NORMALIZATIONS = ("imagenet", "backbone")  # data.normalize: the papers' ImageNet statistics, or the backbone's own


@dataclass
class DataConfig:
    """Where the images are and how to read them.

    Attributes:
        root: FGVC root with train/val/test.json.
        synthetic: generate the offline starter dataset at ``root`` if it is missing.
        crop_size: model input size (224 for ViT-B/16, 64 for the starter).
        cache: keep decoded images in memory. num_workers: DataLoader workers (decoding threads on the device path).
        on_device: keep the decoded images on the training device and augment there
            (:mod:`e2vpt_viz.experiments.device_data`): "auto" (when training on CUDA), true (also on the CPU) or false.
        device_budget_mb: most memory the images may take on the device (default: half of what is free); a dataset
            that needs more falls back to the DataLoader path with a note.
        max_unreadable: the share of a split's listed images that may be missing or unreadable (0.05: 5%); more is
            refused before training (missing files) or at evaluation (undecodable ones). Evaluation never
            substitutes an image: it reports how many it skipped.
        resize: "crop", VPT's FGVC pipeline (short side to crop·256/224, random crop and flip in training, centre
            crop otherwise), or "square", VPT's VTAB-1k pipeline (the whole image to crop × crop, no augmentation);
            see :class:`~e2vpt_viz.data.Preprocessing`.
        normalize: "imagenet" (ImageNet mean/std for every backbone, as the VPT code and the papers do) or
            "backbone" (the statistics the backbone was pre-trained with: CLIP's, SigLIP's 0.5 / 0.5, ...; see
            :func:`~e2vpt_viz.backbones.backbone_mean_std`).
        train_split: "train", or "trainval" (VTAB-1k's final runs train on train800val200 and have no validation
            split; the root needs ``trainval.json``).
    """

    root: str
    synthetic: bool = False
    crop_size: int = 224
    cache: bool = False
    num_workers: int = 4
    on_device: Union[bool, str] = "auto"
    device_budget_mb: Optional[float] = None
    max_unreadable: float = MAX_UNREADABLE
    resize: str = "crop"
    normalize: str = "imagenet"
    train_split: str = "train"

    def __post_init__(self) -> None:
        if self.resize not in RESIZES:
            raise ValueError(f"data.resize must be one of {', '.join(RESIZES)} (crop: VPT's FGVC pipeline, square: "
                             f"its VTAB-1k pipeline), got {self.resize!r}.")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"data.normalize must be imagenet (the papers' choice) or backbone (the statistics the "
                             f"backbone was pre-trained with), got {self.normalize!r}.")
        if self.train_split not in ("train", TRAINVAL):
            raise ValueError(f"data.train_split must be train or {TRAINVAL} (VTAB-1k's final runs), "
                             f"got {self.train_split!r}.")
        if self.crop_size < 1:
            raise ValueError(f"data.crop_size must be a positive number of pixels (224 for ViT-B/16, 64 for the "
                             f"starter), got {self.crop_size!r}.")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0 (0 loads in the main process), got {self.num_workers!r}.")
        if self.on_device not in ("auto", True, False):
            raise ValueError(f"data.on_device must be auto, true or false, got {self.on_device!r}.")
        if self.device_budget_mb is not None and not (isinstance(self.device_budget_mb, (int, float))
                                                      and self.device_budget_mb >= 0):
            raise ValueError(f"data.device_budget_mb must be a number of MB >= 0 or null, "
                             f"got {self.device_budget_mb!r}.")
        if not 0 <= self.max_unreadable <= 1:
            raise ValueError(f"data.max_unreadable is a share of a split's images in [0, 1] (0.05 = 5%), "
                             f"got {self.max_unreadable!r}.")

    def preprocessing(self, backbone: str) -> Preprocessing:
        """The resize rule and the normalisation of this config for the backbone named ``backbone``."""
        mean, std = backbone_mean_std(backbone) if self.normalize == "backbone" else (IMAGENET_MEAN, IMAGENET_STD)
        return Preprocessing(self.resize, mean, std)


@dataclass
class BackboneConfig:
    """The frozen ViT: a timm name or ``starter-vit``; see :func:`~e2vpt_viz.backbones.load_backbone`.

    Attributes:
        name: timm ViT name (``vit_base_patch16_224.orig_in21k``) or a starter name.
        pretrained: load pre-trained weights (timm download or the committed starter weights).
        checkpoint: a local weights file to load instead of downloading.
    """

    name: str
    pretrained: bool = True
    checkpoint: Optional[str] = None

    def __post_init__(self) -> None:
        check_backbone_name(self.name)
        if self.checkpoint is not None and not Path(self.checkpoint).expanduser().is_file():
            raise ValueError(f"backbone.checkpoint {self.checkpoint} is not a file; give the path of a weights file "
                             "(.safetensors, .pth or .npz) or leave it out.")

    def load(self, img_size: Optional[int] = None):
        """The backbone (a timm ``VisionTransformer`` without classifier) for ``img_size``-px inputs (the run's
        ``data.crop_size``; None: the backbone's own size). A timm ViT made for another size is built at this one, its
        pre-trained position embedding resampled by timm (e.g. DINOv2's 518 px at 224); a starter backbone, made for
        one size, refuses another in one line."""
        native = backbone_input_size(self.name)[-1]
        if img_size is None or img_size == native:
            return load_backbone(self.name, self.pretrained, self.checkpoint)
        if self.name in STARTER_BACKBONES:
            raise BackboneError(f"{self.name} takes {native} x {native} images, but data.crop_size={img_size}; set "
                                f"data.crop_size={native} (the starter config does).")
        return load_backbone(self.name, self.pretrained, self.checkpoint, img_size=img_size)


@dataclass
class PruneConfig:
    """The ``prune`` section: E²VPT's pruning-and-rewinding protocol.

    Attributes:
        score: "signed" (official code) or "abs" (paper formula); see :func:`pruning.importance_scores`.
        num_tokens / num_segments: candidate budgets; None = the official lists for P and 16 segments.
        sweep_ratios: instant-pruning ratios evaluated on test for the slider.
    """

    score: str = "signed"
    num_tokens: Optional[list[int]] = None
    num_segments: Optional[list[int]] = None
    sweep_ratios: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

    def __post_init__(self) -> None:
        if self.score not in ("signed", "abs"):
            raise ValueError(f"prune.score must be 'signed' or 'abs', got {self.score!r}.")
        for name in ("num_tokens", "num_segments"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (list, tuple)) or not value
                                      or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                 for v in value)):
                raise ValueError(f"prune.{name} must be a non-empty list of counts >= 0 (or null), got {value!r}.")
            if value is not None:
                setattr(self, name, list(value))
        self.sweep_ratios = tuple(float(r) for r in self.sweep_ratios)
        for ratio in self.sweep_ratios:
            try:
                pruning.check_ratio(ratio)
            except ValueError as err:
                raise ValueError(f"prune.sweep_ratios: {err}") from None


SECTION_TYPES = {"data": DataConfig, "backbone": BackboneConfig, "train": TrainConfig, "prune": PruneConfig}


@dataclass(frozen=True)
class RunConfig:
    """One run: what to train on, with which backbone and method, how, and where to write it.

    Build it with :func:`load_run_config` (YAML, packaged name, overrides) or :meth:`from_dict`; change it with
    :meth:`replace` (the override rules of the module docstring apply); :meth:`to_dict` gives the plain dict stored
    in ``metrics.json``.
    """

    data: DataConfig
    backbone: BackboneConfig
    method: MethodConfig
    train: TrainConfig
    prune: PruneConfig = field(default_factory=PruneConfig)
    compare: dict[str, dict[str, Any]] = field(default_factory=dict)
    output_dir: Optional[str] = None

    @property
    def method_name(self) -> str:
        """The method's name as in ``METHODS`` (``vpt-deep``, ``e2vpt``, ...)."""
        return self.method.method_name()

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """A validated config from its plain form (a parsed YAML file or :meth:`to_dict`'s output)."""
        if not isinstance(data, dict):
            raise ValueError(f"A run config must be a mapping of sections {list(SECTIONS)}, got {data!r}.")
        unknown = [k for k in data if k not in SECTIONS]
        if unknown:
            raise ValueError(_unknown_key_message(str(unknown[0])))
        missing = [s for s in REQUIRED_SECTIONS if data.get(s) is None]
        if missing:
            raise ValueError(f"The run config has no section {missing[0]!r}; "
                             f"a run config needs {list(REQUIRED_SECTIONS)}.")
        sections = {name: _section(name, kind, data.get(name) or {}) for name, kind in SECTION_TYPES.items()}
        output_dir = data.get("output_dir")
        if output_dir is not None and not isinstance(output_dir, (str, Path)):
            raise ValueError(f"output_dir must be a folder path or null, got {output_dir!r}.")
        compare = _compare(data.get("compare") or {})
        return cls(method=_method(data["method"]), compare=compare,
                   output_dir=None if output_dir is None else str(output_dir), **sections)

    def to_dict(self) -> dict:
        """The plain, JSON-serialisable form; ``RunConfig.from_dict(cfg.to_dict()) == cfg``."""
        return json.loads(json.dumps({
            "data": asdict(self.data), "backbone": asdict(self.backbone), "method": method_dict(self.method),
            "train": asdict(self.train), "prune": asdict(self.prune), "compare": self.compare,
            "output_dir": self.output_dir}))

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with some fields changed, validated; a section's changes are a mapping of its fields.

        ``cfg.replace(train={"base_lr": 2.5, "seed": 44}, output_dir="results/x")``;
        ``cfg.replace(method={"name": "vpt-deep", "num_prompts": 10})`` (a new method name drops the old options;
        ``train={"epochs": N}`` alone scales the warm-up, as overrides do). A method config object or a section's
        dataclass replaces that section as it is.
        """
        pairs: list[tuple[str, Any]] = []
        for key, value in changes.items():
            if isinstance(value, MethodConfig):
                pairs.append((key, method_dict(value)))
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):
                pairs.append((key, asdict(value)))
            elif key in SECTION_TYPES or key == "method":
                if not isinstance(value, dict):
                    raise ValueError(f"replace({key}=...) takes a mapping of {key} fields, got {value!r}.")
                pairs += [(f"{key}.{k}", v) for k, v in value.items()]
            else:
                pairs.append((key, value))
        return _apply(self, pairs)

    def with_presets(self, method: str) -> "RunConfig":
        """The config of ``method`` in a comparison: the method with its default options, then its ``compare``
        overrides (``compare: {vpt-deep: {method.num_prompts: 10, train.base_lr: 2.5}}``)."""
        return _apply(self, [("method", {"name": method}), *self.compare.get(method, {}).items()])

    def with_overrides(self, overrides: Sequence[str]) -> "RunConfig":
        """A copy with ``section.field=value`` strings applied (the grammar of the module docstring)."""
        return _apply(self, [parse_override(item) for item in overrides])


def method_dict(method: MethodConfig) -> dict:
    """A method config as the ``method`` section writes it: ``{"name": ..., **options}`` (without the fields the
    name fixes, such as VPT's ``deep``)."""
    name = method.method_name()
    fixed = METHODS[name][1]
    return {"name": name, **{k: v for k, v in asdict(method).items() if k not in fixed}}


def method_options(name: str) -> list[str]:
    """The options a method's section takes besides ``name``."""
    cls, fixed = METHODS[name]
    return [f.name for f in dataclasses.fields(cls) if f.name not in fixed]


def packaged_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_run_config(config: Union[str, Path, dict, RunConfig], overrides: Sequence[str] = ()) -> RunConfig:
    """A run config from a packaged name, a YAML path, a dict or a :class:`RunConfig`, with ``section.field=value``
    overrides applied (see the module docstring for the grammar and its rules).

    Raises:
        ValueError: one line naming the bad key or value, e.g. ``unknown key backbone.pretraind; did you mean
            backbone.pretrained?``.
    """
    if isinstance(config, RunConfig):
        cfg = config
    elif isinstance(config, dict):
        cfg = _check_presets(RunConfig.from_dict(copy.deepcopy(config)))
    else:
        path = Path(config)
        if not path.is_file():
            path = CONFIG_DIR / f"{config}.yaml"
        if not path.is_file():
            raise ValueError(f"Config {str(config)!r} is neither a file nor a packaged config ({packaged_configs()}).")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"Config {path} is not valid YAML: {' '.join(str(err).split())}") from None
        cfg = _check_presets(RunConfig.from_dict(data))
    return cfg.with_overrides(overrides)


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.epochs=5"`` -> ``("train.epochs", 5)``; the value is YAML unless it contains ``#`` (then a string)."""
    if not isinstance(item, str) or "=" not in item:
        raise ValueError(f"Override {item!r} must look like section.field=value, e.g. train.epochs=5.")
    key, raw = item.split("=", 1)
    if "#" in raw:
        return key.strip(), raw
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ValueError(f"Override {item!r}: the value is not valid YAML; quote it, e.g. {key}='{raw}'.") from None


def _valid_keys() -> list[str]:
    keys = list(SECTIONS)
    for name, kind in SECTION_TYPES.items():
        keys += [f"{name}.{f.name}" for f in dataclasses.fields(kind)]
    return keys + ["method.name"]


def _unknown_key_message(key: str, candidates: Optional[Sequence[str]] = None) -> str:
    candidates = list(candidates if candidates is not None else _valid_keys())
    last = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    close = close or [c for c in candidates if c.rsplit(".", 1)[-1] == last]  # "epochs" -> "train.epochs"
    close = close or difflib.get_close_matches(key, candidates, n=1, cutoff=0.0)
    return f"unknown key {key}; did you mean {close[0]}?" if close else f"unknown key {key}."


def _first_line(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text.split(". Did you mean")[0]


def _to_object(section: str, kind: type, values: dict, fields_named: Sequence[str]):
    """``kind(**values)`` through its OmegaConf schema: unknown keys, types, then the dataclass's own checks.

    Values are taken as written: no ``${...}`` interpolation is resolved.
    """
    try:
        conf = OmegaConf.merge(OmegaConf.structured(kind), values)
        return kind(**OmegaConf.to_container(conf, resolve=False, throw_on_missing=True))
    except (ConfigKeyError, ConfigAttributeError) as err:
        key = f"{section}.{err.key if err.key is not None else _first_line(err)}"
        raise ValueError(_unknown_key_message(key, [f"{section}.{f}" for f in fields_named])) from None
    except MissingMandatoryValue as err:
        raise ValueError(f"{section}.{err.key} is required, e.g. {section}.{err.key}=...") from None
    except OmegaConfBaseException as err:
        key = f"{section}.{err.key}" if err.key is not None else section
        raise ValueError(f"{key}: {_first_line(err)}.".replace("..", ".")) from None
    except (ValueError, TypeError) as err:  # the dataclass's own checks name the field without its section
        message = str(err)
        first = message.split(" ", 1)[0]
        raise ValueError(f"{section}.{message}" if first in fields_named else message) from None


def _section(name: str, kind: type, values: Any):
    if not isinstance(values, dict):
        raise ValueError(f"{name} must be a mapping of its fields {[f.name for f in dataclasses.fields(kind)]}, "
                         f"got {values!r}.")
    return _to_object(name, kind, values, [f.name for f in dataclasses.fields(kind)])


def _method(values: Any) -> MethodConfig:
    """The method config of a ``method`` section ``{"name": ..., **options}``."""
    if not isinstance(values, dict) or "name" not in values:
        raise ValueError(f"method must be a mapping with a name (one of {sorted(METHODS)}) and its options, "
                         f"got {values!r}.")
    options = dict(values)
    name = options.pop("name")
    if name not in METHODS:
        close = difflib.get_close_matches(str(name), list(METHODS), n=1)
        hint = f" did you mean {close[0]}?" if close else ""
        raise ValueError(f"Unknown method {name!r} in method.name;{hint} choose one of {sorted(METHODS)}.")
    cls, fixed = METHODS[name]
    allowed = method_options(name)
    for key in options:
        if key not in allowed:
            raise ValueError(_unknown_key_message(f"method.{key}", [f"method.{k}" for k in ["name", *allowed]])
                             + f" ({name}'s options are {allowed})")
    return _to_object("method", cls, {**options, **fixed}, allowed)


def _compare(values: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
        raise ValueError(f"compare must map method names to overrides, e.g. {{vpt-deep: {{train.base_lr: 2.5}}}}, "
                         f"got {values!r}.")
    for method in values:
        if method not in METHODS:
            raise ValueError(f"compare: unknown method {method!r}; choose from {sorted(METHODS)}.")
    return {str(m): {str(k): v for k, v in preset.items()} for m, preset in values.items()}


def _check_presets(cfg: RunConfig) -> RunConfig:
    """Every ``compare`` preset must apply to the config (checked when the section is read or changed)."""
    bare = dataclasses.replace(cfg, compare={})
    for method, preset in cfg.compare.items():
        try:
            _apply(bare, [("method", {"name": method}), *preset.items()])
        except ValueError as err:
            raise ValueError(f"compare.{method}: {err}") from None
    return cfg


def _scaled_warmup(train: TrainConfig, epochs: Any) -> int:
    """The warm-up for a schedule changed to ``epochs``: the same fraction of it, below ``epochs``."""
    if isinstance(epochs, bool) or not isinstance(epochs, int):
        return train.warmup_epochs  # the schema or TrainConfig reports the bad value
    return max(0, min(epochs - 1, round(train.warmup_epochs * epochs / train.epochs)))


def _apply(cfg: RunConfig, pairs: Sequence[tuple[str, Any]]) -> RunConfig:
    """Apply ``(dotted key, value)`` changes with the module docstring's rules; the result is validated anew."""
    if not pairs:
        return cfg
    data = cfg.to_dict()
    # A new method name comes first and drops the old method's options (they belong to another method).
    pairs = sorted(pairs, key=lambda kv: kv[0] not in ("method", "method.name"))
    keys = {key for key, _ in pairs}
    for key, value in pairs:
        parts = key.split(".")
        if parts[0] not in SECTIONS or (parts[0] == "output_dir" and len(parts) > 1):
            raise ValueError(_unknown_key_message(key))
        if parts[0] == "compare" and len(parts) > 2:
            parts = ["compare", parts[1], ".".join(parts[2:])]
        if key == "method.name" and value != data["method"]["name"]:
            data["method"] = {}
        if len(parts) == 1:
            data[key] = copy.deepcopy(value)
            continue
        node = data
        for i, part in enumerate(parts[:-1]):
            if node.get(part) is None and parts[0] in ("compare", "method"):
                node[part] = {}
            node = node.get(part)
            if not isinstance(node, dict):
                raise ValueError(_unknown_key_message(key) if i else f"Override {key!r}: {part} is not a section.")
        if parts[0] in SECTION_TYPES and parts[-1] not in node:
            raise ValueError(_unknown_key_message(key, [f"{parts[0]}.{f.name}"
                                                         for f in dataclasses.fields(SECTION_TYPES[parts[0]])]))
        node[parts[-1]] = copy.deepcopy(value)
    if "train.epochs" in keys and "train.warmup_epochs" not in keys and isinstance(data.get("train"), dict):
        data["train"]["warmup_epochs"] = _scaled_warmup(cfg.train, data["train"].get("epochs"))
    new = RunConfig.from_dict(data)
    return _check_presets(new) if any(key.split(".")[0] == "compare" for key in keys) else new


# Settings that do not change what a run computes (where it runs, where it writes, how it shows progress).
_NOT_RESULT = {("train", "device"), ("train", "progress"), ("train", "compile"), ("train", "grad_checkpointing"),
               ("data", "root"), ("data", "num_workers"), ("data", "cache"), ("data", "on_device"),
               ("data", "device_budget_mb"), ("data", "max_unreadable"), ("output_dir",)}


def result_settings_of(config: dict) -> dict:
    """A run config (plain dict) without the fields that do not change its result (device, folders, progress); a
    config recorded before a training setting existed takes that setting's earlier value."""
    kept = {section: ({k: v for k, v in values.items() if (section, k) not in _NOT_RESULT}
                      if isinstance(values, dict) else values)
            for section, values in config.items() if (section,) not in _NOT_RESULT}
    if isinstance(kept.get("train"), dict):
        kept["train"] = result_settings(kept["train"])
    return kept


def settings_digest(cfg: RunConfig, **extra: Any) -> str:
    """8 hex digits naming a run's result settings (and ``extra``, e.g. a source dataset): a lesson's run folder is
    ``<method>-<digest>``, so a run with other settings trains in a folder of its own and coming back to earlier
    settings finds their finished run."""
    text = json.dumps({**result_settings_of(cfg.to_dict()), **extra}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]
