"""VTAB-1k end to end: ``python -m e2vpt_viz reproduce --dataset vtab --method e2vpt [--tasks ...]``.

Runs :func:`~e2vpt_viz.experiments.reproduce.reproduce` (the papers' VTAB protocol: grid on train800 / val200 with
last-epoch selection, E²VPT's pruning and rewinding, five final runs on train800val200) on every task asked for, then
writes one summary, ``<out>/<method>-summary.json`` and ``.md``: per-task test top-1 (mean ± std over the final
seeds) beside VPT's per-task numbers, the three group means, the mean of the group means (the convention of the VPT
and E²VPT tables) and the flat mean over the 19 tasks (SSF's and V-PETL's), each labelled, beside the papers' group
means. A group with a task missing is shown as partial and left out of both overall means
(:func:`data_prep.vtab.summary`). The offline task ``starter_distance`` is reported on its own line.

Every task root is checked before any training starts, so a missing one is one line, not an hour later.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from data_prep.vtab import GROUPS, OFFLINE_TASKS, resolve_task, resolve_tasks, summary

from ..checkpoint import write_json, write_text
from ..tables import markdown_table
from .reproduce import (VTAB_PAPER_GROUPS, VTAB_PAPER_SOURCE, VTAB_PREFIX, VTAB_ROOT,
                        ensure_vtab_task, reproduce)


def vtab_tasks(tasks: Optional[Sequence[str]]) -> list[str]:
    """Canonical task names (all 19 for None; community folder names and ``starter_distance`` accepted)."""
    return [task.name for task in resolve_tasks(tasks)]


def reproduce_vtab(method: str, tasks: Optional[Sequence[str]] = None, root: Union[str, Path] = VTAB_ROOT,
                   out: Union[str, Path, None] = None, overrides: Sequence[str] = (), **options) -> dict:
    """The VTAB protocol for ``method`` on ``tasks`` (default all 19) prepared under ``root/<task>``; returns the
    summary (also written to ``out/<method>-summary.json`` and ``.md``; default ``out``
    ``results/reproduce/vtab-1k``). ``options`` are :func:`~e2vpt_viz.experiments.reproduce.reproduce`'s
    (``tiny``, ``lrs``, ``wds``, ``seeds``, ``prompt_lengths``, ``backbone``, ``config``, ``progress``)."""
    names = vtab_tasks(tasks)
    root, out = Path(root), Path(out or "results/reproduce/vtab-1k")
    for name in names:  # every root before the first hour of training
        ensure_vtab_task(name, root / name)
    results = {name: reproduce(f"{VTAB_PREFIX}{name}", method, out / name / method,
                               overrides=[*overrides, f"data.root={root / name}"], **options) for name in names}
    result = summary_document(method, results)
    write_json(out / f"{method}-summary.json", result)
    write_text(out / f"{method}-summary.md", summary_markdown(result))
    return result


def summary_document(method: str, results: dict[str, dict]) -> dict:
    """The summary of per-task :func:`reproduce` results (``{task: results.json}``) for one method, in %."""
    accuracies = {name: r["test_acc_mean"] for name, r in results.items()}
    paper = VTAB_PAPER_GROUPS.get(method)
    return {"method": method, "unit": "test top-1 (%)",
            "tasks": {name: {"test_acc_mean": r["test_acc_mean"], "test_acc_std": r["test_acc_std"],
                             "seeds": len(r["final"]), "paper": r["paper"], "tiny": r["protocol"]["tiny"],
                             "dataset": r["protocol"]["dataset"]} for name, r in results.items()},
            "summary": summary(accuracies), "paper_tasks_source": VTAB_PAPER_SOURCE,
            "paper_groups": None if paper is None else dict(paper)}


def _value(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.2f}"


def summary_markdown(result: dict) -> str:
    """The summary as Markdown: the per-task table, then every mean with its label and the papers' numbers."""
    found, tasks, paper = result["summary"], result["tasks"], result["paper_groups"]
    rows = []
    for name, task in tasks.items():
        group = "offline" if name in OFFLINE_TASKS else resolve_task(name).group
        rows.append((name, group, f"{task['test_acc_mean']:.1f} ± {task['test_acc_std']:.1f}", task["seeds"],
                     "—" if task["paper"] is None else f"{task['paper']:.1f}"))
    lines = [f"# VTAB-1k: {result['method']}", "",
             markdown_table(("task", "group", "test top-1 (%), mean ± std over seeds", "seeds",
                             f"paper (%), {result['paper_tasks_source']}"), rows), ""]
    paper_groups = dict(zip(GROUPS, paper["groups"])) if paper and paper.get("groups") else {}
    for group in GROUPS:
        g = found[group]
        here = (_value(g["value"]) if g["complete"] else
                f"— ({g['tasks']} of {g['tasks'] + len(g['missing'])} tasks run; their mean "
                f"{_value(g['partial_value'])}, not comparable with the papers')")
        lines.append(f"- {g['label']}: {here}; paper {_value(paper_groups.get(group))}")
    paper_mean = (sum(paper_groups.values()) / 3 if paper_groups else (paper or {}).get("mean"))
    lines.append(f"- {found['mean_of_groups']['label']}: {_value(found['mean_of_groups']['value'])}; paper "
                 f"{_value(paper_mean)}")
    lines.append(f"- {found['flat_mean']['label']}: {_value(found['flat_mean']['value'])}")
    if found.get("offline"):
        lines.append("- offline task, in none of the means: " + ", ".join(
            f"{name} {value:.1f}" for name, value in found["offline"].items()))
    if paper:
        lines.append(f"\nPaper numbers: {paper['source']}.")
    if any(task["tiny"] for task in tasks.values()):
        lines.append("\nTiny runs (`--tiny`: 2 epochs, a 2 × 1 grid): a check of the code path, not a result.")
    return "\n".join(lines) + "\n"


__all__ = ["reproduce_vtab", "summary_document", "summary_markdown", "vtab_tasks"]
