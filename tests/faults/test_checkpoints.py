"""Cases 3 and 4: damaged checkpoints (truncated, corrupted, pickle-bearing) are refused with a clear error and run
no code; a checkpoint of another backbone, width, prompt count or class count is refused naming both sides."""
from __future__ import annotations

import hashlib
import re
import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import tiny_vit
from data_prep.synthetic import generate_synthetic
from e2vpt_viz import E2VPTConfig, apply_prompts
from e2vpt_viz.backbones import STARTER_BACKBONES, load_backbone
from e2vpt_viz.checkpoint import CheckpointMismatchError, CheckpointReadError, load_prompts, save_prompts
from e2vpt_viz.experiments.cli import main
from e2vpt_viz.pvp import load_prompt_modules, save_prompt_modules
from e2vpt_viz.training import PROMPTS_FILE, STATE_FILE

from .conftest import TINY, TRAIN, run_args

EVAL = ["eval", "--config", "starter"]


class RunsCode:
    """Unpickling this runs a shell command that creates ``marker``: what a booby-trapped checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def damage(path: Path, how: str, marker: Path) -> None:
    """Truncate it, flip one byte inside its first tensor's data, or replace it by a pickle that runs code."""
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "corrupted":
        if zipfile.is_zipfile(path):  # torch.save: a zip whose members hold the tensors' bytes
            with zipfile.ZipFile(path) as archive:
                member = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size > 16)
            local_header = data[member.header_offset:member.header_offset + 30]
            name_length, extra_length = struct.unpack("<HH", local_header[26:30])
            offset = member.header_offset + 30 + name_length + extra_length + member.file_size // 2
        else:  # safetensors: 8-byte header length, JSON header, then the tensors' bytes
            offset = 8 + struct.unpack("<Q", data[:8])[0] + (len(data) - 8 - struct.unpack("<Q", data[:8])[0]) // 2
        data[offset] ^= 0x40
        path.write_bytes(data)
    else:
        torch.save({"trained": {"head.weight": torch.zeros(1)}, "payload": RunsCode(marker)}, path)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


EXPECTED = {
    "truncated": r"is (truncated or|not a readable safetensors file).*it was not loaded",
    "corrupted": r"is corrupted: (its part 'data/\d+' fails its CRC-32 check|its tensors do not match the CRC-32)",
    "pickle": (r"(holds pickled Python objects besides tensors \(.*system.*\); loading it could run code, so it was "
               r"refused unread|not a readable safetensors file .*a pickled \.pt/\.pth file is never unpickled)"),
}


@pytest.fixture(scope="module")
def pvp_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = apply_prompts(tiny_vit(), E2VPTConfig(num_prompts=3, num_kv_prompts=2), 4)
    return save_prompt_modules(model, tmp_path_factory.mktemp("pvp") / "pvp.safetensors")


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("backbone") / "starter-vit.pth"
    torch.save(load_backbone("starter-vit").state_dict(), path)
    return path


