"""The benchmark runs end to end on a tiny corpus and reports every figure (never asserts on speed)."""
from __future__ import annotations

import dataclasses

from vthcl_lib import bench
from vthcl_lib.config import resolve_config
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
    assert "ratio pair(one decode) / fast alone" in report and "loader cache_workers2" in report


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
