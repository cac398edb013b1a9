"""Several processes, one global batch: sharded loaders partition the single-process batches, DDP reduces only
trained tensors, and `torchrun --nproc_per_node=2 -m e2vpt_viz train` (gloo, CPU) ends with the prompts of one
process with the same global batch and seed."""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import TensorDataset

from e2vpt_viz import apply_prompts, load_backbone, method_config
from e2vpt_viz.experiments.cli import main
from e2vpt_viz.data import FGVCDataset, split_loader
from e2vpt_viz.experiments.device_data import DeviceImages, DeviceLoader
from e2vpt_viz.experiments.distributed import batch_bounds, check_batches, sharded_loader
from e2vpt_viz.training import seed_epoch

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("fresh_device_cache")


def test_batch_bounds_split_every_batch_contiguously():
    assert [batch_bounds(7, r, 2) for r in range(2)] == [(0, 3), (3, 7)]
    assert [batch_bounds(8, r, 3) for r in range(3)] == [(0, 2), (2, 5), (5, 8)]
    check_batches(18, 8, 2)  # last batch of 2: fine
    with pytest.raises(ValueError, match="at least 2 images"):
        check_batches(17, 8, 2)


def test_sharded_dataloaders_partition_the_single_process_batches():
    dataset = TensorDataset(torch.arange(22))
    single = split_loader(dataset, True, 6, seed=3)
    shards = [sharded_loader(dataset, True, 6, (r, 2), seed=3) for r in range(2)]
    assert all(s.global_batch_size == 6 and len(s) == len(single) == 4 for s in shards)
    for epoch in range(3):
        for loader in (single, *shards):
            seed_epoch(loader, 3, epoch)
        parts = [list(shard) for shard in shards]
        for step, (batch,) in enumerate(single):
            assert torch.equal(torch.cat([parts[0][step][0], parts[1][step][0]]), batch)
            offset, size = shards[1].step_slice(step)
            assert size == len(batch) and offset == len(parts[0][step][0])
    evaluation = [sharded_loader(dataset, False, 4, (r, 2)) for r in range(2)]
    assert torch.cat([b for loader in evaluation for (b,) in loader]).tolist() == list(range(22))


def test_sharded_device_loaders_partition_the_single_process_batches(tiny_root):
    images = DeviceImages(FGVCDataset(tiny_root, "train"), 32, train=True, device="cpu")
    single = DeviceLoader(images, 8, shuffle=True, seed=0)
    shards = [DeviceLoader(images, 8, shuffle=True, seed=0, shard=(r, 2)) for r in range(2)]
    for loader in (single, *shards):
        seed_epoch(loader, 0, 4)
    parts = [list(shard) for shard in shards]
    for step, (x, y) in enumerate(single):
        assert torch.equal(torch.cat([parts[0][step][0], parts[1][step][0]]), x)
        assert torch.equal(torch.cat([parts[0][step][1], parts[1][step][1]]), y)


def test_ddp_reduces_only_the_trained_tensors(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path / 'rendezvous'}")
    try:
        model = apply_prompts(load_backbone("starter-vit"), method_config("e2vpt"), 20)
        trained = [p for p in model.parameters() if p.requires_grad]
        info = DistributedDataParallel(model)._get_ddp_logging_data()
        assert info["num_parameter_tensors"] == len(trained) == 6  # visual + KV prompts, 2 masks, head weight + bias
        assert info["total_parameter_size_bytes"] == 4 * sum(p.numel() for p in trained)
    finally:
        dist.destroy_process_group()


def test_torchrun_two_processes_end_with_the_prompts_of_one(tiny_root, tmp_path, capsys):
    common = ["--config", "starter", "--quiet", f"data.root={tiny_root}", "train.batch_size=8", "train.epochs=2",
              "train.warmup_epochs=1", "data.on_device=true", "data.num_workers=1", "train.device=cpu"]
    assert main(["train", *common, f"output_dir={tmp_path / 'one'}"]) == 0
    capsys.readouterr()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "e2vpt_viz", "train", *common, f"output_dir={tmp_path / 'two'}"],
                          capture_output=True, text=True, timeout=300, cwd=tempfile.gettempdir(), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test accuracy") == 1  # only process 0 prints
    one, two = load_file(tmp_path / "one" / "prompts.safetensors"), load_file(tmp_path / "two" / "prompts.safetensors")
    assert set(one) == set(two) == {"visual_prompts", "kv_prompts", "token_mask", "segment_mask", "head.weight",
                                    "head.bias"}
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-5, rtol=0), (name, (one[name] - two[name]).abs().max())
    assert any(not torch.equal(one[name], torch.zeros_like(one[name])) for name in one)
    h1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    h2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert h1["test_acc"] == h2["test_acc"] and len(h2["history"]) == 2
    for a, b in zip(h1["history"], h2["history"]):
        assert a["lr"] == b["lr"] and a["val_acc"] == b["val_acc"]  # the lr is scaled by the global batch
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
