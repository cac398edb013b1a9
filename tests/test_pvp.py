"""PVP: saving and loading pre-trained prompt modules, source tasks, and the few-shot comparison."""
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from PIL import Image

from data_prep.synthetic import generate_synthetic
from e2vpt_viz import E2VPTConfig, LinearConfig, VPTConfig, apply_prompts
from e2vpt_viz.checkpoint import CheckpointMismatchError
from e2vpt_viz.experiments.fewshot import pretrain_prompts, source_loaders
from e2vpt_viz.pvp import load_prompt_modules, save_prompt_modules
from e2vpt_viz.experiments.run import load_run_config

from conftest import tiny_vit


def model_with(config, seed=0, **vit):
    torch.manual_seed(seed)
    return apply_prompts(tiny_vit(**vit), config, 3)


def test_round_trip_moves_prompts_only(tmp_path):
    source = model_with(E2VPTConfig(num_prompts=3, num_kv_prompts=2), seed=0)
    with torch.no_grad():
        source.token_mask.fill_(0.25)
    path = save_prompt_modules(source, tmp_path / "pvp.safetensors", note="x")
    target = model_with(E2VPTConfig(num_prompts=3, num_kv_prompts=2), seed=1)
    head = target.head.weight.detach().clone()
    load_prompt_modules(target, path)
    assert torch.equal(target.visual_prompts, 0.25 * source.visual_prompts)  # the prompts as they acted: P·γ·Γ
    assert torch.equal(target.kv_prompts, source.kv_prompts)
    assert torch.equal(target.head.weight, head)  # the head stays new
    assert torch.equal(target.token_mask, torch.ones(3))  # masks are not transferred
    assert path.stat().st_size < 20_000
    from e2vpt_viz.pvp import prompt_file_info
    info = prompt_file_info(path)
    assert info["note"] == "x" and info["method"]["num_prompts"] == 3
    assert info["shapes"] == {"visual_prompts": tuple(source.visual_prompts.shape),
                              "kv_prompts": tuple(source.kv_prompts.shape)}


@pytest.mark.parametrize("config", [E2VPTConfig(num_prompts=3, num_kv_prompts=2, dropout=0.1),
                                    VPTConfig(num_prompts=3, deep=True)], ids=["e2vpt", "vpt-deep"])
def test_downstream_model_at_step_0_computes_what_the_pretrained_one_did(tmp_path, config):
    """PVP transfers the function it pre-trained: trained masks (γ, Γ) are folded into the saved prompts, so a new
    model with masks at one and the source head gives the source model's logits exactly."""
    source = model_with(config, seed=0)
    if source.token_mask is not None:
        with torch.no_grad():
            source.token_mask.uniform_(0.2, 1.5)
            source.segment_mask.uniform_(-1.0, 2.0)
    path = save_prompt_modules(source, tmp_path / "pvp.safetensors")
    target = model_with(config, seed=0)  # the same frozen backbone (the tiny test ViT is random)
    with torch.no_grad():
        for p in (target.visual_prompts, target.kv_prompts):
            if p is not None:
                p.uniform_(-1, 1)  # its own initialisation, overwritten by the file
    load_prompt_modules(target, path)
    target.head.load_state_dict(source.head.state_dict())  # only to compare the functions; PVP's head is new
    images = torch.randn(4, 3, 32, 32)
    source.eval(), target.eval()
    with torch.no_grad():
        torch.testing.assert_close(target(images), source(images), rtol=1e-5, atol=1e-5)
        if source.token_mask is not None:  # and the masks matter: the raw prompts would compute something else
            with torch.no_grad():
                target.visual_prompts.copy_(source.visual_prompts)
            assert (target(images) - source(images)).abs().max() > 1e-3


def test_files_saved_without_masks_are_refused(tmp_path):
    from e2vpt_viz.checkpoint import save_safetensors

    source = model_with(E2VPTConfig(num_prompts=3, num_kv_prompts=2))
    path = save_safetensors({"visual_prompts": source.visual_prompts.detach(), "kv_prompts": source.kv_prompts.detach()},
                            tmp_path / "old.safetensors", {"backbone": "{}", "method": "{}"})
    target = model_with(E2VPTConfig(num_prompts=3, num_kv_prompts=2), seed=1)
    with pytest.raises(CheckpointMismatchError, match="without their token and segment masks.*pvp-pretrain command again"):
        load_prompt_modules(target, path)


