"""Epic-Kitchens-style action anticipation: the observed window before each segment (VTHCL_SPEC c.5).

Taught in notebook ``09_action_anticipation`` (in progress, issue 5). The protocol observes
``tau_o`` seconds of video that END ``tau_a`` seconds before the action segment starts, and predicts
the segment's verb, noun and action from them. Near the start of a video the window can reach back
before frame 0: :func:`observation_window` clips it there and says so, and
:func:`observation_indices` then repeats the first frame (the padding rule of RULSTM's loaders) so
that every segment still yields a clip of the same length.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ObservationWindow:
    """Frames ``[first, end)`` observed for a segment starting at ``segment_start`` (notebook ``09_action_anticipation``).

    ``wanted_first`` is where the full window would start (negative when it reaches before the
    video); ``clipped`` says the window lost frames there; ``empty`` that nothing at all precedes
    the anticipation gap (the segment starts less than ``tau_a`` into the video).
    """

    segment_start: int
    wanted_first: int
    first: int
    end: int

    @property
    def clipped(self) -> bool:
        return self.wanted_first < self.first

    @property
    def empty(self) -> bool:
        return self.end <= 0


def observation_window(segment_start: int, fps: float, *, tau_o: float = 1.0, tau_a: float = 1.0) -> ObservationWindow:
    """The observed frames of a segment starting at frame ``segment_start`` (notebook ``09_action_anticipation``).

    ``end = segment_start - round(tau_a * fps)`` (exclusive) and ``first = end - round(tau_o * fps)``,
    both clipped at frame 0.
    """
    if int(segment_start) != segment_start or segment_start < 0:
        raise ValueError(f"segment_start={segment_start!r}; expected a frame index >= 0")
    if not fps > 0 or tau_o <= 0 or tau_a < 0:
        raise ValueError(f"fps={fps}, tau_o={tau_o}, tau_a={tau_a}: expected fps > 0, tau_o > 0, tau_a >= 0")
    end = int(segment_start) - int(round(tau_a * fps))
    wanted_first = end - int(round(tau_o * fps))
    return ObservationWindow(int(segment_start), wanted_first, max(wanted_first, 0), max(end, 0))


def observation_indices(window: ObservationWindow, num_frames: int) -> np.ndarray:
    """``num_frames`` frame indices spread uniformly over the full (wanted) window (notebook ``09_action_anticipation``).

    Positions before frame 0 read frame 0 (the first frame is repeated); an empty window gives
    ``num_frames`` zeros. The spacing is that of the full window, so a clipped window keeps the
    tempo of the others.
    """
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames={num_frames!r}; expected a whole number >= 1")
    length = window.end - window.wanted_first if not window.empty else window.segment_start - window.wanted_first
    length = max(length, 1)
    step = length / num_frames
    positions = window.wanted_first + (np.arange(num_frames) + 0.5) * step
    last = max(window.end - 1, 0)
    return np.clip(np.floor(positions).astype(np.int64), 0, last)

