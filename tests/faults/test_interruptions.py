"""Cases 1, 2 and 5: runs killed (kill -9, Ctrl-C, a kill while the checkpoint is written), a disk that fills up
while saving, and a loss that turns NaN or infinite. Each resumes to exactly the uninterrupted result, or stops
with one clear line and keeps the last good checkpoint."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from e2vpt_viz import training
from e2vpt_viz.checkpoint import load_torch_state
from e2vpt_viz.experiments.cli import main
from e2vpt_viz.experiments.run import load_run_config
from e2vpt_viz.training import PROMPTS_FILE, STATE_FILE

from .conftest import (STEPS_PER_EPOCH, TRAIN, max_difference, read_json, read_tensors, run_args, same_numbers,
                       without_timing)

STARTER_LR = load_run_config("starter").train.base_lr  # what run_args trains with; named in the messages
PRUNE = ["prune", "--config", "starter", "--quiet"]
PRUNE_GRID = ["prune.num_tokens=[0,2]", "prune.num_segments=[1]", "prune.sweep_ratios=[0,0.5]"]
EPOCHS = 3


def state_epoch(folder: Path) -> int:
    return load_torch_state(folder / STATE_FILE)["epoch"]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


def assert_same_run(resumed: Path, reference: Path) -> float:
    """Prompts within 1e-6 (in practice bitwise) and the same per-epoch metrics and test accuracy."""
    difference = max_difference(read_tensors(resumed / PROMPTS_FILE), read_tensors(reference / PROMPTS_FILE))
    assert difference <= 1e-6
    ours, theirs = read_json(resumed / "metrics.json"), read_json(reference / "metrics.json")
    assert same_numbers(without_timing(ours["history"]), without_timing(theirs["history"]))
    assert [r["epoch"] for r in ours["history"]] == list(range(1, EPOCHS + 1))
    assert ours["test_acc"] == theirs["test_acc"] and ours["per_class_acc"] == theirs["per_class_acc"]
    return difference


@pytest.mark.slow  # the kill-and-resume matrix: resumed runs equal uninterrupted ones (docs/faults.md)
def test_kill_9_mid_epoch_then_resume(fault_root, reference, driven, tmp_path, outcome):
    """1a · kill -9 of `train` mid-epoch → run again → same prompts and metrics as an uninterrupted run"""
    out = tmp_path / "run"
    step = STEPS_PER_EPOCH + 2  # epoch 2, after its second optimizer step
    run = driven(f"hang-at-step:{step}", [*TRAIN, *run_args(fault_root, out)])
    run.wait_for_fault()
    assert run.kill() == -9
    assert state_epoch(out) == 1 and not (out / PROMPTS_FILE).exists() and not (out / "metrics.json").exists()
    assert main([*TRAIN, *run_args(fault_root, out)]) == 0
    difference = assert_same_run(out, reference)
    outcome(f"killed after step {step} of {EPOCHS * STEPS_PER_EPOCH} (epoch 2), state at epoch 1; resumed: prompts "
            f"max |Δ| = {difference:.1g}, history and test accuracy equal")


@pytest.mark.slow  # the kill-and-resume matrix: resumed runs equal uninterrupted ones (docs/faults.md)
def test_kill_9_while_the_checkpoint_is_written(fault_root, reference, driven, tmp_path, outcome):
    """1b · kill -9 while train_state.pt is being written → the previous state is intact; resume is exact"""
    out = tmp_path / "run"
    run = driven("hang-in-save:2", [*TRAIN, *run_args(fault_root, out)])
    run.wait_for_fault()
    half_written = leftovers(out)
    assert run.kill() == -9
    assert len(half_written) == 1 and state_epoch(out) == 1  # the epoch-2 state never replaced the epoch-1 one
    assert main([*TRAIN, *run_args(fault_root, out)]) == 0
    difference = assert_same_run(out, reference)
    assert leftovers(out) == []  # the resumed run's first write removed the half-written file
    outcome(f"killed with {half_written[0]} half written; train_state.pt still epoch 1; resumed: prompts max |Δ| = "
            f"{difference:.1g}, metrics equal, the half-written file removed")


class CtrlC:
    """Ctrl-C (KeyboardInterrupt) in the middle of epoch ``epoch``'s training."""

    def __init__(self, monkeypatch, epoch: int) -> None:
        real = training.train_one_epoch

        def interrupted(model, loader, optimizer, lr_at, first_step, *args, **kwargs):
            if first_step == (epoch - 1) * STEPS_PER_EPOCH:
                raise KeyboardInterrupt
            return real(model, loader, optimizer, lr_at, first_step, *args, **kwargs)

        monkeypatch.setattr(training, "train_one_epoch", interrupted)


