"""One screenshot per executed notebook, as a student sees it in JupyterLab (issue 15, acceptance).

Takes a folder of executed notebooks (papermill's outputs: ``runs/ci/``, ``runs/demo/``), serves a
copy of it with JupyterLab (headless, fresh settings, autosave off: the folder is never written),
opens each notebook in Debian's ``chromium`` driven by Playwright (never a downloaded browser, as in
``tests/test_browser.py``), scrolls to the notebook's key result (the cell tagged ``screenshot``)
and saves one PNG of the window per notebook, quantised to stay small.

    .venv/bin/python tools/screenshot_notebooks.py --executed runs/ci --preset ci
    .venv/bin/python tools/screenshot_notebooks.py --executed runs/demo --preset demo \\
        --out docs/screenshots/demo

The tagged cell is read from the executed notebook, or else from ``notebooks/<name>.ipynb`` (by cell
id, then by position). Notebooks missing from the folder are listed and skipped; the exit status is
1 when any is missing or failed, 2 when nothing could be done.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
TAG = "screenshot"
BROWSERS = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SETTINGS = {  # a fresh JupyterLab's user settings, as a person could set them in Settings
    "notebook-extension/tracker": {"windowingMode": "none"},  # render every cell, not only the visible
    "docmanager-extension/plugin": {"autosave": False},
    "apputils-extension/notification": {"fetchNews": "false"},
}


class ToolError(Exception):
    """A problem the user can fix; printed as one line, without a traceback."""


def course_notebooks() -> list[str]:
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def tagged_cell(executed: dict, name: str) -> int:
    """Index (among all cells) of the cell tagged ``screenshot`` in ``executed``, or its source's."""
    cells = executed["cells"]
    for k, cell in enumerate(cells):
        if TAG in cell.get("metadata", {}).get("tags", []):
            return k
    source = NOTEBOOKS / f"{name}.ipynb"
    if source.exists():
        src_cells = json.loads(source.read_text())["cells"]
        for k, cell in enumerate(src_cells):
            if TAG in cell.get("metadata", {}).get("tags", []):
                ids = [c.get("id") for c in cells]
                if cell.get("id") in ids:
                    return ids.index(cell["id"])
                # papermill adds one "injected-parameters" cell after the parameters cell
                injected = sum("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in cells)
                if len(cells) == len(src_cells) + injected:
                    return k + injected if k > _parameters_index(src_cells) else k
    raise ToolError(f"{name}: no cell is tagged {TAG!r} (in the executed copy or in notebooks/{name}.ipynb)")


def _parameters_index(cells: list[dict]) -> int:
    return next((k for k, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])), -1)


def find_browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise ToolError(f"no headless browser found ({', '.join(BROWSERS)}); install Debian's chromium "
                    "(apt-get install chromium). This tool never downloads a browser.")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(root_dir: Path, state: Path) -> tuple[subprocess.Popen, str, str]:
    """JupyterLab serving ``root_dir`` on a free local port, with its settings under ``state``."""
    for name, values in SETTINGS.items():
        path = state / "settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = _free_port(), "vthcl-screenshots"
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"), "JUPYTER_DATA_DIR": str(state / "data")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={root_dir}", "--ServerApp.open_browser=False",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.expose_app_in_browser=True"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as response:
                json.load(response)
                return server, url, token
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise ToolError(f"JupyterLab did not start on {url}: {server.stderr.read()[-1000:]}")
            time.sleep(0.5)


