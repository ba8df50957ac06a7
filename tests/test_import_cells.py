"""The first cell of every notebook imports only what it needs now (issue 15.6: under 3 s).

seaborn, matplotlib (pyplot included) and ipywidgets cost seconds to import and are needed only by
some later cells: ``vthcl_lib.plots`` imports matplotlib and seaborn at the first plot (and applies
the theme there), and the explorers import ipywidgets in their own cell. These tests check that
mechanism, not a time: in a fresh interpreter the import cells' imports leave those modules out of
``sys.modules``, and the library's modules do not pull pandas either (only the notebooks import it).
``tools/time_import_cells.py`` measures the times themselves.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
LAZY = ("seaborn", "matplotlib", "matplotlib.pyplot", "ipywidgets")  # imported at first use only
LIBRARY_LAZY = LAZY + ("pandas", "IPython")  # nor does `import vthcl_lib.<x>` pull these (torch pulls tqdm)


def import_cell(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return next("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def imports_of(source: str) -> list[str]:
    """The cell's import statements, as code a plain interpreter can run (magics are not imports)."""
    from IPython.core.inputtransformer2 import TransformerManager

    tree = ast.parse(TransformerManager().transform_cell(source))
    return [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]


def modules_after(statements: list[str]) -> set[str]:
    """``sys.modules`` of a fresh interpreter (run in the notebooks' folder) after ``statements``."""
    code = "\n".join(statements + ["import json, sys", "print(json.dumps(sorted(sys.modules)))"])
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "notebooks", capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_the_import_cell_leaves_plotting_and_widgets_to_later_cells(path):
    source = import_cell(path)
    assert "%matplotlib" not in source and "set_theme" not in source, (
        f"{path.name}: the import cell sets up matplotlib; vthcl_lib.plots does that at the first plot")
    heavy = [s for s in imports_of(source) if any(s.split()[1].split(".")[0] == m for m in LAZY)]
    assert not heavy, f"{path.name}: the import cell imports {heavy}; import them where they are used"


def test_running_every_import_cell_imports_no_plotting_or_widget_module():
    statements = sorted({s for path in NOTEBOOKS for s in imports_of(import_cell(path))})
    loaded = modules_after(statements)
    assert "torch" in loaded and "vthcl_lib.plots" in loaded  # the statements did run
    pulled = [m for m in LAZY if m in loaded]
    assert not pulled, f"the notebooks' import cells pull {pulled} in: {statements}"


def test_the_library_modules_of_the_import_cells_pull_no_pandas_or_ipython():
    statements = sorted({s for path in NOTEBOOKS for s in imports_of(import_cell(path))
                         if s.startswith(("from vthcl_lib", "import vthcl_lib"))})
    loaded = modules_after(statements)
    pulled = [m for m in LIBRARY_LAZY if m in loaded]
    assert not pulled, f"importing {statements} pulls {pulled} in"


def test_the_first_plot_imports_seaborn_and_applies_the_theme_once():
    code = ("import sys\nfrom vthcl_lib import plots\nassert 'seaborn' not in sys.modules\n"
            "plots.plot_bar({'a': 1.0}, xlabel='x')\nimport matplotlib\n"
            "print(matplotlib.rcParams['axes.grid'], matplotlib.rcParams['axes.facecolor'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    grid, face = done.stdout.split()
    assert grid == "True" and face == "white"  # seaborn's "whitegrid", as the import cells set it


def test_the_pathway_colours_are_seaborns_deep_palette():
    import seaborn as sns

    from vthcl_lib import plots

    deep = sns.color_palette("deep")
    assert plots.SLOW_COLOR == deep[2] and plots.FAST_COLOR == deep[0]


@pytest.mark.parametrize("mplbackend", [None, "Agg"])
def test_in_a_kernel_the_first_plot_shows_as_an_image(mplbackend):
    # what `%matplotlib inline` in the import cells did, now done by the first plot
    import os

    from jupyter_client.manager import start_new_kernel

    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    if mplbackend:
        env["MPLBACKEND"] = mplbackend  # a CI machine's setting must not turn the figures into text
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(ROOT / "notebooks"), env=env,
                              stderr=subprocess.DEVNULL)
    outputs = []
    try:
        reply = kc.execute_interactive(
            "from vthcl_lib import plots\nplots.plot_bar({'a': 1.0, 'b': 2.0}, xlabel='seconds')",
            timeout=120, output_hook=outputs.append)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    results = [m["content"]["data"] for m in outputs if m["msg_type"] == "execute_result"]
    assert len(results) == 1 and "image/png" in results[0], results
