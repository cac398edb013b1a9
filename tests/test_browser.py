"""The notebooks in a real browser: JupyterLab + headless Chromium (playwright) run every cell, then drag the widgets.

What this catches that tests/test_notebooks.py (kernels alone) cannot: widgets that do not render (front-end
extension missing, ipywidgets and jupyterlab_widgets out of step, plotly's anywidget FigureWidget failing to load)
and slider / dropdown wiring that never reaches the plot. One JupyterLab server serves every notebook of this
module; it runs on a temporary copy of ``notebooks/`` (autosave never touches the repository) next to a ``data``
link to the repository's ``data/``. The kernels run the lessons' **default** parameters, as a student opening them
does (offline on a CPU: the shipped runs, evaluated now).

Needs ``/usr/bin/chromium`` (Debian's ``chromium`` package) and the ``playwright`` Python package; the browser
playwright downloads itself is never used. Without them the tests skip, unless ``E2VPT_REQUIRE_BROWSER`` is set (CI
sets it), then they fail. Screenshots (``<notebook>-<what>.png`` and ``-final.png``), the browser console
and the server log go to ``results/browser/`` or ``$E2VPT_BROWSER_ARTIFACTS``. ``E2VPT_BROWSER_RUN_TIMEOUT`` (seconds,
default 600) bounds "Run All Cells" per notebook.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# Seconds for "Run All Cells" (a lesson in its default mode takes about a minute on 2 free cores).
RUN_ALL_TIMEOUT = float(os.environ.get("E2VPT_BROWSER_RUN_TIMEOUT", 600))
SERVER_START_TIMEOUT = 120   # seconds for JupyterLab to answer /api/status
WIDGET_TIMEOUT = 30          # seconds for a widget change to reach the label / the plot
ERROR_TEXTS = ("Error displaying widget", "Model not found", "Failed to load view class")
LOADING_TEXT = "Loading widget..."

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(RUN_ALL_TIMEOUT) + 600)]


def _browser_missing() -> list[str]:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (pip install playwright; never `playwright install`)")
    return missing


def _required() -> bool:
    return os.environ.get("E2VPT_REQUIRE_BROWSER", "").strip() not in ("", "0")


@pytest.fixture(scope="module", autouse=True)
def _browser_available():
    missing = _browser_missing()
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if _required():
            pytest.fail(reason + " (E2VPT_REQUIRE_BROWSER is set)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("E2VPT_BROWSER_ARTIFACTS") or ROOT / "results" / "browser")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---------------------------------------------------------------------------------------------- JupyterLab server


class Lab:
    def __init__(self, url: str, token: str, notebooks: Path, process: subprocess.Popen, log: Path) -> None:
        self.url, self.token, self.notebooks, self.process, self.log = url, token, notebooks, process, log

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.url}{path}?token={self.token}", method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def session(self, notebook: str) -> dict | None:
        return next((s for s in self.api("/api/sessions") if s.get("path", "").endswith(notebook)), None)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_settings(settings: Path) -> None:
    """Lab settings for a quiet, deterministic page: no news prompt, every cell attached to the DOM."""
    for plugin, values in {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def _kill_leftover_kernels(runtime: Path) -> None:
    """Kernels run in their own process group; kill any whose connection file lies in this server's runtime dir."""
    proc = Path("/proc")
    if not proc.is_dir():
        return
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(runtime) in cmdline and "ipykernel" in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)


