"""``python -m data_prep vtab``: the 19-task table, the community VTAB-1k archive (fake copies in its exact layout,
as folder, zip and tar.gz), TensorFlow Datasets through a fake ``tensorflow_datasets`` module, and :func:`summary`."""
from __future__ import annotations

import io
import json
import logging
import re
import shutil
import sys
import tarfile
import types
import zipfile
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep import vtab
from data_prep.__main__ import main
from data_prep.layout import read_split
from data_prep.splits import fingerprint

SPLIT_FILES = ("train800", "val200", "train800val200", "test")


# ----------------------------------------------------------------------------- fake community archives


@cache
def solid(label: int) -> bytes:
    """An 8x8 JPEG of one colour per label (entries of a label share their bytes, as small fixtures may)."""
    buffer = io.BytesIO()
    colour = ((label * 37) % 256, (label * 91) % 256, (label * 53) % 256)
    Image.new("RGB", (8, 8), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_task(folder: Path, classes: int, n_test: int) -> dict[str, list[int]]:
    """One task folder as NOAH's get_vtab1k.py writes it: images/<split>/<i:06d>.jpg and <split>.txt."""
    labels = {"train800": [i % classes for i in range(800)], "val200": [(7 * i) % classes for i in range(200)],
              "test": [i % classes for i in range(n_test)]}
    labels["train800val200"] = labels["train800"] + labels["val200"]
    for split in SPLIT_FILES:
        (folder / "images" / split).mkdir(parents=True)
        lines = []
        for i, label in enumerate(labels[split]):
            rel = f"images/{split}/{i:06d}.jpg"
            (folder / rel).write_bytes(solid(label))
            lines.append(f"{rel} {label}\n")
        (folder / f"{split}.txt").write_text("".join(lines))
    return labels


@pytest.fixture(scope="module")
def community(tmp_path_factory):
    """The archive's folders cifar/ (CIFAR-100) and dtd/, and the labels written."""
    base = tmp_path_factory.mktemp("vtab-1k")
    labels = {"cifar100": write_task(base / "cifar", 100, 100), "dtd": write_task(base / "dtd", 47, 60)}
    return base, labels


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Another copy's names, cifar100/ and oxford_pet/, under one extra top folder."""
    base = tmp_path_factory.mktemp("variants")
    write_task(base / "vtab-1k" / "cifar100", 100, 100)
    write_task(base / "vtab-1k" / "oxford_pet", 37, 40)
    return base


def zip_folder(folder: Path, path: Path, top: str = "") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, top + file.relative_to(folder).as_posix())
    return path


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


def run_cli(args) -> int:
    return main(["vtab", *map(str, args)])


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("python -m data_prep vtab: error: ")
    return lines[0]


def check_prepared(folder: Path, labels: dict[str, list[int]], classes: int, suffix: str = "jpg") -> None:
    splits = {name: read_split(folder, name) for name in ("train", "val", "trainval", "test")}
    assert [len(splits[n]) for n in ("train", "val", "trainval")] == [800, 200, 1000]
    for name, file in (("train", "train800"), ("val", "val200"), ("test", "test")):
        assert splits[name] == {f"{file}/{i:06d}.{suffix}": y for i, y in enumerate(labels[file])}
        assert all((folder / "images" / key).is_file() for key in splits[name])
    assert splits["trainval"] == {**splits["train"], **splits["val"]}
    assert json.loads((folder / "split_fingerprints.json").read_text()) == {
        name: fingerprint(split) for name, split in splits.items()}
    names = json.loads((folder / "class_names.json").read_text())
    assert len(names) == classes and set(names) == {str(k) for k in range(classes)}
    marker = json.loads((folder / "prepared.json").read_text())
    assert marker["task"] == folder.name and marker["format_version"] == vtab.FORMAT_VERSION
    assert marker["counts"] == {"train": 800, "val": 200, "trainval": 1000, "test": len(labels["test"])}
    assert marker["group"] == vtab.TASKS[folder.name].group
    assert not list(folder.parent.glob(".data_prep-staging*"))


# ----------------------------------------------------------------------------- the table


