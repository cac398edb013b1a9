"""Cost of the instant-pruning sweep, and the inference speed-up from physically removing pruned prompt tokens.

1. Sweep: ``pruning_sweep`` over 10 ratios vs one ``evaluate`` pass on the same loader, measured in one run. Target:
   at most 11x (one pass per ratio plus the unpruned one).
2. Removal: E²VPT keeps pruned tokens as zero vectors, so pruning saves storage but no compute. ``remove_pruned_tokens``
   drops them from the sequence. Prints the forward time of the zeroed model vs the compact one (interleaved A/B,
   median) and how often their predictions agree (they are not identical: see ``remove_pruned_tokens``).

    python benchmarks/pruning.py                                    # CPU-sized defaults
    python benchmarks/pruning.py --model vit_base_patch16_224 --prompts 50 --batch-size 128 --device cuda
"""
from __future__ import annotations

import argparse
import statistics

import timm
import torch
from torch.utils.data import DataLoader, TensorDataset

from timing import Record, timed

from e2vpt_viz import E2VPTConfig, apply_prompts, evaluate
from e2vpt_viz.pruning import importance_scores, pruning_masks, pruning_sweep, remove_pruned_tokens, set_masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--prompts", type=int, default=50, help="visual prompts P")
    parser.add_argument("--kv-prompts", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=4, help="batches in the evaluation loader")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--write", help="also write a JSON record (e.g. benchmarks/results/pruning_cpu.json)")
    args = parser.parse_args()
    record = Record(args.write)
    device = torch.device(args.device)
    torch.manual_seed(0)

    backbone = timm.create_model(args.model, pretrained=False, num_classes=0)
    model = apply_prompts(backbone, E2VPTConfig(num_prompts=args.prompts, num_kv_prompts=args.kv_prompts), 10)
    model.to(device).eval()
    size = backbone.patch_embed.img_size
    n = args.batch_size * args.batches
    data = TensorDataset(torch.randn(n, 3, *size), torch.randint(0, 10, (n,)))
    loader = DataLoader(data, batch_size=args.batch_size)
    scores = importance_scores(model, loader)

    evaluate(model, loader)  # warm-up
    one_pass = statistics.median(timed(lambda: evaluate(model, loader), device) for _ in range(3))
    ratios = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    sweep_time = timed(lambda: pruning_sweep(model, loader, ratios, scores=scores), device)
    record.say(f"{args.model}, P={args.prompts}, {n} images, {device.type}, torch {torch.__version__}")
    record.say(f"sweep of {len(ratios)} ratios: {sweep_time:.2f} s = {sweep_time / one_pass:.2f}x one evaluation pass "
          f"({one_pass:.2f} s); target <= 11x")

    images = data.tensors[0][:args.batch_size].to(device)
    record.say("pruned tokens | zeroed ms | removed ms | speed-up | same predictions")
    for fraction in (0.5, 0.9):
        num_tokens = min(int(fraction * args.prompts), args.prompts - 1)
        zeroed = apply_prompts(timm.create_model(args.model, pretrained=False, num_classes=0),
                               E2VPTConfig(num_prompts=args.prompts, num_kv_prompts=args.kv_prompts), 10)
        zeroed.load_state_dict(model.state_dict())
        zeroed.to(device).eval()
        set_masks(zeroed, *[m.to(device) for m in pruning_masks(scores, num_tokens, 0)])
        compact = remove_pruned_tokens(zeroed).eval()
        times = {"zeroed": [], "removed": []}
        with torch.no_grad():
            for _ in range(args.repeats):  # interleaved A/B
                times["zeroed"].append(timed(lambda: zeroed(images), device))
                times["removed"].append(timed(lambda: compact(images), device))
            agree = (zeroed(images).argmax(-1) == compact(images).argmax(-1)).float().mean().item()
        z, r = statistics.median(times["zeroed"]), statistics.median(times["removed"])
        record.say(f"{num_tokens:>4} of {args.prompts:<6} | {1000 * z:9.1f} | {1000 * r:10.1f} | {z / r:7.2f}x | "
              f"{100 * agree:.0f}%")
    record.write("pruning.py", None, device.type)


if __name__ == "__main__":
    main()
