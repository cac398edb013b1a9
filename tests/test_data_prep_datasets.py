"""The five FGVC preparers end to end on tiny archives in the real formats, served over HTTP from 127.0.0.1:
split sizes and stratification, determinism, idempotence, subsets, fingerprints, bad input and the CLI."""
from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from fgvc_fixtures import BUILDERS, FileServer, build_cub, md5

from data_prep import cars, cub, dogs, download, fingerprints, flowers, nabirds
from data_prep.__main__ import main
from data_prep.fgvc import MissingSourceError, RootStateError, prepare
from data_prep.splits import SplitFingerprintError, fingerprint, val_counts
from data_prep.synthetic import generate_synthetic
from e2vpt_viz.data import DatasetLayoutError, FGVCDataset

SPECS = {"cub": cub.CUB, "nabirds": nabirds.NABIRDS, "flowers": flowers.FLOWERS, "dogs": dogs.DOGS, "cars": cars.CARS}
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """All five fixtures' files in one folder, served over HTTP."""
    folder = tmp_path_factory.mktemp("served")
    fixtures = {name: build(folder) for name, build in BUILDERS.items()}
    server = FileServer(folder)
    yield server, fixtures
    server.close()


@pytest.fixture(autouse=True)
def no_retry_wait(monkeypatch):
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)


def over_http(name, served, root, **options):
    server, fixtures = served
    fixture = fixtures[name]
    return prepare(SPECS[name], root, url=[server.url(n) for n in fixture.files], md5=fixture.md5s, **options)


def from_files(fixture, root, **options):
    return prepare(SPECS[fixture.name], root, archive=list(fixture.files.values()), md5=fixture.md5s, **options)


def read(root: Path, split: str) -> dict[str, int]:
    return json.loads((root / f"{split}.json").read_text())


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", list(SPECS))
def test_download_verify_extract_and_split_end_to_end(name, served, tmp_path):
    server, fixtures = served
    fixture = fixtures[name]
    root = over_http(name, served, tmp_path / name)
    assert root == tmp_path / name
    splits = {s: read(root, s) for s in SPLITS}
    class_ids = sorted(fixture.class_names)  # official ids, contiguous labels by sorting them
    label = {c: i for i, c in enumerate(class_ids)}
    assert splits["test"] == {k: label[c] for k, c in fixture.test.items()}
    if fixture.val is not None:  # Flowers: the official val set
        assert splits["train"] == {k: label[c] for k, c in fixture.train.items()}
        assert splits["val"] == {k: label[c] for k, c in fixture.val.items()}
    else:  # a stratified 90/10 split of the official train set
        assert splits["train"].keys() | splits["val"].keys() == fixture.train.keys()
        assert not splits["train"].keys() & splits["val"].keys()
        assert all(splits[s][k] == label[fixture.train[k]] for s in ("train", "val") for k in splits[s])
        official = {c: sum(1 for v in fixture.train.values() if v == c) for c in class_ids}
        expected_val = val_counts(official)
        assert np.bincount(list(splits["val"].values())).tolist() == [expected_val[c] for c in class_ids]
        assert len(splits["val"]) == math.ceil(len(fixture.train) / 10)
    names = json.loads((root / "class_names.json").read_text())
    assert names == {str(label[c]): fixture.class_names[c] for c in class_ids}
    assert json.loads((root / "split_fingerprints.json").read_text()) == {s: fingerprint(splits[s]) for s in SPLITS}
    marker = json.loads((root / "prepared.json").read_text())
    assert marker["dataset"] == name and marker["counts"] == {s: len(splits[s]) for s in SPLITS}
    assert sorted(p.name for p in (root / "downloads").iterdir()) == sorted(fixture.files)
    assert not list(root.glob(".data_prep-staging-*"))
    for split in SPLITS:
        dataset = FGVCDataset(root, split)
        assert len(dataset) == len(splits[split]) and dataset.num_classes == len(class_ids)
        assert dataset.class_names == [fixture.class_names[c] for c in class_ids]
        image, y = dataset[0]
        assert image.mode == "RGB" and image.size == (16, 16) and y == dataset.samples[0][1]
    assert all(h.get("Range") is None for _, h in server.requests)


