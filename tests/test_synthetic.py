"""Tests for data_prep.synthetic: CUB layout, splits, determinism, species disjointness, keypoints, idempotence, CLI."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep import synthetic
from data_prep.__main__ import main
from data_prep.synthetic import SyntheticSpec, count_species, draw_species, generate_synthetic
from data_prep.synthetic_render import ATTRIBUTES, COLORS, EYE_COLOR, PART_NAMES

SMALL = {"num_classes": 5, "train_per_class": 3, "val_per_class": 2, "test_per_class": 3}
# Species differ in crown, beak and breast colour, so keypoints can be checked against known part colours.
COLOURFUL = {"target_attributes": ("crown_color", "beak_color", "breast_color", "wing_color"),
             "target_nuisance": ("tail_color",)}


def read_table(path: Path) -> list[list[str]]:
    """Whitespace-split rows of a CUB text file (the last column may contain spaces only in classes.txt/parts.txt)."""
    return [line.split(" ") for line in path.read_text().splitlines()]


def tree_digest(root: Path) -> str:
    """SHA-256 over every file's relative path and bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def part_locations(root: Path) -> dict[int, dict[str, tuple[float, float, int]]]:
    """image id -> part name -> (x, y, visible)."""
    locations: dict[int, dict[str, tuple[float, float, int]]] = {}
    for image_id, part_id, x, y, visible in read_table(root / "parts" / "part_locs.txt"):
        locations.setdefault(int(image_id), {})[PART_NAMES[int(part_id) - 1]] = (float(x), float(y), int(visible))
    return locations


@pytest.fixture(scope="module")
def target_root(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("target") / "data", task="target", seed=0, **SMALL)


@pytest.fixture(scope="module")
def colourful_root(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("colourful") / "data", task="target", seed=3,
                              num_classes=8, train_per_class=4, val_per_class=1, test_per_class=1, **COLOURFUL)


def test_splits_are_stratified_with_the_requested_sizes(target_root):
    splits = {name: json.loads((target_root / f"{name}.json").read_text()) for name in ("train", "val", "test")}
    expected = {"train": 3, "val": 2, "test": 3}
    for name, mapping in splits.items():
        assert len(mapping) == 5 * expected[name]
        counts = np.bincount(list(mapping.values()), minlength=5)
        assert counts.tolist() == [expected[name]] * 5, name
    all_keys = [key for mapping in splits.values() for key in mapping]
    assert len(all_keys) == len(set(all_keys)) == 40  # splits are disjoint
    assert sorted(set(itertools.chain(*(m.values() for m in splits.values())))) == [0, 1, 2, 3, 4]
    for key in all_keys:
        with Image.open(target_root / "images" / key) as image:
            assert image.format == "PNG" and image.mode == "RGB" and image.size == (80, 80)


def test_cub_text_files_agree_with_json_splits(target_root):
    label_of = {}
    for name in ("train", "val", "test"):
        label_of.update(json.loads((target_root / f"{name}.json").read_text()))
    test_keys = set(json.loads((target_root / "test.json").read_text()))
    images = read_table(target_root / "images.txt")
    labels = dict(read_table(target_root / "image_class_labels.txt"))
    is_training = dict(read_table(target_root / "train_test_split.txt"))
    classes = read_table(target_root / "classes.txt")

    assert [int(i) for i, _ in images] == list(range(1, 41))
    assert {path for _, path in images} == set(label_of)
    assert [int(c) for c, _ in classes] == [1, 2, 3, 4, 5]
    for image_id, path in images:
        assert int(labels[image_id]) - 1 == label_of[path]
        assert is_training[image_id] == ("0" if path in test_keys else "1")
        class_dir = classes[label_of[path]][1]
        assert path.startswith(f"{class_dir}/{class_dir}_") and class_dir.startswith(f"{label_of[path] + 1:03d}.")
    documented = json.loads((target_root / "attributes.json").read_text())["classes"]
    assert [c["directory"] for c in documented] == [name for _, name in classes]


