"""Shared preparation of the FGVC benchmarks: fetch → verify md5 → extract → split → move into place.

Each dataset module (cub, nabirds, flowers, dogs, cars) only describes its files (:class:`DatasetSpec`) and
parses its official annotations into :class:`OfficialSplits`. A prepared root (VPT's FGVC layout, :mod:`data_prep.layout`) holds
the dataset's own files (e.g. CUB's ``images/`` and ``*.txt``) plus

* ``train.json``, ``val.json``, ``test.json``: {image path relative to ``spec.image_dir``: class id 0..C-1},
  class ids numbered by sorting the official ids; val from the 90/10 rule in :mod:`data_prep.splits`
  (Flowers: its official val);
* ``class_names.json`` {class id: name}; ``split_fingerprints.json`` {split: sha256 of its sorted keys};
* ``prepared.json``: the marker (dataset, seed, counts), written last;
* ``downloads/``: archives this tool downloaded (kept; delete them to save space);
* ``subsets/<name>/``: teaching subsets (``--classes`` / ``--shots``) that read their images from the root.

Atomicity: archives are extracted into a staging folder inside the root, split there, and only then moved
into the root, marker last; a failure removes the staging folder and nothing else. Files the user passed
with ``--archive`` or put into the root are never moved, changed or deleted.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Mapping, Optional, Union

from data_prep.download import DISK_FULL, ChecksumError, download, extract, verify_md5
from data_prep.splits import check_fingerprints, fingerprint, stratified_split, subset
from data_prep.layout import MARKER_FILE, SPLITS, SUBSET_FILE, DatasetLayoutError, read_split

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MARKER = MARKER_FILE
CLASS_NAMES = "class_names.json"
FINGERPRINTS = "split_fingerprints.json"
DOWNLOADS = "downloads"
SUBSETS = "subsets"
_STAGING_PREFIX = ".data_prep-staging-"

PathLike = Union[str, os.PathLike]


class RootStateError(FileExistsError):
    """The root holds something else than this dataset (another dataset, unrelated files)."""


class MissingSourceError(FileNotFoundError):
    """A dataset file has no automatic download and was not supplied."""


@dataclass(frozen=True)
class Resource:
    """One official file: archives are extracted, other files (.mat annotations) copied into the root."""

    filename: str
    md5: Optional[str]
    url: Optional[str]  # None: no working official link
    extract: bool = True


@dataclass(frozen=True)
class OfficialSplits:
    """A dataset's official annotations: {image key: official class id} per split, {class id: name}."""

    train: dict[str, int]
    test: dict[str, int]
    class_names: dict[int, str]
    val: Optional[dict[str, int]] = None  # official val set (Flowers); None: 90/10 split of train


@dataclass(frozen=True)
class DatasetSpec:
    """How to fetch and read one benchmark.

    Args:
        name: CLI name, e.g. "cub". title: human name, e.g. "CUB-200-2011".
        resources: the official files. strip: top folder of the archives whose content becomes the root.
        image_dir: folder (relative to the root) that split keys are relative to; "" = the root.
        layout: files and folders an extracted root must have. read: parses an extracted root.
        paper_counts: (train, val, test) sizes of the VPT paper's split.
        no_download: why some resource has no official URL (shown when the user must supply it).
    """

    name: str
    title: str
    resources: tuple[Resource, ...]
    image_dir: str
    layout: tuple[str, ...]
    read: Callable[[Path], OfficialSplits]
    paper_counts: tuple[int, int, int]
    strip: str = ""
    no_download: str = ""


