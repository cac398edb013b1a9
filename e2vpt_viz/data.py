"""FGVC-format datasets: ``{train,val,test}.json`` mapping a relative image path to a class id, as in VPT.

The same class reads real CUB / NABirds / Flowers / Dogs / Cars roots prepared by ``data_prep`` and the offline
starter's synthetic dataset (``python -m data_prep synthetic --root DIR``). A teaching subset folder (written by
``python -m data_prep <dataset> --classes N --shots K``) has its own split files and a ``subset.json`` whose
``source`` points at the full root, where the images and annotations are.
"""
from __future__ import annotations

import json
import math
import warnings
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from .backbones import IMAGENET_MEAN, IMAGENET_STD
from .distributed import batch_bounds, check_batches

SPLITS = ("train", "val", "test")
IMAGE_DIRS = ("images", "Images", "")  # CUB/NABirds/synthetic, Stanford Dogs, Cars/Flowers (keys carry the folder)
SUBSET_FILE = "subset.json"
CLASS_NAMES_FILE = "class_names.json"
# What PIL raises for a truncated, corrupt or unreadable image file.
UNREADABLE_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class DatasetLayoutError(FileNotFoundError):
    """A dataset root that is missing or not in the FGVC layout; the message names the expected files."""


def resize_size(crop_size: int) -> int:
    """Short side before cropping, VPT's 256 for a 224 crop, scaled: round(crop · 256 / 224)."""
    return round(crop_size * 256 / 224)


def build_transforms(crop_size: int, train: bool) -> v2.Compose:
    """VPT's FGVC transforms, scaled to ``crop_size``: resize the short side to crop·256/224, then crop.

    train: resize → random crop → horizontal flip; eval: resize → centre crop. Both end with ImageNet normalisation.
    Output: float tensor (3, crop_size, crop_size).
    """
    return v2.Compose([*fixed_transforms(crop_size, train).transforms, *random_transforms(crop_size, train).transforms])


def fixed_transforms(crop_size: int, train: bool) -> v2.Compose:
    """The deterministic first part of :func:`build_transforms`, which a cache may keep: PIL image → uint8 tensor
    (3, H', W') with the short side resized (train), or the (3, crop, crop) centre crop (eval)."""
    steps = [v2.ToImage(), v2.Resize(resize_size(crop_size), antialias=True)]
    return v2.Compose(steps if train else [*steps, v2.CenterCrop(crop_size)])


