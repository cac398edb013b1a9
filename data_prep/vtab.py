"""VTAB-1k (Zhai et al., "A Large-scale Study of Representation Learning with the Visual Task Adaptation Benchmark",
arXiv 1910.04867): the 19 tasks with 800 training and 200 validation images each, as VPT (KMnP/vpt) and E²VPT use them.

``python -m data_prep vtab --root R (--archive A | --tfds-data-dir D) [--tasks t1 t2 ...]`` prepares, per task,

* ``R/<task>/images/<split>/NNNNNN.<jpg|png>`` with ``<split>`` one of ``train800``, ``val200``, ``test``;
* ``train.json`` (train800, 800 images), ``val.json`` (val200, 200), ``trainval.json`` (train800val200, 1000: the
  union of the two, whose images are the train800/ and val200/ files), ``test.json``: {image path relative to
  ``R/<task>/images``: class id}, readable by :func:`data_prep.layout.read_split`;
* ``class_names.json`` {class id: name} ("class k" where the source names no classes);
  ``split_fingerprints.json`` {split: :func:`data_prep.splits.fingerprint` of its keys};
* ``prepared.json``: the marker (task, group, source, counts, format version), written last.

Each task is built in a staging folder inside R and renamed into place when complete, so a failure leaves no
half-prepared task; a prepared task is left untouched by a second run. Files the user passes are never moved,
changed or deleted.

Sources

* **The community archive** (``--archive``: a folder, or a .zip / .tar(.gz) of it) written by NOAH's
  ``data/vtab-source/get_vtab1k.py`` (ZhangYuanhan-AI/NOAH; copies are distributed by SSF, RepAdapter, V-PETL,
  PETL_Vision): per task a folder (names vary between copies, see :attr:`VtabTask.folders`) with
  ``train800.txt``, ``val200.txt``, ``train800val200.txt``, ``test.txt``, lines ``images/<split>/<i:06d>.jpg <label>``,
  and the images saved with PIL's default JPEG settings in TFDS order. ``images/train800val200/`` stores the
  train800 and val200 images a second time: this tool checks that ``train800val200.txt`` lists, as a multiset of
  (sha256 of the image bytes, label) - falling back to the decoded pixels where bytes differ - exactly the entries of
  ``train800.txt`` + ``val200.txt``, then keeps only one copy (``trainval.json`` points at train800/ and val200/).
  Known problem: CIFAR-100 as lossy JPEG of 32x32 images scores roughly 10+ points below the published numbers
  (NOAH issues #19 and #28); a warning recommends the TFDS source for it.
* **TensorFlow Datasets** (``--tfds-data-dir``), as VPT's ``tf_dataset.py`` does: each split is
  ``tfds.load(builder, split=slice, data_dir=D, shuffle_files=False)`` with the builder strings and split slices of
  google-research/task_adaptation (``task_adaptation/data/<task>.py``, ``scripts/run_all_tasks.sh``; VPT copies them,
  except KITTI, loaded as ``kitti:3.2.0``), labels from the same preprocessing functions, images written losslessly
  as PNG (grey images tiled to 3 channels, dSprites' 0/1 values x 255, as task_adaptation does).

The offsets of the slices that task_adaptation computes from a TFDS split size (``train[n:n+200]`` with n a
percentage of N, eurosat/resisc45/dsprites test ``train[m:]``) are written out for the TFDS versions VPT used
(VPT's VTAB_SETUP.md) and checked against the loaded builder's split size at run time.

:func:`summary` averages per-task accuracies the two ways papers do: the mean of the three group means
(VPT, E²VPT, NOAH) and the flat mean over the 19 tasks (SSF arXiv 2210.08823, V-PETL).

Offline task (no download; not one of the 19)

``python -m data_prep vtab --root R --tasks starter_distance`` (no ``--archive`` / ``--tfds-data-dir``) prepares
``starter_distance``, a VTAB-1k-shaped "structured" task drawn by the offline starter's bird generator
(:mod:`data_prep.synthetic`): the label is the beak-to-tail distance in pixels binned into 4 classes (a bird-size
quantity, like KITTI-distance or dSprites-location), not the species. It has the same files, marker and guarantees as
the 19 tasks, plus the CUB-format ``images.txt``, ``bounding_boxes.txt`` and ``parts/`` of its images (so the labels
can be recomputed from the part locations), so the whole VTAB code path runs in CI and on a laptop. It lives in
:data:`OFFLINE_TASKS`, not in :data:`TASKS`: :func:`summary` reports its accuracy under ``"offline"``, apart from the
VTAB-1k means.
"""
from __future__ import annotations

import argparse
import bisect
import hashlib
import importlib
import itertools
import json
import logging
import math
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
from PIL import Image

from data_prep import download
from data_prep.download import DISK_FULL, UnsafeArchiveError
from data_prep.fgvc import CLASS_NAMES, FINGERPRINTS, MARKER, RootStateError, _write_json
from data_prep.layout import UNREADABLE_IMAGE_ERRORS, VTAB_BENCHMARK, DatasetLayoutError, read_cub_table, read_split
from data_prep.splits import fingerprint
from data_prep.synthetic import MANIFEST_NAME, SyntheticSpec, generate_synthetic

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
GROUPS = ("natural", "specialized", "structured")
# Our split name -> the VTAB-1k split (community file name without .txt, images/<name>/ folder).
SPLIT_FILES = {"train": "train800", "val": "val200", "trainval": "train800val200", "test": "test"}
SPLIT_SIZES = {"train": 800, "val": 200, "trainval": 1000}
_STAGING_PREFIX = ".data_prep-staging-vtab-"
_JPEG_SUFFIXES = (".jpg", ".jpeg")
_END = object()

PathLike = Union[str, os.PathLike]


class VtabSourceError(ValueError):
    """A VTAB-1k source (archive or TFDS) that does not hold the expected splits; the message names the fix."""


class TfdsUnavailableError(ValueError):
    """``--tfds-data-dir`` was passed but tensorflow_datasets cannot be imported."""


# ----------------------------------------------------------------------------- label functions
# task_adaptation/data/<task>.py preprocessing, applied to one example as ``tfds.as_numpy`` yields it.

CLEVR_DIST_EDGES = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)  # task_adaptation clevr.py, closest-object distance
KITTI_DIST_EDGES = (-100.0, 8.0, 20.0, 999.0)  # task_adaptation kitti.py, _closest_vehicle_distance_pp
KITTI_NO_VEHICLE_DEPTH = 1000.0  # kitti.py appends this depth, so an image without vehicles lands in the last bin
KITTI_VEHICLE_TYPES = 3  # TFDS kitti object types 0, 1, 2 = Car, Van, Truck (``type < 3``)


