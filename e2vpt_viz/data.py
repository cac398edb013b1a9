"""FGVC-format datasets: ``{train,val,test}.json`` mapping a relative image path to a class id, as in VPT.

The same class reads real CUB / NABirds / Flowers / Dogs / Cars roots prepared by ``data_prep`` and the offline
starter's synthetic dataset (``python -m data_prep synthetic --root DIR``). A teaching subset folder (written by
``python -m data_prep <dataset> --classes N --shots K``) has its own split files and a ``subset.json`` whose
``source`` points at the full root, where the images and annotations are.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.transforms import v2

from data_prep.layout import (CLASS_NAMES_FILE, IMAGE_DIRS, SPLITS, SUBSET_FILE, UNREADABLE_IMAGE_ERRORS,
                              CUBAnnotations, DatasetLayoutError, find_image_dir, load_rgb,
                              predicts_every_named_class, read_class_names, read_cub_table, read_split, source_root)

from .backbones import IMAGENET_MEAN, IMAGENET_STD

from .checks import non_negative_int, positive_int

TRAINVAL = "trainval"  # train + val in one split (VTAB-1k's train800val200), in roots that have trainval.json

__all__ = ["CLASS_NAMES_FILE", "IMAGE_DIRS", "SPLITS", "SUBSET_FILE", "UNREADABLE_IMAGE_ERRORS", "CUBAnnotations",
           "DatasetLayoutError", "FGVCDataset", "build_transforms", "check_readable", "collate_readable",
           "FGVC", "Preprocessing", "TRAINVAL", "fgvc_datasets", "loader_splits", "fixed_transforms", "load_rgb",
           "make_loaders", "random_transforms", "read_class_names", "read_cub_table", "read_split", "resize_size",
           "source_root", "split_loader"]


def resize_size(crop_size: int) -> int:
    """Short side before cropping, VPT's 256 for a 224 crop, scaled: round(crop · 256 / 224)."""
    return round(positive_int("crop_size", crop_size) * 256 / 224)


