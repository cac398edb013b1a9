"""The prepared-dataset layout every tool of the project reads and writes, in one place.

A prepared root holds ``train.json``, ``val.json`` and ``test.json``, each mapping an image path (relative to
``images/``, ``Images/`` or the root) to a class id, as in the VPT code; ``class_names.json`` names the classes; a
teaching subset folder has its own split files and a ``subset.json`` whose ``source`` points at the full root.
CUB-format roots (CUB, NABirds, the synthetic starter) also carry ``images.txt``, ``classes.txt``,
``bounding_boxes.txt`` and ``parts/``. ``data_prep`` writes this layout; :mod:`e2vpt_viz.data` reads it with torch.
"""
from __future__ import annotations

import itertools

import json
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ("train", "val", "test")
IMAGE_DIRS = ("images", "Images", "")  # CUB/NABirds/synthetic, Stanford Dogs, Cars/Flowers (keys carry the folder)
SUBSET_FILE = "subset.json"
CLASS_NAMES_FILE = "class_names.json"
MARKER_FILE = "prepared.json"
# The marker's "benchmark" of a VTAB-1k task (data_prep.vtab): its 800 training images need not cover every class.
VTAB_BENCHMARK = "vtab-1k"
# What PIL raises for a truncated, corrupt or unreadable image file.
UNREADABLE_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class DatasetLayoutError(FileNotFoundError):
    """A dataset root that is missing or not in the FGVC layout; the message names the expected files."""


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


def find_image_dir(root: Path, keys) -> Path:
    """The folder of ``root`` (or of its subset source) under which the split files' image paths lie.

    ``keys``: the split's image paths (or one of them); the first 100 are tried, so a few missing images do not hide
    the folder.
    """
    source = source_root(root)
    keys = [keys] if isinstance(keys, str) else list(itertools.islice(keys, 100))
    for sub in IMAGE_DIRS:
        if any((source / sub / key).is_file() for key in keys):
            return source / sub
    raise DatasetLayoutError(
        f"Image {keys[0]!r} listed in the split files of {root} was not found under "
        f"{', '.join(str(source / s) for s in IMAGE_DIRS)}. Check that the images were extracted.")


def image_paths(root: Path, split: str) -> list[Path]:
    """Every image file that ``root/{split}.json`` lists, sorted by key."""
    entries = read_split(root, split)
    if not entries:
        return []
    image_dir = find_image_dir(root, sorted(entries))
    return [image_dir / key for key in sorted(entries)]


def predicts_every_named_class(root: Path) -> bool:
    """True for a prepared VTAB-1k task (its ``prepared.json`` says so): a model of it predicts every class the task
    names, also classes without a training image (SUN397: 397 classes, 800 training images). FGVC roots are not:
    there a class without training images is a broken split."""
    try:
        marker = json.loads((Path(root) / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("benchmark") == VTAB_BENCHMARK
