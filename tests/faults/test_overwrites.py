"""Case 11 (issue 18): nothing overwritten, mixed up or silently wrong. Shipped files are never written by a default,
a run folder belongs to one process, resumption continues only the same work, values are taken as written, unknown
keys are refused in every section, ``--overwrite`` replaces only what the tool made, evaluation never substitutes
images, and two models never share one backbone."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from e2vpt_viz.backbones import starter_weights_path
from e2vpt_viz.experiments.cli import main

from .conftest import TRAIN, read_json, run_args


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pretrain_starter_never_writes_the_packaged_backbone_by_default(fault_root, tmp_path, monkeypatch, capsys,
                                                                      outcome):
    """11a · `pretrain-starter` without --out → writes under results/, the packaged backbone is untouched; --out on
    an existing file (the packaged one included) is refused in one line before any training"""
    packaged = starter_weights_path()
    before = sha256(packaged)
    monkeypatch.chdir(tmp_path)
    source = Path(shutil.copytree(fault_root, tmp_path / "source"))
    assert main(["pretrain-starter", "--data", str(source), "--epochs", "1"]) == 0
    written = tmp_path / "results" / "starter_backbone" / "starter-vit.safetensors"
    assert written.is_file() and sha256(packaged) == before
    assert f"backbone.checkpoint={written.relative_to(tmp_path)}" in capsys.readouterr().out

    for target in (packaged, written):
        stamp = target.stat().st_mtime_ns
        assert main(["pretrain-starter", "--data", str(tmp_path / "never-made"), "--out", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "--overwrite" in err and str(target) in err
        assert target.stat().st_mtime_ns == stamp and not (tmp_path / "never-made").exists()
        assert ("packaged starter backbone" in err) == (target == packaged)
    outcome(f"default wrote {written.relative_to(tmp_path)}; packaged sha256 unchanged; existing --out refused: {err}")


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_pretrain_starter_refuses_an_impossible_epoch_count_before_any_work(tmp_path, monkeypatch, capsys, epochs,
                                                                           outcome):
    """11a · `pretrain-starter --epochs 0` (read as "the default 30" before) or negative → one line, nothing made"""
    monkeypatch.chdir(tmp_path)
    assert main(["pretrain-starter", "--data", str(tmp_path / "src"), "--epochs", epochs]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--epochs {epochs}" in err and "at least 1" in err
    assert list(tmp_path.iterdir()) == []
    outcome(err)


def test_a_run_folder_belongs_to_one_process_and_a_killed_one_leaves_it_free(fault_root, tmp_path, driven, capsys,
                                                                          outcome):
    """11b · a second `train` on a folder another process is training in → one line at once, the first run's files
    stay its own; after a kill -9 of the first the folder is free again and the run resumes"""
    out = tmp_path / "run"
    first = driven("hang-at-step:4", TRAIN + run_args(fault_root, out))  # mid-epoch 2, epoch 1 saved
    first.wait_for_fault()
    state = (out / "train_state.pt").read_bytes()
    assert main(TRAIN + run_args(fault_root, out, "method.num_prompts=3")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(out) in err and f"pid {first.process.pid}" in err and "output_dir" in err
    assert (out / "train_state.pt").read_bytes() == state and not (out / "metrics.json").exists()
    first.kill()
    assert main(TRAIN + run_args(fault_root, out)) == 0  # the OS released the dead process's lock: resumes
    assert read_json(out / "metrics.json")["epochs"] == 3 and not (out / ".lock").exists()
    outcome(f"second process refused: {err}; after kill -9 the same command resumed to 3 epochs")


def test_files_and_data_roots_the_project_writes_get_the_users_usual_permissions(tmp_path, outcome):
    """11i · prompt files and a generated data root → the user's umask decides (they were 0600 / 0700)"""
    import os

    import torch

    from data_prep.synthetic import generate_synthetic
    from e2vpt_viz.checkpoint import save_safetensors

    old = os.umask(0o022)
    try:
        save_safetensors({"p": torch.zeros(2)}, tmp_path / "prompts.safetensors", {})
        root = generate_synthetic(tmp_path / "data", task="target", seed=1, num_classes=2, train_per_class=1,
                                  val_per_class=1, test_per_class=1)
    finally:
        os.umask(old)
    modes = {"prompts.safetensors": (tmp_path / "prompts.safetensors").stat().st_mode & 0o777,
             "data root": root.stat().st_mode & 0o777}
    assert modes == {"prompts.safetensors": 0o644, "data root": 0o755}
    outcome(", ".join(f"{k} {oct(v)}" for k, v in modes.items()))


