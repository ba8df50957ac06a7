"""What this machine offers: package versions, cores, the device; seeding.

Taught in notebook ``00_setup_and_data`` (the environment check).
"""
from __future__ import annotations

import logging
import os
import platform
import random
import sys
import time
from importlib import metadata

import numpy as np
import torch

_STARTED = time.perf_counter()  # the notebook's import cell imports this module: its clock starts here

REPORTED_PACKAGES = ("torch", "numpy", "decord", "av", "seaborn", "matplotlib", "ipywidgets", "papermill", "nbval")


def environment_report() -> dict[str, str]:
    """Versions of the packages the project uses, the Python, the cores and the accelerator."""
    report = {"python": platform.python_version(), "platform": platform.platform(), "cpu_cores": str(os.cpu_count())}
    for name in REPORTED_PACKAGES:
        try:
            report[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            report[name] = "not installed"
    report["torch_threads"] = str(torch.get_num_threads())
    report["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"
    return report


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; ``"cuda"`` without a GPU is an error that says so."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def elapsed() -> float:
    """Seconds since ``vthcl_lib.environment`` was first imported (a notebook's import cell).

    Every notebook's last cell prints it (``report_elapsed``), so a run says how long it took.
    """
    return time.perf_counter() - _STARTED


def report_elapsed(preset: str) -> None:
    """Print the line a notebook ends with: its wall time at ``preset``, rounded to the second.

    Returns nothing, so a cell that ends with it shows the line and no stray value.
    """
    print(f"this notebook ran in {elapsed():.0f} s at the {preset} preset")


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def log_to_stdout(level: int = logging.INFO) -> None:
    """Route the library's log to the notebook: information on stdout, warnings and errors on stderr.

    Called in each notebook's import cell. Without it Python prints only warnings, and on stderr,
    which Jupyter paints red: "resuming ... after epoch 2 of 2" is news, not trouble. Idempotent.
    Returns nothing, so the import cell that ends with it shows no ``<Logger vthcl_lib (INFO)>``;
    the logger is ``logging.getLogger("vthcl_lib")``.
    """
    logger = logging.getLogger("vthcl_lib")
    for handler in list(logger.handlers):
        if getattr(handler, "_vthcl_notebook", False):
            logger.removeHandler(handler)
    info = logging.StreamHandler(sys.stdout)
    info.addFilter(_BelowWarning())
    warn = logging.StreamHandler(sys.stderr)
    warn.setLevel(logging.WARNING)
    for handler in (info, warn):
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._vthcl_notebook = True
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # a root handler (papermill, pytest) would print each line twice
