"""The offline starter is a faithful miniature of the papers: the README's calibration claim, re-measured on every CI run.

The README's table gives each method's test accuracy over three training seeds (42, the config's default, then 1 and
2): single runs of the prompt methods differ by up to 6 points between seeds, so the claim (the linear probe at least
5 points below VPT-deep and E²VPT, VPT-shallow in between) is made on the means. CI re-trains the seed-42 linear-probe
and E²VPT runs (E²VPT is what the main job trains, there for 60 epochs) with the packaged ``starter`` config (the
papers' 100-epoch schedule, the per-method settings of its ``compare`` section) on the full synthetic target task,
about 7 minutes on 2 CPU cores, and checks them against the table's seed-42 column. The other seeds and methods are
measured in the README only (about 75 more minutes). If this fails, report the new numbers in the README; do not tune the test.
"""
import re
from pathlib import Path

import pytest

from e2vpt_viz.experiments.run import compare_methods, load_run_config

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
TOLERANCE = 3.0  # points: other torch builds change the arithmetic a little, not the result


def readme_calibration_rows() -> dict[str, tuple[float, list[float], int]]:
    """{method: (mean test accuracy %, [seed 42, 1, 2 accuracies], tunable parameters)} from the table under
    "### Calibration (measured)"."""
    section = README.read_text().split("### Calibration (measured)", 1)[1].split("\n\n| run |", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| ([a-z0-9-]+)[^|]* \| ([\d.]+) ± [\d.]+ \| ([\d.]+) / ([\d.]+) / ([\d.]+) \| ([\d,]+) \|",
                         line)
        if match:
            rows[match[1]] = (float(match[2]), [float(match[i]) for i in (3, 4, 5)], int(match[6].replace(",", "")))
    return rows


def test_the_readme_table_states_the_papers_ordering_on_the_seed_means():
    rows = readme_calibration_rows()
    assert set(rows) == {"linear", "vpt-shallow", "vpt-deep", "e2vpt", "full"}
    for method, (mean, seeds, _) in rows.items():
        assert abs(mean - sum(seeds) / len(seeds)) <= 0.1, (method, mean, seeds)  # rounding to 0.1
    acc = {method: value[0] for method, value in rows.items()}
    assert acc["linear"] + 5 <= min(acc["vpt-deep"], acc["e2vpt"])
    assert acc["linear"] < acc["vpt-shallow"] < min(acc["vpt-deep"], acc["e2vpt"])


def test_the_seed_42_linear_probe_and_e2vpt_runs_are_reproduced(tmp_path):
    readme = readme_calibration_rows()
    methods = ["linear", "e2vpt"]
    cfg = load_run_config("starter", [f"data.root={tmp_path / 'starter'}"])
    assert cfg.train.seed == 42
    results = {r["method"]: r for r in compare_methods(cfg, methods, tmp_path / "runs", progress=False)}
    accuracy = {method: 100 * r["test_acc"] for method, r in results.items()}
    assert accuracy["e2vpt"] > accuracy["linear"], accuracy
    for method in methods:
        _, (readme_acc, *_), readme_params = readme[method]
        assert results[method]["parameters"]["tunable"] == readme_params
        assert abs(accuracy[method] - readme_acc) <= TOLERANCE, (method, accuracy[method], readme_acc)
        assert len(results[method]["history"]) == 100