def test_bounding_boxes_and_part_visibility(target_root):
    assert [name for _, name in (line.split(" ", 1) for line in (target_root / "parts/parts.txt").read_text().splitlines())] \
        == list(PART_NAMES)
    boxes = {int(row[0]): [float(v) for v in row[1:]] for row in read_table(target_root / "bounding_boxes.txt")}
    locations = part_locations(target_root)
    assert sorted(boxes) == sorted(locations) == list(range(1, 41))
    facing_left = 0
    for image_id, parts in locations.items():
        x, y, w, h = boxes[image_id]
        assert 0 <= x and 0 <= y and x + w <= 80 and y + h <= 80 and w > 20 and h > 15
        for side in ("eye", "wing", "leg"):
            assert parts[f"left {side}"][2] + parts[f"right {side}"][2] == 1  # side view: exactly one is visible
        assert parts["left eye"][2] == parts["left wing"][2] == parts["left leg"][2]
        facing_left += parts["left eye"][2]
        for name, (px, py, visible) in parts.items():
            if visible:
                assert x - 0.5 <= px <= x + w + 0.5 and y - 0.5 <= py <= y + h + 0.5, name
            else:
                assert (px, py) == (0.0, 0.0)
        beak_x, tail_x = parts["beak"][0], parts["tail"][0]
        assert (beak_x < tail_x) == bool(parts["left eye"][2])  # a bird facing left shows its left side
    assert 0 < facing_left < 40


def test_keypoints_land_on_their_part_colours_in_every_pose(colourful_root):
    classes = json.loads((colourful_root / "attributes.json").read_text())["classes"]
    labels = dict(read_table(colourful_root / "image_class_labels.txt"))
    locations = part_locations(colourful_root)
    palette_names = list(COLORS)
    palette = np.array([COLORS[name] for name in palette_names], dtype=float)
    facing = set()
    for image_id, path in read_table(colourful_root / "images.txt"):
        image = np.asarray(Image.open(colourful_root / "images" / path), dtype=float)
        attributes = classes[int(labels[image_id]) - 1]["attributes"]
        parts = locations[int(image_id)]
        eye = "left eye" if parts["left eye"][2] else "right eye"
        facing.add(eye)
        expected = {"crown": attributes["crown_color"], "beak": attributes["beak_color"],
                    "breast": attributes["breast_color"], eye: None}
        for part, color_name in expected.items():
            x, y, visible = parts[part]
            assert visible == 1
            pixel = image[int(y), int(x)]
            nominal = np.array(EYE_COLOR if color_name is None else COLORS[color_name], dtype=float)
            assert np.linalg.norm(pixel - nominal) < 60, (path, part, pixel, color_name)
            if color_name is not None:
                nearest = palette_names[int(np.argmin(np.linalg.norm(palette - pixel, axis=1)))]
                assert nearest == color_name, (path, part, pixel)
    assert facing == {"left eye", "right eye"}  # both mirrored and unmirrored birds were checked


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path, target_root):
    again = generate_synthetic(tmp_path / "again", task="target", seed=0, workers=2, **SMALL)
    other = generate_synthetic(tmp_path / "other", task="target", seed=1, **SMALL)
    assert tree_digest(again) == tree_digest(target_root)
    assert tree_digest(other) != tree_digest(target_root)