@pytest.mark.parametrize("how", ["truncated", "corrupted", "pickle"])
@pytest.mark.parametrize("kind", ["train_state", "prompts", "pvp", "backbone"])
def test_damaged_checkpoints_are_refused_and_run_no_code(kind, how, fault_root, reference, pvp_file, backbone_file,
                                                         tmp_path, capsys, outcome):
    """3 · a truncated, corrupted (one flipped byte) or pickle-bearing checkpoint → refused, clear error, no code runs"""
    marker = tmp_path / "code-ran"
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    if kind == "train_state":  # resuming a run whose training state was damaged
        target = out / STATE_FILE
        damage(target, how, marker)
        argv = [*TRAIN, *run_args(fault_root, out)]
    elif kind == "prompts":  # `eval --checkpoint` of a damaged prompt file
        target = out / PROMPTS_FILE
        damage(target, how, marker)
        argv = [*EVAL, *run_args(fault_root, out), "--checkpoint", str(target)]
    elif kind == "backbone":  # backbone.checkpoint=FILE, the offline way to pass weights
        target = tmp_path / "weights.pth"
        shutil.copyfile(backbone_file, target)
        damage(target, how, marker)
        argv = [*EVAL, *run_args(fault_root, out), f"backbone.checkpoint={target}"]
    else:  # PVP prompts loaded into a model
        target = tmp_path / "pvp.safetensors"
        shutil.copyfile(pvp_file, target)
        damage(target, how, marker)
        argv = None
    before = digest(target)
    if argv is None:
        with pytest.raises(CheckpointReadError, match=EXPECTED[how]) as error:
            load_prompt_modules(apply_prompts(tiny_vit(), E2VPTConfig(num_prompts=3, num_kv_prompts=2), 4), target)
        message = f"{type(error.value).__name__}: {error.value}"
    else:
        assert main(argv) == 2
        message = capsys.readouterr().err.strip()
        assert message.startswith("error: ") and "\n" not in message
    assert str(target) in message
    assert re.search(EXPECTED[how], message), message
    assert not marker.exists(), "unpickling ran code"
    assert digest(target) == before  # left as it was, for the user to inspect or restore
    outcome(message.replace(str(target.parent), "…")[:150])


def test_a_checkpoint_with_a_flipped_bit_in_its_header_is_refused(reference, tmp_path, outcome):
    """3b · a prompt file whose JSON header is damaged → refused before any tensor is read"""
    path = shutil.copyfile(reference / PROMPTS_FILE, tmp_path / PROMPTS_FILE)
    data = bytearray(path.read_bytes())
    data[12] = ord("}")
    path.write_bytes(data)
    model = apply_prompts(load_backbone("starter-vit"), E2VPTConfig(num_prompts=5, num_kv_prompts=5), 3)
    with pytest.raises(CheckpointReadError, match="not a readable safetensors file"):
        load_prompts(model, path)
    outcome("CheckpointReadError: not a readable safetensors file")


@pytest.fixture(scope="module")
def four_classes(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("faults-data") / "four", task="target", seed=2,
                              **{**TINY, "num_classes": 4})


VIT_TINY = {"embed_dim": 192, "depth": 12, "num_heads": 3}  # timm's vit_tiny_patch16_224 (64-px input here)
STARTER_VS_VIT_TINY = "; ".join(f"backbone.{field}: checkpoint {STARTER_BACKBONES['starter-vit'][field]} vs model {value}"
                                for field, value in VIT_TINY.items() if STARTER_BACKBONES["starter-vit"][field] != value)


