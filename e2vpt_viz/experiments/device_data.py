"""Device-resident data pipeline for FGVC-size datasets: decode once, keep uint8 images on the device.

A 100-epoch CUB run reads every image 100 times; on a GPU the JPEG decoding of the DataLoader path, not the model,
would bound the speed. :class:`DeviceImages` decodes every image of a split once (on CUDA, JPEGs by nvJPEG on the
GPU through ``torchvision.io.decode_jpeg(device="cuda")``; other formats, and everything on the CPU, with PIL in
threads, the DataLoader path's own decoder), resizes the short side to ``resize_size(crop)``
(VPT's 256 for a 224 crop) and keeps the result as uint8 on the device. :class:`DeviceLoader` then makes every batch
with tensor ops on the device:

* training: random crop of ``crop × crop`` anywhere in the resized image, horizontal flip with probability 1/2
  (one gather does both), scaling to [0, 1] and normalisation: VPT's train transform;
* evaluation: the centre crop is cut once at decode time; batches are only scaled and normalised;
* the square pipeline (``Preprocessing(resize="square")``, VPT's VTAB-1k one): every split is resized to
  ``crop × crop`` at decode time and never augmented, so training batches are only shuffled, scaled and normalised.

The random order, crop offsets and flips of an epoch are drawn at its start from the loader's own generator, which
:func:`~e2vpt_viz.training.seed_epoch` re-seeds from (seed, epoch), so a resumed run continues exactly. The step
itself never waits for the host. On the CPU, with the same decoded pixels, the evaluation batches equal those of
:func:`~e2vpt_viz.data.build_transforms` exactly, and training crops follow the same distribution (other random
numbers). The DataLoader path stays for datasets that do not fit: :func:`estimate_bytes` reads only image headers,
and :func:`make_device_loaders` returns None with a logged note when the estimate exceeds the budget.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate
from pathlib import Path
from typing import Iterator, Optional, Union

import torch
from PIL import Image
from torchvision.transforms import v2

from ..data import (FGVC, UNREADABLE_IMAGE_ERRORS, DatasetLayoutError, FGVCDataset, Preprocessing, build_transforms,
                   load_rgb, loader_splits, resize_size)
from .distributed import ShardPlan

log = logging.getLogger(__name__)

BUDGET_FRACTION = 0.5  # default budget: half of the free device memory (CUDA) or of the available RAM (CPU)
_CACHE: dict[tuple, "DeviceImages"] = {}  # decoded splits of this process, reused by later runs (grid searches)
_CACHE_SIZE = 3


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(H, W) after ``v2.Resize(size)``: the short side becomes ``size``, the long side int(size · long / short)."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def image_size(path: Path) -> Optional[tuple[int, int]]:
    """(H, W) from the file header, without decoding; None if unreadable."""
    try:
        with Image.open(path) as img:
            width, height = img.size
        return height, width
    except UNREADABLE_IMAGE_ERRORS:
        return None


def estimate_bytes(root: Union[str, Path], crop_size: int, splits: Optional[dict[str, str]] = None,
                   workers: int = 8, preprocessing: Preprocessing = FGVC) -> int:
    """Device bytes the splits would take (``splits``: {role: split}, default train / val / test): resized training
    images (uint8, 3 channels) and ``crop × crop`` images of the others (every split with the square pipeline),
    plus labels. Reads image headers only."""
    total = 0
    size = resize_size(crop_size)
    for role, split in (splits or loader_splits()).items():
        dataset = FGVCDataset(root, split)
        total += 8 * len(dataset)
        if not preprocessing.augments(role == "train"):
            total += 3 * crop_size * crop_size * len(dataset)
            continue
        with ThreadPoolExecutor(max(1, workers)) as pool:
            shapes = pool.map(image_size, [path for path, _ in dataset.samples])
            total += sum(3 * math.prod(resized_shape(*hw, size)) for hw in shapes if hw is not None)
    return total


def budget_bytes(device: torch.device, budget_mb: Optional[float] = None) -> int:
    """The memory the images may take: ``budget_mb`` if given, else half the free CUDA memory / available RAM."""
    if budget_mb is not None:
        return int(budget_mb * 2 ** 20)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(BUDGET_FRACTION * free)
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX
        available = 4 * 2 ** 30
    return int(BUDGET_FRACTION * available)


def _decode_cpu(path: Path) -> Optional[torch.Tensor]:
    """uint8 (3, H, W) RGB with the DataLoader path's own decoder (PIL), so the pixels are the same; None if
    unreadable. (torchvision's CPU decoders are deprecated since 0.29 and decode no faster.)"""
    try:
        return v2.functional.pil_to_tensor(load_rgb(path))
    except UNREADABLE_IMAGE_ERRORS:
        return None


def _read_bytes(path: Path) -> torch.Tensor:
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)