@pytest.mark.slow  # the kill-and-resume matrix: resumed runs equal uninterrupted ones (docs/faults.md)
def test_ctrl_c_during_training_then_resume(fault_root, reference, tmp_path, monkeypatch, capsys, outcome):
    """1c · Ctrl-C during `train` → one line saying how to resume → run again → same result"""
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        CtrlC(patch, epoch=3)
        assert main([*TRAIN, *run_args(fault_root, out)]) == 130
    message = capsys.readouterr().err.strip()
    assert message == "interrupted: run the same command again to resume from the last finished epoch"
    assert state_epoch(out) == 2
    assert main([*TRAIN, *run_args(fault_root, out)]) == 0
    assert_same_run(out, reference)
    outcome(f"exit 130, '{message}'; state at epoch 2; resumed run equals the uninterrupted one")


def prune_summary(out: Path) -> dict:
    """prune.json without the run's own folder names."""
    return read_json_relative(out / "prune.json", out)


def read_json_relative(path: Path, folder: Path):
    return json.loads(path.read_text().replace(str(folder), "<out>"))


@pytest.mark.slow  # the kill-and-resume matrix: resumed runs equal uninterrupted ones (docs/faults.md)
def test_kill_9_during_rewinding_then_resume(fault_root, driven, tmp_path, outcome):
    """1d · kill -9 of `prune` mid-rewinding → run again → same pruning result as an uninterrupted run"""
    straight, out = tmp_path / "straight", tmp_path / "killed"
    assert main([*PRUNE, *run_args(fault_root, straight), *PRUNE_GRID]) == 0
    # 3 epochs before pruning (9 steps), then the candidates t0_s1 and t2_s1 (9 steps each): stop inside t2_s1.
    step = 3 * STEPS_PER_EPOCH + 3 * STEPS_PER_EPOCH + STEPS_PER_EPOCH + 2
    run = driven(f"hang-at-step:{step}", [*PRUNE, *run_args(fault_root, out), *PRUNE_GRID])
    run.wait_for_fault()
    assert run.kill() == -9
    done = read_json(out / "rewind" / "rewind.json")["runs"]
    assert [(r["num_tokens"], r["num_segments"]) for r in done] == [(0, 1)]
    assert state_epoch(out / "rewind" / "t2_s1") == 1 and not (out / "prune.json").exists()
    assert main([*PRUNE, *run_args(fault_root, out), *PRUNE_GRID]) == 0
    ours, theirs = prune_summary(out), prune_summary(straight)
    ours["config"]["output_dir"] = theirs["config"]["output_dir"]
    assert same_numbers(ours, theirs)
    assert same_numbers(read_json(out / "sweep.json"), read_json(straight / "sweep.json"))
    for candidate in ("t0_s1", "t2_s1"):
        assert max_difference(read_tensors(out / "rewind" / candidate / PROMPTS_FILE),
                              read_tensors(straight / "rewind" / candidate / PROMPTS_FILE)) <= 1e-6
    outcome(f"killed at step {step} (candidate t2_s1, epoch 2) with rewind.json holding t0_s1; resumed: prune.json, "
            "sweep.json and both candidates' prompts equal the uninterrupted run")


