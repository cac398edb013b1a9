"""Training and evaluation throughput per method: ours beside an official-style implementation, in the same run.

Ours: bf16 autocast (on CUDA), fused scaled-dot-product attention with the key-value prompts concatenated in head
space (flash kernels), no compute for tokens nothing reads (deep prompts the next layer replaces, all but the class
token in the last block), optionally ``torch.compile`` (``--compile``) and gradient checkpointing. Official style, as
the VPT / E²VPT papers' code computes it (written here from that description, not copied): explicit
``softmax(q kᵀ / sqrt(d)) v`` attention over every token of every block and fp32 throughout, no compilation. Both are the same model with the same
random weights and synthetic images of full size; each step is forward, cross-entropy, backward and an SGD step.

Reported per method: images/s (median of alternating blocks of timed steps, ours and official in turn so both see
the same machine state, synchronised only at the ends of a block), peak memory over the warm-up steps (CUDA:
``torch.cuda.max_memory_allocated``, weights included; CPU, which keeps no allocator peak: the bytes one training
step saves for its backward pass, i.e. the activations, marked *), ours / official speed ratio, and the fraction of the device's dense bf16 peak
(FLOPs of one step counted with ``torch.utils.flop_counter.FlopCounterMode``, not by hand; known peaks by device
name, n/a on CPU). The last line is evaluation (no gradients) of E²VPT.

    python benchmarks/train_throughput.py                                        # CUDA: ViT-B/16, batch 128
    python benchmarks/train_throughput.py --compile --write benchmarks/results/train_throughput_h100.json
    python benchmarks/train_throughput.py --model starter-vit --batch 16 --steps 2 --threads 1   # CPU, ~1 minute

The issue's targets on one H100 (ViT-B/16, E²VPT): >= 5,000 training images/s (>= 45% of the bf16 peak) and >= 3x
the official style; evaluation >= 10,000 images/s. They are unmeasured until this runs on such a GPU.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from timing import Record

from e2vpt_viz import ModelOptions, apply_prompts, load_backbone, method_config
from e2vpt_viz.experiments.costs import PeakMemory, flops_per_image, saved_activation_bytes, synchronize

# (label, method, options) — the list: full, linear, VPT-shallow, VPT-deep P = 5, 50, 200, E²VPT P = T = 5, LoRA.
METHODS = [
    ("full", "full", {}),
    ("linear", "linear", {}),
    ("vpt-shallow P=5", "vpt-shallow", {"num_prompts": 5}),
    ("vpt-deep P=5", "vpt-deep", {"num_prompts": 5}),
    ("vpt-deep P=50", "vpt-deep", {"num_prompts": 50}),
    ("vpt-deep P=200", "vpt-deep", {"num_prompts": 200}),
    ("e2vpt P=T=5", "e2vpt", {"num_prompts": 5, "num_kv_prompts": 5}),
    ("lora r=8", "lora", {}),
]

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, matched by device-name substring in order.
BF16_PEAK_TFLOPS = [("H200", 989.4), ("GH200", 989.4), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.4),
                    ("A100", 312.0), ("L40S", 362.1), ("A10G", 70.0)]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def bf16_peak(device: torch.device) -> Optional[float]:
    """Dense bf16 FLOP/s of a known GPU, else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in BF16_PEAK_TFLOPS if key in name), None)


def memory_text(memory: "PeakMemory", activations: Optional[int]) -> str:
    if memory.oom:
        return "OOM"
    if memory.bytes is not None:
        return f"{memory.bytes / 2 ** 30:.2f} GiB"
    return "n/a" if activations is None else f"{activations / 2 ** 20:.0f} MiB*"


def build(model_name: str, method: str, options: dict, num_classes: int, official: bool, device: torch.device,
          grad_checkpointing: bool):
    torch.manual_seed(0)
    how = ModelOptions(fused_attn=not official, skip_unread_tokens=not official,
                       grad_checkpointing=grad_checkpointing and not official)
    model = apply_prompts(load_backbone(model_name, pretrained=False), method_config(method, **options), num_classes,
                          how)
    return model.to(device)


def train_step_fn(model, forward, images, labels, amp: bool) -> Callable[[], None]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and images.is_cuda)

    def step() -> None:
        with autocast:
            logits = forward(images)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def eval_step_fn(forward, images, amp: bool) -> Callable[[], None]:
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and images.is_cuda)

    @torch.no_grad()
    def step() -> None:
        with autocast:
            forward(images)

    return step


def peak_memory(step: Callable[[], None], warmup: int, device: torch.device) -> PeakMemory:
    """Peak memory over ``warmup`` steps of one implementation alone ('OOM' if it ran out)."""
    with PeakMemory(device) as memory:
        try:
            for _ in range(max(1, warmup)):
                step()
        except torch.OutOfMemoryError:
            memory.oom = True
    return memory


