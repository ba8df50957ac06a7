"""vthcl_lib.transforms: shapes, one shared draw per pair, determinism, and each op against a hand computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vthcl_lib.transforms import (
    AugmentParams, ClipAugmentation, EvalTransform, color_jitter, grayscale, hflip, normalize, resized_crop,
    sample_crop_box, to_float_cthw,
)


def _frames(t=16, h=40, w=48, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8))


def test_pair_shares_one_draw_and_slow_is_fast_subsampled():
    aug = ClipAugmentation(crop_size=32)
    fast = _frames()
    for seed in range(25):
        slow_out, fast_out = aug(fast[::2], fast, rng=np.random.default_rng(seed))
        assert slow_out.shape == (3, 8, 32, 32) and fast_out.shape == (3, 16, 32, 32)
        torch.testing.assert_close(slow_out, fast_out[:, ::2])


def test_deterministic_under_a_seed_and_varies_across_seeds():
    aug = ClipAugmentation(crop_size=24)
    x = _frames()
    a = aug(x, rng=np.random.default_rng(5))[0]
    b = aug(x, rng=np.random.default_rng(5))[0]
    c = aug(x, rng=np.random.default_rng(6))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_pair_of_different_sizes_is_refused():
    with pytest.raises(ValueError, match="frame size"):
        ClipAugmentation()(_frames(h=40), _frames(h=32), rng=np.random.default_rng(0))


def test_crop_box_respects_bounds_and_scale():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = sample_crop_box(rng, 40, 60, (0.3, 1.0))
        assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 60
        assert 0.25 <= h * w / 2400 <= 1.0
    assert sample_crop_box(rng, 40, 40, (1.0, 1.0), (1.0, 1.0)) == (0, 0, 40, 40)


def test_identity_settings_only_normalise():
    aug = ClipAugmentation(crop_size=48, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, color_jitter=0.0,
                           hue_jitter=0.0, grayscale_prob=0.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    x = _frames(h=48, w=48)
    out = aug(x, rng=np.random.default_rng(0))[0]
    torch.testing.assert_close(out, to_float_cthw(x))


def test_ops_by_hand():
    x = to_float_cthw(_frames(t=2, h=8, w=8))
    torch.testing.assert_close(hflip(x)[..., 0], x[..., -1])
    g = grayscale(x)
    torch.testing.assert_close(g[0], 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])
    assert torch.equal(g[0], g[2])
    n = normalize(x, (0.5, 0.4, 0.3), (0.1, 0.2, 0.3))
    torch.testing.assert_close(n[1], (x[1] - 0.4) / 0.2)
    torch.testing.assert_close(color_jitter(x, 1.0, 1.0, 1.0, 0.0), x)
    torch.testing.assert_close(color_jitter(x, 1.0, 1.0, 1.0, 1.0), x, atol=1e-5, rtol=0)  # a full hue turn
    assert torch.all(color_jitter(x, 1.0, 1.0, 0.0, 0.0)[0] == color_jitter(x, 1.0, 1.0, 0.0, 0.0)[1])
    assert torch.equal(resized_crop(x, 2, 3, 4, 4, 4), x[:, :, 2:6, 3:7])


def test_jitter_is_constant_along_time():
    """The same factors on every frame: a static clip stays static (colour change must not pose as motion)."""
    still = _frames(t=1).expand(6, -1, -1, -1)
    aug = ClipAugmentation(crop_size=24, jitter_prob=1.0)
    out = aug(still, rng=np.random.default_rng(1))[0]
    assert torch.allclose(out[:, 0], out[:, 5])


def test_eval_transform_centre_crop():
    x = _frames(t=4, h=40, w=60)
    out = EvalTransform(crop_size=40, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))(x)
    assert out.shape == (3, 4, 40, 40)
    torch.testing.assert_close(out, to_float_cthw(x)[:, :, :, 10:50])


def test_params_are_a_plain_record():
    p = ClipAugmentation().sample(np.random.default_rng(0), 64, 64)
    assert isinstance(p, AugmentParams) and p.height > 0 and p.width > 0


def test_color_per_view_shares_geometry_but_not_colour():
    aug = ClipAugmentation(crop_size=24, color_jitter=0.0, hue_jitter=0.0, grayscale_prob=0.0,
                           channel_shuffle_prob=1.0, color_per_view=True)
    x = _frames()
    differs = 0
    for seed in range(12):
        a, b = aug(x, x, rng=np.random.default_rng(seed))
        # the same crop and flip: the clips hold the same channels, possibly in another order
        perms = [p for p in ([0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0])
                 if torch.allclose(a[p], b, atol=1e-5)]
        assert perms, f"seed {seed}: second view is not a channel permutation of the first"
        differs += perms != [[0, 1, 2]]
    assert differs >= 6  # 5 of 6 permutations are not the identity
    shared = ClipAugmentation(crop_size=24, channel_shuffle_prob=1.0)
    a, b = shared(x, x, rng=np.random.default_rng(0))
    torch.testing.assert_close(a, b)


def test_tempo_pair_subsamples_fast_or_redraws_colour_for_slow():
    x = _frames(t=16)
    shared = ClipAugmentation(crop_size=24)
    for seed in range(5):
        slow, fast = shared.tempo_pair(x, 2, np.random.default_rng(seed))
        torch.testing.assert_close(slow, fast[:, ::2])
        torch.testing.assert_close(fast, shared(x, rng=np.random.default_rng(seed))[0])  # same draw as a plain call
    per_view = ClipAugmentation(crop_size=24, color_jitter=0.0, hue_jitter=0.0, grayscale_prob=0.0,
                                channel_shuffle_prob=1.0, color_per_view=True)
    seen = set()
    for seed in range(12):
        slow, fast = per_view.tempo_pair(x, 2, np.random.default_rng(seed))
        assert slow.shape == (3, 8, 24, 24) and fast.shape == (3, 16, 24, 24)
        match = [p for p in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
                 if torch.allclose(fast[:, ::2][list(p)], slow, atol=1e-5)]
        assert match
        seen.add(match[0])
    assert len(seen) > 1
