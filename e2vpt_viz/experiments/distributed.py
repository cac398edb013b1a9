"""Several processes, one global batch: ``torchrun --nproc_per_node=N -m e2vpt_viz train ...``.

Each of the N processes trains a contiguous slice of every global batch of ``train.batch_size`` images; the
gradients of what the method trains (prompts, masks, head, tuned backbone weights: the parameters with
``requires_grad``; DistributedDataParallel ignores frozen ones) are averaged across processes after every step.
Everything is arranged so that N processes end with the prompts of one process with the same global batch and seed:

* the data order is the global one: every process draws the same permutation from the same seeded generator and
  takes its slice of each batch (``batch_bounds``); the learning-rate scaling uses the global batch size;
* the loss of a slice is ``sum of cross-entropies · N / global batch``, so the averaged gradient is the gradient of
  the global batch's mean loss even when the last batch does not split evenly;
* prompt dropout draws its masks for the whole global batch and keeps the process's rows
  (:class:`GlobalBatchDropout`, put in the model's ``prompt_dropout`` slot by :class:`Torchrun`), so every image
  sees the mask one process would have drawn for it;
* with the device-resident pipeline (``data.on_device``) the random crops and flips come from the loader's own
  generator, drawn for the whole epoch: identical in every process. (The DataLoader path draws augmentation from the
  global random generator image by image, so there the order and batches are the same but crops, flips and dropout
  differ: equal in distribution, not number for number.)

What remains is floating-point summation order (a batch of B/N vs B in the matmuls, and the all-reduce), so the
prompts agree to about 1e-6, not bit for bit. Only process 0 writes checkpoints, metrics and logs.
Back-ends: NCCL on CUDA, gloo on CPU. The training loop knows none of this: :func:`processes` gives it a
:class:`Torchrun` (a :class:`~e2vpt_viz.training.Processes`) whose hooks do the above.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator, Optional, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data import FGVC, Preprocessing, fgvc_datasets
from ..model import PromptedViT
from ..training import ONE_PROCESS, Processes, TrainConfig


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """The process that writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def launched_by_torchrun() -> bool:
    """torchrun (or another launcher) started more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "auto") -> Optional[str]:
    """Join the process group described by torchrun's environment; returns the back-end, or None for one process.

    ``device`` is the run's ``train.device``: NCCL when it resolves to CUDA, gloo otherwise (CPU).
    """
    if not launched_by_torchrun() or is_distributed():
        return dist.get_backend() if is_distributed() else None
    use_cuda = torch.cuda.is_available() and device != "cpu"
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    return backend


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over processes in place (no-op for one process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class GlobalBatchDropout(nn.Module):
    """Prompt dropout of one process's slice of a global batch: the masks of the whole global batch are drawn (the
    random numbers one process would draw) and this process's rows are kept. Outside a training step (``rows`` is
    None) it is the plain ``nn.Dropout(p)``.

    Input and output: (B, P, D) prompts, the same (P, D) prompt repeated over the B images of this process.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.rows: Optional[tuple[int, int]] = None  # (offset, global batch) during a training step

    def forward(self, prompts: torch.Tensor) -> torch.Tensor:
        if self.rows is None or not self.training:
            return F.dropout(prompts, self.p, self.training)
        offset, total = self.rows
        return F.dropout(prompts[:1].expand(total, -1, -1), self.p, True)[offset:offset + prompts.shape[0]]


class Torchrun(Processes):
    """The processes torchrun started, as the training loop sees them (see the module docstring).

    :meth:`prepare` wraps the model in DistributedDataParallel and gives its prompt dropout to a
    :class:`GlobalBatchDropout`; each step's loss is the slice's summed cross-entropy · world / global batch.
    """

    def __init__(self) -> None:
        self.is_main = is_main()
        self.world = world_size()
        self._loss_weight = 1.0
        self._dropout: Optional[GlobalBatchDropout] = None

    def device(self, config: TrainConfig) -> torch.device:
        """CUDA means this process's GPU (LOCAL_RANK)."""
        device = config.resolve_device()
        return torch.device("cuda", local_rank()) if device.type == "cuda" and device.index is None else device

    def prepare(self, model: PromptedViT, loaders) -> nn.Module:
        for loader in loaders:
            if loader is not None and getattr(loader, "shard", None) is None:
                raise ValueError("Under torchrun every process needs its share of the data: build the loaders with "
                                 "experiments.run.prepare_data or experiments.distributed.make_sharded_loaders.")
        if isinstance(model.prompt_dropout, nn.Dropout):
            model.prompt_dropout = GlobalBatchDropout(model.prompt_dropout.p)
        if isinstance(model.prompt_dropout, GlobalBatchDropout):
            self._dropout = model.prompt_dropout
        device = next(model.parameters()).device
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def batch_size(self, loader: DataLoader) -> int:
        return loader.global_batch_size

    def begin_step(self, loader: DataLoader, step: int) -> None:
        offset, global_batch = loader.step_slice(step)
        self._loss_weight = self.world / global_batch
        if self._dropout is not None:
            self._dropout.rows = (offset, global_batch)

    def step_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        summed = F.cross_entropy(logits.float(), labels, reduction="sum")
        return summed * self._loss_weight, summed.detach()

    def end_step(self) -> None:
        if self._dropout is not None:
            self._dropout.rows = None

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(tensor)

    def barrier(self) -> None:
        barrier()


def processes() -> Processes:
    """What the training loop should train with: :class:`Torchrun` inside a process group, else one process."""
    return Torchrun() if is_distributed() else ONE_PROCESS