def _bin(value: float, edges: Sequence[float]) -> int:
    """task_adaptation's ``reduce_max(where(edges - value < 0))``: the largest i with ``edges[i] < value``."""
    below = [i for i, edge in enumerate(edges) if edge < value]
    if not below:
        raise VtabSourceError(f"value {value} is not above the first bin edge {edges[0]}")
    return below[-1]


def tfds_label(key: str = "label") -> Callable[[Mapping], int]:
    """The label is the TFDS feature ``key`` itself."""
    def label(example: Mapping) -> int:
        return int(example[key])
    label.__name__ = f"tfds_{key}"
    return label


def clevr_count_label(example: Mapping) -> int:
    """Number of objects - 3 (3..10 objects -> 0..7; clevr.py)."""
    return int(np.size(example["objects"]["size"])) - 3


def clevr_dist_label(example: Mapping) -> int:
    """Bin of the smallest object depth ``objects.pixel_coords[:, 2]`` over CLEVR_DIST_EDGES (clevr.py)."""
    depth = np.asarray(example["objects"]["pixel_coords"], dtype=np.float64).reshape(-1, 3)[:, 2]
    return _bin(float(depth.min()), CLEVR_DIST_EDGES)


def kitti_dist_label(example: Mapping) -> int:
    """Bin of the nearest Car/Van/Truck depth z: <=8 m, 8-20 m, 20-999 m, none -> 3 (kitti.py)."""
    objects = example["objects"]
    types = np.asarray(objects["type"]).reshape(-1)
    depth = np.asarray(objects["location"], dtype=np.float64).reshape(-1, 3)[:, 2]
    vehicles = depth[types < KITTI_VEHICLE_TYPES]
    return _bin(min([KITTI_NO_VEHICLE_DEPTH, *vehicles.tolist()]), KITTI_DIST_EDGES)


def dsprites_loc_label(example: Mapping) -> int:
    """floor(label_x_position / 2): 32 positions -> 16 classes (dsprites.py)."""
    return math.floor(float(example["label_x_position"]) / (32 / 16))


def dsprites_ori_label(example: Mapping) -> int:
    """floor(label_orientation / 2.5): 40 orientations -> 16 classes (dsprites.py)."""
    return math.floor(float(example["label_orientation"]) / (40 / 16))


# ----------------------------------------------------------------------------- the 19 tasks


@dataclass(frozen=True)
class VtabTask:
    """One VTAB-1k task.

    Args:
        name: canonical name. group: "natural", "specialized" or "structured". num_classes: as VPT's tune_vtab.py.
        folders: folder names of the task in community archives (NOAH's get_vtab1k.py names first, then variants).
        tfds_builder: the builder string passed to ``tfds.load`` (task_adaptation's; KITTI: VPT's 3.2.0).
        tfds_version: the TFDS version VPT used (VPT VTAB_SETUP.md, tensorflow-datasets 4.4.0).
        train800, val200, test: TFDS split slices (task_adaptation ``tfds_splits``); train800val200 = train800 + val200.
        label: example -> class id. image_key: the image feature. grey: tile 1 channel to 3. scale: pixel factor.
        offset_split_size: TFDS "train" size the written-out offsets of the slices assume (None: no offsets).
        expected_test: test size for that TFDS version (a different size is reported, not refused).
        class_names: names where the label function defines them ("class k" otherwise).
        source: the task_adaptation file.
    """

    name: str
    group: str
    num_classes: int
    folders: tuple[str, ...]
    tfds_builder: str
    tfds_version: str
    val200: str
    test: str
    expected_test: int
    source: str
    label: Callable[[Mapping], int] = field(default=tfds_label("label"), compare=False)
    train800: str = "train[:800]"
    offset_split_size: Optional[int] = None
    image_key: str = "image"
    grey: bool = False
    scale: int = 1
    class_names: tuple[str, ...] = ()

    @property
    def train800val200(self) -> str:
        return f"{self.train800}+{self.val200}"

    @property
    def slices(self) -> dict[str, str]:
        """{our split name: TFDS slice}."""
        return {"train": self.train800, "val": self.val200, "trainval": self.train800val200, "test": self.test}

    def names(self) -> list[str]:
        return list(self.class_names) if self.class_names else [f"class {k}" for k in range(self.num_classes)]


def _percent(n: int, percent: int) -> int:
    """task_adaptation's count arithmetic: ``percent * n // 100``."""
    return percent * n // 100


def _after(n: int, percent: int) -> str:
    start = _percent(n, percent)
    return f"train[{start}:{start + 200}]"