def _die_with_parent() -> None:
    """In the server's child process (Linux): SIGTERM when pytest dies, even killed, so no server outlives the run
    (it runs in its own session, out of reach of a terminal's signals)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop(process: subprocess.Popen, timeout: float = 30) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, artifacts, _browser_available):
    base = tmp_path_factory.mktemp("lab")
    notebooks = base / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    (ROOT / "data").mkdir(exist_ok=True)
    (base / "data").symlink_to(ROOT / "data", target_is_directory=True)  # the notebooks' DATA_DIR = "../data"
    _write_settings(base / "lab-settings")
    runtime = base / "runtime"
    config = base / "config"
    config.mkdir()
    env = {**{k: v for k, v in os.environ.items() if k != "E2VPT_NOTEBOOK_SMOKE"}, "PYTHONUNBUFFERED": "1",
           "JUPYTERLAB_SETTINGS_DIR": str(base / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(base / "lab-workspaces"),
           "JUPYTER_RUNTIME_DIR": str(runtime), "JUPYTER_CONFIG_DIR": str(config)}
    port, token = _free_port(), secrets.token_hex(16)
    log = artifacts / "jupyterlab.log"
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={notebooks}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, cwd=notebooks, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    server = Lab(f"http://127.0.0.1:{port}", token, notebooks, process, log)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with {process.returncode}:\n{server.log_tail()}", pytrace=False)
            try:
                server.api("/api/status")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer within {SERVER_START_TIMEOUT} s:\n{server.log_tail()}",
                                pytrace=False)
                time.sleep(0.5)
        yield server
    finally:
        _stop(process)
        _kill_leftover_kernels(runtime)


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield chromium
        finally:
            chromium.close()


# ------------------------------------------------------------------------------------------------ page helpers

# Tags the widget (ipywidgets 8 view) whose description is `description`, the first plotly plot after it in the
# same notebook cell and the first HTML widget next to it, with data-e2vpt-<tag>[-plot|-label] attributes; returns
# what it found.
TAG_WIDGET_JS = """([description, tag]) => {
  const labels = [...document.querySelectorAll('.jupyter-widgets .widget-label')]
    .filter(l => l.textContent.trim() === description);
  if (labels.length !== 1) return {error: `${labels.length} widgets with description "${description}"`};
  const widget = labels[0].closest('.jupyter-widgets:not(.widget-label)');
  widget.setAttribute('data-e2vpt-' + tag, '');
  const cell = widget.closest('.jp-Cell');
  const after = el => widget.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_FOLLOWING;
  const plot = [...cell.querySelectorAll('.js-plotly-plot')].find(after);
  if (plot) plot.setAttribute('data-e2vpt-' + tag + '-plot', '');
  let html = null;
  for (let box = widget.parentElement; box && box !== cell && !html; box = box.parentElement)
    html = box.querySelector('.widget-html');
  if (html) html.setAttribute('data-e2vpt-' + tag + '-label', '');
  return {kind: widget.className, select: !!widget.querySelector('select'),
          slider: !!widget.querySelector('.noUi-handle'), plot: !!plot, label: !!html};
}"""

# The decoded trace data plotly.js holds for a plot (typed arrays and base64 blocks become nested lists).
TRACES_JS = """(plot) => {
  const plain = v => (v == null) ? null : (ArrayBuffer.isView(v) || Array.isArray(v)) ? Array.from(v, plain) : v;
  return (plot._fullData || plot.data || []).map(t => ({type: t.type, name: t.name ?? null, x: plain(t.x),
                                                        y: plain(t.y), z: plain(t.z),
                                                        color: (t.line && t.line.color) || null,
                                                        legend: t.showlegend !== false}));
}"""

CELL_STATE_JS = """() => {
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
    .map(p => p.textContent.trim());
  // JupyterLab renders an error output as stderr text: the traceback
  const errors = [...document.querySelectorAll('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')]
    .map(e => e.innerText).filter(t => t.includes('Traceback')).map(t => t.slice(-3000));
  return {prompts, errors, status: [...document.querySelectorAll('.jp-StatusBar-TextItem')].map(e => e.textContent)};
}"""


class Notebook:
    """One notebook open in its own JupyterLab workspace and browser context."""

    def __init__(self, lab: Lab, browser, artifacts: Path, name: str) -> None:
        self.lab, self.name, self.stem = lab, name, Path(name).stem
        self.artifacts = artifacts
        for old in [*artifacts.glob(f"{self.stem}-*.png"), artifacts / f"{self.stem}-console.log"]:
            old.unlink(missing_ok=True)  # no stale screenshot from an earlier run survives next to this run's
        self.context = browser.new_context(viewport={"width": 1600, "height": 1200})
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"[{m.type}] {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"[pageerror] {e}"))

    def open(self) -> "Notebook":
        # A fresh workspace per notebook, so that no notebook opened earlier reopens (and starts a kernel) here.
        workspace = "e2vpt-" + re.sub(r"[^A-Za-z0-9]+", "-", self.stem) + "-" + secrets.token_hex(4)
        self.page.goto(f"{self.lab.url}/lab/workspaces/{workspace}/tree/{self.name}?token={self.lab.token}")
        self.page.wait_for_selector(".jp-Notebook .jp-Cell")
        return self

    def screenshot(self, suffix: str, top=None) -> Path:
        """A full-page screenshot, with the notebook scrolled so that the element ``top`` starts the view."""
        if top is not None:
            top.evaluate("element => element.scrollIntoView({block: 'start'})")
            self.page.wait_for_timeout(300)
        path = self.artifacts / f"{self.stem}-{suffix}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def cell(self, source_start: str):
        """The code cell whose source starts with ``source_start`` (a locator)."""
        cells = self.page.locator(".jp-CodeCell")
        for index in range(cells.count()):
            text = cells.nth(index).locator(".jp-InputArea .cm-content").inner_text()
            if text.lstrip().startswith(source_start):
                return cells.nth(index)
        raise AssertionError(f"{self.name}: no code cell starts with {source_start!r}")

    def kernel_state(self) -> str | None:
        session = self.lab.session(self.name)
        return session["kernel"]["execution_state"] if session and session.get("kernel") else None

    def wait_for_kernel(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not (self.kernel_state() == "idle" and any(t.endswith("| Idle") for t in self.state()["status"])):
            assert time.monotonic() < deadline, f"{self.name}: no idle kernel after {timeout} s"
            time.sleep(0.5)

    def state(self) -> dict:
        return self.page.evaluate(CELL_STATE_JS)

    def run_all(self, timeout: float = RUN_ALL_TIMEOUT) -> float:
        """Run > Run All Cells, then wait until every code cell has an execution count and the kernel is idle."""
        cells = json.loads((self.lab.notebooks / self.name).read_text())["cells"]
        expected = sum(c["cell_type"] == "code" and "".join(c["source"]).strip() != "" for c in cells)
        self.wait_for_kernel()
        start = time.monotonic()
        self.page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        self.page.locator(".lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel",
                          has_text="Run All Cells").first.click()
        stalled_since = None
        while True:
            time.sleep(1)
            state = self.state()
            assert not state["errors"], f"{self.name}: a cell raised:\n" + "\n".join(state["errors"])
            prompts = state["prompts"]
            done = [p for p in prompts if p.startswith("[") and p[1:-2].isdigit()]
            kernel = self.kernel_state()
            if len(done) == expected and kernel == "idle":
                return time.monotonic() - start
            if kernel == "idle" and not any("*" in p for p in prompts) and time.monotonic() - start > 10:
                stalled_since = stalled_since or time.monotonic()
                assert time.monotonic() - stalled_since < 20, \
                    f"{self.name}: the kernel is idle but cells did not run: {prompts}"
            else:
                stalled_since = None
            assert time.monotonic() - start < timeout, f"{self.name}: cells still running after {timeout} s: {prompts}"

    def assert_no_widget_errors(self) -> None:
        """No widget error text, no widget view stuck at "Loading widget..." (a model the page never got), no
        traceback on stderr."""
        deadline = time.monotonic() + WIDGET_TIMEOUT
        while LOADING_TEXT in (text := self.page.evaluate("() => document.body.innerText")):
            assert time.monotonic() < deadline, f"{self.name}: a widget still shows '{LOADING_TEXT}'"
            time.sleep(0.5)
        for error in ERROR_TEXTS:
            assert error.lower() not in text.lower(), f"{self.name}: the page shows '{error}'"
        tracebacks = self.page.evaluate("""() => [...document.querySelectorAll(
            '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')]
            .map(e => e.innerText).filter(t => t.includes('Traceback'))""")
        assert not tracebacks, f"{self.name}: a traceback on stderr:\n" + "\n".join(tracebacks)

    def tag_widget(self, description: str, tag: str) -> dict:
        found = self.page.evaluate(TAG_WIDGET_JS, [description, tag])
        assert "error" not in found, f"{self.name}: {found['error']}"
        assert found["plot"], f"{self.name}: no rendered plotly figure after the '{description}' widget ({found})"
        return found

    def traces(self, tag: str) -> list[dict]:
        return self.page.locator(f"[data-e2vpt-{tag}-plot]").evaluate(TRACES_JS)

    def label_text(self, tag: str) -> str:
        return self.page.locator(f"[data-e2vpt-{tag}-label]").inner_text()

    def drag_slider(self, tag: str) -> tuple[float, float]:
        """Drag the noUiSlider handle with the mouse to the other side of the track; returns (from x, to x)."""
        widget = self.page.locator(f"[data-e2vpt-{tag}]")
        widget.scroll_into_view_if_needed()
        track = widget.locator(".noUi-target").bounding_box()
        handle = widget.locator(".noUi-handle").bounding_box()
        x0, y = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
        fraction = 0.85 if x0 < track["x"] + track["width"] / 2 else 0.15
        x1 = track["x"] + fraction * track["width"]
        self.page.mouse.move(x0, y)
        self.page.mouse.down()
        self.page.mouse.move(x1, y, steps=12)
        self.page.mouse.up()
        return x0, x1

    def change_widget(self, tag: str, found: dict) -> None:
        """Pick another value: a dropdown's last option (or its first when the last is chosen), or drag a slider."""
        widget = self.page.locator(f"[data-e2vpt-{tag}]")
        if found["select"]:
            select = widget.locator("select")
            values = select.locator("option").evaluate_all("options => options.map(o => o.value)")
            assert len(values) > 1, f"{self.name}: the '{tag}' dropdown has one option"
            current = select.input_value()
            select.select_option(values[-1] if current != values[-1] else values[0])
        else:
            assert found["slider"], f"{self.name}: '{tag}' is neither a dropdown nor a slider ({found})"
            self.drag_slider(tag)

    def wait_for_change(self, what: str, read, before, timeout: float = WIDGET_TIMEOUT):
        deadline = time.monotonic() + timeout
        while (now := read()) == before:
            assert time.monotonic() < deadline, f"{self.name}: {what} did not change within {timeout} s"
            time.sleep(0.25)
        return now

    def close(self) -> None:
        """Keep a last screenshot and the browser console, close the page, shut the notebook's kernel down."""
        with contextlib.suppress(Exception):
            self.page.screenshot(path=str(self.artifacts / f"{self.stem}-final.png"), full_page=True)
        with contextlib.suppress(Exception):
            (self.artifacts / f"{self.stem}-console.log").write_text("\n".join(self.console) + "\n")
        with contextlib.suppress(Exception):
            self.context.close()
        with contextlib.suppress(Exception):  # free the kernel before the next notebook runs
            session = self.lab.session(self.name)
            if session:
                self.lab.api(f"/api/sessions/{session['id']}", method="DELETE")


