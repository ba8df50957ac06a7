"""House rules a green run would not show: dependencies in sync, notebooks stripped and well-formed."""
from __future__ import annotations

import json
import re
import statistics
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
DESIGN_NAMES = ["torch", "jupyterlab", "ipywidgets", "decord", "seaborn", "papermill", "nbval", "pytest", "av"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_and_pyproject_name_the_same_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_names = {_name(r) for r in project["dependencies"]} | {_name(r) for r in project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    conda, pip_section = [], []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section = dep["pip"]
        else:
            conda.append(_name(dep))
    pip_in_env = [_name(d) for d in pip_section if not d.startswith("-")]
    env_names = (set(conda) | set(pip_in_env)) - {"python", "pip"}
    assert env_names == pip_names
    assert "torch" in pip_in_env and "decord" in pip_in_env  # through pip, as the conventions say
    assert "-e ." in pip_section
    assert set(DESIGN_NAMES) <= env_names
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert re.fullmatch(r"python=3\.\d+", python)  # pinned to a minor version


def test_cpu_install_path_pins_torch():
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_there_are_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS][:2] == ["00", "01"]


def _check_stripped_with_header(path, title: str) -> tuple[list, list, list[str]]:
    """Stripped, no widget state, the title cell, a commented parameters cell; returns cells, code cells, params."""
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit notebooks stripped"
    assert "widgets" not in nb["metadata"], "no saved widget state"
    first = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown" and first.startswith(title) and "\n>" in first
    assert "parameters" in code[1].get("metadata", {}).get("tags", []), "the second code cell is tagged parameters"
    params = "".join(code[1]["source"]).splitlines()
    assigned = [line for line in params if re.match(r"^[A-Z_]+\s*:", line)]
    assert {line.split(":")[0].strip() for line in assigned} >= {"PRESET", "DATA_ROOT", "RUN_DIR", "SEED", "DEVICE"}
    assert all("#" in line for line in assigned), "every parameter has a comment"
    return cells, code, params


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped_and_well_formed(path):
    cells, code, _ = _check_stripped_with_header(path, f"# {path.stem[:2]} ·")
    assert "resolve_config" in "".join(code[2]["source"])
    headings = [line for c in cells if c["cell_type"] == "markdown" for line in "".join(c["source"]).splitlines()]
    assert "## Summary" in headings and "## Exercises" in headings
    lengths = [len([ln for ln in "".join(c["source"]).splitlines() if ln.strip()]) for c in code]
    assert statistics.median(lengths) < 10, f"median code cell is {statistics.median(lengths)} lines"
    source = "\n".join("".join(c["source"]) for c in code)
    assert "sys.path" not in source and "import *" not in source and "!pip" not in source
    assert "save_metrics(" in source, "every notebook writes RUN_DIR/metrics.json"


SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("[0-9][0-9]_*_solutions.ipynb"))


def _exercises(path: Path) -> int:
    """How many numbered exercises follow a course notebook's ``## Exercises`` heading."""
    text = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown")
    section = text.split("## Exercises", 1)[1]
    return len(re.findall(r"^\d+\. ", section, flags=re.M))


def test_every_course_notebook_has_a_solutions_notebook():
    assert [p.name.replace("_solutions", "") for p in SOLUTIONS] == [p.name for p in NOTEBOOKS]
    assert sum(_exercises(p) for p in NOTEBOOKS) >= 40  # about 45 exercises in all


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solutions_notebook_is_stripped_and_answers_every_exercise(path):
    cells, code, params = _check_stripped_with_header(path, f"# {path.stem[:2]} · Solutions")
    assert 'os.environ.get("VTHCL_PRESET", "demo")' in params[1]
    assert "resolve_config" in "".join(code[2]["source"]) and 'base_dir="../.."' in "".join(code[2]["source"])
    # one section per exercise of the course notebook, in order, each with code and a stated answer
    sections = re.split(r"^## Exercise (\d+)\s*$", "\n".join(
        ("\x00CODE\x00" if c["cell_type"] == "code" else "") + "".join(c["source"]) for c in cells), flags=re.M)
    numbers = [int(n) for n in sections[1::2]]
    course = path.parent.parent / path.name.replace("_solutions", "")
    assert numbers == list(range(1, _exercises(course) + 1)), f"{path.name} answers exercises {numbers}"
    for n, body in zip(numbers, sections[2::2]):
        assert "\x00CODE\x00" in body, f"exercise {n} has no code"
        assert "**Answer.**" in body, f"exercise {n} has no stated answer"
    lines = [ln for c in code for ln in "".join(c["source"]).splitlines()]
    assert max(map(len, lines)) <= 100, "code lines at most 100 characters"
    lengths = [len([ln for ln in "".join(c["source"]).splitlines() if ln.strip()]) for c in code]
    assert statistics.median(lengths) < 10, f"median code cell is {statistics.median(lengths)} lines"
    source = "\n".join("".join(c["source"]) for c in code)
    assert "sys.path" not in source and "import *" not in source and "!pip" not in source