_CLEVR_N, _DSPRITES_N, _SMALLNORB_AZIMUTHS = 70000, 737280, 18
TASKS: dict[str, VtabTask] = {t.name: t for t in (
    # natural
    VtabTask("cifar100", "natural", 100, ("cifar", "cifar100"), "cifar100:3.*.*", "3.0.2",
             _after(50000, 90), "test", 10000, "cifar.py", offset_split_size=50000),
    VtabTask("caltech101", "natural", 102, ("caltech101",), "caltech101:3.*.*", "3.0.1",
             _after(3060, 90), "test", 6084, "caltech.py", offset_split_size=3060),
    VtabTask("dtd", "natural", 47, ("dtd",), "dtd:3.*.*", "3.0.1", "validation[:200]", "test", 1880, "dtd.py"),
    VtabTask("oxford_flowers102", "natural", 102, ("oxford_flowers102",), "oxford_flowers102:2.*.*",
             "2.1.1", "validation[:200]", "test", 6149, "oxford_flowers102.py"),
    VtabTask("oxford_iiit_pet", "natural", 37, ("oxford_iiit_pet", "oxford_pet"), "oxford_iiit_pet:3.*.*", "3.2.0",
             _after(3680, 80), "test", 3669, "oxford_iiit_pet.py", offset_split_size=3680),
    VtabTask("svhn", "natural", 10, ("svhn",), "svhn_cropped:3.*.*", "3.0.0",
             _after(73257, 90), "test", 26032, "svhn.py", offset_split_size=73257),
    VtabTask("sun397", "natural", 397, ("sun397",), "sun397/tfds:4.*.*", "4.0.0", "validation[:200]", "test",
             21750, "sun397.py"),
    # specialized
    VtabTask("patch_camelyon", "specialized", 2, ("patch_camelyon",), "patch_camelyon:2.*.*", "2.0.0",
             "validation[:200]", "test", 32768, "patch_camelyon.py"),
    VtabTask("eurosat", "specialized", 10, ("eurosat",), "eurosat/rgb:2.*.*", "2.0.0",
             _after(27000, 60), f"train[{_percent(27000, 80)}:]", 5400, "eurosat.py", offset_split_size=27000),
    VtabTask("resisc45", "specialized", 45, ("resisc45",), "resisc45:3.*.*", "3.0.0",
             _after(31500, 60), f"train[{_percent(31500, 80)}:]", 6300, "resisc45.py", offset_split_size=31500),
    VtabTask("diabetic_retinopathy", "specialized", 5, ("diabetic_retinopathy",),
             "diabetic_retinopathy_detection/btgraham-300:3.*.*", "3.0.0", "validation[:200]", "test", 42670,
             "diabetic_retinopathy.py", class_names=("grade 0", "grade 1", "grade 2", "grade 3", "grade 4")),
    # structured
    VtabTask("clevr_count", "structured", 8, ("clevr_count",), "clevr:3.*.*", "3.1.0",
             _after(_CLEVR_N, 90), "validation", 15000, "clevr.py", label=clevr_count_label,
             offset_split_size=_CLEVR_N, class_names=tuple(f"{k} objects" for k in range(3, 11))),
    VtabTask("clevr_dist", "structured", 6, ("clevr_dist",), "clevr:3.*.*", "3.1.0",
             _after(_CLEVR_N, 90), "validation", 15000, "clevr.py", label=clevr_dist_label,
             offset_split_size=_CLEVR_N,
             class_names=tuple(f"closest depth {a:g}-{b:g}" for a, b in itertools.pairwise(CLEVR_DIST_EDGES))),
    VtabTask("dmlab", "structured", 6, ("dmlab",), "dmlab:2.0.1", "2.0.1", "validation[:200]", "test", 22735,
             "dmlab.py"),
    VtabTask("kitti_dist", "structured", 4, ("kitti",), "kitti:3.2.0", "3.2.0",
             "validation[:200]", "test", 711, "kitti.py", label=kitti_dist_label,
             class_names=("closest vehicle <= 8 m", "closest vehicle 8-20 m", "closest vehicle 20-999 m",
                          "no vehicle")),
    VtabTask("dsprites_loc", "structured", 16, ("dsprites_loc",), "dsprites:2.*.*", "2.0.0",
             _after(_DSPRITES_N, 80), f"train[{_percent(_DSPRITES_N, 90)}:]", 73728, "dsprites.py",
             label=dsprites_loc_label, offset_split_size=_DSPRITES_N, grey=True, scale=255,
             class_names=tuple(f"x positions {2 * k}-{2 * k + 1}" for k in range(16))),
    VtabTask("dsprites_ori", "structured", 16, ("dsprites_ori",), "dsprites:2.*.*", "2.0.0",
             _after(_DSPRITES_N, 80), f"train[{_percent(_DSPRITES_N, 90)}:]", 73728, "dsprites.py",
             label=dsprites_ori_label, offset_split_size=_DSPRITES_N, grey=True, scale=255),
    VtabTask("smallnorb_azi", "structured", _SMALLNORB_AZIMUTHS, ("smallnorb_azi",),
             "smallnorb:2.*.*", "2.0.0", "test[:200]", "test[50%:]", 12150, "smallnorb.py",
             label=tfds_label("label_azimuth"), grey=True,
             class_names=tuple(f"azimuth {20 * k} deg" for k in range(_SMALLNORB_AZIMUTHS))),
    VtabTask("smallnorb_ele", "structured", 9, ("smallnorb_ele",), "smallnorb:2.*.*", "2.0.0",
             "test[:200]", "test[50%:]", 12150, "smallnorb.py", label=tfds_label("label_elevation"), grey=True,
             class_names=tuple(f"elevation {30 + 5 * k} deg" for k in range(9))),
)}

_FOLDER_TO_TASK = {folder: t.name for t in TASKS.values() for folder in (t.name, *t.folders)}


# ----------------------------------------------------------------------------- the offline task (not one of the 19)

# starter_distance: images of the offline starter's bird generator (data_prep.synthetic, task "target", 80 px),
# labelled by the distance in pixels between the beak and tail keypoints, in 4 bins.
#
# How the bin edges were chosen: every target species keeps the default short beak, whose "beak" keypoint lies
# 37.59 px from the "tail" keypoint in the generator's canonical 80-px frame (synthetic_render._canonical_keypoints);
# the pose multiplies lengths by a scale drawn uniformly from SyntheticSpec.scale_range = (0.75, 1.15), while rotation,
# mirroring and translation keep them. The distance is therefore uniform on [28.19, 43.23] px; the interior edges are
# its quartiles (31.95, 35.71, 39.47) rounded to 0.5 px, for expected shares 25.3 / 23.3 / 26.6 / 24.8 %. The outer
# edges only name the classes: a distance below 28 or above 44 px (which the default spec cannot draw) goes to the
# nearest end class. A distance on an interior edge goes to the upper class ([32, 35.5) is class 1).
# Both parts are always visible in this generator (only left/right eye, leg and wing are hidden); an image without
# both would be skipped, deterministically, and since the split sizes are exact the preparation would then stop
# with an error instead of writing smaller splits.
STARTER_DISTANCE = "starter_distance"
STARTER_DISTANCE_PARTS = ("beak", "tail")
STARTER_DISTANCE_EDGES = (28.0, 32.0, 35.5, 39.5, 44.0)
STARTER_DISTANCE_SEED = 1  # generator seed (the starter's own datasets use 0, so the images differ from theirs)
# Per species (the target task's 20): the generator's own stratified splits give train800 / val200 / test 1000.
STARTER_DISTANCE_SPEC = {"train_per_class": 40, "val_per_class": 10, "test_per_class": 50}
_GENERATOR_SPLITS = {"train": "train", "val": "val", "test": "test"}  # generator split -> ours


def starter_distance_label(distance: float) -> int:
    """Class of a beak-tail distance in px: 0..3 over STARTER_DISTANCE_EDGES (upper bin on an edge)."""
    return bisect.bisect_right(STARTER_DISTANCE_EDGES[1:-1], float(distance))


