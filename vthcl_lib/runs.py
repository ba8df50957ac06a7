"""Run folders: metrics.json files written atomically, read back by the report and the tests.

Taught in notebook ``00_setup_and_data`` (every notebook ends with :func:`save_metrics`). The
papermill interface lives here too: :func:`check_parameters` (each notebook's third cell) stops a run
at once on a parameter name the notebook does not have, and :func:`save_config` records the full
configuration beside the metrics.
"""
from __future__ import annotations

import ast
import difflib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping


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


# Names the shared preset files (notebooks/params/<preset>.yaml) set for every notebook. A notebook
# without widgets has no INTERACTIVE parameter, yet `make demo` passes demo.yaml to all of them.
SHARED_PARAMETERS = ("INTERACTIVE",)
# papermill writes its overrides into a new cell that starts with exactly this comment line
# (papermill.translators.Translator.codify); the notebooks' own parameters cell says more after it.
PAPERMILL_MARKER = "# Parameters"
_PARAMETER_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_PLAIN_VALUES = (type(None), bool, int, float, str, list, dict)  # what papermill can inject


class ParameterError(ValueError):
    """A papermill parameter the notebook does not have (every notebook's third cell).

    IPython shows only this message, no traceback.
    """

    def _render_traceback_(self) -> list[str]:  # IPython's hook for a custom error display
        return [f"{type(self).__name__}: {self}"]


def injected_parameters(namespace: Mapping[str, Any]) -> list[str]:
    """The names papermill assigned in its injected cell, in order (notebook ``00_setup_and_data``).

    In an IPython kernel the cell is in the input history ``_ih``: the cell whose first line is
    ``# Parameters``. Without a history (plain Python), every UPPER_CASE global holding a value
    papermill could inject that the parameters cell did not annotate counts as injected.
    """
    history = namespace.get("_ih")
    if history is None:
        declared = namespace.get("__annotations__", {})
        return [name for name, value in namespace.items() if _PARAMETER_NAME.match(name)
                and name not in declared and isinstance(value, _PLAIN_VALUES)]
    names: list[str] = []
    for source in history:
        if not isinstance(source, str) or source.split("\n", 1)[0].strip() != PAPERMILL_MARKER:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue  # not papermill's: papermill writes valid Python
        for node in tree.body:
            if isinstance(node, ast.Assign):
                names += [t.id for t in node.targets if isinstance(t, ast.Name) and t.id not in names]
    return names


def check_parameters(namespace: Mapping[str, Any], notebook: str = "this notebook", *,
                     shared: Iterable[str] = SHARED_PARAMETERS) -> list[str]:
    """Fail at once on a papermill parameter (``-p``, ``-y``, ``-f``) that the notebook does not declare.

    Every notebook (00-12) calls ``check_parameters(globals(), "<name>")`` first in its third cell,
    before any heavy work. The notebook's parameters are the annotated names of its parameters cell
    (``NAME: type = value`` lands in ``__annotations__``; papermill's injected cell assigns without
    annotations). The error names each unknown parameter with the closest valid names. Returns the
    injected names (empty when the notebook runs as written).
    """
    declared = list(namespace.get("__annotations__", {}))
    if not declared:
        raise ParameterError(f"{notebook}: no typed parameters found; run the parameters cell first")
    allowed = set(declared) | set(shared)
    injected = injected_parameters(namespace)
    unknown = [name for name in injected if name not in allowed and not name.startswith("PAPERMILL_")]
    if unknown:
        lines = []
        for name in unknown:
            close = difflib.get_close_matches(name, declared, n=3, cutoff=0.5) or \
                difflib.get_close_matches(name.upper(), declared, n=3, cutoff=0.5)
            hint = f"did you mean {' or '.join(close)}?" if close else "no parameter has a similar name."
            lines.append(f"{name!r} is not a parameter of {notebook}; {hint}")
        raise ParameterError(" ".join(lines) + f" Its parameters: {', '.join(declared)}"
                             " (papermill --help-notebook lists them).")
    return injected


def save_config(cfg: Any) -> Path:
    """Write the full configuration to ``<cfg.run_dir>/config.json`` (notebook ``00_setup_and_data``).

    The notebooks show only the sections they use (:func:`vthcl_lib.config.config_table`); this
    file keeps the rest. ``cfg`` is a :class:`vthcl_lib.config.Config` (anything with ``run_dir``
    and ``to_dict()``).
    """
    return write_json_atomic(Path(cfg.run_dir) / "config.json", cfg.to_dict())
