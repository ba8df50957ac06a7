"""Loading the slow encoder from our checkpoints and from mmaction/TPN, mmaction2, pySlowFast and pytorchvideo
weights; exporting it to mmaction2 and pySlowFast; safe (weights_only) loading only."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vthcl_lib import checkpoints
from vthcl_lib.checkpoints import (
    FORMAT_MMACTION,
    FORMAT_MMACTION2,
    FORMAT_PYSLOWFAST,
    FORMAT_PYTORCHVIDEO,
    FORMAT_SLOW_ENCODER,
    FORMAT_TRAINING,
    SLOWFAST_SUFFIX,
    export_slow_encoder,
    load_slow_encoder,
    map_mmaction_keys,
)
from vthcl_lib.config import ModelConfig, resolve_config
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


def test_shape_mismatch_is_reported_and_refused_unless_partial_allowed(tmp_path):
    enc = _randomised(18)
    state = enc.state_dict()
    state["res5.0.conv_a.weight"] = torch.zeros(3, 3, 1, 1, 1)
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    cfg = ModelConfig(depth=18, base_width=4)
    with pytest.raises(ValueError, match=r"res5\.0\.conv_a\.weight: file \(3, 3, 1, 1, 1\) vs model"):
        load_slow_encoder(path, model_cfg=cfg)
    loaded, report = load_slow_encoder(path, model_cfg=cfg, allow_partial=True)
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
    with pytest.raises(ValueError, match="running_mean"):
        load_slow_encoder(path)
    _, report = load_slow_encoder(path, allow_partial=True)
    assert not report.bn_stats_present
    assert "stem.bn.running_mean" in report.missing and "recalibrate" in str(report)
    _, full = load_slow_encoder(tmp_path / "no_stats.pt", model_cfg=ModelConfig(depth=18, base_width=4),
                                allow_partial=True)
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


# --------------------------------------------------------------------------- other code bases (issue 14)
# The source networks are minimal plain-torch re-writes of mmaction2, TPN, pySlowFast and pytorchvideo
# (attribute names, shapes and forward order of the originals); key_lists.json holds their key names
# and shapes at the published widths, with the repository, path and commit each was read from.
FIXTURES = Path(__file__).parent / "fixtures" / "interop"
_spec = importlib.util.spec_from_file_location("source_networks", FIXTURES / "source_networks.py")
src = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(src)
KEY_LISTS = json.loads((FIXTURES / "key_lists.json").read_text())
OUR_R50_KEYS = 318  # 53 convs + 53 BNs x 5 (weight, bias, running_mean, running_var, num_batches_tracked)


def _fill(model, seed=0):
    """Random values in every tensor (BN statistics too), so any misplaced tensor changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            r = torch.rand(t.shape, generator=g)
            if name.endswith("running_var"):
                t.copy_(r + 0.5)
            elif name.endswith(("running_mean", "bias")):
                t.copy_(0.2 * (r - 0.5))
            elif t.dim() == 1:  # BN weight
                t.copy_(0.5 + r)
            else:  # conv / linear: fan-in scaled, so 16 blocks keep activations finite
                t.copy_((r - 0.5) * (6.0 / t[0].numel()) ** 0.5)
    return model.eval()


def _save(state, wrapper, path):
    torch.save({wrapper: state, "meta": {"note": "synthetic"}} if wrapper else state, path)
    return path


def test_key_lists_are_what_the_source_networks_define():
    with torch.device("meta"):
        models = src.reference_models()
    assert set(models) == set(KEY_LISTS)
    for name, (model, wrapper, source) in models.items():
        entry = KEY_LISTS[name]
        assert entry["wrapper"] == wrapper and entry["source"] == source and entry["source"]["repo"]
        assert src.key_list(model) == entry["tensors"], name
    # the file: mmaction2 SlowOnly-R50 in Recognizer3D, 318 backbone tensors and a 400-way head
    mm = {k: tuple(s) for k, s in KEY_LISTS["mmaction2_slowonly_r50"]["tensors"]}
    assert sum(k.startswith("backbone.") for k in mm) == OUR_R50_KEYS
    assert mm["backbone.layer1.0.downsample.conv.weight"] == (256, 64, 1, 1, 1)
    assert mm["backbone.layer3.0.conv1.conv.weight"] == (256, 512, 3, 1, 1)  # res4 reads res3's 512
    assert mm["cls_head.fc_cls.weight"] == (400, 2048)