def starter_distance(parts: Mapping[str, Optional[tuple[float, float]]]) -> Optional[float]:
    """Distance in px between the two STARTER_DISTANCE_PARTS of {part name: (x, y), or None if hidden}; None when
    either is hidden or absent."""
    points = [parts.get(name) for name in STARTER_DISTANCE_PARTS]
    if any(point is None for point in points):
        return None
    (x0, y0), (x1, y1) = points
    return math.hypot(float(x1) - float(x0), float(y1) - float(y0))


OFFLINE_TASKS: dict[str, VtabTask] = {STARTER_DISTANCE: VtabTask(
    STARTER_DISTANCE, "structured", len(STARTER_DISTANCE_EDGES) - 1, folders=(), tfds_builder="", tfds_version="",
    val200="", test="", expected_test=SyntheticSpec.for_task("target", **STARTER_DISTANCE_SPEC).num_classes
    * STARTER_DISTANCE_SPEC["test_per_class"],
    source="data_prep/synthetic.py (offline, no download)",
    class_names=tuple(f"{'-'.join(STARTER_DISTANCE_PARTS)} {a:g}-{b:g} px"
                      for a, b in itertools.pairwise(STARTER_DISTANCE_EDGES)))}


def is_offline(task: VtabTask) -> bool:
    """True for a task of OFFLINE_TASKS (generated here, needs no source, not one of the 19)."""
    return task.name in OFFLINE_TASKS


def tasks_in_group(group: str) -> list[str]:
    """Canonical names of the tasks of ``group`` in table order."""
    if group not in GROUPS:
        raise ValueError(f"unknown VTAB group {group!r}; the groups are {', '.join(GROUPS)}")
    return [t.name for t in TASKS.values() if t.group == group]


def resolve_task(name: str) -> VtabTask:
    """The task named ``name``: a canonical name or a community folder name (``cifar`` -> cifar100), or an offline
    task (OFFLINE_TASKS)."""
    key = name.strip().lower().replace("-", "_")
    if key in OFFLINE_TASKS:
        return OFFLINE_TASKS[key]
    if key not in _FOLDER_TO_TASK:
        valid = "; ".join(f"{t.name}" + (f" (also {', '.join(f for f in t.folders if f != t.name)})"
                                         if any(f != t.name for f in t.folders) else "") for t in TASKS.values())
        raise ValueError(f"unknown VTAB task {name!r}; valid names: {valid}; offline (no download, not one of the "
                         f"19): {', '.join(OFFLINE_TASKS)}")
    return TASKS[_FOLDER_TO_TASK[key]]


def resolve_tasks(names: Optional[Iterable[str]]) -> list[VtabTask]:
    """The tasks named (all 19 for None; offline tasks only when named), without repeats, in the order given."""
    if names is None:
        return list(TASKS.values())
    chosen: dict[str, VtabTask] = {}
    for name in names:
        task = resolve_task(name)
        chosen.setdefault(task.name, task)
    if not chosen:
        raise ValueError("--tasks names no task")
    return list(chosen.values())


GROUP_SIZES = {group: len(tasks_in_group(group)) for group in GROUPS}


# ----------------------------------------------------------------------------- summary


def summary(accuracies: Mapping[str, float]) -> dict:
    """Group means, the mean of the group means and the flat mean of per-task accuracies (any scale, e.g. %).

    Returns {"natural" / "specialized" / "structured": {"label", "value", "complete", "tasks", "missing",
    "partial_value"}, "mean_of_groups": {...}, "flat_mean": {...}, "missing": [tasks], "offline": {task: accuracy}}.
    A group with a missing task has ``value`` None and ``complete`` False (``partial_value`` is the mean over the tasks
    present, not comparable with published numbers); so do the two overall means when any task is missing. Task names
    may be folder variants. Accuracies of OFFLINE_TASKS (e.g. starter_distance) are only listed under "offline": they
    are not VTAB-1k tasks and never enter a group mean, the mean of groups or the flat mean.
    """
    values: dict[str, float] = {}
    offline: dict[str, float] = {}
    for name, accuracy in accuracies.items():
        task = resolve_task(name)
        into = offline if is_offline(task) else values
        if task.name in into:
            raise ValueError(f"{name!r} and another name both give {task.name}'s accuracy")
        accuracy = float(accuracy)
        if not math.isfinite(accuracy):
            raise ValueError(f"{task.name}'s accuracy is {accuracy}")
        into[task.name] = accuracy
    result: dict = {}
    for group in GROUPS:
        names = tasks_in_group(group)
        present = [values[n] for n in names if n in values]
        missing = [n for n in names if n not in values]
        result[group] = {
            "label": f"{group} mean (mean of the accuracies of its {len(names)} tasks)",
            "value": None if missing else sum(present) / len(present),
            "complete": not missing, "tasks": len(present), "missing": missing,
            "partial_value": sum(present) / len(present) if present else None,
        }
    missing = [n for n in TASKS if n not in values]
    complete = not missing
    groups = [result[g]["value"] for g in GROUPS]
    result["mean_of_groups"] = {
        "label": "mean of the 3 group means (VPT / E²VPT / NOAH 'mean')",
        "value": sum(groups) / len(groups) if complete else None, "complete": complete}
    result["flat_mean"] = {
        "label": f"flat mean over the {len(TASKS)} tasks (SSF / V-PETL 'mean')",
        "value": sum(values.values()) / len(values) if complete else None, "complete": complete}
    result["missing"] = missing
    result["offline"] = offline
    return result


# ----------------------------------------------------------------------------- preparation


