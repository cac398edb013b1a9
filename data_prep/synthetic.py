"""Offline starter dataset: procedurally drawn fine-grained "bird species" in the CUB-200-2011 layout.

Every species is a combination of part attributes (crown colour, eye ring, wing pattern, beak
shape, ...; see ``synthetic_render.ATTRIBUTES``). Two tasks come from the same generator:

* ``source``: many species for pre-training a small backbone; they vary ``source_attributes``.
* ``target``: the downstream fine-grained task; its species vary ``target_attributes``.

Attributes that a task does not vary keep their default value (the first listed value), except its
nuisance attributes (``source_nuisance`` / ``target_nuisance``), which are redrawn for every image.
Every target species carries ``target_marker``, a non-default value of an attribute that the source task
always keeps at its default, so no target image can ever occur in the source task. Per-image nuisance
besides: body colour, pose (mirror, rotation, scale, position), colour jitter, background, pixel noise.

The default design is a miniature of ImageNet pre-training followed by fine-grained transfer: the source
species differ in crown, breast, wing and beak colour and tail shape, while tail colour varies per image as
nuisance, so a backbone pre-trained on the source task learns to discount it. The target species differ in
breast colour (a cue the backbone knows) and tail colour (one it learned to ignore), and all wear a white eye
ring, which no source bird has.

Output is byte-identical for equal (task, seed, spec): every image draws from its own
``numpy.random.default_rng([seed, task, class, image])`` stream, so worker count does not matter.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data_prep.synthetic_render import ATTRIBUTES, PART_NAMES, RenderSettings, render_bird

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
TASKS = ("target", "source")
MANIFEST_NAME = "synthetic_spec.json"
METADATA_FILES = (
    "images.txt", "image_class_labels.txt", "classes.txt", "train_test_split.txt", "bounding_boxes.txt",
    "parts/parts.txt", "parts/part_locs.txt", "attributes.json", "train.json", "val.json", "test.json",
)
SPLITS = ("train", "val", "test")

DEFAULT_SOURCE_ATTRIBUTES = ("crown_color", "breast_color", "wing_color", "tail_shape", "beak_color")
DEFAULT_TARGET_ATTRIBUTES = ("breast_color", "tail_color")
DEFAULT_SOURCE_NUISANCE = ("tail_color",)
DEFAULT_TARGET_NUISANCE: tuple[str, ...] = ()
DEFAULT_TARGET_MARKER = ("eye_ring", "white")  # source birds never have an eye ring
# Per-task defaults that differ from the SyntheticSpec field defaults (which are the target task's).
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "target": {},
    "source": {"num_classes": 100, "train_per_class": 90, "val_per_class": 10, "test_per_class": 5},
}
_TASK_STREAM = {"target": 0, "source": 1}  # RNG stream ids: tasks never share random numbers
_SPECIES_STREAM, _IMAGE_STREAM = 0, 1
_PARALLEL_MIN_IMAGES = 500  # below this, process start-up costs more than it saves

_COLOR_PART_WORDS = {
    "crown_color": "capped", "breast_color": "breasted", "wing_color": "winged",
    "tail_color": "tailed", "beak_color": "billed",
}
_SHAPE_WORDS = {
    "wing_pattern": {"plain": "plain_winged", "bars": "wing_barred", "spots": "spot_winged", "stripes": "streak_winged"},
    "tail_shape": {"square": "square_tailed", "fan": "fan_tailed", "forked": "fork_tailed", "pointed": "pin_tailed"},
}
_BEAK_NOUNS = {"short": "Finch", "long": "Warbler", "hooked": "Shrike"}


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines a synthetic dataset besides the seed.

    Counts are per class; ``image_size`` is the saved square side in pixels; ``scale_range`` is the
    bird size relative to the reference size; ``max_rotation_deg`` bounds |in-plane rotation|;
    ``color_jitter`` is the relative brightness jitter of the bird's colours; ``pixel_noise`` is the
    Gaussian noise std in 0-255 units.
    """

    task: str = "target"
    num_classes: int = 20
    train_per_class: int = 24
    val_per_class: int = 6
    test_per_class: int = 30
    image_size: int = 80
    source_attributes: tuple[str, ...] = DEFAULT_SOURCE_ATTRIBUTES
    target_attributes: tuple[str, ...] = DEFAULT_TARGET_ATTRIBUTES
    source_nuisance: tuple[str, ...] = DEFAULT_SOURCE_NUISANCE
    target_nuisance: tuple[str, ...] = DEFAULT_TARGET_NUISANCE
    target_marker: tuple[str, str] = DEFAULT_TARGET_MARKER
    scale_range: tuple[float, float] = (0.75, 1.15)
    max_rotation_deg: float = 15.0
    color_jitter: float = 0.08
    pixel_noise: float = 4.0

    def __post_init__(self) -> None:
        for name in ("source_attributes", "target_attributes", "source_nuisance", "target_nuisance",
                     "target_marker", "scale_range"):
            object.__setattr__(self, name, _as_tuple(name, getattr(self, name)))  # lists (e.g. from JSON) -> tuples
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        _check_int("num_classes", self.num_classes, minimum=2)
        for name in ("train_per_class", "val_per_class", "test_per_class"):
            _check_int(name, getattr(self, name), minimum=1)  # stratified: every class in every split
        _check_int("image_size", self.image_size, minimum=32, maximum=1024)
        self._check_attributes()
        if len(self.scale_range) != 2:
            raise ValueError(f"scale_range must be a (low, high) pair, got {self.scale_range}")
        low, high = self.scale_range
        _check_float("scale_range low", low, 0.2, 1.5)
        _check_float("scale_range high", high, low, 1.5)
        _check_float("max_rotation_deg", self.max_rotation_deg, 0.0, 90.0)
        _check_float("color_jitter", self.color_jitter, 0.0, 0.5)
        _check_float("pixel_noise", self.pixel_noise, 0.0, 64.0)
        for name in ("max_rotation_deg", "color_jitter", "pixel_noise"):
            object.__setattr__(self, name, float(getattr(self, name)))  # 15 and 15.0 give the same manifest
        object.__setattr__(self, "scale_range", (float(low), float(high)))
        available = count_species(self)
        if self.num_classes > available:
            raise ValueError(
                f"num_classes={self.num_classes} exceeds the {available} distinct {self.task} species "
                f"that the attributes {self.varying_attributes} allow"
            )

    def _check_attributes(self) -> None:
        """Known names, no duplicates, non-empty task lists, nuisance apart from species attributes, a valid marker."""
        for name in ("source_attributes", "target_attributes", "source_nuisance", "target_nuisance"):
            values = getattr(self, name)
            unknown = [a for a in values if a not in ATTRIBUTES]
            if unknown:
                raise ValueError(f"{name} has unknown attributes {unknown}; known: {list(ATTRIBUTES)}")
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists an attribute twice: {list(values)}")
        if not self.source_attributes or not self.target_attributes:
            raise ValueError("source_attributes and target_attributes must both be non-empty")
        for task in TASKS:
            overlap = set(getattr(self, f"{task}_nuisance")) & set(getattr(self, f"{task}_attributes"))
            if overlap:
                raise ValueError(f"{task}_nuisance must not be {task} species attributes, but {sorted(overlap)} are")
        if len(self.target_marker) != 2:
            raise ValueError(f"target_marker must be (attribute, value), got {self.target_marker}")
        attribute, value = self.target_marker
        if attribute not in ATTRIBUTES or value not in ATTRIBUTES[attribute][1:]:
            raise ValueError(f"target_marker {self.target_marker} must be a non-default value of a known attribute")
        used = set(self.source_attributes) | set(self.source_nuisance) | set(self.target_attributes) | set(
            self.target_nuisance)
        if attribute in used:
            raise ValueError(
                f"target_marker attribute {attribute!r} must stay at its default in the source task and not vary "
                "in the target task (it is what keeps target species disjoint from source species)")

    @classmethod
    def for_task(cls, task: str, **overrides: Any) -> SyntheticSpec:
        """Spec with the task's default sizes, then ``overrides`` (any field names) applied."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        allowed = {f.name for f in dataclasses.fields(cls)} - {"task"}
        unknown = set(overrides) - allowed
        if unknown:
            raise ValueError(f"unknown SyntheticSpec fields: {sorted(unknown)}")
        return cls(task=task, **{**TASK_DEFAULTS[task], **overrides})

    @property
    def varying_attributes(self) -> tuple[str, ...]:
        """Attributes whose values define this task's species."""
        return self.source_attributes if self.task == "source" else self.target_attributes

    @property
    def nuisance_attributes(self) -> tuple[str, ...]:
        """Attributes redrawn for every image of this task."""
        return self.source_nuisance if self.task == "source" else self.target_nuisance

    def fixed_value(self, attribute: str) -> str:
        """Value of an attribute this task neither varies nor redraws: the marker (target) or the default."""
        if self.task == "target" and attribute == self.target_marker[0]:
            return self.target_marker[1]
        return ATTRIBUTES[attribute][0]

    @property
    def images_per_class(self) -> int:
        return self.train_per_class + self.val_per_class + self.test_per_class

    def split_of(self, index_in_class: int) -> str:
        """Split of the class's image number ``index_in_class`` (0-based): train first, then val, then test."""
        if index_in_class < self.train_per_class:
            return "train"
        return "val" if index_in_class < self.train_per_class + self.val_per_class else "test"