@pytest.mark.slow  # the kill-and-resume matrix: resumed runs equal uninterrupted ones (docs/faults.md)
def test_kill_9_of_the_reproduce_runner_mid_grid_then_resume(fault_root, driven, tmp_path, outcome):
    """1e · kill -9 of `reproduce --tiny` mid-grid → run again → same results.json as an uninterrupted run"""
    def command(out: Path) -> list[str]:
        return ["reproduce", "--dataset", "starter", "--method", "e2vpt", "--tiny", "--quiet", "--out", str(out),
                f"data.root={fault_root}", "train.batch_size=4"]

    straight, out = tmp_path / "straight" / "e2vpt", tmp_path / "killed" / "e2vpt"
    assert main(command(straight)) == 0
    # --tiny: 2 epochs per run; grid run 1 is steps 1-6, grid run 2 (lr 2.5) steps 7-12: stop in its epoch 2.
    step = 2 * STEPS_PER_EPOCH + STEPS_PER_EPOCH + 2
    run = driven(f"hang-at-step:{step}", command(out))
    run.wait_for_fault()
    assert run.kill() == -9
    assert state_epoch(out / "grid" / "lr2.5_wd0.0001") == 1 and not (out / "grid.json").exists()
    assert (out / "grid" / "lr5.0_wd0.0001" / "metrics.json").is_file()
    assert main(command(out)) == 0
    ours = read_json_relative(out / "results.json", out)
    theirs = read_json_relative(straight / "results.json", straight)
    assert same_numbers(ours, theirs)
    outcome(f"killed at step {step} (second grid run, epoch 2); resumed: results.json equal to the uninterrupted run "
            f"(test {ours['test_acc_mean']:.1f} ± {ours['test_acc_std']:.1f})")


def test_disk_full_while_saving_a_checkpoint(fault_root, reference, driven, tmp_path, outcome):
    """2 · disk full (RLIMIT_FSIZE) while saving train_state.pt → one clear line; the old state loads and resumes"""
    out = tmp_path / "run"
    code, log = driven("fsize-after-save:1", [*TRAIN, *run_args(fault_root, out)]).finish()
    assert code == 2, log
    line = log.strip().splitlines()[-1]
    assert "Traceback" not in log and line.startswith("error: Could not write ")
    assert f"{out / STATE_FILE}" in line and "train_state.pt was not changed (the previous version is intact)" in line
    assert "Free some disk space (or raise the file-size limit) and run the same command again" in line
    assert state_epoch(out) == 1 and leftovers(out) == []  # the temporary file is gone, the old state loads
    assert main([*TRAIN, *run_args(fault_root, out)]) == 0
    assert_same_run(out, reference)
    outcome(f"exit 2, '{line[:90]}…'; epoch-1 state intact, no temp file; resumed run equals the uninterrupted one")


def test_any_failed_write_leaves_the_old_file(tmp_path, outcome):
    """2b · ENOSPC / EFBIG from any writer → CheckpointWriteError; the target keeps its old bytes, no temp file"""
    import errno

    from e2vpt_viz.checkpoint import CheckpointWriteError, atomic_write

    target = tmp_path / "metrics.json"
    target.write_text("old")

    def full_disk(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointWriteError, match=r"metrics.json \(OSError: \[Errno 28\] No space left on device; "
                                                   r".* GB are free there\)\. metrics.json was not changed") as error:
        atomic_write(target, full_disk)
    assert error.value.errno == errno.ENOSPC and target.read_text() == "old" and leftovers(tmp_path) == []
    with pytest.raises(CheckpointWriteError, match="nothing was written"):
        atomic_write(tmp_path / "new.json", full_disk)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    outcome("CheckpointWriteError (an OSError, errno kept) naming the file and the free space; old bytes kept")


