"""What each tuning method costs, measured in one run through the training loop the runs use: training images/s,
peak training memory, inference images/s and FLOPs per image.

    python -m e2vpt_viz costs --config starter --out results/costs.json                  # every method
    python -m e2vpt_viz costs --config cub_e2vpt --out results/costs_gpu.json            # the same on a GPU

Every method trains on the same batches of the config's training split (decoded once, so data loading is not
timed), through :func:`~e2vpt_viz.training.train_one_epoch` with the config's optimiser, batch size and precision;
methods take turns in rounds and the median round counts, so all of them see the same machine state. Peak memory is
``torch.cuda.max_memory_allocated`` over the timed steps on a GPU (weights included). A CPU keeps no allocator
statistics, so there it is the sum of what one training step holds: every weight, the gradients and optimiser state of
the trained ones, and the activations the step saves for its backward pass (measured with saved-tensor hooks, each
storage once); ``memory_kind`` says which. FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode``.
"""
from __future__ import annotations

import datetime
import gc
import statistics
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, flop_registry, sdpa_backward_flop_count, sdpa_flop_count
from tqdm.auto import tqdm

from .. import __version__
from ..checkpoint import write_json
from ..methods import count_parameters
from ..training import _autocast, make_optimizer, train_one_epoch
from .config import RunConfig
from .run import build_model, prepare_data

MEMORY_KINDS = {"cuda": "torch.cuda.max_memory_allocated over the timed steps (weights included)",
                "cpu": "one training step's weights + trained weights' gradients and optimiser state + saved "
                       "activations (CPUs keep no allocator peak)"}


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# CPU fused attention, which some torch releases (2.14) leave out of FlopCounterMode: the same formulas as on CUDA.
_CPU_SDPA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
             torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop}
MISSING_FLOP_FORMULAS = {op: formula for op, formula in _CPU_SDPA.items() if op not in flop_registry}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak CUDA memory over a block (``torch.cuda.max_memory_allocated``, weights included); None on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.bytes, self.oom = device, None, False

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device)


def saved_activation_bytes(model, forward, images: torch.Tensor, labels: torch.Tensor,
                           amp: Union[bool, str]) -> int:
    """Bytes of the tensors one training step saves for its backward pass (parameters excluded, each storage once):
    the activation memory, measured where no allocator statistics exist (CPU)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _autocast(images.device, amp):
        loss = F.cross_entropy(forward(images).float(), labels)
    del loss
    return sum(seen.values())


def flops_per_image(model, images: torch.Tensor, labels: torch.Tensor, train: bool, amp: Union[bool, str]) -> float:
    """FLOPs of one step per image, counted by FlopCounterMode on a batch of at most 4 (every op is per image)."""
    small, small_labels = images[:4], labels[:4]
    counter = FlopCounterMode(display=False, custom_mapping=MISSING_FLOP_FORMULAS)
    autocast = _autocast(images.device, amp)
    was_training = model.training
    model.train(train)
    with counter:
        if train:
            with autocast:
                logits = model(small)
            F.cross_entropy(logits.float(), small_labels).backward()
        else:  # forward only; not under no_grad, where FlopCounterMode's module tracker trips on prompt tensors
            with autocast:
                model(small)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return counter.get_total_flops() / small.shape[0]


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(v.nbytes for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v))


class _MethodCost:
    """One method's model, optimiser and timings on the shared batches."""

    def __init__(self, cfg: RunConfig, method: str, num_classes: int, batches: list, device: torch.device) -> None:
        self.cfg = cfg.with_presets(method)
        self.model = build_model(self.cfg, num_classes).to(device)
        self.optimizer = make_optimizer(self.model, self.cfg.train)
        self.batches, self.device, self.amp = batches, device, self.cfg.train.amp
        self.train_rates: list[float] = []
        self.eval_rates: list[float] = []
        self.peak: Optional[int] = None

    def train_round(self) -> None:
        images = sum(len(labels) for _, labels in self.batches)
        lr = self.cfg.train.base_lr * len(self.batches[0][1]) / 256
        with PeakMemory(self.device) as memory:
            synchronize(self.device)
            started = time.perf_counter()
            train_one_epoch(self.model, self.batches, self.optimizer, lambda step: lr, 0, self.device, self.amp)
            synchronize(self.device)
            self.train_rates.append(images / (time.perf_counter() - started))
        if memory.bytes is not None:
            self.peak = max(self.peak or 0, memory.bytes)

    @torch.no_grad()
    def eval_round(self) -> None:
        images = sum(len(labels) for _, labels in self.batches)
        with self.model.evaluating():
            synchronize(self.device)
            started = time.perf_counter()
            for batch, _ in self.batches:
                with _autocast(self.device, self.amp):
                    self.model(batch)
            synchronize(self.device)
            self.eval_rates.append(images / (time.perf_counter() - started))

    def row(self) -> dict:
        images, labels = self.batches[0]
        model = self.model
        peak, kind = self.peak, "cuda"
        if peak is None:  # CPU: what one step holds
            kind = "cpu"
            trained = [p for p in model.parameters() if p.requires_grad]
            peak = (sum(p.nbytes for p in model.parameters()) + sum(p.nbytes for p in trained)
                    + _state_bytes(self.optimizer)
                    + saved_activation_bytes(model, model, images, labels, self.amp))
            model.zero_grad(set_to_none=True)
        counts = count_parameters(model)
        return {"method": self.cfg.method_name, "options": self.cfg.to_dict()["method"],
                "optimizer": self.cfg.train.optimizer, "tunable": counts["tunable"], "tunable_pct": counts["tunable_pct"],
                "train_images_per_s": statistics.median(self.train_rates),
                "eval_images_per_s": statistics.median(self.eval_rates),
                "peak_train_bytes": int(peak), "memory_kind": kind,
                "train_gflops_per_image": flops_per_image(model, images, labels, True, self.amp) / 1e9,
                "inference_gflops_per_image": flops_per_image(model, images, labels, False, self.amp) / 1e9}