@dataclass(frozen=True)
class Species:
    """One class: CUB-style name and a value for every attribute (None = redrawn per image as nuisance)."""

    name: str
    attributes: dict[str, str | None]


@dataclass(frozen=True)
class _ImageRecord:
    """Metadata of one saved image; ``path`` is relative to ``images/``; ``label`` is the 0-based class."""

    path: str
    label: int
    split: str
    bbox: tuple[float, float, float, float]
    parts: dict[str, tuple[float, float] | None]


def generate_synthetic(
    root: str | os.PathLike,
    task: str = "target",
    seed: int = 0,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    **overrides: Any,
) -> Path:
    """Writes the synthetic ``task`` dataset under ``root`` (CUB-200-2011 layout plus VPT JSON splits).

    ``overrides`` are SyntheticSpec fields. Returns ``Path(root)``. If ``root`` already holds the same
    complete dataset, nothing is rewritten (``overwrite=True`` forces regeneration). A synthetic
    dataset with another spec or seed, or with missing files, raises FileExistsError unless
    ``overwrite=True``. A non-empty directory that is not a synthetic dataset always raises, so
    ``overwrite`` never deletes unrelated content. ``workers`` (default: all CPUs for datasets of 500+
    images, else 1) does not change the output.
    """
    spec = SyntheticSpec.for_task(task, **overrides)
    _check_int("seed", seed, minimum=0)
    if workers is not None:
        _check_int("workers", workers, minimum=1)
    root = Path(root)
    manifest = _manifest(spec, seed)
    state = _existing_state(root, manifest)
    if state == "same" and not overwrite:
        logger.info("%s already holds this synthetic %s dataset (seed %d); nothing to do", root, task, seed)
        return root
    if state == "foreign":
        raise FileExistsError(f"{root} exists and is not an empty directory or a synthetic dataset; choose another root")
    if state in ("different", "incomplete") and not overwrite:
        problem = "a different spec or seed" if state == "different" else "missing files"
        raise FileExistsError(
            f"{root} holds a synthetic dataset with {problem} (an older version or other options made it). "
            f"Replace it with `python -m data_prep synthetic --root {root} --task {task} --seed {seed} --overwrite` "
            "(in Python: overwrite=True), or use another root"
        )
    species = draw_species(spec, seed)
    started = time.perf_counter()
    staging = _make_staging_dir(root)
    try:
        records = _render_images(staging / "images", spec, seed, species, workers)
        _write_metadata(staging, spec, species, records)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        _move_into_place(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote %d %s images (%d species) to %s in %.1f s",
                len(records), task, len(species), root, time.perf_counter() - started)
    return root


