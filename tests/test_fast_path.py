"""Fast-path options (gradient checkpointing, torch.compile), resume compatibility, no host syncs in the step,
out-of-memory handling, and the throughput benchmark's counts (behaviour and numbers, not timing)."""
import hashlib
import json
import importlib.util
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from conftest import tiny_vit
from e2vpt_viz import E2VPTConfig, TrainConfig, apply_prompts, fit
from e2vpt_viz import model as model_module
from e2vpt_viz.backbones import STARTER_BACKBONES
from e2vpt_viz.experiments.cli import main
from e2vpt_viz.model import PromptedViT
from e2vpt_viz.training import (STATE_FILE, TrainingOutOfMemoryError, make_optimizer, result_settings,
                                train_one_epoch)

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def data(n=24):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 4
    images = torch.randn(n, 3, 32, 32, generator=g)
    return DataLoader(TensorDataset(images, labels), batch_size=8, shuffle=True, generator=torch.Generator())


def make_model():
    torch.manual_seed(0)
    return apply_prompts(tiny_vit(), E2VPTConfig(num_prompts=3, num_kv_prompts=2), 4)


CONFIG = dict(epochs=3, warmup_epochs=1, base_lr=2.0, progress=False, seed=1)


def assert_same_trained(a, b, atol=0.0):
    for name, value in a.state_dict().items():
        if atol:
            assert torch.allclose(value, b.state_dict()[name], atol=atol, rtol=0), name
        else:
            assert torch.equal(value, b.state_dict()[name]), name


def test_new_options_are_not_result_settings():
    config = TrainConfig(compile="eager", grad_checkpointing=True, device="cpu", progress=False)
    assert result_settings(asdict(config)) == result_settings(asdict(TrainConfig()))
    for bad in (dict(compile=""), dict(compile=3), dict(grad_checkpointing="yes")):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def test_checkpointing_gives_the_same_prompts_and_a_run_resumes_with_it_switched_on(tmp_path, monkeypatch):
    straight = make_model()
    fit(straight, data(), None, TrainConfig(**CONFIG))
    calls = []
    real = model_module.checkpoint
    monkeypatch.setattr(model_module, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))

    def stop(record, _):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # an older run without the option, interrupted
        fit(make_model(), data(), None, TrainConfig(**CONFIG), tmp_path, [stop])
    assert not calls
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert set(state["train_config"]) == set(result_settings(asdict(TrainConfig())))  # what older states hold
    resumed = make_model()
    fit(resumed, data(), None, TrainConfig(**CONFIG, grad_checkpointing=True), tmp_path)
    assert len(calls) == 2 * 3 * 3  # 2 epochs x 3 steps x 3 blocks
    assert not resumed.options.grad_checkpointing  # on while fit trained, the model's own option afterwards
    assert_same_trained(straight, resumed, atol=1e-6)


def test_compiled_training_matches_eager():
    torch._dynamo.reset()
    eager, compiled = make_model(), make_model()
    fit(eager, data(), data(), TrainConfig(**CONFIG))
    history = fit(compiled, data(), data(), TrainConfig(**CONFIG, compile="eager"))  # dynamo graphs, no C++ build
    assert len(history) == 3
    assert_same_trained(eager, compiled, atol=1e-5)


def test_the_training_step_never_waits_for_the_device(tmp_path, monkeypatch):
    """Every conversion of a tensor value to a Python value is counted during an epoch on the device-resident
    pipeline (device="cpu"): one per epoch, the summed metrics; none inside the steps."""
    from data_prep.synthetic import generate_synthetic
    from e2vpt_viz.experiments.device_data import make_device_loaders

    root = generate_synthetic(tmp_path / "tiny", task="target", seed=1, num_classes=2, train_per_class=8,
                              val_per_class=1, test_per_class=1)
    loader = make_device_loaders(root, 32, 4, 0, "cpu")["train"]
    model = make_model()
    optimizer = make_optimizer(model, TrainConfig(**CONFIG))
    syncs = []
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _real=real, _name=name, **k:
                            syncs.append(_name) or _real(self, *a, **k))
    result = train_one_epoch(model, loader, optimizer, lambda step: 0.1, 0, torch.device("cpu"), True)
    monkeypatch.undo()
    assert result["steps"] == 4 and syncs == ["tolist"]