def test_the_19_tasks_groups_and_class_counts():
    expected = {"cifar100": 100, "caltech101": 102, "dtd": 47, "oxford_flowers102": 102, "oxford_iiit_pet": 37,
                "svhn": 10, "sun397": 397, "patch_camelyon": 2, "eurosat": 10, "resisc45": 45,
                "diabetic_retinopathy": 5, "clevr_count": 8, "clevr_dist": 6, "dmlab": 6, "kitti_dist": 4,
                "dsprites_loc": 16, "dsprites_ori": 16, "smallnorb_azi": 18, "smallnorb_ele": 9}
    assert {name: task.num_classes for name, task in vtab.TASKS.items()} == expected
    assert Counter(task.group for task in vtab.TASKS.values()) == {"natural": 7, "specialized": 4, "structured": 8}
    assert vtab.tasks_in_group("natural") == list(expected)[:7]
    assert vtab.tasks_in_group("specialized") == list(expected)[7:11]
    assert vtab.GROUP_SIZES == {"natural": 7, "specialized": 4, "structured": 8}
    assert all(len(task.names()) == task.num_classes for task in vtab.TASKS.values())
    assert vtab.resolve_task("cifar").name == "cifar100" and vtab.resolve_task("oxford_pet").name == "oxford_iiit_pet"
    assert vtab.resolve_task("kitti").name == "kitti_dist"
    slices = {name: (t.tfds_builder, t.val200, t.test) for name, t in vtab.TASKS.items()}
    assert slices["cifar100"] == ("cifar100:3.*.*", "train[45000:45200]", "test")
    assert slices["caltech101"][1] == "train[2754:2954]" and slices["oxford_iiit_pet"][1] == "train[2944:3144]"
    assert slices["svhn"] == ("svhn_cropped:3.*.*", "train[65931:66131]", "test")
    assert slices["eurosat"] == ("eurosat/rgb:2.*.*", "train[16200:16400]", "train[21600:]")
    assert slices["resisc45"][1:] == ("train[18900:19100]", "train[25200:]")
    assert slices["sun397"][0] == "sun397/tfds:4.*.*" and slices["dmlab"][0] == "dmlab:2.0.1"
    assert slices["smallnorb_ele"] == ("smallnorb:2.*.*", "test[:200]", "test[50%:]")
    assert vtab.TASKS["cifar100"].train800val200 == "train[:800]+train[45000:45200]"
    assert all(t.train800 == "train[:800]" for t in vtab.TASKS.values())


def test_derived_labels():
    assert vtab.clevr_count_label({"objects": {"size": np.zeros(3)}}) == 0
    assert vtab.clevr_count_label({"objects": {"size": np.zeros(10)}}) == 7
    depths = {7.9: 0, 8.0: 0, 8.2: 1, 8.5: 1, 8.6: 2, 9.3: 3, 9.9: 4, 10.5: 5, 60.0: 5}
    for depth, label in depths.items():
        coords = np.array([[1.0, 2.0, 30.0], [4.0, 5.0, depth]])
        assert vtab.clevr_dist_label({"objects": {"pixel_coords": coords}}) == label, depth

    def kitti(types, depths):
        location = np.array([[0.0, 0.0, z] for z in depths]).reshape(-1, 3)
        return vtab.kitti_dist_label({"objects": {"type": np.array(types, dtype=np.int64), "location": location}})
    assert kitti([], []) == 3 and kitti([3, 5], [2.0, 4.0]) == 3  # pedestrians and cyclists do not count
    assert kitti([0], [5.0]) == 0 and kitti([1], [8.0]) == 0 and kitti([2], [8.1]) == 1
    assert kitti([3, 1, 0], [1.0, 19.0, 40.0]) == 1 and kitti([0], [25.0]) == 2 and kitti([0], [1200.0]) == 3
    assert [vtab.dsprites_loc_label({"label_x_position": x}) for x in (0, 1, 2, 31)] == [0, 0, 1, 15]
    assert [vtab.dsprites_ori_label({"label_orientation": o}) for o in (0, 2, 3, 5, 39)] == [0, 0, 1, 2, 15]


# ----------------------------------------------------------------------------- source A: the community archive