def ensure_synthetic(root: str | os.PathLike, task: str = "target", seed: int = 0, *,
                     workers: int | None = None) -> Path:
    """The default ``task`` dataset at ``root``: generated if missing. A synthetic dataset with another spec or
    seed (an older version of this generator, or other options) is used as it is, with a warning that its
    numbers will not match the documented ones and how to regenerate it; a non-synthetic dataset is used silently."""
    root = Path(root)
    state = _existing_state(root, _manifest(SyntheticSpec.for_task(task), seed))
    if state == "foreign":
        return root
    if state == "different" and _task_of(root) not in (None, task):
        logger.warning(
            "%s holds the synthetic %s dataset, not the %s one; using it as it is. For the documented numbers, give "
            "this command another folder for the %s dataset (e.g. data/starter-%s).", root, _task_of(root), task,
            task, task)
        return root
    if state == "different":
        logger.warning(
            "%s holds a synthetic %s dataset that is not this version's default (seed %d); using it as it is. "
            "For the documented numbers, regenerate it: python -m data_prep synthetic --root %s --task %s "
            "--seed %d --overwrite", root, task, seed, root, task, seed)
        return root
    return generate_synthetic(root, task=task, seed=seed, workers=workers)


# ----------------------------------------------------------------------------- species


def count_species(spec: SyntheticSpec) -> int:
    """Number of distinct species the task's varying attributes allow."""
    return math.prod(len(ATTRIBUTES[a]) for a in spec.varying_attributes)