def interleaved_rates(steps: dict, batch: int, block: int, rounds: int, device: torch.device) -> dict:
    """Images/s per implementation: ``rounds`` alternating blocks of ``block`` steps (A B A B ...), synchronised
    only at the ends of a block; the median block counts, so both sides see the same machine state."""
    rates: dict = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            synchronize(device)
            started = time.perf_counter()
            for _ in range(block):
                step()
            synchronize(device)
            rates[name].append(batch * block / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in rates.items()}


def main(argv: Optional[list[str]] = None) -> list[dict]:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_base_patch16_224" if cuda else "starter-vit",
                        help="any timm ViT or starter-vit (random weights)")
    parser.add_argument("--batch", type=int, default=128 if cuda else 16)
    parser.add_argument("--steps", type=int, default=10 if cuda else 2, help="timed steps per block")
    parser.add_argument("--rounds", type=int, default=3, help="alternating blocks per implementation (median)")
    parser.add_argument("--warmup", type=int, default=3 if cuda else 1, help="warm-up steps (memory is measured here)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile ours (not the official style)")
    parser.add_argument("--grad-checkpointing", action="store_true", help="ours with gradient checkpointing")
    parser.add_argument("--methods", nargs="+", help="labels or method names to run (default: all)")
    parser.add_argument("--write", help="also write a JSON record (device, torch, command, date, output)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = device.type == "cuda"
    peak = bf16_peak(device)
    record = Record(args.write)
    say = record.say

    size = load_backbone(args.model, pretrained=False).patch_embed.img_size
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, *size, generator=g).to(device)
    labels = torch.randint(0, args.classes, (args.batch,), generator=g).to(device)
    say(f"device {device_name(device)}, torch {torch.__version__}, model {args.model} (random weights), "
        f"batch {args.batch}, median of {args.rounds} interleaved blocks of {args.steps} steps after {args.warmup} "
        "warm-up; ours: "
        f"{'bf16 autocast, ' if amp else 'fp32 (no bf16 autocast on CPU), '}fused SDPA"
        f"{', torch.compile' if args.compile else ''}{', gradient checkpointing' if args.grad_checkpointing else ''}; "
        "official style: explicit softmax attention, fp32")
    say(f"dense bf16 peak: {'%.0f TFLOP/s' % (peak / 1e12) if peak else 'n/a (unknown device or CPU)'}")
    header = (f"{'method':17s} {'ours img/s':>11s} {'official':>10s} {'ratio':>6s} {'ours mem':>10s} "
              f"{'official mem':>12s} {'GFLOP/img':>9s} {'of bf16 peak':>12s}")
    say(header)
    rows = []
    chosen = [m for m in METHODS if not args.methods or m[0] in args.methods or m[1] in args.methods]
    for label, method, options in chosen + [("eval e2vpt", "e2vpt", {"num_prompts": 5, "num_kv_prompts": 5})]:
        train = not label.startswith("eval")
        result = {"method": label}
        steps = {}
        for impl in ("ours", "official"):
            official = impl == "official"
            model = build(args.model, method, options, args.classes, official, device, args.grad_checkpointing)
            forward = torch.compile(model) if args.compile and not official else model
            if impl == "ours":
                result["gflop"] = flops_per_image(model, images, labels, train, amp) / 1e9
            model.train(train)
            step = (train_step_fn(model, forward, images, labels, amp and not official) if train
                    else eval_step_fn(forward, images, amp and not official))
            memory = peak_memory(step, args.warmup, device)  # also the warm-up (and compilation)
            activations = (saved_activation_bytes(model, model, images, labels, amp and not official)
                           if train and device.type != "cuda" and not memory.oom else None)
            result[f"{impl}_memory"] = memory_text(memory, activations)
            if not memory.oom:
                steps[impl] = step
        try:
            rates = interleaved_rates(steps, args.batch, args.steps, args.rounds, device)
        except torch.OutOfMemoryError:
            rates = {}
        result["ours"], result["official"] = rates.get("ours", "OOM"), rates.get("official", "OOM")
        del steps, model, forward, step
        gc.collect()
        ours, theirs = result["ours"], result["official"]
        ratio = f"{ours / theirs:.2f}" if not isinstance(ours, str) and not isinstance(theirs, str) else "n/a"
        fraction = (f"{100 * result['gflop'] * 1e9 * ours / peak:.1f}%" if peak and not isinstance(ours, str)
                    else "n/a")
        result.update(ratio=ratio, fraction_of_bf16_peak=fraction)
        rows.append(result)

        def rate_text(value) -> str:
            return value if isinstance(value, str) else f"{value:.1f}"

        say(f"{label:17s} {rate_text(ours):>11s} {rate_text(theirs):>10s} {ratio:>6s} {result['ours_memory']:>10s} "
            f"{result['official_memory']:>12s} {result['gflop']:9.2f} {fraction:>12s}")
    if device.type != "cuda":
        say("* CPU memory: bytes saved for the backward pass by one step (activations; no allocator peak on CPU)")
    ratios = [float(r["ratio"]) for r in rows if r["ratio"] != "n/a"]
    if ratios:
        say(f"median ours / official speed ratio: {statistics.median(ratios):.2f}")
    record.write("train_throughput.py", argv, device_name(device))
    return rows


if __name__ == "__main__":
    main()