class Poison:
    """From epoch 2 on, the head's logits become NaN, or an infinite loss (-inf for every class but the first)."""

    def __init__(self, monkeypatch, kind: str) -> None:
        real = training.train_one_epoch

        def poisoned(model, loader, optimizer, lr_at, first_step, *args, **kwargs):
            if first_step < STEPS_PER_EPOCH:
                return real(model, loader, optimizer, lr_at, first_step, *args, **kwargs)

            def hook(module, inputs, logits):
                if kind == "nan":
                    return logits * math.nan
                bad = torch.full_like(logits, -math.inf)
                bad[:, 0] = 0.0
                return logits * 0 + bad

            handle = model.head.register_forward_hook(hook)
            try:
                return real(model, loader, optimizer, lr_at, first_step, *args, **kwargs)
            finally:
                handle.remove()

        monkeypatch.setattr(training, "train_one_epoch", poisoned)


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_nan_or_inf_loss_stops_and_keeps_the_last_good_checkpoint(kind, fault_root, tmp_path, monkeypatch, capsys,
                                                                   outcome):
    """5 · NaN / inf loss (injected in epoch 2) → stops with one line; the epoch-1 checkpoint is kept"""
    out = tmp_path / "run"
    Poison(monkeypatch, kind)
    assert main([*TRAIN, *run_args(fault_root, out)]) == 2
    line = capsys.readouterr().err.strip()
    assert line == (f"error: Loss became {kind} in epoch 2; lower base_lr (now {STARTER_LR}) or weight_decay and train into a "
                    f"new output_dir. The last good checkpoint in {out} is intact.")
    state = load_torch_state(out / STATE_FILE)
    assert state["epoch"] == 1 and all(torch.isfinite(t).all() for t in state["trained"].values())
    assert not (out / PROMPTS_FILE).exists() and not (out / "metrics.json").exists()
    outcome(f"exit 2, '{line[:60]}…'; train_state.pt: epoch 1, every tensor finite; no prompts or metrics written")


def test_after_a_nan_a_lower_lr_in_the_same_folder_says_to_use_a_new_one(fault_root, tmp_path, monkeypatch, capsys,
                                                                         outcome):
    """5b · after a NaN, the same folder with a lower lr → refused naming the lr and saying what to do; new folder trains"""
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        Poison(patch, "nan")
        assert main([*TRAIN, *run_args(fault_root, out)]) == 2
    capsys.readouterr()
    lower = [*run_args(fault_root, out), "train.base_lr=1.0"]
    assert main([*TRAIN, *lower]) == 2
    line = capsys.readouterr().err.strip()
    named = f"train.base_lr: checkpoint {STARTER_LR} vs model 1.0"
    assert named in line
    assert line.endswith("Resume with the settings the run was started with, or give a new output_dir to start "
                         "another run.")
    assert load_torch_state(out / STATE_FILE)["epoch"] == 1  # refused without touching the kept state
    assert main([*TRAIN, *run_args(fault_root, tmp_path / "lower-lr"), "train.base_lr=1.0"]) == 0
    assert (tmp_path / "lower-lr" / PROMPTS_FILE).exists()
    outcome(f"same folder, base_lr 1.0: refused naming '{named}' and the new-folder "
            "hint, state kept; a new output_dir trains to the end")


@pytest.mark.slow  # the kill-and-resume matrix: resumed runs equal uninterrupted ones (docs/faults.md)
def test_an_interrupted_run_moved_to_another_folder_resumes_there(fault_root, reference, tmp_path, monkeypatch,
                                                                   outcome):
    """1f · an interrupted run's folder copied elsewhere (another disk, a classmate) resumes there, same result"""
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        CtrlC(patch, epoch=2)
        assert main([*TRAIN, *run_args(fault_root, out)]) == 130
    moved = tmp_path / "elsewhere"
    shutil.copytree(out, moved)
    shutil.rmtree(out)
    assert main([*TRAIN, *run_args(fault_root, moved)]) == 0
    assert_same_run(moved, reference)
    outcome("epoch-1 state copied into a new output_dir (original deleted); resumed there, equal to the "
            "uninterrupted run")