@pytest.mark.parametrize("other, names", [
    (["backbone.name=vit_tiny_patch16_224", "backbone.pretrained=false"], STARTER_VS_VIT_TINY),
    (["method.num_prompts=7"], "method.num_prompts: checkpoint 5 vs model 7"),
    (["method.name=vpt-deep", "method.num_prompts=5"], "method.method: checkpoint 'e2vpt' vs model 'vpt-deep'"),
    ("four_classes", "num_classes: checkpoint 3 vs model 4"),
], ids=["backbone", "prompt-count", "method", "class-count"])
def test_a_checkpoint_of_another_model_names_both_sides(other, names, fault_root, four_classes, reference, tmp_path,
                                                        capsys, outcome):
    """4 · prompts of another backbone / prompt count / method / class count → `eval` names both sides"""
    root, extra = (four_classes, []) if other == "four_classes" else (fault_root, other)
    assert main([*EVAL, *run_args(root, tmp_path / "unused", *extra), "--checkpoint",
                 str(reference / PROMPTS_FILE)]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith(f"error: Checkpoint {reference / PROMPTS_FILE} was made for another model; ")
    assert names in message and message.endswith("Build the model with the same backbone, method config and classes.")
    outcome(names)


def test_a_training_state_swapped_in_from_another_task_is_refused_and_kept(four_classes, reference, tmp_path,
                                                                           capsys, outcome):
    """4b · a classmate's train_state.pt (3 classes) in my run folder (4 classes) → refused naming both; file kept"""
    out = tmp_path / "mine"
    out.mkdir()
    shutil.copyfile(reference / STATE_FILE, out / STATE_FILE)
    before = digest(out / STATE_FILE)
    assert main([*TRAIN, *run_args(four_classes, out)]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith(f"error: Training state {out / STATE_FILE} was made for another model; ")
    assert "model.num_classes: checkpoint 3 vs model 4" in message
    assert digest(out / STATE_FILE) == before and sorted(p.name for p in out.iterdir()) == [STATE_FILE]
    outcome("model.num_classes: checkpoint 3 vs model 4; the file is left as it was and nothing else is written")


@pytest.mark.parametrize("change, expected", [
    (lambda state: {**state, "ema": {}}, "unknown fields ['ema']"),
    (lambda state: {k: v for k, v in state.items() if k != "optimizer"}, "missing fields ['optimizer']"),
    (lambda state: {**state, "epoch": "3"}, "fields of the wrong type ['epoch']"),
    (lambda state: [state["trained"]], "holds a list, not a training state"),
], ids=["unknown-field", "missing-field", "wrong-type", "not-a-dict"])
def test_a_training_state_with_unknown_or_missing_fields_is_refused_and_kept(change, expected, four_classes,
                                                                             reference, tmp_path, capsys, outcome):
    """4d · a train_state.pt of another version (a field more, a field less, a field of another type, not a dict) →
    refused in one line naming the fields, before any training; the file is kept"""
    out = tmp_path / "mine"
    out.mkdir()
    state = torch.load(reference / STATE_FILE, map_location="cpu", weights_only=True)
    torch.save(change(state), out / STATE_FILE)
    before = digest(out / STATE_FILE)
    assert main([*TRAIN, *run_args(four_classes, out)]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith(f"error: Training state {out / STATE_FILE} ") and expected in message, message
    assert "\n" not in message and message.endswith("to train this run from the start.")
    assert digest(out / STATE_FILE) == before and sorted(p.name for p in out.iterdir()) == [STATE_FILE]
    outcome(expected)


def test_prompts_of_another_width_name_both_sides(tmp_path, outcome):
    """4c · prompts / PVP prompts of a backbone of another width → refused naming both widths"""
    torch.manual_seed(0)
    narrow = apply_prompts(tiny_vit(), E2VPTConfig(num_prompts=3, num_kv_prompts=2), 4)
    wide = apply_prompts(tiny_vit(embed_dim=48), E2VPTConfig(num_prompts=3, num_kv_prompts=2), 4)
    with pytest.raises(CheckpointMismatchError, match="backbone.embed_dim: checkpoint 32 vs model 48"):
        load_prompts(wide, save_prompts(narrow, tmp_path / "p.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="embed_dim: file 32 vs model 48"):
        load_prompt_modules(wide, save_prompt_modules(narrow, tmp_path / "pvp.safetensors"))
    outcome("backbone.embed_dim: checkpoint 32 vs model 48 (prompts); embed_dim: file 32 vs model 48 (PVP)")


def test_an_intact_checkpoint_still_loads(reference, outcome):
    """3c · control: the undamaged prompt file and training state load (and carry a CRC-32 that matches)"""
    from e2vpt_viz.checkpoint import load_torch_state, read_safetensors

    meta, tensors = read_safetensors(reference / PROMPTS_FILE)
    assert "crc32" not in meta and json.loads(meta["signature"])["num_classes"] == 3 and tensors
    assert load_torch_state(reference / STATE_FILE)["epoch"] == 3
    model = apply_prompts(load_backbone("starter-vit"), E2VPTConfig(num_prompts=5, num_kv_prompts=5), 3)
    load_prompts(model, reference / PROMPTS_FILE)
    outcome("prompts and training state load; CRC-32 verified")
