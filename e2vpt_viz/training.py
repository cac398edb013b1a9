"""The training loop: plain functions you can read top to bottom.

``fit`` trains whatever a method left trainable (prompts, masks, head, tuned backbone weights) with SGD-momentum
(the papers' default) or AdamW, a linear warm-up then cosine decay (per step by default, or per epoch exactly as the
official VPT / E²VPT code steps it), and the papers' learning-rate scaling ``lr = base_lr · batch_size / 256``. Every epoch it evaluates, calls the callbacks (live plots) and atomically
writes a resumable training state; an interrupted run started again with the same arguments continues from the
last finished epoch and ends with the same prompts as an uninterrupted one.

The fast path on a GPU: bf16 autocast (``amp``), fused scaled-dot-product attention with the key-value prompts
concatenated in head space (flash kernels), optional ``torch.compile`` (``compile``) and gradient checkpointing
(``grad_checkpointing``), no host synchronisation inside the step (one ``.item()`` per epoch), and running out of
GPU memory ends with :class:`TrainingOutOfMemoryError` (what to change, the last checkpoint intact).

Training on several processes is the platform's business: ``fit`` and ``evaluate`` take a :class:`Processes` (one
process by default) whose few hooks the loop calls; :mod:`e2vpt_viz.experiments.distributed` provides the
torchrun one (DistributedDataParallel, sharded batches).
"""
from __future__ import annotations

import math
import re
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpoint import (CheckpointMismatchError, CheckpointReadError, atomic_write, check_signature, load_torch_state,
                         model_signature, restore_trained_state, save_prompts, trained_state)
from .data import MAX_UNREADABLE, DatasetLayoutError
from .model import PromptedViT, require_prompted
from .run_folder import owning

STATE_FILE = "train_state.pt"
PROMPTS_FILE = "prompts.safetensors"


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


class TrainingOutOfMemoryError(RuntimeError):
    """The device ran out of memory; the message says what to change, and the last checkpoint is left as it was."""


OPTIMIZERS = ("sgd", "adamw", "vpt-adamw")
VPT_ADAMW = {"eps": 1e-6, "weight_decay": 0.01}  # the official fine-tuning AdamW (VPT src/solver/optimizer.py)


