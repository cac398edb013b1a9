"""Case 7: image files as they come: every colour mode loads as RGB (16-bit keeps its range), and every unreadable
file (corrupt, zero bytes, a decompression bomb) is skipped with a warning naming it; an epoch never stops."""
from __future__ import annotations

import io
import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from fgvc_fixtures import jpeg
from PIL import Image

from conftest import tiny_vit
from data_prep.verify import verify_root
from e2vpt_viz import E2VPTConfig, TrainConfig, apply_prompts, evaluate, fit
from e2vpt_viz.data import DatasetLayoutError, FGVCDataset, make_loaders


def png(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, **kwargs).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGB pixels and holds almost none: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def palette_with_transparency() -> bytes:
    image = Image.new("P", (24, 24), 1)
    image.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)
    return buffer.getvalue()


GRADIENT = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)

READABLE = {  # name: (file bytes, PIL mode on disk)
    "rgb.jpg": (lambda: jpeg(0, size=24), "RGB"),
    "grayscale.jpg": (lambda: jpeg(1, mode="L", size=24), "L"),
    "cmyk.jpg": (lambda: jpeg(2, mode="CMYK", size=24), "CMYK"),
    "rgba.png": (lambda: jpeg(3, mode="RGBA", size=24), "RGBA"),
    "palette-transparent.png": (palette_with_transparency, "P"),
    "sixteen-bit.png": (lambda: png(GRADIENT), "I;16"),
}
UNREADABLE = {  # name: (file bytes, what the warning says)
    "truncated.jpg": (lambda: jpeg(4, size=64)[:300], "truncated"),
    "garbage.jpg": (lambda: b"this is not an image" * 10, "cannot identify image file"),
    "zero-bytes.jpg": (lambda: b"", "cannot identify image file"),
    "bomb-96Mpx.png": (lambda: png_header_only(12_000, 8_000), "over the decompression-bomb limit"),
    "bomb-400Mpx.png": (lambda: png_header_only(20_000, 20_000), "could be decompression bomb"),
    "deleted-after-splitting.jpg": (None, "No such file or directory"),
}


def write_root(root: Path, names) -> Path:
    """An FGVC root: a readable RGB image per class first, then ``names`` (classes alternate)."""
    (root / "images" / "a").mkdir(parents=True)
    split = {}
    for i, name in enumerate(["first-0.jpg", "first-1.jpg", *names]):
        make = READABLE.get(name, UNREADABLE.get(name, (lambda: jpeg(100 + i, size=24), None)))[0]
        if make is not None:  # None: listed in the split, but the file is gone
            (root / "images" / "a" / name).write_bytes(make())
        split[f"a/{name}"] = i % 2
    for part in ("train", "val", "test"):
        (root / f"{part}.json").write_text(json.dumps(split))
    return root


@pytest.mark.parametrize("name", list(READABLE))
def test_every_colour_mode_loads_as_rgb(name, tmp_path, outcome):
    """7a · grayscale, CMYK, RGBA, palette+transparency and 16-bit files → loaded as RGB"""
    dataset = FGVCDataset(write_root(tmp_path, [name]), "train")
    index = dataset.keys.index(f"a/{name}")
    with Image.open(dataset.samples[index][0]) as raw:
        assert raw.mode == READABLE[name][1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # nothing is skipped
        image, label = dataset[index]
    assert image.mode == "RGB" and label == index % 2
    pixels = np.asarray(image)
    if name == "sixteen-bit.png":  # PIL's own convert("RGB") clips 16-bit values: an all-white image
        assert pixels.min() == 0 and pixels.max() == 255 and 120 < pixels.mean() < 135
        np.testing.assert_array_equal(pixels[..., 0], GRADIENT >> 8)
    outcome(f"{READABLE[name][1]} → RGB {image.size[0]}x{image.size[1]}, pixel mean {pixels.mean():.0f}")


@pytest.mark.parametrize("name", list(UNREADABLE))
def test_unreadable_files_are_skipped_with_a_warning_naming_them(name, tmp_path, outcome):
    """7b · corrupt JPEG, zero-byte file, garbage, decompression bomb, deleted file → skipped, warning names it"""
    dataset = FGVCDataset(write_root(tmp_path, [name]), "train")
    index = dataset.keys.index(f"a/{name}")
    with pytest.warns(RuntimeWarning) as caught:
        image, label = dataset[index]
    messages = [str(w.message) for w in caught if w.category is RuntimeWarning]  # PIL may add its own, unnamed
    assert len(messages) == 1 and messages[0].startswith(f"skipping unreadable image {dataset.samples[index][0]} (")
    assert UNREADABLE[name][1] in messages[0], messages[0]
    replacement = (index + 1) % len(dataset)  # the next readable sample stands in, with its own label
    assert image.mode == "RGB" and label == dataset.samples[replacement][1]
    outcome(messages[0].replace(str(tmp_path), "~")[:150])


def test_an_epoch_over_all_of_them_never_stops(tmp_path, outcome):
    """7c · a training epoch and `data_prep verify` over all of these files → the epoch completes, verify lists them;
    validation leaves them out and counts them (and, over its default 5% limit, refuses in one line)"""
    root = write_root(tmp_path, [*READABLE, *UNREADABLE])
    loaders = make_loaders(root, crop_size=32, batch_size=4, seed=0)
    listed = len(loaders["val"].dataset)
    loaders["val"].dataset.max_unreadable = 1.0  # allow all of them for this epoch
    torch.manual_seed(0)
    model = apply_prompts(tiny_vit(), E2VPTConfig(num_prompts=2, num_kv_prompts=2), 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(model, loaders["train"], loaders["val"],
                      TrainConfig(epochs=1, warmup_epochs=0, batch_size=4, progress=False))
    skipped = {str(w.message).split(" (")[0].rsplit("/", 1)[1] for w in caught
               if str(w.message).startswith("skipping unreadable image")}
    assert skipped == set(UNREADABLE) and len(history) == 1 and np.isfinite(history[0]["train_loss"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counted = evaluate(model, loaders["val"])
        assert counted["skipped"] == len(UNREADABLE) and counted["count"] == listed - len(UNREADABLE)
        loaders["val"].dataset.max_unreadable = 0.05
        with pytest.raises(DatasetLayoutError, match=f"{len(UNREADABLE)} of the {listed} images"):
            evaluate(model, loaders["val"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # PIL's own, unnamed; verify names the file
        bad = verify_root(root, workers=1)
    assert sorted(path.name for path, _ in bad) == sorted(UNREADABLE)
    outcome(f"1 epoch over {len(loaders['train'].dataset)} files finished (loss {history[0]['train_loss']:.2f}); "
            f"skipped with warnings: {', '.join(sorted(skipped))}; verify listed the same {len(bad)}")
