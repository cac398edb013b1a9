"""Tiny archives in the exact formats of the five real FGVC downloads, and a local HTTP server with Range support.

Each builder writes the dataset's official files into a folder and returns a :class:`Fixture` with the expected
official splits (keys as data_prep writes them, official class ids), so tests can check every number.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import re
import tarfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

CUB_PARTS = ("back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
             "right eye", "right leg", "right wing", "tail", "throat")
NABIRDS_PARTS = ("bill", "crown", "nape", "left eye", "right eye", "belly", "breast", "back", "tail", "left wing",
                 "right wing")


@dataclass
class Fixture:
    """Official files of one tiny dataset: {file name: path}, expected official splits and per-image extras."""

    name: str
    files: dict[str, Path]
    train: dict[str, int]  # key -> official class id
    test: dict[str, int]
    val: dict[str, int] | None = None
    class_names: dict[int, str] = field(default_factory=dict)
    parts: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (P, 3)
    boxes: dict[str, list[float]] = field(default_factory=dict)  # key -> x, y, w, h

    @property
    def md5s(self) -> dict[str, str]:
        return {name: md5(path) for name, path in self.files.items()}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def jpeg(seed: int, mode: str = "RGB", size: int = 16) -> bytes:
    """A small random JPEG (PNG for modes JPEG cannot hold)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, len(mode) if mode != "L" else 1), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode=mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if mode in ("RGBA", "P") else "JPEG")
    return buffer.getvalue()


def write_tar(path: Path, members: dict[str, bytes], compression: str = "gz") -> Path:
    """A tar archive with regular-file members {name: bytes} (plus their parent folders, as real archives have)."""
    folders = sorted({str(Path(name).parent) for name in members} - {"."})
    with tarfile.open(path, f"w:{compression}" if compression else "w") as tar:
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def _lines(rows) -> bytes:
    return "".join(" ".join(str(v) for v in row) + "\n" for row in rows).encode()


def _cell(strings: list[str]) -> np.ndarray:
    """A MATLAB N x 1 cell array of char, as scipy writes it."""
    cell = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        cell[i, 0] = s
    return cell


def _cub_style(prefix: str, class_dirs: dict[int, str], counts: dict[int, tuple[int, int]], part_ids: list[int],
               image_id, key_of, seed: int) -> tuple[dict[str, bytes], Fixture]:
    """Members and expectations of a CUB-format archive (CUB and NABirds share the tables)."""
    members: dict[str, bytes] = {}
    rows: dict[str, list] = {n: [] for n in ("images", "labels", "split", "boxes", "parts")}
    fixture = Fixture(name="", files={}, train={}, test={})
    rng = np.random.default_rng(seed)
    number = 0
    for class_id, (n_train, n_test) in counts.items():
        for j in range(n_train + n_test):
            number += 1
            iid = image_id(number)
            key = key_of(class_dirs[class_id], number)
            members[f"{prefix}images/{key}"] = jpeg(number)
            is_train = int(j < n_train)
            (fixture.train if is_train else fixture.test)[key] = class_id
            box = [float(v) for v in rng.integers(0, 8, 4)]
            locs = np.zeros((len(part_ids), 3), dtype=np.float32)
            for p, part_id in enumerate(part_ids):
                visible = int(rng.integers(0, 2))
                x, y = (float(rng.integers(1, 16)), float(rng.integers(1, 16))) if visible else (0.0, 0.0)
                locs[p] = (x, y, visible)
                rows["parts"].append((iid, part_id, f"{x:.1f}", f"{y:.1f}", visible))
            fixture.parts[key], fixture.boxes[key] = locs, box
            rows["images"].append((iid, key))
            rows["labels"].append((iid, class_id))
            rows["split"].append((iid, is_train))
            rows["boxes"].append((iid, *(f"{v:.1f}" for v in box)))
    for table, name in (("images", "images.txt"), ("labels", "image_class_labels.txt"),
                        ("split", "train_test_split.txt"), ("boxes", "bounding_boxes.txt"),
                        ("parts", "parts/part_locs.txt")):
        members[prefix + name] = _lines(rows[table])
    return members, fixture