def test_source_and_target_species_are_disjoint():
    def signature(species):
        return tuple(species.attributes[a] for a in ATTRIBUTES)

    for seed in range(3):
        source = draw_species(SyntheticSpec.for_task("source"), seed)
        target = draw_species(SyntheticSpec.for_task("target"), seed)
        assert len(source) == 100 and len(target) == 20
        assert len({signature(s) for s in source}) == 100 and len({s.name for s in target}) == 20
        assert not {signature(s) for s in source} & {signature(s) for s in target}
    # Exhaustively: every possible target species differs from every possible source species.
    all_source = SyntheticSpec.for_task("source", num_classes=count_species(SyntheticSpec.for_task("source")))
    all_target = SyntheticSpec.for_task("target", num_classes=count_species(SyntheticSpec.for_task("target")))
    assert count_species(all_source) == 6 * 6 * 6 * 4 * 4 and count_species(all_target) == 6 * 4
    every_source, every_target = draw_species(all_source, 0), draw_species(all_target, 0)
    assert not {signature(s) for s in every_source} & {signature(s) for s in every_target}
    # the marker: no source bird has an eye ring, every target bird a white one
    assert {s.attributes["eye_ring"] for s in every_source} == {"none"}
    assert {s.attributes["eye_ring"] for s in every_target} == {"white"}


def test_tail_colour_is_per_image_nuisance_in_the_source_task_and_a_trait_in_the_target():
    source = draw_species(SyntheticSpec.for_task("source"), 0)
    target = draw_species(SyntheticSpec.for_task("target"), 0)
    assert all(s.attributes["tail_color"] is None for s in source)  # None = redrawn for every image
    assert len({s.attributes["tail_color"] for s in target}) == 4
    assert len({s.attributes["breast_color"] for s in target}) == 6


def test_generated_source_and_target_datasets_share_no_species(tmp_path, target_root):
    source = generate_synthetic(tmp_path / "source", task="source", seed=0, **SMALL)
    documents = [json.loads((root / "attributes.json").read_text()) for root in (source, target_root)]
    source_sets, target_sets = ({json.dumps(c["attributes"], sort_keys=True) for c in d["classes"]} for d in documents)
    assert len(source_sets) == len(target_sets) == 5
    assert not source_sets & target_sets
    assert documents[0]["varying_attributes"] == list(synthetic.DEFAULT_SOURCE_ATTRIBUTES)
    for c in documents[0]["classes"]:  # source: tail colour is per-image nuisance, the marker stays default
        assert c["attributes"]["tail_color"] is None and c["attributes"]["eye_ring"] == "none"
    assert documents[1]["marker"] == ["eye_ring", "white"] and documents[0]["marker"] is None


def test_default_target_has_species_differing_in_a_single_part():
    species = draw_species(SyntheticSpec.for_task("target"), 0)
    varying = synthetic.DEFAULT_TARGET_ATTRIBUTES
    differences = [sum(a.attributes[k] != b.attributes[k] for k in varying) for a, b in itertools.combinations(species, 2)]
    assert min(differences) == 1 and sum(d == 1 for d in differences) >= 3


def test_second_call_is_a_no_op(target_root, caplog):
    before = {p: p.stat().st_mtime_ns for p in target_root.rglob("*")}
    with caplog.at_level(logging.INFO, logger="data_prep.synthetic"):
        assert generate_synthetic(target_root, task="target", seed=0, **SMALL) == target_root
    assert {p: p.stat().st_mtime_ns for p in target_root.rglob("*")} == before
    assert "nothing to do" in caplog.text


