"""CUB-200-2011 (Wah et al. 2011): 200 bird species, 11,788 images, official 5,994 / 5,794 train / test split.

Source: ``CUB_200_2011.tgz`` from CaltechDATA (record 65de6-vp158), md5 97eceeb196236b17998738112f37df78.
The archive's ``CUB_200_2011/`` folder becomes the root, so keys are relative to ``root/images``
(``001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg``). VPT split: 5,394 / 600 / 5,794.
The CUB text tables (read here) are shared by NABirds; parts and boxes are read by ``e2vpt_viz.data.CUBAnnotations``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from data_prep.fgvc import DatasetSpec, OfficialSplits, Resource, add_dataset_subcommand, prepare
from data_prep.layout import DatasetLayoutError, read_cub_table

CUB_TABLES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt",
              "bounding_boxes.txt", "parts/parts.txt", "parts/part_locs.txt")


def read_cub_format(root: Path) -> OfficialSplits:
    """Official splits of a CUB-format root from images.txt, image_class_labels.txt, train_test_split.txt
    (1 = train) and classes.txt; keys are the images.txt paths, class ids the official ones."""
    images = read_cub_table(root / "images.txt")
    labels = read_cub_table(root / "image_class_labels.txt")
    is_train = read_cub_table(root / "train_test_split.txt")
    names = read_cub_table(root / "classes.txt")
    for table, name in ((labels, "image_class_labels.txt"), (is_train, "train_test_split.txt")):
        if table.keys() != images.keys():
            raise DatasetLayoutError(f"{root / name} does not list the same image ids as images.txt")
    splits: dict[str, dict[str, int]] = {"1": {}, "0": {}}
    for image_id, path in images.items():
        if is_train[image_id] not in splits:
            raise DatasetLayoutError(f"{root / 'train_test_split.txt'}: image {image_id} is neither 1 (train) nor 0")
        splits[is_train[image_id]][path] = int(labels[image_id])
    used = set(splits["1"].values()) | set(splits["0"].values())
    return OfficialSplits(train=splits["1"], test=splits["0"],
                          class_names={int(c): n for c, n in names.items() if int(c) in used})


CUB = DatasetSpec(
    name="cub", title="CUB-200-2011",
    resources=(Resource("CUB_200_2011.tgz", "97eceeb196236b17998738112f37df78",
                        "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1"),),
    strip="CUB_200_2011", image_dir="images", layout=("images", *CUB_TABLES), read=read_cub_format,
    paper_counts=(5394, 600, 5794),
)


def prepare_cub(root, **options) -> Path:
    """Prepares CUB-200-2011 in ``root``; ``options`` as :func:`data_prep.fgvc.prepare`."""
    return prepare(CUB, root, **options)


def add_cli_subcommand(subparsers: argparse._SubParsersAction) -> None:
    add_dataset_subcommand(subparsers, CUB)