def test_pvp_pretraining_resumes_only_the_same_work(fault_root, tmp_path, monkeypatch, outcome):
    """11c · `pvp-pretrain --source A --out x/pvp.safetensors`, then `--source B --out y/pvp.safetensors` → y holds
    prompts trained on B (the resumable state was keyed by the file's stem, so y got A's tensors)"""
    from data_prep.synthetic import generate_synthetic

    from .conftest import TINY, read_tensors

    monkeypatch.chdir(tmp_path)
    other = generate_synthetic(tmp_path / "other", task="target", seed=2, **TINY)
    tiny = ["--epochs", "2", "--quiet", "train.batch_size=4", "train.warmup_epochs=1"]
    for source, out in ((fault_root, "x"), (other, "y")):
        assert main(["pvp-pretrain", "--config", "starter", "--source", str(source), "--out",
                     f"{out}/pvp.safetensors", *tiny]) == 0
    x, y = read_tensors(tmp_path / "x/pvp.safetensors"), read_tensors(tmp_path / "y/pvp.safetensors")
    differ = max((x[k] - y[k]).abs().max().item() for k in x)
    work = sorted(p.name for p in (tmp_path / "results" / "pvp_source").iterdir())
    assert differ > 0 and len(work) == 2 and all(name.startswith("pvp-") for name in work)
    outcome(f"two sources → two work folders {work}; their prompts differ by up to {differ:.3g}")


def test_override_values_are_taken_as_written(fault_root, tmp_path, outcome):
    """11d · `"output_dir=/runs/base #2"` → the run writes to `base #2` (the `#` was read as a YAML comment and the
    run rewrote `/runs/base`)"""
    base = tmp_path / "base"
    assert main(TRAIN + run_args(fault_root, base, epochs=2)[:-1] + [f"output_dir={base} #2"]) == 0
    assert (tmp_path / "base #2" / "metrics.json").is_file() and not base.exists()
    outcome("wrote base #2/, left base/ alone")


@pytest.mark.parametrize("override, closest", [("backbone.pretraind=false", "backbone.pretrained"),
                                               ("data.crop_sise=32", "data.crop_size"), ("train.epoch=3", "train.epochs"),
                                               ("method.num_prompt=3", "method.num_prompts"), ("prune.scor=abs", "prune.score")])
