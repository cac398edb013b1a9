"""The offline VTAB-1k-style task ``starter_distance`` (data_prep.vtab.OFFLINE_TASKS): synthetic birds from the
starter's generator labelled by their beak-tail distance in 4 bins, prepared without any download. Generated once
per module (about 7 s on one core) through the CLI without a source; one more generation checks a run that mixes it
with a real task from an archive."""
from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from data_prep import vtab
from data_prep.layout import read_cub_table, read_split
from data_prep.splits import fingerprint
from test_data_prep_vtab import one_error_line, run_cli, snapshot

TASK = "starter_distance"
SPLITS = ("train", "val", "trainval", "test")


def distances(folder: Path) -> dict[str, float]:
    """{image key: beak-tail distance} recomputed from the task's own images.txt, parts.txt and part_locs.txt."""
    keys = read_cub_table(folder / "images.txt")  # {image id: key}
    part_ids = {name: part_id for part_id, name in read_cub_table(folder / "parts" / "parts.txt").items()}
    beak, tail = part_ids["beak"], part_ids["tail"]
    points: dict[str, dict[str, tuple[float, float]]] = {image_id: {} for image_id in keys}
    for line in (folder / "parts" / "part_locs.txt").read_text().splitlines():
        image_id, part_id, x, y, visible = line.split()
        if part_id in (beak, tail):
            assert visible == "1", line  # both parts are always visible in this generator
            points[image_id][part_id] = (float(x), float(y))
    return {keys[i]: math.dist(p[beak], p[tail]) for i, p in points.items()}


def expected_label(distance: float) -> int:
    """The documented rule, written out: the number of interior edges at or below the distance."""
    return sum(distance >= edge for edge in vtab.STARTER_DISTANCE_EDGES[1:-1])


@pytest.fixture
def prepared(vtab_offline_root):
    """``python -m data_prep vtab --root R --tasks starter_distance`` (no source; tests/conftest.py), and the seconds
    it took."""
    return vtab_offline_root


def test_the_cli_prepares_it_without_a_source_in_vtab_1k_shape(prepared):
    root, seconds = prepared
    folder = root / TASK
    assert seconds < 30, f"preparation took {seconds:.1f} s"
    splits = {name: read_split(folder, name) for name in SPLITS}
    assert {name: len(split) for name, split in splits.items()} == {
        "train": 800, "val": 200, "trainval": 1000, "test": 1000}
    assert splits["trainval"] == {**splits["train"], **splits["val"]}
    assert not set(splits["train"]) & set(splits["val"]) and not set(splits["trainval"]) & set(splits["test"])
    assert all(key.startswith("train800/") for key in splits["train"])
    assert all(key.startswith("val200/") for key in splits["val"])
    assert all(key.startswith("test/") for key in splits["test"])
    for name in ("train", "val", "test"):
        assert {label for label in splits[name].values()} == {0, 1, 2, 3}
    for key in [*list(splits["train"])[:3], *list(splits["test"])[-3:]]:
        with Image.open(folder / "images" / key) as image:
            assert image.size == (80, 80) and image.mode == "RGB"
    assert len(list((folder / "images").rglob("*.png"))) == 2000
    assert json.loads((folder / "split_fingerprints.json").read_text()) == {
        name: fingerprint(split) for name, split in splits.items()}
    assert json.loads((folder / "class_names.json").read_text()) == {
        "0": "beak-tail 28-32 px", "1": "beak-tail 32-35.5 px", "2": "beak-tail 35.5-39.5 px",
        "3": "beak-tail 39.5-44 px"}
    marker = json.loads((folder / "prepared.json").read_text())
    assert marker["benchmark"] == "vtab-1k" and marker["task"] == TASK and marker["group"] == "structured"
    assert marker["source"] == "synthetic" and marker["generator"] == "data_prep.synthetic"
    assert marker["generator_seed"] == vtab.STARTER_DISTANCE_SEED
    assert marker["bin_edges_px"] == list(vtab.STARTER_DISTANCE_EDGES) and marker["parts"] == ["beak", "tail"]
    assert marker["counts"] == {"train": 800, "val": 200, "trainval": 1000, "test": 1000}
    assert marker["classes"] == 4 and marker["skipped_images"] == 0 and marker["vtab_1k_task"] is False
    assert marker["synthetic_spec"]["image_size"] == 80 and marker["synthetic_spec"]["scale_range"] == [0.75, 1.15]
    assert not list(root.glob(".data_prep-staging*")) and sorted(p.name for p in root.iterdir()) == [TASK]