def build_cub(folder: Path, counts=None, drop: tuple[str, ...] = (), extra: dict[str, bytes] | None = None) -> Fixture:
    """CUB_200_2011.tgz: CUB_200_2011/{images/<NNN.Name>/<Name>_<n>_<id>.jpg, *.txt, parts/*} + attributes.txt.

    counts: {class id: (train, test)}; drop: member names to leave out; extra: members to add (e.g. unsafe ones).
    """
    counts = counts or {1: (12, 3), 2: (9, 2), 3: (15, 4), 4: (21, 3)}
    names = {1: "Black_footed_Albatross", 2: "Laysan_Albatross", 3: "Sooty_Albatross", 4: "Groove_billed_Ani"}
    dirs = {c: f"{c:03d}.{names.get(c, f'Bird_{c}')}" for c in counts}
    members, fixture = _cub_style(
        "CUB_200_2011/", dirs, counts, list(range(1, 16)), image_id=lambda n: n,
        key_of=lambda d, n: f"{d}/{d.split('.', 1)[1]}_{n:04d}_{796000 + n}.jpg", seed=1)
    members["CUB_200_2011/classes.txt"] = _lines((c, d) for c, d in dirs.items())
    members["CUB_200_2011/parts/parts.txt"] = _lines(enumerate(CUB_PARTS, start=1))
    members["CUB_200_2011/README"] = b"CUB-200-2011 fixture\n"
    members["attributes.txt"] = b"1 has_bill_shape::curved_(up_or_down)\n"
    for name in drop:
        del members[name]
    members.update(extra or {})
    fixture.name = "cub"
    fixture.class_names = dict(dirs)
    fixture.files = {"CUB_200_2011.tgz": write_tar(folder / "CUB_200_2011.tgz", members)}
    return fixture


def build_nabirds(folder: Path) -> Fixture:
    """nabirds.tar.gz: nabirds/{images/<NNNN>/<hex>.jpg, UUID image ids, sparse hierarchical class ids, 11 parts}."""
    counts = {295: (7, 2), 817: (12, 3), 1000: (5, 2)}
    members, fixture = _cub_style(
        "nabirds/", {c: f"{c:04d}" for c in counts}, counts, list(range(11)),
        image_id=lambda n: str(uuid.UUID(int=n)), key_of=lambda d, n: f"{d}/{uuid.UUID(int=n).hex}.jpg", seed=2)
    classes = {0: "Birds", 1: "Perching Birds", 295: "Common Loon", 817: "Barn Owl", 1000: "American Crow",
               1001: "Unused Leaf"}
    members["nabirds/classes.txt"] = _lines(classes.items())
    members["nabirds/hierarchy.txt"] = _lines([(1, 0), (295, 1), (817, 1), (1000, 1), (1001, 1)])
    members["nabirds/parts/parts.txt"] = _lines(enumerate(NABIRDS_PARTS))
    fixture.name = "nabirds"
    fixture.class_names = {c: classes[c] for c in counts}
    fixture.files = {"nabirds.tar.gz": write_tar(folder / "nabirds.tar.gz", members)}
    return fixture


def build_flowers(folder: Path) -> Fixture:
    """102flowers.tgz (jpg/image_%05d.jpg), imagelabels.mat (labels 1 x N), setid.mat (trnid/valid/tstid)."""
    per_class = {1: (2, 2, 3), 2: (2, 2, 4), 3: (2, 2, 2)}
    labels, sets = [], {"trnid": [], "valid": [], "tstid": []}
    for class_id, sizes in per_class.items():
        for field_name, size in zip(sets, sizes):
            for _ in range(size):
                labels.append(class_id)
                sets[field_name].append(len(labels))
    order = np.random.default_rng(3).permutation(len(labels))  # image numbers are not grouped by class
    number_of = {old + 1: new + 1 for new, old in enumerate(order)}
    labels = [labels[old] for old in order]
    sets = {k: sorted(number_of[i] for i in v) for k, v in sets.items()}
    members = {f"jpg/image_{i:05d}.jpg": jpeg(100 + i) for i in range(1, len(labels) + 1)}
    scipy.io.savemat(folder / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    scipy.io.savemat(folder / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in sets.items()})

    def split(name: str) -> dict[str, int]:
        return {f"jpg/image_{i:05d}.jpg": labels[i - 1] for i in sets[name]}

    return Fixture(name="flowers", files={"102flowers.tgz": write_tar(folder / "102flowers.tgz", members),
                                          "imagelabels.mat": folder / "imagelabels.mat",
                                          "setid.mat": folder / "setid.mat"},
                   train=split("trnid"), val=split("valid"), test=split("tstid"),
                   class_names={1: "pink primrose", 2: "hard-leaved pocket orchid", 3: "canterbury bells"})


