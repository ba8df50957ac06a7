"""Browser check: a person's session in JupyterLab on notebook 01, driven through headless Chromium.

JupyterLab serves the repository; Playwright drives Debian's ``chromium`` (never a downloaded browser) to
open ``notebooks/01_tempo_sampling.ipynb``, run every cell from the menu (Run > Run All Cells), wait for
the kernel to go idle, move the tempo explorer's ``start`` slider with the keyboard, and check that the
explorer's figure changed. Screenshots of each step go to ``runs/browser/`` (the CI artifact folder).
`.ci/run` installs chromium with apt-get; where no chromium is installed the test is skipped and says why.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/01_tempo_sampling.ipynb"
SHOTS = ROOT / "runs" / "browser"
BROWSERS = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
RUN_ALL_TIMEOUT_MS = 600_000  # notebook 01 at ci takes about 30 s alone; CI machines are shared and slow


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"no headless browser found ({', '.join(BROWSERS)}): .ci/run installs Debian's chromium with "
                "apt-get; install it (apt-get install chromium) to run this check")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    port, token = _free_port(), "vthcl-browser-check"
    state = tmp_path_factory.mktemp("jupyter")  # fresh settings and workspaces: no state from earlier sessions
    settings = {  # user settings of a fresh JupyterLab, as a person could set them in Settings
        "notebook-extension/tracker": {"windowingMode": "none"},  # render every cell, not only the visible
        "docmanager-extension/plugin": {"autosave": False},  # never write outputs into the repository
        "apputils-extension/notification": {"fetchNews": "false"},  # no news toast (and no network)
    }
    for name, values in settings.items():
        path = state / "settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {**os.environ, "VTHCL_PRESET": "ci", "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={ROOT}", "--ServerApp.open_browser=False",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as response:
                    assert "started" in json.load(response)
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start on {url}: {server.stderr.read()[-2000:]}")
                time.sleep(0.5)
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


def _non_blank(path: Path) -> float:
    from matplotlib.image import imread

    image = imread(path)
    return float(np.std(image[..., :3]))


def _shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    page.screenshot(path=str(path))
    assert _non_blank(path) > 0.02, f"{path} is a blank frame"
    return path


def _explorer_image(page) -> str:
    """The src (a data: URL of the PNG) of the figure the tempo explorer currently shows."""
    return page.locator(".widget-interact .jp-OutputArea-output img").first.get_attribute("src") or ""


def test_person_runs_notebook_01_and_moves_the_explorer_slider(lab):
    browser_path = _browser()
    url, token = lab
    code_cells = sum(c["cell_type"] == "code" for c in json.loads((ROOT / NOTEBOOK).read_text())["cells"])
    title = json.loads((ROOT / NOTEBOOK).read_text())["cells"][0]["source"][0].lstrip("# ").strip()
    for old in SHOTS.glob("*.png"):
        old.unlink()
    committed = (ROOT / NOTEBOOK).read_bytes()
    try:
        _drive(browser_path, url, token, code_cells, title)
    finally:
        if (ROOT / NOTEBOOK).read_bytes() != committed:  # autosave is off; if anything wrote it, undo that
            (ROOT / NOTEBOOK).write_bytes(committed)
            pytest.fail(f"the browser session wrote {NOTEBOOK}; restored the committed file")


def _drive(browser_path: str, url: str, token: str, code_cells: int, title: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(f"{url}/lab/tree/{NOTEBOOK}?token={token}")

            # 1. The notebook opens as a notebook: markdown rendered, code cells, an idle kernel.
            page.locator(".jp-NotebookPanel .jp-MarkdownCell h1").first.wait_for()
            heading = page.locator(".jp-NotebookPanel .jp-MarkdownCell h1").first.inner_text()
            assert heading.replace("¶", "").strip() == title
            assert page.locator(".jp-NotebookPanel .jp-CodeCell").count() == code_cells
            page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for()
            _shot(page, "01_opened.png")

            # 2. Run > Run All Cells, as a person would from the menu bar.
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
            prompts = page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt")
            page.wait_for_function(
                """n => {
                    const p = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')];
                    return p.length === n && p.every(e => /\\[\\d+\\]/.test(e.textContent));
                }""", arg=code_cells, timeout=RUN_ALL_TIMEOUT_MS)
            page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for()
            assert prompts.count() == code_cells
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            tracebacks = [e for e in errors.all_inner_texts() if "Traceback" in e or "Error" in e.split("\n")[0]]
            assert not tracebacks, tracebacks[:1]

            # 3. The explorer: an ipywidgets interact with sliders and the figure they draw.
            explorer = page.locator(".widget-interact").first
            explorer.scroll_into_view_if_needed()
            start = explorer.locator(".widget-slider", has=page.locator(".widget-label", has_text="start"))
            readout = start.locator(".widget-readout")
            before_value, before_image = readout.inner_text(), _explorer_image(page)
            assert before_image.startswith("data:image/png"), "the explorer shows a figure"
            _shot(page, "02_ran_all_cells.png")

            # 4. Move the `start` slider by one step with the keyboard (focus the handle, press the right arrow).
            handle = start.locator(".noUi-handle")
            handle.click()
            handle.press("ArrowRight")
            page.wait_for_function(
                """old => {
                    const img = document.querySelector('.widget-interact .jp-OutputArea-output img');
                    return img !== null && img.getAttribute('src') !== old;
                }""", arg=before_image, timeout=120_000)
            page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for()
            after_value, after_image = readout.inner_text(), _explorer_image(page)
            _shot(page, "03_moved_slider.png")
        finally:
            browser.close()
    assert int(after_value) == int(before_value) + 1, (before_value, after_value)
    assert after_image.startswith("data:image/png") and after_image != before_image  # a new figure
    assert sorted(p.name for p in SHOTS.glob("*.png")) == ["01_opened.png", "02_ran_all_cells.png",
                                                           "03_moved_slider.png"]
