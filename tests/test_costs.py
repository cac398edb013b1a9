"""Method costs measured in one run through the training loop: images/s, peak training memory, inference FLOPs."""
import json

import pytest

from e2vpt_viz.experiments.cli import main
from e2vpt_viz.experiments.config import load_run_config
from e2vpt_viz.experiments.costs import costs_markdown, measure_method_costs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def costs(tiny_root):
    cfg = load_run_config("starter", [f"data.root={tiny_root}", "train.batch_size=4"])
    return measure_method_costs(cfg, ["linear", "full", "lora", "vpt-deep", "ssf"], num_batches=2, rounds=1,
                                progress=False)


def test_every_method_is_measured_on_the_same_batches(costs):
    rows = {r["method"]: r for r in costs["rows"]}
    assert list(rows) == ["linear", "full", "lora", "vpt-deep", "ssf"]
    assert (costs["batch_size"], costs["batches"], costs["rounds"], costs["crop_size"]) == (4, 2, 1, 64)
    for row in rows.values():
        assert row["train_images_per_s"] > 0 and row["eval_images_per_s"] > 0 and row["memory_kind"] == "cpu"
    weights = 4 * rows["linear"]["tunable"] + 4 * 1_367_136  # fp32: the starter backbone and the head
    # the linear probe saves nothing inside the frozen backbone: its step holds the weights, the head's gradient and
    # momentum, and the head's input
    assert weights < rows["linear"]["peak_train_bytes"] < weights + 200_000
    # full fine-tuning adds a gradient and a momentum buffer for every weight: two more copies of the backbone
    assert rows["full"]["peak_train_bytes"] > rows["lora"]["peak_train_bytes"] + 2 * 4 * 1_300_000
    # every method that trains inside the backbone keeps its activations for the backward pass
    assert min(rows[m]["peak_train_bytes"] for m in ("lora", "vpt-deep", "ssf")) > 3 * rows["linear"]["peak_train_bytes"]


def test_flops_say_where_the_compute_goes(costs):
    rows = {r["method"]: r for r in costs["rows"]}
    plain = rows["linear"]["inference_gflops_per_image"]
    assert rows["full"]["inference_gflops_per_image"] == pytest.approx(plain)  # same network at inference
    assert rows["vpt-deep"]["inference_gflops_per_image"] > plain  # 50 more tokens in every block
    assert plain < rows["lora"]["inference_gflops_per_image"] < 1.1 * plain  # the low-rank branch is small
    assert rows["linear"]["train_gflops_per_image"] < 1.1 * plain  # no backward through the backbone
    assert rows["full"]["train_gflops_per_image"] > 2.5 * plain  # forward + input and weight gradients


def test_the_cli_writes_a_cost_file_and_never_replaces_one(tiny_root, tmp_path, capsys, costs):
    out = tmp_path / "costs.json"
    args = ["costs", "--methods", "linear", "adaptformer", "--out", str(out), "--batches", "1", "--rounds", "1",
            "--quiet", f"data.root={tiny_root}", "train.batch_size=4"]
    assert main(args) == 0
    written = json.loads(out.read_text())
    assert [r["method"] for r in written["rows"]] == ["linear", "adaptformer"]
    printed = capsys.readouterr().out
    assert costs_markdown(written) in printed and "| adaptformer |" in printed
    before = out.read_bytes()
    assert main(args) == 2
    assert "never replaced" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["costs", "--methods", "lorra", "--out", str(tmp_path / "x.json"), f"data.root={tiny_root}"]) == 2
    assert "did you mean lora" in capsys.readouterr().err and not (tmp_path / "x.json").exists()