@dataclass
class TrainConfig:
    """Optimisation settings (defaults: the papers' prompt-tuning recipe).

    Attributes:
        epochs / warmup_epochs: schedule length; warm-up is linear, then cosine.
        schedule: "step": the lr changes every step, warm-up from the first step's lr, cosine to zero at the end
            (our default: no step wasted at lr 0); "epoch": the official VPT / E²VPT ``WarmupCosineSchedule`` stepped
            once per epoch (VPT ``src/solver/lr_scheduler.py``, ``src/engine/trainer.py``): epoch e trains at
            lr·e/warmup during warm-up, so epoch 0 trains at lr 0, then at lr·½(1 + cos(π(e − warmup)/(epochs −
            warmup))), so the last epoch's lr stays above zero. See :func:`get_lr`.
        batch_size: images per step (used to build loaders; the lr is scaled by the loader's real batch size).
        base_lr: learning rate before scaling by batch_size / 256.
        weight_decay: applied to every trained tensor except the head bias ("sgd", "adamw").
        optimizer: "sgd" (momentum 0.9), "adamw" (torch AdamW, its default eps 1e-8), or "vpt-adamw": what the
            official VPT code runs for its fine-tuning baselines (full, partial, bias; VPT
            ``src/solver/optimizer.py``): with weight_decay > 0, AdamW with eps 1e-6 and a weight decay of 0.01 on
            every tensor except biases, whatever weight_decay says; with weight_decay = 0, SGD-momentum without
            decay (the official code falls through to SGD).
        seed: drives data order, augmentation and prompt dropout, per epoch (so resuming is exact).
        device: "auto" (CUDA when present), "cpu" or "cuda[:i]".
        amp: True: bf16 autocast on CUDA, fp32 elsewhere (the default); "bf16": bf16 autocast on every device, the
            CPU too (to check on a laptop what bf16 does to a result); False: fp32 everywhere, as the official code
            trains.
        compile: ``torch.compile`` the model for training and evaluation: True (inductor) or a back-end name.
        grad_checkpointing: recompute each block's activations in the backward pass (less memory, ~30% slower).

    ``progress``, ``device``, ``compile`` and ``grad_checkpointing`` do not change what is computed, so a run may
    resume with other values (see :func:`result_settings`).
    """

    epochs: int = 100
    warmup_epochs: int = 10
    schedule: Literal["step", "epoch"] = "step"
    batch_size: int = 128
    base_lr: float = 0.1
    weight_decay: float = 1e-4
    optimizer: Literal["sgd", "adamw", "vpt-adamw"] = "sgd"
    momentum: float = 0.9
    seed: int = 42
    device: str = "auto"
    amp: Union[bool, str] = True
    progress: bool = True
    compile: Union[bool, str] = False
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs} for {self.epochs} epochs.")
        if not self.base_lr > 0 or not self.weight_decay >= 0:
            raise ValueError(f"base_lr must be > 0 and weight_decay >= 0, got {self.base_lr} and {self.weight_decay}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}, got {self.optimizer!r}.")
        if self.schedule not in ("step", "epoch"):
            raise ValueError(f"schedule must be 'step' (per-step cosine) or 'epoch' (the official per-epoch schedule), "
                             f"got {self.schedule!r}.")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}.")
        if not isinstance(self.compile, (bool, str)) or self.compile == "":
            raise ValueError(f"compile must be true, false or a torch.compile back-end name, got {self.compile!r}.")
        if isinstance(self.compile, str):
            from torch._dynamo import list_backends

            if self.compile not in list_backends(exclude_tags=()):
                raise ValueError(f"compile must be true, false or a torch.compile back-end name "
                                 f"({', '.join(list_backends())}), got {self.compile!r}.")
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}.")
        if self.amp not in (True, False, "bf16"):
            raise ValueError(f"amp must be true (bf16 autocast on CUDA), false (fp32) or bf16 (bf16 autocast on every "
                             f"device, the CPU too), got {self.amp!r}.")
        if not isinstance(self.grad_checkpointing, bool):
            raise ValueError(f"grad_checkpointing must be true or false, got {self.grad_checkpointing!r}.")

    def resolve_device(self) -> torch.device:
        """The device to train on: "auto" is CUDA when present, else the CPU.

        Raises:
            ValueError: the device named is not on this machine (one line, with the devices that are).
        """
        device = torch.device("cuda" if self.device == "auto" and torch.cuda.is_available()
                              else "cpu" if self.device == "auto" else self.device)
        if device.type == "cuda" and (not torch.cuda.is_available()
                                      or (device.index or 0) >= torch.cuda.device_count()):
            there = (f"{torch.cuda.device_count()} CUDA device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}"
                     if torch.cuda.is_available() else "no CUDA device")
            raise ValueError(f"train.device={self.device} is not on this machine ({there}); use train.device=auto "
                             "or cpu.")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError("train.device=mps is not available here; use train.device=auto or cpu.")
        return device


