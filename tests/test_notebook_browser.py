"""Notebook 1 in a real JupyterLab, driven by headless Chromium (Debian package) via Playwright.

Starts JupyterLab on a free loopback port with a random token over a temporary copy of
``notebooks/01_*.ipynb`` (the repository copy is never touched), runs all cells from the Run
menu on the CI preset, checks that the step-through widget and the plotly figures render and
that the widget's Step button runs a round through the live kernel, and saves screenshots of
the widget and of a figure (to ``$DSPARK_VIZ_ARTIFACTS`` when set, else a temp dir).
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian chromium not installed (.ci/run installs it)")
pytest.importorskip("playwright")
pytest.importorskip("jupyterlab")
ROOT = Path(__file__).resolve().parents[1]
NB1 = sorted((ROOT / "notebooks").glob("01_*.ipynb"))[0]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(base url, token, notebook file name) of a JupyterLab serving a copy of notebook 1."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(NB1, root / NB1.name)
    cfg = tmp_path_factory.mktemp("jupyter-config")
    port, token = _free_port(), secrets.token_hex(16)
    # shared with test_notebooks.py in the same session: the tiny drafter is trained once
    tut = tmp_path_factory.getbasetemp() / "nb-tutorial-drafters"
    env = dict(os.environ, DSPARK_VIZ_NB_PRESET="ci", DSPARK_VIZ_TUTORIAL_DIR=str(tut),
               JUPYTER_CONFIG_DIR=str(cfg), JUPYTER_RUNTIME_DIR=str(cfg / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(cfg / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(cfg / "workspaces"), PYTHONWARNINGS="ignore",
               OMP_NUM_THREADS="1",  # tiny models: one thread is much faster on a busy machine
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    log = open(root.parent / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.extension_manager=readonly", "--ServerApp.allow_root=True"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("JupyterLab did not start: " + (root.parent / "jupyterlab.log").read_text()[-2000:])
            time.sleep(0.5)
    yield base, token, NB1.name
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


_PROMPTS = """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt'))
                 .map(e => e.textContent.trim())"""


def test_notebook_1_runs_in_jupyterlab(lab, shots):
    from playwright.sync_api import sync_playwright
    base, token, name = lab
    outside = []
    t0 = time.perf_counter()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})

        def track(route):
            host = urlparse(route.request.url).hostname
            if route.request.url.startswith(("http", "ws")) and host not in ("127.0.0.1", "localhost"):
                outside.append(route.request.url)
                return route.abort()
            return route.continue_()
        page.route("**/*", track)
        page.goto(f"{base}/lab/tree/{name}?token={token}", wait_until="load")
        page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
        dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
        try:  # a fresh JupyterLab may ask which kernel to start
            dialog.wait_for(timeout=15_000)
            dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
        except Exception:
            pass
        news = page.locator(".jp-toast-button", has_text="No")
        if news.count():
            news.first.click()
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(
            timeout=60_000)
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
        # every code cell numbered, none pending
        try:
            page.wait_for_function(
                f"""() => {{ const p = ({_PROMPTS})();
                           return p.length > 0 && p.every(t => /\\[\\d+\\]/.test(t)); }}""",
                timeout=100_000, polling=1000)
        except Exception:
            page.screenshot(path=str(shots / "nb1_timeout.png"), full_page=True)
            pytest.fail(f"cells did not all run: prompts {page.evaluate(_PROMPTS)}; screenshot in {shots}")
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                              has_text="Traceback")
        assert errors.count() == 0, errors.first.inner_text()[:2000]
        assert page.locator(".jp-RenderedText", has_text="identical=True").count() == 1

        stepper = page.locator(".dsv-stepper").first
        stepper.scroll_into_view_if_needed()
        stepper.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
        status = stepper.locator(".dsv-status").first
        before = status.inner_text()
        assert "round 1 of" in before
        stepper.locator("button", has_text="Step").click()
        page.wait_for_function("""() => { const s = document.querySelector('.dsv-stepper');
                                           const t = s && s.querySelector('.dsv-status');
                                           return t && t.innerText.includes('round 2 of'); }""",
                               timeout=30_000)
        assert stepper.locator(".dsv-tok").count() > 3  # the token text
        page.set_viewport_size({"width": 1400, "height": 2600})  # the whole widget in view
        stepper.scroll_into_view_if_needed()
        page.wait_for_timeout(1000)  # let plotly finish laying out the new figures
        stepper.screenshot(path=str(shots / "nb1_stepper.png"))

        fig = page.locator(".dsv-rejection .js-plotly-plot").first
        fig.scroll_into_view_if_needed()
        fig.wait_for(timeout=30_000)
        page.locator(".dsv-rejection").first.screenshot(path=str(shots / "nb1_rejection_widget.png"))
        static = page.locator(".jp-OutputArea-output > .js-plotly-plot, "
                              ".jp-OutputArea-output .js-plotly-plot").nth(0)
        static.screenshot(path=str(shots / "nb1_figure.png"))
        browser.close()
    for f in ("nb1_stepper.png", "nb1_rejection_widget.png", "nb1_figure.png"):
        assert (shots / f).stat().st_size > 10_000, f
    assert not outside, f"requests left this machine: {outside[:5]}"
    print(f"notebook 1 in JupyterLab: {time.perf_counter() - t0:.1f} s; screenshots in {shots}")
