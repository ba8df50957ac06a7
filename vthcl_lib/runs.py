"""Run folders: metrics.json files written atomically, read back by the report and the tests.

Taught in notebook ``00_setup_and_data`` (every notebook ends with :func:`save_metrics`).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy and torch scalars and arrays
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as JSON to ``path`` through a temp file and a rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(_jsonable(data), handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_metrics(run_dir: str | os.PathLike, metrics: Mapping[str, Any], *, merge: bool = True) -> Path:
    """Write ``run_dir/metrics.json``; with ``merge`` keep keys already there that ``metrics`` does not set.

    Notebook ``00_setup_and_data``.
    """
    path = Path(run_dir) / "metrics.json"
    current = load_metrics(run_dir) if merge and path.exists() else {}
    current.update(_jsonable(dict(metrics)))
    return write_json_atomic(path, current)


def load_metrics(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``run_dir/metrics.json`` (``{}`` when there is none)."""
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"'{path}' is not valid JSON: {err}") from err