def prepare(spec: DatasetSpec, root: PathLike, archive: Union[PathLike, Iterable[PathLike], None] = None,
            url: Union[str, Iterable[str], None] = None, md5: Union[str, Mapping[str, str], Iterable[str], None] = None,
            classes: Optional[int] = None, shots: Optional[int] = None, seed: int = 0) -> Path:
    """Prepares ``spec``'s dataset in ``root``; returns the root, or the subset folder if classes/shots are given.

    Args:
        archive: local copies of dataset files (matched to ``spec.resources`` by file name; any name if the
            dataset has a single file). Files already in ``root`` or ``root/downloads`` are used too.
        url: mirror URLs of dataset files, matched the same way.
        md5: checksum overrides for mirrors/copies: "HEX" (the single supplied file) or {file name: HEX}.
        classes, shots, seed: see :func:`data_prep.splits.subset`; ``seed`` also seeds the 90/10 split of a
            new root (an existing root keeps its split).
    Idempotent: a complete root with the same seed is left untouched.
    """
    root = Path(root).expanduser()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    state = _root_state(spec, root)
    if state == "prepared":
        prepared_seed = json.loads((root / MARKER).read_text())["seed"]
        if classes is None and shots is None and prepared_seed != seed:
            raise RootStateError(f"{root} already holds {spec.title} split with seed {prepared_seed}; a split with "
                                 f"seed {seed} needs a new --root")
        logger.info("%s already holds the prepared %s (seed %d); nothing to do", root, spec.title, prepared_seed)
    elif state == "extracted":
        _prepare_in_place(spec, root, seed)
    else:
        sources, md5s = _resolve_sources(spec, _as_list(archive), _as_list(url), md5)
        _fetch_and_prepare(spec, root, sources, md5s, seed)
    if classes is None and shots is None:
        return root
    return write_subset(root, classes, shots, seed)


# ----------------------------------------------------------------------------- root states


def _root_state(spec: DatasetSpec, root: Path) -> str:
    """'prepared', 'extracted' (the dataset's files are there, splits are not, or not intact) or 'empty'
    (missing, empty, or only dataset archives and downloads); RootStateError for anything else."""
    if root.exists() and not root.is_dir():
        raise RootStateError(f"--root {root} is a file; pass a folder")
    if (root / MARKER).is_file():
        marker = json.loads((root / MARKER).read_text())
        if marker.get("dataset") != spec.name:
            raise RootStateError(f"{root} holds a prepared {marker.get('dataset')!r} dataset, not {spec.name}; "
                                 "choose another --root")
        if _splits_intact(root):
            return "prepared"
        logger.warning("%s: split files are missing or changed; rebuilding them", root)
        return "extracted"
    if any((root / entry).exists() for entry in spec.layout):
        return "extracted"
    allowed = {r.filename for r in spec.resources} | {DOWNLOADS}
    foreign = sorted(p.name for p in root.iterdir()
                     if p.name not in allowed and not p.name.startswith(_STAGING_PREFIX)) if root.exists() else []
    if foreign:
        nested = [p for p in root.iterdir() if (p / spec.layout[0]).exists()]
        hint = f"; the dataset seems to be in {nested[0]}: pass --root {nested[0]}" if nested else (
            "; choose an empty or new --root")
        raise RootStateError(f"{root} is not empty and holds no {spec.title} files (found {', '.join(foreign[:5])})"
                             f"{hint}")
    return "empty"


def _splits_intact(root: Path) -> bool:
    """True if every split file exists and matches split_fingerprints.json."""
    try:
        recorded = json.loads((root / FINGERPRINTS).read_text())
        return all(fingerprint(read_split(root, name)) == recorded[name] for name in SPLITS)
    except (OSError, ValueError, KeyError):
        return False


def _prepare_in_place(spec: DatasetSpec, root: Path, seed: int) -> None:
    """Splits an already extracted root (e.g. extracted by hand): checks it, then writes the split files."""
    missing = [entry for entry in spec.layout if not (root / entry).exists()]
    if missing:
        archives = " and ".join(r.filename for r in spec.resources)
        raise DatasetLayoutError(
            f"{root} looks like a partially extracted {spec.title}: {', '.join(missing)} missing. Extract "
            f"{archives} into it again, or move it aside and run `python -m data_prep {spec.name} --root {root}`")
    logger.info("%s already holds the extracted %s; writing its splits", root, spec.title)
    marker = _write_splits(spec, root, spec.read(root), seed)
    _write_json(root / MARKER, marker)
    _report(spec, root, marker)