def test_labels_are_the_binned_beak_tail_distance_of_the_part_locations(prepared):
    root, _ = prepared
    folder = root / TASK
    measured = distances(folder)
    stored = {key: label for name in ("train", "val", "test") for key, label in read_split(folder, name).items()}
    assert set(measured) == set(stored)
    assert all(expected_label(d) == stored[key] for key, d in measured.items())
    # The generator's scale range U(0.75, 1.15) x 37.59 px keeps every distance inside the outer edges.
    assert 28.0 < min(measured.values()) < 29.0 and 42.5 < max(measured.values()) < 44.0
    # A few by hand, through the loader's part annotations too.
    from e2vpt_viz.data import FGVCDataset
    train = FGVCDataset(folder, "train")
    beak, tail = train.part_names.index("beak"), train.part_names.index("tail")
    for index in (0, 1, 399, 799):
        parts = train.parts(index)
        distance = math.hypot(*(parts[beak, :2] - parts[tail, :2]))
        assert train.samples[index][1] == vtab.starter_distance_label(distance) == expected_label(distance)
    assert [vtab.starter_distance_label(d) for d in (10.0, 31.99, 32.0, 35.5, 39.49, 39.5, 60.0)] == [
        0, 0, 1, 2, 2, 3, 3]
    assert vtab.starter_distance({"beak": (0.0, 0.0), "tail": None}) is None


def test_the_four_classes_are_roughly_balanced(prepared, record_property):
    root, _ = prepared
    folder = root / TASK
    for name in ("train", "val", "test"):
        labels = read_split(folder, name).values()
        shares = {k: n / len(labels) for k, n in sorted(Counter(labels).items())}
        record_property(f"{name}_class_shares", shares)
        print(name, {k: f"{100 * v:.1f}%" for k, v in shares.items()})
        low, high = (0.10, 0.40) if name != "train" else (0.20, 0.30)
        assert set(shares) == {0, 1, 2, 3} and all(low <= share <= high for share in shares.values()), (name, shares)


def test_a_second_run_changes_nothing(prepared):
    root, _ = prepared
    before = snapshot(root)
    assert vtab.prepare_vtab(root, tasks=[TASK]) == {TASK: root / TASK}  # Python, no source
    assert run_cli(["--root", root, "--tasks", "starter-distance"]) == 0
    assert snapshot(root) == before


def test_a_folder_generated_with_other_settings_is_refused_not_replaced(prepared, tmp_path, capsys):
    first, _ = prepared
    root = tmp_path / "root"
    shutil.copytree(first / TASK, root / TASK)
    marker = json.loads((root / TASK / "prepared.json").read_text())
    (root / TASK / "prepared.json").write_text(json.dumps({**marker, "bin_edges_px": [0, 10, 20, 30, 40]}))
    before = snapshot(root)
    assert run_cli(["--root", root, "--tasks", TASK]) == 2
    assert "generated with other settings" in one_error_line(capsys)
    assert snapshot(root) == before


def test_a_real_task_without_a_source_is_refused_in_one_line(tmp_path, capsys):
    root = tmp_path / "root"
    for tasks in (["--tasks", "dtd"], ["--tasks", TASK, "dtd"], []):
        assert run_cli(["--root", root, *tasks]) == 2
        line = one_error_line(capsys)
        assert "pass exactly one source: --archive" in line and "--tfds-data-dir" in line
    with pytest.raises(ValueError, match="pass exactly one source"):
        vtab.prepare_vtab(root, tasks=["kitti"])
    with pytest.raises(ValueError, match="pass exactly one source"):
        vtab.prepare_vtab(root, archive=tmp_path, tfds_data_dir=tmp_path, tasks=[TASK])
    assert run_cli(["--root", root, "--tasks", "starter_dist"]) == 2
    line = one_error_line(capsys)
    assert "unknown VTAB task 'starter_dist'" in line and "offline" in line and TASK in line
    assert not root.exists()


