"""Plotting functions of the pre-training notebooks (02 encoders, 03 InfoNCE, 04 memory bank)."""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch
from ipywidgets import FloatSlider, fixed
from matplotlib.figure import Figure

from vthcl_lib import contrastive, models, plots
from vthcl_lib.widgets import show


def _tiny_costs():
    rows = []
    for pathway, frames in (("slow", 2), ("fast", 4)):
        enc = models.build_encoder(18, pathway, base_width=4, fast_ratio=0.5)
        for row in models.stage_costs(enc, (1, 3, frames, 16, 16)):
            rows.append({**row, "setup": "tiny", "pathway": pathway})
    return rows


def test_stage_flops_one_panel_per_setup_and_bars_match_the_table():
    rows = _tiny_costs()
    rows += [{**r, "setup": "other"} for r in rows]
    fig = plots.plot_stage_flops(pd.DataFrame(rows), title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    heights = sorted(p.get_height() for p in fig.axes[0].patches if p.get_height() > 0)
    expected = sorted(r["flops"] / 1e9 for r in rows[: len(rows) // 2])
    np.testing.assert_allclose(heights, expected, rtol=1e-9)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["stem", "res2", "res3", "res4", "res5"]


def test_softmax_weights_title_reports_the_info_nce_loss():
    gen = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(1, 16, generator=gen, dtype=torch.float64), dim=1)
    pos = torch.nn.functional.normalize(q + torch.randn(1, 16, generator=gen, dtype=torch.float64), dim=1)
    neg = torch.nn.functional.normalize(torch.randn(30, 16, generator=gen, dtype=torch.float64), dim=1)
    loss = float(contrastive.info_nce(q, pos, neg, 0.1))
    fig = plots.plot_softmax_weights(float(q[0] @ pos[0]), (q @ neg.T)[0].numpy(), 0.1, top_k=3)
    assert f"loss {loss:.3f}" in fig.axes[0].get_title()
    heights = [p.get_height() for p in fig.axes[0].containers[0]]  # the bars (the shaded top-k span is a patch too)
    assert len(heights) == 30 and heights == sorted(heights, reverse=True)  # hardest first


def test_softmax_weights_survive_tiny_temperatures():
    fig = plots.plot_softmax_weights(0.2, np.linspace(-0.5, 0.9, 50), 0.001)  # exp(900) would overflow
    assert "nan" not in fig.axes[0].get_title() and "inf" not in fig.axes[0].get_title()


def test_temperature_widget_static_and_interactive(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    show(plots.plot_softmax_weights, False, temperature=FloatSlider(value=0.07, min=0.01, max=1.0, step=0.01),
         pos_sim=fixed(0.5), neg_sims=fixed(np.zeros(8)), top_k=fixed(2))
    assert len(shown) == 1 and isinstance(shown[0], Figure) and "T = 0.07" in shown[0].axes[0].get_title()
    show(plots.plot_softmax_weights, True, temperature=FloatSlider(value=0.07, min=0.01, max=1.0),
         pos_sim=fixed(0.5), neg_sims=fixed(np.zeros(8)))
    widgets = [w for w in shown if not isinstance(w, Figure)]
    assert len(widgets) == 1 and widgets[0].children[0].description == "temperature"


def test_temperature_sweep_draws_both_curves_and_the_marker():
    t = np.geomspace(0.02, 1, 5)
    fig = plots.plot_temperature_sweep(t, np.arange(5.0), np.linspace(0.9, 0.1, 5), marked=0.07)
    loss_ax, share_ax = fig.axes
    np.testing.assert_allclose(loss_ax.lines[0].get_ydata(), np.arange(5.0))
    np.testing.assert_allclose(share_ax.lines[0].get_ydata(), 100 * np.linspace(0.9, 0.1, 5))
    assert loss_ax.get_xscale() == "log" and len(loss_ax.lines) == 2  # curve + T marker


def test_bank_staleness_one_line_per_momentum():
    fig = plots.plot_bank_staleness({0.0: [0.1, 0.9, 0.95], 0.5: [0.1, 0.6, 0.9]}, title="x")
    lines = fig.axes[0].lines
    assert len(lines) == 2 and [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["m = 0.0", "m = 0.5"]
    np.testing.assert_allclose(lines[1].get_ydata(), [0.1, 0.6, 0.9])


@pytest.mark.parametrize("spread", [1, 1000])
def test_negatives_cost_plot(spread):
    rows = [{"batch": b, "negatives": k, "mode": mode,
             "seconds": 1e-3 * k * (b if mode == "per_query" else 1) / spread ** 0.5,
             "bytes_gathered": k * 4 * 8 * (b if mode == "per_query" else 1)}
            for b in (2, 4) for k in (16, 64) for mode in ("shared", "per_query")]
    fig = plots.plot_negatives_cost(rows, title="t")
    assert len(fig.axes) == 2 and all(ax.get_yscale() == "log" for ax in fig.axes)
    assert len(fig.axes[0].lines) >= 4  # two modes x two batch sizes
    fig.savefig(io.BytesIO(), format="png")  # the tick formatters render


def test_negatives_cost_plot_with_the_library_rows():
    rows = [{"batch": 2, "negatives": k, "mode": mode, **contrastive.negatives_cost(2, k, 8, 64, mode, repeats=1)}
            for k in (4, 16) for mode in ("shared", "per_query")]
    fig = plots.plot_negatives_cost(rows)
    mb = sorted(y for line in fig.axes[1].lines for y in line.get_ydata() if np.isfinite(y))
    assert math.isclose(mb[-1], 2 * 16 * 8 * 4 / 1e6)  # per-query: B x N x d float32
