"""Loading real-world image files: colour modes become RGB; corrupt files are listed by `verify` and skipped
with a warning by FGVCDataset, so an epoch never stops on them."""
from __future__ import annotations

import json
import logging
import warnings

import pytest
import torch
from fgvc_fixtures import jpeg
from PIL import Image
from torch.utils.data import DataLoader

from data_prep.__main__ import main
from data_prep.verify import verify_root
from e2vpt_viz.data import FGVCDataset, build_transforms, fixed_transforms, make_loaders, random_transforms


def write_root(root, modes=("RGB",) * 6, corrupt=()):
    """An FGVC root with one image per mode (classes alternate) and the named images broken."""
    (root / "images" / "a").mkdir(parents=True)
    split = {}
    for i, mode in enumerate(modes):
        key = f"a/{i}.{'png' if mode == 'RGBA' else 'jpg'}"
        (root / "images" / key).write_bytes(jpeg(i, mode=mode, size=24))
        split[key] = i % 2
    for key, how in corrupt:
        path = root / "images" / key
        path.write_bytes(path.read_bytes()[: 200] if how == "truncated" else b"not an image at all")
    for name in ("train", "val", "test"):
        (root / f"{name}.json").write_text(json.dumps(split))
    return root


def test_grayscale_cmyk_and_rgba_files_load_as_rgb(tmp_path):
    root = write_root(tmp_path, modes=("L", "CMYK", "RGBA", "RGB"))
    dataset = FGVCDataset(root, "train")
    for index, (path, _) in enumerate(dataset.samples):
        with Image.open(path) as raw:
            assert raw.mode == ("L", "CMYK", "RGBA", "RGB")[index]
        image, _ = dataset[index]
        assert image.mode == "RGB" and image.size == (24, 24)
    tensor, _ = FGVCDataset(root, "val", build_transforms(16, train=False))[1]
    assert tensor.shape == (3, 16, 16) and tensor.dtype == torch.float32


def test_verify_lists_corrupt_images_and_fails(tmp_path, capsys, caplog):
    root = write_root(tmp_path, corrupt=[("a/1.jpg", "truncated"), ("a/4.jpg", "garbage")])
    bad = verify_root(root)
    assert [path.name for path, _ in bad] == ["1.jpg", "4.jpg"]
    assert "UnidentifiedImageError" in bad[1][1]
    with caplog.at_level(logging.INFO):
        code = main(["verify", "--root", str(root)])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]  # besides progress bars
    assert code == 2 and len(errors) == 1 and "2 images in" in errors[0] and "cannot be read" in errors[0]
    assert f"unreadable: {root / 'images/a/1.jpg'}" in caplog.text and "a/4.jpg" in caplog.text


def test_verify_passes_a_clean_root(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        assert main(["verify", "--root", str(write_root(tmp_path))]) == 0
    assert "checked 6 images" in caplog.text and "all images" in caplog.text


def test_a_corrupt_image_is_skipped_with_a_warning_never_a_crash_mid_epoch(tmp_path):
    root = write_root(tmp_path, corrupt=[("a/3.jpg", "truncated")])
    dataset = FGVCDataset(root, "train", build_transforms(16, train=True))
    with pytest.warns(RuntimeWarning, match=r"skipping unreadable image .*images/a/3.jpg"):
        batches = list(DataLoader(dataset, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert sum(len(labels) for _, labels in batches) == 6
    with pytest.warns(RuntimeWarning, match="3.jpg"):
        image, label = dataset[3]  # replaced by the next readable sample, with that sample's label
    assert label == dataset.samples[4][1] and image.shape == (3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loader = DataLoader(dataset, batch_size=2, num_workers=2)
        assert sum(len(labels) for _, labels in loader) == 6  # worker processes survive it too


def test_the_cache_keeps_each_image_after_its_fixed_transform_and_changes_no_sample(tmp_path):
    """cache=True runs the deterministic resize once per image; random crops, flips and labels are those of the
    uncached build_transforms pipeline under the same seed, every epoch, and make_loaders' eval batches too."""
    root = write_root(tmp_path)  # 24-px images: resized to 18, cropped to 16
    resized = []
    fixed = fixed_transforms(16, train=True)
    cached = FGVCDataset(root, "train", random_transforms(16, train=True), cache=True,
                         fixed_transform=lambda image: resized.append(1) or fixed(image))
    uncached = FGVCDataset(root, "train", build_transforms(16, train=True))
    for epoch in range(3):
        for index in range(len(uncached)):
            torch.manual_seed(10 * epoch + index)
            image, label = cached[index]
            torch.manual_seed(10 * epoch + index)
            expected, expected_label = uncached[index]
            assert torch.equal(image, expected) and label == expected_label
    assert len(resized) == len(uncached)
    val = make_loaders(root, 16, batch_size=4, cache=True)["val"]
    images, labels = next(iter(val))
    expected = FGVCDataset(root, "val", build_transforms(16, train=False))
    assert all(torch.equal(images[i], expected[i][0]) for i in range(4))
