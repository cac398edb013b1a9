"""Run ``python -m e2vpt_viz ARGS`` in this process with one fault armed (test code; the library has no hooks).

    python driver.py FAULT MARKER -- ARGS...

FAULT is one of
    hang-at-step:N      after the N-th optimizer step (counted over every training run of the command) touch MARKER
                        and stop there, mid-epoch, until killed;
    hang-in-save:N      in the N-th training-state save, write half of the temporary file, touch MARKER and stop
                        there until killed (a kill while the checkpoint is being written);
    fsize-after-save:N  after the N-th training-state save, cap file sizes at 4 KiB (RLIMIT_FSIZE, SIGXFSZ
                        ignored, so a write fails with EFBIG as on a full disk) and touch MARKER.
One CPU thread, so that the arithmetic matches the in-process runs of the tests bit for bit.
"""
import os
import resource
import signal
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from e2vpt_viz import training  # noqa: E402
from e2vpt_viz.experiments.cli import main  # noqa: E402


def stop_here(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    while True:
        time.sleep(60)


def hang_at_step(n: int, marker: str) -> None:
    steps = 0
    make_optimizer = training.make_optimizer

    def counting_optimizer(model, config):
        optimizer = make_optimizer(model, config)
        step = optimizer.step

        def counted_step(*args, **kwargs):
            nonlocal steps
            result = step(*args, **kwargs)
            steps += 1
            if steps == n:
                stop_here(marker)
            return result

        optimizer.step = counted_step
        return optimizer

    training.make_optimizer = counting_optimizer


def hang_in_save(n: int, marker: str) -> None:
    saves = 0
    save_state, torch_save = training._save_state, torch.save

    def half_written(obj, path):
        torch_save(obj, path)
        os.truncate(path, os.path.getsize(path) // 2)
        stop_here(marker)

    def save(path, *args):
        nonlocal saves
        saves += 1
        if saves == n:
            torch.save = half_written  # the atomic write's temporary file
        save_state(path, *args)

    training._save_state = save


def fsize_after_save(n: int, marker: str) -> None:
    saves = 0
    save_state = training._save_state

    def save(path, *args):
        nonlocal saves
        save_state(path, *args)
        saves += 1
        if saves == n:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            Path(marker).write_text(str(os.getpid()))  # small enough to pass the limit

    training._save_state = save


FAULTS = {"hang-at-step": hang_at_step, "hang-in-save": hang_in_save, "fsize-after-save": fsize_after_save}

if __name__ == "__main__":
    fault, marker, separator, *argv = sys.argv[1:]
    assert separator == "--", __doc__
    kind, count = fault.split(":")
    FAULTS[kind](int(count), marker)
    sys.exit(main(argv))
