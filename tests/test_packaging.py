"""The set-up promises: one dependency list in pyproject.toml and environment.yml, README commands used by CI."""
import re
import statistics
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The README's ```bash blocks, in order: the main job first, then the tests."""
    return [c.strip() for c in re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.S)]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | {d for extra in project["optional-dependencies"].values() for d in extra}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip_section) - {"-e ."} == wanted


def test_torch_is_never_pinned_to_the_broken_local_wheel():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = next(d for d in deps if d.startswith("torch") and not d.startswith("torchvision"))
    assert "==" not in torch and "!=2.13.0" in torch


def test_readme_leads_with_the_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    main_job, tests = readme_commands()[:2]
    assert "e2vpt_viz report" in main_job and "pip install" in main_job
    assert tests.endswith("python -m pytest -q") and "pip install" in tests
    assert readme.index(main_job) < readme.index("## Use it")
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_notebooks_are_stripped_and_parameterised():
    import nbformat

    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    lessons = {"01_train_cub", "02_kv_prompt_attention", "03_pruning_tradeoffs", "04_method_zoo", "05_pvp_few_shot",
               "06_backbones"}
    assert lessons <= {p.stem for p in notebooks}, f"missing lessons: {lessons - {p.stem for p in notebooks}}"
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert not any(c.get("outputs") or c.get("execution_count") for c in code), f"{path.name} has outputs"
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
        setup = code[code.index(tagged[0]) + 1].source  # first thing it does: the kernel set-up for this file
        assert setup.startswith(f'from e2vpt_viz.notebook import lesson_setup\nthreads = lesson_setup("{path.name}")'), \
            f"{path.name}: the set-up cell must start with lesson_setup({path.name!r})"
        assert 'TRAIN = "auto"' in tagged[0].source, f"{path.name}: TRAIN = \"auto\" is the lessons' default mode"
        exercises = [c for c in code if re.search(r"^answer = None", c.source, flags=re.M)]
        assert len(exercises) == 1 and "check_answer(answer, " in exercises[0].source, \
            f"{path.name} needs one self-checking exercise (check_answer: a hint, not a traceback)"


def test_readme_main_job_text_matches_its_command():
    """The README's sentence on command 1 is generated from docs/results/main_job.json, whose schedule and seed are
    those of the command the README shows (no prose is parsed)."""
    from e2vpt_viz.experiments.cli import build_parser
    from e2vpt_viz.experiments.docs import load_results, main_job_text
    from e2vpt_viz.experiments.run import load_run_config

    results = load_results(ROOT)
    main_job = readme_commands()[0]
    args = build_parser().parse_args(main_job.split("-m e2vpt_viz ", 1)[1].split())
    cfg = load_run_config(args.config, args.overrides)
    job = results["main_job"]
    assert (args.command, args.methods, cfg.method_name) == ("report", ["e2vpt"], "e2vpt")
    assert (cfg.train.epochs, cfg.train.warmup_epochs, cfg.train.seed) == (
        job["schedule"]["epochs"], job["schedule"]["warmup_epochs"], job["seeds"][0])
    e2vpt = job["methods"][0]
    assert abs(e2vpt["test_acc_mean"] - statistics.fmean(e2vpt["test_acc"])) <= 0.05
    assert abs(e2vpt["test_acc_sd"] - statistics.stdev(e2vpt["test_acc"])) <= 0.05
    readme = (ROOT / "README.md").read_text()
    assert main_job_text(results) in readme and readme.index(main_job_text(results)) < readme.index(main_job)