@pytest.fixture
def open_notebook(lab, browser, artifacts):
    opened = []

    def open_(name: str) -> Notebook:
        assert (lab.notebooks / name).exists(), f"notebooks/{name} is missing"
        opened.append(Notebook(lab, browser, artifacts, name))
        return opened[-1].open()

    yield open_
    for notebook in opened:
        notebook.close()


# ---------------------------------------------------------------------------------------------------- the tests


def parse_label(label: str) -> dict:
    """The label's contract: 'ratio 0.3: test accuracy 41.2% with 1,234 tunable parameters; ...'."""
    ratio = re.search(r"ratio\s+([0-9.]+)", label)
    acc = re.search(r"test accuracy\s+([0-9.]+)\s*%", label)
    params = re.search(r"with\s+([0-9,]+)\s+tunable", label)
    assert ratio and acc and params, f"the label does not read 'ratio R: test accuracy A% with N tunable': {label!r}"
    return {"ratio": float(ratio.group(1)), "acc": float(acc.group(1)),
            "tunable": int(params.group(1).replace(",", ""))}


def slider_disagreement(label: str, readout: str, point: dict) -> str | None:
    """Why the slider's readout, the label and the highlighted point do not show the same sweep entry, or None."""
    shown = parse_label(label)
    if abs(float(readout) - shown["ratio"]) > 0.05 + 1e-9:  # the label prints the ratio with one decimal
        return f"the slider reads {readout} but the label says {label!r}"
    if list(point["x"] or []) != [shown["tunable"]] or len(point["y"] or []) != 1 \
            or abs(point["y"][0] - shown["acc"]) > 0.05 + 1e-9:
        return f"the highlighted point is x={point['x']}, y={point['y']} but the label says {label!r}"
    return None