def test_every_section_refuses_unknown_keys_naming_the_closest(fault_root, tmp_path, capsys, override, closest,
                                                                outcome):
    """11e · a misspelled key in any section (backbone.* was ignored for the starter backbone) → one line naming the
    closest valid key, nothing written"""
    out = tmp_path / "run"
    assert main(TRAIN + run_args(fault_root, out, override, epochs=2)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(f"error: unknown key {override.split('=')[0]}; did you mean {closest}?")
    assert not out.exists()
    outcome(err)


def test_synthetic_overwrite_replaces_only_what_the_tool_made(tmp_path, outcome):
    """11f · `python -m data_prep synthetic --root R --seed 2 --overwrite` over a dataset with the user's own files
    in it → the dataset is replaced, the user's files stay (everything under R was deleted)"""
    from data_prep.synthetic import generate_synthetic

    from .conftest import TINY

    root = generate_synthetic(tmp_path / "R", task="target", seed=1, **TINY)
    before = (root / "train.json").read_bytes()
    mine = {root / "notes.txt": b"my notes", root / "images" / "mine" / "keep.png": b"not the tool's",
            root / "parts" / "my_parts.txt": b"1 my part"}
    for path, data in mine.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    generate_synthetic(root, task="target", seed=2, overwrite=True, **TINY)
    assert all(path.read_bytes() == data for path, data in mine.items())
    assert (root / "train.json").read_bytes() != before
    fresh = generate_synthetic(tmp_path / "fresh", task="target", seed=2, **TINY)
    made = sorted(str(p.relative_to(fresh)) for p in fresh.rglob("*") if p.is_file())
    kept = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert kept == sorted(made + [str(p.relative_to(root)) for p in mine])
    assert all((root / name).read_bytes() == (fresh / name).read_bytes() for name in made)
    assert not list(tmp_path.glob(".R.*"))  # no staging or retired folder left
    outcome(f"dataset replaced ({len(made)} files, identical to a fresh seed-2 root); the user's 3 files kept")


def test_two_models_never_share_one_backbone(outcome):
    """11h · `apply_prompts(b, linear)` then `apply_prompts(b, full)` on one backbone object → the second is refused
    in one line (it silently turned the first model into full fine-tuning); a deep copy works"""
    import copy

    from e2vpt_viz import FullConfig, LinearConfig, apply_prompts, load_backbone

    backbone = load_backbone("starter-vit")
    linear = apply_prompts(backbone, LinearConfig(), num_classes=3)
    trainable = sum(p.numel() for p in linear.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="already belongs to a model") as refused:
        apply_prompts(backbone, FullConfig(), num_classes=3)
    assert str(refused.value).count("\n") == 0
    assert sum(p.numel() for p in linear.parameters() if p.requires_grad) == trainable  # the first model unchanged
    full = apply_prompts(copy.deepcopy(load_backbone("starter-vit")), FullConfig(), num_classes=3)
    assert sum(p.numel() for p in full.parameters() if p.requires_grad) > trainable
    outcome(f"second call refused: {refused.value}; the linear model still trains {trainable} parameters")


def test_evaluation_never_substitutes_images(fault_root, tmp_path, capsys, outcome):
    """11g · test images missing or undecodable → refused before training above data.max_unreadable; below it the
    metric covers only the images read and says how many it skipped (`eval` reported count 600 with 450 missing)"""
    import json

    from e2vpt_viz.data import FGVCDataset

    root = Path(shutil.copytree(fault_root, tmp_path / "tiny"))
    test = FGVCDataset(root, "test")
    listed = len(test.samples)
    for path, _ in test.samples[:3]:
        path.unlink()
    test.samples[3][0].write_bytes(b"not an image")
    out = tmp_path / "run"
    assert main(TRAIN + run_args(root, out, epochs=2)) == 2
    refused = capsys.readouterr().err.strip()
    assert refused.count("\n") == 0 and f"3 of the {listed} test images" in refused and "data.max_unreadable" in refused
    assert not (out / "train_state.pt").exists()

    assert main(TRAIN + run_args(root, out, "data.max_unreadable=0.5", epochs=2)) == 2  # 4 of 6 unreadable in all
    late = capsys.readouterr().err.strip()
    assert late.count("\n") == 0 and f"4 of the {listed} images" in late

    assert main(TRAIN + run_args(root, out, "data.max_unreadable=0.7", epochs=2)) == 0
    metrics = read_json(out / "metrics.json")
    capsys.readouterr()
    assert main(["eval", "--config", "starter"] + run_args(root, out, "data.max_unreadable=0.7", epochs=2)) == 0
    printed = capsys.readouterr()
    evaluated = json.loads(printed.out.strip().splitlines()[-1])
    assert metrics["test_skipped"] == 4 and evaluated["count"] == listed - 4 and evaluated["skipped"] == 4
    assert evaluated["acc"] == metrics["test_acc"] and "left out" in printed.err
    outcome(f"refused before training: {refused} · within the limit: count {evaluated['count']}, skipped 4")


@pytest.mark.parametrize("override, expected", [
    ("method.name=vpt-deep", "prune needs E²VPT with masks"),
    ("method.masks=false", "prune needs E²VPT with masks"),
    ("prune.num_tokens=[1,5]", "prune.num_tokens [5] would remove all 5 prompts"),
    ("prune.num_segments=[16]", "prune.num_segments [16] would remove all 16 segments")])
def test_prune_refuses_what_cannot_work_before_any_training(fault_root, tmp_path, capsys, override, expected, outcome):
    """11j · `prune` with a method without masks or budgets that remove everything → one line before training (it
    came after the whole first training)"""
    out = tmp_path / "prune"
    assert main(["prune", "--config", "starter", "--quiet", *run_args(fault_root, out, override)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err and not out.exists()
    outcome(err)


def test_messages_say_what_is_wrong(fault_root, tmp_path, caplog, outcome):
    """11k · a prompts path that is a folder → "it is a folder" (was "free some disk space"); pretrain-starter on a
    target dataset → the warning names the folder mix-up instead of suggesting a command that replaces it"""
    import logging

    import torch

    from data_prep.synthetic import ensure_synthetic
    from e2vpt_viz.checkpoint import CheckpointWriteError, save_safetensors

    folder = tmp_path / "prompts.safetensors"
    folder.mkdir()
    with pytest.raises(CheckpointWriteError) as refused:
        save_safetensors({"p": torch.zeros(2)}, folder, {})
    assert "it is a folder" in str(refused.value) and "disk space" not in str(refused.value)
    with caplog.at_level(logging.WARNING):
        ensure_synthetic(fault_root, task="source")
    assert "holds the synthetic target dataset, not the source one" in caplog.text and "--overwrite" not in caplog.text
    outcome(f"{refused.value} · {caplog.records[-1].getMessage()[:120]}")


def test_numpy_and_torch_scalars_are_numbers(outcome):
    """11l · numpy / torch scalars where a number is expected (a slider's value, a count from an array) → taken as
    the number they hold, stored as plain Python numbers (they were refused as "not an integer")"""
    import json

    import numpy as np
    import torch

    from e2vpt_viz import E2VPTConfig, apply_prompts, load_backbone
    from e2vpt_viz.pruning import ratio_budgets

    config = E2VPTConfig(num_prompts=np.int64(4), num_kv_prompts=torch.tensor(2), dropout=np.float32(0.25))
    model = apply_prompts(load_backbone("starter-vit"), config, num_classes=np.int32(3))
    assert json.dumps(config.__dict__) and model.num_prompts == 4 and model.num_classes == 3
    assert ratio_budgets(np.float64(0.5), 4) == ratio_budgets(torch.tensor(0.5), 4) == ratio_budgets(0.5, 4)
    with pytest.raises(ValueError, match="num_prompts must be a positive integer, got 2.5"):
        E2VPTConfig(num_prompts=np.float64(2.5))
    outcome("np.int64 / torch.tensor / np.float32 settings accepted as int / float; 2.5 prompts still refused")


def test_figures_and_widgets_given_nothing_say_so_in_one_line(outcome):
    """11m · figures and widgets given empty results → one line saying what to compute first (tracebacks: min() of
    an empty sequence, list index out of range, 'list' object has no attribute 'ratios')"""
    from e2vpt_viz import plots, widgets

    calls = {"pruning_dashboard": lambda: plots.pruning_dashboard([]),
             "importance_heatmap": lambda: plots.importance_heatmap([], []),
             "grounding_heatmaps": lambda: plots.grounding_heatmaps({}, 0.1),
             "accuracy_vs_parameters": lambda: plots.accuracy_vs_parameters([]),
             "few_shot_curves": lambda: plots.few_shot_curves([]),
             "pruning_tradeoff": lambda: plots.pruning_tradeoff([]),
             "attention_share_bars": lambda: plots.attention_share_bars([]),
             "PruningSlider": lambda: widgets.PruningSlider([]),
             "AttentionExplorer": lambda: widgets.AttentionExplorer([], [], None)}
    said = {}
    for name, call in calls.items():
        with pytest.raises(ValueError) as refused:
            call()
        said[name] = str(refused.value)
        assert said[name].count("\n") == 0 and ("to draw" in said[name] or "at least one" in said[name]), said[name]
    outcome(f"{len(said)} figures and widgets, e.g. {said['PruningSlider'][:90]}")


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs Linux's read-only /sys")
def test_read_only_data_roots_train_and_run_few_shot_or_say_where_to_write(fault_root, tmp_path, monkeypatch,
                                                                            capsys, outcome):
    """11n · a data root that cannot be written: the starter to be generated on a read-only file system (/sys refuses
    even root) → one line naming data.root and the fix, nothing written; few-shot subsets of a root whose subsets
    folder cannot be made → written to the user's cache instead, with the same split files (was: a traceback)"""
    from data_prep.fgvc import write_subset
    from e2vpt_viz.experiments.fewshot import few_shot_comparison, subset_cache
    from e2vpt_viz.experiments.run import load_run_config
    from e2vpt_viz.pvp import save_prompt_modules
    from e2vpt_viz.experiments.run import build_model

    out = tmp_path / "run"
    assert main([*TRAIN, *run_args(Path("/sys/e2vpt-viz-starter"), out), "data.synthetic=true"]) == 2
    said = capsys.readouterr().err
    assert said.startswith("error: The offline starter dataset is generated at data.root=/sys/e2vpt-viz-starter")
    assert said.count("\n") == 1 and "set data.root to a folder you can write" in said and not out.exists()

    root = tmp_path / "shared"  # a course's dataset: its subsets/ cannot be created (a file is in the way)
    shutil.copytree(fault_root, root)
    (root / "subsets").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = load_run_config("starter", run_args(root, tmp_path / "unused", epochs=1)[:1] + ["train.batch_size=4"])
    prompts = save_prompt_modules(build_model(cfg, 3), tmp_path / "pvp.safetensors")
    rows = few_shot_comparison(cfg, prompts, shots=[1], seeds=[0], epochs=1)
    cached = subset_cache(root) / "shots1_seed0"
    writable = write_subset(fault_root, None, 1, 0)  # the same subset where the root is writable
    for name in ("train.json", "val.json", "test.json"):
        assert read_json(cached / name) == read_json(writable / name), name
    assert (root / "subsets").read_text() == "not a folder" and len(rows) == 1
    outcome(f"read-only starter location: {said.strip()[:80]}…; few-shot subsets went to the cache, same splits")


def _public_argument_cases(root):
    """(call, exception type, fragment of its one-line message) for wrong arguments to every public function a lesson
    or a script calls: the package root, pruning, plots (one row per argument kind: wrong type, out of range, missing)."""
    import torch

    from conftest import tiny_vit
    from e2vpt_viz import (E2VPTConfig, LoRAConfig, TrainConfig, VPTConfig, apply_prompts, build_transforms,
                           count_parameters, evaluate, fit, load_backbone, load_prompts, make_loaders, method_config,
                           record_attention, save_prompts)
    from e2vpt_viz import plots, pruning
    from e2vpt_viz.data import FGVCDataset, split_loader

    def model():
        return apply_prompts(tiny_vit(), E2VPTConfig(num_prompts=3, num_kv_prompts=2), 4)

    scores = pruning.ImportanceScores(torch.zeros(3), torch.zeros(3, 16))
    batches = [(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))]
    return {
        "load_backbone(name=123)": (lambda: load_backbone(123), ValueError, "Unknown backbone 123"),
        "apply_prompts(backbone=None)": (lambda: apply_prompts(None, E2VPTConfig(), 4), TypeError, "needs a timm Vision Transformer"),
        "apply_prompts(config='e2vpt')": (lambda: apply_prompts(tiny_vit(), "e2vpt", 4), TypeError, "method config"),
        "apply_prompts(num_classes='4')": (lambda: apply_prompts(tiny_vit(), E2VPTConfig(), "4"), ValueError,
                                           "num_classes must be a positive integer, got '4'"),
        "method_config(name='vpt')": (lambda: method_config("vpt"), ValueError, "Unknown method 'vpt'"),
        "method_config(num_prompt=5)": (lambda: method_config("e2vpt", num_prompt=5), ValueError, "num_prompt"),
        "E2VPTConfig(num_prompts=-1)": (lambda: E2VPTConfig(num_prompts=-1), ValueError, "num_prompts must be"),
        "VPTConfig(dropout=2.0)": (lambda: VPTConfig(dropout=2.0), ValueError, "dropout must be a number in [0, 1)"),
        "LoRAConfig(rank=0)": (lambda: LoRAConfig(rank=0), ValueError, "rank must be a positive integer"),
        "count_parameters(model=Linear)": (lambda: count_parameters(torch.nn.Linear(2, 2)), TypeError,
                                           "count_parameters needs a model made by e2vpt_viz.apply_prompts"),
        "record_attention(model=Linear)": (lambda: record_attention(torch.nn.Linear(2, 2)).__enter__(), TypeError,
                                           "record_attention needs a model made by e2vpt_viz.apply_prompts"),
        "FGVCDataset(split='tran')": (lambda: FGVCDataset(root, "tran"), ValueError, "split must be one of"),
        "build_transforms(crop_size=0)": (lambda: build_transforms(0, train=True), ValueError,
                                          "crop_size must be a positive integer, got 0"),
        "build_transforms(crop_size='a')": (lambda: build_transforms("a", train=True), ValueError,
                                            "crop_size must be a positive integer, got 'a'"),
        "make_loaders(batch_size=0)": (lambda: make_loaders(root, 32, 0), ValueError,
                                       "batch_size must be a positive integer, got 0"),
        "split_loader(num_workers=-1)": (lambda: split_loader([], False, 4, num_workers=-1), ValueError,
                                         "num_workers must be an integer >= 0, got -1"),
        "load_prompts(path missing)": (lambda: load_prompts(model(), "/nonexistent/p.safetensors"), FileNotFoundError,
                                       "does not exist"),
        "save_prompts(path=a folder)": (lambda: save_prompts(model(), "/tmp"), OSError, "it is a folder"),
        "evaluate(loader=None)": (lambda: evaluate(model(), None), TypeError, "evaluate() needs the split to evaluate"),
        "evaluate(model=Linear)": (lambda: evaluate(torch.nn.Linear(2, 2), batches), TypeError,
                                   "evaluate() needs a model made by e2vpt_viz.apply_prompts"),
        "evaluate(loader=[])": (lambda: evaluate(model(), []), ValueError, "empty loader"),
        "fit(train_loader=list)": (lambda: fit(model(), batches, None, TrainConfig(epochs=1, warmup_epochs=0)),
                                   TypeError, "fit() needs the training split as a DataLoader"),
        "fit(config=dict)": (lambda: fit(model(), split_loader([0, 1], False, 2), None, {"epochs": 1}), TypeError,
                             "fit() needs a TrainConfig"),
        "TrainConfig(epochs=0)": (lambda: TrainConfig(epochs=0), ValueError, "epochs must be a positive integer"),
        "TrainConfig(batch_size='32')": (lambda: TrainConfig(batch_size="32"), ValueError, "batch_size must be"),
        "token_budgets(num_prompts=0)": (lambda: pruning.token_budgets(0), ValueError,
                                         "num_prompts must be a positive integer, got 0"),
        "pruning_masks(num_tokens=5 of 3)": (lambda: pruning.pruning_masks(scores, 5, 0), ValueError,
                                             "num_tokens must be in [0, 2]"),
        "pruning_sweep(ratios=[1.5])": (lambda: pruning.pruning_sweep(model(), batches, [1.5], scores=scores),
                                        ValueError, "1.5"),
        "importance_scores(score='magnitude')": (lambda: pruning.importance_scores(model(), batches, "magnitude"),
                                                 ValueError, "'magnitude'"),
        "accuracy_vs_parameters(results='x')": (lambda: plots.accuracy_vs_parameters("x"), TypeError,
                                                "method results must be a list of rows"),
        "accuracy_vs_parameters(rows without test_acc)": (
            lambda: plots.accuracy_vs_parameters([{"method": "e2vpt", "parameters": {}}]), TypeError,
            "one without test_acc"),
        "few_shot_curves(rows=dict)": (lambda: plots.few_shot_curves({"shots": 1}), TypeError,
                                       "few-shot rows must be a list of rows"),
        "pruning_tradeoff(rows of numbers)": (lambda: plots.pruning_tradeoff([0.1, 0.2]), TypeError,
                                              "must be a dict with ratio, acc, parameters"),
    }


def test_wrong_arguments_to_public_functions_end_in_one_line_naming_the_argument(fault_root, outcome):
    """11o · every public function a lesson or a script calls, given a wrong type, an out-of-range value or a missing
    piece → the library's own one-line error naming the argument (was, among others: AttributeError 'Linear' object
    has no attribute 'visual_prompts', 'NoneType' object is not iterable, string indices must be integers,
    torch's batch_size message, a silently accepted crop size 0)"""
    cases = _public_argument_cases(fault_root)
    for name, (call, kind, fragment) in cases.items():
        with pytest.raises(kind) as raised:
            call()
        message = str(raised.value)
        assert fragment in message and "\n" not in message.strip(), (name, message)
        assert raised.traceback[-1].path.parts[-2] in ("e2vpt_viz", "data_prep"), (name, str(raised.traceback[-1].path))
    outcome(f"{len(cases)} wrong arguments, each one line from the library (e.g. "
            f"{cases['evaluate(loader=None)'][2]!r})")