def test_existing_root_with_other_content_raises_unless_overwrite(tmp_path):
    root = generate_synthetic(tmp_path / "data", task="target", seed=0, **SMALL)
    with pytest.raises(FileExistsError, match="different spec or seed"):
        generate_synthetic(root, task="target", seed=0, **{**SMALL, "num_classes": 4})
    with pytest.raises(FileExistsError, match="different spec or seed.*--task target --seed 7 --overwrite"):
        generate_synthetic(root, task="target", seed=7, **SMALL)
    next((root / "images").rglob("*.png")).unlink()
    with pytest.raises(FileExistsError, match="missing files"):
        generate_synthetic(root, task="target", seed=0, **SMALL)
    generate_synthetic(root, task="target", seed=0, overwrite=True, **{**SMALL, "num_classes": 4})
    assert len((root / "classes.txt").read_text().splitlines()) == 4
    assert json.loads((root / "synthetic_spec.json").read_text())["spec"]["num_classes"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging or retired directories left

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an empty directory or a synthetic dataset"):
        generate_synthetic(foreign, task="target", seed=0, overwrite=True, **SMALL)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_interrupted_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_write_metadata", fail)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(tmp_path / "data", task="target", seed=0, **SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("overrides", "message"), [
    ({"num_classes": -3}, "num_classes must be >= 2"),
    ({"num_classes": 1}, "num_classes must be >= 2"),
    ({"train_per_class": 0}, "train_per_class must be >= 1"),
    ({"test_per_class": 2.5}, "test_per_class must be an integer"),
    ({"image_size": 16}, "image_size must be in"),
    ({"num_classes": 5000}, "exceeds the 24 distinct target species"),
    ({"target_attributes": ("breast_color", "wing_tint")}, "unknown attributes"),
    ({"target_nuisance": ("tail_color",)}, "target_nuisance must not be target species attributes"),
    ({"source_nuisance": ("crown_color",)}, "source_nuisance must not be source species attributes"),
    ({"target_marker": ("tail_shape", "square")}, "non-default value"),
    ({"target_marker": ("crown_color", "red")}, "must stay at its default in the source task"),
    ({"scale_range": (1.2, 0.8)}, "scale_range high must be a number in"),
    ({"scale_range": (0.8,)}, "scale_range must be a"),
    ({"source_attributes": "crown_color"}, "source_attributes must be a list or tuple"),
    ({"pixel_noise": -1.0}, "pixel_noise"),
])
def test_bad_spec_raises_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        SyntheticSpec.for_task("target", **overrides)


def test_bad_api_arguments_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="task must be one of"):
        generate_synthetic(tmp_path / "a", task="pretrain")
    with pytest.raises(ValueError, match="seed must be >= 0"):
        generate_synthetic(tmp_path / "a", seed=-1, **SMALL)
    with pytest.raises(ValueError, match="unknown SyntheticSpec fields"):
        generate_synthetic(tmp_path / "a", classes=3)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        generate_synthetic(tmp_path / "sub" / "a", workers=0, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_cli_generates_and_reports_bad_input_in_one_line(tmp_path, capsys):
    assert main(["synthetic", "--root", str(tmp_path / "cli"), "--classes", "2", "--seed", "4"]) == 0
    manifest = json.loads((tmp_path / "cli" / "synthetic_spec.json").read_text())
    assert manifest["seed"] == 4 and manifest["task"] == "target"
    assert SyntheticSpec(**manifest["spec"]) == SyntheticSpec.for_task("target", num_classes=2)
    capsys.readouterr()

    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    for argv in (["synthetic", "--root", str(tmp_path / "x"), "--classes", "-3"],
                 ["synthetic", "--root", str(blocker / "data"), "--classes", "2"],
                 ["synthetic", "--root", str(tmp_path / "cli"), "--seed", "5"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err, err
    with pytest.raises(SystemExit) as exit_info:
        main(["synthetic", "--root", str(tmp_path / "y"), "--task", "pretrain"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_ensure_synthetic_reuses_a_stale_dataset_with_a_warning_that_says_how_to_regenerate(target_root, caplog):
    before = {p: p.stat().st_mtime_ns for p in target_root.rglob("*")}
    with caplog.at_level(logging.WARNING, logger="data_prep.synthetic"):
        assert synthetic.ensure_synthetic(target_root, task="target", seed=0) == target_root
    assert {p: p.stat().st_mtime_ns for p in target_root.rglob("*")} == before  # the user's data is untouched
    assert "not this version's default" in caplog.text
    assert f"python -m data_prep synthetic --root {target_root} --task target --seed 0 --overwrite" in caplog.text


def test_ensure_synthetic_leaves_a_non_synthetic_dataset_alone(tmp_path, caplog):
    (tmp_path / "test.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="data_prep.synthetic"):
        assert synthetic.ensure_synthetic(tmp_path, task="target") == tmp_path
    assert caplog.text == "" and sorted(p.name for p in tmp_path.iterdir()) == ["test.json"]