def _published(name, depth=50):
    """The key list as a state dict of shape-only (meta) tensors, mapped by the importer; our encoder's shapes."""
    entry = KEY_LISTS[name]
    state = {k: torch.empty(s, device="meta") for k, s in entry["tensors"]}
    unpacked = checkpoints._unpack({entry["wrapper"]: state, "meta": {}}, Path(f"{name}.pth"))
    with torch.device("meta"):
        ours = build_encoder(depth, "slow", base_width=64).state_dict()
    mapped = {k: tuple(v.shape) for k, v in unpacked.state.items()}
    return unpacked, mapped, {k: tuple(v.shape) for k, v in ours.items()}


@pytest.mark.parametrize("name, fmt", [("mmaction2_slowonly_r50", FORMAT_MMACTION2),
                                       ("mmaction_tpn_slowonly_r50", FORMAT_MMACTION),
                                       ("pyslowfast_slow_r50", FORMAT_PYSLOWFAST),
                                       ("pytorchvideo_slow_r50", FORMAT_PYTORCHVIDEO)])
def test_published_key_lists_map_onto_every_encoder_tensor(name, fmt):
    unpacked, mapped, ours = _published(name)
    assert unpacked.source_format == fmt and not unpacked.slowfast
    assert mapped == ours and len(ours) == OUR_R50_KEYS  # every name, every shape, at the published width
    with torch.device("meta"):  # the architecture, from the weights alone
        inferred = checkpoints._infer_encoder(unpacked.state, Path(name))
    assert (inferred.depth, inferred.width, inferred.temporal_kernels) == (50, 64, (1, 1, 1, 3, 3))
    assert len(unpacked.unexpected) == 2  # the classifier head, reported by name
    assert all(k.startswith(("cls_head.", "head.", "blocks.5.")) for k in unpacked.unexpected)


@pytest.mark.parametrize("name", ["mmaction2_slowfast_r50", "pyslowfast_slowfast_r50"])
def test_published_slowfast_key_lists_give_the_slow_pathway(name):
    unpacked, mapped, ours = _published(name)
    assert unpacked.slowfast and unpacked.source_format.endswith(SLOWFAST_SUFFIX)
    assert mapped.keys() == ours.keys()
    wider = {k for k in ours if mapped[k] != ours[k]}  # first block of each stage reads [slow | lateral]
    assert wider == {f"res{s}.0.{m}.weight" for s in range(2, 6) for m in ("conv_a", "shortcut.conv")}
    assert all(mapped[k][1] > ours[k][1] and mapped[k][2:] == ours[k][2:] for k in wider)
    side = [k for k, _ in KEY_LISTS[name]["tensors"] if "fast_path" in k or "lateral" in k or "pathway1" in k
            or "_fuse." in k]
    assert sorted(unpacked.ignored) == sorted(side) and len(side) > 300


def test_published_mmaction2_r18_differs_from_ours_only_in_inflated_second_convs():
    unpacked, mapped, ours = _published("mmaction2_slowonly_r18", depth=18)
    assert unpacked.source_format == FORMAT_MMACTION2 and mapped.keys() == ours.keys()
    inflated = {f"res{s}.{b}.conv_b.weight": ((w, w, 3, 3, 3), (w, w, 1, 3, 3))
                for s, w in ((4, 256), (5, 512)) for b in (0, 1)}
    assert {k: (mapped[k], ours[k]) for k in ours if mapped[k] != ours[k]} == inflated