def test_keys_follow_the_vpt_layout(served, tmp_path):
    roots = {name: over_http(name, served, tmp_path / name) for name in SPECS}
    first = {name: sorted(read(root, "test"))[0] for name, root in roots.items()}
    assert first["cub"].startswith("001.Black_footed_Albatross/") and (roots["cub"] / "images" / first["cub"]).is_file()
    assert (roots["nabirds"] / "images" / first["nabirds"]).is_file() and first["nabirds"].startswith("0295/")
    assert first["flowers"].startswith("jpg/image_") and (roots["flowers"] / first["flowers"]).is_file()
    assert first["dogs"].startswith("n02085620-Chihuahua/") and (roots["dogs"] / "Images" / first["dogs"]).is_file()
    assert first["cars"].startswith("car_ims/") and (roots["cars"] / first["cars"]).is_file()
    assert (roots["cub"] / "attributes.txt").is_file() and not (roots["cub"] / "CUB_200_2011").exists()
    assert (roots["flowers"] / "setid.mat").is_file() and (roots["cars"] / "cars_annos.mat").is_file()


def test_the_same_seed_gives_the_same_split_and_another_seed_another(served, tmp_path):
    fixture = served[1]["cub"]
    a, b, c = (from_files(fixture, tmp_path / n, seed=s) for n, s in (("a", 0), ("b", 0), ("c", 1)))
    for split in SPLITS:
        assert (a / f"{split}.json").read_bytes() == (b / f"{split}.json").read_bytes()
    assert read(c, "test") == read(a, "test") and read(c, "val") != read(a, "val")
    assert len(read(c, "val")) == len(read(a, "val"))


def test_the_val_rule_reproduces_the_papers_val_sizes():
    # CUB: 5,994 official train images, 30 per class except 6 classes with 29.
    cub_counts = {c: 30 if c > 6 else 29 for c in range(1, 201)}
    assert sum(cub_counts.values()) == 5994 and sum(val_counts(cub_counts).values()) == 600
    assert set(val_counts(cub_counts).values()) == {3}
    dogs_counts = {c: 100 for c in range(1, 121)}  # Stanford Dogs: exactly 100 train images per breed
    assert set(val_counts(dogs_counts).values()) == {10}
    # NABirds and Cars: per-class counts vary; any spread with the real totals gives the paper's val size.
    rng = np.random.default_rng(0)
    for classes, total, paper_val in ((555, 23929, 2393), (196, 8144, 815)):
        for _ in range(20):
            counts = rng.multinomial(total - 4 * classes, np.ones(classes) / classes) + 4
            per_class = dict(enumerate(counts.tolist()))
            val = val_counts(per_class)
            assert sum(val.values()) == paper_val and total - paper_val == {555: 21536, 196: 7329}[classes]
            assert all(abs(val[c] - n / 10) < 1 and val[c] < n for c, n in per_class.items())


def test_the_val_rule_gives_extra_images_to_the_largest_remainders():
    assert val_counts({1: 12, 2: 9, 3: 15, 4: 21}) == {1: 1, 2: 1, 3: 2, 4: 2}  # total ceil(5.7) = 6
    assert val_counts({1: 5, 2: 5}) == {1: 1, 2: 0}  # tie: the smaller class id
    assert val_counts({1: 1, 2: 1, 3: 1}) == {1: 0, 2: 0, 3: 0}  # no class loses its only training image


def test_a_second_run_is_a_no_op(served, tmp_path, caplog):
    server, fixtures = served
    root = over_http("cub", served, tmp_path / "cub")
    before, requests = snapshot(root), len(server.requests)
    with caplog.at_level(logging.INFO):
        assert over_http("cub", served, root) == root
    assert "already holds the prepared CUB-200-2011 (seed 0); nothing to do" in caplog.text
    assert snapshot(root) == before and len(server.requests) == requests
    with pytest.raises(RootStateError, match="split with seed 0; a split with seed 3 needs a new --root"):
        over_http("cub", served, root, seed=3)


def test_a_dropped_connection_resumes_during_preparation(served, tmp_path):
    server, fixtures = served
    server.drop_first.add("CUB_200_2011.tgz")
    start = len(server.requests)
    root = over_http("cub", served, tmp_path / "cub")
    (_, first), (_, second) = server.requests[start:]
    assert "Range" not in first and second["Range"].startswith("bytes=")
    assert md5(root / "downloads" / "CUB_200_2011.tgz") == fixtures["cub"].md5s["CUB_200_2011.tgz"]