def check_pruning_slider(notebook: Notebook) -> None:
    """Drag the 'pruning ratio' slider: the accuracy label and the highlighted point (last trace) must move, and
    settle on the sweep entry the slider's readout shows."""
    found = notebook.tag_widget("pruning ratio", "ratio")
    assert found["slider"] and found["label"], f"{notebook.name}: slider or its label missing ({found})"
    notebook.assert_no_widget_errors()
    readout = notebook.page.locator("[data-e2vpt-ratio] .widget-readout")
    state = lambda: (notebook.label_text("ratio"), readout.inner_text().strip(),  # noqa: E731
                     {k: notebook.traces("ratio")[-1][k] for k in ("x", "y")})
    label, _, point = state()
    parse_label(label)
    assert (problem := slider_disagreement(*state())) is None, f"{notebook.name} before the drag: {problem}"
    notebook.screenshot("before", notebook.page.locator("[data-e2vpt-ratio]"))
    notebook.drag_slider("ratio")
    notebook.wait_for_change("the accuracy label", lambda: notebook.label_text("ratio"), label)
    notebook.wait_for_change("the highlighted point", lambda: state()[2], point)
    deadline = time.monotonic() + WIDGET_TIMEOUT  # a drag sends intermediate values: wait for the last one to land
    while (problem := slider_disagreement(*(now := state()))) and time.monotonic() < deadline:
        time.sleep(0.25)
    notebook.screenshot("after", notebook.page.locator("[data-e2vpt-ratio]"))
    assert problem is None, f"{notebook.name} after the drag: {problem}"
    new_label, _, new_point = now
    assert parse_label(new_label)["ratio"] != parse_label(label)["ratio"], f"the ratio did not move: {new_label!r}"
    assert new_point != point, "the highlighted point did not move"
    notebook.assert_no_widget_errors()


