"""Stanford Dogs (Khosla et al. 2011): 120 breeds (ImageNet subset), 12,000 / 8,580 official train / test images.

Sources: ``images.tar`` (``Images/n02085620-Chihuahua/n02085620_10074.jpg`` ...) and ``lists.tar``
(``train_list.mat`` / ``test_list.mat``: ``file_list`` paths relative to ``Images/``, ``labels`` 1-based;
``file_list.mat``), from http://vision.stanford.edu/aditya86/ImageNetDogs/. Keys are relative to
``root/Images``. VPT split: 10,800 / 1,200 / 8,580 (100 train images per breed, 10 to val).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from data_prep.fgvc import DatasetSpec, OfficialSplits, Resource, add_dataset_subcommand, prepare
from data_prep.matfile import ints, load_mat, strings

URL_PREFIX = "http://vision.stanford.edu/aditya86/ImageNetDogs/"


def read_dogs(root: Path) -> OfficialSplits:
    """Official train / test of an extracted Stanford Dogs root; class names from the folder names."""
    splits, names = [], {}
    for filename in ("train_list.mat", "test_list.mat"):
        content = load_mat(root / filename, "file_list", "labels")
        files, labels = strings(content["file_list"]), ints(content["labels"])
        splits.append(dict(zip(files, labels)))
        names.update({label: path.split("/")[0].split("-", 1)[-1] for path, label in zip(files, labels)})
    return OfficialSplits(train=splits[0], test=splits[1], class_names=names)


DOGS = DatasetSpec(
    name="dogs", title="Stanford Dogs",
    resources=(Resource("images.tar", "1bb1f2a596ae7057f99d7d75860002ef", URL_PREFIX + "images.tar"),
               Resource("lists.tar", "edbb9f16854ec66506b5f09b583e0656", URL_PREFIX + "lists.tar")),
    image_dir="Images", layout=("Images", "train_list.mat", "test_list.mat"), read=read_dogs,
    paper_counts=(10800, 1200, 8580),
)


def prepare_dogs(root, **options) -> Path:
    """Prepares Stanford Dogs in ``root``; ``options`` as :func:`data_prep.fgvc.prepare`."""
    return prepare(DOGS, root, **options)


def add_cli_subcommand(subparsers: argparse._SubParsersAction) -> None:
    add_dataset_subcommand(subparsers, DOGS)