def batch_bounds(size: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [lo, hi) of a global batch of ``size`` that process ``rank`` of ``world`` trains (contiguous slices)."""
    return size * rank // world, size * (rank + 1) // world


def check_batches(num_items: int, batch_size: int, world: int) -> None:
    """Every process must get at least one image of every batch (the last one included)."""
    last = num_items % batch_size or batch_size
    if world > 1 and (batch_size < world or last < world):
        raise ValueError(f"{world} processes cannot split batches of {batch_size} images over {num_items} "
                         f"(the last batch has {last}); choose a train.batch_size whose batches, the last one "
                         f"included, have at least {world} images.")


def sharded_loader(dataset: Dataset, train: bool, batch_size: int, shard: tuple[int, int], num_workers: int = 0,
                   seed: int = 0, pin_memory: bool = False) -> "ShardedDataLoader":
    """Process ``shard = (rank, world)``'s share of the loader :func:`~e2vpt_viz.data.split_loader` would make:
    the same seeded permutation, a slice of every global batch (see :class:`ShardedBatchSampler`)."""
    generator = torch.Generator().manual_seed(seed) if train else None
    sampler = ShardedBatchSampler(len(dataset), batch_size, train, generator, *shard)
    return ShardedDataLoader(dataset, batch_sampler=sampler, generator=generator, num_workers=num_workers,
                             pin_memory=pin_memory, persistent_workers=num_workers > 0)


def make_sharded_loaders(root: Union[str, Path], crop_size: int, batch_size: int, shard: tuple[int, int],
                         num_workers: int = 0, cache: bool = False, seed: int = 0, pin_memory: bool = False,
                         preprocessing: Preprocessing = FGVC, train_split: str = "train") -> dict[str, "ShardedDataLoader"]:
    """:func:`~e2vpt_viz.data.make_loaders` for process ``rank`` of ``world`` (``shard``)."""
    return {role: sharded_loader(dataset, role == "train", batch_size, shard, num_workers, seed, pin_memory)
            for role, dataset in fgvc_datasets(root, crop_size, cache, preprocessing, train_split).items()}


class ShardPlan:
    """Which positions of a split process ``rank`` of ``world`` gets, batch by batch; ``batch_size`` is the global
    batch, the one a single process would use. Both sharded loaders (:class:`ShardedBatchSampler` over a Dataset and
    :class:`~e2vpt_viz.experiments.device_data.DeviceLoader`) follow it.

    Training (``shuffle``): positions in the epoch's order; every global batch [start, end) is cut into contiguous
    slices, one per process (:func:`batch_bounds`). Evaluation: process ``rank`` takes a contiguous block of the
    split, in batches of ``batch_size``; the accuracies are summed over processes afterwards.
    """

    def __init__(self, num_items: int, batch_size: int, shuffle: bool, rank: int = 0, world: int = 1) -> None:
        if shuffle:
            check_batches(num_items, batch_size, world)
        self.num_items, self.batch_size, self.shuffle, self.rank, self.world = num_items, batch_size, shuffle, rank, world

    def batches(self) -> Iterator[tuple[int, int]]:
        """[lo, hi) of this process's positions in each batch: in the epoch's order (training) or in the split."""
        n, size = self.num_items, self.batch_size
        if not self.shuffle:
            lo, hi = batch_bounds(n, self.rank, self.world)
            yield from ((i, min(i + size, hi)) for i in range(lo, hi, size))
            return
        for start in range(0, n, size):
            lo, hi = batch_bounds(min(size, n - start), self.rank, self.world)
            yield start + lo, start + hi

    def __len__(self) -> int:
        if not self.shuffle:
            lo, hi = batch_bounds(self.num_items, self.rank, self.world)
            return math.ceil((hi - lo) / self.batch_size)
        return math.ceil(self.num_items / self.batch_size)

    def step_slice(self, step: int) -> tuple[int, int]:
        """(first row of this process's slice, size of the global batch) of training step ``step``."""
        size = min(self.batch_size, self.num_items - step * self.batch_size)
        return batch_bounds(size, self.rank, self.world)[0], size


class ShardedBatchSampler(Sampler[list[int]]):
    """Process ``rank`` of ``world``'s share of the batches one process would see (see :class:`ShardPlan`).

    Training: every process draws the same permutation from ``generator`` (as ``RandomSampler`` does, so the global
    batches are those of one process) and yields its slice of each global batch.
    """

    def __init__(self, num_items: int, batch_size: int, shuffle: bool, generator: Optional[torch.Generator],
                 rank: int, world: int) -> None:
        self.plan = ShardPlan(num_items, batch_size, shuffle, rank, world)
        self.batch_size, self.generator, self.rank, self.world = batch_size, generator, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        if not self.plan.shuffle:
            yield from (list(range(lo, hi)) for lo, hi in self.plan.batches())
            return
        order = torch.randperm(self.plan.num_items, generator=self.generator).tolist()
        yield from (order[lo:hi] for lo, hi in self.plan.batches())

    def __len__(self) -> int:
        return len(self.plan)

    def step_slice(self, step: int) -> tuple[int, int]:
        return self.plan.step_slice(step)


class ShardedDataLoader(DataLoader):
    """A DataLoader over a :class:`ShardedBatchSampler`; ``global_batch_size`` is the batch one process would use."""

    @property
    def global_batch_size(self) -> int:
        return self.batch_sampler.batch_size

    @property
    def shard(self) -> tuple[int, int]:
        return self.batch_sampler.rank, self.batch_sampler.world

    def step_slice(self, step: int) -> tuple[int, int]:
        return self.batch_sampler.step_slice(step)
