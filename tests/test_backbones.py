"""load_backbone: timm names, local weights files, offline errors, unknown and non-ViT names."""
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from e2vpt_viz import BackboneError, load_backbone
from e2vpt_viz.backbones import STARTER_BACKBONES


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", num_classes=1000)


def test_timm_name_without_weights_builds_a_headless_vit():
    model = load_backbone("vit_small_patch16_224", pretrained=False)
    assert model.num_classes == 0 and model.embed_dim == 384 and len(model.blocks) == 12


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_loads_exactly(tmp_path, reference, suffix):
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(reference.state_dict(), str(path))
    else:
        torch.save({"model": reference.state_dict()}, path)
    model = load_backbone("vit_tiny_patch16_224", checkpoint=path)
    assert model.num_classes == 0
    for name, value in model.state_dict().items():
        assert torch.equal(value, reference.state_dict()[name]), name


def jax_npz(model) -> dict:
    """The model's weights in the layout of Google's original ViT .npz checkpoints (e.g. ViT-B_16.npz)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    D = model.embed_dim
    H = model.blocks[0].attn.num_heads
    w = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
         "embedding/bias": sd["patch_embed.proj.bias"], "cls": sd["cls_token"],
         "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
         "Transformer/encoder_norm/scale": sd["norm.weight"], "Transformer/encoder_norm/bias": sd["norm.bias"]}
    for i in range(len(model.blocks)):
        b, jb = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        mha = jb + "MultiHeadDotProductAttention_1/"
        for j, n in enumerate(("query", "key", "value")):
            w[mha + f"{n}/kernel"] = sd[b + "attn.qkv.weight"][j * D:(j + 1) * D].T.reshape(D, H, D // H)
            w[mha + f"{n}/bias"] = sd[b + "attn.qkv.bias"][j * D:(j + 1) * D].reshape(H, D // H)
        w[mha + "out/kernel"] = sd[b + "attn.proj.weight"].T.reshape(H, D // H, D)
        w[mha + "out/bias"] = sd[b + "attn.proj.bias"]
        for ln, norm in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            w[jb + f"{ln}/scale"], w[jb + f"{ln}/bias"] = sd[b + f"{norm}.weight"], sd[b + f"{norm}.bias"]
        for r in range(2):
            w[jb + f"MlpBlock_3/Dense_{r}/kernel"] = sd[b + f"mlp.fc{r + 1}.weight"].T
            w[jb + f"MlpBlock_3/Dense_{r}/bias"] = sd[b + f"mlp.fc{r + 1}.bias"]
    return w


def test_original_jax_npz_checkpoint_loads_exactly(tmp_path, reference):
    path = tmp_path / "ViT-Ti_16.npz"
    np.savez(path, **jax_npz(reference))
    model = load_backbone("vit_tiny_patch16_224", checkpoint=path)
    expected = reference.state_dict()
    for name, value in model.state_dict().items():
        assert torch.allclose(value, expected[name], atol=1e-6), name
    wrong = tmp_path / "ViT-S_16.npz"
    np.savez(wrong, **jax_npz(timm.create_model("vit_small_patch16_224")))
    with pytest.raises(BackboneError, match="vit_tiny_patch16_224"):
        load_backbone("vit_tiny_patch16_224", checkpoint=wrong)


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path, reference):
    path = tmp_path / "evil.pth"
    torch.save({"model": reference.state_dict(), "payload": np.dtype("float64")}, path)  # non-tensor object
    with pytest.raises(BackboneError, match="Could not read weights"):
        load_backbone("vit_tiny_patch16_224", checkpoint=path)


def test_weights_of_another_architecture_give_a_clear_error(tmp_path, reference):
    path = tmp_path / "tiny.safetensors"
    save_file(reference.state_dict(), str(path))
    with pytest.raises(BackboneError, match="do not fit 'vit_small_patch16_224'"):
        load_backbone("vit_small_patch16_224", checkpoint=path)


def test_missing_checkpoint_file():
    with pytest.raises(BackboneError, match="does not exist"):
        load_backbone("vit_tiny_patch16_224", checkpoint="/nonexistent/weights.safetensors")


OFFLINE_NAMES = ("vit_tiny_patch16_224", "eva02_tiny_patch14_224.mim_in22k", "deit_tiny_distilled_patch16_224")


def test_offline_download_failure_says_what_to_do():
    """Without internet, a ViT, an EVA-02 and a distilled DeiT by name (the families share the download path): one
    line per name saying to pass a local file or use the starter."""
    code = ("from e2vpt_viz import load_backbone, BackboneError\n"
            f"for name in {OFFLINE_NAMES!r}:\n"
            "    try:\n        load_backbone(name)\n"
            "    except BackboneError as e:\n        print('CLEAR:', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    lines = out.stdout.splitlines()
    assert len(lines) == len(OFFLINE_NAMES) and all(line.startswith("CLEAR:") for line in lines), out.stderr
    for name, line in zip(OFFLINE_NAMES, lines):
        assert f"for {name!r}" in line and "checkpoint=" in line and "starter-vit" in line, line
    assert "Traceback" not in out.stderr


def test_unknown_name_lists_close_matches():
    with pytest.raises(BackboneError, match="Close matches: .*vit_base_patch16_224"):
        load_backbone("vit_bse_patch16_224", pretrained=False)


def test_non_vit_name_is_refused():
    with pytest.raises(BackboneError, match="ResNet, not a Vision Transformer"):
        load_backbone("resnet18", pretrained=False)


def test_starter_backbone_builds_without_weights():
    model = load_backbone("starter-vit", pretrained=False)
    assert model.patch_embed.img_size == (64, 64) and model.embed_dim == 96 and model.num_classes == 0


@pytest.mark.parametrize("name", list(STARTER_BACKBONES))
def test_committed_starter_weights_load_and_record_how_they_were_made(name):
    from safetensors.torch import load_file

    from e2vpt_viz.backbones import starter_metadata, starter_weights_path

    model = load_backbone(name)
    saved = load_file(str(starter_weights_path(name)))
    assert set(saved) == set(model.state_dict())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    meta = starter_metadata(name)
    assert meta["name"] == name and meta["seed"] == 0 and "pretrain-starter" in meta["command"]
    assert meta["architecture"] == STARTER_BACKBONES[name] and meta["source_val_acc"] > 0.8
    assert meta["train_config"]["epochs"] == 30  # the same recipe for every starter: they differ only as named
    assert len(model.blocks) == STARTER_BACKBONES[name]["depth"]
    registers = STARTER_BACKBONES[name].get("reg_tokens", 0)
    assert model.num_prefix_tokens == 1 + registers and (registers == 0) == (model.reg_token is None)
    assert starter_weights_path(name).stat().st_size < 6_000_000  # a few MB, committed


def test_a_run_builds_its_backbone_for_the_crop_size(tmp_path, reference):
    """A timm ViT made for another input size is built at the run's data.crop_size, its pre-trained position
    embedding resampled by timm (what DINOv2's 518 px at 224 needs); a starter refuses another size in one line."""
    import torch.nn.functional as F
    from e2vpt_viz.experiments.config import BackboneConfig

    path = tmp_path / "weights.safetensors"
    save_file(reference.state_dict(), str(path))
    model = BackboneConfig("vit_tiny_patch16_224", checkpoint=str(path)).load(img_size=64)
    assert model.patch_embed.img_size == (64, 64) and model.pos_embed.shape == (1, 1 + 4 * 4, 192)
    grid = reference.pos_embed[:, 1:].reshape(1, 14, 14, 192).permute(0, 3, 1, 2)
    resampled = F.interpolate(grid, size=(4, 4), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(model.pos_embed[:, 1:], resampled.permute(0, 2, 3, 1).reshape(1, 16, 192))
    assert torch.equal(model.blocks[0].attn.qkv.weight, reference.blocks[0].attn.qkv.weight)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 192)
    assert BackboneConfig("vit_tiny_patch16_224", pretrained=False).load(224).patch_embed.img_size == (224, 224)
    with pytest.raises(BackboneError, match=r"^starter-vit takes 64 x 64 images, but data.crop_size=224; set "
                                            r"data.crop_size=64"):
        BackboneConfig("starter-vit").load(img_size=224)