def test_the_archive_prepares_cifar_and_dtd(community, tmp_path, caplog):
    base, labels = community
    before = snapshot(base)
    root = tmp_path / "vtab"
    with caplog.at_level(logging.INFO):
        assert run_cli(["--root", root, "--archive", base, "--tasks", "cifar100", "dtd"]) == 0
    check_prepared(root / "cifar100", labels["cifar100"], 100)
    check_prepared(root / "dtd", labels["dtd"], 47)
    assert sorted(p.name for p in root.iterdir()) == ["cifar100", "dtd"]
    assert (root / "dtd/images/val200/000003.jpg").read_bytes() == (base / "dtd/images/val200/000003.jpg").read_bytes()
    assert not (root / "dtd/images/train800val200").exists()  # trainval.json points at train800/ and val200/
    assert snapshot(base) == before  # the user's archive is copied, never moved
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    jpeg = [w for w in warnings if "lossy JPEG" in w]
    assert len(jpeg) == 1 and jpeg[0].startswith("cifar100:") and "--tfds-data-dir" in jpeg[0]
    assert "NOAH issues #19, #28" in jpeg[0] and "\n" not in jpeg[0]
    assert not [w for w in warnings if "label statistics" in w]
    assert re.search(r"prepared dtd in .*dtd from the archive: train 800 / val 200 / trainval 1000 / test 60",
                     caplog.text)

    from e2vpt_viz.data import FGVCDataset
    dataset = FGVCDataset(root / "dtd", "test")
    assert len(dataset) == 60 and dataset.num_classes == 47

    snap = snapshot(root)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_cli(["--root", root, "--archive", base, "--tasks", "cifar", "dtd"]) == 0
    assert snapshot(root) == snap
    assert caplog.text.count("is already prepared (from the archive); nothing to do") == 2
    assert "cifar100: " in caplog.text and "dtd: " in caplog.text


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_a_zip_or_tar_of_the_archive_works(community, kind, tmp_path):
    base, labels = community
    if kind == "zip":
        archive = zip_folder(base, tmp_path / "vtab-1k.zip", top="vtab-1k/")  # one extra top-level folder
        tasks = ["cifar100", "dtd"]
    else:
        archive = tmp_path / "vtab-1k.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(base / "dtd", arcname="./dtd")
        tasks = ["dtd"]
    root = tmp_path / "root"
    assert run_cli(["--root", root, "--archive", archive, "--tasks", *tasks]) == 0
    for task in tasks:
        check_prepared(root / task, labels[task], vtab.TASKS[task].num_classes)
    assert sorted(p.name for p in root.iterdir()) == sorted(tasks) and archive.is_file()