def _is_jpeg(data: torch.Tensor) -> bool:
    return data.numel() > 2 and int(data[0]) == 0xFF and int(data[1]) == 0xD8


def _decode_jpegs_on_gpu(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """nvJPEG through torchvision (batched); its deprecation warning (in favour of TorchCodec) is silenced here."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


class DeviceImages:
    """All images of one split, decoded once and resized, as uint8 on ``device``.

    Training splits keep each whole resized image (sizes differ) packed in one flat buffer: ``storage`` (uint8),
    per item ``offsets`` / ``heights`` / ``widths``. Evaluation splits keep the centre crops: ``images``
    (N, 3, crop, crop). ``labels`` (N,) int64. An unreadable image is skipped with a RuntimeWarning naming the file,
    as :class:`~e2vpt_viz.data.FGVCDataset` does: training splits yield the next readable one in its place, evaluation
    splits leave it out (N counts the readable images only).
    """

    def __init__(self, dataset: FGVCDataset, crop_size: int, train: bool, device: Union[str, torch.device],
                 workers: int = 4, preprocessing: Preprocessing = FGVC) -> None:
        self.dataset, self.crop_size, self.train = dataset, crop_size, train
        self.preprocessing = preprocessing
        self.augment = preprocessing.augments(train)  # random crops and flips: whole resized images are kept
        self.device = torch.device(device)
        self.resize = resize_size(crop_size)
        decoded = self._decode([path for path, _ in dataset.samples], max(1, workers))
        readable = [i for i, image in enumerate(decoded) if image is not None]
        if not readable:
            raise DatasetLayoutError(f"no image of the {len(decoded)} in {dataset.root} can be read")
        source = []  # item -> the readable item whose image (and label) it yields: the next one, wrapping around
        following = readable[0]
        for i in reversed(range(len(decoded))):
            if decoded[i] is not None:
                following = i
            else:
                warnings.warn(f"skipping unreadable image {dataset.samples[i][0]}", RuntimeWarning)
            source.append(following)
        source.reverse()
        if not train:  # evaluation never substitutes: unreadable items are left out and evaluate() counts them
            source = readable
        labels = [dataset.samples[j][1] for j in source]
        self.labels = torch.tensor(labels, dtype=torch.int64, device=self.device)
        if self.augment:
            sizes = [decoded[j].numel() for j in readable]
            starts = dict(zip(readable, [0, *accumulate(sizes)][:-1]))
            self.storage = torch.cat([decoded[j].reshape(-1) for j in readable])
            self.heights_cpu = torch.tensor([decoded[j].shape[1] for j in source])
            self.widths_cpu = torch.tensor([decoded[j].shape[2] for j in source])
            self.offsets = torch.tensor([starts[j] for j in source], device=self.device)
            self.heights, self.widths = self.heights_cpu.to(self.device), self.widths_cpu.to(self.device)
            self.images = None
        else:
            self.images = torch.stack([decoded[j] for j in source])
            self.storage = None
            self.heights_cpu = self.widths_cpu = None
        del decoded

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        data = self.storage if self.augment else self.images
        return data.numel() + 8 * len(self.labels)

    def _prepare(self, image: torch.Tensor) -> torch.Tensor:
        """Decoded uint8 (3, H, W) -> as :func:`~e2vpt_viz.data.fixed_transforms` leaves it: resized (training with
        augmentation), centre-cropped (evaluation) or resized to crop × crop (square), on the target device."""
        if self.preprocessing.resize == "square":
            image = v2.functional.resize(image, [self.crop_size, self.crop_size], antialias=False)
            return image.to(self.device).contiguous()
        image = v2.functional.resize(image, self.resize, antialias=True)
        if not self.augment:
            image = v2.functional.center_crop(image, self.crop_size)
        return image.to(self.device).contiguous()

    def _decode(self, paths: list[Path], workers: int) -> list[Optional[torch.Tensor]]:
        out: list[Optional[torch.Tensor]] = [None] * len(paths)
        cpu_items = list(range(len(paths)))
        if self.device.type == "cuda":  # JPEGs on the GPU (nvJPEG), in chunks; the rest on the CPU below
            with ThreadPoolExecutor(workers) as pool:
                raw = list(pool.map(_read_bytes, paths))
            jpegs = [i for i, data in enumerate(raw) if _is_jpeg(data)]
            for start in range(0, len(jpegs), 256):
                chunk = jpegs[start:start + 256]
                try:
                    images = _decode_jpegs_on_gpu([raw[i] for i in chunk], self.device)
                except RuntimeError:
                    continue  # left to the CPU decoder, which also names unreadable files
                for i, image in zip(chunk, images):
                    out[i] = self._prepare(image)
            del raw
            cpu_items = [i for i in cpu_items if out[i] is None]

        def work(i: int) -> Optional[torch.Tensor]:
            image = _decode_cpu(paths[i])
            return None if image is None else self._prepare(image)

        with ThreadPoolExecutor(workers) as pool:
            for i, image in zip(cpu_items, pool.map(work, cpu_items)):
                out[i] = image
        return out

    def batch(self, items: torch.Tensor, tops: Optional[torch.Tensor] = None, lefts: Optional[torch.Tensor] = None,
              flips: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Float (B, 3, crop, crop) normalised images of ``items`` (device tensor); augmented training needs crop
        offsets ``tops`` / ``lefts`` and ``flips`` (bool), all (B,) device tensors."""
        c = self.crop_size
        if self.augment:
            ar = torch.arange(c, device=self.device)
            widths = self.widths[items]
            rows = tops[:, None] + ar  # (B, c)
            cols = torch.where(flips[:, None], lefts[:, None] + (c - 1) - ar, lefts[:, None] + ar)  # (B, c)
            plane = (self.heights[items] * widths)[:, None, None, None]  # pixels per channel
            channel = torch.arange(3, device=self.device)[None, :, None, None] * plane
            index = (self.offsets[items][:, None, None, None] + channel
                     + rows[:, None, :, None] * widths[:, None, None, None] + cols[:, None, None, :])  # (B, 3, c, c)
            images = self.storage[index]
        else:
            images = self.images[items]
        images = v2.functional.to_dtype(images, torch.float32, scale=True)
        return v2.functional.normalize(images, list(self.preprocessing.mean), list(self.preprocessing.std))


class DeviceLoader:
    """Batches of a :class:`DeviceImages` split, made on its device; a drop-in for the FGVC DataLoader.

    ``dataset`` is the underlying :class:`~e2vpt_viz.data.FGVCDataset` (num_classes, class_names, parts),
    ``generator`` the CPU generator that :func:`~e2vpt_viz.training.seed_epoch` seeds (training only),
    ``batch_size`` the global batch. ``shard=(rank, world)`` yields process ``rank``'s slice of every batch
    (training) or a contiguous block of the split (evaluation), as :class:`~e2vpt_viz.experiments.distributed.ShardedBatchSampler`.
    """

    def __init__(self, images: DeviceImages, batch_size: int, shuffle: bool, seed: int = 0,
                 shard: Optional[tuple[int, int]] = None) -> None:
        self.images, self.dataset, self.batch_size, self.shuffle = images, images.dataset, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed) if shuffle else None
        self.shard = shard if shard is not None and shard[1] > 1 else None
        self.plan = ShardPlan(len(images), batch_size, shuffle, *(self.shard or (0, 1)))

    @property
    def global_batch_size(self) -> int:
        return self.batch_size

    def __len__(self) -> int:
        return len(self.plan)

    def step_slice(self, step: int) -> tuple[int, int]:
        """(first row of this process's slice, global batch size) of training step ``step``."""
        return self.plan.step_slice(step)

    def epoch_plan(self) -> torch.Tensor:
        """(4, N) int64 on the device: order, crop tops, crop lefts, flips of one epoch, drawn from ``generator``
        (without augmentation, the square pipeline: the order only, (1, N))."""
        n, g, crop = len(self.images), self.generator, self.images.crop_size
        order = torch.randperm(n, generator=g)
        if not self.images.augment:
            return order[None].to(self.images.device)
        u = torch.rand(3, n, generator=g, dtype=torch.float64)
        heights, widths = self.images.heights_cpu[order], self.images.widths_cpu[order]
        tops = (u[0] * (heights - crop + 1)).long().clamp(max=heights - crop)
        lefts = (u[1] * (widths - crop + 1)).long().clamp(max=widths - crop)
        flips = (u[2] < 0.5).long()
        plan = torch.stack([order, tops, lefts, flips])
        if self.images.device.type == "cuda":
            plan = plan.pin_memory()
        return plan.to(self.images.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images = self.images
        if not self.shuffle:
            for lo, hi in self.plan.batches():
                chunk = torch.arange(lo, hi, device=images.device)
                yield images.batch(chunk), images.labels[chunk]
            return
        epoch = self.epoch_plan()
        for lo, hi in self.plan.batches():
            if not images.augment:
                order = epoch[0, lo:hi]
                yield images.batch(order), images.labels[order]
                continue
            order, tops, lefts, flips = epoch[:, lo:hi]
            yield images.batch(order, tops, lefts, flips.bool()), images.labels[order]


def _cache_key(root: Union[str, Path], split: str, train: bool, crop_size: int, device: Union[str, torch.device],
               preprocessing: Preprocessing) -> tuple:
    split_file = Path(root) / f"{split}.json"
    return (str(Path(root).resolve()), split, train, crop_size, str(torch.device(device)), preprocessing,
            split_file.stat().st_mtime_ns)


def load_split(root: Union[str, Path], split: str, crop_size: int, device: Union[str, torch.device],
               workers: int = 4, preprocessing: Preprocessing = FGVC, train: Optional[bool] = None) -> DeviceImages:
    """A decoded split, reused from this process's cache when the same root, split, role, size, preprocessing and
    device were loaded. ``train`` (default: split is "train"): whether the split is trained on."""
    train = split == "train" if train is None else train
    dataset = FGVCDataset(root, split, build_transforms(crop_size, train, preprocessing))
    key = _cache_key(root, split, train, crop_size, device, preprocessing)
    if key not in _CACHE:
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = DeviceImages(dataset, crop_size, train, device, workers, preprocessing)
    return _CACHE[key]


def _cached(root: Union[str, Path], crop_size: int, device: torch.device, splits: dict[str, str],
            preprocessing: Preprocessing) -> bool:
    """Every split of ``root`` is already decoded for ``device`` (no need to estimate again)."""
    return all(_cache_key(root, split, role == "train", crop_size, device, preprocessing) in _CACHE
               for role, split in splits.items())


def clear_cache() -> None:
    """Free the decoded splits kept for reuse."""
    _CACHE.clear()


def make_device_loaders(root: Union[str, Path], crop_size: int, batch_size: int, seed: int,
                        device: Union[str, torch.device], budget_mb: Optional[float] = None, workers: int = 4,
                        shard: Optional[tuple[int, int]] = None, preprocessing: Preprocessing = FGVC,
                        train_split: str = "train") -> Optional[dict[str, DeviceLoader]]:
    """:class:`DeviceLoader`s by role (train / val / test, see :func:`~e2vpt_viz.data.loader_splits`), or None (with
    a logged note) when the images would not fit.

    The estimate (:func:`estimate_bytes`, headers only) is compared with :func:`budget_bytes`; running out of
    device memory while uploading also falls back.
    """
    device = torch.device(device)
    splits = loader_splits(train_split)
    needed = (0 if _cached(root, crop_size, device, splits, preprocessing)
              else estimate_bytes(root, crop_size, splits, workers, preprocessing))
    budget = budget_bytes(device, budget_mb)
    if needed > budget:
        log.warning("note: the images of %s need about %.2f GB on %s, more than the budget of %.2f GB "
                    "(data.device_budget_mb); using the DataLoader path instead.", root, needed / 1e9, device,
                    budget / 1e9)
        return None
    try:
        return {role: DeviceLoader(load_split(root, split, crop_size, device, workers, preprocessing, role == "train"),
                                   batch_size, role == "train", seed, shard) for role, split in splits.items()}
    except torch.OutOfMemoryError:
        clear_cache()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        log.warning("note: out of %s memory while uploading the images of %s; using the DataLoader path instead.",
                    device, root)
        return None
