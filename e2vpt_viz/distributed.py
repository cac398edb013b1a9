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
  (:attr:`PromptedViT.dropout_batch`), so every image sees the mask one process would have drawn for it;
* with the device-resident pipeline (``data.on_device``) the random crops and flips come from the loader's own
  generator, drawn for the whole epoch: identical in every process. (The DataLoader path draws augmentation from the
  global random generator image by image, so there the order and batches are the same but crops, flips and dropout
  differ: equal in distribution, not number for number.)

What remains is floating-point summation order (a batch of B/N vs B in the matmuls, and the all-reduce), so the
prompts agree to about 1e-6, not bit for bit. Only process 0 writes checkpoints, metrics and logs.
Back-ends: NCCL on CUDA, gloo on CPU.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.distributed as dist


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
