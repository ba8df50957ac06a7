"""vthcl_lib.tempo: the API contract of sample_tempo_indices, the short-video rule, multi-clip starts, decode-once."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import NUM_FRAMES, decode_number
from vthcl_lib import tempo
from vthcl_lib.tempo import decode_tempo_pair, sample_tempo_indices, uniform_clip_starts, window_indices


@pytest.mark.parametrize("alpha", [1, 2, 4, 8])
@pytest.mark.parametrize("num_frames", [64, 65, 300])
def test_contract(alpha, num_frames):
    rng = np.random.default_rng(0)
    for _ in range(20):
        slow, fast = sample_tempo_indices(num_frames, window=64, tau=8, alpha=alpha, rng=rng)
        assert slow.ndim == fast.ndim == 1 and np.issubdtype(slow.dtype, np.integer)
        assert len(slow) == 64 // 8 and len(fast) == 64 * alpha // 8
        np.testing.assert_array_equal(slow, fast[::alpha])
        assert fast.min() >= 0 and fast.max() < num_frames
        assert np.all(np.diff(fast) == 8 // alpha)  # consecutive frames of one window, stride tau/alpha
        assert fast[-1] - fast[0] < 64


def test_alpha_one_gives_identical_clips():
    slow, fast = sample_tempo_indices(200, window=64, tau=8, alpha=1, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(slow, fast)


def test_window_start_is_random_and_covers_the_range():
    rng = np.random.default_rng(1)
    starts = {int(sample_tempo_indices(100, window=64, tau=8, alpha=2, rng=rng)[1][0]) for _ in range(400)}
    assert min(starts) == 0 and max(starts) == 36 and len(starts) > 30


def test_seeded_rng_is_deterministic():
    a = sample_tempo_indices(500, rng=np.random.default_rng(7))
    b = sample_tempo_indices(500, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a[1], b[1])


def test_short_video_rules():
    slow, fast = sample_tempo_indices(20, window=64, tau=8, alpha=2, rng=np.random.default_rng(0))
    assert fast[0] == 0 and fast.max() == 19  # clamp: starts at 0, the tail repeats the last frame
    assert list(fast[:5]) == [0, 4, 8, 12, 16] and set(fast[5:]) == {19}
    _, looped = sample_tempo_indices(20, window=64, tau=8, alpha=2, short_video="loop", start=0)
    assert list(looped[:8]) == [0, 4, 8, 12, 16, 0, 4, 8]
    with pytest.raises(ValueError, match="short_video"):
        sample_tempo_indices(20, short_video="pad")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(alpha=0), "alpha"),
        (dict(alpha=3), "divisible by alpha"),
        (dict(tau=5, alpha=1, window=64), "multiple of tau"),
        (dict(window=0), "window"),
        (dict(start=50), r"start=50"),
    ],
)
def test_bad_parameters_fail_at_once(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_tempo_indices(100, **kwargs)
    if "start" not in kwargs:
        with pytest.raises(ValueError, match=message):
            tempo.check_tempo(kwargs.get("window", 64), kwargs.get("tau", 8), kwargs.get("alpha", 2))


def test_num_frames_must_be_positive():
    with pytest.raises(ValueError, match="num_frames"):
        sample_tempo_indices(0)


def test_uniform_clip_starts():
    starts = uniform_clip_starts(300, window=64, num_clips=10)
    assert len(starts) == 10 and starts[0] == 0 and starts[-1] == 300 - 64
    assert np.all(np.diff(starts) > 0)
    assert list(uniform_clip_starts(40, window=64, num_clips=3)) == [0, 0, 0]  # short video: every clip from 0
    assert list(uniform_clip_starts(100, window=64, num_clips=1)) == [18]
    with pytest.raises(ValueError, match="num_clips"):
        uniform_clip_starts(100, window=64, num_clips=0)


def test_window_indices():
    assert list(window_indices(5, 100, window=16, stride=4)) == [5, 9, 13, 17]
    assert list(window_indices(0, 6, window=16, stride=4)) == [0, 4, 5, 5]


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_decode_tempo_pair_decodes_once(coded_videos, backend, monkeypatch):
    calls = []
    real = tempo.read_frames

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(tempo, "read_frames", counting)
    slow, fast = decode_tempo_pair(
        coded_videos["mpeg4"], NUM_FRAMES, window=32, tau=8, alpha=4, rng=np.random.default_rng(2), backend=backend
    )
    assert len(calls) == 1  # the slow clip is a view of the fast one
    assert slow.shape == (4, 48, 64, 3) and fast.shape == (16, 48, 64, 3)
    assert torch.equal(slow, fast[::4])
    numbers = [decode_number(f) for f in fast]
    assert np.all(np.diff(numbers) == 2) and numbers == list(calls[0])
