"""What this machine offers: package versions, cores, the device; seeding.

Taught in notebook ``00_setup_and_data`` (the environment check).
"""
from __future__ import annotations

import os
import platform
import random
from importlib import metadata

import numpy as np
import torch

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
