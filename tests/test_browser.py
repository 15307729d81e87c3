"""A real-browser check: JupyterLab + headless Chromium run notebook 01 and use its sample gallery.

Needs Debian's chromium (make test installs it when missing) and Playwright for Python; it drives the
system browser, so no browser download is needed. The screenshot goes to runs/browser/.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "fdk-browser-test"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium: install Debian's chromium (make test does: apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed: pip install -e .[dev]")
    # Serve a copy: JupyterLab autosaves, and the committed notebook must stay free of outputs.
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(REPO / "notebooks" / "01_bn_inversion.ipynb", served / "01_bn_inversion.ipynb")
    port = _free_port()
    # JupyterLab's "get notified about news?" toast would cover the gallery in the screenshot: answer it.
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    env = {
        **os.environ,
        "FDK_SMOKE": "1",
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.token={TOKEN}", f"--ServerApp.root_dir={served}", "--allow-root", "--expose-app-in-browser"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "jupyter.log", "w"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        server.kill()
        pytest.fail("JupyterLab did not start: " + (tmp_path / "jupyter.log").read_text()[-2000:])
    yield url
    server.terminate()
    server.wait(timeout=30)


# JupyterLab's own state, read through window.jupyterapp (--expose-app-in-browser): no waiting on time,
# no clicks that a dialog could intercept.
NOTEBOOK_STATE = """() => {
    const app = window.jupyterapp;
    const panel = app && app.shell.currentWidget;
    if (!panel || !panel.sessionContext || !panel.content) return {ready: false};
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    const cells = [...panel.content.widgets].filter(c => c.model.type === 'code');
    const errors = cells.flatMap(c => [...Array(c.model.outputs.length).keys()].map(i => c.model.outputs.get(i).toJSON()))
        .filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue);
    return {
        ready: !!kernel && kernel.connectionStatus === 'connected' && panel.sessionContext.isReady,
        status: kernel ? kernel.status : 'none',
        executed: cells.filter(c => c.model.executionCount !== null).length,
        running: cells.filter(c => (c.node.querySelector('.jp-InputPrompt') || {}).textContent?.includes('*')).length,
        cells: cells.length,
        errors,
    };
}"""


def _answer_dialogs(page) -> list[str]:
    """Accept JupyterLab's modal dialogs (kernel choice: the default Python kernel; build or restart
    prompts: dismiss) so none blocks the notebook; returns their titles."""
    titles = []
    for dialog in page.locator(".jp-Dialog").all():
        title = dialog.locator(".jp-Dialog-header").inner_text(timeout=2000)
        titles.append(title)
        if "kernel" in title.lower():
            dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
        else:
            dialog.locator(".jp-Dialog-button.jp-mod-reject").first.click()
    return titles


def _wait_for(page, predicate, timeout: float, what: str) -> dict:
    """Poll the notebook's state (answering dialogs) until predicate(state) holds."""
    deadline = time.time() + timeout
    state = {}
    while time.time() < deadline:
        _answer_dialogs(page)
        state = page.evaluate(NOTEBOOK_STATE)
        assert not state.get("errors"), f"a notebook cell failed in the browser: {state['errors']}"
        if predicate(state):
            return state
        page.wait_for_timeout(1000)
    page.screenshot(path=str(REPO / "runs" / "browser" / "01_failed.png"))
    pytest.fail(f"{what} within {timeout} s (last state {state}); see runs/browser/01_failed.png")


def _run_all_cells(page) -> None:
    """Wait for a connected, idle kernel, then Run All through the command registry; check it started."""
    _wait_for(page, lambda s: s.get("ready") and s["status"] == "idle", 300, "the kernel was not ready")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    _wait_for(page, lambda s: s["executed"] > 0 or s["running"] > 0, 120, "Run All started no cell")


def _gallery_state(page):
    return page.evaluate(
        """() => {
            const g = document.querySelector('.fdk-gallery');
            return {images: [...g.querySelectorAll('figure img')].map(i => i.src.slice(-200)),
                    captions: [...g.querySelectorAll('.fdk-caption')].map(c => c.textContent),
                    title: g.querySelector('.widget-html-content b')?.textContent};
        }"""
    )


def test_notebook_01_gallery_in_chromium(jupyterlab):
    from playwright.sync_api import sync_playwright

    shots = REPO / "runs" / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(f"{jupyterlab}/lab/tree/01_bn_inversion.ipynb?token={TOKEN}")
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget", timeout=180_000)
        _run_all_cells(page)
        # The gallery needs the kernel to answer the slider, so wait for the whole notebook (smoke: minutes).
        _wait_for(page, lambda s: s["executed"] == s["cells"] and s["running"] == 0 and s["status"] == "idle",
                  1200, "the notebook did not finish")  # fmt: skip
        gallery = page.locator(".fdk-gallery")
        gallery.scroll_into_view_if_needed()
        before = _gallery_state(page)
        assert len(before["images"]) > 0 and len(before["captions"]) == len(before["images"])
        page.screenshot(path=str(shots / "01_gallery_before.png"))

        handle = gallery.locator(".noUi-handle").first
        handle.focus()
        for _ in range(3):
            handle.press("ArrowRight")  # step 0 -> step 3 x STEPS/10
        page.wait_for_function(
            "prev => document.querySelector('.fdk-gallery figure img').src.slice(-200) !== prev",
            arg=before["images"][0],
            timeout=60_000,
        )
        after = _gallery_state(page)
        gallery.screenshot(path=str(shots / "01_gallery.png"))
        page.screenshot(path=str(shots / "01_notebook.png"))
        browser.close()
    assert after["images"] != before["images"], "the images must change with the slider"
    assert after["captions"] != before["captions"], "the teacher's labels must change with the slider"
    assert after["title"] != before["title"]