def build_dogs(folder: Path) -> Fixture:
    """images.tar (Images/<wnid-Breed>/<wnid>_<n>.jpg) and lists.tar ({file,train,test}_list.mat)."""
    breeds = {1: ("n02085620", "Chihuahua"), 2: ("n02085782", "Japanese_spaniel"),
              3: ("n02116738", "African_hunting_dog")}
    counts = {1: (10, 4), 2: (7, 3), 3: (13, 5)}
    fixture = Fixture(name="dogs", files={}, train={}, test={},
                      class_names={c: name for c, (_, name) in breeds.items()})
    members, lists = {}, {"train": [], "test": []}
    for class_id, (n_train, n_test) in counts.items():
        wnid, name = breeds[class_id]
        for j in range(n_train + n_test):
            key = f"{wnid}-{name}/{wnid}_{1000 + j}.jpg"
            members[f"Images/{key}"] = jpeg(200 + 50 * class_id + j)
            split = "train" if j < n_train else "test"
            getattr(fixture, split)[key] = class_id
            lists[split].append((key, class_id))
    mats = {}
    for split, rows in (*lists.items(), ("file", lists["train"] + lists["test"])):
        keys = [k for k, _ in rows]
        buffer = io.BytesIO()
        scipy.io.savemat(buffer, {"file_list": _cell(keys), "annotation_list": _cell([k[:-4] for k in keys]),
                                  "labels": np.array([[c] for _, c in rows], dtype=np.float64)})
        mats[f"{split}_list.mat"] = buffer.getvalue()
    fixture.files = {"images.tar": write_tar(folder / "images.tar", members, compression=""),
                     "lists.tar": write_tar(folder / "lists.tar", mats, compression="")}
    return fixture


def build_cars(folder: Path) -> Fixture:
    """car_ims.tgz (car_ims/%06d.jpg) and cars_annos.mat (struct annotations: relative_im_path, bbox_x1..y2,
    class, test; class_names)."""
    counts = {1: (8, 3), 2: (11, 4), 3: (6, 2)}
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]
    fixture = Fixture(name="cars", files={}, train={}, test={}, class_names=dict(enumerate(names, start=1)))
    rows = [(c, int(j >= n_train)) for c, (n_train, n_test) in counts.items() for j in range(n_train + n_test)]
    rows = [rows[i] for i in np.random.default_rng(4).permutation(len(rows))]  # train and test interleaved
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    annotations = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    members = {}
    for i, (class_id, test) in enumerate(rows):
        key = f"car_ims/{i + 1:06d}.jpg"
        members[key] = jpeg(400 + i)
        (fixture.test if test else fixture.train)[key] = class_id
        annotations[0, i] = (key, *(np.array([[v]], dtype=np.uint16) for v in (1, 2, 14, 15)),
                             np.array([[class_id]], dtype=np.uint8), np.array([[test]], dtype=np.uint8))
    scipy.io.savemat(folder / "cars_annos.mat", {"annotations": annotations,
                                                 "class_names": np.array([names], dtype=object)})
    fixture.files = {"car_ims.tgz": write_tar(folder / "car_ims.tgz", members),
                     "cars_annos.mat": folder / "cars_annos.mat"}
    return fixture


BUILDERS = {"cub": build_cub, "nabirds": build_nabirds, "flowers": build_flowers, "dogs": build_dogs,
            "cars": build_cars}


# ----------------------------------------------------------------------------- HTTP server


class FileServer:
    """Serves the files of ``folder`` on 127.0.0.1 with HTTP Range support, recording every request.

    ``drop_first``: file names whose first request is cut off half-way (headers promise the full length).
    ``drop_always``: file names whose every request is cut off half-way.
    ``ranges``: False makes the server ignore Range headers (answers 200 with the whole file).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.drop_first: set[str] = set()
        self.drop_always: set[str] = set()
        self.ranges = True
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                name = self.path.lstrip("/").split("?")[0]
                server.requests.append((name, dict(self.headers)))
                path = server.folder / name
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if match and server.ranges:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if name in server.drop_first or name in server.drop_always:
                    server.drop_first.discard(name)
                    body = body[: len(body) // 2]
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
