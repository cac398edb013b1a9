"""NABirds (Van Horn et al. 2015): 555 North American bird categories, 48,562 images, 23,929 / 24,633 official
train / test images.

Source: ``nabirds.tar.gz`` (md5 df21a9e4db349a14e2b08adfd45873bd), handed out by the Cornell Lab after accepting
its terms at https://dl.allaboutbirds.org/nabirds, so there is no automatic download: pass ``--archive``. Its
``nabirds/`` folder becomes the root; annotations are in CUB's format (image ids are UUIDs, class ids are sparse
ids of a hierarchy, of which 555 leaves have images), keys are relative to ``root/images``
(``0817/0000139e21dc4d0cbfe14cae3c85c829.jpg``). VPT split: 21,536 / 2,393 / 24,633.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from data_prep.cub import CUB_TABLES, read_cub_format
from data_prep.fgvc import DatasetSpec, Resource, add_dataset_subcommand, prepare

NABIRDS = DatasetSpec(
    name="nabirds", title="NABirds",
    resources=(Resource("nabirds.tar.gz", "df21a9e4db349a14e2b08adfd45873bd", None),),
    strip="nabirds", image_dir="images", layout=("images", *CUB_TABLES), read=read_cub_format,
    paper_counts=(21536, 2393, 24633),
    no_download="the Cornell Lab hands it out after you accept its terms at https://dl.allaboutbirds.org/nabirds",
)


def prepare_nabirds(root, **options) -> Path:
    """Prepares NABirds in ``root``; ``options`` as :func:`data_prep.fgvc.prepare`."""
    return prepare(NABIRDS, root, **options)


def add_cli_subcommand(subparsers: argparse._SubParsersAction) -> None:
    add_dataset_subcommand(subparsers, NABIRDS)
