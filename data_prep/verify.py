"""``python -m data_prep verify --root DIR``: opens and decodes every image of every split of a prepared root
(or subset folder), lists the unreadable ones and fails if there are any."""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from data_prep.layout import SPLITS, UNREADABLE_IMAGE_ERRORS, image_paths, load_rgb, source_root

logger = logging.getLogger(__name__)


class UnreadableImagesError(OSError):
    """Some images of a root cannot be decoded; the message says how many and how to fix them."""


def _problem(path: Path) -> Optional[str]:
    """None if ``path`` decodes, else the error."""
    try:
        load_rgb(path)  # decodes the file as training does (and refuses decompression bombs before decoding)
    except UNREADABLE_IMAGE_ERRORS as error:
        return f"{type(error).__name__}: {error}"
    return None


def verify_root(root: Path, workers: int = 4) -> list[tuple[Path, str]]:
    """Decodes every image of every split of ``root``; returns [(path, error)] of the unreadable ones, sorted."""
    paths = sorted({path for split in SPLITS for path in image_paths(root, split)})
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes without the GIL
        problems = list(tqdm(pool.map(_problem, paths), total=len(paths), desc="verifying", unit=" images",
                             leave=False))
    logger.info("checked %d images of %s", len(paths), root)
    return [(path, problem) for path, problem in zip(paths, problems) if problem is not None]


def _run_cli(args: argparse.Namespace) -> None:
    bad = verify_root(args.root, args.workers)
    for path, problem in bad:
        logger.error("unreadable: %s (%s)", path, problem)
    if bad:
        marker = source_root(args.root) / "prepared.json"
        dataset = json.loads(marker.read_text())["dataset"] if marker.is_file() else "<dataset>"
        raise UnreadableImagesError(
            f"{len(bad)} images in {args.root} cannot be read (listed above); replace them from the original "
            f"archive, e.g. `python -m data_prep {dataset} --root NEW_ROOT --archive ARCHIVE`")
    logger.info("all images of %s can be read", args.root)


def add_cli_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``verify`` with the ``python -m data_prep`` parser."""
    parser = subparsers.add_parser("verify", help="check that every image of a prepared root can be read",
                                   description="Decode every image of train/val/test and list unreadable ones.")
    parser.add_argument("--root", required=True, type=Path, help="prepared dataset root or subset folder")
    parser.add_argument("--workers", type=int, default=4, help="decoding threads (default 4)")
    parser.set_defaults(run=_run_cli)
