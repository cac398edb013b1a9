"""Overhead of the prompted ViT: our E²VPT train step vs a plain timm ViT train step with the same token count.

The plain model is the same timm ViT with P register tokens standing in for the P visual prompts (so both
sequences have prefix + P + patches tokens) and only those tokens and the head trainable; ours adds the
per-layer prompt replacement, the masks and T key-value prompts per head. "ours fused" skips the tokens nothing
reads (deep prompts the next layer replaces, all but the class token in the last block); "ours, every token"
computes them, as the plain model does, and is the like-for-like overhead. Also measured: fused (SDPA) vs
manual attention (the visualisation path). Steps are interleaved A/B/A/B and the median is reported, so both
sides see the same machine state. Prints ratios; the target for ours / plain is <= 1.05 on CPU.

    python benchmarks/overhead.py                      # CPU-sized defaults
    python benchmarks/overhead.py --model vit_base_patch16_224 --batch-size 128 --device cuda
"""
from __future__ import annotations

import argparse
import statistics

import timm
import torch
import torch.nn.functional as F

from timing import Record, timed

from e2vpt_viz import E2VPTConfig, apply_prompts, record_attention


def train_step(model, params, images, labels):
    logits = model(images)
    loss = F.cross_entropy(logits.float(), labels)
    grads = torch.autograd.grad(loss, params)
    return loss.detach(), grads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=5, help="visual prompts P")
    parser.add_argument("--kv-prompts", type=int, default=5, help="key-value prompts T")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--write", help="also write a JSON record (e.g. benchmarks/results/overhead_cpu.json)")
    args = parser.parse_args()
    record = Record(args.write)
    device = torch.device(args.device)
    torch.manual_seed(0)

    ours = apply_prompts(timm.create_model(args.model, num_classes=0), E2VPTConfig(
        num_prompts=args.prompts, num_kv_prompts=args.kv_prompts, dropout=0.0), 200).to(device).train()
    plain = timm.create_model(args.model, num_classes=200, reg_tokens=args.prompts).to(device).eval()
    for name, p in plain.named_parameters():
        p.requires_grad_(name.startswith(("reg_token", "head.")))
    ours_params = [p for p in ours.parameters() if p.requires_grad]
    plain_params = [p for p in plain.parameters() if p.requires_grad]

    size = ours.backbone.patch_embed.img_size
    images = torch.randn(args.batch_size, 3, *size, device=device)
    labels = torch.randint(0, 200, (args.batch_size,), device=device)

    def ours_fused():
        train_step(ours, ours_params, images, labels)

    def ours_every_token():
        with ours.using(skip_unread_tokens=False):
            train_step(ours, ours_params, images, labels)

    def ours_manual():
        with record_attention(ours):
            train_step(ours, ours_params, images, labels)

    def plain_step():
        train_step(plain, plain_params, images, labels)

    cases = {"plain timm": plain_step, "ours fused": ours_fused, "ours, every token": ours_every_token,
             "ours manual": ours_manual}
    for fn in cases.values():  # warm-up
        fn()
    times = {name: [] for name in cases}
    for _ in range(args.steps):
        for name, fn in cases.items():
            times[name].append(timed(fn, device))
    median = {name: statistics.median(t) for name, t in times.items()}
    tokens = ours.num_prefix_tokens + ours.backbone.patch_embed.num_patches
    record.say(f"model {args.model}, batch {args.batch_size}, {tokens} tokens (P={args.prompts}, T={args.kv_prompts}), "
          f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"torch {torch.__version__}, median of {args.steps} interleaved steps")
    for name, value in median.items():
        record.say(f"  {name:17s} {1000 * value:8.1f} ms/step  {args.batch_size / value:8.1f} img/s")
    record.say(f"ratio ours, every token / plain timm train step: {median['ours, every token'] / median['plain timm']:.3f} "
          "(target <= 1.05)")
    record.say(f"ratio ours fused / plain timm train step:        {median['ours fused'] / median['plain timm']:.3f} "
          "(skipping unread tokens)")
    record.say(f"ratio manual / fused attention (ours):           {median['ours manual'] / median['ours fused']:.3f}")
    record.write("overhead.py", None, str(device))


if __name__ == "__main__":
    main()
