"""The device-resident pipeline: the same pixels as the DataLoader path, crops and flips in bounds and in distribution,
exact resume, the memory-budget fallback, and its wiring into prepare_data and fit (run with device="cpu")."""
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from e2vpt_viz import E2VPTConfig, FGVCDataset, TrainConfig, apply_prompts, build_transforms, fit
from e2vpt_viz.data import make_loaders
from e2vpt_viz.experiments.device_data import (DeviceImages, DeviceLoader, estimate_bytes, make_device_loaders,
                                   resized_shape)
from e2vpt_viz.experiments.run import load_run_config, prepare_data
from e2vpt_viz.training import seed_epoch

from conftest import tiny_vit

CROP = 16  # resize 18


pytestmark = pytest.mark.usefixtures("fresh_device_cache")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """An FGVC root of random images with landscape, portrait and square shapes, PNG and JPEG, 3 classes."""
    root = tmp_path_factory.mktemp("fgvc")
    rng = np.random.default_rng(0)
    shapes = [(30, 40), (50, 30), (24, 24), (33, 61), (45, 20), (18, 18)]
    splits = {"train": {}, "val": {}, "test": {}}
    (root / "images" / "a").mkdir(parents=True)
    for i in range(18):
        h, w = shapes[i % len(shapes)]
        ext = "jpg" if i % 3 == 0 else "png"
        rel = f"a/{i}.{ext}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / rel)
        splits["train" if i < 12 else "val" if i < 15 else "test"][rel] = i % 3
    for name, entries in splits.items():
        (root / f"{name}.json").write_text(json.dumps(entries))
    return root


def test_resized_shape_matches_torchvision():
    for h, w in [(30, 40), (50, 30), (24, 24), (33, 61), (375, 500), (500, 333)]:
        assert resized_shape(h, w, 18) == tuple(v2.functional.resize(torch.zeros(3, h, w), 18).shape[1:])


def test_eval_batches_equal_the_dataloader_path(root):
    for split in ("val", "test", "train"):
        dataset = FGVCDataset(root, split, build_transforms(CROP, train=False))
        expected = torch.stack([dataset[i][0] for i in range(len(dataset))])
        images = DeviceImages(FGVCDataset(root, split), CROP, train=False, device="cpu")
        batches = list(DeviceLoader(images, 4, shuffle=False))
        got = torch.cat([x for x, _ in batches])
        assert torch.equal(got, expected), split  # same decoded pixels, same resize: exactly equal on the CPU
        assert torch.cat([y for _, y in batches]).tolist() == [label for _, label in FGVCDataset(root, split).samples]


def test_train_crops_are_crops_of_the_resized_image_flipped_half_the_time(root):
    dataset = FGVCDataset(root, "train")
    images = DeviceImages(dataset, CROP, train=True, device="cpu")
    resized = [v2.functional.resize(v2.functional.pil_to_tensor(dataset[i][0]), 18, antialias=True)
               for i in range(len(dataset))]
    loader = DeviceLoader(images, 5, shuffle=True, seed=1)
    assert len(loader) == 3 and loader.batch_size == 5
    flips, tops, lefts = [], [], []
    for epoch in range(40):
        seed_epoch(loader, 1, epoch)
        plan = loader.epoch_plan()
        seed_epoch(loader, 1, epoch)
        batches = list(loader)
        order, top, left, flip = plan
        assert sorted(order.tolist()) == list(range(12))  # every image once per epoch
        got = torch.cat([x for x, _ in batches])
        assert torch.cat([y for _, y in batches]).tolist() == [dataset.samples[i][1] for i in order.tolist()]
        for k in range(12) if epoch < 2 else ():
            i, y, x = order[k].item(), top[k].item(), left[k].item()
            crop = resized[i][:, y:y + CROP, x:x + CROP]
            crop = crop.flip(-1) if flip[k] else crop
            expected = v2.functional.normalize(v2.functional.to_dtype(crop, torch.float32, scale=True),
                                               [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
            assert torch.equal(got[k], expected)
        heights, widths = images.heights_cpu[order], images.widths_cpu[order]
        assert (top >= 0).all() and (top <= heights - CROP).all() and (left <= widths - CROP).all()
        flips += flip.tolist()
        tops += (top / (heights - CROP).clamp(min=1)).tolist()
        lefts += (left[widths > 30] / (widths[widths > 30] - CROP)).tolist()
    assert 0.42 < np.mean(flips) < 0.58  # 480 fair coin flips
    assert min(lefts) == 0 and max(lefts) == 1  # both edges of a long side are reached
    assert 0.4 < np.mean(tops) < 0.6  # uniform offsets


def test_an_epoch_depends_only_on_seed_and_epoch(root):
    images = DeviceImages(FGVCDataset(root, "train"), CROP, train=True, device="cpu")
    a, b = DeviceLoader(images, 5, shuffle=True, seed=3), DeviceLoader(images, 5, shuffle=True, seed=3)
    seed_epoch(a, 3, 0), list(a)
    seed_epoch(a, 3, 1)
    seed_epoch(b, 3, 1)  # b skips epoch 0, as a resumed run does
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b))