def write_dtd(folder: Path) -> None:
    """A community-archive task folder for DTD (47 classes), 8x8 JPEGs, as NOAH's get_vtab1k.py lays it out."""
    labels = {"train800": [i % 47 for i in range(800)], "val200": [i % 47 for i in range(200)],
              "test": [i % 47 for i in range(60)]}
    labels["train800val200"] = labels["train800"] + labels["val200"]
    for split, split_labels in labels.items():
        (folder / "images" / split).mkdir(parents=True)
        lines = []
        for i, label in enumerate(split_labels):
            rel = f"images/{split}/{i:06d}.jpg"
            Image.new("RGB", (8, 8), (label * 5, 255 - label * 5, 128)).save(folder / rel, format="JPEG")
            lines.append(f"{rel} {label}\n")
        (folder / f"{split}.txt").write_text("".join(lines))


def test_with_a_real_task_and_a_source_both_are_prepared(prepared, tmp_path):
    first, _ = prepared
    archive = tmp_path / "vtab-1k"
    write_dtd(archive / "dtd")
    root = tmp_path / "root"
    assert run_cli(["--root", root, "--archive", archive, "--tasks", "dtd", TASK]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["dtd", TASK]
    assert json.loads((root / "dtd" / "prepared.json").read_text())["source"] == "archive"
    assert json.loads((root / TASK / "prepared.json").read_text())["source"] == "synthetic"
    # Deterministic: the same files as the run without a source, byte for byte.
    assert {k: v[1] for k, v in snapshot(root / TASK).items()} == {k: v[1] for k, v in snapshot(first / TASK).items()}


def test_it_is_not_one_of_the_19_tasks_and_summary_reports_it_apart():
    assert len(vtab.TASKS) == 19 and TASK not in vtab.TASKS and TASK in vtab.OFFLINE_TASKS
    assert [t.name for t in vtab.resolve_tasks(None)] == list(vtab.TASKS)
    assert vtab.GROUP_SIZES == {"natural": 7, "specialized": 4, "structured": 8}
    assert TASK not in vtab.tasks_in_group("structured")
    assert vtab.resolve_task("starter-distance") is vtab.OFFLINE_TASKS[TASK]
    assert [t.name for t in vtab.resolve_tasks(["dtd", TASK, "starter_distance"])] == ["dtd", TASK]
    accuracies = {name: 50.0 + i for i, name in enumerate(vtab.TASKS)}
    plain = vtab.summary(accuracies)
    with_offline = vtab.summary({**accuracies, TASK: 99.0})
    assert with_offline["offline"] == {TASK: 99.0} and plain["offline"] == {}
    for key in (*vtab.GROUPS, "mean_of_groups", "flat_mean"):
        assert with_offline[key] == plain[key], key
    assert with_offline["structured"]["tasks"] == 8 and with_offline["flat_mean"]["value"] == pytest.approx(59.0)
    alone = vtab.summary({TASK: 80.0})
    assert alone["offline"] == {TASK: 80.0} and alone["flat_mean"]["value"] is None
    assert len(alone["missing"]) == 19 and alone["structured"]["partial_value"] is None
    with pytest.raises(ValueError, match="both give starter_distance"):
        vtab.summary({TASK: 1.0, "starter-distance": 2.0})


def test_fgvc_dataset_reads_every_split(prepared):
    from e2vpt_viz.data import FGVCDataset

    root, _ = prepared
    names = ["beak-tail 28-32 px", "beak-tail 32-35.5 px", "beak-tail 35.5-39.5 px", "beak-tail 39.5-44 px"]
    sizes = {}
    for split in SPLITS:
        dataset = FGVCDataset(root / TASK, split)
        sizes[split] = len(dataset)
        assert dataset.num_classes == 4 and dataset.class_names == names
        assert dataset.missing_files() == []
    assert sizes == {"train": 800, "val": 200, "trainval": 1000, "test": 1000}
    image, label = FGVCDataset(root / TASK, "test")[0]
    assert image.size == (80, 80) and label in range(4)
