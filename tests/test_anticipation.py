"""Anticipation windows: tau_o seconds observed, ending tau_a seconds before the segment, at video boundaries."""
from __future__ import annotations

import numpy as np
import pytest

from vthcl_lib.anticipation import observation_indices, observation_window


def test_window_ends_tau_a_before_the_segment_and_lasts_tau_o():
    w = observation_window(200, 25, tau_o=1.0, tau_a=1.0)
    assert (w.first, w.end, w.wanted_first) == (150, 175, 150)
    assert not w.clipped and not w.empty
    idx = observation_indices(w, 8)
    assert idx.min() >= 150 and idx.max() < 175  # never a frame inside the anticipation gap
    assert np.all(np.diff(idx) > 0) and idx.tolist() == [151, 154, 157, 160, 164, 167, 170, 173]


def test_segment_starting_before_tau_o_plus_tau_a_is_clipped_and_padded_with_frame_0():
    w = observation_window(40, 25, tau_o=1.0, tau_a=1.0)  # window wanted at [-10, 15)
    assert (w.wanted_first, w.first, w.end) == (-10, 0, 15) and w.clipped and not w.empty
    idx = observation_indices(w, 5)
    assert idx.tolist() == [0, 0, 2, 7, 12]  # the same spacing as a full window; early positions read frame 0
    assert idx.max() < 15


def test_segment_inside_the_anticipation_gap_observes_nothing_but_frame_0():
    w = observation_window(10, 25, tau_o=1.0, tau_a=1.0)
    assert w.empty and w.end == 0 and w.clipped
    assert observation_indices(w, 4).tolist() == [0, 0, 0, 0]
    assert observation_window(0, 30).empty


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="segment_start"):
        observation_window(-1, 25)
    with pytest.raises(ValueError, match="fps"):
        observation_window(10, 0)
    with pytest.raises(ValueError, match="num_frames"):
        observation_indices(observation_window(100, 25), 0)