def draw_species(spec: SyntheticSpec, seed: int) -> list[Species]:
    """The task's ``spec.num_classes`` species: a seeded random sample of attribute combinations, in class order."""
    _check_int("seed", seed, minimum=0)
    varying = spec.varying_attributes
    sizes = [len(ATTRIBUTES[a]) for a in varying]
    rng = np.random.default_rng([seed, _TASK_STREAM[spec.task], _SPECIES_STREAM])
    codes = np.stack(np.unravel_index(rng.permutation(math.prod(sizes)), sizes), axis=1)  # (combos, attributes)
    species = []
    for code in codes[: spec.num_classes]:
        chosen = {a: ATTRIBUTES[a][int(i)] for a, i in zip(varying, code)}
        attributes = {
            a: None if a in spec.nuisance_attributes else chosen.get(a, spec.fixed_value(a))
            for a in ATTRIBUTES
        }
        species.append(Species(name=_species_name(attributes, varying), attributes=attributes))
    return species


def _species_name(attributes: dict[str, str | None], varying: tuple[str, ...]) -> str:
    """CUB-style name from the varying attributes, e.g. 'Red_breasted_yellow_ringed_wing_barred_Shrike'."""
    words = []
    for attribute in varying:
        value = attributes[attribute]
        if attribute in _COLOR_PART_WORDS:
            words.append(f"{value}_{_COLOR_PART_WORDS[attribute]}")
        elif attribute == "eye_ring":
            words.append("bare_eyed" if value == "none" else f"{value}_ringed")
        elif attribute in _SHAPE_WORDS:
            words.append(_SHAPE_WORDS[attribute][value])
    words.append(_BEAK_NOUNS.get(attributes["beak_shape"], "Bird"))  # beak shape may be per-image nuisance
    name = "_".join(words)
    return name[0].upper() + name[1:]


def _class_directory(label: int, species: Species) -> str:
    """CUB class folder name, e.g. '001.Red_breasted_Finch' (1-based class id)."""
    return f"{label + 1:03d}.{species.name}"


# ----------------------------------------------------------------------------- rendering


def _render_images(images_dir: Path, spec: SyntheticSpec, seed: int, species: list[Species], workers: int | None) -> list[_ImageRecord]:
    """Renders and saves every image (one job per class); returns records in image-id order."""
    if workers is None:
        workers = _default_workers(spec.num_classes * spec.images_per_class)
    jobs = [(images_dir, spec, seed, label, s) for label, s in enumerate(species)]
    if workers == 1:
        per_class = [_render_class(*job) for job in jobs]
    else:
        context = multiprocessing.get_context("spawn")  # safe even when the caller has threads (torch)
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            per_class = list(pool.map(_render_class, *zip(*jobs)))
    return [record for records in per_class for record in records]


def _default_workers(num_images: int) -> int:
    """All CPUs for big datasets; one process for small ones, where process start-up would dominate."""
    return (os.cpu_count() or 1) if num_images >= _PARALLEL_MIN_IMAGES else 1


