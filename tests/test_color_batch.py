"""The paper-scale augmentation split: uint8 geometry in the worker, colour batched in the step, same clips."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vthcl_lib.transforms import AugmentParams, ClipAugmentation, color_vector, resized_crop, resized_crop_uint8, to_float_cthw


def _frames(t=8, h=40, w=52, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 256, (1, h, w, 3), generator=g, dtype=torch.uint8)
    drift = torch.randint(0, 40, (t, 1, 1, 3), generator=g, dtype=torch.uint8)
    return base.repeat(t, 1, 1, 1) // 2 + drift  # varied colours, frames that differ


AUGS = {
    "one_colour_draw": ClipAugmentation(crop_size=24, color_jitter=0.4, hue_jitter=0.1, grayscale_prob=0.3),
    "per_view_colour": ClipAugmentation(crop_size=24, color_jitter=0.4, hue_jitter=0.1, grayscale_prob=0.3,
                                        channel_shuffle_prob=1.0, color_per_view=True),
    "paper": ClipAugmentation(crop_size=24, crop_scale=(0.2, 1.0), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
}


@pytest.mark.parametrize("name", sorted(AUGS))
def test_batched_colour_equals_the_per_clip_colour(name):
    """color_batch on a batch of uint8 clips == the per-clip colour of each clip, with the same draws."""
    aug, alpha = AUGS[name], 2
    fast_u8, colors, expected = [], [], []
    for i in range(12):  # enough draws to meet jitter, no jitter, hue, grayscale and channel orders
        frames = _frames(seed=i)
        fast, color = aug.tempo_pair_uint8(frames, alpha, np.random.default_rng([3, i]))
        rng = np.random.default_rng([3, i])  # replay the draws for the per-clip path
        params = aug.sample(rng, *frames.shape[1:3])
        slow_params = aug.sample_color(rng, params) if aug.color_per_view else params
        clip = to_float_cthw(fast)
        expected.append((aug.color(clip[:, ::alpha], slow_params), aug.color(clip, params)))
        fast_u8.append(fast)
        colors.append(color)
    slow_b, fast_b = aug.color_batch(torch.stack(fast_u8), torch.stack(colors), alpha)
    assert slow_b.shape == (12, 3, 4, 24, 24) and fast_b.shape == (12, 3, 8, 24, 24)
    for k, (slow, fast) in enumerate(expected):
        torch.testing.assert_close(fast_b[k], fast, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(slow_b[k], slow, atol=2e-5, rtol=1e-5)
    drawn = torch.stack(colors)
    assert (drawn[:, 0, 3] != 0).any() and (drawn[:, 0, 3] == 0).any()  # both jittered and plain clips were met
    assert (drawn[:, 0, 4] == 1).any()  # and a grayscale one
    if aug.color_per_view:
        assert not torch.equal(drawn[:, 0], drawn[:, 1])  # the slow view had its own colour draws
    else:
        assert torch.equal(slow_b, fast_b[:, :, ::alpha])


@pytest.mark.parametrize("name", sorted(AUGS))
def test_split_path_matches_the_float_path_up_to_uint8_rounding(name):
    """tempo_pair (all float, per clip) and tempo_pair_uint8 + color_batch give the same pair from one seed."""
    aug = AUGS[name]
    frames = _frames(seed=7)
    slow, fast = aug.tempo_pair(frames, 2, np.random.default_rng(11))
    fast_u8, colors = aug.tempo_pair_uint8(frames, 2, np.random.default_rng(11))
    slow_b, fast_b = aug.color_batch(fast_u8[None], colors[None], 2)
    # one uint8 step of the resize, through jitter (factors up to 1.4) and normalisation (std >= 0.224)
    tol = 1.5 * 1.4**3 / 255 / 0.224
    assert (fast_b[0] - fast).abs().max() <= tol and (slow_b[0] - slow).abs().max() <= tol
    assert (fast_b[0] - fast).abs().mean() < 0.02


def test_uint8_resized_crop_is_the_float_one_rounded():
    frames = _frames(t=4, h=50, w=70)
    out = resized_crop_uint8(frames, 3, 5, 40, 55, 32)
    assert out.dtype == torch.uint8 and out.shape == (4, 32, 32, 3)
    ref = resized_crop(to_float_cthw(frames), 3, 5, 40, 55, 32) * 255
    assert (to_float_cthw(out) * 255 - ref).abs().max() <= 1.01


def test_colour_vector_and_bad_batches():
    params = AugmentParams(1, 2, 3, 4, True, 1.1, 0.9, 1.2, 0.05, True, (2, 0, 1))
    assert color_vector(params).tolist() == pytest.approx([1.1, 0.9, 1.2, 0.05, 1.0, 2.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="expected fast"):
        AUGS["paper"].color_batch(torch.zeros(2, 4, 8, 8, 3, dtype=torch.uint8), torch.zeros(2, 8), 2)
