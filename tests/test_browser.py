"""Browser check: JupyterLab serves notebook 01 and headless Chromium renders it (DOM and screenshot).

`.ci/run` installs Debian's `chromium` first; where it cannot be installed the test is skipped and says why.
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
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> str:
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip(f"no headless browser found ({', '.join(BROWSERS)}): .ci/run installs Debian's chromium with apt-get; "
                "install it (apt-get install chromium) to run this check")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab():
    port, token = _free_port(), "vthcl-browser-check"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={ROOT}", "--ServerApp.open_browser=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
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


def _chromium(browser: str, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
             "--virtual-time-budget=30000"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=180)


def test_jupyterlab_renders_notebook_01_in_headless_chromium(lab, tmp_path):
    browser = _browser()
    url, token = lab
    page = f"{url}/lab/tree/{NOTEBOOK}?token={token}"
    dom = _chromium(browser, "--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    title = json.loads((ROOT / NOTEBOOK).read_text())["cells"][0]["source"][0].lstrip("# ").strip()
    assert "jp-NotebookPanel" in html and "jp-MarkdownCell" in html and "jp-CodeCell" in html  # the notebook view
    assert f">{title}<" in html.replace("¶", "")  # its first markdown cell rendered as a heading, not raw text
    shot = tmp_path / "notebook01.png"
    picture = _chromium(browser, f"--screenshot={shot}", page)
    assert picture.returncode == 0 and shot.is_file(), picture.stderr[-2000:]
    from matplotlib.image import imread

    image = imread(shot)
    assert image.shape[:2] == (900, 1280) and float(np.std(image[..., :3])) > 0.02  # a page, not a blank frame
