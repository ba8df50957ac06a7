"""tools/screenshot_notebooks.py: which cell it scrolls to, how it shrinks a PNG, how it refuses.

The browser part itself runs when the screenshots are made (README, *Screenshots*); here are the
pieces that decide what a screenshot shows and the messages a user gets.
"""
from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _tool():
    spec = importlib.util.spec_from_file_location("screenshot_notebooks", ROOT / "tools" / "screenshot_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _tool()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_each_notebook_tags_one_code_cell_with_outputs_as_its_key_result(path):
    cells = json.loads(path.read_text())["cells"]
    tagged = [c for c in cells if tool.TAG in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged {tool.TAG!r}; expected one"
    assert tagged[0]["cell_type"] == "code"
    assert tool.tagged_cell({"cells": cells}, path.stem) == cells.index(tagged[0])


def _cell(cell_id: str, tags=()) -> dict:
    return {"cell_type": "code", "id": cell_id, "metadata": {"tags": list(tags)}, "source": ""}


def test_an_executed_copy_without_the_tag_falls_back_to_the_course_notebook():
    name = "05_hierarchical_pretraining"
    source = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
    target = tool.tagged_cell({"cells": source}, name)
    untagged = [dict(c, metadata={}) for c in source]
    assert tool.tagged_cell({"cells": untagged}, name) == target  # by cell id
    # no ids (an older nbformat), and papermill's injected cell after the parameters cell
    parameters = tool._parameters_index(source)
    plain = [{k: v for k, v in c.items() if k not in ("id", "metadata")} | {"metadata": {}} for c in source]
    plain.insert(parameters + 1, {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}})
    assert tool.tagged_cell({"cells": plain}, name) == target + 1


def test_a_notebook_with_no_tagged_cell_is_named():
    with pytest.raises(tool.ToolError, match="99_extra: no cell is tagged 'screenshot'"):
        tool.tagged_cell({"cells": [_cell("a"), _cell("b")]}, "99_extra")


def test_shrink_png_keeps_size_under_the_limit_and_the_picture_recognisable():
    from PIL import Image

    rng = np.random.default_rng(0)
    noisy = (rng.random((400, 600, 3)) * 255).astype(np.uint8)  # incompressible: forces a downscale
    raw = io.BytesIO()
    Image.fromarray(noisy).save(raw, format="PNG")
    png, scale = tool.shrink_png(raw.getvalue(), 150_000)
    assert len(png) <= 150_000 and scale < 1.0
    flat = np.zeros((400, 600, 3), np.uint8)
    flat[:, 300:] = (76, 114, 176)
    raw = io.BytesIO()
    Image.fromarray(flat).save(raw, format="PNG")
    png, scale = tool.shrink_png(raw.getvalue(), 150_000)
    back = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert scale == 1.0 and back.shape == flat.shape and np.array_equal(back, flat)


def test_a_missing_folder_or_an_empty_one_is_one_clear_line(tmp_path, capsys):
    assert tool.main(["--executed", str(tmp_path / "nowhere"), "--preset", "ci"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --executed") and "no such folder" in err and "Traceback" not in err
    assert tool.main(["--executed", str(tmp_path), "--preset", "demo", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "missing from" in err and "error: none of the notebooks" in err
    assert tool.main(["--executed", str(tmp_path), "--preset", "ci", "--only", "77"]) == 2
    assert "no such notebook" in capsys.readouterr().err
