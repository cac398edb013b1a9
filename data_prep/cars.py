"""Stanford Cars (Krause et al. 2013): 196 car models, 16,185 images, 8,144 / 8,041 official train / test.

Sources: ``car_ims.tgz`` (``car_ims/000001.jpg`` ...; md5 d5c8f0aa497503f355e17dc7886c3f14) and ``cars_annos.mat``
(md5 b407c6086d669747186bd1d764ff9dbc; struct ``annotations`` with ``relative_im_path``, ``bbox_x1..y2``,
``class`` (1-based), ``test`` (1 = test), and ``class_names``). The Stanford links are dead and torchvision dropped
the download, so pass both files with ``--archive`` (or a mirror with ``--url``); they are md5-checked.
Keys are relative to the root (``car_ims/000001.jpg``). VPT split: 7,329 / 815 / 8,041.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from data_prep.fgvc import DatasetSpec, OfficialSplits, Resource, add_dataset_subcommand, prepare
from data_prep.matfile import ints, load_mat, strings


def read_cars(root: Path) -> OfficialSplits:
    """Official train / test of an extracted Stanford Cars root (cars_annos.mat layout)."""
    content = load_mat(root / "cars_annos.mat", "annotations", "class_names")
    annotations = content["annotations"]
    paths, labels = strings(annotations["relative_im_path"]), ints(annotations["class"])
    is_test = ints(annotations["test"])
    splits: tuple[dict[str, int], dict[str, int]] = ({}, {})
    for path, label, test in zip(paths, labels, is_test):
        splits[test][path] = label
    names = strings(content["class_names"])
    return OfficialSplits(train=splits[0], test=splits[1], class_names={i: n for i, n in enumerate(names, start=1)})


CARS = DatasetSpec(
    name="cars", title="Stanford Cars",
    resources=(Resource("car_ims.tgz", "d5c8f0aa497503f355e17dc7886c3f14", None),
               Resource("cars_annos.mat", "b407c6086d669747186bd1d764ff9dbc", None, extract=False)),
    image_dir="", layout=("car_ims", "cars_annos.mat"), read=read_cars,
    paper_counts=(7329, 815, 8041),
    no_download="the official Stanford links are dead and torchvision no longer downloads it",
)


def prepare_cars(root, **options) -> Path:
    """Prepares Stanford Cars in ``root``; ``options`` as :func:`data_prep.fgvc.prepare`."""
    return prepare(CARS, root, **options)


def add_cli_subcommand(subparsers: argparse._SubParsersAction) -> None:
    add_dataset_subcommand(subparsers, CARS)