RESIZES = ("crop", "square")


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes a model input: the resize rule and the per-channel normalisation.

    Attributes:
        resize: "crop", VPT's FGVC pipeline: the short side resized to round(crop · 256 / 224), then a random
            ``crop × crop`` crop and horizontal flip (training) or the centre crop (evaluation); "square", VPT's
            VTAB-1k pipeline: the whole image resized to ``crop × crop`` (bilinear, as ``tf.image.resize``), no
            augmentation in any split.
        mean, std: per-channel statistics applied after scaling to [0, 1]. ImageNet's by default, as the VPT code
            uses for every backbone; :func:`~e2vpt_viz.backbones.backbone_mean_std` gives a backbone's own.

    ``crop_size`` is passed beside it, as the run's ``data.crop_size``.
    """

    resize: str = "crop"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES} (crop: FGVC, square: VTAB-1k), got {self.resize!r}.")
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3 or (name == "std" and min(value) <= 0):
                raise ValueError(f"{name} must be 3 numbers, one per RGB channel{' (> 0)' if name == 'std' else ''}, "
                                 f"got {getattr(self, name)!r}.")
            object.__setattr__(self, name, value)

    def augments(self, train: bool) -> bool:
        """Whether ``train``-split images are randomly cropped and flipped (the crop pipeline's training split)."""
        return train and self.resize == "crop"


FGVC = Preprocessing()  # VPT's FGVC pipeline with ImageNet statistics: the default everywhere


def build_transforms(crop_size: int, train: bool, preprocessing: Preprocessing = FGVC) -> v2.Compose:
    """The whole transform of ``preprocessing`` (default VPT's FGVC pipeline), scaled to ``crop_size``.

    crop: train: resize → random crop → horizontal flip; eval: resize → centre crop. square: resize to
    crop × crop. Both end with scaling to [0, 1] and normalisation. Output: float tensor (3, crop_size, crop_size).
    """
    return v2.Compose([*fixed_transforms(crop_size, train, preprocessing).transforms,
                       *random_transforms(crop_size, train, preprocessing).transforms])


def fixed_transforms(crop_size: int, train: bool, preprocessing: Preprocessing = FGVC) -> v2.Compose:
    """The deterministic first part of :func:`build_transforms`, which a cache may keep: PIL image → uint8 tensor,
    (3, H', W') with the short side resized (crop pipeline, train) or (3, crop, crop) (the centre crop, or square)."""
    if preprocessing.resize == "square":
        return v2.Compose([v2.ToImage(), v2.Resize((crop_size, crop_size), antialias=False)])
    steps = [v2.ToImage(), v2.Resize(resize_size(crop_size), antialias=True)]
    return v2.Compose(steps if train else [*steps, v2.CenterCrop(crop_size)])


def random_transforms(crop_size: int, train: bool, preprocessing: Preprocessing = FGVC) -> v2.Compose:
    """The rest of :func:`build_transforms`, run on every access: random crop and flip (crop pipeline, train), then
    scaling to [0, 1] and normalisation. uint8 (3, H', W') → float (3, crop, crop)."""
    crop = [v2.RandomCrop(crop_size), v2.RandomHorizontalFlip()] if preprocessing.augments(train) else []
    return v2.Compose([*crop, v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(preprocessing.mean, preprocessing.std)])


MAX_UNREADABLE = 0.05  # the share of a split's listed images evaluation may skip unless a run config says otherwise


class FGVCDataset(Dataset):
    """One split of an FGVC root.

    Args:
        root: folder with ``train.json``, ``val.json``, ``test.json`` and the images.
        split: "train", "val", "test" or "trainval" (roots with ``trainval.json``: VTAB-1k's train800val200).
        transform: applied to each RGB PIL image (e.g. :func:`build_transforms`), after ``fixed_transform``.
        cache: keep decoded images in memory (for small datasets such as the offline starter): each image after
            ``fixed_transform``, so a deterministic resize runs once per image, not once per epoch.
        fixed_transform: a deterministic transform applied before ``transform`` (e.g. :func:`fixed_transforms`,
            with :func:`random_transforms` as ``transform``); None = none.

    Items are ``(image, label)``; labels are contiguous 0..C-1 in the sorted order of the training set's class ids
    (a VTAB-1k task: of every class it names, also those without a training image). ``split="trainval"`` is train + val in one
    split, for roots that have ``trainval.json`` (VTAB-1k's train800val200, the split its final runs train on).
    An image that cannot be read is skipped with a RuntimeWarning naming the file. With ``substitute_unreadable``
    (training splits) the item is the next readable sample (wrapping around), so an epoch never stops on a corrupt
    file; without it (evaluation splits) the item is None and :func:`collate_readable` leaves it out, so a metric is
    never computed over substituted images: :func:`~e2vpt_viz.training.evaluate` counts what it read and refuses when
    more than ``max_unreadable`` (a share of the listed images, default 5%) could not be read.
    ``python -m data_prep verify`` lists the unreadable files.

    CUB-format roots (CUB, NABirds, synthetic) also give :meth:`parts`, :meth:`bbox` and ``part_names``; every
    prepared root gives ``class_names``.
    """

    def __init__(self, root: Union[str, Path], split: str = "train",
                 transform: Optional[Callable] = None, cache: bool = False,
                 fixed_transform: Optional[Callable] = None, substitute_unreadable: bool = True,
                 max_unreadable: float = MAX_UNREADABLE) -> None:
        if split not in (*SPLITS, TRAINVAL):
            raise ValueError(f"split must be one of {(*SPLITS, TRAINVAL)}, got {split!r}.")
        self.root = Path(root).expanduser()
        if split == TRAINVAL and not (self.root / f"{TRAINVAL}.json").is_file():
            raise DatasetLayoutError(f"{self.root} has no {TRAINVAL}.json (train + val in one split, as VTAB-1k's "
                                     "train800val200); roots prepared by `python -m data_prep vtab` have it.")
        entries = read_split(self.root, split)
        if not entries:
            raise DatasetLayoutError(f"{split}.json in {self.root} lists no images.")
        self.source_root = source_root(self.root)
        class_ids = self._class_ids()
        self.class_ids = class_ids
        self.class_to_index = {c: i for i, c in enumerate(class_ids)}
        unknown = sorted(set(entries.values()) - set(class_ids))
        if unknown:
            raise DatasetLayoutError(
                f"{split}.json in {self.root} has images of classes {unknown[:5]}, which have no training images "
                "(empty classes in train.json). Add training images for them or drop them from the split.")
        self._check_class_range()
        self.keys = sorted(entries)
        self.image_dir = find_image_dir(self.root, self.keys)
        self.samples = [(self.image_dir / rel, self.class_to_index[entries[rel]]) for rel in self.keys]
        self.num_classes = len(class_ids)
        self.transform = transform
        self.fixed_transform = fixed_transform
        self._cache: Optional[dict] = {} if cache else None
        self.substitute_unreadable = substitute_unreadable
        self.max_unreadable = max_unreadable

    def _class_ids(self) -> list[int]:
        """The classes a model of this root predicts: for a VTAB-1k task every class it names (a class may have no
        image among its 800 training images), else the training ids (a class without training images is refused)."""
        train = sorted(set(read_split(self.root, "train").values()))
        if not predicts_every_named_class(self.root):
            return train
        names = read_class_names(self.root)
        return sorted(names) if set(train) <= set(names) else train

    def _check_class_range(self) -> None:
        """Every training class id must have a name, when the root names its classes (data_prep roots do)."""
        try:
            names = read_class_names(self.source_root)
        except DatasetLayoutError:
            return  # a hand-made root without class names: nothing to check against
        outside = [c for c in self.class_ids if c not in names]
        if names and outside:
            raise DatasetLayoutError(
                f"train.json in {self.root} uses class ids {outside[:5]} outside the {len(names)} named classes "
                f"({min(names)}..{max(names)}) of {self.source_root}. Re-create the split files with "
                "`python -m data_prep`, or fix the ids.")

    def __len__(self) -> int:
        return len(self.samples)

    def missing_files(self) -> list[Path]:
        """The listed images that are not on disk (checked without decoding)."""
        return [path for path, _ in self.samples if not path.is_file()]

    def __getitem__(self, index: int):
        for offset in range(len(self.samples)):
            candidate = (index + offset) % len(self.samples)
            try:
                image = self._load(candidate)
            except UNREADABLE_IMAGE_ERRORS as error:
                warnings.warn(f"skipping unreadable image {self.samples[candidate][0]} ({error})", RuntimeWarning)
                if not self.substitute_unreadable:
                    return None
                continue
            return (self.transform(image) if self.transform else image), self.samples[candidate][1]
        raise DatasetLayoutError(f"no image of the {len(self.samples)} in {self.root} can be read")

    def _load(self, index: int):
        """Sample ``index``'s image after ``fixed_transform`` (from the cache when there is one)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        image = load_rgb(self.samples[index][0])
        image = self.fixed_transform(image) if self.fixed_transform else image
        if self._cache is not None:
            self._cache[index] = image
        return image

    @cached_property
    def annotations(self) -> CUBAnnotations:
        """Parts and boxes of a CUB-format root (DatasetLayoutError for other datasets)."""
        return CUBAnnotations(self.source_root)

    @property
    def part_names(self) -> list[str]:
        return self.annotations.part_names

    def parts(self, index: int) -> np.ndarray:
        """(P, 3) float32 x, y, visible of sample ``index``'s parts, in original-image pixels."""
        return self.annotations.parts(self.keys[index])

    def bbox(self, index: int) -> np.ndarray:
        """(4,) float32 x, y, width, height of sample ``index``'s bounding box, in original-image pixels."""
        return self.annotations.bbox(self.keys[index])

    @cached_property
    def class_names(self) -> list[str]:
        """Name of every label 0..C-1."""
        names = read_class_names(self.source_root)
        return [names.get(c, str(c)) for c in self.class_ids]


def loader_splits(train_split: str = "train") -> dict[str, str]:
    """{loader role: split of the root}: train / val / test; with ``train_split="trainval"`` (VTAB-1k's final runs:
    train800val200) the training role reads trainval and there is no val role (its images are training images)."""
    if train_split == "train":
        return {split: split for split in SPLITS}
    if train_split == TRAINVAL:
        return {"train": TRAINVAL, "test": "test"}
    raise ValueError(f"train_split must be 'train' or '{TRAINVAL}' (VTAB-1k's train800val200), got {train_split!r}.")


def fgvc_datasets(root: Union[str, Path], crop_size: int, cache: bool = False, preprocessing: Preprocessing = FGVC,
                  train_split: str = "train") -> dict[str, FGVCDataset]:
    """The datasets of an FGVC root by role (:func:`loader_splits`: train / val / test) with ``preprocessing``'s
    transforms (the deterministic part cached with ``cache``); only the training role substitutes unreadable
    images."""
    return {role: FGVCDataset(root, split, random_transforms(crop_size, role == "train", preprocessing), cache=cache,
                              fixed_transform=fixed_transforms(crop_size, role == "train", preprocessing),
                              substitute_unreadable=role == "train")
            for role, split in loader_splits(train_split).items()}


def collate_readable(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    """``default_collate`` of the items that could be read (an evaluation split's unreadable items are None)."""
    kept = [item for item in batch if item is not None]
    if not kept:
        return torch.empty(0, 3, 1, 1), torch.empty(0, dtype=torch.int64)
    return default_collate(kept)


def check_readable(datasets: dict[str, FGVCDataset], max_unreadable: float) -> None:
    """Refuse, before any work, a split with more than ``max_unreadable`` (a share) of its listed images missing."""
    for split, dataset in datasets.items():
        missing = dataset.missing_files()
        if len(missing) > max_unreadable * len(dataset.samples):
            raise DatasetLayoutError(
                f"{len(missing)} of the {len(dataset.samples)} {split} images listed in {dataset.root} are missing "
                f"(e.g. {missing[0]}); restore them (`python -m data_prep verify --root {dataset.root}` lists them) "
                f"or allow a larger share with data.max_unreadable (now {max_unreadable}).")


def make_loaders(root: Union[str, Path], crop_size: int, batch_size: int, num_workers: int = 0,
                 cache: bool = False, seed: int = 0, pin_memory: bool = False,
                 preprocessing: Preprocessing = FGVC, train_split: str = "train") -> dict[str, DataLoader]:
    """Loaders of an FGVC root by role (train / val / test, see :func:`loader_splits`) with ``preprocessing``
    (default VPT's FGVC transforms); the training loader is shuffled with a seeded generator."""
    return {role: split_loader(dataset, role == "train", batch_size, num_workers, seed, pin_memory)
            for role, dataset in fgvc_datasets(root, crop_size, cache, preprocessing, train_split).items()}


def split_loader(dataset: Dataset, train: bool, batch_size: int, num_workers: int = 0, seed: int = 0,
                 pin_memory: bool = False) -> DataLoader:
    """A DataLoader as every split gets it: the training split is shuffled by a generator seeded with ``seed``."""
    batch_size, num_workers = positive_int("batch_size", batch_size), non_negative_int("num_workers", num_workers)
    generator = torch.Generator().manual_seed(seed) if train else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, generator=generator, num_workers=num_workers,
                      drop_last=False, persistent_workers=num_workers > 0, pin_memory=pin_memory,
                      collate_fn=collate_readable)