def prepare_vtab(root: PathLike, archive: Optional[PathLike] = None, tfds_data_dir: Optional[PathLike] = None,
                 tasks: Optional[Iterable[str]] = None) -> dict[str, Path]:
    """Prepares ``tasks`` (default: all 19) in ``root/<task>`` from the community ``archive`` or from TFDS; offline
    tasks (``starter_distance``) come from the synthetic generator and need neither (a source passed is not used
    for them).

    Returns {task: its folder}. A task already prepared is left as it is.
    """
    chosen = resolve_tasks(tasks)
    needs_source = any(not is_offline(task) for task in chosen)
    if (archive is not None and tfds_data_dir is not None) or (needs_source and archive is None
                                                                and tfds_data_dir is None):
        raise ValueError("pass exactly one source: --archive (the community VTAB-1k archive) or --tfds-data-dir")
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise RootStateError(f"--root {root} is a file; pass a folder")
    done: dict[str, Path] = {}
    pending = []
    for task in chosen:
        if _is_prepared(root, task):
            marker = json.loads((root / task.name / MARKER).read_text())
            logger.info("%s: %s is already prepared (from the %s); nothing to do", task.name, root / task.name,
                        marker.get("source"))
            done[task.name] = root / task.name
        else:
            pending.append(task)
    if not pending:
        return done
    real = [task for task in pending if not is_offline(task)]
    tfds = None
    if real and archive is not None:
        archive = Path(archive).expanduser()
        if not archive.exists():
            raise FileNotFoundError(f"--archive {archive} does not exist")
    elif real:
        tfds = _import_tfds()
        tfds_data_dir = Path(tfds_data_dir).expanduser()
    created = root if not root.exists() else None
    staging = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(_STAGING_PREFIX + "*"):  # left by a killed run; ours to delete
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=root))
        try:
            folders, owned = (_locate_archive(archive, real, staging) if real and archive is not None
                              else ({}, False))
            for task in pending:
                build = staging / task.name
                build.mkdir()
                if is_offline(task):
                    marker = _from_generator(task, build, staging / f"generator-{task.name}")
                elif tfds is None:
                    marker = _from_archive(task, folders[task.name], build, owned, archive)
                else:
                    marker = _from_tfds(tfds, task, tfds_data_dir, build)
                _write_json(build / MARKER, marker)  # last: a folder without it is not a prepared task
                target = root / task.name
                if target.exists():
                    raise RootStateError(f"{target} appeared while {task.name} was being prepared; run again")
                build.rename(target)
                done[task.name] = target
                counts = marker["counts"]
                logger.info("prepared %s in %s from the %s: train %d / val %d / trainval %d / test %d images, "
                            "%d classes", task.name, target, marker["source"], counts["train"], counts["val"],
                            counts["trainval"], counts["test"], task.num_classes)
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            raise OSError(error.errno, f"the disk filled up while preparing VTAB-1k in {root} ({error.strerror}); "
                                       "the task being prepared was removed, tasks already prepared are complete. "
                                       "Free some space and run the same command again") from error
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if created is not None and created.is_dir() and not any(created.iterdir()):
            created.rmdir()
    return done


def _is_prepared(root: Path, task: VtabTask) -> bool:
    """True for a complete prepared task folder, False for none; RootStateError for anything else."""
    folder = root / task.name
    if not folder.exists():
        return False
    marker_path = folder / MARKER
    if not marker_path.is_file():
        raise RootStateError(f"{folder} exists but is not a prepared VTAB-1k task (no {MARKER}); if it is the "
                             "archive's own folder pass another --root, otherwise move it away and run again "
                             "(nothing in it is changed)")
    try:
        marker = json.loads(marker_path.read_text())
        recorded = json.loads((folder / FINGERPRINTS).read_text())
        intact = marker.get("task") == task.name and all(
            fingerprint(read_split(folder, name)) == recorded[name] for name in SPLIT_FILES)
    except (OSError, ValueError, KeyError, AttributeError):
        intact = False
    if not intact:
        raise RootStateError(f"{folder} holds a VTAB-1k task whose {MARKER} or split files are missing, changed or "
                             f"not {task.name}'s; move it away and run again to prepare {task.name} afresh")
    if is_offline(task) and {key: marker.get(key) for key in _offline_settings()} != _offline_settings():
        raise RootStateError(f"{folder} holds {task.name} generated with other settings (generator seed, bin edges "
                             "or spec of another version); move it away and run again to generate it afresh")
    return True


def _finish(task: VtabTask, build: Path, splits: dict[str, dict[str, int]], names: list[str], source: str,
            extra: dict) -> dict:
    """Writes the split files, class names and fingerprints into ``build``; returns the marker document."""
    for name in SPLIT_FILES:
        _write_json(build / f"{name}.json", {key: splits[name][key] for key in sorted(splits[name])})
    _write_json(build / CLASS_NAMES, {str(k): n for k, n in enumerate(names)})
    _write_json(build / FINGERPRINTS, {name: fingerprint(splits[name]) for name in SPLIT_FILES})
    if len(splits["test"]) != task.expected_test:
        logger.warning("%s: test has %d images; with the TFDS version VPT used (%s %s) it has %d", task.name,
                       len(splits["test"]), task.tfds_builder.split(":")[0], task.tfds_version, task.expected_test)
    _warn_missing_classes(task, splits)
    return {"benchmark": VTAB_BENCHMARK, "task": task.name, "group": task.group, "source": source,
            "format_version": FORMAT_VERSION,
            "classes": task.num_classes, "splits": dict(SPLIT_FILES),
            "counts": {name: len(splits[name]) for name in SPLIT_FILES}, **extra}


def _warn_missing_classes(task: VtabTask, splits: dict[str, dict[str, int]]) -> None:
    """Label statistics: one line naming the splits without any image of classes that appear in test."""
    in_test = set(splits["test"].values())
    gaps = []
    for name in ("train", "val", "trainval"):
        absent = sorted(in_test - set(splits[name].values()))
        if absent:
            gaps.append(f"{SPLIT_FILES[name]} lacks {len(absent)} (e.g. {', '.join(map(str, absent[:5]))})")
    if gaps:
        logger.warning("%s: label statistics: of the %d classes in test, %s; expected for tasks with many classes, "
                       "but a loader that numbers classes by the training split (e.g. e2vpt_viz.data.FGVCDataset) "
                       "refuses test images of such classes", task.name, len(in_test), "; ".join(gaps))


# ----------------------------------------------------------------------------- offline: the synthetic generator


def _offline_settings() -> dict:
    """What determines starter_distance's files, as recorded in (and compared with) its marker."""
    return json.loads(json.dumps({
        "generator": "data_prep.synthetic", "generator_task": "target", "generator_seed": STARTER_DISTANCE_SEED,
        "generator_spec": STARTER_DISTANCE_SPEC, "parts": STARTER_DISTANCE_PARTS,
        "bin_edges_px": STARTER_DISTANCE_EDGES}))