def test_mmaction2_slowonly_r50_loads_318_of_318_and_computes_what_the_source_network_computes(tmp_path):
    torch.manual_seed(0)
    source = _fill(src.MMRecognizer3D(src.MMResNet3dPathway(50), 2048))  # mmaction2 widths: stem 64
    path = _save(source.state_dict(), "state_dict", tmp_path / "slowonly_r50_8x8x1_kinetics400.pth")
    # with the paper_r50 model config: the case that loaded 0 of 318 before (without it: inferred, tested above)
    encoder, report = load_slow_encoder(path, model_cfg=resolve_config("paper_r50").model)
    assert report.source_format == FORMAT_MMACTION2
    assert (report.loaded, report.total, report.depth) == (318, 318, 50) and report.clean is False
    assert report.unexpected == ["cls_head.fc_cls.weight", "cls_head.fc_cls.bias"] and report.complete
    assert encoder.width == 64 and encoder.temporal_kernels == (1, 1, 1, 3, 3)
    x = torch.randn(2, 3, 2, 32, 32)  # small clips: the weights are full size, the check is exact anyway
    with torch.no_grad():
        ours = encoder.eval()(x)["res5"]
        theirs = source.backbone(x)
    assert ours.shape == theirs.shape == (2, 2048, 2, 1, 1)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("kind", ["tpn", "pyslowfast", "pytorchvideo"])
def test_other_single_pathway_sources_compute_the_same(tmp_path, kind):
    torch.manual_seed(1)
    if kind == "tpn":
        source, body, wrapper, fmt = src.TPNResNetSlow(base=8), None, "state_dict", FORMAT_MMACTION
        source = _fill(src.MMRecognizer3D(source, 256))
        body = source.backbone
    elif kind == "pyslowfast":
        source = body = _fill(src.PSFResNet(50, width_per_group=8))
        wrapper, fmt = "model_state", FORMAT_PYSLOWFAST
    else:
        source = body = _fill(src.PTVNet(stem_dim_out=8))
        wrapper, fmt = "model_state", FORMAT_PYTORCHVIDEO
    encoder, report = load_slow_encoder(_save(source.state_dict(), wrapper, tmp_path / f"{kind}.pyth"))
    assert report.source_format == fmt and report.loaded == report.total == OUR_R50_KEYS and report.complete
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(encoder.eval()(x)["res5"], body(x))


@pytest.mark.parametrize("kind", ["mmaction2", "pyslowfast"])
def test_slowfast_slow_pathway_loads_with_laterals_ignored_and_reported(tmp_path, kind):
    torch.manual_seed(2)
    if kind == "mmaction2":
        source = _fill(src.MMRecognizer3D(src.MMResNet3dSlowFast(base_channels=16), 256 + 32))
        state, wrapper = source.state_dict(), "state_dict"
        slow = {k[len("backbone.slow_path."):]: v for k, v in state.items() if k.startswith("backbone.slow_path.")}
        side = [k for k in state if k.startswith("backbone.fast_path.") or "_lateral." in k]
        first_conv = {s: f"layer{s - 1}.0.conv1.conv.weight" for s in range(2, 6)}
    else:
        source = _fill(src.PSFResNet(50, width_per_group=16, slowfast=True))
        state, wrapper = source.state_dict(), "model_state"
        slow = state
        side = [k for k in state if "pathway1" in k or "_fuse." in k]
        first_conv = {s: f"s{s}.pathway0_res0.branch2.a.weight" for s in range(2, 6)}
    encoder, report = load_slow_encoder(_save(state, wrapper, tmp_path / "slowfast.pth"))
    assert report.source_format.endswith(SLOWFAST_SUFFIX)
    assert report.loaded == report.total == OUR_R50_KEYS and report.complete
    assert sorted(report.ignored) == sorted(side) and side  # fast pathway and laterals, by name
    assert len(report.adapted) == 8 and all("lateral input channels" in a for a in report.adapted)
    ours = encoder.state_dict()
    for stage, key in first_conv.items():
        theirs = slow[key]
        loaded = ours[f"res{stage}.0.conv_a.weight"]
        assert theirs.shape[1] > loaded.shape[1]  # [slow | lateral] input channels in the file
        assert torch.equal(loaded, theirs[:, : loaded.shape[1]])  # slow channels come first
    assert "ADAPTED" in str(report) and "lateral" in str(report)
    if kind == "mmaction2":  # the loaded encoder is mmaction2's slow path fed zero lateral input
        path, x = source.backbone.slow_path, torch.randn(1, 3, 4, 32, 32)
        with torch.no_grad():
            y = path.maxpool(path.conv1(x))
            for i in range(1, 5):  # every layer reads [slow | lateral], the lateral 2 C / channel_ratio 8 wide
                lateral = torch.zeros(y.shape[0], y.shape[1] // 4, *y.shape[2:])
                y = getattr(path, f"layer{i}")(torch.cat([y, lateral], dim=1))
            # the same sums plus zero terms; the wider convs block their sums differently: equal to rounding
            torch.testing.assert_close(encoder.eval()(x)["res5"], y, rtol=1e-5, atol=1e-6)


def test_partial_external_file_is_refused_unless_allowed(tmp_path):
    torch.manual_seed(3)
    source = _fill(src.MMRecognizer3D(src.MMResNet3dPathway(50, base_channels=8), 256))
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("backbone.layer4.2.")}
    path = _save(state, "state_dict", tmp_path / "cut.pth")
    with pytest.raises(ValueError, match="allow_partial") as err:
        load_slow_encoder(path)
    assert "cut.pth" in str(err.value) and "res5.2.conv_a.weight" in str(err.value)
    assert "fills 300 of 318" in str(err.value)
    encoder, report = load_slow_encoder(path, allow_partial=True)
    assert report.loaded == 300 and "res5.2.conv_c.weight" in report.missing and not report.complete
    # a deeper file (an extra block the model has no place for) is refused too
    bigger = dict(source.state_dict())
    bigger["backbone.layer3.6.conv1.conv.weight"] = torch.zeros(16, 128, 3, 1, 1)
    with pytest.raises(ValueError, match="no place in the model"):
        load_slow_encoder(_save(bigger, "state_dict", tmp_path / "r101ish.pth"))