def test_a_wrong_checksum_fails_clearly_and_leaves_no_root(served, tmp_path):
    server, _ = served
    root = tmp_path / "cub"
    with pytest.raises(download.ChecksumError, match="corrupt or not the expected file.*expected f{32}"):
        prepare(cub.CUB, root, url=server.url("CUB_200_2011.tgz"), md5="f" * 32)
    assert not root.exists()


def test_the_official_checksum_guards_local_archives(served, tmp_path):
    archive = served[1]["cub"].files["CUB_200_2011.tgz"]
    with pytest.raises(download.ChecksumError, match="expected 97eceeb1.*official CUB_200_2011.tgz.*--md5"):
        prepare(cub.CUB, tmp_path / "cub", archive=archive)
    assert not (tmp_path / "cub").exists()


def test_an_unsafe_archive_fails_without_touching_the_users_files(tmp_path):
    root = tmp_path / "cub"
    root.mkdir()
    fixture = build_cub(root, extra={"../escaped.txt": b"evil"})  # the user's own archive, inside the root
    archive, before = fixture.files["CUB_200_2011.tgz"], md5(fixture.files["CUB_200_2011.tgz"])
    with pytest.raises(download.UnsafeArchiveError, match="refusing to extract .*CUB_200_2011.tgz.*outside the dest"):
        prepare(cub.CUB, root, md5=fixture.md5s)
    assert sorted(p.name for p in root.iterdir()) == ["CUB_200_2011.tgz"] and md5(archive) == before
    assert not (tmp_path / "escaped.txt").exists()


def test_an_archive_without_an_annotation_file_is_rejected(tmp_path):
    fixture = build_cub(tmp_path, drop=("CUB_200_2011/image_class_labels.txt",))
    with pytest.raises(DatasetLayoutError, match="do not look like the official CUB-200-2011.*image_class_labels.txt"):
        from_files(fixture, tmp_path / "cub")
    assert not (tmp_path / "cub").exists() and fixture.files["CUB_200_2011.tgz"].is_file()


def test_a_hand_extracted_root_is_split_in_place(served, tmp_path):
    fixture = served[1]["cub"]
    reference = from_files(fixture, tmp_path / "reference")
    root = tmp_path / "by_hand"
    shutil.copytree(reference, root, ignore=shutil.ignore_patterns("*.json", "downloads"))
    assert prepare(cub.CUB, root) == root  # no archive and no download needed
    for split in SPLITS:
        assert read(root, split) == read(reference, split)


def test_a_partially_extracted_root_names_what_is_missing(served, tmp_path):
    root = from_files(served[1]["cub"], tmp_path / "cub")
    for name in ("prepared.json", "parts/part_locs.txt", "bounding_boxes.txt"):
        (root / name).unlink()
    with pytest.raises(DatasetLayoutError, match=r"partially extracted CUB-200-2011: bounding_boxes.txt, "
                                                 r"parts/part_locs.txt missing.*python -m data_prep cub --root"):
        prepare(cub.CUB, root)
    shutil.rmtree(root / "images" / "002.Laysan_Albatross")
    (root / "bounding_boxes.txt").touch()
    (root / "parts/part_locs.txt").touch()
    with pytest.raises(DatasetLayoutError, match=r"11 of 69 listed images are missing under .*images \(first: 002\."):
        prepare(cub.CUB, root)


def test_edited_split_files_are_rebuilt(served, tmp_path, caplog):
    root = from_files(served[1]["cub"], tmp_path / "cub")
    val = read(root, "val")
    (root / "val.json").write_text("{}")
    with caplog.at_level(logging.WARNING):
        prepare(cub.CUB, root)
    assert "split files are missing or changed; rebuilding them" in caplog.text and read(root, "val") == val


def test_wrong_roots_are_refused_with_a_hint(served, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RootStateError, match="is a file"):
        prepare(cub.CUB, tmp_path / "file")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RootStateError, match="not empty and holds no CUB-200-2011 files \\(found notes.txt\\)"):
        prepare(cub.CUB, other)
    assert (other / "notes.txt").read_text() == "mine"
    parent = tmp_path / "parent"
    from_files(served[1]["cub"], parent / "CUB_200_2011")
    with pytest.raises(RootStateError, match="pass --root .*parent/CUB_200_2011"):
        prepare(cub.CUB, parent)
    dogs_root = from_files(served[1]["dogs"], tmp_path / "dogs")
    with pytest.raises(RootStateError, match="holds a prepared 'dogs' dataset, not cub"):
        prepare(cub.CUB, dogs_root)


