"""Visual-tempo sampling: one raw window, a slow clip (stride tau) and a fast clip (stride tau/alpha).

Taught in notebook ``01_tempo_sampling``. VTHCL_SPEC a.1: both clips cover the same window of
``window`` consecutive frames from the same start, so the slow frames are a subset of the fast
frames: ``slow_idx == fast_idx[::alpha]``. That is why the pair is decoded once.

Videos shorter than the window (the paper leaves this open): the window starts at frame 0 and its
indices past the end are handled by ``short_video``:

* ``"clamp"`` (default, as pySlowFast does): indices past the end repeat the last frame, so the clip
  ends in a freeze but never jumps;
* ``"loop"``: indices wrap around to the start (``k % num_frames``), so motion continues but jumps once.
"""
from __future__ import annotations

import os

from dataclasses import dataclass

import numpy as np
import torch

from vthcl_lib.video import read_frames

SHORT_VIDEO_RULES = ("clamp", "loop")


def check_tempo(window: int, tau: int, alpha: int) -> None:
    """Raise ``ValueError`` naming the parameter unless window, tau and alpha fit together."""
    for name, value in (("window", window), ("tau", tau), ("alpha", alpha)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name}={value!r} must be a whole number >= 1")
    if tau % alpha:
        raise ValueError(f"tau={tau} must be divisible by alpha={alpha} (the fast stride is tau/alpha)")
    if window % tau:
        raise ValueError(f"window={window} must be a multiple of tau={tau} (the slow clip has window/tau frames)")


def _fit(indices: np.ndarray, num_frames: int, short_video: str) -> np.ndarray:
    if short_video == "clamp":
        return np.minimum(indices, num_frames - 1)
    if short_video == "loop":
        return indices % num_frames
    raise ValueError(f"short_video={short_video!r} is not known; expected one of {SHORT_VIDEO_RULES}")


def window_indices(start: int, num_frames: int, *, window: int, stride: int, short_video: str = "clamp") -> np.ndarray:
    """Indices ``start, start+stride, ...`` inside ``[start, start+window)``, fitted to the video.

    Notebook ``01_tempo_sampling``.
    """
    return _fit(start + np.arange(0, window, stride, dtype=np.int64), num_frames, short_video)


def sample_tempo_indices(
    num_frames: int,
    *,
    window: int = 64,
    tau: int = 8,
    alpha: int = 2,
    rng: np.random.Generator | None = None,
    start: int | None = None,
    short_video: str = "clamp",
) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices of a slow clip and a fast clip from one random window (notebook ``01_tempo_sampling``).

    Returns ``(slow_idx, fast_idx)`` with ``len(slow_idx) == window // tau``,
    ``len(fast_idx) == window * alpha // tau`` and ``slow_idx == fast_idx[::alpha]``. The window
    start is uniform over ``[0, num_frames - window]`` (drawn from ``rng``) unless ``start`` is given.
    ``alpha=1`` gives identical clips. Short videos follow ``short_video`` (module docstring).
    """
    check_tempo(window, tau, alpha)
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames={num_frames!r} must be a whole number >= 1")
    last_start = max(int(num_frames) - window, 0)
    if start is None:
        rng = np.random.default_rng() if rng is None else rng
        start = int(rng.integers(0, last_start + 1))
    elif not 0 <= start <= last_start:
        raise ValueError(f"start={start} must lie in [0, {last_start}] for a {num_frames}-frame video and window={window}")
    fast_idx = window_indices(start, int(num_frames), window=window, stride=tau // alpha, short_video=short_video)
    return fast_idx[::alpha].copy(), fast_idx


def uniform_clip_starts(num_frames: int, *, window: int, num_clips: int = 10) -> np.ndarray:
    """``num_clips`` window starts spaced uniformly over the whole video, first and last included.

    The standard multi-clip test protocol (10 clips, softmax averaged), notebook ``01_tempo_sampling``.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips={num_clips} must be >= 1")
    last_start = max(int(num_frames) - window, 0)
    if num_clips == 1:
        return np.array([last_start // 2], dtype=np.int64)
    return np.rint(np.linspace(0, last_start, num_clips)).astype(np.int64)


def decode_tempo_pair(
    path: str | os.PathLike,
    num_frames: int,
    *,
    window: int = 64,
    tau: int = 8,
    alpha: int = 2,
    rng: np.random.Generator | None = None,
    backend: str = "decord",
    size: tuple[int, int] | None = None,
    short_video: str = "clamp",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the fast clip once and take the slow clip as ``fast[::alpha]`` (a view, no second decode).

    Returns uint8 ``(slow, fast)`` of shapes ``[window/tau, H, W, 3]`` and ``[alpha*window/tau, H, W, 3]``.
    Notebook ``01_tempo_sampling``.
    """
    _, fast_idx = sample_tempo_indices(num_frames, window=window, tau=tau, alpha=alpha, rng=rng, short_video=short_video)
    fast = read_frames(path, fast_idx, backend=backend, size=size)
    return fast[::alpha], fast


# ----------------------------------------------------------------------------- anticipation windows (notebook 09)


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


def keyframe_indices(timestamp: float, fps: float, num_frames: int, *, clip_frames: int, stride: int) -> np.ndarray:
    """``clip_frames`` frame indices at ``stride`` centred on the keyframe at ``timestamp`` seconds.

    The keyframe is frame ``round(timestamp * fps)`` of the file (AVA's timestamps count from the
    start of the movie); positions outside the video are clamped to its first/last frame.
    Notebook ``08_action_detection``.
    """
    centre = int(round(float(timestamp) * fps))
    idx = centre + (np.arange(clip_frames) - clip_frames // 2) * int(stride)
    return np.clip(idx, 0, max(int(num_frames) - 1, 0))
