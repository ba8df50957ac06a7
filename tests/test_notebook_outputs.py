"""What a student sees (issue 15): code lines fit the cell, outputs are clean, the ci note is there.

The output rules themselves run on every executed cell under nbval (``notebooks/conftest.py``);
here they are tested on hand-made outputs, and the notebooks' sources are checked directly.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from notebook_outputs import MAX_LINES, output_problems
from vthcl_lib import environment, plots

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def code_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_every_code_line_fits_in_100_characters(path):
    long = [(i, len(line)) for i, src in enumerate(code_cells(path)) for line in src.splitlines()
            if len(line) > 100]
    assert not long, f"{path.name}: (code cell, width) over 100 characters: {long}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_each_notebook_logs_to_stdout_and_prints_its_wall_time(path):
    cells = code_cells(path)
    assert "log_to_stdout()" in cells[0], f"{path.name}: the import cell should call log_to_stdout()"
    assert "report_elapsed(cfg.preset)" in cells[-1], f"{path.name}: the last cell should report its time"


def stream(text: str, name: str = "stdout") -> dict:
    return {"output_type": "stream", "name": name, "text": text}


def result(text: str) -> dict:
    return {"output_type": "execute_result", "data": {"text/plain": text}, "metadata": {}, "execution_count": 1}


def test_clean_outputs_pass():
    outputs = [stream("epoch 1: loss 4.2135\ncaching frames: 12/12 (100%)\n"),
               stream("caching frames: 3/12 (25%) 4.1 it/s\n"),
               stream("bad video 'x.mp4': cannot decode\n", "stderr"),
               stream("/x/engine.py:12: UserWarning: fewer videos than the batch\n  warnings.warn(\n",
                      "stderr"),
               result("{'linear': 12.5, 'knn': 6.2}"),
               {"output_type": "display_data", "data": {"image/png": "..."}, "metadata": {}}]
    assert output_problems(outputs) == []


@pytest.mark.parametrize("output, expected", [
    (stream("caching frames: 0/0\n"), "empty progress bar"),
    (stream("\n".join(f"line {i}" for i in range(MAX_LINES + 1))), "lines of output"),
    (result("-0.21516993641853333"), "unrounded number"),
    (stream("gap -0.21516993641853333 points\n"), "unrounded number"),
    (result("PosixPath('../runs/ci/05/metrics.json')"), "stray return value"),
    (result("<Logger vthcl_lib (INFO)>"), "stray return value"),
    (result("[Text(0.5, 0, 'epoch'), Text(0, 0.5, 'learning rate'), None]"), "stray return value"),
    (stream("| init | top1 |\n|---|---|\n| random | 6.2 |\n"), "Markdown table printed as text"),
    (stream("resuming 'last.pt' after epoch 2 of 2\n", "stderr"), "information on stderr"),
    (stream("data loader: clip augmentation, shared memory up to 3.1 MiB\n", "stderr"),
     "information on stderr"),
    (stream("caching frames: 3/12 (25%) 4.1 it/s, elapsed 0:01, ETA 0:02\n", "stderr"),
     "progress on stderr"),
    (stream("bad video 'x.mp4': cannot decode\nepoch 1/2: 4/8 (50%) 1.0 step/s\n", "stderr"),
     "progress on stderr"),
    (stream("caching frames:  50%|#####     | 5/10 [00:01<00:01]\r", "stderr"), "progress on stderr"),
])
def test_each_problem_is_named(output, expected):
    problems = output_problems([output])
    assert len(problems) == 1 and expected in problems[0], problems


def test_versions_and_short_floats_are_not_unrounded():
    assert output_problems([stream("torch 2.13.0, lr 0.0125, loss 1.23e-03, seed 20260101\n")]) == []


def test_preset_note_only_at_ci():
    assert "code paths" in plots.preset_note("ci") and "README" in plots.preset_note("ci")
    assert plots.preset_note("demo") is None and plots.preset_note("paper_r18") is None

    class Cfg:
        preset = "ci"

    assert plots.preset_note(Cfg()) == plots.CI_NOTE
    with pytest.raises(TypeError, match="preset name"):
        plots.preset_note(3)


def test_log_to_stdout_splits_information_from_warnings(capsys):
    assert environment.log_to_stdout() is None  # the import cell ends with it: no stray <Logger>
    environment.log_to_stdout()  # twice: still one line per record
    logger = logging.getLogger("vthcl_lib")
    try:
        logging.getLogger("vthcl_lib.engine").info("resuming 'x' after epoch 2 of 2")
        logging.getLogger("vthcl_lib.datasets").warning("bad video 'y.mp4'")
        out, err = capsys.readouterr()
        assert out == "resuming 'x' after epoch 2 of 2\n"
        assert err == "bad video 'y.mp4'\n"
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def test_report_elapsed_prints_whole_seconds(capsys):
    assert environment.report_elapsed("ci") is None
    line = capsys.readouterr().out
    assert line.startswith("this notebook ran in ") and line.endswith(" s at the ci preset\n")
    seconds = line.split("ran in ")[1].split(" s")[0]
    assert seconds.isdigit() and environment.elapsed() >= int(seconds) - 1