def test_mmaction2_inflated_r18_shapes_are_reported_by_name(tmp_path):
    torch.manual_seed(4)
    source = _fill(src.MMRecognizer3D(src.MMResNet3dPathway(18, base_channels=8), 64))  # conv2 is 3x3x3
    path = _save(source.state_dict(), "state_dict", tmp_path / "slowonly_r18.pth")
    with pytest.raises(ValueError) as err:
        load_slow_encoder(path)
    message = str(err.value)
    assert "res4.0.conv_b.weight: file (32, 32, 3, 3, 3) vs model (32, 32, 1, 3, 3)" in message
    _, report = load_slow_encoder(path, allow_partial=True)
    assert sorted(n for n, _, _ in report.mismatched) == [
        "res4.0.conv_b.weight", "res4.1.conv_b.weight", "res5.0.conv_b.weight", "res5.1.conv_b.weight"]
    assert all(mine == (c[0], c[1], 1, 3, 3) for _, c, mine in report.mismatched)


def test_pyslowfast_wide_r18_is_reported_not_loaded(tmp_path):
    state = src.PSFResNet(18, width_per_group=8).state_dict()  # pySlowFast's R18: stages 4x the stem's width
    with pytest.raises(ValueError, match=r"res2\.0\.conv_a\.weight: file \(32, 8, 1, 3, 3\) vs model \(8, 8"):
        load_slow_encoder(_save(state, "model_state", tmp_path / "r18.pyth"))


def _run_dir(tmp_path, depth, width=8):
    enc = _fill(build_encoder(depth, "slow", base_width=width), seed=depth)
    cfg = ModelConfig(depth=depth, base_width=width)
    run = tmp_path / f"run_r{depth}"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"slow_encoder": enc.state_dict(), "model": dataclasses.asdict(cfg), "config": {}},
               run / "checkpoints" / "slow_encoder.pt")
    return run, enc