def stop_lab(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()


def shrink_png(raw: bytes, max_bytes: int) -> tuple[bytes, float]:
    """``raw`` PNG as a 256-colour PNG (no dithering: crisp text), downscaled only if still too big."""
    from PIL import Image

    image = Image.open(io.BytesIO(raw)).convert("RGB")
    scale = 1.0
    while True:
        size = (round(image.width * scale), round(image.height * scale))
        resized = image if scale == 1.0 else image.resize(size, Image.Resampling.LANCZOS)
        palette = resized.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        out = io.BytesIO()
        palette.save(out, format="PNG", optimize=True)
        if out.tell() <= max_bytes or scale < 0.5:
            return out.getvalue(), scale
        scale *= 0.9


def shoot(page, url: str, token: str, name: str, cell: int, num_cells: int, offset_px: int) -> bytes:
    """Open ``name`` in JupyterLab, scroll cell ``cell`` near the top of the window, return a PNG."""
    page.goto(f"{url}/lab/tree/{name}.ipynb?reset&token={token}")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell")
    page.evaluate("""async () => {  // the whole width for the notebook: no file browser
        await window.jupyterapp.restored;
        const shell = window.jupyterapp.shell;
        shell.collapseLeft();
        shell.collapseRight();
    }""")
    page.wait_for_function("n => document.querySelectorAll('.jp-NotebookPanel .jp-Cell').length >= n",
                           arg=num_cells)  # every cell rendered (windowing is off)
    page.wait_for_function("""() => [...document.querySelectorAll('.jp-NotebookPanel img')]
                               .every(img => img.complete)""")
    # A saved widget (an explorer run by papermill) has no kernel behind it here: hide the
    # "disconnected" chain icons, which a student running the notebook never sees.
    page.add_style_tag(content=".jupyter-widgets-disconnected::before { display: none !important; }")
    page.wait_for_timeout(1000)  # layout settles (fonts, MathJax, widgets)
    page.locator(".jp-NotebookPanel .jp-Cell").nth(cell).evaluate("""(el, offset) => {
        el.scrollIntoView({block: 'start'});
        let box = el.parentElement;
        while (box && box.scrollHeight <= box.clientHeight) { box = box.parentElement; }
        if (box) { box.scrollTop = Math.max(0, box.scrollTop - offset); }
    }""", offset_px)
    page.wait_for_timeout(500)
    page.mouse.move(0, 0)  # no hover highlight
    return page.screenshot()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One JupyterLab screenshot per executed notebook, scrolled "
                                     f"to its cell tagged {TAG!r}.")
    parser.add_argument("--executed", required=True, type=Path,
                        help="folder of executed notebooks named like notebooks/ (e.g. runs/ci, runs/demo)")
    parser.add_argument("--preset", required=True, help="the preset they ran at (names the default --out)")
    parser.add_argument("--out", type=Path, help="where the PNGs go (default: docs/screenshots/<preset>)")
    parser.add_argument("--only", nargs="*", default=None, help="number prefixes to take (00 01 ...)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--offset", type=int, default=60, help="pixels shown above the tagged cell")
    parser.add_argument("--max-kb", type=int, default=290, help="largest PNG kept, in KB (1000 bytes)")
    parser.add_argument("--timeout-s", type=int, default=60, help="longest wait for one page step")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ToolError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(args) -> int:
    if not args.executed.is_dir():
        raise ToolError(f"--executed {args.executed}: no such folder; run the notebooks there first "
                        "(e.g. `make demo`, or papermill ... runs/ci/<name>.ipynb)")
    out = args.out or ROOT / "docs" / "screenshots" / args.preset
    names = course_notebooks()
    if args.only:
        names = [n for n in names if n[:2] in set(args.only)]
        if not names:
            raise ToolError(f"--only {' '.join(args.only)}: no such notebook in {NOTEBOOKS}")
    present = [n for n in names if (args.executed / f"{n}.ipynb").is_file()]
    missing = [n for n in names if n not in present]
    if missing:
        print(f"missing from {args.executed} (skipped): {', '.join(missing)}", file=sys.stderr)
    if not present:
        raise ToolError(f"none of the notebooks is in {args.executed}: expected files like "
                        f"{args.executed / (names[0] + '.ipynb')}")
    targets, failed = {}, list(missing)
    for name in present:
        try:
            executed = json.loads((args.executed / f"{name}.ipynb").read_text())
            targets[name] = (tagged_cell(executed, name), len(executed["cells"]))
        except (ToolError, json.JSONDecodeError, KeyError) as err:
            print(f"{name}: skipped: {err}", file=sys.stderr)
            failed.append(name)
    browser_path = find_browser()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        raise ToolError(f"playwright is not installed ({err}); `make venv` installs the dev extras") from None
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vthcl-shots-") as tmp:
        served = Path(tmp) / "notebooks"
        served.mkdir()
        for name in targets:  # a copy: JupyterLab never touches the run folder
            shutil.copy2(args.executed / f"{name}.ipynb", served / f"{name}.ipynb")
        subprocess.run([sys.executable, "-m", "jupyter", "trust", *[str(served / f"{n}.ipynb") for n in targets]],
                       env={**os.environ, "JUPYTER_DATA_DIR": str(Path(tmp) / "data")},
                       capture_output=True, check=False)  # trusted: rich outputs render as they were
        server, url, token = start_lab(served, Path(tmp))
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=browser_path, headless=True, args=LAUNCH_ARGS)
                try:
                    page = browser.new_page(viewport={"width": args.width, "height": args.height})
                    page.set_default_timeout(args.timeout_s * 1000)
                    for name, (cell, num_cells) in targets.items():
                        try:
                            raw = shoot(page, url, token, name, cell, num_cells, args.offset)
                        except Exception as err:  # one notebook's trouble does not stop the others
                            print(f"{name}: failed: {type(err).__name__}: {str(err).splitlines()[0]}",
                                  file=sys.stderr)
                            failed.append(name)
                            continue
                        png, scale = shrink_png(raw, args.max_kb * 1000)
                        path = out / f"{name}.png"
                        path.write_bytes(png)
                        note = "" if scale == 1.0 else f", downscaled to {scale:.0%}"
                        print(f"{name}: cell {cell} -> {path} ({len(png) // 1000} KB{note})", flush=True)
                finally:
                    browser.close()
        finally:
            stop_lab(server)
    if failed:
        print(f"no screenshot for: {', '.join(sorted(failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