def _render_class(images_dir: Path, spec: SyntheticSpec, seed: int, label: int, species: Species) -> list[_ImageRecord]:
    """Renders and saves all images of one class; each image has its own RNG stream."""
    directory = _class_directory(label, species)
    (images_dir / directory).mkdir(parents=True)
    settings = RenderSettings(
        image_size=spec.image_size, scale_range=spec.scale_range, max_rotation_deg=spec.max_rotation_deg,
        color_jitter=spec.color_jitter, pixel_noise=spec.pixel_noise,
    )
    digits = max(4, len(str(spec.images_per_class)))
    records = []
    for index in range(spec.images_per_class):
        rng = np.random.default_rng([seed, _TASK_STREAM[spec.task], _IMAGE_STREAM, label, index])
        attributes = {a: v if v is not None else ATTRIBUTES[a][rng.integers(len(ATTRIBUTES[a]))]
                      for a, v in species.attributes.items()}
        bird = render_bird(attributes, rng, settings)
        path = f"{directory}/{directory}_{index + 1:0{digits}d}.png"
        Image.fromarray(bird.image).save(images_dir / path, format="PNG")
        records.append(_ImageRecord(path=path, label=label, split=spec.split_of(index), bbox=bird.bbox, parts=bird.parts))
    return records


# ----------------------------------------------------------------------------- metadata files


def _write_metadata(directory: Path, spec: SyntheticSpec, species: list[Species], records: list[_ImageRecord]) -> None:
    """Writes the CUB text files, parts, attributes.json and the VPT JSON splits (image ids are 1-based)."""
    ids = range(1, len(records) + 1)
    _write_lines(directory / "images.txt", (f"{i} {r.path}" for i, r in zip(ids, records)))
    _write_lines(directory / "image_class_labels.txt", (f"{i} {r.label + 1}" for i, r in zip(ids, records)))
    _write_lines(directory / "classes.txt", (f"{label + 1} {_class_directory(label, s)}" for label, s in enumerate(species)))
    _write_lines(directory / "train_test_split.txt",
                 (f"{i} {0 if r.split == 'test' else 1}" for i, r in zip(ids, records)))
    _write_lines(directory / "bounding_boxes.txt",
                 (f"{i} {x:.2f} {y:.2f} {w:.2f} {h:.2f}" for i, r in zip(ids, records) for x, y, w, h in [r.bbox]))
    (directory / "parts").mkdir()
    _write_lines(directory / "parts" / "parts.txt", (f"{p} {name}" for p, name in enumerate(PART_NAMES, start=1)))
    _write_lines(directory / "parts" / "part_locs.txt", _part_loc_lines(records))
    _write_json(directory / "attributes.json", _attributes_document(spec, species))
    for split in SPLITS:
        _write_json(directory / f"{split}.json", {r.path: r.label for r in records if r.split == split})


def _part_loc_lines(records: list[_ImageRecord]):
    """'<image_id> <part_id> <x> <y> <visible>' lines; hidden parts are '0.00 0.00 0' as in CUB."""
    for image_id, record in enumerate(records, start=1):
        for part_id, name in enumerate(PART_NAMES, start=1):
            location = record.parts[name]
            if location is None:
                yield f"{image_id} {part_id} 0.00 0.00 0"
            else:
                yield f"{image_id} {part_id} {location[0]:.2f} {location[1]:.2f} 1"


def _attributes_document(spec: SyntheticSpec, species: list[Species]) -> dict[str, Any]:
    """attributes.json content: the attribute table and every class's values (null = per-image nuisance)."""
    return {
        "task": spec.task,
        "varying_attributes": list(spec.varying_attributes),
        "nuisance_attributes": list(spec.nuisance_attributes),
        "marker": list(spec.target_marker) if spec.task == "target" else None,
        "attribute_values": {a: list(values) for a, values in ATTRIBUTES.items()},
        "classes": [
            {"class_id": label + 1, "label": label, "name": s.name, "directory": _class_directory(label, s),
             "attributes": s.attributes}
            for label, s in enumerate(species)
        ],
    }


def _write_lines(path: Path, lines) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def _write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, indent=1) + "\n")


# ----------------------------------------------------------------------------- existing roots


def _manifest(spec: SyntheticSpec, seed: int) -> dict[str, Any]:
    """Content of synthetic_spec.json, normalised through JSON (tuples -> lists) for comparison."""
    document = {"format_version": FORMAT_VERSION, "generator": __name__, "seed": seed, "task": spec.task,
                "spec": dataclasses.asdict(spec)}
    return json.loads(json.dumps(document))


