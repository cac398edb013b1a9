"""Case 12 (issue 18): every run-config field × {wrong type, out of range, misspelled key}, generated from the config
dataclasses themselves (every section, every method's options). Each bad setting must end `train` with one line
that names the field or the value, exit status 2, no traceback, and nothing written."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from e2vpt_viz.experiments.cli import main
from e2vpt_viz.experiments.config import SECTION_TYPES
from e2vpt_viz.methods import METHODS

from .conftest import TRAIN, run_args

# Values outside each field's range (a wrong type is generated from the field's annotation).
OUT_OF_RANGE = {
    "data.crop_size": "-1", "data.num_workers": "-1", "data.on_device": "sometimes", "data.device_budget_mb": "-1",
    "data.max_unreadable": "1.5", "data.root": "/nonexistent/e2vpt-data", "data.resize": "bicubic",
    "data.normalize": "clip", "data.train_split": "val",
    "backbone.name": "vit_nonexistent_model", "backbone.checkpoint": "/nonexistent/weights.pth",
    "train.epochs": "0", "train.warmup_epochs": "-1", "train.batch_size": "0", "train.base_lr": "-1",
    "train.weight_decay": "-1", "train.optimizer": "adam", "train.momentum": "1.5", "train.seed": "-1",
    "train.device": "tpu", "train.compile": "sometimes", "train.schedule": "hourly", "train.amp": "fp16",
    "prune.score": "absolute", "prune.num_tokens": "[-1]", "prune.num_segments": "[-1]", "prune.sweep_ratios": "[1.5]",
    "output_dir": str(Path(__file__)),  # an existing file, not a folder
}
NO_RANGE = {"data.synthetic", "data.cache", "train.progress", "train.grad_checkpointing",
            "backbone.pretrained"}  # booleans: only their type can be wrong


def wrong_type(annotation: str) -> str:
    """A value of the wrong type for a field annotated ``annotation``."""
    if annotation in ("int", "float", "Optional[float]", "Optional[int]") or "list" in annotation or "tuple" in annotation:
        return "abc"
    if annotation == "bool":
        return "maybe"
    return "[1, 2]"  # strings and bool-or-string fields: a list


def fields() -> list[tuple[str, str, list[str]]]:
    """(key, annotation, extra overrides) for every field of every section and of every method's options."""
    rows = [(f"{section}.{f.name}", str(f.type), []) for section, kind in SECTION_TYPES.items()
            for f in dataclasses.fields(kind)] + [("output_dir", "Optional[str]", [])]
    for method, (kind, fixed) in METHODS.items():
        rows += [(f"method.{f.name}", str(f.type), [f"method.name={method}"]) for f in dataclasses.fields(kind)
                 if f.name not in fixed]
    return rows


def cases() -> list:
    params = []
    for key, annotation, extra in fields():
        label = f"{extra[0].split('=')[1]}:{key}" if extra else key
        params.append(pytest.param(key, wrong_type(annotation), extra, id=f"{label}-type"))
        params.append(pytest.param(key + "x", "1", extra, id=f"{label}-misspelled"))
        if key in OUT_OF_RANGE:
            params.append(pytest.param(key, OUT_OF_RANGE[key], extra, id=f"{label}-range"))
        elif annotation in ("int", "float") and key.startswith("method."):
            params.append(pytest.param(key, "-1", extra, id=f"{label}-range"))
        else:
            assert key in NO_RANGE or key.startswith("method."), f"no out-of-range value for {key}"
    return params


def test_the_matrix_covers_every_field():
    """12 · the generated matrix has a wrong-type and a misspelled case for every field, and an out-of-range case for
    every field that has a range"""
    keys = {key for key, _, _ in fields()}
    ids = [p.id for p in cases()]
    assert len(ids) == len(set(ids)) and len(keys) >= 38 and len(fields()) >= 44
    assert {k for k in keys if not k.startswith("method.")} - NO_RANGE <= set(OUT_OF_RANGE)


@pytest.mark.parametrize("key, value, extra", cases())
def test_a_bad_setting_ends_in_one_line_before_anything_is_written(fault_root, tmp_path, capsys, key, value, extra,
                                                                    outcome):
    """12 · `train key=value` with a wrong type, an out-of-range value or a misspelled key → one line naming the
    field or the value, exit 2, no traceback, nothing written"""
    out = tmp_path / "run"
    argv = TRAIN + run_args(fault_root, out, *extra, "data.synthetic=false", epochs=2) + [f"{key}={value}"]
    status = main(argv)
    err = capsys.readouterr().err.strip()
    field = key.rsplit(".", 1)[-1].removesuffix("x") if key.endswith("x") and key not in dict(
        (k, 0) for k, _, _ in fields()) else key.rsplit(".", 1)[-1]
    assert status == 2, err
    assert err.startswith("error: ") and err.count("\n") == 0 and "Traceback" not in err, err
    assert field in err or value in err, err
    assert not out.exists() and not (Path.cwd() / "results" / "run").exists()
    outcome(err[:150])