@pytest.mark.parametrize("depth", [18, 50])
def test_export_mmaction2_loads_into_the_source_network_and_back(tmp_path, depth):
    run, enc = _run_dir(tmp_path, depth)
    out = export_slow_encoder(run, tmp_path / "vthcl_mmaction2.pth", format="mmaction2")
    saved = torch.load(out, weights_only=True)
    state = saved["state_dict"]
    published = [k for k, _ in KEY_LISTS[f"mmaction2_slowonly_r{depth}"]["tensors"] if k.startswith("backbone.")]
    assert list(state) == published  # their names, their order
    assert "ResNet3dSlowOnly" in saved["meta"]["backbone_cfg"] and "base_channels=8" in saved["meta"]["backbone_cfg"]
    # what mmcv's load_checkpoint does: state_dict, strict=False into the recognizer: only the head is left
    theirs = src.MMRecognizer3D(src.MMResNet3dPathway(depth, base_channels=8), enc.stage_channels["res5"]).eval()
    result = theirs.load_state_dict(state, strict=False)
    assert result.unexpected_keys == [] and sorted(result.missing_keys) == ["cls_head.fc_cls.bias",
                                                                             "cls_head.fc_cls.weight"]
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        if depth == 50:
            assert torch.equal(theirs.backbone(x), enc.eval()(x)["res5"])
        else:  # 3x3x3 with zero outer taps: same sum, other summation order, so equal to rounding
            torch.testing.assert_close(theirs.backbone(x), enc.eval()(x)["res5"], rtol=1e-5, atol=1e-6)
    back, report = load_slow_encoder(out)
    assert report.loaded == report.total and report.clean and len(report.adapted) == (4 if depth == 18 else 0)
    _assert_same(enc, back)


def test_export_pyslowfast_loads_into_the_source_network_and_back(tmp_path):
    run, enc = _run_dir(tmp_path, 50)
    out = export_slow_encoder(run / "checkpoints" / "slow_encoder.pt", tmp_path / "vthcl.pyth", format="pyslowfast")
    saved = torch.load(out, weights_only=True)
    assert "epoch" not in saved and "WIDTH_PER_GROUP: 8" in saved["cfg"] and "ARCH: slow" in saved["cfg"]
    published = [k for k, _ in KEY_LISTS["pyslowfast_slow_r50"]["tensors"] if not k.startswith("head.")]
    assert sorted(saved["model_state"]) == sorted(published)
    theirs = src.PSFResNet(50, width_per_group=8).eval()
    result = theirs.load_state_dict(saved["model_state"], strict=False)  # pySlowFast loads shape-matched keys
    assert result.unexpected_keys == [] and sorted(result.missing_keys) == ["head.projection.bias",
                                                                             "head.projection.weight"]
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(theirs(x), enc.eval()(x)["res5"])
    back, report = load_slow_encoder(out)
    assert report.source_format == FORMAT_PYSLOWFAST and report.clean
    _assert_same(enc, back)


def test_export_refuses_what_the_target_cannot_build(tmp_path):
    run, _ = _run_dir(tmp_path, 18)
    with pytest.raises(ValueError, match="pySlowFast's ResNet-18"):
        export_slow_encoder(run, tmp_path / "x.pyth", format="pyslowfast")
    with pytest.raises(ValueError, match="format="):
        export_slow_encoder(run, tmp_path / "x.pth", format="onnx")
    with pytest.raises(FileNotFoundError, match="slow_encoder.pt"):
        export_slow_encoder(tmp_path, tmp_path / "x.pth")
    assert not (tmp_path / "x.pyth").exists() and not (tmp_path / "x.pth").exists()


class _RunsCode:
    """Unpickling this calls os.mkdir: what a malicious 'checkpoint' would do with os.system."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return os.mkdir, (self.target,)


def test_a_file_that_needs_arbitrary_pickles_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "downloaded.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(ValueError) as err:
        load_slow_encoder(path)
    message = str(err.value)
    assert "downloaded.pth" in message and "mkdir" in message and "run code" in message
    assert not marker.exists()


def test_the_allow_list_is_only_what_our_checkpoints_need(tmp_path):
    path = tmp_path / "stats.pt"  # a float64 numpy array: not in our checkpoints, so not allow-listed
    torch.save({"state_dict": _randomised(18).state_dict(), "stats": np.zeros(3)}, path)
    with pytest.raises(ValueError, match=r"stats\.pt.*Float64DType"):
        load_slow_encoder(path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path)  # the file does need globals