def short_schedule_warmup(epochs: int) -> int:
    """Warm-up epochs for a shortened schedule of ``epochs`` (few-shot runs, the short-schedule study): 10 % of it, at
    least one epoch, none for a 1-epoch run."""
    return min(max(1, epochs // 10), epochs - 1)


class Processes:
    """The processes that train one model together: here one, the default of :func:`fit` and :func:`evaluate`.

    The loop calls these hooks and nothing else about processes; :class:`e2vpt_viz.experiments.distributed.Torchrun`
    overrides them for several processes, each training a slice of every global batch.
    """

    is_main = True  # the process that writes files and calls the epoch callbacks

    def device(self, config: TrainConfig) -> torch.device:
        """The device this process trains on."""
        return config.resolve_device()

    def prepare(self, model: PromptedViT, loaders: Sequence[Optional[DataLoader]]) -> torch.nn.Module:
        """Check the loaders and return what the training steps call (the model itself, or a wrapper of it)."""
        return model

    def batch_size(self, loader: DataLoader) -> int:
        """The batch size the learning rate is scaled by (the global batch over all processes)."""
        return loader.batch_size

    def begin_step(self, loader: DataLoader, step: int) -> None:
        """Called before training step ``step`` (0-based within the epoch) of ``loader``."""

    def step_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss to differentiate, summed cross-entropy of this process's images) of a step: (B, C), (B,) -> 0-d.
        One process: the batch's mean cross-entropy."""
        loss = F.cross_entropy(logits.float(), labels)
        return loss, loss.detach() * labels.shape[0]

    def end_step(self) -> None:
        """Called after every training step's forward pass, also when it fails."""

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over processes, in place."""
        return tensor

    def barrier(self) -> None:
        """Wait for every process."""


ONE_PROCESS = Processes()


def get_lr(step: int, total_steps: int, warmup_steps: int, peak_lr: float, steps_per_epoch: int = 1,
           schedule: str = "step") -> float:
    """Learning rate at a 0-based step.

    ``schedule="step"``: linear warm-up to ``peak_lr`` over ``warmup_steps`` (the first step already above zero), then
    half-cosine to 0 at ``total_steps``. ``"epoch"``: the official per-epoch schedule, constant within an epoch
    e = step // steps_per_epoch: ``peak_lr · e / W`` for e < W warm-up epochs (epoch 0 at lr 0), then
    ``peak_lr · ½(1 + cos(π (e − W) / (E − W)))`` over E epochs (above zero in the last epoch).
    """
    if schedule == "epoch":
        epoch, warmup, epochs = (step // steps_per_epoch, warmup_steps // steps_per_epoch,
                                 total_steps // steps_per_epoch)
        if epoch < warmup:
            return peak_lr * epoch / warmup
        return 0.5 * peak_lr * (1.0 + math.cos(math.pi * (epoch - warmup) / max(1, epochs - warmup)))
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * peak_lr * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: PromptedViT, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser over the trainable tensors (see :class:`TrainConfig`'s ``optimizer``).

    "sgd" / "adamw": every tensor decays by ``weight_decay`` except the head bias (as in VPT's SGD path);
    "vpt-adamw": the official fine-tuning AdamW (eps 1e-6, decay 0.01 on all but biases), or plain SGD-momentum
    when ``weight_decay`` is 0, as the official code does.
    """
    trained = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    if config.optimizer == "vpt-adamw":
        if config.weight_decay == 0:  # the official make_optimizer only builds AdamW when WEIGHT_DECAY > 0
            return torch.optim.SGD([p for _, p in trained], lr=config.base_lr, momentum=config.momentum)
        exempt = lambda name: "bias" in name  # the official no-decay filter; its norms are not named LayerNorm
        groups = [{"params": [p for n, p in trained if not exempt(n)], "weight_decay": VPT_ADAMW["weight_decay"]},
                  {"params": [p for n, p in trained if exempt(n)], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=config.base_lr, eps=VPT_ADAMW["eps"])
    groups = [{"params": [p for n, p in trained if n != "head.bias"], "weight_decay": config.weight_decay},
              {"params": [p for n, p in trained if n == "head.bias"], "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.base_lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.base_lr)


def _autocast(device: torch.device, amp: Union[bool, str]):
    """bf16 autocast on CUDA when ``amp`` is true, on any device when it is "bf16"; else nothing (fp32)."""
    if amp == "bf16" or (amp is True and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def check_loader(loader: Any, caller: str, role: str, batched: bool = False) -> None:
    """One-line ``TypeError`` unless ``loader`` yields ``(images, labels)`` batches (a DataLoader, e.g. from
    :func:`~e2vpt_viz.data.make_loaders`; ``batched``: one that also knows its ``batch_size`` and length, as training
    needs)."""
    iterable = loader is not None and not isinstance(loader, (str, bytes, dict)) and hasattr(loader, "__iter__")
    if not iterable or (batched and not (hasattr(loader, "batch_size") and hasattr(loader, "__len__"))):
        raise TypeError(f"{caller} needs {role} as a DataLoader of (images, labels) batches, e.g. "
                        f"make_loaders(root, crop_size, batch_size)['train'], got {type(loader).__name__}.")


@torch.no_grad()
def evaluate(model: PromptedViT, loader: DataLoader, device: Union[str, torch.device, None] = None,
             amp: Union[bool, str] = True, forward: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
             processes: Processes = ONE_PROCESS) -> dict:
    """Top-1 accuracy, mean loss and per-class accuracy of ``model`` on ``loader``.

    ``forward`` replaces ``model(images)`` (a compiled model). Nothing waits for the device until the end. With
    several ``processes`` each evaluates its share of the split and the counts are summed over them.

    Images that could not be read are not replaced: the metric is over ``count`` images, ``skipped`` says how many of
    the split's listed images were left out, and more than the dataset's ``max_unreadable`` share (5% by default)
    raises :class:`~e2vpt_viz.data.DatasetLayoutError`.
    """
    require_prompted(model, "evaluate()")
    check_loader(loader, "evaluate()", "the split to evaluate")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    forward = forward if forward is not None else model
    num_classes = model.num_classes
    sums = torch.zeros(1 + 2 * num_classes, device=device)  # loss sum, correct per class, count per class
    loss_sum, correct, total = sums[0], sums[1:1 + num_classes], sums[1 + num_classes:]
    with model.evaluating():
        for images, labels in loader:
            if labels.numel() == 0:  # every image of the batch was unreadable
                continue
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with _autocast(device, amp):
                logits = forward(images)
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
            total.index_add_(0, labels, torch.ones_like(labels, dtype=total.dtype))
            correct.index_add_(0, labels, (logits.argmax(-1) == labels).to(correct.dtype))
    processes.all_reduce_sum(sums)
    count = int(total.sum().item())
    dataset = getattr(loader, "dataset", None)
    listed = len(getattr(dataset, "samples", ())) or count
    skipped = max(0, listed - count)
    limit = getattr(dataset, "max_unreadable", MAX_UNREADABLE)
    if skipped > limit * listed or count == 0:
        if dataset is None or not hasattr(dataset, "samples"):
            raise ValueError("evaluate() got an empty loader.")
        root = getattr(dataset, "root", "ROOT")
        raise DatasetLayoutError(
            f"{skipped} of the {listed} images listed in {root} could not be read (the metric would cover "
            f"{count}); `python -m data_prep verify --root {root}` lists them. Restore them, or allow a larger share "
            f"with data.max_unreadable (now {limit}).")
    per_class = (correct / total.clamp(min=1)).tolist()
    return {"acc": correct.sum().item() / count, "loss": loss_sum.item() / count, "per_class_acc": per_class,
            "count": count, "skipped": skipped}


def train_one_epoch(model: PromptedViT, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    lr_at: Callable[[int], float], first_step: int, device: torch.device, amp: Union[bool, str],
                    progress: bool = False, forward: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                    processes: Processes = ONE_PROCESS) -> dict:
    """One pass over ``loader``; returns mean loss and accuracy. No host sync inside the loop.

    ``forward`` replaces ``model(images)`` (a compiled or DistributedDataParallel model); ``processes`` gives each
    step's loss (one process: the batch's mean cross-entropy).
    """
    forward = forward if forward is not None else model
    model.train()
    if forward is not model:
        forward.train()
    sums = torch.zeros(3, device=device)  # loss sum, correct, images
    for i, (images, labels) in enumerate(tqdm(loader, leave=False, disable=not progress, desc="batches")):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(first_step + i)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        processes.begin_step(loader, i)
        try:
            with _autocast(device, amp):
                logits = forward(images)
        finally:
            processes.end_step()
        loss, summed = processes.step_loss(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums[0] += summed
        sums[1] += (logits.argmax(-1) == labels).sum()
        sums[2] += labels.shape[0]
    processes.all_reduce_sum(sums)
    loss_sum, correct, seen = sums.tolist()
    return {"train_loss": loss_sum / seen, "train_acc": correct / seen, "steps": i + 1}


def seed_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Make an epoch's data order, augmentation and dropout depend only on (seed, epoch)."""
    torch.manual_seed(seed * 1_000_003 + epoch)
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(seed * 1_000_003 + epoch)


# Settings that do not change what is computed; a resume may differ in them (and older states lack the new ones).
NON_RESULT_SETTINGS = ("progress", "device", "compile", "grad_checkpointing")


# Result settings added after runs were first recorded, with the value that computes what those runs computed: a
# state or record without one was made with that value.
ADDED_RESULT_SETTINGS = {"schedule": "step"}


def result_settings(settings: dict) -> dict:
    """The training settings that change the trained prompts (a resume may differ in progress bars, device,
    compilation and gradient checkpointing); settings added since a state was written take their earlier value."""
    return {**ADDED_RESULT_SETTINGS, **{k: v for k, v in settings.items() if k not in NON_RESULT_SETTINGS}}


STATE_FIELDS = {"signature": dict, "train_config": dict, "epoch": int, "history": list, "trained": dict,
                "optimizer": dict}  # what _save_state writes: a training state has exactly these


def _check_state_fields(state, path: Path) -> None:
    """A training state is a dict of exactly :data:`STATE_FIELDS` with those types, else one line that says so."""
    fix = "Move it away (or give a new output_dir) to train this run from the start."
    if not isinstance(state, dict):
        raise CheckpointReadError(f"Training state {path} holds a {type(state).__name__}, not a training state; it was "
                                  f"not loaded. {fix}")
    unknown, missing = sorted(set(state) - set(STATE_FIELDS)), sorted(set(STATE_FIELDS) - set(state))
    wrong = sorted(k for k, kind in STATE_FIELDS.items() if k in state and not isinstance(state[k], kind))
    problems = [f"{label} {names}" for label, names in
                (("unknown fields", unknown), ("missing fields", missing), ("fields of the wrong type", wrong)) if names]
    if problems:
        raise CheckpointReadError(f"Training state {path} was not written by this version of e2vpt-viz "
                                  f"({'; '.join(problems)}); it was not loaded. {fix}")


def _load_state(path: Path, model: PromptedViT, optimizer: torch.optim.Optimizer, config: TrainConfig) -> tuple:
    state = load_torch_state(path, "Training state", "Move it away to train this run from the start.")
    _check_state_fields(state, path)
    expected = {"model": model_signature(model), "train": result_settings(asdict(config))}
    found = {"model": state.get("signature"), "train": result_settings(state.get("train_config") or {})}
    check_signature(found, expected, f"Training state {path}",
                    "Resume with the settings the run was started with, or give a new output_dir to start another run.")
    restore_trained_state(model, state["trained"], f"Training state {path}")
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointMismatchError(f"Training state {path}: its optimizer state does not fit this run "
                                      f"({type(error).__name__}: {error}); it was not loaded. Give a new output_dir "
                                      "to start another run.") from None
    return state["epoch"], state["history"]


def _save_state(path: Path, model: PromptedViT, optimizer: torch.optim.Optimizer, config: TrainConfig,
                epoch: int, history: list) -> None:
    state = {"signature": model_signature(model), "train_config": result_settings(asdict(config)), "epoch": epoch,
             "history": history, "trained": trained_state(model), "optimizer": optimizer.state_dict()}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _compiled(module: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    if config.compile is False:
        return module
    return torch.compile(module, backend="inductor" if config.compile is True else config.compile)


def _out_of_memory(config: TrainConfig, device: torch.device, epoch: int, state_path: Optional[Path],
                   saved_epoch: int) -> TrainingOutOfMemoryError:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    smaller = (f"a smaller train.batch_size (now {config.batch_size}, e.g. {max(1, config.batch_size // 2)}; that "
               "changes the results, so train it in a new output_dir)")
    fix = (f"Use {smaller}." if config.grad_checkpointing else
           f"Turn on train.grad_checkpointing=true (same results, less memory; the run resumes) or use {smaller}.")
    if state_path is None:
        where = ""
    elif saved_epoch:
        where = (f" The last checkpoint in {state_path.parent} is intact (epoch {saved_epoch}); run the same command "
                 "again to resume.")
    else:
        where = " No epoch had finished, so nothing was saved."
    return TrainingOutOfMemoryError(f"Out of {device.type.upper()} memory in epoch {epoch + 1}. {fix}{where}")


def fit(model: PromptedViT, train_loader: DataLoader, val_loader: Optional[DataLoader], config: TrainConfig,
        checkpoint_dir: Union[str, Path, None] = None,
        callbacks: Sequence[Callable[[dict, PromptedViT], None]] = (),
        processes: Processes = ONE_PROCESS) -> list[dict]:
    """Train ``model`` and return the per-epoch history (a list of dicts).

    Args:
        model: from :func:`~e2vpt_viz.apply_prompts`.
        train_loader / val_loader: FGVC loaders (``val_loader`` may be None): DataLoaders or the device-resident
            :class:`~e2vpt_viz.experiments.device_data.DeviceLoader`; each process's share with several processes.
        config: optimisation settings (``grad_checkpointing`` turns the model's on while it trains).
        checkpoint_dir: where ``train_state.pt`` (resumable) and ``prompts.safetensors`` (final, kilobytes) go.
            If a training state is there, training resumes from it.
        callbacks: called as ``callback(record, model)`` after every epoch (e.g. a live plot).
        processes: the processes training together (one by default; see :class:`Processes`).

    Each record: epoch (1-based), lr, train_loss, train_acc, val_loss, val_acc, seconds.
    With several processes only the main one writes files and calls the callbacks; every process returns the same
    history. ``checkpoint_dir`` belongs to this process while it trains (:func:`~e2vpt_viz.run_folder.owning`): a
    second process training there gets :class:`~e2vpt_viz.run_folder.RunFolderBusyError`.
    """
    require_prompted(model, "fit()")
    check_loader(train_loader, "fit()", "the training split", batched=True)
    if val_loader is not None:
        check_loader(val_loader, "fit()", "the validation split (or None)")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"fit() needs a TrainConfig(...) as config, got {type(config).__name__}.")
    held = owning(checkpoint_dir) if checkpoint_dir is not None and processes.is_main else nullcontext()
    with held:
        return _fit(model, train_loader, val_loader, config, checkpoint_dir, callbacks, processes)


def _fit(model: PromptedViT, train_loader: DataLoader, val_loader: Optional[DataLoader], config: TrainConfig,
         checkpoint_dir: Union[str, Path, None], callbacks: Sequence[Callable[[dict, PromptedViT], None]],
         processes: Processes) -> list[dict]:
    """:func:`fit`'s loop, with the checkpoint folder held."""
    device = processes.device(config)
    model.to(device)
    optimizer = make_optimizer(model, config)
    steps_per_epoch = len(train_loader)
    peak_lr = config.base_lr * processes.batch_size(train_loader) / 256
    total_steps = config.epochs * steps_per_epoch

    def lr_at(step: int) -> float:
        return get_lr(step, total_steps, config.warmup_epochs * steps_per_epoch, peak_lr, steps_per_epoch,
                      config.schedule)

    main = processes.is_main
    train_forward = processes.prepare(model, (train_loader, val_loader))
    eval_forward = model
    if config.compile is not False:
        eval_forward = _compiled(model, config)
        train_forward = _compiled(train_forward, config) if train_forward is not model else eval_forward

    state_path = Path(checkpoint_dir) / STATE_FILE if checkpoint_dir is not None else None
    start_epoch, history = 0, []
    if state_path is not None and state_path.exists():
        start_epoch, history = _load_state(state_path, model, optimizer, config)

    progress = config.progress and main
    epochs = tqdm(range(start_epoch, config.epochs), disable=not progress, desc="epochs",
                  initial=start_epoch, total=config.epochs)
    checkpointing = model.using(grad_checkpointing=True) if config.grad_checkpointing else nullcontext()
    with checkpointing:
        for epoch in epochs:
            started = time.perf_counter()
            seed_epoch(train_loader, config.seed, epoch)
            record = {"epoch": epoch + 1, "lr": lr_at((epoch + 1) * steps_per_epoch - 1)}
            try:
                record.update(train_one_epoch(model, train_loader, optimizer, lr_at, epoch * steps_per_epoch, device,
                                              config.amp, progress, forward=train_forward, processes=processes))
                if not math.isfinite(record["train_loss"]):
                    where = (f" and train into a new output_dir. The last good checkpoint in {state_path.parent} is "
                             "intact." if state_path else ".")
                    raise TrainingDivergedError(f"Loss became {record['train_loss']} in epoch {epoch + 1}; lower "
                                                f"base_lr (now {config.base_lr}) or weight_decay{where}")
                if val_loader is not None:
                    val = evaluate(model, val_loader, device, config.amp, forward=eval_forward, processes=processes)
                    record.update(val_loss=val["loss"], val_acc=val["acc"])
            except torch.OutOfMemoryError as err:
                raise _out_of_memory(config, device, epoch, state_path, len(history)) from err
            record["seconds"] = time.perf_counter() - started
            del record["steps"]
            history.append(record)
            if state_path is not None and main:
                _save_state(state_path, model, optimizer, config, epoch + 1, history)
            epochs.set_postfix(loss=f"{record['train_loss']:.3f}",
                               val_acc=f"{record.get('val_acc', float('nan')):.3f}")
            if main:
                for callback in callbacks:
                    callback(record, model)
    if checkpoint_dir is not None and main:
        save_prompts(model, Path(checkpoint_dir) / PROMPTS_FILE, history=history)
    processes.barrier()
    return history
