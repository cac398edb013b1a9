"""The layout the README's "Layout" section describes, checked on the import graph: the core never imports the
experiment platform, data_prep never imports e2vpt_viz, and nothing in the repository points outside it."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = sorted(p for p in (ROOT / "e2vpt_viz").glob("*.py") if p.name != "__main__.py")  # __main__: the CLI entry


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved against ``package``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
                names |= {f"{base}.{alias.name}" for alias in node.names}  # `from . import x` may import a module
            names.add(base)
    return names


def test_the_core_never_imports_the_experiment_platform():
    assert len(CORE) >= 10
    for path in CORE:
        platform = sorted(n for n in imported_modules(path, "e2vpt_viz") if n.startswith("e2vpt_viz.experiments"))
        assert not platform, f"{path.name} imports {platform}"


def test_data_prep_never_imports_e2vpt_viz():
    for path in sorted((ROOT / "data_prep").glob("*.py")):
        found = sorted(n for n in imported_modules(path, "data_prep") if n.split(".")[0] == "e2vpt_viz")
        assert not found, f"{path.name} imports {found}"


def test_importing_each_side_loads_only_what_it_may():
    """At run time too (function-level imports included): importing every data_prep module loads no e2vpt_viz
    module, and importing every core module loads no platform module."""
    data_prep = " ".join(f"data_prep.{p.stem}" for p in sorted((ROOT / "data_prep").glob("*.py"))
                         if p.stem != "__main__")
    core = " ".join(f"e2vpt_viz.{p.stem}" for p in CORE if p.stem != "__init__")
    code = (f"import importlib, sys\n"
            f"[importlib.import_module(m) for m in {data_prep.split()!r}]\n"
            f"print(sorted(m for m in sys.modules if m.startswith('e2vpt_viz')))\n"
            f"[importlib.import_module(m) for m in {core.split()!r}]\n"
            f"print(sorted(m for m in sys.modules if m.startswith('e2vpt_viz.experiments')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.splitlines() == ["[]", "[]"], out


def test_nothing_in_the_repository_points_outside_it():
    outside = ["/" + "work/", "shared/" + "reference", "methods.md " + "§", "../" + "shared"]
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT, check=True).stdout.split()
    for name in tracked:
        path = ROOT / name
        if path.suffix in {".safetensors", ".png", ".jpg", ".pt"} or not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        hits = [marker for marker in outside if marker in text]
        assert not hits, f"{name} refers to {hits}"