def random_transforms(crop_size: int, train: bool) -> v2.Compose:
    """The rest of :func:`build_transforms`, run on every access: random crop and flip (train), then scaling to
    [0, 1] and ImageNet normalisation. uint8 (3, H', W') → float (3, crop, crop)."""
    crop = [v2.RandomCrop(crop_size), v2.RandomHorizontalFlip()] if train else []
    return v2.Compose([*crop, v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def load_rgb(path: Path) -> Image.Image:
    """Open an image as RGB (grayscale, 16-bit, CMYK, palette and RGBA files are converted).

    16-bit files keep their range (scaled to 8 bits; PIL's own conversion would clip them to white). An image over
    ``Image.MAX_IMAGE_PIXELS`` (PIL's decompression-bomb limit) raises ``Image.DecompressionBombError`` before any
    pixel is decoded; PIL itself only warns between that limit and twice it, then decodes.
    """
    with Image.open(path) as img:
        width, height = img.size
        if Image.MAX_IMAGE_PIXELS is not None and width * height > Image.MAX_IMAGE_PIXELS:
            raise Image.DecompressionBombError(
                f"{width} x {height} = {width * height:,} pixels is over the decompression-bomb limit of "
                f"{Image.MAX_IMAGE_PIXELS:,} (PIL.Image.MAX_IMAGE_PIXELS; raise it to read this file)")
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
            pixels = np.asarray(img, dtype=np.int64).clip(0, 65535) >> 8
            return Image.fromarray(pixels.astype(np.uint8), mode="L").convert("RGB")
        return img.convert("RGB")


def _class_id(value, key: str, path: Path) -> int:
    """A split file's class id: a non-negative integer (or a string of digits)."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DatasetLayoutError(f"{path} gives {key!r} the class {value!r}; class ids must be integers >= 0 "
                                 "(0..C-1 for C classes).")
    return value


def _no_duplicates(path: Path):
    def pairs_to_dict(pairs: list) -> dict:
        seen: dict = {}
        for key, value in pairs:
            if key in seen:
                raise DatasetLayoutError(f"{path} lists {key!r} twice (classes {seen[key]!r} and {value!r}); each "
                                         "image may appear once. Remove one of the two entries.")
            seen[key] = value
        return seen
    return pairs_to_dict


def _wrong_folder_hint(root: Path) -> str:
    """Where the dataset probably is when ``root`` is a neighbour of it (its parent, or its images folder)."""
    try:
        nested = sorted(p for p in root.iterdir() if (p / "train.json").is_file())
    except OSError:
        nested = []
    if nested:
        return f" It holds {', '.join(str(p) for p in nested[:3])}: pass that folder as the dataset root."
    parent = next((p for p in root.parents if (p / "train.json").is_file()), None)
    return f" {parent} holds train.json: pass that folder as the dataset root." if parent else ""


def read_split(root: Path, split: str) -> dict[str, int]:
    """``root/{split}.json`` as {relative image path: class id}, with a clear error when it is missing or malformed
    (not JSON, not an object, a key listed twice, a class id that is not an integer >= 0)."""
    path = root / f"{split}.json"
    if not root.is_dir():
        raise DatasetLayoutError(
            f"Dataset root {root} does not exist. Create the offline starter with "
            f"`python -m data_prep synthetic --root {root}`, or prepare a real dataset with `python -m data_prep`.")
    if not path.is_file():
        raise DatasetLayoutError(
            f"{root} is not an FGVC dataset root: {path.name} is missing. Expected train.json, val.json and "
            "test.json, each mapping an image path (relative to images/, Images/ or the root) to a class id."
            + _wrong_folder_hint(root))
    try:
        with open(path) as f:
            entries = json.load(f, object_pairs_hook=_no_duplicates(path))
    except json.JSONDecodeError as error:
        raise DatasetLayoutError(f"{path} is not valid JSON ({error}); re-create it (`python -m data_prep` writes "
                                 "the split files).") from None
    if not isinstance(entries, dict):
        raise DatasetLayoutError(f"{path} must hold one JSON object {{image path: class id}}, "
                                 f"not a {type(entries).__name__}.")
    return {str(k): _class_id(v, k, path) for k, v in entries.items()}


def source_root(root: Path) -> Path:
    """The folder with the images and annotation files of ``root``: ``root`` itself, or for a subset folder
    the full root that its ``subset.json`` points at."""
    pointer = root / SUBSET_FILE
    if not pointer.is_file():
        return root
    return (root / json.loads(pointer.read_text())["source"]).resolve()


def read_cub_table(path: Path) -> dict[str, str]:
    """A CUB-format text table (``<id> <value...>`` per line, e.g. images.txt) as {id: rest of the line}."""
    if not path.is_file():
        raise DatasetLayoutError(f"{path} is missing (CUB-format roots have images.txt, classes.txt, "
                                 "bounding_boxes.txt, parts/parts.txt and parts/part_locs.txt)")
    rows = (line.split(" ", 1) for line in path.read_text().splitlines() if line.strip())
    return {row[0]: row[1].strip() if len(row) > 1 else "" for row in rows}


class CUBAnnotations:
    """Per-image annotations of a CUB-format root (CUB-200-2011, NABirds, the synthetic starter).

    Images are named by their ``images.txt`` path (the split key). Coordinates are pixels of the original image.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._image_ids = {path: image_id for image_id, path in read_cub_table(root / "images.txt").items()}
        parts = read_cub_table(root / "parts" / "parts.txt")
        self.part_names = list(parts.values())
        self._part_index = {part_id: i for i, part_id in enumerate(parts)}

    def _image_id(self, key: str) -> str:
        if key not in self._image_ids:
            raise KeyError(f"{key} is not listed in {self.root / 'images.txt'}")
        return self._image_ids[key]

    @cached_property
    def _parts(self) -> dict[str, np.ndarray]:
        table: dict[str, np.ndarray] = {}
        path = self.root / "parts" / "part_locs.txt"
        if not path.is_file():
            raise DatasetLayoutError(f"{path} is missing")
        for line in path.read_text().splitlines():
            image_id, part_id, x, y, visible = line.split()[:5]
            if image_id not in table:
                table[image_id] = np.zeros((len(self.part_names), 3), dtype=np.float32)
            table[image_id][self._part_index[part_id]] = (float(x), float(y), float(visible))
        return table

    @cached_property
    def _boxes(self) -> dict[str, np.ndarray]:
        rows = read_cub_table(self.root / "bounding_boxes.txt")
        return {image_id: np.array(value.split(), dtype=np.float32) for image_id, value in rows.items()}

    def parts(self, key: str) -> np.ndarray:
        """(P, 3) float32: x, y, visible (0/1) of every part in ``part_names`` order; hidden parts are 0, 0, 0."""
        return self._parts.get(self._image_id(key), np.zeros((len(self.part_names), 3), dtype=np.float32))

    def bbox(self, key: str) -> np.ndarray:
        """(4,) float32: x, y, width, height of the bird's bounding box."""
        return self._boxes[self._image_id(key)]


def read_class_names(root: Path) -> dict[int, str]:
    """{class id: name} from ``class_names.json`` (written by data_prep), else from a CUB-format ``classes.txt``
    (1-based ids; split files use id - 1, as the synthetic starter does)."""
    if (root / CLASS_NAMES_FILE).is_file():
        return {int(k): v for k, v in json.loads((root / CLASS_NAMES_FILE).read_text()).items()}
    if (root / "classes.txt").is_file():
        return {int(k) - 1: v for k, v in read_cub_table(root / "classes.txt").items()}
    raise DatasetLayoutError(f"{root} has neither {CLASS_NAMES_FILE} nor classes.txt")


class FGVCDataset(Dataset):
    """One split of an FGVC root.

    Args:
        root: folder with ``train.json``, ``val.json``, ``test.json`` and the images.
        split: "train", "val" or "test".
        transform: applied to each RGB PIL image (e.g. :func:`build_transforms`), after ``fixed_transform``.
        cache: keep decoded images in memory (for small datasets such as the offline starter): each image after
            ``fixed_transform``, so a deterministic resize runs once per image, not once per epoch.
        fixed_transform: a deterministic transform applied before ``transform`` (e.g. :func:`fixed_transforms`,
            with :func:`random_transforms` as ``transform``); None = none.

    Items are ``(image, label)``; labels are contiguous 0..C-1 in the sorted order of the training set's ids.
    An image that cannot be read is skipped with a RuntimeWarning naming the file: the item is the next readable
    sample (wrapping around), so an epoch never stops on a corrupt file. ``python -m data_prep verify`` lists them.

    CUB-format roots (CUB, NABirds, synthetic) also give :meth:`parts`, :meth:`bbox` and ``part_names``; every
    prepared root gives ``class_names``.
    """

    def __init__(self, root: Union[str, Path], split: str = "train",
                 transform: Optional[Callable] = None, cache: bool = False,
                 fixed_transform: Optional[Callable] = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
        self.root = Path(root).expanduser()
        entries = read_split(self.root, split)
        if not entries:
            raise DatasetLayoutError(f"{split}.json in {self.root} lists no images.")
        self.source_root = source_root(self.root)
        class_ids = sorted(set(read_split(self.root, "train").values()))
        self.class_ids = class_ids
        self.class_to_index = {c: i for i, c in enumerate(class_ids)}
        unknown = sorted(set(entries.values()) - set(class_ids))
        if unknown:
            raise DatasetLayoutError(
                f"{split}.json in {self.root} has images of classes {unknown[:5]}, which have no training images "
                "(empty classes in train.json). Add training images for them or drop them from the split.")
        self._check_class_range()
        self.image_dir = self._find_image_dir(next(iter(entries)))
        self.keys = sorted(entries)
        self.samples = [(self.image_dir / rel, self.class_to_index[entries[rel]]) for rel in self.keys]
        self.num_classes = len(class_ids)
        self.transform = transform
        self.fixed_transform = fixed_transform
        self._cache: Optional[dict] = {} if cache else None

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

    def _find_image_dir(self, first_key: str) -> Path:
        for sub in IMAGE_DIRS:
            if (self.source_root / sub / first_key).is_file():
                return self.source_root / sub
        raise DatasetLayoutError(
            f"Image {first_key!r} listed in the split files of {self.root} was not found under "
            f"{', '.join(str(self.source_root / s) for s in IMAGE_DIRS)}. Check that the images were extracted.")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        for offset in range(len(self.samples)):
            candidate = (index + offset) % len(self.samples)
            try:
                image = self._load(candidate)
            except UNREADABLE_IMAGE_ERRORS as error:
                warnings.warn(f"skipping unreadable image {self.samples[candidate][0]} ({error})", RuntimeWarning)
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


def make_loaders(root: Union[str, Path], crop_size: int, batch_size: int, num_workers: int = 0,
                 cache: bool = False, seed: int = 0, pin_memory: bool = False,
                 shard: Optional[tuple[int, int]] = None) -> dict[str, DataLoader]:
    """Train / val / test loaders of an FGVC root with VPT transforms; train is shuffled with a seeded generator.

    ``shard=(rank, world)`` gives process ``rank`` its slice of every global batch (see :class:`ShardedBatchSampler`).
    """
    datasets = {split: FGVCDataset(root, split, random_transforms(crop_size, split == "train"), cache=cache,
                                   fixed_transform=fixed_transforms(crop_size, split == "train")) for split in SPLITS}
    return {split: split_loader(dataset, split == "train", batch_size, num_workers, seed, pin_memory, shard)
            for split, dataset in datasets.items()}


def split_loader(dataset: Dataset, train: bool, batch_size: int, num_workers: int = 0, seed: int = 0,
                 pin_memory: bool = False, shard: Optional[tuple[int, int]] = None) -> DataLoader:
    """A DataLoader as every split gets it: the training split is shuffled by a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed) if train else None
    if shard is not None and shard[1] > 1:
        sampler = ShardedBatchSampler(len(dataset), batch_size, train, generator, *shard)
        return ShardedDataLoader(dataset, batch_sampler=sampler, generator=generator, num_workers=num_workers,
                                 pin_memory=pin_memory, persistent_workers=num_workers > 0)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, generator=generator, num_workers=num_workers,
                      drop_last=False, persistent_workers=num_workers > 0, pin_memory=pin_memory)


class ShardedBatchSampler(Sampler[list[int]]):
    """Process ``rank`` of ``world``'s share of the batches one process would see.

    Training (``shuffle``): every process draws the same permutation from ``generator`` (as ``RandomSampler`` does,
    so the global batches are those of one process) and yields its contiguous slice of each global batch
    (:func:`~e2vpt_viz.distributed.batch_bounds`). Evaluation: process ``rank`` takes a contiguous block of the split,
    in batches of ``batch_size``; the accuracies are summed over processes afterwards.
    """

    def __init__(self, num_items: int, batch_size: int, shuffle: bool, generator: Optional[torch.Generator],
                 rank: int, world: int) -> None:
        if shuffle:
            check_batches(num_items, batch_size, world)
        self.num_items, self.batch_size, self.shuffle = num_items, batch_size, shuffle
        self.generator, self.rank, self.world = generator, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        n, size = self.num_items, self.batch_size
        if not self.shuffle:
            lo, hi = batch_bounds(n, self.rank, self.world)
            yield from (list(range(i, min(i + size, hi))) for i in range(lo, hi, size))
            return
        order = torch.randperm(n, generator=self.generator).tolist()
        for start in range(0, n, size):
            batch = order[start:start + size]
            lo, hi = batch_bounds(len(batch), self.rank, self.world)
            yield batch[lo:hi]

    def __len__(self) -> int:
        if not self.shuffle:
            lo, hi = batch_bounds(self.num_items, self.rank, self.world)
            return math.ceil((hi - lo) / self.batch_size)
        return math.ceil(self.num_items / self.batch_size)

    def step_slice(self, step: int) -> tuple[int, int]:
        """(first row of this process's slice, size of the global batch) of training step ``step``."""
        size = min(self.batch_size, self.num_items - step * self.batch_size)
        return batch_bounds(size, self.rank, self.world)[0], size


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