def _task_of(root: Path) -> str | None:
    """The task ("target" / "source") of the synthetic dataset at ``root``, if its manifest says."""
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
        return manifest.get("task") or manifest.get("spec", {}).get("task")
    except (OSError, ValueError, AttributeError):
        return None


def _existing_state(root: Path, manifest: dict[str, Any]) -> str:
    """'missing' (absent or empty dir), 'same' (equal manifest, complete), 'incomplete' (equal manifest, files
    missing), 'different' (other synthetic dataset) or 'foreign' (anything else)."""
    if not root.exists():
        return "missing"
    if not root.is_dir():
        return "foreign"
    if not any(root.iterdir()):
        return "missing"
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        return "foreign"
    try:
        existing = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError):
        return "different"
    if existing != manifest:
        return "different"
    return "same" if _is_complete(root) else "incomplete"


def _is_complete(root: Path) -> bool:
    """True if every metadata file and every image listed in images.txt exists."""
    if not all((root / name).is_file() for name in METADATA_FILES):
        return False
    lines = (root / "images.txt").read_text().splitlines()
    return all((root / "images" / line.split(" ", 1)[1]).is_file() for line in lines)


def _make_staging_dir(root: Path) -> Path:
    """Creates an empty hidden directory next to ``root`` (same file system, so the final rename is atomic)."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the dataset root gets the user's usual permissions
        return staging
    except OSError as error:
        raise OSError(f"cannot write to {root.parent}: {error.strerror or error}") from error


def _files_made(root: Path) -> set[Path]:
    """The files (relative to ``root``) that this tool wrote there: metadata, manifest and the listed images."""
    made = {Path(name) for name in (*METADATA_FILES, MANIFEST_NAME)}
    listing = root / "images.txt"
    if listing.is_file():
        made |= {Path("images") / line.split(" ", 1)[1] for line in listing.read_text().splitlines() if " " in line}
    return made


def _move_into_place(staging: Path, root: Path) -> None:
    """Puts the finished staging directory at ``root``, replacing an empty or synthetic-dataset ``root``.

    Only what the tool made is replaced: files a user added under ``root`` stay where they are (the old dataset's
    files are removed one by one and the new ones moved in); without such files the swap is two renames.
    """
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
    if not root.exists():
        staging.rename(root)
        return
    made = _files_made(root)
    theirs = [p for p in root.rglob("*") if not p.is_dir() and p.relative_to(root) not in made]
    if not theirs:
        retired = staging.with_name(staging.name.replace(".partial-", ".old-"))
        root.rename(retired)
        staging.rename(root)
        shutil.rmtree(retired)
        return
    for relative in made:
        (root / relative).unlink(missing_ok=True)
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()  # the old dataset's class folders, now empty; a folder with a user's file stays
    for path in sorted(staging.rglob("*")):
        if path.is_file():
            target = root / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    shutil.rmtree(staging)


# ----------------------------------------------------------------------------- validation and CLI


def _check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    """Raises ValueError unless ``value`` is an int (not bool) within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {bounds}, got {value}")


def _as_tuple(name: str, value: Any) -> tuple:
    """``value`` as a tuple; ValueError for strings and non-sequences."""
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise ValueError(f"{name} must be a list or tuple, got {value!r}")
    return tuple(value)


def _check_float(name: str, value: Any, minimum: float, maximum: float) -> None:
    """Raises ValueError unless ``value`` is a real number within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be a number in [{minimum}, {maximum}], got {value!r}")


def add_cli_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``synthetic`` with the ``python -m data_prep`` parser."""
    parser = subparsers.add_parser(
        "synthetic", help="generate the offline synthetic bird dataset (CUB layout)",
        description="Generate the procedural fine-grained bird dataset in the CUB-200-2011 layout.",
    )
    parser.add_argument("--root", required=True, type=Path, help="output directory")
    parser.add_argument("--task", choices=TASKS, default="target", help="target (downstream) or source (pre-training)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--classes", type=int, default=None, help="number of species (default: 20 target, 100 source)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: automatic; output is identical)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing different synthetic dataset")
    parser.set_defaults(run=_run_cli)


def _run_cli(args: argparse.Namespace) -> None:
    overrides = {} if args.classes is None else {"num_classes": args.classes}
    generate_synthetic(args.root, task=args.task, seed=args.seed, overwrite=args.overwrite,
                       workers=args.workers, **overrides)
