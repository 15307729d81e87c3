"""A real-browser check: JupyterLab + headless Chromium run notebook 01 and use its sample gallery.

Needs Debian's chromium (make test installs it when missing) and Playwright for Python; it drives the
system browser, so no browser download is needed. The screenshot goes to runs/browser/.
"""

import os
import re
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
         f"--ServerApp.token={TOKEN}", f"--ServerApp.root_dir={served}", "--allow-root"],
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


def _wait_until_all_cells_ran(page, timeout: float) -> None:
    """Poll the prompts; fail at once with the error text if a cell raised (Run All then stops)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(3)
        prompts = page.evaluate(
            "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent)"
        )
        errors = page.evaluate(
            "() => [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type=\"application/"
            "vnd.jupyter.stderr\"]')].map(e => e.textContent).filter(t => /Error|Traceback/.test(t))"
        )
        assert not errors, f"a notebook cell failed in the browser: {errors[0][-1500:]}"
        if prompts and all(re.fullmatch(r"\[\d+\]:", t.strip()) for t in prompts):
            return
        status = page.evaluate("() => document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status")
        if status == "idle" and any(t.strip() == "[ ]:" for t in prompts):
            page.screenshot(path=str(REPO / "runs" / "browser" / "01_failed.png"))
            pytest.fail(f"the run stopped before the end (prompts {prompts}); see runs/browser/01_failed.png")
    pytest.fail(f"the notebook did not finish within {timeout} s")


def _run_all_cells(page) -> None:
    """Run > Run All Cells, until a cell really starts: on a fresh install the first kernel start can
    outlast the idle indicator, and a Run All issued before the kernel is connected does nothing."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    started = "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"
    for _ in range(3):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            page.wait_for_function(started, timeout=60_000)
            return
        except PlaywrightTimeout:
            continue
    page.screenshot(path=str(REPO / "runs" / "browser" / "01_failed.png"))
    pytest.fail("Run All Cells started no cell in 3 tries; see runs/browser/01_failed.png")


def _gallery_state(page):
    return page.evaluate(
        """() => {
            const g = document.querySelector('.fdk-gallery');
            return {images: [...g.querySelectorAll('img')].map(i => i.src.slice(-200)),
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
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        _run_all_cells(page)
        # The gallery needs the kernel to answer the slider, so wait for the whole notebook (smoke: minutes).
        _wait_until_all_cells_ran(page, timeout=900)
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
            "prev => document.querySelector('.fdk-gallery img').src.slice(-200) !== prev",
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