def test_out_of_memory_names_the_fix_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    saved = {}

    def remember(record, _):
        saved[record["epoch"]] = hashlib.sha256((tmp_path / STATE_FILE).read_bytes()).hexdigest()
        if record["epoch"] == 1:
            real = PromptedViT.forward

            def forward(self, images):
                if self.training:
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
                return real(self, images)

            monkeypatch.setattr(PromptedViT, "forward", forward)

    with pytest.raises(TrainingOutOfMemoryError) as err:
        fit(make_model(), data(), None, TrainConfig(**CONFIG), tmp_path, [remember])
    message = str(err.value)
    assert "epoch 2" in message and "train.grad_checkpointing=true" in message
    assert "smaller train.batch_size (now 128, e.g. 64" in message and "intact (epoch 1)" in message
    assert hashlib.sha256((tmp_path / STATE_FILE).read_bytes()).hexdigest() == saved[1]
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["epoch"] == 1


def test_cli_reports_out_of_memory_as_one_line(tmp_path, monkeypatch, capsys):
    from data_prep.synthetic import generate_synthetic

    root = generate_synthetic(tmp_path / "tiny", task="target", seed=1, num_classes=2, train_per_class=2,
                              val_per_class=1, test_per_class=1)

    def forward(self, images):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(PromptedViT, "forward", forward)
    assert main(["train", "--config", "starter", "--quiet", f"data.root={root}", "backbone.pretrained=false",
                 "train.epochs=2", "train.warmup_epochs=1", "train.batch_size=4", "train.grad_checkpointing=true",
                 f"output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Out of CPU memory in epoch 1. Use a smaller train.batch_size (now 4, e.g. 2")
    assert "grad_checkpointing" not in err  # already on: not suggested again
    assert "nothing was saved" in err and err.count("\n") == 1


def load_benchmark():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("train_throughput", ROOT / "benchmarks" / "train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_on_cpu_and_counts_flops_of_the_formula(tmp_path):
    bench = load_benchmark()
    out = tmp_path / "record.json"
    rows = bench.main(["--model", "starter-vit", "--batch", "2", "--steps", "1", "--rounds", "1", "--warmup", "1",
                       "--methods", "e2vpt", "linear", "--write", str(out)])
    assert [r["method"] for r in rows] == ["linear", "e2vpt P=T=5", "eval e2vpt"]
    for row in rows:
        assert row["ours"] > 0 and row["official"] > 0 and row["fraction_of_bf16_peak"] == "n/a"
    # starter-vit: 64 patches of 8x8, width 96, MLP 384, 200 classes; E2VPT adds P = 5 tokens and T = 5 key-value
    # prompts. Forward multiply-adds per image, counted by hand here only to check the counter. Every token is a key
    # and a value in every block, but only the rows something reads are queries: all but the deep prompts (which
    # the next block replaces) in blocks 0..10, the class token alone in the last block.
    d, depth = 96, STARTER_BACKBONES["starter-vit"]["depth"]

    def forward_flops(n, t, queries):  # n tokens, t key-value prompts, query rows per block
        blocks = sum(3 * n * d * d + m * d * d + 2 * m * 4 * d * d + 2 * m * (n + t) * d for m in queries)
        return 2 * (64 * 3 * 8 * 8 * d + blocks + d * 200)  # qkv, proj, MLP, q·k and attention·v; patches; head

    queries = [1 + 64] * (depth - 1) + [1]  # E2VPT and the linear probe alike
    assert rows[2]["gflop"] * 1e9 == pytest.approx(forward_flops(1 + 5 + 64, 5, queries), rel=1e-9)
    assert rows[1]["gflop"] > 2 * rows[2]["gflop"]  # backward through every block for the prompts
    # linear probe: the plain backbone's forward plus the head's weight gradient (nothing flows into the backbone)
    assert rows[0]["gflop"] * 1e9 == pytest.approx(forward_flops(1 + 64, 0, queries) + 2 * d * 200, rel=1e-9)
    record = json.loads(out.read_text())  # the JSON record docs/performance.md is rendered from
    assert record["command"].startswith("python benchmarks/train_throughput.py --model starter-vit")
    assert record["torch"] == torch.__version__ and record["device"] == bench.device_name(torch.device("cpu"))
    assert record["notes"] == [] and record["benchmark"] == "benchmarks/train_throughput.py"
    assert record["output"][-1].startswith("median ours / official speed ratio") and len(record["output"]) == 8
    assert bench.bf16_peak(torch.device("cpu")) is None
