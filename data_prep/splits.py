"""VPT-protocol splits: a seeded stratified 90/10 train/val split, split fingerprints and teaching subsets.

A split is a dict {relative image path: class id}. Every random choice draws from its own
``numpy.random.default_rng([seed, stream, class id])`` over the class's keys in sorted order, so a split
depends only on (keys, labels, seed), never on file-system or dict order.

Val sizes (the "90/10 rule"): the val set has ``ceil(N / 10)`` images in total for N official training
images, spread over the classes by largest remainder: class c gets ``floor(n_c / 10)``, and the classes
with the largest remainders ``n_c / 10 - floor(n_c / 10)`` (ties: smaller class id) get one more image each
until the total is reached; no class gives up its last training image. The total reproduces the paper's
val sizes: CUB ceil(5,994 / 10) = 600, NABirds ceil(23,929 / 10) = 2,393, Dogs 12,000 -> 1,200,
Cars ceil(8,144 / 10) = 815; within a class the val share is never more than one image from 10 %.
"""
from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from fractions import Fraction
from typing import Iterable, Mapping

import numpy as np

from data_prep import fingerprints

VAL_FRACTION = Fraction(1, 10)
_VAL_STREAM, _SHOTS_STREAM = 0, 1

Split = dict[str, int]


class SplitFingerprintError(ValueError):
    """A prepared split differs from the one whose fingerprint is committed in data_prep/fingerprints.py."""


def val_counts(train_counts: Mapping[int, int], fraction: Fraction = VAL_FRACTION) -> dict[int, int]:
    """{class id: images moved to val} for {class id: official training images} (rule in the module docstring)."""
    quota = {c: n * fraction for c, n in train_counts.items()}
    counts = {c: math.floor(q) for c, q in quota.items()}
    missing = math.ceil(sum(quota.values())) - sum(counts.values())
    for c in sorted(quota, key=lambda c: (counts[c] - quota[c], c)):  # largest remainder first
        if missing == 0:
            break
        if counts[c] < train_counts[c] - 1:
            counts[c] += 1
            missing -= 1
    return counts


def by_class(split: Split) -> dict[int, list[str]]:
    """{class id: sorted keys}."""
    keys: dict[int, list[str]] = defaultdict(list)
    for key in sorted(split):
        keys[split[key]].append(key)
    return dict(keys)


def _shuffled(keys: list[str], seed: int, stream: int, class_id: int) -> list[str]:
    order = np.random.default_rng([seed, stream, class_id]).permutation(len(keys))
    return [keys[i] for i in order]


def stratified_split(train: Split, seed: int) -> tuple[Split, Split]:
    """The official training set split into (train, val) with val sizes from :func:`val_counts`."""
    keys = by_class(train)
    counts = val_counts({c: len(k) for c, k in keys.items()})
    val_keys = {key for c, k in keys.items() for key in _shuffled(k, seed, _VAL_STREAM, c)[:counts[c]]}
    return ({k: c for k, c in train.items() if k not in val_keys},
            {k: c for k, c in train.items() if k in val_keys})


def subset(splits: Mapping[str, Split], classes: int | None, shots: int | None, seed: int) -> dict[str, Split]:
    """Teaching subset: the first ``classes`` class ids (sorted) and ``shots`` train images per class.

    Shots are the first K of a seeded permutation of each class's sorted train keys, so the 1-shot set is
    inside the 2-shot set, and so on. Val and test keep every image of the chosen classes.
    """
    class_ids = sorted(set(splits["train"].values()))
    if classes is not None:
        if not 1 <= classes <= len(class_ids):
            raise ValueError(f"--classes must be in [1, {len(class_ids)}] for this dataset, got {classes}")
        class_ids = class_ids[:classes]
    chosen = set(class_ids)
    result = {name: {k: c for k, c in split.items() if c in chosen} for name, split in splits.items()}
    if shots is not None:
        keys = by_class(result["train"])
        smallest = min(keys, key=lambda c: (len(keys[c]), c))
        if not 1 <= shots <= len(keys[smallest]):
            raise ValueError(f"--shots must be in [1, {len(keys[smallest])}]: class {smallest} has only "
                             f"{len(keys[smallest])} train images, got {shots}")
        result["train"] = {k: c for c, ks in keys.items() for k in _shuffled(ks, seed, _SHOTS_STREAM, c)[:shots]}
    return result


def fingerprint(keys: Iterable[str]) -> str:
    """sha256 hex digest of the sorted keys joined by newlines."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


def check_fingerprints(dataset: str, seed: int, found: Mapping[str, str]) -> None:
    """Compares ``found`` {split: fingerprint} with the committed table; SplitFingerprintError on a mismatch.

    Only seed ``fingerprints.SEED`` is committed; unknown (None) entries are not checked.
    """
    if seed != fingerprints.SEED:
        return
    committed = fingerprints.COMMITTED.get(dataset, {})
    changed = [name for name, value in committed.items() if value is not None and found[name] != value]
    if changed:
        raise SplitFingerprintError(
            f"the prepared {dataset} split(s) {', '.join(changed)} differ from the committed ones in "
            f"data_prep/fingerprints.py (found {', '.join(f'{n}={found[n][:12]}…' for n in changed)}): the dataset "
            "files are not the official ones, or the split code changed. Nothing was written to the root")
