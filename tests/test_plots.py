"""Pure plotting functions and the headless-safe widget wrapper."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ipywidgets import IntSlider, fixed
from matplotlib.figure import Figure

from vthcl_lib import plots
from vthcl_lib.tempo import sample_tempo_indices
from vthcl_lib.widgets import default_value, show


def _points(ax):
    return [np.asarray(c.get_offsets()) for c in ax.collections if len(c.get_offsets())]


def test_tempo_indices_plot_marks_exactly_the_sampled_frames():
    fig = plots.plot_tempo_indices(alpha=4, tau=8, window=32, start=10, num_frames=80)
    assert isinstance(fig, Figure)
    video, fast, slow = _points(fig.axes[0])
    ref_slow, ref_fast = sample_tempo_indices(80, window=32, tau=8, alpha=4, start=10)
    assert len(video) == 80
    np.testing.assert_array_equal(fast[:, 0], ref_fast)
    np.testing.assert_array_equal(slow[:, 0], ref_slow)


def test_invalid_settings_draw_the_error_instead_of_raising():
    fig = plots.plot_tempo_indices(alpha=3, tau=8)
    assert any("divisible by alpha" in t.get_text() for t in fig.axes[0].texts)


def test_frame_and_pair_plots():
    frames = torch.randint(0, 256, (6, 16, 16, 3), dtype=torch.uint8)
    assert len(plots.plot_frames(frames, indices=range(6)).axes) == 6
    fig = plots.plot_tempo_pair(torch.randn(3, 4, 16, 16), torch.randn(3, 8, 16, 16), slow_idx=range(0, 8, 2),
                                fast_idx=range(8))
    images_per_axis = [len(ax.images) for ax in fig.axes]
    assert images_per_axis == [1] * 8 + [1, 0] * 4  # each slow frame under the fast frame it equals


def test_clip_starts_and_class_examples_and_bars():
    fig = plots.plot_clip_starts(250, 64, 10)
    assert len(fig.axes[0].lines) == 10
    fig = plots.plot_class_examples({"a": np.zeros((10, 8, 8, 3), np.uint8), "b": np.ones((12, 8, 8, 3), np.uint8)},
                                    frames_per_row=4)
    assert len(fig.axes) == 8
    fig = plots.plot_bar({"x": 1.0, "y": 3.0}, xlabel="ms")
    widths = sorted(p.get_width() for p in fig.axes[0].patches)
    assert widths == [1.0, 3.0]


def test_show_static_calls_the_function_once_with_defaults(monkeypatch):
    calls, shown = [], []
    monkeypatch.setattr("IPython.display.display", shown.append)

    def plot(alpha, tau, n):
        calls.append((alpha, tau, n))
        return plots.plot_tempo_indices(alpha=alpha, tau=tau, num_frames=n)

    assert show(plot, False, alpha=IntSlider(value=2, min=1, max=4), tau=(8, 1, 16), n=fixed(100)) is None
    assert calls == [(2, 8, 100)]
    assert len(shown) == 1 and isinstance(shown[0], Figure)  # displayed once, by show itself


def test_show_interactive_displays_one_widget_that_redraws(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    show(plots.plot_tempo_indices, True, alpha=IntSlider(value=2, min=1, max=4), num_frames=fixed(64))
    widgets = [w for w in shown if not isinstance(w, Figure)]
    assert len(widgets) == 1
    slider = widgets[0].children[0]
    before = sum(isinstance(w, Figure) for w in shown)
    slider.value = 4  # moving the slider draws the plot again
    assert sum(isinstance(w, Figure) for w in shown) == before + 1


@pytest.mark.parametrize("control, value", [(IntSlider(value=5), 5), ((3, 0, 9), 3), (["a", "b"], "a"), (7, 7)])
def test_default_value(control, value):
    assert default_value(control) == value


def test_pretraining_curves_draw_one_line_per_level():
    history = [{"epoch": e, "res4/acc": 0.1 * e, "res5/acc": 0.2 * e} for e in (1, 2, 3)]
    metrics = {"epochs": history, "levels": ["res4", "res5"], "config": {"train": {"batch_size": 10}},
               "loss_per_level": {"res4": [9.0, 8.0, 7.0], "res5": [8.5, 7.5, 6.0]}}
    fig = plots.plot_pretraining_curves(metrics)
    loss_ax, acc_ax = fig.axes
    assert [list(line.get_ydata()) for line in loss_ax.lines] == [[9.0, 8.0, 7.0], [8.5, 7.5, 6.0]]
    assert len(acc_ax.lines) == 3 and acc_ax.lines[-1].get_ydata()[0] == pytest.approx(0.1)  # chance line at 1/10


def test_bank_health_draws_one_line_per_history_in_each_panel():
    history = [{"epoch": e, "res5/bank_cos": 0.3 * e, "res5/spread": 0.9, "res5/acc": 0.05} for e in (1, 2, 3)]
    fig = plots.plot_bank_health({"seed 0": history, "seed 1": history[:2]}, title="t")
    cos_ax, spread_ax, acc_ax = fig.axes
    assert [list(line.get_ydata()) for line in cos_ax.lines] == [[0.3, 0.6, pytest.approx(0.9)], [0.3, 0.6]]
    assert len(spread_ax.lines) == len(acc_ax.lines) == 2
    with pytest.raises(ValueError, match="res5/spread"):
        plots.plot_bank_health({"old run": [{"epoch": 1, "res5/acc": 0.1, "res5/bank_cos": 0.0}]})
    with pytest.raises(ValueError, match="at least one"):
        plots.plot_bank_health({})


def test_keyframe_boxes_draws_one_rectangle_and_label_per_box():
    frame = np.zeros((40, 60, 3), np.uint8)
    boxes = np.array([[0.1, 0.2, 0.5, 0.6], [0.5, 0.5, 1.0, 1.0]])
    fig = plots.plot_keyframe_boxes(frame, boxes, ["spin", "orbit"], scores=[0.9, 0.25], title="k")
    ax = fig.axes[0]
    rects = [p for p in ax.patches if p.__class__.__name__ == "Rectangle"]
    assert len(rects) == 2
    assert rects[0].get_xy() == pytest.approx((0.1 * 60 - 0.5, 0.2 * 40 - 0.5))
    assert (rects[0].get_width(), rects[0].get_height()) == pytest.approx((24.0, 16.0))
    assert [t.get_text() for t in ax.texts] == ["spin 0.90", "orbit 0.25"]
    with pytest.raises(ValueError, match="one label per box"):
        plots.plot_keyframe_boxes(frame, boxes, ["spin"])


def test_metric_by_init_draws_bar_means_and_seed_dots():
    rows = [{"init": "random", "seed": s, "mAP": v, "noun": 0.1} for s, v in enumerate([0.2, 0.4])]
    rows += [{"init": "vthcl", "seed": s, "mAP": v, "noun": 0.3} for s, v in enumerate([0.5, 0.7])]
    fig = plots.plot_metric_by_init(rows, ["mAP", "noun"])
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches if p.get_height() > 0)
    assert heights == pytest.approx(sorted([30.0, 10.0, 60.0, 30.0]))  # bars at the means, in %
    assert sum(len(c.get_offsets()) for c in ax.collections) == 8  # one dot per (row, metric)
    with pytest.raises(ValueError, match="missing"):
        plots.plot_metric_by_init(rows, ["action_top1"])


def test_icm_overlay_draws_frame_heat_and_box_per_panel():
    frames = np.zeros((4, 16, 16, 3), np.uint8)
    heat = torch.rand(4, 16, 16)
    boxes = np.tile(np.array([[2, 3, 8, 9]], np.float32), (4, 1))
    fig = plots.plot_icm(frames, heat, boxes=boxes, title="icm", max_frames=2)
    *panels, bar = fig.axes
    assert len(panels) == 2 and "ICM" in bar.get_ylabel()  # two frames and one colour bar for both
    for ax in panels:
        assert len(ax.images) == 2 and len(ax.patches) == 1  # the frame, the heat map, the box
    np.testing.assert_allclose(panels[1].images[1].get_array(), heat[3].numpy())  # last frame shown
    assert fig.get_size_inches()[0] >= 6  # one or two frames are drawn large, not ~1.5 inches each
    with pytest.raises(ValueError, match="heat"):
        plots.plot_icm(frames, torch.rand(4, 8, 8))


def test_tempo_explorer_axis_fits_the_window_not_the_video():
    fig = plots.plot_tempo_indices(alpha=2, tau=2, window=16, start=100, num_frames=192)
    lo, hi = fig.axes[0].get_xlim()
    assert lo <= 100 and hi >= 116  # the whole window is in view
    assert hi - lo < 40  # and it fills the axis: not a 16-frame smudge on a 192-frame axis


def test_pretraining_curves_have_whole_epoch_ticks():
    metrics = {"levels": ["res5"], "loss_per_level": {"res5": [3.0, 2.5]},
               "epochs": [{"epoch": 1, "res5/acc": 0.1}, {"epoch": 2, "res5/acc": 0.2}]}
    fig = plots.plot_pretraining_curves(metrics)
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)


def test_bank_probe_draws_loss_over_chance_top1_and_spread_per_history():
    history = [{"updates_per_row": e, "chance": 2.0, "loss_term": 2.0 / e, "bank_top1": 0.1 * e, "spread": 0.9}
               for e in (1, 2)]
    fig = plots.plot_bank_probe({"fixed": history, "fresh": history[:1]}, title="t")
    loss_ax, top1_ax, spread_ax = fig.axes
    assert [list(line.get_ydata()) for line in loss_ax.lines[:2]] == [[1.0, 0.5], [1.0]]
    assert list(loss_ax.lines[-1].get_ydata()) == [1.0, 1.0]  # the chance line
    assert len(top1_ax.lines) == len(spread_ax.lines) == 2
    with pytest.raises(ValueError, match="bank_top1"):
        plots.plot_bank_probe({"old": [{"updates_per_row": 1, "chance": 2.0, "loss_term": 1.0, "spread": 0.5}]})
    with pytest.raises(ValueError, match="at least one"):
        plots.plot_bank_probe({})
