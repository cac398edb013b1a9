"""FGVC-format datasets: ``{train,val,test}.json`` mapping a relative image path to a class id, as in VPT.

The same class reads real CUB / NABirds / Flowers / Dogs / Cars roots prepared by ``data_prep`` and the offline
starter's synthetic dataset (``python -m data_prep synthetic --root DIR``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from .backbones import IMAGENET_MEAN, IMAGENET_STD

SPLITS = ("train", "val", "test")
IMAGE_DIRS = ("images", "Images", "")  # CUB/NABirds/synthetic, Stanford Dogs, Cars/Flowers (keys carry the folder)


class DatasetLayoutError(FileNotFoundError):
    """A dataset root that is missing or not in the FGVC layout; the message names the expected files."""


def build_transforms(crop_size: int, train: bool) -> v2.Compose:
    """VPT's FGVC transforms, scaled to ``crop_size``: resize the short side to crop·256/224, then crop.

    train: resize → random crop → horizontal flip; eval: resize → centre crop. Both end with ImageNet normalisation.
    Output: float tensor (3, crop_size, crop_size).
    """
    resize = round(crop_size * 256 / 224)
    crop = [v2.RandomCrop(crop_size), v2.RandomHorizontalFlip()] if train else [v2.CenterCrop(crop_size)]
    return v2.Compose([v2.ToImage(), v2.Resize(resize, antialias=True), *crop,
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def load_rgb(path: Path) -> Image.Image:
    """Open an image as RGB (grayscale, CMYK, palette and RGBA files are converted)."""
    with Image.open(path) as img:
        return img.convert("RGB")


def read_split(root: Path, split: str) -> dict[str, int]:
    """``root/{split}.json`` as {relative image path: class id}, with a clear error when it is missing."""
    path = root / f"{split}.json"
    if not root.is_dir():
        raise DatasetLayoutError(
            f"Dataset root {root} does not exist. Create the offline starter with "
            f"`python -m data_prep synthetic --root {root}`, or prepare a real dataset with `python -m data_prep`.")
    if not path.is_file():
        raise DatasetLayoutError(
            f"{root} is not an FGVC dataset root: {path.name} is missing. Expected train.json, val.json and "
            "test.json, each mapping an image path (relative to images/, Images/ or the root) to a class id.")
    with open(path) as f:
        return {str(k): int(v) for k, v in json.load(f).items()}


class FGVCDataset(Dataset):
    """One split of an FGVC root.

    Args:
        root: folder with ``train.json``, ``val.json``, ``test.json`` and the images.
        split: "train", "val" or "test".
        transform: applied to each RGB PIL image (e.g. :func:`build_transforms`).
        cache: keep decoded images in memory (for small datasets such as the offline starter).

    Items are ``(image, label)``; labels are contiguous 0..C-1 in the sorted order of the training set's ids.
    """

    def __init__(self, root: Union[str, Path], split: str = "train",
                 transform: Optional[Callable] = None, cache: bool = False) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
        self.root = Path(root).expanduser()
        entries = read_split(self.root, split)
        class_ids = sorted(set(read_split(self.root, "train").values()))
        self.class_to_index = {c: i for i, c in enumerate(class_ids)}
        unknown = sorted(set(entries.values()) - set(class_ids))
        if unknown:
            raise DatasetLayoutError(f"{split}.json in {self.root} has class ids {unknown[:5]} that train.json lacks.")
        self.image_dir = self._find_image_dir(next(iter(entries)) if entries else "")
        self.samples = [(self.image_dir / rel, self.class_to_index[c]) for rel, c in sorted(entries.items())]
        self.num_classes = len(class_ids)
        self.transform = transform
        self._cache: Optional[dict[int, Image.Image]] = {} if cache else None

    def _find_image_dir(self, first_key: str) -> Path:
        for sub in IMAGE_DIRS:
            if (self.root / sub / first_key).is_file():
                return self.root / sub
        raise DatasetLayoutError(
            f"Image {first_key!r} listed in the split files of {self.root} was not found under "
            f"{', '.join(str(self.root / s) for s in IMAGE_DIRS)}. Check that the images were extracted.")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        if self._cache is None:
            image = load_rgb(path)
        else:
            if index not in self._cache:
                self._cache[index] = load_rgb(path)
            image = self._cache[index]
        return (self.transform(image) if self.transform else image), label


def make_loaders(root: Union[str, Path], crop_size: int, batch_size: int, num_workers: int = 0,
                 cache: bool = False, seed: int = 0) -> dict[str, DataLoader]:
    """Train / val / test loaders of an FGVC root with VPT transforms; train is shuffled with a seeded generator."""
    loaders = {}
    for split in SPLITS:
        train = split == "train"
        dataset = FGVCDataset(root, split, build_transforms(crop_size, train), cache=cache)
        generator = torch.Generator().manual_seed(seed) if train else None
        loaders[split] = DataLoader(dataset, batch_size=batch_size, shuffle=train, generator=generator,
                                    num_workers=num_workers, drop_last=False,
                                    persistent_workers=num_workers > 0)
    return loaders
