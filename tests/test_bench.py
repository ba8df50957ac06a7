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
