"""vthcl_lib.models: the paper's encoders (shapes, parameter counts, kernels), projection heads, per-stage costs."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vthcl_lib.config import ModelConfig
from vthcl_lib.models import (
    LEVELS,
    ProjectionHead,
    ResNet3D,
    build_encoder,
    build_heads,
    encoder_from_config,
    heads_from_config,
    levels_for,
    stage_costs,
)
from vthcl_lib.models.resnet3d import BasicBlock3D, Bottleneck3D

# VTHCL_SPEC (b), 224 x 224 input: stage -> (channels, frames, spatial size). Slow gets 8 frames, fast 16.
SPEC = {
    (50, "slow"): {"res2": (256, 8, 56), "res3": (512, 8, 28), "res4": (1024, 8, 14), "res5": (2048, 8, 7)},
    (50, "fast"): {"res2": (32, 16, 56), "res3": (64, 16, 28), "res4": (128, 16, 14), "res5": (256, 16, 7)},
    (18, "slow"): {"res2": (64, 8, 56), "res3": (128, 8, 28), "res4": (256, 8, 14), "res5": (512, 8, 7)},
    (18, "fast"): {"res2": (8, 16, 56), "res3": (16, 16, 28), "res4": (32, 16, 14), "res5": (64, 16, 7)},
}
FRAMES = {"slow": 8, "fast": 16}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_against_spec(encoder: ResNet3D, depth: int, pathway: str, size: int) -> None:
    """Forward one [1, 3, T, size, size] clip and compare every stage with the spec table scaled to ``size``."""
    with torch.no_grad():
        out = encoder.eval()(torch.randn(1, 3, FRAMES[pathway], size, size))
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for stage, (channels, frames, spatial) in SPEC[depth, pathway].items():
        assert out[stage].shape == (1, channels, frames, spatial * size // 224, spatial * size // 224), stage
        assert encoder.stage_channels[stage] == channels


def test_full_size_r50s_match_slowfast_and_the_spec_table():
    # The only test that builds full-width R50s. Slow-only R50 8x8 of SlowFast has 32,454,096
    # parameters = backbone + GAP + Linear(2048, 400).
    slow, fast = build_encoder(50, "slow"), build_encoder(50, "fast")
    assert n_params(slow) + 2048 * 400 + 400 == 32_454_096
    assert n_params(slow) == 31_634_496
    # 64 x 64 input: the 56/28/14/7 of the table become 16/8/4/2; channels are the full widths.
    check_against_spec(slow, 50, "slow", 64)
    check_against_spec(fast, 50, "fast", 64)


@pytest.mark.parametrize("pathway", ["slow", "fast"])
def test_full_size_r18_matches_the_spec_table(pathway):
    check_against_spec(build_encoder(18, pathway), 18, pathway, 64)


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("pathway", ["slow", "fast"])
def test_224_input_gives_the_tables_sizes(depth, pathway):
    # Narrow (base_width 8) so the 224 forward is cheap; sizes and frames do not depend on width.
    encoder = build_encoder(depth, pathway, base_width=8)
    with torch.no_grad():
        out = encoder.eval()(torch.randn(1, 3, FRAMES[pathway], 224, 224))
    for stage, (channels, frames, spatial) in SPEC[depth, pathway].items():
        assert out[stage].shape[2:] == (frames, spatial, spatial)
        assert out[stage].shape[1] == channels * 8 // 64 == encoder.stage_channels[stage]


def test_r18_slow_parameter_count_by_hand():
    def conv(cin, cout, *k):
        return cin * cout * k[0] * k[1] * k[2]

    def bn(c):
        return 2 * c  # weight and bias

    stem = conv(3, 64, 1, 7, 7) + bn(64)
    # BasicBlock: conv a (kt x 3 x 3, carries the stride), conv b (1 x 3 x 3), each + BN;
    # a 1x1x1 projection + BN on res3..res5's first block (width and size change).
    def block(cin, w, kt, proj):
        shortcut = conv(cin, w, 1, 1, 1) + bn(w) if proj else 0
        return conv(cin, w, kt, 3, 3) + bn(w) + conv(w, w, 1, 3, 3) + bn(w) + shortcut

    res2 = block(64, 64, 1, False) + block(64, 64, 1, False)
    res3 = block(64, 128, 1, True) + block(128, 128, 1, False)
    res4 = block(128, 256, 3, True) + block(256, 256, 3, False)
    res5 = block(256, 512, 3, True) + block(512, 512, 3, False)
    hand = stem + res2 + res3 + res4 + res5
    assert hand == 20_023_872  # 2D ResNet-18 backbone 11,176,512 + the temporal taps of res4/res5
    encoder = build_encoder(18, "slow")
    assert n_params(encoder) == hand
    assert n_params(encoder.stem) == stem
    assert [n_params(getattr(encoder, s)) for s in ("res2", "res3", "res4", "res5")] == [res2, res3, res4, res5]


@pytest.mark.parametrize("pathway", ["slow", "fast"])
def test_temporal_kernels_strides_and_shortcuts_follow_the_basis(pathway):
    kt = {"slow": (1, 1, 1, 3, 3), "fast": (5, 3, 3, 3, 3)}[pathway]
    r50 = build_encoder(50, pathway, base_width=8)
    r18 = build_encoder(18, pathway, base_width=8)
    for enc in (r50, r18):
        assert enc.stem.conv.kernel_size == (kt[0], 7, 7) and enc.stem.conv.stride == (1, 2, 2)
        assert enc.stem.pool.kernel_size == (1, 3, 3) and enc.stem.pool.stride == (1, 2, 2)
        assert enc.stem.pool.padding == (0, 1, 1)
        assert enc.temporal_kernels == kt
    for i, (stage, stride) in enumerate(zip(("res2", "res3", "res4", "res5"), (1, 2, 2, 2))):
        blocks50, blocks18 = list(getattr(r50, stage)), list(getattr(r18, stage))
        assert len(blocks50) == (3, 4, 6, 3)[i] and len(blocks18) == 2
        for j, b in enumerate(blocks50):  # Bottleneck: time on the first 1x1, stride on the 1x3x3
            assert isinstance(b, Bottleneck3D)
            s = stride if j == 0 else 1
            assert b.conv_a.kernel_size == (kt[i + 1], 1, 1) and b.conv_a.stride == (1, 1, 1)
            assert b.conv_b.kernel_size == (1, 3, 3) and b.conv_b.stride == (1, s, s)
            assert b.conv_c.kernel_size == (1, 1, 1)
            assert isinstance(b.shortcut, nn.Identity) == (j > 0)  # res2's first block also widens 8 -> 32
        for j, b in enumerate(blocks18):  # BasicBlock: time and stride on the first 3x3
            assert isinstance(b, BasicBlock3D)
            s = stride if j == 0 else 1
            assert b.conv_a.kernel_size == (kt[i + 1], 3, 3) and b.conv_a.stride == (1, s, s)
            assert b.conv_b.kernel_size == (1, 3, 3)
            assert isinstance(b.shortcut, nn.Identity) == (j > 0 or stage == "res2")
    for m in r50.modules():  # no temporal striding anywhere
        if isinstance(m, (nn.Conv3d, nn.MaxPool3d)):
            assert (m.stride if isinstance(m.stride, tuple) else (m.stride,))[0] == 1


def test_overrides_scale_widths_and_make_the_detection_variant():
    assert build_encoder(50, "slow", base_width=16).stage_channels == {
        "res2": 64, "res3": 128, "res4": 256, "res5": 512}
    assert build_encoder(18, "fast", base_width=16, fast_ratio=0.5).stage_channels == {
        "res2": 8, "res3": 16, "res4": 32, "res5": 64}
    # fast_ratio is the fast pathway's only
    assert build_encoder(18, "slow", base_width=16, fast_ratio=0.5).stage_channels["res5"] == 128
    det = build_encoder(50, "slow", base_width=4, res5_stride=1, res5_dilation=2)
    out = det.eval()(torch.randn(1, 3, 4, 64, 64))
    assert out["res5"].shape[-2:] == out["res4"].shape[-2:] == (4, 4)
    assert det.res5[0].conv_b.dilation == (1, 2, 2) and det.res5[0].conv_b.padding == (0, 2, 2)
    custom = build_encoder(18, "slow", base_width=4, temporal_kernels=(3, 1, 1, 1, 5))
    assert custom.stem.conv.kernel_size[0] == 3 and custom.res5[1].conv_a.kernel_size[0] == 5
    assert custom(torch.randn(1, 3, 6, 32, 32))["res5"].shape[2] == 6  # T kept


@pytest.mark.parametrize("args, kwargs, name", [
    ((34, "slow"), {}, "depth"),
    ((18, "medium"), {}, "pathway"),
    ((18, "slow"), {"width": 8}, "base_width"),  # unknown override: the message lists the known ones
    ((18, "slow"), {"base_width": 0}, "base_width"),
    ((18, "fast"), {"fast_ratio": 0}, "fast_ratio"),
    ((18, "fast"), {"fast_ratio": 2.0}, "fast_ratio"),
    ((50, "slow"), {"res5_stride": 3}, "res5_stride"),
    ((50, "slow"), {"res5_dilation": 0}, "res5_dilation"),
    ((50, "slow"), {"temporal_kernels": (1, 2, 1, 3, 3)}, "temporal_kernels"),
    ((50, "slow"), {"temporal_kernels": (1, 1, 3)}, "temporal_kernels"),
])
def test_bad_encoder_arguments_raise(args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        build_encoder(*args, **kwargs)


def test_unknown_override_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        build_encoder(18, "slow", dropout=0.5)
    for known in ("base_width", "fast_ratio", "res5_stride", "res5_dilation", "temporal_kernels"):
        assert known in str(err.value)
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        build_encoder(18, "slow", base_width=4)(torch.randn(1, 1, 4, 32, 32))


def test_initialisation():
    torch.manual_seed(0)
    enc = build_encoder(50, "slow", base_width=16)
    last_bns = {id(b.last_bn) for b in enc.modules() if isinstance(b, (BasicBlock3D, Bottleneck3D))}
    assert len(last_bns) == 16
    for m in enc.modules():
        if isinstance(m, nn.BatchNorm3d):
            assert torch.all(m.bias == 0)
            assert torch.all(m.weight == (0.0 if id(m) in last_bns else 1.0))
    conv = enc.res4[0].conv_a  # 3x1x1, 64 -> 64: Kaiming normal, fan_out = 64 * 3
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1] * conv.kernel_size[2]
    assert conv.bias is None
    assert abs(conv.weight.std().item() / (2 / fan_out) ** 0.5 - 1) < 0.1
    # Zero-init makes every block start as ReLU(shortcut): res2 equals the projection branch.
    with torch.no_grad():
        enc.eval()
        x = enc.stem(torch.randn(1, 3, 4, 32, 32))
        first = enc.res2[0]
        torch.testing.assert_close(first(x), torch.relu(first.shortcut(x)))


def test_channels_last_3d_gives_the_same_features_and_trains():
    torch.manual_seed(0)
    enc = build_encoder(50, "fast", base_width=16).eval()
    for m in enc.modules():  # non-trivial residual branches, so the check covers them
        if isinstance(m, nn.BatchNorm3d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        ref = enc(x)
        enc = enc.to(memory_format=torch.channels_last_3d)
        got = enc(x.contiguous(memory_format=torch.channels_last_3d))
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-4)
    enc.train()
    out = enc(x.contiguous(memory_format=torch.channels_last_3d))
    sum(v.mean() for v in out.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters())
    assert enc.stem.conv.weight.grad.abs().sum() > 0


# ---- projection heads -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, hidden", [("mlp", None), ("mlp", 24), ("linear", None)])
def test_head_pools_projects_and_normalises(kind, hidden):
    torch.manual_seed(0)
    head = ProjectionHead(16, out_dim=8, kind=kind, hidden=hidden)
    fmap = torch.randn(3, 16, 2, 4, 4)
    z = head(fmap)
    assert z.shape == (3, 8)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
    pooled = fmap.mean(dim=(2, 3, 4))
    torch.testing.assert_close(head(pooled), z)  # a pooled [B, C] input gives the same embedding
    torch.testing.assert_close(z, nn.functional.normalize(head.project(fmap), dim=1))
    if kind == "mlp":
        first, relu, last = head.proj
        assert (first.in_features, first.out_features, last.out_features) == (16, hidden or 16, 8)
        assert isinstance(relu, nn.ReLU)
        torch.testing.assert_close(head.project(fmap), last(torch.relu(first(pooled))))
    else:
        assert isinstance(head.proj, nn.Conv3d) and head.proj.kernel_size == (1, 1, 1)


def test_project_map_mean_is_the_pooled_projection():
    torch.manual_seed(0)
    head = ProjectionHead(12, out_dim=6, kind="linear")
    fmap = torch.randn(2, 12, 3, 5, 5)
    pmap = head.project_map(fmap)
    assert pmap.shape == (2, 6, 3, 5, 5)
    torch.testing.assert_close(pmap.mean(dim=(2, 3, 4)), head.project(fmap), rtol=1e-5, atol=1e-5)
    # position-wise: W F[:, t, h, w] + b
    w, b = head.proj.weight.flatten(1), head.proj.bias
    torch.testing.assert_close(pmap[:, :, 1, 2, 3], fmap[:, :, 1, 2, 3] @ w.T + b)
    with pytest.raises(ValueError, match="linear"):
        ProjectionHead(12, kind="mlp").project_map(fmap)


@pytest.mark.parametrize("kwargs, name", [
    ({"in_dim": 0}, "in_dim"), ({"in_dim": 8, "out_dim": 0}, "out_dim"), ({"in_dim": 8, "kind": "conv"}, "kind"),
    ({"in_dim": 8, "hidden": -1}, "hidden"), ({"in_dim": 8, "kind": "linear", "hidden": 4}, "hidden"),
])
def test_bad_head_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ProjectionHead(**kwargs)


def test_head_rejects_wrong_inputs():
    head = ProjectionHead(8, out_dim=4)
    with pytest.raises(ValueError, match="in_dim=8"):
        head(torch.randn(2, 6, 1, 2, 2))
    with pytest.raises(ValueError, match=r"\[B, C, T, H, W\]"):
        head(torch.randn(2, 8, 3))


def test_levels_and_build_heads():
    assert LEVELS == ("res3", "res4", "res5")
    assert levels_for(1) == ("res5",) and levels_for(2) == ("res4", "res5") and levels_for(3) == LEVELS
    for bad in (0, 4, True, 2.0):
        with pytest.raises(ValueError, match="levels"):
            levels_for(bad)
    channels = {"res2": 8, "res3": 16, "res4": 32, "res5": 64}
    for levels in (1, 2, 3):
        heads = build_heads(channels, levels, out_dim=32, kind="mlp")
        assert isinstance(heads, nn.ModuleDict) and tuple(heads) == levels_for(levels)
        assert all(heads[k].in_dim == channels[k] and heads[k].out_dim == 32 for k in heads)
    linear = build_heads(channels, 3, kind="linear")
    assert all(h.kind == "linear" and h.out_dim == 128 for h in linear.values())
    with pytest.raises(ValueError, match="stage_channels"):
        build_heads({"res5": 64}, 2)


def test_config_builders():
    cfg = ModelConfig(depth=18, base_width=16, fast_ratio=0.5, embed_dim=24, levels=2, head="mlp", head_hidden=40)
    slow, fast = encoder_from_config(cfg, "slow"), encoder_from_config(cfg, "fast")
    assert (slow.depth, slow.pathway, fast.pathway) == (18, "slow", "fast")
    assert slow.stage_channels["res5"] == 128 and fast.stage_channels["res5"] == 64
    heads = heads_from_config(cfg, fast)
    assert tuple(heads) == ("res4", "res5")
    assert heads["res4"].in_dim == 32 and heads["res4"].out_dim == 24 and heads["res4"].proj[0].out_features == 40
    feats = fast(torch.randn(2, 3, 4, 32, 32))
    assert {k: h(feats[k]).shape for k, h in heads.items()} == {"res4": (2, 24), "res5": (2, 24)}


# ---- per-stage costs ---------------------------------------------------------------------------------------------


def test_stage_costs_on_a_tiny_encoder():
    torch.manual_seed(0)
    enc = build_encoder(18, "fast", base_width=16, fast_ratio=0.5)  # stem width 8
    running = enc.stem.bn.running_mean.clone()
    rows = stage_costs(enc, (2, 3, 8, 32, 32))
    assert enc.training and torch.equal(enc.stem.bn.running_mean, running)  # mode and BN statistics untouched
    assert [r["stage"] for r in rows] == ["stem", "res2", "res3", "res4", "res5"]
    assert all(r["flops"] > 0 for r in rows)
    assert sum(r["params"] for r in rows) == n_params(enc)
    x = torch.randn(2, 3, 8, 32, 32)
    enc.eval()
    with torch.no_grad():
        out = enc(x)
    assert rows[0]["output_shape"] == (2, 8, 8, 8, 8)
    assert [r["output_shape"] for r in rows[1:]] == [tuple(out[k].shape) for k in ("res2", "res3", "res4", "res5")]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        enc(x)
    assert sum(r["flops"] for r in rows) == counter.get_total_flops()
    # The stem conv by hand: 2 FLOPs per multiply-add, 5x7x7x3 taps for each of 8 x (8 x 16 x 16) outputs x B.
    assert rows[0]["flops"] == 2 * (5 * 7 * 7 * 3) * (8 * 8 * 16 * 16) * 2
    assert stage_costs(enc.train(), (3, 8, 32, 32))[0]["output_shape"][0] == 1  # one clip: batch 1
    with pytest.raises(ValueError, match="input_shape"):
        stage_costs(enc, (1, 8, 32, 32, 1))
