"""fit / evaluate, the schedule, resumable atomic checkpoints, NaN handling, prompt checkpoints."""
import hashlib
import json
import math

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

from conftest import tiny_vit
from e2vpt_viz import (CheckpointMismatchError, DatasetLayoutError, E2VPTConfig, FGVCDataset, FullConfig, TrainConfig,
                       TrainingDivergedError, VPTConfig, apply_prompts, build_transforms, evaluate, fit,
                       load_prompts, save_prompts)
from e2vpt_viz.training import STATE_FILE, get_lr


def toy_data(n=48, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.randn(n, 3, 32, 32, generator=g) * 0.5
    for i, label in enumerate(labels.tolist()):
        images[i, :, :8, 8 * label:8 * label + 8] += 2.0  # the class is which top-row patch is bright
    return TensorDataset(images, labels)


def loader(dataset, shuffle=True):
    return DataLoader(dataset, batch_size=16, shuffle=shuffle, generator=torch.Generator() if shuffle else None)


def make_model(config=None, prompt_seed=None):
    """The same random backbone every time; ``prompt_seed`` re-draws everything the method trains."""
    torch.manual_seed(0)
    model = apply_prompts(tiny_vit(), config or E2VPTConfig(num_prompts=3, num_kv_prompts=2), 4)
    if prompt_seed is not None:
        torch.manual_seed(prompt_seed)
        with torch.no_grad():
            for param in model.parameters():
                if param.requires_grad:
                    param.normal_()
    return model


CONFIG = TrainConfig(epochs=4, warmup_epochs=1, base_lr=2.0, progress=False, seed=3)


def test_lr_schedule_warmup_then_cosine():
    lrs = [get_lr(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.001


def test_fit_learns_and_reports_history():
    data = toy_data()
    model = make_model(FullConfig())
    before = evaluate(model, loader(data, False))
    history = fit(model, loader(data), loader(data, False),
                  TrainConfig(epochs=15, warmup_epochs=1, base_lr=0.1, optimizer="adamw", progress=False))
    assert [r["epoch"] for r in history] == list(range(1, 16))
    assert set(history[0]) == {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"}
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_acc"] >= 0.85 > before["acc"] + 0.3


def test_evaluate_counts_per_class():
    model = make_model()
    data = toy_data(n=16)
    result = evaluate(model, loader(data, False))
    preds = model.eval()(data.tensors[0]).argmax(-1)
    labels = data.tensors[1]
    assert result["count"] == 16
    assert result["acc"] == pytest.approx((preds == labels).float().mean().item())
    for c in range(4):
        assert result["per_class_acc"][c] == pytest.approx((preds[labels == c] == c).float().mean().item())


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_the_same_prompts(tmp_path):
    data = toy_data()
    straight = make_model()
    fit(straight, loader(data), None, CONFIG)

    def stop_after_two(record, model):
        if record["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(make_model(), loader(data), None, CONFIG, tmp_path, [stop_after_two])
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert state["epoch"] == 2
    resumed = make_model(prompt_seed=99)  # a different init: everything must come from the checkpoint
    history = fit(resumed, loader(data), None, CONFIG, tmp_path)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    for name in ("visual_prompts", "kv_prompts", "token_mask", "segment_mask", "head.weight"):
        assert torch.equal(straight.state_dict()[name], resumed.state_dict()[name]), name


def test_resume_with_another_config_fails_and_keeps_the_checkpoint(tmp_path):
    data = toy_data()
    fit(make_model(), loader(data), None, TrainConfig(epochs=2, warmup_epochs=1, progress=False), tmp_path)
    digest = hashlib.sha256((tmp_path / STATE_FILE).read_bytes()).hexdigest()
    with pytest.raises(CheckpointMismatchError, match="num_prompts"):
        fit(make_model(E2VPTConfig(num_prompts=4)), loader(data), None,
            TrainConfig(epochs=2, warmup_epochs=1, progress=False), tmp_path)
    with pytest.raises(CheckpointMismatchError, match="base_lr"):
        fit(make_model(), loader(data), None,
            TrainConfig(epochs=2, warmup_epochs=1, base_lr=0.5, progress=False), tmp_path)
    assert hashlib.sha256((tmp_path / STATE_FILE).read_bytes()).hexdigest() == digest


class PoisonAfter(Dataset):
    """Toy data whose images turn to NaN once ``poisoned`` is set."""

    def __init__(self, base):
        self.base, self.poisoned = base, False

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, label = self.base[i]
        return (image * math.nan if self.poisoned else image), label


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    data = PoisonAfter(toy_data())

    def poison(record, model):
        data.poisoned = True

    with pytest.raises(TrainingDivergedError, match="epoch 2.*lower base_lr.*intact"):
        fit(make_model(), loader(data), None, CONFIG, tmp_path, [poison])
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in state["trained"].values())


def test_prompt_checkpoint_round_trip_and_mismatch(tmp_path):
    model = make_model().eval()
    path = save_prompts(model, tmp_path / "prompts.safetensors", note="test")
    assert path.stat().st_size < 50_000
    fresh = make_model(prompt_seed=5).eval()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.equal(fresh(x), model(x))
    load_prompts(fresh, path)
    assert torch.equal(fresh(x), model(x))
    with pytest.raises(CheckpointMismatchError, match="num_kv_prompts"):
        load_prompts(make_model(E2VPTConfig(num_prompts=3, num_kv_prompts=4)), path)
    other_backbone = apply_prompts(tiny_vit(embed_dim=48), E2VPTConfig(num_prompts=3, num_kv_prompts=2), 4)
    with pytest.raises(CheckpointMismatchError, match="embed_dim"):
        load_prompts(other_backbone, path)
    with pytest.raises(CheckpointMismatchError, match="method"):
        load_prompts(make_model(VPTConfig(num_prompts=3, deep=True)), path)


def test_bad_train_config():
    for bad in (dict(epochs=0), dict(batch_size=-1), dict(warmup_epochs=5, epochs=5), dict(base_lr=0),
                dict(optimizer="adam")):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def write_fgvc(root, modes=("RGB",)):
    (root / "images" / "a").mkdir(parents=True)
    split = {}
    for i, mode in enumerate(modes * 2):
        rel = f"a/{i}.{'jpg' if mode == 'CMYK' else 'png'}"
        Image.new(mode, (40, 30), color=(200, 10, 10, 255)[: len(mode)] if mode != "L" else 128).save(
            root / "images" / rel)
        split[rel] = i % 2
    for name in ("train", "val", "test"):
        (root / f"{name}.json").write_text(json.dumps(split))


def test_fgvc_dataset_reads_splits_and_converts_to_rgb(tmp_path):
    write_fgvc(tmp_path, modes=("RGB", "L", "RGBA", "CMYK"))
    dataset = FGVCDataset(tmp_path, "train", build_transforms(32, train=True))
    assert len(dataset) == 8 and dataset.num_classes == 2
    image, label = dataset[1]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label in (0, 1)
    raw, _ = FGVCDataset(tmp_path, "val")[3]
    assert raw.mode == "RGB"


def test_dataset_layout_errors_name_expected_files(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist.*data_prep synthetic"):
        FGVCDataset(tmp_path / "missing")
    tmp_path.joinpath("train.json").write_text("{}")
    with pytest.raises(DatasetLayoutError, match="val.json is missing.*train.json, val.json and test.json"):
        FGVCDataset(tmp_path, "val")
    tmp_path.joinpath("val.json").write_text(json.dumps({"x/1.jpg": 0}))
    tmp_path.joinpath("train.json").write_text(json.dumps({"x/1.jpg": 0}))
    with pytest.raises(DatasetLayoutError, match="not found under"):
        FGVCDataset(tmp_path, "val")


def test_a_lora_checkpoint_loads_back_into_the_model_it_came_from(tmp_path):
    """LoRA's target modules are a tuple in the config and a list once stored: the signature check must not call
    them different (it did, and refused every LoRA checkpoint)."""
    from e2vpt_viz import load_prompts, method_config, save_prompts

    torch.manual_seed(0)
    model = apply_prompts(tiny_vit(), method_config("lora", rank=2), 4)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(0.01)
    path = save_prompts(model, tmp_path / "lora.safetensors")
    torch.manual_seed(0)
    again = load_prompts(apply_prompts(tiny_vit(), method_config("lora", rank=2), 4), path)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(images), again.eval()(images))