def _fetch_and_prepare(spec: DatasetSpec, root: Path, sources: dict[str, tuple[str, str]],
                       md5s: dict[str, Optional[str]], seed: int) -> None:
    """Fetches and verifies every resource, extracts into a staging folder, splits, moves into ``root``."""
    created = [p for p in (root, root / DOWNLOADS) if not p.exists()]
    staging = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(_STAGING_PREFIX + "*"):  # left by a killed run; ours to delete
            shutil.rmtree(stale)
        files = {r.filename: _obtain(spec, r, root, sources.get(r.filename), md5s[r.filename])
                 for r in spec.resources}
        staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=root))
        try:
            for resource in spec.resources:
                if resource.extract:
                    logger.info("extracting %s", files[resource.filename])
                    extract(files[resource.filename], staging)
                else:
                    shutil.copyfile(files[resource.filename], staging / resource.filename)
            _hoist(staging, spec.strip)
            try:
                official = spec.read(staging)
                marker = _write_splits(spec, staging, official, seed)
            except DatasetLayoutError as error:
                names = ", ".join(str(files[r.filename]) for r in spec.resources)
                raise DatasetLayoutError(f"{names} do not look like the official {spec.title} files: {error}") from None
            _write_json(staging / MARKER, marker)
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            raise OSError(error.errno, f"the disk filled up while extracting {spec.title} into {root} "
                                       f"({error.strerror}); the partly extracted files were removed and nothing else "
                                       "changed (downloaded archives are kept). Free some space and run the same "
                                       "command again") from error
        _move_into(staging, root)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for path in reversed(created):  # only folders this run created, and only if empty
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    _report(spec, root, marker)


def _hoist(staging: Path, strip: str) -> None:
    """Moves the content of ``staging/strip`` (the archive's top folder) up into ``staging``."""
    top = staging / strip
    if not strip or not top.is_dir():
        return
    for entry in top.iterdir():
        if (staging / entry.name).exists():
            raise DatasetLayoutError(f"the archive has both {strip}/{entry.name} and {entry.name}")
        entry.rename(staging / entry.name)
    top.rmdir()


def _move_into(staging: Path, root: Path) -> None:
    """Renames staging's entries into ``root`` (marker last); identical files already there are kept."""
    entries = sorted(staging.iterdir(), key=lambda p: p.name == MARKER)
    moves = []
    for entry in entries:
        target = root / entry.name
        if not target.exists():
            moves.append(entry)
        elif not (entry.is_file() and target.is_file() and filecmp.cmp(entry, target, shallow=False)):
            raise RootStateError(f"{target} already exists and differs from the dataset's {entry.name}; move it "
                                 "away and run again")
    done = []
    try:
        for entry in moves:
            entry.rename(root / entry.name)
            done.append(entry)
    except OSError:
        for entry in reversed(done):
            (root / entry.name).rename(entry)
        raise


# ----------------------------------------------------------------------------- sources


def _as_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, (str, os.PathLike)) else list(value)


def _resolve_sources(spec: DatasetSpec, archives: list, urls: list, md5) -> tuple[dict, dict]:
    """({file name: ("file", path) or ("url", url)} for supplied files, {file name: expected md5 or None})."""
    sources: dict[str, tuple[str, str]] = {}
    for path in archives:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--archive {path} does not exist")
        sources[_match_resource(spec, path.name, f"--archive {path}")] = ("file", str(path))
    for address in urls:
        name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlparse(address).path)).name
        sources[_match_resource(spec, name, f"--url {address}")] = ("url", address)
    md5s = {r.filename: r.md5 for r in spec.resources}
    items = [f"{k}={v}" for k, v in md5.items()] if isinstance(md5, Mapping) else _as_list(md5)
    for item in items:
        name, _, value = item.rpartition("=")
        if name:
            name = _match_resource(spec, name, f"--md5 {item}")
        elif len(sources) == 1 or len(spec.resources) == 1:
            name = next(iter(sources)) if len(sources) == 1 else spec.resources[0].filename
        else:
            raise ValueError(f"--md5 {item} is ambiguous: {spec.title} has several files; write --md5 NAME=HEX "
                             f"with NAME one of {', '.join(md5s)}")
        if not re.fullmatch(r"[0-9a-fA-F]{32}", value):
            raise ValueError(f"--md5 {item}: an md5 is 32 hexadecimal digits")
        md5s[name] = value.lower()
    return sources, md5s