def measure_method_costs(cfg: RunConfig, methods: Sequence[str], num_batches: int = 3, rounds: int = 3,
                         progress: bool = True, command: Optional[str] = None) -> dict:
    """Cost of each of ``methods`` (with the config's ``compare`` presets) on ``num_batches`` batches of the config's
    training split: ``rounds`` turns per method (one warm-up turn first), the median turn kept.

    Returns ``{"claim", "device", "torch", "version", "date", "command", "batch_size", "batches", "rounds",
    "memory": {kind: meaning}, "rows": [{"method", "options", "optimizer" (its state counts in the peak memory),
    "tunable", "tunable_pct", "train_images_per_s",
    "eval_images_per_s", "peak_train_bytes", "memory_kind", "train_gflops_per_image",
    "inference_gflops_per_image"}, ...]}``.
    """
    if not methods:
        raise ValueError("measure_method_costs needs at least one method.")
    for method in methods:
        cfg.with_presets(method)  # an unknown method or a bad preset: one line, before any work
    batch_size = cfg.train.batch_size
    loaders = prepare_data(cfg, batch_size, cfg.train.seed)
    device = cfg.train.resolve_device()
    batches = []
    for images, labels in loaders["train"]:
        if len(labels) == batch_size:
            batches.append((images.to(device), labels.to(device)))
        if len(batches) == num_batches:
            break
    if not batches:
        raise ValueError(f"the training split has fewer than train.batch_size={batch_size} images; lower it.")
    num_classes = loaders["train"].dataset.num_classes
    costs = [_MethodCost(cfg, method, num_classes, batches, device)
             for method in tqdm(methods, desc="models", disable=not progress)]
    for turn in tqdm(range(rounds + 1), desc="rounds", disable=not progress):
        for cost in costs:
            cost.train_round()
            cost.eval_round()
            if turn == 0:  # the warm-up turn is not kept
                cost.train_rates.clear()
                cost.eval_rates.clear()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    return {"claim": "training and inference cost of each method, measured in one run through the same training loop",
            "device": name, "torch": torch.__version__, "version": __version__,
            "date": datetime.date.today().isoformat(), "command": command, "backbone": cfg.backbone.name,
            "batch_size": batch_size, "crop_size": cfg.data.crop_size, "batches": len(batches), "rounds": rounds,
            "amp": cfg.train.amp, "memory": MEMORY_KINDS, "rows": [cost.row() for cost in costs]}


def write_method_costs(cfg: RunConfig, methods: Sequence[str], out: Union[str, Path], **kwargs) -> Path:
    """:func:`measure_method_costs` written to ``out`` (JSON), refusing to replace a file that exists."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; give another --out (a cost file is never replaced).")
    return write_json(out, measure_method_costs(cfg, methods, **kwargs))


COST_COLUMNS = ("method", "tunable params", "train images/s", "peak train memory (MiB)", "inference images/s",
                "inference GFLOPs/image")


def costs_markdown(costs: dict) -> str:
    """A cost file (:func:`measure_method_costs`) as a Markdown table, with the device and what the memory means."""
    from ..tables import markdown_table

    rows = [(r["method"], f"{r['tunable']:,}", f"{r['train_images_per_s']:.0f}", f"{r['peak_train_bytes'] / 2 ** 20:.1f}",
             f"{r['eval_images_per_s']:.0f}", f"{r['inference_gflops_per_image']:.3f}") for r in costs["rows"]]
    kinds = sorted({r["memory_kind"] for r in costs["rows"]})
    return (markdown_table(list(COST_COLUMNS), rows) + f"\n\n{costs['device']}, torch {costs['torch']}, "
            f"{costs['backbone']} at {costs['crop_size']} px, batch {costs['batch_size']}; peak memory: "
            + "; ".join(costs["memory"][k] for k in kinds) + ".")