def _from_generator(task: VtabTask, build: Path, generated: Path) -> dict:
    """Draws starter_distance's birds into ``generated`` (inside the staging folder), labels them by the beak-tail
    distance of their keypoints, moves the images into ``build/images/<train800|val200|test>/NNNNNN.png``, writes the
    split files and the CUB-format tables of the images (images.txt, bounding_boxes.txt, parts/); returns the marker.
    The generator's stratified splits (STARTER_DISTANCE_SPEC per species) are ours, in its image-id order."""
    generate_synthetic(generated, task="target", seed=STARTER_DISTANCE_SEED, workers=1, **STARTER_DISTANCE_SPEC)
    images = read_cub_table(generated / "images.txt")
    boxes = read_cub_table(generated / "bounding_boxes.txt")
    part_names = read_cub_table(generated / "parts" / "parts.txt")  # {part id: name}
    locations: dict[str, dict[str, str]] = {image_id: {} for image_id in images}  # {image id: {part id: line}}
    for line in (generated / "parts" / "part_locs.txt").read_text().splitlines():
        if line.strip():
            locations[line.split()[0]][line.split()[1]] = line
    generator_json = {split: json.loads((generated / f"{split}.json").read_text()) for split in _GENERATOR_SPLITS}
    split_of = {path: split for split, entries in generator_json.items() for path in entries}
    splits: dict[str, dict[str, int]] = {split: {} for split in ("train", "val", "test")}
    table: list[tuple[str, str]] = []  # (our key, generator image id)
    skipped = 0
    for image_id in sorted(images, key=int):
        path = images[image_id]
        parts = {}
        for part_id, name in part_names.items():
            _, _, x, y, visible = locations[image_id][part_id].split()[:5]
            parts[name] = (float(x), float(y)) if visible == "1" else None
        distance = starter_distance(parts)
        if distance is None:
            skipped += 1
            continue
        split = _GENERATOR_SPLITS[split_of[path]]
        key = f"{SPLIT_FILES[split]}/{len(splits[split]):06d}.png"
        destination = build / "images" / key
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(generated / "images" / path, destination)
        splits[split][key] = starter_distance_label(distance)
        table.append((key, image_id))
    expected = {**SPLIT_SIZES, "test": task.expected_test}
    if any(len(splits[split]) != expected[split] for split in splits):
        raise VtabSourceError(f"{task.name}: {skipped} generated images lack a visible "
                              f"{' or '.join(STARTER_DISTANCE_PARTS)}, leaving "
                              f"{', '.join(f'{s} {len(e)}' for s, e in splits.items())} images instead of "
                              f"{', '.join(f'{s} {n}' for s, n in expected.items() if s in splits)}; the generator has "
                              "changed: adjust STARTER_DISTANCE_SPEC")
    splits["trainval"] = {**splits["train"], **splits["val"]}
    order = sorted(table, key=lambda row: (list(SPLIT_FILES.values()).index(row[0].split("/")[0]), row[0]))
    ids = {image_id: str(new_id) for new_id, (_, image_id) in enumerate(order, start=1)}
    (build / "parts").mkdir()
    _write_lines(build / "images.txt", (f"{ids[image_id]} {key}" for key, image_id in order))
    _write_lines(build / "bounding_boxes.txt", (f"{ids[image_id]} {boxes[image_id]}" for _, image_id in order))
    _write_lines(build / "parts" / "parts.txt", (f"{part_id} {name}" for part_id, name in part_names.items()))
    _write_lines(build / "parts" / "part_locs.txt",
                 (" ".join([ids[image_id], *locations[image_id][part_id].split()[1:]])
                  for _, image_id in order for part_id in part_names))
    manifest = json.loads((generated / MANIFEST_NAME).read_text())
    shutil.rmtree(generated)
    train = Counter(splits["train"].values())
    logger.info("%s: train800 class shares %s", task.name,
                ", ".join(f"{name} {100 * train[k] / len(splits['train']):.1f}%"
                          for k, name in enumerate(task.names())))
    return _finish(task, build, splits, task.names(), "synthetic", {
        **_offline_settings(), "synthetic_spec": manifest.get("spec"), "skipped_images": skipped,
        "image_format": "png", "vtab_1k_task": False,
        "label": f"distance in px between the {' and '.join(STARTER_DISTANCE_PARTS)} keypoints (parts/part_locs.txt), "
                 "binned over bin_edges_px (upper bin on an edge, outer edges only name the classes)"})


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


# ----------------------------------------------------------------------------- source A: the community archive


