"""Time each notebook's first code cell (its imports) in a fresh kernel: issue 15.6, "under 3 s".

A dev tool, not part of ``make test`` (timings depend on the machine). For each notebook it starts
a new ``python3`` kernel in ``notebooks/`` (the folder papermill runs them in), executes only the
first code cell, and records the wall time from the request to the kernel's reply; the kernel's
own start-up is not counted. Each notebook is timed ``--repeat`` times in turn; the median is kept.

    .venv/bin/python tools/time_import_cells.py            # all 13 notebooks, 3 repeats
    .venv/bin/python tools/time_import_cells.py 01 05 --repeat 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def first_code_cell(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return next("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def time_cell(source: str, timeout_s: float = 120.0) -> float:
    """Seconds a fresh kernel takes to run ``source`` (start-up excluded)."""
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "VTHCL_PRESET": os.environ.get("VTHCL_PRESET", "ci")}
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(NOTEBOOKS), env=env,
                              stderr=subprocess.DEVNULL)  # the kernel's own start-up notices
    try:
        kc.execute_interactive("1", timeout=timeout_s, output_hook=lambda msg: None)  # start-up is over
        start = time.perf_counter()
        reply = kc.execute_interactive(source, timeout=timeout_s, output_hook=lambda msg: None)
        seconds = time.perf_counter() - start
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"the cell failed: {reply['content'].get('ename')}: "
                               f"{reply['content'].get('evalue')}")
        return seconds
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="number prefixes (00 01 ...); default: all")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the timings here")
    args = parser.parse_args(argv)
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.notebooks:
        paths = [p for p in paths if p.name[:2] in set(args.notebooks)]
        if not paths:
            print(f"error: no notebook numbered {' '.join(args.notebooks)} in {NOTEBOOKS}", file=sys.stderr)
            return 2
    sources = {p.stem: first_code_cell(p) for p in paths}
    times: dict[str, list[float]] = {name: [] for name in sources}
    load_before = os.getloadavg()
    for _ in range(args.repeat):
        for name, source in sources.items():
            times[name].append(time_cell(source))
    load_after = os.getloadavg()
    print("load average (1, 5, 15 min) before: " + ", ".join(f"{v:.2f}" for v in load_before)
          + "; after: " + ", ".join(f"{v:.2f}" for v in load_after))
    for name, values in times.items():
        runs = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:36s} median {statistics.median(values):5.2f} s   ({runs})")
    if args.json:
        Path(args.json).write_text(json.dumps(times, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