def test_folder_name_variants_and_an_extra_top_folder(variants, tmp_path, capsys):
    root = tmp_path / "root"
    assert run_cli(["--root", root, "--archive", variants, "--tasks", "cifar", "oxford_iiit_pet"]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["cifar100", "oxford_iiit_pet"]
    assert len(read_split(root / "oxford_iiit_pet", "trainval")) == 1000
    assert run_cli(["--root", root, "--archive", variants, "--tasks", "svhn"]) == 2
    line = one_error_line(capsys)
    assert "has no folder for svhn (looked for svhn at its top and one folder down)" in line


def _drop_line(folder: Path, split: str) -> None:
    lines = (folder / f"{split}.txt").read_text().splitlines(keepends=True)
    (folder / f"{split}.txt").write_text("".join(lines[:-1]))


def _set_label(folder: Path, split: str, index: int, label: str) -> None:
    lines = (folder / f"{split}.txt").read_text().splitlines(keepends=True)
    lines[index] = f"{lines[index].split()[0]} {label}\n"
    (folder / f"{split}.txt").write_text("".join(lines))


BROKEN = {
    "missing image": (lambda f: (f / "images/val200/000003.jpg").unlink(),
                      r"dtd: .*val200.txt lists 1 images that are not in the archive \(first: images/val200/000003"),
    "bad label": (lambda f: _set_label(f, "train800", 5, "47"),
                  r"dtd: .*train800.txt line 6: label 47 is outside 0..46 \(dtd has 47 classes\)"),
    "label not an integer": (lambda f: _set_label(f, "test", 0, "x"), r"test.txt line 1: the label 'x' is not an int"),
    "wrong count": (lambda f: _drop_line(f, "val200"),
                    r"val200.txt lists 199 images; VTAB-1k's val200 has exactly 200"),
    "trainval label differs": (lambda f: _set_label(f, "train800val200", 900, "0"),
                               (r"dtd: .*train800val200.txt is not train800.txt \+ val200.txt: 1 of its 1000 "
                                r"entries have no image with the same content and label .*first: "
                                r"images/train800val200/000900")),
    "trainval image differs": (lambda f: (f / "images/train800val200/000005.jpg").write_bytes(solid(30)),
                               r"train800val200.txt is not train800.txt \+ val200.txt.*000005.jpg"),
    "split file missing": (lambda f: (f / "test.txt").unlink(), r"dtd: .*test.txt is missing"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_task_fails_in_one_line_and_leaves_nothing(case, community, tmp_path, capsys):
    base, _ = community
    archive = tmp_path / "archive"
    shutil.copytree(base / "dtd", archive / "dtd")
    shutil.copytree(base / "cifar", archive / "cifar")
    damage, message = BROKEN[case]
    damage(archive / "dtd")
    root = tmp_path / "root"
    assert run_cli(["--root", root, "--archive", archive, "--tasks", "cifar100", "dtd"]) == 2
    line = one_error_line(capsys)
    assert re.search(message, line), line
    assert not (root / "dtd").exists() and not list(root.glob(".data_prep-staging*"))
    assert (root / "cifar100" / "prepared.json").is_file()  # prepared before dtd failed, and complete
    assert run_cli(["--root", root, "--archive", archive, "--tasks", "dtd"]) == 2  # still refused, still nothing
    capsys.readouterr()
    assert not (root / "dtd").exists()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_an_archive_member_escaping_the_folder_is_refused(kind, community, tmp_path, capsys):
    base, _ = community
    members = {"dtd/train800.txt": (base / "dtd/train800.txt").read_bytes(), "../escaped.txt": b"evil"}
    archive = tmp_path / "sub" / f"vtab.{kind}"
    archive.parent.mkdir()
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(archive, "w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    root = tmp_path / "sub" / "root"
    assert run_cli(["--root", root, "--archive", archive, "--tasks", "dtd"]) == 2
    line = one_error_line(capsys)
    assert "refusing to extract" in line and "'../escaped.txt' would be written outside" in line
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "sub" / "escaped.txt").exists()
    assert not root.exists()


def test_label_statistics_warn_about_classes_missing_from_a_split(tmp_path, caplog):
    base = tmp_path / "archive"
    write_task(base / "dtd", 47, 60)
    for split, first in (("val200", 0), ("train800val200", 800)):  # val200 without class 46: relabelled 0
        lines = (base / "dtd" / f"{split}.txt").read_text().splitlines()
        for i in range(first, len(lines)):
            rel, label = lines[i].split()
            if label == "46":
                lines[i] = f"{rel} 0"
                (base / "dtd" / rel).write_bytes(solid(0))
        (base / "dtd" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        vtab.prepare_vtab(tmp_path / "root", archive=base, tasks=["dtd"])
    warnings = [r.getMessage() for r in caplog.records if "label statistics" in r.getMessage()]
    assert len(warnings) == 1 and "val200 lacks 1 (e.g. 46)" in warnings[0] and "train800 lacks" not in warnings[0]


def test_cli_usage_errors_are_one_line(community, tmp_path, capsys):
    base, _ = community
    assert run_cli(["--root", tmp_path / "r", "--archive", base, "--tasks", "cifar10"]) == 2
    line = one_error_line(capsys)
    assert "unknown VTAB task 'cifar10'" in line and "cifar100 (also cifar)" in line
    assert "oxford_iiit_pet (also oxford_pet)" in line and "kitti_dist (also kitti)" in line
    assert run_cli(["--root", tmp_path / "r", "--archive", tmp_path / "nowhere"]) == 2
    assert "--archive" in one_error_line(capsys)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["--root", tmp_path / "r", "--archive", base, "--tfds-data-dir", tmp_path])
    assert exit_info.value.code == 2 and "not allowed with argument" in one_error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_a_foreign_folder_in_the_root_is_not_touched(community, tmp_path, capsys):
    base, _ = community
    root = tmp_path / "root"
    (root / "dtd").mkdir(parents=True)
    (root / "dtd" / "notes.txt").write_text("mine")
    assert run_cli(["--root", root, "--archive", base, "--tasks", "dtd"]) == 2
    assert "is not a prepared VTAB-1k task (no prepared.json)" in one_error_line(capsys)
    assert [p.name for p in (root / "dtd").iterdir()] == ["notes.txt"]


# ----------------------------------------------------------------------------- source B: TensorFlow Datasets


TRAIN_SIZES = {"cifar100:3.*.*": 50000, "clevr:3.*.*": 70000, "dsprites:2.*.*": 737280}
CLEVR_DEPTHS = (5.0, 8.2, 8.7, 9.2, 9.7, 50.0)  # labels 0..5
KITTI_CASES = (([0], [5.0], 0), ([3, 1], [2.0, 15.0], 1), ([2], [30.0], 2), ([], [], 3))


def _count(split: str) -> int:
    match = re.fullmatch(r"\w+\[(\d*):(\d*)\]", split)
    if match and match.group(1) and match.group(2):
        return int(match.group(2)) - int(match.group(1))
    return int(match.group(2)) if match and match.group(2) else 12


def _example(builder: str, i: int) -> dict:
    rng = np.random.default_rng(i)
    rgb = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    if builder.startswith("cifar100"):
        return {"image": rgb, "label": np.int64(i % 100), "coarse_label": np.int64(i % 20)}
    if builder.startswith("dtd"):
        return {"image": rgb, "label": np.int64(i % 47), "file_name": b"x.jpg"}
    if builder.startswith("smallnorb"):
        return {"image": np.full((4, 4, 1), i % 256, dtype=np.uint8), "image2": np.zeros((4, 4, 1), np.uint8),
                "label_azimuth": np.int64(i % 18), "label_elevation": np.int64(i % 9)}
    if builder.startswith("clevr"):
        n = 3 + i % 8
        coords = np.tile(np.array([[1.0, 2.0, 60.0]]), (n, 1))
        coords[i % n, 2] = CLEVR_DEPTHS[i % 6]
        return {"image": rgb, "objects": {"size": np.zeros(n, np.int64), "pixel_coords": coords}}
    if builder.startswith("kitti"):
        types, depths, _ = KITTI_CASES[i % 4]
        location = np.array([[0.0, 1.0, z] for z in depths], dtype=np.float32).reshape(-1, 3)
        return {"image": rgb, "objects": {"type": np.array(types, np.int64), "location": location}}
    if builder.startswith("dsprites"):
        return {"image": (rng.random((4, 4, 1)) > 0.5).astype(np.uint8), "label_x_position": np.int64(i % 32),
                "label_orientation": np.int64(i % 40)}
    raise AssertionError(builder)


@pytest.fixture
def fake_tfds(monkeypatch):
    """A stand-in for tensorflow_datasets: ``load`` records (builder, split) and returns dict examples."""
    module = types.ModuleType("tensorflow_datasets")
    module.requests = []
    module.train_sizes = dict(TRAIN_SIZES)

    def load(name, split, data_dir, shuffle_files):
        assert shuffle_files is False and Path(data_dir).name == "tfds"
        module.requests.append((name, split))
        return [_example(name, i) for i in range(_count(split))]

    def builder(name, data_dir):
        splits = {"train": types.SimpleNamespace(num_examples=module.train_sizes.get(name, 1000))}
        features = {"label": types.SimpleNamespace(names=[f"texture {k}" for k in range(47)])}
        return types.SimpleNamespace(info=types.SimpleNamespace(splits=splits, features=features))

    module.load, module.builder, module.as_numpy = load, builder, iter
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
    return module


def test_tfds_requests_the_vtab_slices_and_derives_labels(fake_tfds, tmp_path):
    root = tmp_path / "root"
    tasks = ["cifar100", "dtd", "smallnorb_azi", "clevr_count", "kitti_dist", "dsprites_loc"]
    assert run_cli(["--root", root, "--tfds-data-dir", tmp_path / "tfds", "--tasks", *tasks]) == 0
    assert fake_tfds.requests == [
        ("cifar100:3.*.*", "train[:800]"), ("cifar100:3.*.*", "train[45000:45200]"), ("cifar100:3.*.*", "test"),
        ("dtd:3.*.*", "train[:800]"), ("dtd:3.*.*", "validation[:200]"), ("dtd:3.*.*", "test"),
        ("smallnorb:2.*.*", "train[:800]"), ("smallnorb:2.*.*", "test[:200]"), ("smallnorb:2.*.*", "test[50%:]"),
        ("clevr:3.*.*", "train[:800]"), ("clevr:3.*.*", "train[63000:63200]"), ("clevr:3.*.*", "validation"),
        ("kitti:3.2.0", "train[:800]"), ("kitti:3.2.0", "validation[:200]"), ("kitti:3.2.0", "test"),
        ("dsprites:2.*.*", "train[:800]"), ("dsprites:2.*.*", "train[589824:590024]"),
        ("dsprites:2.*.*", "train[663552:]")]
    expected = {"cifar100": lambda i: i % 100, "dtd": lambda i: i % 47, "smallnorb_azi": lambda i: i % 18,
                "clevr_count": lambda i: i % 8, "kitti_dist": lambda i: KITTI_CASES[i % 4][2],
                "dsprites_loc": lambda i: (i % 32) // 2}
    for task, label in expected.items():
        folder = root / task
        train = read_split(folder, "train")
        assert train == {f"train800/{i:06d}.png": label(i) for i in range(800)}, task
        assert len(read_split(folder, "val")) == 200 and len(read_split(folder, "trainval")) == 1000
        assert read_split(folder, "test") == {f"test/{i:06d}.png": label(i) for i in range(12)}
        marker = json.loads((folder / "prepared.json").read_text())
        assert marker["source"] == "tfds" and marker["image_format"] == "png"
        assert marker["counts"] == {"train": 800, "val": 200, "trainval": 1000, "test": 12}
    with Image.open(root / "cifar100/images/val200/000007.png") as image:  # lossless
        assert image.mode == "RGB" and np.array_equal(np.asarray(image), _example("cifar100", 7)["image"])
    with Image.open(root / "dsprites_loc/images/train800/000003.png") as image:  # grey x 255, tiled to RGB
        pixels = np.asarray(image)
    assert pixels.shape == (4, 4, 3) and set(np.unique(pixels)) <= {0, 255}
    assert np.array_equal(pixels[..., 0], _example("dsprites", 3)["image"][..., 0] * 255)
    assert np.array_equal(pixels[..., 0], pixels[..., 2])
    assert json.loads((root / "dtd/class_names.json").read_text())["3"] == "texture 3"  # TFDS's names
    assert json.loads((root / "clevr_count/class_names.json").read_text())["0"] == "3 objects"
    assert json.loads((root / "cifar100/class_names.json").read_text())["0"] == "class 0"  # 47 names != 100


def test_clevr_dist_labels_from_tfds(fake_tfds, tmp_path):
    vtab.prepare_vtab(tmp_path / "root", tfds_data_dir=tmp_path / "tfds", tasks=["clevr_dist"])
    train = read_split(tmp_path / "root" / "clevr_dist", "train")
    assert train == {f"train800/{i:06d}.png": i % 6 for i in range(800)}


def test_tfds_with_another_split_size_is_refused(fake_tfds, tmp_path, capsys):
    fake_tfds.train_sizes["cifar100:3.*.*"] = 60000
    assert run_cli(["--root", tmp_path / "root", "--tfds-data-dir", tmp_path / "tfds", "--tasks", "cifar"]) == 2
    line = one_error_line(capsys)
    assert "cifar100: TFDS cifar100:3.*.* has 60000 'train' examples" in line and "assume 50000" in line
    assert "cifar100:3.0.2" in line and not (tmp_path / "root").exists()


def test_without_tensorflow_datasets_the_error_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import raises ImportError
    assert run_cli(["--root", tmp_path / "root", "--tfds-data-dir", tmp_path, "--tasks", "dtd"]) == 2
    line = one_error_line(capsys)
    assert "pip install tensorflow-datasets tensorflow" in line and "--archive" in line
    assert not (tmp_path / "root").exists()


# ----------------------------------------------------------------------------- summary


# VPT-deep, ViT-B/16 in21k, VTAB-1k per-task test accuracy (%), VPT (arXiv 2203.12119) as republished with one decimal
# in the per-task tables of later papers (e.g. V-PETL's README); the group means from these rows reproduce VPT's
# Table 1 (78.48 / 82.43 / 54.98) to within the one-decimal rounding, and the flat mean is the published 69.43.
VPT_DEEP = {"cifar100": 78.8, "caltech101": 90.8, "dtd": 65.8, "oxford_flowers102": 98.0, "oxford_iiit_pet": 88.3,
            "svhn": 78.1, "sun397": 49.6, "patch_camelyon": 81.8, "eurosat": 96.1, "resisc45": 83.4,
            "diabetic_retinopathy": 68.4, "clevr_count": 68.5, "clevr_dist": 60.0, "dmlab": 46.5, "kitti_dist": 72.8,
            "dsprites_loc": 73.6, "dsprites_ori": 47.9, "smallnorb_azi": 32.9, "smallnorb_ele": 37.8}


def test_summary_reproduces_the_published_vpt_deep_means():
    result = vtab.summary(VPT_DEEP)
    natural, specialized, structured = (result[g]["value"] for g in vtab.GROUPS)
    assert natural == pytest.approx(549.4 / 7) and specialized == pytest.approx(329.7 / 4)
    assert structured == pytest.approx(55.0)
    for group, paper in zip(vtab.GROUPS, (78.48, 82.43, 54.98)):
        assert abs(result[group]["value"] - paper) < 0.03 and result[group]["complete"]
    assert result["mean_of_groups"]["value"] == pytest.approx((549.4 / 7 + 329.7 / 4 + 55.0) / 3)
    assert round(result["mean_of_groups"]["value"], 2) == 71.97  # 71.96 from the rounded group means
    assert result["flat_mean"]["value"] == pytest.approx(1319.1 / 19)
    assert round(result["flat_mean"]["value"], 2) == 69.43
    assert "group means" in result["mean_of_groups"]["label"] and "19 tasks" in result["flat_mean"]["label"]
    assert result["missing"] == []


def test_summary_reports_incomplete_groups_instead_of_averaging_fewer_tasks():
    partial = {("cifar" if k == "cifar100" else k): v for k, v in VPT_DEEP.items() if k != "dmlab"}
    result = vtab.summary(partial)
    assert result["natural"]["value"] == pytest.approx(549.4 / 7)  # 'cifar' counts as cifar100
    assert result["structured"]["value"] is None and not result["structured"]["complete"]
    assert result["structured"]["missing"] == ["dmlab"] and result["structured"]["tasks"] == 7
    assert result["structured"]["partial_value"] == pytest.approx((440.0 - 46.5) / 7)
    assert result["mean_of_groups"]["value"] is None and result["flat_mean"]["value"] is None
    assert result["missing"] == ["dmlab"]
    with pytest.raises(ValueError, match="unknown VTAB task 'imagenet'"):
        vtab.summary({"imagenet": 80.0})
    with pytest.raises(ValueError, match="both give cifar100"):
        vtab.summary({"cifar": 1.0, "cifar100": 2.0})


def test_a_prepared_task_loads_with_every_class_and_its_trainval_split(tmp_path):
    """FGVCDataset reads a VTAB root: trainval (train800 + val200, what the final runs train on) and every class of
    the task, also one whose only images are in test (SUN397 has 397 classes and 800 training images)."""
    from e2vpt_viz.data import FGVCDataset

    base = tmp_path / "archive"
    write_task(base / "dtd", 47, 60)
    for split in ("train800", "val200", "train800val200"):  # class 46 only in test
        lines = (base / "dtd" / f"{split}.txt").read_text().splitlines()
        lines = [line.replace(" 46", " 0") if line.endswith(" 46") else line for line in lines]
        (base / "dtd" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            rel, label = line.split()
            if label == "0":
                (base / "dtd" / rel).write_bytes(solid(0))
    vtab.prepare_vtab(tmp_path / "root", archive=base, tasks=["dtd"])
    root = tmp_path / "root" / "dtd"
    sizes = {split: len(FGVCDataset(root, split)) for split in ("train", "val", "trainval", "test")}
    assert sizes == {"train": 800, "val": 200, "trainval": 1000, "test": 60}
    test = FGVCDataset(root, "test")
    assert test.num_classes == 47 and test.class_to_index[46] in {label for _, label in test.samples}
    assert FGVCDataset(root, "trainval").num_classes == 47
    with pytest.raises(ValueError, match="split must be one of"):
        FGVCDataset(root, "train800")
