"""Cost of the interactive figures, measured in one run.

1. Slider response (kernel side): one :class:`~e2vpt_viz.widgets.PruningSlider` update — the cached-sweep lookup, the
   label, and the FigureWidget batch update of the point and the per-class bars — median over every ratio, repeated.
   Target: < 100 ms.
2. Attention capture: a forward pass that records every block's attention probabilities (the manual path) against a
   plain inference pass (fused SDPA), same model and batch, interleaved, median. Target: <= 2x.

    python benchmarks/visualisation.py                                      # CPU-sized defaults
    python benchmarks/visualisation.py --model vit_base_patch16_224 --classes 200 --batch-size 64 --device cuda
"""
from __future__ import annotations

import argparse
import statistics

import timm
import torch

from timing import Record, timed

from e2vpt_viz import E2VPTConfig, apply_prompts
from e2vpt_viz.pruning import PruningSweep
from e2vpt_viz.widgets import PruningSlider, figure_widget_available


def slider_response_ms(classes: int, ratios: int, repeats: int) -> tuple[float, bool]:
    """Median milliseconds of one slider update over a sweep with ``ratios`` cached ratios and ``classes`` classes."""
    grid = [round(i / ratios, 3) for i in range(ratios)]
    g = torch.Generator().manual_seed(0)
    results = {r: {"ratio": r, "acc": 0.9 - r / 2, "parameters": {"tunable": int(10_000 * (1 - r))},
                   "pruned_tokens": list(range(int(5 * r))), "per_class_acc": torch.rand(classes, generator=g).tolist()}
               for r in grid}
    widget = PruningSlider(PruningSweep(grid, results), value=0.0, class_names=[f"class {c}" for c in range(classes)])
    times = [1000 * timed(lambda r=r: widget.update(r), torch.device("cpu")) for _ in range(repeats) for r in grid]
    return statistics.median(times), not widget.static


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--kv-prompts", type=int, default=5)
    parser.add_argument("--classes", type=int, default=200, help="classes shown in the per-class bars")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--write", help="also write a JSON record (e.g. benchmarks/results/visualisation_cpu.json)")
    args = parser.parse_args()
    record = Record(args.write)
    device = torch.device(args.device)

    slider_ms, widget = slider_response_ms(args.classes, ratios=10, repeats=args.repeats)
    record.say(f"slider response: {slider_ms:.1f} ms median per update ({args.classes} classes, "
          f"{'FigureWidget' if widget else 'static figure'}; anywidget available: {figure_widget_available()}); "
          "target < 100 ms")

    torch.manual_seed(0)
    backbone = timm.create_model(args.model, pretrained=False, num_classes=0)
    model = apply_prompts(backbone, E2VPTConfig(num_prompts=args.prompts, num_kv_prompts=args.kv_prompts),
                          args.classes).to(device).eval()
    images = torch.randn(args.batch_size, 3, *backbone.patch_embed.img_size, device=device)
    from e2vpt_viz.attention_maps import capture_attention

    def plain() -> None:
        with torch.no_grad():
            model(images)

    def capture() -> None:
        capture_attention(model, images)

    plain(), capture()  # warm-up
    pairs = [(timed(plain, device), timed(capture, device)) for _ in range(args.repeats)]
    base, rec = statistics.median(p for p, _ in pairs), statistics.median(c for _, c in pairs)
    record.say(f"attention capture ({args.model}, batch {args.batch_size}, {device}): plain inference "
          f"{1000 * base:.1f} ms, with capture of all {len(model.backbone.blocks)} blocks {1000 * rec:.1f} ms, "
          f"ratio {rec / base:.2f}x; target <= 2x")
    record.write("visualisation.py", None, str(device))


if __name__ == "__main__":
    main()