def test_an_unreadable_evaluation_image_is_left_out_like_the_dataloader_path(root, tmp_path):
    import shutil

    val = json.loads((root / "val.json").read_text())
    (tmp_path / "images" / "a").mkdir(parents=True)
    for rel in val:
        shutil.copy(root / "images" / rel, tmp_path / "images" / rel)
    (tmp_path / "images" / "a" / "0bad.png").write_bytes(b"not an image")
    for name in ("train", "val", "test"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"a/0bad.png": 1, **val}))
    dataset = FGVCDataset(tmp_path, "val", build_transforms(CROP, train=False), substitute_unreadable=False)
    with pytest.warns(RuntimeWarning, match="0bad.png"):
        images = DeviceImages(dataset, CROP, train=False, device="cpu")
    with pytest.warns(RuntimeWarning, match="0bad.png"):
        expected = [item for item in (dataset[i] for i in range(len(dataset))) if item is not None]
    assert len(images) == len(expected) == len(dataset) - 1
    x, y = next(iter(DeviceLoader(images, len(dataset), shuffle=False)))
    assert torch.equal(x, torch.stack([e[0] for e in expected])) and y.tolist() == [e[1] for e in expected]


def test_estimate_counts_resized_training_images_and_eval_crops(root):
    size = lambda split: len(json.loads((root / f"{split}.json").read_text()))  # noqa: E731
    train = FGVCDataset(root, "train")
    expected = sum(3 * np.prod(resized_shape(*Image.open(p).size[::-1], 18)) for p, _ in train.samples)
    expected += 3 * CROP * CROP * (size("val") + size("test")) + 8 * 18
    assert estimate_bytes(root, CROP) == expected
    loaders = make_device_loaders(root, CROP, 4, 0, "cpu")
    held = sum(loader.images.nbytes for loader in loaders.values())
    assert held == expected


def test_over_budget_falls_back_to_the_dataloader_path_with_a_note(root, caplog):
    cfg = load_run_config("starter", [f"data.root={root}", "data.synthetic=false", f"data.crop_size={CROP}",
                                      "data.on_device=true", "data.device_budget_mb=0.001", "train.device=cpu"])
    with caplog.at_level(logging.WARNING, logger="e2vpt_viz.experiments.device_data"):
        loaders = prepare_data(cfg, 4, 0)
    assert isinstance(loaders["train"], torch.utils.data.DataLoader)
    assert "DataLoader path" in caplog.text and "device_budget_mb" in caplog.text
    cfg = cfg.replace(data={"device_budget_mb": 10})
    assert isinstance(prepare_data(cfg, 4, 0)["train"], DeviceLoader)
    cfg = cfg.replace(data={"on_device": "auto"})  # auto = only when training on CUDA
    assert isinstance(prepare_data(cfg, 4, 0)["train"], torch.utils.data.DataLoader)
    with pytest.raises(ValueError, match="on_device"):
        cfg.replace(data={"on_device": "sometimes"})


def test_fit_on_device_resumes_exactly_and_learns(root, tmp_path):
    loaders = make_device_loaders(root, CROP, 4, 0, "cpu")
    config = TrainConfig(epochs=3, warmup_epochs=1, base_lr=2.0, progress=False, device="cpu", seed=5)

    def model():
        torch.manual_seed(0)
        return apply_prompts(tiny_vit(img_size=CROP, patch_size=4), E2VPTConfig(num_prompts=2, num_kv_prompts=2), 3)

    straight = model()
    history = fit(straight, loaders["train"], loaders["val"], config)
    assert len(history) == 3 and all(np.isfinite(r["train_loss"]) for r in history)

    class Stop(Exception):
        pass

    def stop(record, _):
        if record["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        fit(model(), loaders["train"], loaders["val"], config, tmp_path, [stop])
    resumed = model()
    fit(resumed, loaders["train"], loaders["val"], config, tmp_path)
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_dataloader_path_keeps_its_behaviour(root):
    """make_loaders without the new options is the old DataLoader (shuffle with a seeded generator)."""
    loaders = make_loaders(root, CROP, 4, seed=0)
    assert loaders["train"].batch_size == 4 and loaders["train"].generator is not None
    assert loaders["val"].generator is None and not loaders["train"].pin_memory
