"""Instance Correspondence Maps: the identity mean(ICM) = global cosine, upsampling and the peak-in-box measure."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vthcl_lib.icm import box_area_share, correspondence_maps, peak_in_box, upsample_map
from vthcl_lib.models.heads import ProjectionHead


@pytest.fixture
def heads():
    torch.manual_seed(0)
    return ProjectionHead(12, 6, kind="linear"), ProjectionHead(8, 6, kind="linear")


def test_each_map_averages_to_the_global_cosine_of_the_embeddings(heads):
    slow_head, fast_head = heads
    slow_map, fast_map = torch.randn(3, 12, 2, 4, 4), torch.randn(3, 8, 4, 4, 4)
    maps = correspondence_maps(slow_map, fast_map, slow_head, fast_head)
    assert maps.slow.shape == (3, 2, 4, 4) and maps.fast.shape == (3, 4, 4, 4)
    expected = F.cosine_similarity(slow_head(slow_map), fast_head(fast_map), dim=1)  # the heads' own embeddings
    torch.testing.assert_close(maps.cosine, expected)
    torch.testing.assert_close(maps.slow.mean(dim=(1, 2, 3)), expected)
    torch.testing.assert_close(maps.fast.mean(dim=(1, 2, 3)), expected)


def test_one_position_by_hand(heads):
    slow_head, fast_head = heads
    slow_map, fast_map = torch.randn(1, 12, 2, 3, 3), torch.randn(1, 8, 2, 3, 3)
    maps = correspondence_maps(slow_map, fast_map, slow_head, fast_head)
    w, b = slow_head.proj.weight.flatten(1), slow_head.proj.bias
    phi_s, phi_f = slow_head.project(slow_map)[0], fast_head.project(fast_map)[0]
    at = w @ slow_map[0, :, 1, 2, 0] + b  # position t=1, h=2, w=0
    torch.testing.assert_close(maps.slow[0, 1, 2, 0], at @ phi_f / (phi_s.norm() * phi_f.norm()))


def test_an_mlp_head_is_refused():
    mlp = ProjectionHead(12, 6, kind="mlp")
    with pytest.raises(ValueError, match="linear"):
        correspondence_maps(torch.randn(1, 12, 1, 2, 2), torch.randn(1, 12, 1, 2, 2), mlp, mlp)


def test_upsample_scales_to_the_frames_and_to_unit_range():
    icm = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    up = upsample_map(icm, (4, 8, 8))
    assert up.shape == (4, 8, 8) and float(up.min()) == 0.0 and float(up.max()) == 1.0
    assert float(up[0, 7, 7]) == 1.0 and float(up[0, 0, 0]) == 0.0  # corners keep the extremes
    raw = upsample_map(icm, (1, 2, 2), normalise=False)
    torch.testing.assert_close(raw, icm)
    assert float(upsample_map(torch.ones(1, 2, 2), (1, 4, 4)).max()) == 0.0  # a flat map stays flat
    with pytest.raises(ValueError, match="T, h, w"):
        upsample_map(torch.ones(2, 1, 2, 2), (1, 4, 4))


def test_peak_in_box_and_its_chance_level_by_hand():
    heat = torch.zeros(3, 10, 10)
    heat[0, 2, 3] = 1  # inside box 0
    heat[1, 9, 9] = 1  # outside box 1
    heat[2, 5, 5] = 1  # frame 2 has an empty box: skipped
    boxes = np.array([[2, 1, 5, 4], [0, 0, 3, 3], [0, 0, 0, 0]], dtype=np.float32)
    assert peak_in_box(heat, boxes) == pytest.approx(0.5)
    assert box_area_share(boxes, 10, 10) == pytest.approx((9 / 100 + 9 / 100) / 2)
    with pytest.raises(ValueError, match="T, 4"):
        peak_in_box(heat, boxes[:2])


def test_sprite_overlap_on_synthetic_clips_with_an_oracle_map_and_a_real_net():
    from vthcl_lib.config import resolve_config
    from vthcl_lib.engine import VTHCLNet
    from vthcl_lib.icm import maps_for_clips, sprite_overlap, synthetic_clip_pairs
    from vthcl_lib.synthetic import PLAIN_GREY

    cfg = resolve_config("ci", background="plain", distractor=False, noise_sigma=0.0, levels=1, head="linear")
    pairs = synthetic_clip_pairs(cfg, 4, seed=1)
    for pair in pairs:  # the sprite's boxes are where the frames differ from the empty scene
        oracle = torch.from_numpy(np.abs(pair.fast_frames.astype(np.float32) - PLAIN_GREY * 255).sum(axis=3))
        assert peak_in_box(oracle, pair.fast_boxes) == 1.0
        assert pair.slow_frames.shape[0] * cfg.data.alpha == pair.fast_frames.shape[0]
        np.testing.assert_array_equal(pair.slow_frames, pair.fast_frames[:: cfg.data.alpha])
    torch.manual_seed(0)
    net = VTHCLNet(cfg.model)
    maps = maps_for_clips(net, torch.stack([p.slow for p in pairs]), torch.stack([p.fast for p in pairs]))
    torch.testing.assert_close(maps.slow.mean(dim=(1, 2, 3)), maps.cosine)
    overlap = sprite_overlap(net, pairs)
    assert set(overlap) == {"slow", "fast", "chance"} and all(0.0 <= v <= 1.0 for v in overlap.values())
    assert 0.0 < overlap["chance"] < 0.5  # the sprite covers a small part of the frame


def test_a_flat_maximum_peaks_at_its_centre_not_its_corner():
    heat = torch.zeros(1, 8, 8)
    heat[0, 4:8, 4:8] = 1.0  # an upsampled coarse cell: a plateau, whose argmax would be (4, 4)
    assert peak_in_box(heat, np.array([[5, 5, 8, 8]], np.float32)) == 1.0  # centre (6, 6)
    assert peak_in_box(heat, np.array([[3, 3, 5, 5]], np.float32)) == 0.0  # holds the plateau's corner only