def _locate_archive(archive: Path, tasks: list[VtabTask], staging: Path) -> tuple[dict[str, Path], bool]:
    """({task: its folder}, whether the files are ours to move): the user's folder as it is, or the chosen tasks'
    members of a .zip / .tar(.gz) extracted into ``staging/source`` (every member is checked first)."""
    if archive.is_dir():
        dirs = {str(p.relative_to(archive).as_posix()) for p in archive.iterdir() if p.is_dir()}
        dirs |= {f"{top}/{p.name}" for top in list(dirs) for p in (archive / top).iterdir() if p.is_dir()}
        return {t.name: archive / prefix for t, prefix in _find_folders(archive, tasks, dirs).items()}, False
    if zipfile.is_zipfile(archive):
        kind = "zip"
        with zipfile.ZipFile(archive) as zf:
            names = [info.filename for info in zf.infolist()]
            for info in zf.infolist():
                _check_member(archive, info.filename)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise UnsafeArchiveError(f"refusing to extract {archive}: member {info.filename!r} is a symlink")
    else:
        try:
            is_tar = tarfile.is_tarfile(archive)
        except OSError:
            is_tar = False
        if not is_tar:
            raise VtabSourceError(f"--archive {archive} is neither a folder nor a .zip / .tar(.gz) archive")
        kind = "tar"
        try:
            with tarfile.open(archive) as tar:
                names = tar.getnames()
        except (tarfile.TarError, EOFError) as error:
            raise UnsafeArchiveError(f"refusing to extract {archive}: {error}") from None
        for name in names:
            _check_member(archive, name)
    dirs = set()
    for name in names:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        dirs.update("/".join(parts[:i]) for i in (1, 2) if len(parts) > i)
    prefixes = _find_folders(archive, tasks, dirs)
    wanted = tuple(prefix + "/" for prefix in prefixes.values())

    def chosen(name: str) -> bool:  # "./cifar/x" and "cifar/x" alike
        return "/".join(PurePosixPath(name.replace("\\", "/")).parts).startswith(wanted)
    target = staging / "source"
    target.mkdir()
    logger.info("extracting %s from %s", ", ".join(t.name for t in prefixes), archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if chosen(info.filename):
                        zf.extract(info, target)
        else:
            with tarfile.open(archive) as tar:
                members = [m for m in tar.getmembers() if chosen(m.name)]
                tar.extractall(target, members=members, filter=download._tar_filter)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as error:
        raise UnsafeArchiveError(f"refusing to extract {archive}: {error}") from None
    return {t.name: target / prefix for t, prefix in prefixes.items()}, True


def _check_member(archive: Path, name: str) -> None:
    """Refuses an absolute member name or one with '..' (as data_prep.download does for zip files)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if download._is_absolute(name) or ".." in parts:
        raise UnsafeArchiveError(f"refusing to extract {archive}: member {name!r} would be written outside the "
                                 "extraction folder")


def _find_folders(archive: Path, tasks: list[VtabTask], dirs: set[str]) -> dict[VtabTask, str]:
    """{task: its folder's path inside the archive}: a known folder name at the top or one folder down."""
    tops = sorted(d for d in dirs if "/" not in d)
    found: dict[VtabTask, str] = {}
    for task in tasks:
        candidates = [f for f in task.folders if f in dirs]
        candidates += [f"{top}/{f}" for top in tops for f in task.folders if f"{top}/{f}" in dirs]
        if not candidates:
            raise DatasetLayoutError(f"{archive} has no folder for {task.name} (looked for "
                                     f"{', '.join(task.folders)} at its top and one folder down); pass --tasks "
                                     "without it, or use a complete copy of the archive")
        if len(candidates) > 1:
            logger.warning("%s: %s has several folders for it (%s); using %s", task.name, archive,
                           ", ".join(candidates), candidates[0])
        found[task] = candidates[0]
    return found


def _read_list(task: VtabTask, folder: Path, split: str) -> dict[str, int]:
    """{path relative to the task folder: label} of ``<folder>/<split file>.txt``, checked line by line."""
    path = folder / f"{SPLIT_FILES[split]}.txt"
    where = f"{task.name}: {path}"
    if not path.is_file():
        raise DatasetLayoutError(f"{where} is missing; the archive is incomplete: extract or download it again")
    entries: dict[str, int] = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise VtabSourceError(f"{where} line {number}: expected '<image path> <label>', got {line.strip()!r}")
        rel, label_text = fields
        parts = PurePosixPath(rel).parts
        if download._is_absolute(rel) or ".." in parts or len(parts) < 3 or parts[0] != "images":
            raise VtabSourceError(f"{where} line {number}: {rel!r} is not a path images/<split>/<file> inside the "
                                  "task folder")
        try:
            label = int(label_text)
        except ValueError:
            raise VtabSourceError(f"{where} line {number}: the label {label_text!r} is not an integer") from None
        if not 0 <= label < task.num_classes:
            raise VtabSourceError(f"{where} line {number}: label {label} is outside 0..{task.num_classes - 1} "
                                  f"({task.name} has {task.num_classes} classes); this is not the VTAB-1k "
                                  f"{task.name} folder or its labels are corrupt: use another copy or --tfds-data-dir")
        if rel in entries:
            raise VtabSourceError(f"{where} line {number}: {rel} is listed twice")
        entries[rel] = label
    expected = SPLIT_SIZES.get(split)
    if expected is not None and len(entries) != expected:
        raise VtabSourceError(f"{where} lists {len(entries)} images; VTAB-1k's {SPLIT_FILES[split]} has exactly "
                              f"{expected}: the file is truncated or not VTAB-1k's, use another copy of the archive "
                              "or --tfds-data-dir")
    if split == "test" and not entries:
        raise VtabSourceError(f"{where} lists no images")
    missing = [rel for rel in entries if not (folder / rel).is_file()]
    if missing:
        raise VtabSourceError(f"{where} lists {len(missing)} images that are not in the archive (first: "
                              f"{missing[0]}); the archive is incomplete: extract or download it again")
    return entries


def _digest(path: Path, pixels: bool) -> str:
    """sha256 of the file's bytes, or of its decoded RGB pixels."""
    if not pixels:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except UNREADABLE_IMAGE_ERRORS as error:
        return f"unreadable: {error}"
    return hashlib.sha256(repr(array.shape).encode() + array.tobytes()).hexdigest()


def _check_trainval(task: VtabTask, folder: Path, lists: dict[str, dict[str, int]]) -> None:
    """train800val200 must list, as a multiset of (image content, label), exactly train800 + val200."""
    for pixels in (False, True):
        union = Counter((_digest(folder / rel, pixels), label)
                        for split in ("train", "val") for rel, label in lists[split].items())
        entries = {rel: (_digest(folder / rel, pixels), label) for rel, label in lists["trainval"].items()}
        extra = Counter(entries.values()) - union
        if not extra:
            return
    first = next(rel for rel, entry in entries.items() if entry in extra)
    raise VtabSourceError(
        f"{task.name}: {folder / 'train800val200.txt'} is not train800.txt + val200.txt: {sum(extra.values())} of its "
        f"1000 entries have no image with the same content and label in train800/val200 (first: {first}); the "
        "archive is corrupt or mixed from different copies: download it again, or use --tfds-data-dir")


def _from_archive(task: VtabTask, folder: Path, build: Path, owned: bool, archive: Path) -> dict:
    """Checks the task folder of the community archive and copies (moves, when extracted by us) its train800,
    val200 and test images into ``build/images``; writes the split files; returns the marker document."""
    lists = {split: _read_list(task, folder, split) for split in SPLIT_FILES}
    _check_trainval(task, folder, lists)
    suffixes = {PurePosixPath(rel).suffix.lower() for split in lists.values() for rel in split}
    if task.name == "cifar100" and suffixes & set(_JPEG_SUFFIXES):
        logger.warning("cifar100: the archive's images are lossy JPEG re-encodings of CIFAR's 32x32 images, while "
                       "published VTAB-1k numbers come from TFDS's lossless images; such copies score ~10+ points "
                       "lower (NOAH issues #19, #28). Prefer `python -m data_prep vtab --root ROOT --tfds-data-dir "
                       "DIR --tasks cifar100` (move ROOT/cifar100 away first)")
    splits: dict[str, dict[str, int]] = {}
    for split in ("train", "val", "test"):
        splits[split] = {}
        for rel, label in lists[split].items():
            key = str(PurePosixPath(*PurePosixPath(rel).parts[1:]))
            destination = build / "images" / key
            destination.parent.mkdir(parents=True, exist_ok=True)
            if owned:
                os.replace(folder / rel, destination)
            else:
                shutil.copyfile(folder / rel, destination)
            splits[split][key] = label
    splits["trainval"] = {**splits["train"], **splits["val"]}
    return _finish(task, build, splits, task.names(), "archive",
                   {"origin": str(archive), "folder": folder.name,
                    "image_format": "jpeg" if suffixes <= set(_JPEG_SUFFIXES) else "/".join(sorted(suffixes))})


# ----------------------------------------------------------------------------- source B: TensorFlow Datasets


def _import_tfds():
    try:
        return importlib.import_module("tensorflow_datasets")
    except ImportError as error:
        raise TfdsUnavailableError(
            f"--tfds-data-dir needs TensorFlow Datasets ({error}): `pip install tensorflow-datasets tensorflow`; the "
            "--archive source (the community VTAB-1k archive) works without it") from None


def _tfds_call(task: VtabTask, what: str, call: Callable):
    try:
        return call()
    except Exception as error:  # noqa: BLE001 (TFDS and TensorFlow raise many kinds; one line for all)
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise VtabSourceError(f"{task.name}: TFDS could not {what} ({type(error).__name__}: {message}); see VPT's "
                              "VTAB_SETUP.md for the datasets that need a manual download") from None


def _builder_info(tfds, task: VtabTask, data_dir: Path):
    """The builder's DatasetInfo, or None when this tensorflow_datasets cannot give it."""
    if not hasattr(tfds, "builder"):
        return None
    try:
        return tfds.builder(task.tfds_builder, data_dir=str(data_dir)).info
    except Exception as error:  # noqa: BLE001
        logger.warning("%s: could not read the info of %s (%s); split sizes are not checked", task.name,
                       task.tfds_builder, error)
        return None


def _check_split_size(task: VtabTask, info) -> None:
    """The written-out offsets assume VPT's TFDS version; refuses another "train" size."""
    if task.offset_split_size is None or info is None:
        return
    try:
        size = int(info.splits["train"].num_examples)
    except (KeyError, AttributeError, TypeError):
        return
    if size != task.offset_split_size:
        raise VtabSourceError(
            f"{task.name}: TFDS {task.tfds_builder} has {size} 'train' examples, but VTAB-1k's slices ({task.val200}, "
            f"test {task.test}) assume {task.offset_split_size}: prepare the version VPT used "
            f"({task.tfds_builder.split(':')[0]}:{task.tfds_version}) in --tfds-data-dir")


def _tfds_class_names(task: VtabTask, info) -> list[str]:
    if task.class_names or task.label.__name__ != "tfds_label" or info is None:
        return task.names()
    try:
        names = list(info.features["label"].names)
    except (KeyError, AttributeError, TypeError):
        return task.names()
    return names if len(names) == task.num_classes else task.names()


def _save_png(task: VtabTask, pixels, path: Path) -> None:
    array = np.asarray(pixels)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if task.scale != 1:
        array = array.astype(np.int64) * task.scale
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise VtabSourceError(f"{task.name}: TFDS image of shape {np.asarray(pixels).shape}, expected (H, W, 1 or 3)")
    Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="RGB").save(path, format="PNG")


def _from_tfds(tfds, task: VtabTask, data_dir: Path, build: Path) -> dict:
    """Loads train800, val200 and test from TFDS, writes them as PNG into ``build/images``; returns the marker."""
    splits: dict[str, dict[str, int]] = {}
    info = None
    for split in ("train", "val", "test"):
        slice_ = task.slices[split]
        folder = build / "images" / SPLIT_FILES[split]
        folder.mkdir(parents=True)
        dataset = _tfds_call(task, f"load {task.tfds_builder} split {slice_!r} from {data_dir}",
                             lambda slice_=slice_: tfds.load(task.tfds_builder, split=slice_,
                                                             data_dir=str(data_dir), shuffle_files=False))
        if split == "train":  # the first load prepares the dataset, so its info has the split sizes now
            info = _builder_info(tfds, task, data_dir)
            _check_split_size(task, info)
        splits[split] = {}
        logger.info("%s: writing %s (%s) as PNG", task.name, SPLIT_FILES[split], slice_)
        what = f"read {task.tfds_builder} {slice_!r}"
        examples = iter(_tfds_call(task, what, lambda dataset=dataset: tfds.as_numpy(dataset)))
        for index in itertools.count():
            example = _tfds_call(task, what, lambda examples=examples: next(examples, _END))
            if example is _END:
                break
            try:
                label = task.label(example)
            except (KeyError, TypeError, IndexError) as error:
                raise VtabSourceError(f"{task.name}: a {task.tfds_builder} example lacks what the label needs "
                                      f"({type(error).__name__}: {error})") from None
            if not 0 <= label < task.num_classes:
                raise VtabSourceError(f"{task.name}: example {index} of {slice_!r} has label {label}, outside "
                                      f"0..{task.num_classes - 1}")
            key = f"{SPLIT_FILES[split]}/{index:06d}.png"
            _save_png(task, example[task.image_key], build / "images" / key)
            splits[split][key] = label
        expected = SPLIT_SIZES.get(split)
        if (expected is not None and len(splits[split]) != expected) or not splits[split]:
            raise VtabSourceError(f"{task.name}: TFDS {task.tfds_builder} {slice_!r} gave {len(splits[split])} "
                                  f"examples, expected {expected or 'some'}")
    splits["trainval"] = {**splits["train"], **splits["val"]}
    return _finish(task, build, splits, _tfds_class_names(task, info), "tfds",
                   {"origin": str(data_dir), "tfds_builder": task.tfds_builder, "vpt_tfds_version": task.tfds_version,
                    "slices": task.slices, "image_format": "png"})


# ----------------------------------------------------------------------------- CLI


def add_cli_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``vtab`` with the ``python -m data_prep`` parser."""
    parser = subparsers.add_parser(
        "vtab", help="prepare the 19 VTAB-1k tasks (community archive or TensorFlow Datasets)",
        description="Prepare VTAB-1k tasks in --root/<task> with train (train800), val (val200), trainval "
                    "(train800val200) and test splits. The offline task starter_distance (synthetic birds, no "
                    "download, not one of the 19) needs no --archive / --tfds-data-dir.")
    parser.add_argument("--root", required=True, type=Path, help="folder that receives one folder per task")
    source = parser.add_mutually_exclusive_group()  # required unless only offline tasks are named
    source.add_argument("--archive", type=Path, metavar="PATH",
                        help="the community VTAB-1k archive: its folder, or a .zip / .tar(.gz) of it")
    source.add_argument("--tfds-data-dir", type=Path, metavar="DIR",
                        help="TensorFlow Datasets data_dir (needs tensorflow-datasets; lossless images)")
    parser.add_argument("--tasks", nargs="+", metavar="TASK", default=None,
                        help="tasks to prepare (default: all 19); community folder names such as 'cifar' work too; "
                             f"offline (no source needed): {', '.join(OFFLINE_TASKS)}")
    parser.set_defaults(run=lambda args: prepare_vtab(args.root, archive=args.archive,
                                                      tfds_data_dir=args.tfds_data_dir, tasks=args.tasks))
