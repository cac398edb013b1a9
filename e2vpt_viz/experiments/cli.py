"""Command line: ``python -m e2vpt_viz {train,eval,report,sweep,prune,reproduce,pvp-pretrain,pvp-fewshot,lesson-results,costs,pretrain-starter,backbones,docs,record}``.

Errors a user can fix (bad config, missing data, unusable backbone, mismatched or damaged checkpoint, full disk,
diverged training, out of GPU memory) are printed as one line starting with ``error:`` and exit with status 2.

``torchrun --nproc_per_node=N -m e2vpt_viz train ...`` trains on N processes (DistributedDataParallel, see
:mod:`e2vpt_viz.experiments.distributed`); only process 0 prints and writes files.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from . import distributed as dist
from ..backbones import STARTER_BACKBONES, BackboneError
from ..checkpoint import CheckpointMismatchError, CheckpointWriteError
from ..data import DatasetLayoutError
from ..run_folder import RunFolderBusyError
from ..training import TrainingDivergedError, TrainingOutOfMemoryError

USER_ERRORS = (BackboneError, CheckpointMismatchError, CheckpointWriteError, DatasetLayoutError, RunFolderBusyError,
               TrainingDivergedError, TrainingOutOfMemoryError, ValueError, FileNotFoundError, FileExistsError)
DISTRIBUTED_COMMANDS = ("train",)


def _add_config(parser: argparse.ArgumentParser, default: Optional[str] = None) -> None:
    parser.add_argument("--config", required=default is None, default=default,
                        help="packaged config name (starter, cub_e2vpt) or a YAML file")
    parser.add_argument("overrides", nargs="*", help="section.field=value, e.g. train.epochs=5 method.num_prompts=10")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m e2vpt_viz", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one method; resumes from output_dir if interrupted")
    _add_config(train)
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    evaluate = sub.add_parser("eval", help="evaluate saved prompts")
    _add_config(evaluate)
    evaluate.add_argument("--checkpoint", help="prompts file (default: output_dir/prompts.safetensors)")
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))

    report = sub.add_parser("report", help="train several methods and write report.md / report.html")
    _add_config(report, default="starter")
    report.add_argument("--methods", nargs="+", default=["e2vpt"],
                        help="methods to train (default e2vpt; the calibration of docs/calibration.md: "
                             "linear vpt-shallow vpt-deep e2vpt full)")
    report.add_argument("--out", default="results/starter")
    report.add_argument("--quiet", action="store_true")

    sweep = sub.add_parser("sweep", help="lr x weight-decay grid, selected on last-epoch validation accuracy")
    _add_config(sweep)
    sweep.add_argument("--lrs", nargs="+", type=float, required=True, help="base learning rates (before bs/256)")
    sweep.add_argument("--wds", nargs="+", type=float, default=[0.01, 0.001, 0.0001, 0.0])
    sweep.add_argument("--out", default="results/sweep")

    prune = sub.add_parser("prune", help="E2VPT pruning: train, score, instant sweep, rewind, select on val")
    _add_config(prune)
    prune.add_argument("--quiet", action="store_true")

    reproduce = sub.add_parser("reproduce", help="the papers' protocol: lr x wd grid, pruning + rewinding (E2VPT), "
                                                 "5 final seeds, a table beside the papers' numbers; resumable")
    reproduce.add_argument("--dataset", required=True, metavar="DATASET",
                           help="cub, nabirds, flowers, dogs, cars, starter; vtab (VTAB-1k: every task of --tasks, then "
                                "the group means) or one task, vtab-<task> (vtab-dtd, vtab-starter_distance offline)")
    reproduce.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                           help="with --dataset vtab: the tasks (default all 19; starter_distance runs offline)")
    reproduce.add_argument("--vtab-root", default="data/vtab-1k",
                           help="with --dataset vtab: the folder `python -m data_prep vtab --root` prepared")
    reproduce.add_argument("--method", required=True,
                           choices=("e2vpt", "vpt-deep", "vpt-shallow", "linear", "full", "bias", "partial"))
    reproduce.add_argument("--backbone", default=None, choices=("in21k", "in21k-ft-in1k"),
                           help="FGVC: in21k (default; the VPT paper's ImageNet-21k ViT-B/16) or in21k-ft-in1k (the "
                                "ImageNet-1k fine-tuned checkpoint E2VPT's released commands load)")
    reproduce.add_argument("--config", default=None, help="base config (default: cub_e2vpt for real data, starter)")
    reproduce.add_argument("overrides", nargs="*", help="section.field=value, e.g. data.root=/data/CUB_200_2011")
    reproduce.add_argument("--out", default=None, help="output folder (default results/reproduce/DATASET/METHOD)")
    reproduce.add_argument("--tiny", action="store_true", help="CI size: 2 x 1 grid, 2 epochs, 2 seeds")
    reproduce.add_argument("--lrs", nargs="+", type=float, help="replace the paper's base-lr grid")
    reproduce.add_argument("--wds", nargs="+", type=float, help="replace the weight-decay grid {0.01, 0.001, 1e-4, 0}")
    reproduce.add_argument("--seeds", nargs="+", type=int, help="replace the final seeds 42 44 82 100 800")
    reproduce.add_argument("--prompt-lengths", nargs="+",
                           help="VPT: search these prompt lengths too, or 'paper' for VPT's 1 5 10 50 100 200")
    reproduce.add_argument("--plan", action="store_true",
                           help="print what would train (grid, batch per prompt length, backbone, config) and stop")
    reproduce.add_argument("--quiet", action="store_true")

    pvp_pretrain = sub.add_parser("pvp-pretrain", help="PVP: pre-train prompt modules on a source task")
    _add_config(pvp_pretrain)
    pvp_pretrain.add_argument("--source", default="data/starter-source",
                              help="FGVC root or ImageNet-format folder (train/<class>, val/<class>)")
    pvp_pretrain.add_argument("--out", required=True, help="prompt-module file (.safetensors)")
    pvp_pretrain.add_argument("--epochs", type=int, default=None)
    pvp_pretrain.add_argument("--quiet", action="store_true")

    pvp_fewshot = sub.add_parser("pvp-fewshot", help="PVP: few-shot tuning from random vs pre-trained prompts")
    _add_config(pvp_fewshot)
    pvp_fewshot.add_argument("--prompts", required=True, help="file written by pvp-pretrain")
    pvp_fewshot.add_argument("--shots", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    pvp_fewshot.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    pvp_fewshot.add_argument("--epochs", type=int, default=50)
    pvp_fewshot.add_argument("--out", default="results/pvp")

    pretrain = sub.add_parser("pretrain-starter", help="re-create the offline starter's tiny ViT weights")
    pretrain.add_argument("--data", default="data/starter-source", help="source-species dataset root")
    pretrain.add_argument("--name", default="starter-vit", choices=list(STARTER_BACKBONES),
                          help="which starter architecture (starter-vit-reg4: with 4 register tokens)")
    pretrain.add_argument("--out", default=None, help="weights file (default results/starter_backbone/NAME"
                                                      ".safetensors; load it with backbone.checkpoint=PATH)")
    pretrain.add_argument("--overwrite", action="store_true", help="replace an existing --out (e.g. the packaged "
                                                                    "e2vpt_viz/weights/starter-vit.safetensors)")
    pretrain.add_argument("--epochs", type=int, default=None)
    pretrain.add_argument("--seed", type=int, default=0)

    listing = sub.add_parser("backbones", help="list the timm model names that take prompts (timm's ViT modules, "
                                               "probed once per timm version)")
    listing.add_argument("patterns", nargs="*", default=["*"], help="glob patterns, e.g. 'eva02*' '*dinov2*'")
    listing.add_argument("--all", action="store_true", help="also list the refused names, each with its reason")
    listing.add_argument("--refresh", action="store_true", help="probe again instead of reading the listing")
    listing.add_argument("--write", default=None, metavar="FILE",
                         help="probe every name and re-check the families' examples with random weights, and write "
                              "the result file (docs/results/backbones.json)")

    lessons = sub.add_parser("lesson-results", help="train what the lessons show on the offline starter (every method, "
                                                    "3 seeds, pruning, few-shot) and export it; resumable")
    lessons.add_argument("--out", required=True,
                         help="export folder (the package's copy: e2vpt_viz/lesson_results/starter)")
    lessons.add_argument("--work", default="results/lesson_results_work", help="resumable run folders")
    lessons.add_argument("--stages", nargs="+", default=None,
                         help="methods-seed42 prune fewshot methods-seed1 methods-seed2 quick backbones-seed42 "
                              "backbones-seed1 backbones-seed2 costs zoo-search (default: all, in this order)")
    lessons.add_argument("--methods", nargs="+", default=None,
                         help="the methods a methods-seedN stage trains (default: every lesson method; also the zoo's, "
                              "e.g. dora ssf) or zoo-search searches (default: every zoo method); lets two processes "
                              "split one stage")
    lessons.add_argument("--quiet", action="store_true")

    costs = sub.add_parser("costs", help="each method's training images/s, peak training memory and inference cost, "
                                          "measured in one run through the training loop")
    _add_config(costs, default="starter")
    costs.add_argument("--methods", nargs="+", default=None, help="methods to measure (default: every method)")
    costs.add_argument("--out", required=True, help="the JSON file to write (never replaced)")
    costs.add_argument("--batches", type=int, default=3, help="training batches per turn (of train.batch_size)")
    costs.add_argument("--rounds", type=int, default=3, help="timed turns per method, after one warm-up (median kept)")
    costs.add_argument("--quiet", action="store_true")

    docs = sub.add_parser("docs", help="regenerate docs/*.md and the README's marked blocks from docs/results/*.json")
    docs.add_argument("--check", action="store_true", help="write nothing; exit 1 naming the pages that are not current")

    record = sub.add_parser("record", help="rewrite a docs/results/*.json from what a command wrote (a re-measurement)")
    record.add_argument("kind", choices=("seeds", "prune", "pvp", "variants", "starter"),
                        help="seeds: report --out folders, one per seed; prune: a prune output_dir; pvp: a "
                             "pvp-fewshot or lesson-results --out folder; variants: report --out or run folders of "
                             "one method with two values of the setting the result file names; starter: the "
                             "weights files pretrain-starter wrote")
    record.add_argument("result_file", help="e.g. docs/results/calibration.json")
    record.add_argument("sources", nargs="+", help="the folder(s) the command wrote")
    return parser


def run_command(args: argparse.Namespace) -> int:
    from .run import compare_methods, evaluate_run, grid_search, load_run_config, train_run

    if args.command == "train":
        result = train_run(load_run_config(args.config, args.overrides), progress=not args.quiet)
        if not dist.is_main():
            return 0
        print(f"{result['method']}: test accuracy {100 * result['test_acc']:.2f}% "
              f"({result['parameters']['tunable']:,} tunable parameters, {result['train_seconds']:.0f} s); "
              f"saved to {result['config'].get('output_dir')}")
    elif args.command == "eval":
        result = evaluate_run(load_run_config(args.config, args.overrides), args.checkpoint, args.split)
        print(json.dumps({"split": args.split, "acc": result["acc"], "loss": result["loss"],
                          "count": result["count"], "skipped": result["skipped"]}))
        if result["skipped"]:
            print(f"note: {result['skipped']} unreadable image(s) of the {args.split} split were left out; the "
                  f"accuracy is over the {result['count']} that were read", file=sys.stderr)
    elif args.command == "report":
        from .report import results_markdown, write_report

        cfg = load_run_config(args.config, args.overrides)
        results = compare_methods(cfg, args.methods, args.out, progress=not args.quiet)
        paths = write_report(results, args.out, title=f"e2vpt-viz report: {args.config}")
        print(results_markdown(results))
        print(f"report written to {paths['markdown']} and {paths['html']}")
    elif args.command == "sweep":
        search = grid_search(load_run_config(args.config, args.overrides), args.lrs, args.wds, args.out)
        for run in search["runs"]:
            print(f"lr {run['base_lr']:<8g} wd {run['weight_decay']:<8g} val {100 * run['val_acc']:.1f}%  "
                  f"test {100 * run['test_acc']:.1f}%")
        best = search["best"]
        print(f"best: base_lr={best['base_lr']} weight_decay={best['weight_decay']} (val {100 * best['val_acc']:.1f}%)")
    elif args.command == "prune":
        from .run import prune_run

        result = prune_run(load_run_config(args.config, args.overrides), progress=not args.quiet)
        budgets, rewound = result["best_budgets"], result["rewound"]
        print(f"before pruning: test {100 * result['before']['test_acc']:.2f}% with "
              f"{result['before']['parameters']['tunable']:,} tunable parameters")
        print(f"chosen on val: prune {budgets['num_tokens']} tokens and {budgets['num_segments']} segments per token; "
              f"instant test {100 * result['instant_test_acc']:.2f}%, rewound test {100 * rewound['test_acc']:.2f}% "
              f"with {rewound['parameters']['tunable']:,} tunable parameters")
        print(f"written to {result['config'].get('output_dir')}/prune.json and sweep.json")
    elif args.command == "reproduce" and args.dataset == "vtab":
        if args.plan:
            raise ValueError("--plan shows one dataset's plan: pass --dataset vtab-<task> (e.g. vtab-dtd).")
        from .vtab import reproduce_vtab, summary_markdown

        result = reproduce_vtab(args.method, args.tasks, args.vtab_root, args.out, args.overrides, config=args.config,
                                tiny=args.tiny, lrs=args.lrs, wds=args.wds, seeds=args.seeds,
                                prompt_lengths=args.prompt_lengths, progress=not args.quiet, backbone=args.backbone)
        print(summary_markdown(result))
        out = args.out or "results/reproduce/vtab-1k"
        print(f"written to {out}/{args.method}-summary.md and .json (per task: {out}/<task>/{args.method}/)")
    elif args.command == "reproduce" and args.tasks:
        raise ValueError(f"--tasks applies to --dataset vtab, not {args.dataset}.")
    elif args.command == "reproduce" and args.plan:
        from .reproduce import reproduction_plan

        _, plan = reproduction_plan(args.dataset, args.method, args.config, args.overrides, args.tiny, args.lrs,
                                    args.wds, args.seeds, args.prompt_lengths, args.backbone)
        print(json.dumps(plan, indent=1))
    elif args.command == "reproduce":
        from .reproduce import markdown, reproduce

        results = reproduce(args.dataset, args.method, args.out, args.config, args.overrides, args.tiny, args.lrs,
                            args.wds, args.seeds, args.prompt_lengths, progress=not args.quiet,
                            backbone=args.backbone)
        print(markdown(results))
        out = args.out or f"results/reproduce/{args.dataset}/{args.method}"
        print(f"written to {out}/results.md and results.json")
    elif args.command == "pvp-pretrain":
        from .fewshot import pretrain_prompts

        path = pretrain_prompts(load_run_config(args.config, args.overrides), args.source, args.out, args.epochs,
                                progress=not args.quiet)
        print(f"pre-trained prompt modules written to {path}")
    elif args.command == "pvp-fewshot":
        from pathlib import Path

        from ..checkpoint import write_json, write_text
        from .fewshot import few_shot_comparison, few_shot_markdown

        rows = few_shot_comparison(load_run_config(args.config, args.overrides), args.prompts, args.shots,
                                   args.seeds, args.epochs)
        out = Path(args.out)
        write_json(out / "pvp_fewshot.json", rows)
        write_text(out / "pvp_fewshot.md", few_shot_markdown(rows) + "\n")
        print(few_shot_markdown(rows))
    elif args.command == "lesson-results":
        from .lesson_results import LESSON_METHODS, STAGES, make_lesson_results

        make_lesson_results(args.out, args.work, stages=args.stages or STAGES,
                            methods=args.methods or LESSON_METHODS, progress=not args.quiet)
    elif args.command == "costs":
        from ..methods import METHODS
        from .costs import costs_markdown, write_method_costs

        path = write_method_costs(load_run_config(args.config, args.overrides), args.methods or list(METHODS),
                                  args.out, num_batches=args.batches, rounds=args.rounds, progress=not args.quiet,
                                  command=" ".join(["python -m e2vpt_viz", *sys.argv[1:]]))
        print(costs_markdown(json.loads(path.read_text())))
        print(f"written to {path}")
    elif args.command == "docs":
        from .docs import stale, write_docs

        if args.check:
            pages = stale()
            for path in pages:
                print(f"not current: {path} (run `python -m e2vpt_viz docs`)")
            return 1 if pages else 0
        for path in write_docs():
            print(f"regenerated {path}")
    elif args.command == "record":
        from .docs import record

        print(f"recorded {record(args.kind, args.result_file, args.sources)}; now run `python -m e2vpt_viz docs`")
    elif args.command == "backbones":
        from .backbone_support import print_listing, write_record

        if args.write:
            record = write_record(args.write)
            works = sum(e["supported"] for e in record["models"].values())
            print(f"{args.write}: {works} of {len(record['models'])} timm {record['timm']} names take prompts")
        else:
            print_listing(args.patterns, args.all, args.refresh)
    elif args.command == "pretrain-starter":
        from .starter import pretrain_starter

        path = pretrain_starter(args.data, out=args.out, epochs=args.epochs, seed=args.seed, name=args.name,
                                overwrite=args.overwrite)
        print(f"starter weights written to {path}; train on them with backbone.checkpoint={path}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    started_group = False
    try:
        if dist.launched_by_torchrun() and not dist.is_distributed():
            if args.command not in DISTRIBUTED_COMMANDS:
                raise ValueError(f"under torchrun only {', '.join(DISTRIBUTED_COMMANDS)} runs on several processes; "
                                 f"run `python -m e2vpt_viz {args.command} ...` without torchrun.")
            from .run import load_run_config

            dist.init_from_env(load_run_config(args.config, args.overrides).train.device)
            started_group = True
        return run_command(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume from the last finished epoch", file=sys.stderr)
        return 130
    finally:
        if started_group:
            dist.shutdown()