@pytest.mark.parametrize("other, vit, message", [
    (E2VPTConfig(num_prompts=3, num_kv_prompts=2), dict(embed_dim=48, num_heads=2), "embed_dim: file 32 vs model 48"),
    (E2VPTConfig(num_prompts=4, num_kv_prompts=2), {}, "visual_prompts shape: file (3, 3, 32) vs model (3, 4, 32)"),
    (E2VPTConfig(num_prompts=3, num_kv_prompts=5), {}, "kv_prompts shape"),
    (VPTConfig(num_prompts=3, deep=True), {}, "prompt modules: file ['kv_prompts', 'visual_prompts']"),
])
def test_mismatched_prompts_name_both_sides(tmp_path, other, vit, message):
    path = save_prompt_modules(model_with(E2VPTConfig(num_prompts=3, num_kv_prompts=2)), tmp_path / "p.safetensors")
    target = model_with(other, **vit)
    before = target.visual_prompts.detach().clone()
    with pytest.raises(CheckpointMismatchError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        load_prompt_modules(target, path)
    assert torch.equal(target.visual_prompts, before)  # nothing half-loaded


def test_missing_file_and_promptless_models(tmp_path):
    with pytest.raises(FileNotFoundError, match="pvp-pretrain"):
        load_prompt_modules(model_with(E2VPTConfig()), tmp_path / "none.safetensors")
    with pytest.raises(ValueError, match="no prompt modules"):
        save_prompt_modules(apply_prompts(tiny_vit(), LinearConfig(), 3), tmp_path / "x")


def test_source_can_be_an_imagenet_format_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("n01", "n02"):
            folder = tmp_path / "inet" / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                mode = "L" if i else "RGB"  # grayscale files load as RGB
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).convert(mode).save(folder / f"{i}.png")
    loaders = source_loaders(tmp_path / "inet", 32, 2)
    images, labels = next(iter(loaders["train"]))
    assert images.shape == (2, 3, 32, 32) and loaders["train"].dataset.num_classes == 2
    assert len(loaders["val"].dataset) == 4
    with pytest.raises(FileNotFoundError, match="ImageNet-format"):
        source_loaders(tmp_path, 32, 2)


def test_pretrain_prompts_on_a_small_source_task(tmp_path):
    source = generate_synthetic(tmp_path / "src", task="source", seed=3, num_classes=5, train_per_class=4,
                                val_per_class=2, test_per_class=1)
    cfg = load_run_config("starter", ["train.batch_size=10", "train.seed=5"])
    path = pretrain_prompts(cfg, source, tmp_path / "pvp.safetensors", epochs=2, progress=False, run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "train_state.pt").is_file()
    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
        prompts = f.get_tensor("visual_prompts")
    assert meta["backbone"]["embed_dim"] == 96 and meta["method"]["method"] == "e2vpt"
    assert 0.0 <= meta["source_val_acc"] <= 1.0 and meta["train_config"]["epochs"] == 2
    from e2vpt_viz.experiments.run import build_model
    fresh = build_model(cfg, 5)
    assert prompts.shape == fresh.visual_prompts.shape and not torch.equal(prompts, fresh.visual_prompts)


def test_committed_pvp_prompts_beat_random_init_at_one_and_two_shots():
    """Protects the PVP claim of docs/pvp.md on the lessons' shipped few-shot runs (``lesson-results``, stage
    ``fewshot``: the committed pre-trained prompts against random initialisation, 3 seeds, 50 epochs): at 1 and 2
    shots PVP beats random on the mean by more than random's sd, and on at least 2 of the 3 seeds. That those runs are
    what the code computes today is checked by notebook 05's test (tests/test_notebooks.py), which trains the 1-shot
    runs of seed 0 again and compares them with their record."""
    from e2vpt_viz.backbones import starter_weights_path
    from e2vpt_viz.experiments.lesson_results import SHIPPED_DIR

    path = SHIPPED_DIR / "fewshot.json"
    if not path.is_file():
        pytest.skip("no shipped few-shot runs in this checkout")
    shipped = json.loads(path.read_text())
    prompts = starter_weights_path("starter-vit").with_name("starter-vit-e2vpt-pvp.safetensors")
    assert shipped["prompts"] == prompts.name
    with safe_open(str(prompts), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
    assert meta["command"].startswith("python -m e2vpt_viz pvp-pretrain --config starter")  # provenance
    assert meta["source_val_acc"] > 0.8
    rows = {row["shots"]: row for row in shipped["rows"]}
    for shots in (1, 2):
        row = rows[shots]
        assert len(row["pvp"]) == len(row["random"]) == 3
        assert row["pvp_mean"] > row["random_mean"] + row["random_std"], row
        assert sum(p > r for p, r in zip(row["pvp"], row["random"])) >= 2, row  # per seed, not only on average


def test_packaged_prompts_ship_for_the_starter_only():
    from e2vpt_viz.experiments.fewshot import packaged_prompts
    from e2vpt_viz.pvp import prompt_file_info
    starter = load_run_config("starter")
    path = packaged_prompts(starter)
    assert path.name == "starter-vit-e2vpt-pvp.safetensors" and prompt_file_info(path)["source_val_acc"] > 0.8
    with pytest.raises(FileNotFoundError, match="pvp-pretrain --config"):
        packaged_prompts(load_run_config("cub_e2vpt"))
