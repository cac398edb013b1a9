"""Oxford Flowers-102 (Nilsback & Zisserman 2008): 102 flower categories, 8,189 images.

Sources (as in ``torchvision.datasets.Flowers102``): ``102flowers.tgz`` (``jpg/image_00001.jpg`` ...),
``imagelabels.mat`` (``labels``: 1-based class of image number i) and ``setid.mat`` (``trnid`` / ``valid`` /
``tstid``: 1-based image numbers). Keys are relative to the root (``jpg/image_00001.jpg``). The VPT protocol uses
the official splits: 1,020 / 1,020 / 6,149. Class names come from torchvision's ``Flowers102.classes``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from torchvision.datasets import Flowers102

from data_prep.fgvc import DatasetSpec, OfficialSplits, Resource, add_dataset_subcommand, prepare
from data_prep.matfile import ints, load_mat

URL_PREFIX = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"


def read_flowers(root: Path) -> OfficialSplits:
    """Official train / val / test of an extracted Flowers-102 root."""
    labels = ints(load_mat(root / "imagelabels.mat", "labels")["labels"])
    ids = load_mat(root / "setid.mat", "trnid", "valid", "tstid")

    def split(field: str) -> dict[str, int]:
        return {f"jpg/image_{i:05d}.jpg": labels[i - 1] for i in ints(ids[field])}

    names = getattr(Flowers102, "classes", None)  # added in newer torchvision releases
    return OfficialSplits(train=split("trnid"), val=split("valid"), test=split("tstid"),
                          class_names={c: names[c - 1] if names else f"flower {c}" for c in set(labels)})


FLOWERS = DatasetSpec(
    name="flowers", title="Oxford Flowers-102",
    resources=(Resource("102flowers.tgz", "52808999861908f626f3c1f4e79d11fa", URL_PREFIX + "102flowers.tgz"),
               Resource("imagelabels.mat", "e0620be6f572b9609742df49c70aed4d", URL_PREFIX + "imagelabels.mat",
                        extract=False),
               Resource("setid.mat", "a5357ecc9cb78c4bef273ce3793fc85c", URL_PREFIX + "setid.mat", extract=False)),
    image_dir="", layout=("jpg", "imagelabels.mat", "setid.mat"), read=read_flowers,
    paper_counts=(1020, 1020, 6149),
)


def prepare_flowers(root, **options) -> Path:
    """Prepares Oxford Flowers-102 in ``root``; ``options`` as :func:`data_prep.fgvc.prepare`."""
    return prepare(FLOWERS, root, **options)


def add_cli_subcommand(subparsers: argparse._SubParsersAction) -> None:
    add_dataset_subcommand(subparsers, FLOWERS)
