"""Input preprocessing end to end: the resize rule (VPT's FGVC crop pipeline or its VTAB-1k square one), the
normalisation (ImageNet's, as the papers, or the backbone's own pre-training statistics) and the training split
(train, or VTAB-1k's train800val200), through the DataLoader path, the device-resident path and a run."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image

from e2vpt_viz.backbones import IMAGENET_MEAN, IMAGENET_STD, backbone_input_size, backbone_mean_std
from e2vpt_viz.data import FGVC, FGVCDataset, Preprocessing, build_transforms, loader_splits, make_loaders
from e2vpt_viz.experiments.config import load_run_config
from e2vpt_viz.experiments.device_data import DeviceImages, make_device_loaders
from e2vpt_viz.experiments.run import evaluate_run, prepare_data, prune_run, train_run
from e2vpt_viz.pruning import PruningError

pytestmark = pytest.mark.usefixtures("one_thread")

CLIP = "vit_base_patch16_clip_224.openai"
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def test_backbone_statistics_come_from_timm_pretrained_configs():
    mean, std = backbone_mean_std(CLIP)
    assert mean == pytest.approx(CLIP_MEAN) and std == pytest.approx(CLIP_STD)
    assert backbone_mean_std("vit_base_patch16_siglip_224") == ((0.5,) * 3, (0.5,) * 3)
    # the VPT paper's ImageNet-21k ViT-B/16 was pre-trained on [-1, 1] inputs; the papers feed it ImageNet statistics
    assert backbone_mean_std("vit_base_patch16_224.orig_in21k") == ((0.5,) * 3, (0.5,) * 3)
    assert backbone_mean_std("vit_base_patch14_reg4_dinov2.lvd142m") == (IMAGENET_MEAN, IMAGENET_STD)
    assert backbone_mean_std("starter-vit") == (IMAGENET_MEAN, IMAGENET_STD)


def test_backbone_input_sizes_come_from_timm_pretrained_configs():
    assert backbone_input_size("vit_base_patch16_224.orig_in21k") == (3, 224, 224)
    assert backbone_input_size("vit_small_patch14_reg4_dinov2.lvd142m") == (3, 518, 518)
    assert backbone_input_size("eva02_base_patch14_448.mim_in22k_ft_in22k_in1k") == (3, 448, 448)
    assert backbone_input_size("starter-vit") == (3, 64, 64)


def test_config_picks_the_statistics_and_refuses_unknown_values_in_one_line():
    base = load_run_config("starter", [f"backbone.name={CLIP}", "backbone.pretrained=false"])
    assert base.data.preprocessing(CLIP) == FGVC  # the papers' choice is the default
    own = base.replace(data={"normalize": "backbone", "resize": "square"}).data.preprocessing(CLIP)
    assert (own.resize, own.mean, own.std) == ("square", pytest.approx(CLIP_MEAN), pytest.approx(CLIP_STD))
    for override, words in (("data.normalize=clip", "imagenet"), ("data.resize=bicubic", "square"),
                            ("data.train_split=val", "trainval")):
        with pytest.raises(ValueError, match=words) as err:
            load_run_config("starter", [override])
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="3 numbers"):
        Preprocessing(mean=(0.5, 0.5))


def _expected(image: Image.Image, size: tuple[int, int], mean, std) -> torch.Tensor:
    """The model input by hand: bilinear resize (without antialiasing, as tf.image.resize), /255, normalise."""
    pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)[None].float()
    resized = torch.nn.functional.interpolate(pixels, size=size, mode="bilinear", align_corners=False)[0]
    resized = resized.round().clamp(0, 255) / 255
    return (resized - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def test_square_pipeline_resizes_the_whole_image_and_never_augments(tiny_root):
    square = Preprocessing("square", CLIP_MEAN, CLIP_STD)
    train = FGVCDataset(tiny_root, "train", build_transforms(32, True, square))
    path = train.samples[0][0]
    with Image.open(path) as image:
        expected = _expected(image, (32, 32), CLIP_MEAN, CLIP_STD)
    first, again = train[0][0], train[0][0]
    assert first.shape == (3, 32, 32) and torch.equal(first, again)  # no random crop, no flip, even in training
    assert (first - expected).abs().max() < 1.5 / 255 / min(CLIP_STD)  # within one uint8 step of the rounding
    crop = FGVCDataset(tiny_root, "train", build_transforms(32, True, FGVC))
    torch.manual_seed(0)
    draws = {tuple(crop[0][0].flatten()[:64].tolist()) for _ in range(8)}
    assert len(draws) > 1  # the FGVC pipeline does augment its training split


@pytest.mark.parametrize("resize", ["crop", "square"])
def test_device_path_gives_the_dataloader_path_images_with_any_statistics(tiny_root, resize):
    pre = Preprocessing(resize, CLIP_MEAN, CLIP_STD)
    loader_images = torch.cat([x for x, _ in make_loaders(tiny_root, 32, 64, preprocessing=pre)["val"]])
    device_loader = make_device_loaders(tiny_root, 32, 64, 0, "cpu", preprocessing=pre)["val"]
    device_images = torch.cat([x for x, _ in device_loader])
    assert torch.allclose(loader_images, device_images, atol=1e-5)
    imagenet = torch.cat([x for x, _ in make_loaders(tiny_root, 32, 64)["val"]])
    assert (imagenet - loader_images).abs().max() > 0.1  # the statistics were applied, not ImageNet's
    if resize == "square":  # training images too: no augmentation, so the same pixels as the DataLoader path
        images = DeviceImages(FGVCDataset(tiny_root, "train"), 32, True, "cpu", preprocessing=pre)
        dataset = FGVCDataset(tiny_root, "train", build_transforms(32, True, pre))
        assert torch.allclose(images.batch(torch.tensor([0, 3])), torch.stack([dataset[0][0], dataset[3][0]]),
                              atol=1e-5)
        batches = list(make_device_loaders(tiny_root, 32, 8, 0, "cpu", preprocessing=pre)["train"])
        assert sum(len(y) for _, y in batches) == len(dataset)


def test_trainval_runs_train_on_train_and_val_and_refuse_what_needs_validation(trainval_root, tmp_path):
    assert loader_splits("trainval") == {"train": "trainval", "test": "test"}
    cfg = load_run_config("starter", [f"data.root={trainval_root}", "data.synthetic=false", "data.crop_size=32",
                                      "backbone.pretrained=false", "backbone.name=starter-vit", "train.epochs=1",
                                      "train.batch_size=8", "data.train_split=trainval", "data.resize=square",
                                      "data.normalize=backbone", f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(ValueError, match="starter-vit takes 64"):
        prepare_data(cfg, 8, 0) and train_run(cfg, progress=False)
    cfg = cfg.replace(data={"crop_size": 64})
    loaders = prepare_data(cfg, 8, 0)
    sizes = {split: len(FGVCDataset(trainval_root, split)) for split in ("train", "val", "trainval")}
    assert set(loaders) == {"train", "test"} and len(loaders["train"].dataset) == sizes["trainval"]
    assert sizes["trainval"] == sizes["train"] + sizes["val"]
    metrics = train_run(cfg, progress=False)
    assert metrics["val_acc"] is None and 0 <= metrics["test_acc"] <= 1
    assert metrics["config"]["data"]["train_split"] == "trainval"
    with pytest.raises(ValueError, match="evaluate train or test instead"):
        evaluate_run(cfg, split="val")
    with pytest.raises(PruningError, match="train_split=train"):
        prune_run(cfg.replace(method={"name": "e2vpt"}), progress=False)
