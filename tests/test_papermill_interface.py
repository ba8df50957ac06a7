"""The papermill interface: every parameter listed by --help-notebook, unknown names stopped at once.

Covers vthcl_lib.runs.check_parameters / injected_parameters / save_config and the parameters cells
of notebooks 00-12 (issue 12, deliverable 1).
"""
from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import yaml

from vthcl_lib.config import resolve_config
from vthcl_lib.engine import seed_run
from vthcl_lib.environment import seed_everything
from vthcl_lib.runs import (
    PAPERMILL_MARKER,
    SHARED_PARAMETERS,
    ParameterError,
    check_parameters,
    injected_parameters,
    save_config,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PAPERMILL = str(Path(sys.executable).with_name("papermill"))


def _cells(notebook: Path) -> tuple[str, str]:
    """The source of the parameters cell and of the cell after it (cell 3)."""
    cells = json.loads(notebook.read_text())["cells"]
    index = next(i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    return "".join(cells[index]["source"]), "".join(cells[index + 1]["source"])


def declared(notebook: Path) -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) of each parameter, read with ast and tokenize as Python sees them."""
    source = _cells(notebook)[0]
    comments = {tok.start[0]: tok.string[1:].strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    out = []
    for node in ast.parse(source).body:
        assert isinstance(node, ast.AnnAssign), f"{notebook.name}: every parameter is typed (NAME: type = value)"
        ann = node.annotation
        kind = ann.value if isinstance(ann, ast.Constant) else ast.unparse(ann)
        default = ast.get_source_segment(source, node.value)
        out.append((node.target.id, kind, default, comments.get(node.end_lineno, "")))
    return out


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PAPERMILL, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


# One subprocess calls papermill's own command-line entry point (what the `papermill` executable
# runs) once per notebook: importing papermill costs seconds, thirteen times over on a loaded CPU.
HELP_SCRIPT = """
import contextlib, io, json, sys
from papermill.__main__ import papermill
out = {}
for path in sys.argv[1:]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        try:
            papermill.main(["--help-notebook", path], prog_name="papermill")
            status = 0
        except SystemExit as exit:
            status = exit.code
    out[path] = [status, buffer.getvalue()]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def help_listings() -> dict[str, tuple[int, str]]:
    """`papermill --help-notebook NOTEBOOK` of every notebook: (exit status, what it printed)."""
    proc = subprocess.run([sys.executable, "-c", HELP_SCRIPT, *map(str, NOTEBOOKS)], cwd=ROOT, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {Path(path).stem: tuple(result) for path, result in json.loads(proc.stdout).items()}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_help_notebook_lists_every_parameter_with_type_default_and_help(notebook, help_listings):
    expected = declared(notebook)
    assert {"PRESET", "DATA_ROOT", "RUN_DIR", "SEED", "DEVICE"} <= {name for name, *_ in expected}
    status, stdout = help_listings[notebook.stem]
    assert status == 0, stdout[-2000:]
    lines = stdout.splitlines()
    listed = [line for line in lines if line.startswith("  ") and not line.startswith("   ")]
    assert len(listed) == len(expected), f"papermill lists {listed}, the cell has {[e[0] for e in expected]}"
    for (name, kind, default, help_text), line in zip(expected, listed):
        head = f"  {name}: {kind} (default {default})"
        assert line.startswith(head), f"{notebook.name}: papermill shows {line!r}, expected {head!r}"
        shown = line[len(head):].strip() or lines[lines.index(line) + 1].strip()
        assert help_text and shown == help_text, f"{notebook.name} {name}: help {shown!r}, expected {help_text!r}"
        assert "Unknown type" not in line


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_cell_three_checks_the_parameters_first(notebook):
    cell3 = _cells(notebook)[1]
    calls = [n for n in ast.walk(ast.parse(cell3)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    names = [c.func.id for c in calls]
    assert names.index("check_parameters") < names.index("resolve_config"), "check before any work"
    check = calls[names.index("check_parameters")]
    assert ast.literal_eval(check.args[1]) == notebook.stem
    assert "config_table" in names and "save_config" in names and "print(cfg)" not in cell3


def test_shared_parameter_files_name_only_parameters_or_shared_ones():
    every = set.intersection(*({name for name, *_ in declared(nb)} for nb in NOTEBOOKS))
    shared_keys = set()
    for path in sorted((ROOT / "notebooks" / "params").glob("*.yaml")):
        shared_keys |= set(yaml.safe_load(path.read_text()))
    assert shared_keys - every == set(SHARED_PARAMETERS), "SHARED_PARAMETERS: the keys some notebooks lack"
    for name in SHARED_PARAMETERS:  # where a notebook has it, it is a real parameter
        assert any(name in {n for n, *_ in declared(nb)} for nb in NOTEBOOKS)


def _namespace(injected: str | None, **extra) -> dict:
    history = ["", "import os", f"{PAPERMILL_MARKER}: override with papermill\nALPHA: 'Optional[int]' = None\n"]
    if injected is not None:
        history.append(f"{PAPERMILL_MARKER}\n{injected}")
    return {"__annotations__": {"PRESET": str, "ALPHA": "Optional[int]", "SEED": int, "BATCH_SIZE": "Optional[int]"},
            "_ih": history, "PRESET": "ci", "ALPHA": None, "SEED": 0, **extra}


def test_check_parameters_accepts_declared_shared_and_papermill_names():
    assert check_parameters(_namespace(None)) == []
    injected = 'PRESET = "ci"\nALPHA = 4\nINTERACTIVE = False\nPAPERMILL_INPUT_PATH = "in.ipynb"\n'
    assert check_parameters(_namespace(injected)) == ["PRESET", "ALPHA", "INTERACTIVE", "PAPERMILL_INPUT_PATH"]
    # an UPPER_CASE variable of the notebook's own code is not a parameter papermill passed
    assert check_parameters(_namespace('SEED = 1\n', B=8, N=16, T=0.1)) == ["SEED"]


def test_check_parameters_names_the_unknown_one_and_the_closest():
    with pytest.raises(ParameterError) as err:
        check_parameters(_namespace("ALHPA = 4\nSEED = 1\n"), "01_tempo_sampling")
    message = str(err.value)
    assert "'ALHPA' is not a parameter of 01_tempo_sampling; did you mean ALPHA?" in message
    assert "Its parameters: PRESET, ALPHA, SEED, BATCH_SIZE" in message
    assert err.value._render_traceback_() == [f"ParameterError: {message}"]  # one line in the notebook
    with pytest.raises(ParameterError, match="'batch_size' .* did you mean BATCH_SIZE"):
        check_parameters(_namespace("batch_size = 4\n"))
    with pytest.raises(ParameterError, match="'ZZZ' .* no parameter has a similar name"):
        check_parameters(_namespace("ZZZ = [1, 2]\n"))
    with pytest.raises(ParameterError, match="'SEEDS'.*'EPOHCS'"):  # every unknown name at once
        check_parameters(_namespace("SEEDS = [0, 1]\nEPOHCS = 3\n"))
    with pytest.raises(ParameterError, match="run the parameters cell first"):
        check_parameters({"_ih": []}, "05_hierarchical_pretraining")


def test_injected_parameters_without_an_input_history():
    """Plain Python (no IPython history): UPPER_CASE plain values the parameters cell did not annotate."""
    namespace = {"__annotations__": {"SEED": int}, "SEED": 1, "ALHPA": 4, "ABLATION": os, "Path": Path,
                 "MAX": max}
    assert injected_parameters(namespace) == ["ALHPA"]
    # papermill's black-formatted cell over several lines still parses
    history = [f"{PAPERMILL_MARKER}\nSEEDS = [\n    0,\n    1,\n]\nINITS = ['random']\n"]
    assert injected_parameters({"_ih": history}) == ["SEEDS", "INITS"]


def _exec_cells(notebook: Path, workdir: Path, injected: str = "") -> dict:
    """Run the parameters cell, papermill's injection and cell 3 of a notebook in a plain namespace."""
    params, cell3 = _cells(notebook)
    namespace = {"os": os, "Path": Path, "resolve_config": resolve_config, "seed_everything": seed_everything}
    exec(params, namespace)  # noqa: S102 - the notebook's own cells
    exec(injected, namespace)  # noqa: S102
    exec(cell3, namespace)  # noqa: S102
    return namespace


def test_notebook_05_pretrains_where_06_to_09_look(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    monkeypatch.setenv("VTHCL_PRESET", "ci")
    for seed in (0, 1):
        nb05 = _exec_cells(ROOT / "notebooks" / "05_hierarchical_pretraining.ipynb", tmp_path, f"SEED = {seed}\n")
        cfg05 = nb05["cfg"]
        assert cfg05.run_dir == str(tmp_path / "runs" / "ci" / "pretrain" / f"seed{seed}")
        saved = json.loads((Path(cfg05.run_dir) / "config.json").read_text())
        assert saved == json.loads(json.dumps(cfg05.to_dict()))  # the full config, beside the run
        for name in ("06_action_recognition", "07_linear_probe_and_retrieval", "08_action_detection",
                     "09_action_anticipation"):
            ns = _exec_cells(ROOT / "notebooks" / f"{name}.ipynb", tmp_path)
            assert seed_run(ns["cfg"], seed, ns["pretrain_root"]).run_dir == cfg05.run_dir, name
    with pytest.raises(ParameterError, match="did you mean ALPHA"):
        _exec_cells(ROOT / "notebooks" / "05_hierarchical_pretraining.ipynb", tmp_path, "ALHPA = 4\n")


def test_save_config_writes_the_whole_config(tmp_path):
    cfg = resolve_config("ci", run_dir=str(tmp_path / "run"))
    path = save_config(cfg)
    assert path == tmp_path / "run" / "config.json"
    data = json.loads(path.read_text())
    assert data["data"]["window"] == cfg.data.window and data["anticipation"]["tau_o"] == cfg.anticipation.tau_o
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp file left behind


def test_papermill_stops_a_misspelt_parameter_at_once(tmp_path):
    out = _run("--cwd", "notebooks", "notebooks/01_tempo_sampling.ipynb", str(tmp_path / "out.ipynb"),
               "-f", "notebooks/params/ci.yaml", "-p", "ALHPA", "4", "-p", "RUN_DIR", str(tmp_path / "run"))
    assert out.returncode != 0
    assert "ParameterError: 'ALHPA' is not a parameter of 01_tempo_sampling; did you mean ALPHA?" in out.stderr
    executed = json.loads((tmp_path / "out.ipynb").read_text())["cells"]
    ran = [c for c in executed if c["cell_type"] == "code" and c.get("execution_count")]
    assert len(ran) == 4  # imports, parameters, papermill's injection, the check: nothing after it ran
    assert not (tmp_path / "run").exists()


def test_papermill_stops_an_unknown_key_of_a_parameters_file(tmp_path):
    params = tmp_path / "typo.yaml"
    params.write_text("PRESET: ci\nDEVICE: cpu\nINTERACTIVE: false\nWINDOWS: 16\n")
    out = _run("--cwd", "notebooks", "notebooks/01_tempo_sampling.ipynb", str(tmp_path / "out.ipynb"),
               "-f", str(params), "-p", "RUN_DIR", str(tmp_path / "run"))
    assert out.returncode != 0
    assert "'WINDOWS' is not a parameter of 01_tempo_sampling; did you mean WINDOW?" in out.stderr


def test_papermill_runs_with_a_shared_parameters_file(tmp_path):
    """ci.yaml sets INTERACTIVE, which notebook 12 does not have: the shared files still work everywhere."""
    runs = tmp_path / "runs"
    runs.mkdir()
    out = _run("--cwd", "notebooks", "notebooks/12_results_report.ipynb", str(tmp_path / "out.ipynb"),
               "-f", "notebooks/params/ci.yaml", "-p", "RUN_DIR", str(tmp_path / "report"),
               "-p", "RUNS_ROOT", str(runs))
    assert out.returncode == 0, out.stderr[-3000:]
    saved = json.loads((tmp_path / "report" / "config.json").read_text())
    assert saved["preset"] == "ci" and saved["run_dir"] == str(tmp_path / "report")