def _match_resource(spec: DatasetSpec, name: str, what: str) -> str:
    names = [r.filename for r in spec.resources]
    if name in names:
        return name
    if len(names) == 1:
        return names[0]
    raise ValueError(f"cannot tell which {spec.title} file {what} is: its name must be one of {', '.join(names)}")


def _obtain(spec: DatasetSpec, resource: Resource, root: Path, source: Optional[tuple[str, str]],
            md5: Optional[str]) -> Path:
    """A verified local path of ``resource``: the supplied file, else the file in the root, else an earlier
    download, else a download from the supplied or the official URL."""
    name = resource.filename
    local = Path(source[1]) if source and source[0] == "file" else root / name
    if local.is_file():
        try:
            verify_md5(local, md5)
        except ChecksumError as error:
            raise ChecksumError(f"{error} (the official {name}); if it is a copy you trust, pass "
                                f"--md5 {name}=<its md5>") from None
        return local
    earlier = root / DOWNLOADS / name
    if earlier.is_file():
        try:
            verify_md5(earlier, md5)
            return earlier
        except ChecksumError:
            logger.warning("%s is corrupt; downloading it again", earlier)
            earlier.unlink()
    address = source[1] if source else resource.url
    if address is None:
        names = [r.filename for r in spec.resources]
        raise MissingSourceError(
            f"{spec.title} has no automatic download ({spec.no_download}). Get {' and '.join(names)}, then run "
            f"`python -m data_prep {spec.name} --root {root} {' '.join('--archive ' + n for n in names)}` "
            "(or pass --url with a mirror)")
    logger.info("downloading %s", address)
    return download(address, root / DOWNLOADS / name, md5)


# ----------------------------------------------------------------------------- splits and files


def _write_splits(spec: DatasetSpec, tree: Path, official: OfficialSplits, seed: int) -> dict:
    """Checks images, builds the splits, checks fingerprints and writes the split files into ``tree``.

    Returns the marker document (written by the caller, last).
    """
    if official.val is None:
        train, val = stratified_split(official.train, seed)
    else:
        train, val = official.train, official.val
    splits = {"train": train, "val": val, "test": official.test}
    class_ids = sorted(set(official.train.values()))
    unknown = sorted((set(val.values()) | set(official.test.values())) - set(class_ids))
    if unknown:
        raise DatasetLayoutError(f"classes {unknown[:5]} have test or val images but no training images")
    images = tree / spec.image_dir
    missing = [key for split in splits.values() for key in split if not (images / key).is_file()]
    if missing:
        total = sum(len(s) for s in splits.values())
        raise DatasetLayoutError(f"{len(missing)} of {total} listed images are missing under {images} "
                                 f"(first: {missing[0]})")
    index = {c: i for i, c in enumerate(class_ids)}
    found = {name: fingerprint(split) for name, split in splits.items()}
    check_fingerprints(spec.name, seed, found)
    for name, split in splits.items():
        _write_json(tree / f"{name}.json", {key: index[split[key]] for key in sorted(split)})
    _write_json(tree / CLASS_NAMES, {str(index[c]): official.class_names.get(c, str(c)) for c in class_ids})
    _write_json(tree / FINGERPRINTS, found)
    return {"dataset": spec.name, "title": spec.title, "format_version": FORMAT_VERSION, "seed": seed,
            "classes": len(class_ids), "counts": {name: len(split) for name, split in splits.items()}}


