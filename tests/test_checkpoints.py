"""Loading the slow encoder from our checkpoints and from mmaction/TPN-named weights."""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from vthcl_lib.checkpoints import (
    FORMAT_MMACTION,
    FORMAT_SLOW_ENCODER,
    FORMAT_TRAINING,
    load_slow_encoder,
    map_mmaction_keys,
)
from vthcl_lib.config import ModelConfig
from vthcl_lib.engine import VTHCLNet
from vthcl_lib.models import build_encoder

# Written independently of the module under test: our name fragment -> mmaction's.
OURS_TO_MM = {"conv_a": "conv1", "bn_a": "bn1", "conv_b": "conv2", "bn_b": "bn2", "conv_c": "conv3", "bn_c": "bn3"}


def _randomised(depth: int, base_width: int = 4):
    torch.manual_seed(depth)
    enc = build_encoder(depth, "slow", base_width=base_width)
    with torch.no_grad():
        for name, t in enc.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if "running_var" in name else torch.randn_like(t))
    return enc


def _to_mmaction(state):
    out = {}
    for name, t in state.items():
        parts = name.split(".")
        if parts[0] == "stem":
            new = ["conv1" if parts[1] == "conv" else "bn1", *parts[2:]]
        else:
            layer, block, rest = f"layer{int(parts[0][3]) - 1}", parts[1], parts[2:]
            if rest[0] == "shortcut":
                rest = ["downsample", "0" if rest[1] == "conv" else "1", *rest[2:]]
            else:
                rest = [OURS_TO_MM[rest[0]], *rest[1:]]
            new = [layer, block, *rest]
        out["module.backbone." + ".".join(new)] = t.clone()
    return out


def _assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_slow_encoder_pt(tmp_path):
    cfg = ModelConfig(depth=18, base_width=4, fast_ratio=0.5)
    enc = _randomised(18)
    path = tmp_path / "slow_encoder.pt"
    torch.save({"slow_encoder": enc.state_dict(), "model": dataclasses.asdict(cfg), "config": {}}, path)
    loaded, report = load_slow_encoder(path)
    _assert_same(enc, loaded)
    assert report.source_format == FORMAT_SLOW_ENCODER and report.clean and report.bn_stats_present
    assert report.loaded == report.total == len(enc.state_dict())


def test_round_trip_training_checkpoint_ignores_fast_and_heads(tmp_path):
    cfg = ModelConfig(depth=18, base_width=4, fast_ratio=0.5, embed_dim=8)
    torch.manual_seed(1)
    net = VTHCLNet(cfg)
    path = tmp_path / "last.pt"
    # the engine stores numpy RNG state, which the safe (weights_only) loader refuses
    torch.save({"model": net.state_dict(), "rng": {"numpy": np.random.get_state()},
                "config": {"model": dataclasses.asdict(cfg)}}, path)
    loaded, report = load_slow_encoder(path)
    _assert_same(net.slow, loaded)
    assert report.source_format == FORMAT_TRAINING and report.clean
    assert report.ignored and all(k.startswith(("fast.", "heads_")) for k in report.ignored)


@pytest.mark.parametrize("depth", [18, 50])
def test_mmaction_layout_loads_with_nothing_missing(tmp_path, depth):
    enc = _randomised(depth)
    mm = _to_mmaction(enc.state_dict())
    assert any(".conv3." in k for k in mm) == (depth == 50)
    mapped, unmapped = map_mmaction_keys(mm, depth)
    assert unmapped == [] and mapped.keys() == enc.state_dict().keys()

    path = tmp_path / f"vthcl_r{depth}.pth"
    torch.save({"state_dict": mm, "meta": {"epoch": 200}}, path)
    loaded, report = load_slow_encoder(path)  # depth and width inferred from the keys
    assert loaded.depth == depth and report.depth == depth
    assert report.source_format == FORMAT_MMACTION
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    _assert_same(enc, loaded)


def test_extra_head_is_reported_as_unexpected(tmp_path, caplog):
    enc = _randomised(18)
    mm = _to_mmaction(enc.state_dict())
    mm["cls_head.fc_cls.weight"] = torch.zeros(101, enc.stage_channels["res5"])
    path = tmp_path / "finetuned.pth"
    torch.save(mm, path)
    with caplog.at_level(logging.WARNING, logger="vthcl_lib.checkpoints"):
        loaded, report = load_slow_encoder(path)
    assert report.unexpected == ["cls_head.fc_cls.weight"] and report.missing == []
    assert "UNEXPECTED" in str(report) and "cls_head.fc_cls.weight" in str(report)
    assert any("cls_head.fc_cls.weight" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    _assert_same(enc, loaded)
    with pytest.raises(ValueError, match="cls_head"):
        load_slow_encoder(path, strict=True)


def test_shape_mismatch_is_reported_not_raised(tmp_path):
    enc = _randomised(18)
    state = enc.state_dict()
    state["res5.0.conv_a.weight"] = torch.zeros(3, 3, 1, 1, 1)
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    cfg = ModelConfig(depth=18, base_width=4)
    loaded, report = load_slow_encoder(path, model_cfg=cfg)
    model_shape = tuple(loaded.res5[0].conv_a.weight.shape)
    assert report.mismatched == [("res5.0.conv_a.weight", (3, 3, 1, 1, 1), model_shape)]
    assert report.missing == ["res5.0.conv_a.weight"] and not report.clean
    assert "SHAPE MISMATCH" in str(report)
    assert torch.equal(loaded.stem.conv.weight, enc.stem.conv.weight)  # the rest loaded


def test_missing_bn_statistics_are_detected(tmp_path):
    enc = _randomised(18)
    state = {k: v for k, v in enc.state_dict().items() if "running_" not in k}
    path = tmp_path / "no_stats.pt"
    torch.save(state, path)
    _, report = load_slow_encoder(path)
    assert not report.bn_stats_present
    assert "stem.bn.running_mean" in report.missing and "recalibrate" in str(report)
    _, full = load_slow_encoder(tmp_path / "no_stats.pt", model_cfg=ModelConfig(depth=18, base_width=4))
    assert full.loaded == len(state)


def test_not_a_checkpoint_names_the_file(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a checkpoint")
    with pytest.raises(ValueError, match="notes.txt"):
        load_slow_encoder(text)
    listing = tmp_path / "list.pt"
    torch.save([1, 2, 3], listing)
    with pytest.raises(ValueError, match="list.pt"):
        load_slow_encoder(listing)
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_slow_encoder(tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="depth"):
        map_mmaction_keys({}, 34)