def last_heatmap(traces: list[dict]):
    heatmaps = [t for t in traces if t["type"] == "heatmap"]
    assert heatmaps, f"no heatmap trace among {[t['type'] for t in traces]}"
    return heatmaps[-1]["z"]


def test_notebook_01_default_mode_curves_results_and_pruning_slider(lab, open_notebook):
    notebook = open_notebook("01_train_cub.ipynb")
    notebook.run_all()
    notebook.assert_no_widget_errors()
    curves = notebook.cell("curves = LiveCurves(")
    plot = curves.locator(".js-plotly-plot").first
    traces = plot.evaluate(TRACES_JS)
    colours: dict[str, set] = {}
    for trace in traces:
        colours.setdefault(trace["name"], set()).add(trace["color"])
    methods = ["linear", "vpt-shallow", "vpt-deep", "e2vpt"]
    assert all(len(colours.get(m, ())) == 1 for m in methods), colours  # one colour per method, in both panels
    assert len({next(iter(colours[m])) for m in methods}) == len(methods), colours
    assert all(len(t["x"] or []) == 100 for t in traces if t["name"] in methods), "the recorded 100-epoch curves"
    notebook.screenshot("curves", curves)
    notebook.screenshot("results", notebook.cell("display(Markdown(runs_markdown(results)))"))
    check_pruning_slider(notebook)


def test_notebook_03_slider_keeps_the_ratio_the_code_set_and_rewinding_marks_the_choice(lab, open_notebook):
    notebook = open_notebook("03_pruning_tradeoffs.ipynb")
    notebook.run_all()
    notebook.wait_for_kernel()
    notebook.tag_widget("pruning ratio", "ratio")
    notebook.assert_no_widget_errors()
    source = json.loads((lab.notebooks / notebook.name).read_text())["cells"]
    wanted = next(float(m.group(1)) for c in source if c["cell_type"] == "code"
                  for m in [re.search(r"PruningSlider\(sweep, value=([0-9.]+)", "".join(c["source"]))] if m)
    time.sleep(2)  # the page has settled after the kernel went idle: the value must not snap to another step
    readout = notebook.page.locator("[data-e2vpt-ratio] .widget-readout").inner_text().strip()
    assert float(readout) == pytest.approx(wanted), f"the code set {wanted}, the page shows {readout}"
    assert parse_label(notebook.label_text("ratio"))["ratio"] == pytest.approx(wanted)
    notebook.screenshot("scores", notebook.cell("scores = importance_score_kinds("))
    notebook.screenshot("slider", notebook.page.locator("[data-e2vpt-ratio]"))
    notebook.screenshot("rewinding", notebook.cell("rewind = lesson_rewinding("))


def test_notebook_02_block_and_head_move_the_heatmap(lab, open_notebook):
    notebook = open_notebook("02_kv_prompt_attention.ipynb")
    notebook.run_all()
    block = notebook.tag_widget("block", "block")
    head = notebook.tag_widget("head", "head")
    notebook.assert_no_widget_errors()
    read = lambda: last_heatmap(notebook.traces("block"))  # noqa: E731
    z = read()
    notebook.screenshot("before", notebook.page.locator("[data-e2vpt-block]"))
    notebook.change_widget("block", block)
    z_block = notebook.wait_for_change("the heatmap after changing the block", read, z)
    notebook.screenshot("block", notebook.page.locator("[data-e2vpt-block]"))
    notebook.change_widget("head", head)
    notebook.wait_for_change("the heatmap after changing the head", read, z_block)
    notebook.screenshot("after", notebook.page.locator("[data-e2vpt-block]"))
    notebook.assert_no_widget_errors()
    notebook.screenshot("grounding", notebook.cell("scored = annotated_batch("))