def _report(spec: DatasetSpec, root: Path, marker: dict) -> None:
    """Logs the split sizes (against the paper's) and the fingerprints a maintainer can commit."""
    counts = tuple(marker["counts"][name] for name in SPLITS)
    paper = "as in the paper" if counts == spec.paper_counts else (
        "the paper's split has " + " / ".join(map(str, spec.paper_counts)) + ": this copy differs")
    logger.info("prepared %s in %s: train %d / val %d / test %d images, %d classes (%s)",
                spec.title, root, *counts, marker["classes"], paper)
    found = json.loads((root / FINGERPRINTS).read_text())
    logger.info("split fingerprints (seed %d), for data_prep/fingerprints.py:\n    %s: %s,", marker["seed"],
                json.dumps(spec.name), json.dumps(found))


def write_subset(root: Path, classes: Optional[int], shots: Optional[int], seed: int,
                 into: Optional[Path] = None) -> Path:
    """Writes the teaching subset of a prepared ``root`` to ``root/subsets/<name>`` (or ``into/<name>``, e.g. when
    the root is read-only) and returns that folder.

    The folder holds train/val/test.json, split_fingerprints.json and subset.json, whose ``source`` points
    back at the root (relative inside it, absolute elsewhere), so FGVCDataset finds the root's images and annotations.
    """
    parts = ([f"classes{classes}"] if classes is not None else []) + (
        [f"shots{shots}", f"seed{seed}"] if shots is not None else [])
    folder = (root / SUBSETS if into is None else Path(into)) / "_".join(parts)
    chosen = subset({name: read_split(root, name) for name in SPLITS}, classes, shots, seed)
    source = "../.." if into is None else str(Path(root).resolve())
    pointer = {"source": source, "classes": classes, "shots": shots, "seed": seed}
    documents = {**{f"{name}.json": chosen[name] for name in SPLITS}, SUBSET_FILE: pointer,
                 FINGERPRINTS: {name: fingerprint(chosen[name]) for name in SPLITS}}
    if folder.is_dir() and all(_read_json(folder / n) == d for n, d in documents.items()):
        logger.info("subset %s already exists; nothing to do", folder)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, document in documents.items():  # subset.json last: a folder without it is not used
        if name != SUBSET_FILE:
            _write_json(folder / name, document)
    _write_json(folder / SUBSET_FILE, pointer)
    logger.info("wrote subset %s: train %d / val %d / test %d images, %d classes", folder,
                *(len(chosen[name]) for name in SPLITS), len(set(chosen["train"].values())))
    return folder


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, document) -> None:
    """Writes JSON atomically (temporary file, then rename)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=1) + "\n")
    temporary.replace(path)


# ----------------------------------------------------------------------------- CLI


def add_dataset_subcommand(subparsers: argparse._SubParsersAction, spec: DatasetSpec) -> None:
    """Registers ``python -m data_prep <spec.name>``."""
    names = ", ".join(r.filename for r in spec.resources)
    parser = subparsers.add_parser(
        spec.name, help=f"download, verify, extract and split {spec.title}",
        description=f"Prepare {spec.title} ({names}) with the VPT splits in --root.")
    parser.add_argument("--root", required=True, type=Path, help="dataset folder (created if missing)")
    parser.add_argument("--archive", action="append", default=[], type=Path, metavar="FILE",
                        help=f"local copy of a dataset file ({names}); repeat for several")
    parser.add_argument("--url", action="append", default=[], help="mirror URL of a dataset file; repeatable")
    parser.add_argument("--md5", action="append", default=[], metavar="[NAME=]HEX",
                        help="expected md5 of a mirror's or a local copy's file; repeatable")
    parser.add_argument("--classes", type=int, default=None, help="subset: the first N classes")
    parser.add_argument("--shots", type=int, default=None, help="subset: K training images per class")
    parser.add_argument("--seed", type=int, default=0, help="seed of the 90/10 split and of --shots (default 0)")
    parser.set_defaults(run=lambda args: prepare(spec, args.root, args.archive, args.url, args.md5,
                                                 args.classes, args.shots, args.seed))
