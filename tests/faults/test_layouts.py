"""Case 8: dataset layouts a student gets wrong (a missing or broken split file, an empty class, class ids out of
range, a key listed twice, the wrong folder) stop with one message that says what to fix."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from e2vpt_viz.experiments.cli import main
from e2vpt_viz.data import DatasetLayoutError, FGVCDataset
from e2vpt_viz.experiments.fewshot import source_loaders

from .conftest import TRAIN, run_args


@pytest.fixture
def root(fault_root, tmp_path) -> Path:
    """A copy of the tiny starter root (3 classes named in classes.txt) to break."""
    return Path(shutil.copytree(fault_root, tmp_path / "tiny"))


def edit(root: Path, split: str, change) -> dict:
    entries = json.loads((root / f"{split}.json").read_text())
    entries = change(entries)
    (root / f"{split}.json").write_text(json.dumps(entries))
    return entries


def first_key(root: Path, split: str = "train") -> str:
    return next(iter(json.loads((root / f"{split}.json").read_text())))


def broken(root: Path, case: str) -> tuple[Path, str]:
    """Break ``root`` one way; (the root to pass, the message expected)."""
    if case == "missing-split":
        (root / "val.json").unlink()
        return root, r"is not an FGVC dataset root: val.json is missing. Expected train.json, val.json and test.json"
    if case == "empty-split":
        (root / "test.json").write_text("{}")
        return root, r"test.json in .* lists no images"
    if case == "not-json":
        text = (root / "train.json").read_text()
        (root / "train.json").write_text(text[: len(text) // 2])
        return root, r"train.json is not valid JSON \(.*\); re-create it"
    if case == "empty-class":  # class 2 has val images but no training image
        edit(root, "train", lambda e: {k: v for k, v in e.items() if v != 2})
        return root, (r"val.json in .* has images of classes \[2\], which have no training images \(empty classes in "
                      r"train.json\)")
    if case == "class-out-of-range":
        key = first_key(root)
        edit(root, "train", lambda e: {**e, key: 7})
        return root, r"train.json in .* uses class ids \[7\] outside the 3 named classes \(0..2\)"
    if case == "negative-class":
        key = first_key(root)
        edit(root, "train", lambda e: {**e, key: -1})
        return root, rf"train.json gives '{key}' the class -1; class ids must be integers >= 0"
    if case == "duplicate-key":
        key, text = first_key(root), (root / "train.json").read_text()
        (root / "train.json").write_text(text.rstrip()[:-1] + f', "{key}": 2}}')
        return root, rf"train.json lists '{key}' twice \(classes 0 and 2\); each image may appear once"
    if case == "parent-folder":  # data.root=data instead of data.root=data/tiny
        return root.parent, rf"is not an FGVC dataset root: train.json is missing.* It holds {root}: pass that folder"
    if case == "images-folder":  # data.root=data/tiny/images
        return root / "images", rf"train.json is missing.* {root} holds train.json: pass that folder"
    raise ValueError(case)


CASES = ["missing-split", "empty-split", "not-json", "empty-class", "class-out-of-range", "negative-class",
         "duplicate-key", "parent-folder", "images-folder"]


@pytest.mark.parametrize("case", CASES)
def test_bad_layouts_stop_with_a_message_saying_what_to_fix(case, root, tmp_path, capsys, outcome):
    """8 · missing split file, empty class, class id out of range, duplicate key, wrong folder → one clear line"""
    passed, expected = broken(root, case)
    assert main([*TRAIN, *run_args(passed, tmp_path / "out"), "data.synthetic=false"]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in message
    found = re.search(expected, message)
    assert found, message
    assert not (tmp_path / "out").exists()  # nothing was written
    outcome("error: …" + found.group(0).replace(str(tmp_path), "~")[-140:])


def test_a_source_folder_with_an_empty_or_missing_class_is_refused(tmp_path, fault_root, outcome):
    """8b · PVP source in ImageNet format: an empty class folder, or val/ lacking a class of train/ → clear message"""
    image = next((fault_root / "images").rglob("*.png")).read_bytes()
    for split in ("train", "val"):
        for name in ("albatross", "finch", "wren"):
            (tmp_path / split / name).mkdir(parents=True)
            (tmp_path / split / name / "1.png").write_bytes(image)
    (tmp_path / "train" / "finch" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match="Found no valid file for the classes finch"):
        source_loaders(tmp_path, 32, 4)
    (tmp_path / "train" / "finch" / "1.png").write_bytes(image)
    shutil.rmtree(tmp_path / "val" / "finch")  # ImageFolder would number val's classes 0, 1: wren's label shifts
    with pytest.raises(DatasetLayoutError, match=r"val/ lacks the class folders \['finch'\] of train/ and has \[\] "
                                                 r"that train/ lacks; both need the same class folders"):
        source_loaders(tmp_path, 32, 4)
    outcome("empty class: 'Found no valid file for the classes finch'; missing val class: refused instead of "
            "silently shifting val labels")


def test_a_good_root_still_loads(root, outcome):
    """8c · control: the intact root loads every split"""
    sizes = [len(FGVCDataset(root, split)) for split in ("train", "val", "test")]
    assert sizes == [12, 3, 6]
    outcome(f"train/val/test {sizes}")