def test_cars_and_nabirds_need_supplied_files(tmp_path):
    with pytest.raises(MissingSourceError, match="no automatic download.*--archive car_ims.tgz --archive cars_annos"):
        prepare(cars.CARS, tmp_path / "cars")
    with pytest.raises(MissingSourceError, match="dl.allaboutbirds.org/nabirds.*--archive nabirds.tar.gz"):
        prepare(nabirds.NABIRDS, tmp_path / "nabirds")
    assert not (tmp_path / "cars").exists() and not (tmp_path / "nabirds").exists()


def test_md5_overrides_must_be_unambiguous(served, tmp_path):
    fixture = served[1]["flowers"]
    with pytest.raises(ValueError, match="ambiguous.*--md5 NAME=HEX"):
        prepare(flowers.FLOWERS, tmp_path / "f", archive=list(fixture.files.values()), md5="a" * 32)
    with pytest.raises(ValueError, match="cannot tell which Oxford Flowers-102 file --url .*/other.tgz is"):
        prepare(flowers.FLOWERS, tmp_path / "f", url="http://127.0.0.1:1/other.tgz")
    with pytest.raises(ValueError, match="32 hexadecimal digits"):
        prepare(flowers.FLOWERS, tmp_path / "f", md5="setid.mat=xyz")


def test_split_fingerprints_are_checked_against_the_committed_table(served, tmp_path, monkeypatch, caplog):
    fixture = served[1]["cub"]
    with caplog.at_level(logging.INFO):
        reference = from_files(fixture, tmp_path / "reference")
    found = json.loads((reference / "split_fingerprints.json").read_text())
    assert f'"cub": {json.dumps(found)},' in caplog.text  # the line a maintainer pastes into fingerprints.py
    monkeypatch.setitem(fingerprints.COMMITTED, "cub", dict(found))
    from_files(fixture, tmp_path / "matching")
    monkeypatch.setitem(fingerprints.COMMITTED, "cub", {**found, "val": "0" * 64})
    with pytest.raises(SplitFingerprintError, match="split\\(s\\) val differ from the committed ones"):
        from_files(fixture, tmp_path / "changed")
    assert not (tmp_path / "changed").exists()
    from_files(fixture, tmp_path / "other_seed", seed=1)  # only seed 0 is committed


def test_committed_fingerprints_cover_every_dataset():
    assert set(fingerprints.COMMITTED) == set(SPECS)
    assert all(set(v) == set(SPLITS) for v in fingerprints.COMMITTED.values())


def test_flowers_files_match_torchvision():
    from torchvision.datasets import Flowers102

    if not hasattr(Flowers102, "_file_dict"):
        pytest.skip("this torchvision release keeps Flowers102's file table elsewhere")
    ours = {r.filename: (r.md5, r.url) for r in flowers.FLOWERS.resources}
    theirs = {name: (md5_, Flowers102._download_url_prefix + name) for name, md5_ in Flowers102._file_dict.values()}
    assert ours == theirs


def test_teaching_subsets_are_deterministic_nested_and_loadable(served, tmp_path, caplog):
    fixture = served[1]["cub"]
    root = tmp_path / "cub"
    four = from_files(fixture, root, classes=3, shots=4)
    assert four == root / "subsets" / "classes3_shots4_seed0"
    train = FGVCDataset(four, "train")
    assert len(train) == 12 and train.num_classes == 3
    assert np.bincount([y for _, y in train.samples]).tolist() == [4, 4, 4]
    full_val, full_test = read(root, "val"), read(root, "test")
    assert read(four, "val") == {k: c for k, c in full_val.items() if c < 3}
    assert read(four, "test") == {k: c for k, c in full_test.items() if c < 3}
    assert read(four, "train").keys() <= read(root, "train").keys()
    one = prepare(cub.CUB, root, classes=3, shots=1)
    assert read(one, "train").keys() <= read(four, "train").keys()  # 1-shot inside 4-shot
    other = prepare(cub.CUB, root, classes=3, shots=4, seed=1)  # the root keeps its seed-0 split
    assert other.name == "classes3_shots4_seed1" and read(other, "train") != read(four, "train")
    assert read(root / "subsets" / "classes3_shots4_seed0", "train") == read(four, "train")
    with caplog.at_level(logging.INFO):
        assert prepare(cub.CUB, root, classes=3, shots=4) == four
    assert "already exists; nothing to do" in caplog.text
    classes_only = prepare(cub.CUB, root, classes=2)
    assert classes_only.name == "classes2" and read(classes_only, "train") == {
        k: c for k, c in read(root, "train").items() if c < 2}
    assert FGVCDataset(four, "train").parts(0).shape == (15, 3)  # annotations come from the full root
    assert FGVCDataset(four, "test").class_names == [fixture.class_names[c] for c in (1, 2, 3)]
    with pytest.raises(ValueError, match=r"--shots must be in \[1, 8\]: class 1 has only 8 train images"):
        prepare(cub.CUB, root, shots=9)
    with pytest.raises(ValueError, match=r"--classes must be in \[1, 4\]"):
        prepare(cub.CUB, root, classes=5)


