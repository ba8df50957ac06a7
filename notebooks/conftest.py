"""Checks on what each executed cell shows, applied while nbval runs the notebooks (issue 15.4).

``make test`` executes every notebook at ``ci`` with nbval; after each cell this hook fails the
cell when its outputs break a rule of ``tests/notebook_outputs.py`` (empty progress bars, outputs
over 60 lines, unrounded numbers, stray return values, raw Markdown tables, information on stderr).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from notebook_outputs import output_problems  # noqa: E402


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield  # the cell ran (an error in it has already failed the test)
    outputs = getattr(item, "test_outputs", None)
    if outputs:
        problems = output_problems([dict(out) for out in outputs])
        if problems:
            source = getattr(getattr(item, "cell", None), "source", "")
            pytest.fail(f"{item.name}: " + "; ".join(problems) + f"\n--- cell source:\n{source}",
                        pytrace=False)
    return result
