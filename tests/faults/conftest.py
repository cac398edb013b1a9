"""Shared pieces of the fault matrix: a tiny dataset, the CLI arguments of a tiny run, a fault-injecting subprocess
driver, and the summary table (case, outcome) printed at the end of every pytest run that includes this folder.

Each test's docstring starts with its case ("1 · kill -9 of train mid-epoch → resume"); a test records what it
observed with ``outcome("...")``; the table shows pass/fail with that observation.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from data_prep.synthetic import generate_synthetic

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("driver.py")
# 3 classes x 4 training images, batch 4: 3 optimizer steps per epoch; 3 epochs in all.
TINY = dict(num_classes=3, train_per_class=4, val_per_class=1, test_per_class=2)
STEPS_PER_EPOCH = 3
SUBPROCESS_TIMEOUT_S = 300  # the machine may be shared; importing torch alone can take a while

_RESULTS: dict[str, dict] = {}


# ----------------------------------------------------------------------------- summary table


def _case_of(item: pytest.Item) -> str:
    """"1a · what is done → what must happen" from the docstring, with the parameter after the case number."""
    doc = (getattr(item, "function", None).__doc__ or item.name).strip().splitlines()[0].strip()
    param = getattr(item, "callspec", None)
    if param is None:
        return doc
    number, _, text = doc.partition(" · ")
    return f"{number} [{param.id}] · {text}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        entry = _RESULTS.setdefault(item.nodeid, {"case": _case_of(item)})
        entry["status"] = "skipped" if report.skipped else report.outcome
        observed = [value for key, value in item.user_properties if key == "fault_outcome"]
        if report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            observed.append((crash.message if crash else str(report.longrepr)).splitlines()[0][:160])
        elif report.skipped and isinstance(report.longrepr, tuple):
            observed.append(report.longrepr[2])
        entry["observed"] = "; ".join(observed)
    return report


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _RESULTS:
        return

    def order(row: dict) -> tuple:
        number = re.match(r"\d*", row["case"]).group()
        return int(number or 10 ** 6), row["case"]

    terminalreporter.write_sep("=", "fault-injection matrix (tests/faults): case, outcome")
    for row in sorted(_RESULTS.values(), key=order):
        number, _, text = row["case"].partition(" · ")
        terminalreporter.write_line(f"{number:<10} {row['status'].upper():<7} {text}")
        if row.get("observed"):
            terminalreporter.write_line(f"{'':18} ↳ {row['observed']}")


@pytest.fixture
def outcome(request):
    """``outcome("what was observed")``: shown in the summary table beside the test's case."""
    def record(text: str) -> None:
        request.node.user_properties.append(("fault_outcome", text))
    return record


# ----------------------------------------------------------------------------- data and runs


@pytest.fixture(autouse=True)
def single_thread(one_thread):
    """Every fault case runs on one thread (see tests/conftest.py): the driver's subprocesses do too."""


@pytest.fixture(scope="session")
def fault_root(tmp_path_factory) -> Path:
    """A smaller root than the suite's ``tiny_root``: 3 steps of batch 4 per epoch (``STEPS_PER_EPOCH``)."""
    return generate_synthetic(tmp_path_factory.mktemp("faults-data") / "tiny", task="target", seed=1, **TINY)


TRAIN = ["train", "--config", "starter", "--quiet"]


def run_args(root: Path, out: Path, *extra: str, epochs: int = 3) -> list[str]:
    """``section.field=value`` overrides of a tiny starter run (starter ViT, E²VPT, batch 4, 3 epochs)."""
    return [f"data.root={root}", f"train.epochs={epochs}", "train.warmup_epochs=1", "train.batch_size=4",
            f"output_dir={out}", *extra]


@pytest.fixture(scope="session")
def reference(fault_root, tmp_path_factory) -> Path:
    """The output folder of the uninterrupted tiny run (trained in this process, one thread, like the driver)."""
    from e2vpt_viz.experiments.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("reference") / "run"
        assert main([*TRAIN, *run_args(fault_root, out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {key: f.get_tensor(key) for key in f.keys()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((x.double() - b[k].double()).abs().max().item() for k, x in a.items())


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def same_numbers(a, b, tol: float = 1e-6) -> bool:
    """Nested JSON-like structures equal, floats within ``tol`` (timings and paths are the caller's to drop)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_numbers(a[k], b[k], tol) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_numbers(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= tol
    return a == b


def read_json(path: Path):
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------- the fault-injecting driver


class Driven:
    """A ``python -m e2vpt_viz`` command running in a subprocess under :mod:`driver` with one fault armed."""

    def __init__(self, fault: str, argv: list[str], workdir: Path) -> None:
        self.marker = workdir / f"fault-{fault.replace(':', '-')}.marker"
        self.log = workdir / f"fault-{fault.replace(':', '-')}.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        with open(self.log, "w") as log:
            self.process = subprocess.Popen([sys.executable, str(DRIVER), fault, str(self.marker), "--", *argv],
                                            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_for_fault(self) -> None:
        """Block until the armed fault fired (the marker file exists); fail if the command ended first."""
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
        while not self.marker.exists():
            if self.process.poll() is not None:
                raise AssertionError(f"the command ended (status {self.process.returncode}) before the fault fired:\n"
                                     + self.log.read_text()[-3000:])
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("the fault did not fire in time:\n" + self.log.read_text()[-3000:])
            time.sleep(0.02)

    def kill(self) -> int:
        """``kill -9``, as a closed laptop lid or a crashed kernel would; returns the exit status."""
        os.kill(self.process.pid, signal.SIGKILL)
        return self.process.wait(timeout=60)

    def finish(self) -> tuple[int, str]:
        """Wait for the command to end by itself; (exit status, its output)."""
        try:
            code = self.process.wait(timeout=SUBPROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return code, self.log.read_text()


@pytest.fixture
def driven(tmp_path):
    """``driven(fault, argv)`` starts a command with a fault armed (see driver.py); killed at teardown if alive."""
    started: list[Driven] = []

    def start(fault: str, argv: list[str]) -> Driven:
        started.append(Driven(fault, argv, tmp_path))
        return started[-1]

    yield start
    for run in started:
        if run.process.poll() is None:
            run.kill()