def test_cub_parts_boxes_and_class_names(served, tmp_path):
    fixture = served[1]["cub"]
    root = from_files(fixture, tmp_path / "cub")
    for split in ("train", "test"):
        dataset = FGVCDataset(root, split)
        assert dataset.part_names[:3] == ["back", "beak", "belly"] and len(dataset.part_names) == 15
        for index in (0, len(dataset) - 1):
            key = dataset.keys[index]
            np.testing.assert_array_equal(dataset.parts(index), fixture.parts[key])
            np.testing.assert_array_equal(dataset.bbox(index), fixture.boxes[key])
        assert dataset.class_names[0] == "001.Black_footed_Albatross"
    nab = over_http("nabirds", served, tmp_path / "nabirds")
    birds = FGVCDataset(nab, "train")
    assert birds.part_names[0] == "bill" and birds.parts(0).shape == (11, 3)
    np.testing.assert_array_equal(birds.parts(0), served[1]["nabirds"].parts[birds.keys[0]])
    assert birds.class_names == ["Common Loon", "Barn Owl", "American Crow"]
    with pytest.raises(DatasetLayoutError, match="images.txt is missing"):
        FGVCDataset(over_http("dogs", served, tmp_path / "dogs"), "train").parts(0)


def test_the_synthetic_starter_has_the_same_annotations(tmp_path):
    root = generate_synthetic(tmp_path / "syn", num_classes=3, train_per_class=2, val_per_class=1, test_per_class=1,
                              image_size=32)
    dataset = FGVCDataset(root, "train")
    assert dataset.parts(0).shape == (15, 3) and dataset.bbox(0).shape == (4,)
    visible = dataset.parts(0)[:, 2] == 1
    x, y, w, h = dataset.bbox(0)
    assert visible.any() and np.all(dataset.parts(0)[visible, 0] >= x - 0.5)
    assert dataset.class_names[0].startswith("001.") and len(dataset.class_names) == 3


# ----------------------------------------------------------------------------- CLI


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    return code, [line for line in capsys.readouterr().err.splitlines() if "error:" in line]  # not progress bars


def test_cli_prepares_and_prints_the_fingerprints(served, tmp_path, capsys, caplog):
    server, fixtures = served
    fixture = fixtures["dogs"]
    args = ["dogs", "--root", tmp_path / "dogs"]
    for name, path in fixture.files.items():
        args += ["--url", server.url(name), "--md5", f"{name}={fixture.md5s[name]}"]
    with caplog.at_level(logging.INFO):
        code, _ = run_cli(args, capsys)
    assert code == 0 and '"dogs": {"train": "' in caplog.text
    assert "train 27 / val 3 / test 12 images, 3 classes (the paper's split has 10800 / 1200 / 8580" in caplog.text


@pytest.mark.parametrize("args, message", [
    (["cars", "--root", "{tmp}/cars"], "no automatic download .*--archive car_ims.tgz --archive cars_annos.mat"),
    (["cub", "--root", "{tmp}/cub", "--archive", "{tmp}/nowhere.tgz"], "--archive .*nowhere.tgz does not exist"),
    (["verify", "--root", "{tmp}/missing"], "does not exist"),
])
def test_cli_errors_are_one_line_with_exit_code_2(args, message, tmp_path, capsys):
    code = main([a.format(tmp=tmp_path) for a in args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("python -m data_prep")
    assert __import__("re").search(message, lines[0]), lines[0]


def test_cli_rejects_an_unknown_dataset_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["birds", "--root", "x"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1
    assert "invalid choice: 'birds'" in lines[0] and "cub" in lines[0] and "nabirds" in lines[0]
