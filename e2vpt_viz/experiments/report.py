"""A short results report (Markdown + self-contained HTML with the learning curves) for a set of runs."""
from __future__ import annotations

import html
import platform
from pathlib import Path
from typing import Sequence, Union

import torch

from .. import tables
from ..checkpoint import write_text
from ..training import TrainConfig

COLUMNS = ("method", "test acc (%)", "val acc (%)", "tunable params", "tunable (%)", "epochs (warm-up)", "seed",
           "train time (s)")


def result_rows(results: Sequence[dict]) -> list[tuple]:
    """One row per run: method, test and val accuracy (%), tunable parameters, tunable % of the backbone, schedule,
    training seed, seconds."""
    rows = []
    for r in results:
        train = TrainConfig(**r["config"]["train"])
        rows.append((r["method"], f"{100 * r['test_acc']:.1f}", f"{100 * (r['val_acc'] or 0):.1f}",
                     f"{r['parameters']['tunable']:,}", f"{r['parameters']['tunable_pct']:.2f}",
                     f"{r['epochs']} ({train.warmup_epochs})", str(train.seed), f"{r['train_seconds']:.0f}"))
    return rows


def results_markdown(results: Sequence[dict]) -> str:
    """The runs as a Markdown table, one row per run (the columns of :data:`COLUMNS`)."""
    return tables.markdown_table(COLUMNS, result_rows(results))


def _environment() -> str:
    return (f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
            f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}, "
            f"Python {platform.python_version()}")


def write_report(results: Sequence[dict], out_dir: Union[str, Path], title: str) -> dict[str, Path]:
    """Write ``report.md`` and ``report.html`` (plotly curves inlined, readable offline) under ``out_dir``."""
    from ..plots import training_curves

    out = Path(out_dir)
    dataset = results[0]["config"]["data"]["root"] if results else "?"
    backbone = results[0]["backbone"] if results else "?"
    intro = (f"Dataset `{dataset}`, backbone `{backbone}`. Accuracy is top-1 on the test split after the last "
             f"epoch; tunable parameters follow the papers' convention. Environment: {_environment()}.")
    md = f"# {title}\n\n{intro}\n\n{results_markdown(results)}\n"
    write_text(out / "report.md", md)

    fig = training_curves({r["method"]: r["history"] for r in results})
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in result_rows(results))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}"
            "td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p><table><tr>{head}</tr>{body}</table>"
            f"{fig.to_html(full_html=False, include_plotlyjs=True)}</body></html>")
    write_text(out / "report.html", page)
    return {"markdown": out / "report.md", "html": out / "report.html"}
