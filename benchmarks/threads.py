"""Torch CPU threads on a machine whose other cores are busy: why the lessons use one thread per free core.

One E²VPT training epoch on the offline starter (the lessons' model and data), timed with 1 and with all cores' worth
of threads, first on idle cores, then with one core kept busy by another process (a pure-Python loop, like a second
notebook or a browser tab). The ratios are what matter: with a busy core, N threads wait for the slowest one at every
synchronisation point, so the epoch can take several times longer than with one thread on the free core;
``e2vpt_viz.notebook.use_free_cores`` (called by every lesson's set-up) picks the count from a short sample of the cores' use.

    python benchmarks/threads.py --write benchmarks/results/threads_cpu.json
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import time

import torch

from timing import Record

from e2vpt_viz.experiments.run import build_model, load_run_config, prepare_data
from e2vpt_viz.notebook import free_cores
from e2vpt_viz.training import train_one_epoch


def _busy(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def epoch_seconds(threads: int, repeats: int) -> float:
    """Best of ``repeats`` E²VPT training epochs on the starter with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    cfg = load_run_config("starter")
    loaders = prepare_data(cfg, cfg.train.batch_size, seed=0)
    model = build_model(cfg, loaders["train"].dataset.num_classes)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        train_one_epoch(model, loaders["train"], optimizer, lambda step: 0.01, 0, torch.device("cpu"), amp=False)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write", help="also write a JSON record (e.g. benchmarks/results/threads_cpu.json)")
    args = parser.parse_args()
    record = Record(args.write)
    cores = len(os.sched_getaffinity(0))
    epoch_seconds(1, 1)  # warm-up: the starter data decoded and cached, the kernels loaded
    idle = {n: epoch_seconds(n, args.repeats) for n in (1, cores)}
    stop = multiprocessing.Event()
    busy = multiprocessing.Process(target=_busy, args=(stop,), daemon=True)
    busy.start()
    time.sleep(2)
    try:
        loaded = {n: epoch_seconds(n, args.repeats) for n in (1, cores)}
        chosen = free_cores()
    finally:
        stop.set()
        busy.join()
    record.say(f"{cores} cores; one E2VPT epoch on the starter (best of {args.repeats}), seconds:")
    record.say(f"  idle cores: 1 thread {idle[1]:.2f}, {cores} threads {idle[cores]:.2f} "
               f"({idle[1] / idle[cores]:.2f}x faster with {cores})")
    record.say(f"  one core busy: 1 thread {loaded[1]:.2f}, {cores} threads {loaded[cores]:.2f} "
               f"({loaded[cores] / loaded[1]:.2f}x slower with {cores} than with 1)")
    record.say(f"  {cores} threads, busy vs idle: {loaded[cores] / idle[cores]:.2f}x; 1 thread, busy vs idle: "
               f"{loaded[1] / idle[1]:.2f}x; free_cores() with the busy core: {chosen}")
    record.write("threads.py", None, f"{cores} CPU cores, no GPU")
    if args.write:  # the numbers as data too, for the docs (the quick schedule's minutes) and tests
        import json
        from pathlib import Path

        data = json.loads(Path(args.write).read_text())
        data["cores"], data["epoch_seconds"] = cores, {"idle": idle, "one_core_busy": loaded}
        data["free_cores_with_busy_core"] = chosen
        Path(args.write).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
