"""The ablation points of Tables 2a/2b: configs, where each is pre-trained, and one scored point at ci."""
from __future__ import annotations

from pathlib import Path

import pytest

from vthcl_lib.ablation import (
    ABLATION_POINTS,
    TABLE_2A,
    TABLE_2B,
    ablation_config,
    point_name,
    point_run_root,
    score_point,
    trend,
)
from vthcl_lib.config import resolve_config
from vthcl_lib.synthetic import ensure_synthetic


def test_points_and_configs_follow_the_papers_tables():
    assert TABLE_2A == ((1, 1), (2, 1), (4, 1)) and TABLE_2B == ((2, 1), (2, 2), (2, 3))
    assert ABLATION_POINTS == ((1, 1), (2, 1), (4, 1), (2, 2), (2, 3))  # (2, 1) once
    cfg = resolve_config("demo")
    four = ablation_config(cfg, 4, 1, epochs=3)
    assert (four.data.alpha, four.model.levels, four.train.epochs) == (4, 1, 3)
    assert (four.data.window, four.data.tau) == (cfg.data.window, cfg.data.tau)  # only the ablated settings change
    with pytest.raises(ValueError, match="divisible"):
        ablation_config(cfg, 3, 1)
    assert point_name(4, 1) == "alpha4_D1"
    main, other = Path("runs/demo/pretrain"), Path("runs/demo/ablations")
    assert point_run_root(cfg, 2, 3, pretrain_root=main, ablation_root=other) == main  # the preset's own point
    assert point_run_root(cfg, 2, 3, pretrain_root=main, ablation_root=other, epochs=5) == other / "alpha2_D3"
    assert point_run_root(cfg, 1, 1, pretrain_root=main, ablation_root=other) == other / "alpha1_D1"


def test_score_point_pretrains_once_and_scores_both_protocols(tmp_path):
    cfg = resolve_config("ci", data_root=str(tmp_path / "data"), run_dir=str(tmp_path / "runs"), splits=(1,))
    ensure_synthetic(cfg.data.data_root, cfg.synthetic, progress=False)
    kwargs = dict(pretrain_root=tmp_path / "pretrain", ablation_root=tmp_path / "ablations", progress=False)
    rows = score_point(cfg, 1, 1, 0, **kwargs)
    assert [r["protocol"] for r in rows] == ["linear", "finetune"]
    assert all(r["alpha"] == 1 and r["levels"] == 1 and r["dataset"] == "ucf101" and 0 <= r["top1"] <= 1 for r in rows)
    checkpoint = tmp_path / "ablations" / "alpha1_D1" / "seed0" / "checkpoints" / "slow_encoder.pt"
    stamp = checkpoint.stat().st_mtime_ns
    again = score_point(cfg, 1, 1, 0, protocols=("finetune",), **kwargs)
    assert checkpoint.stat().st_mtime_ns == stamp  # found, not trained again
    assert again[0]["top1"] == rows[1]["top1"]  # and the same fine-tuning result
    with pytest.raises(ValueError, match="knn"):
        score_point(cfg, 1, 1, 0, protocols=("knn",), **kwargs)


def _rows(points_scores, protocol="finetune"):
    return [{"alpha": a, "levels": d, "seed": s, "protocol": protocol, "top1": t / 100}
            for (a, d), scores in points_scores.items() for s, t in enumerate(scores)]


def test_trend_reads_the_gap_against_the_seeds_noise():
    rows = _rows({(1, 1): [50, 52, 54], (2, 1): [55, 56, 57], (4, 1): [60, 61, 62]})
    out = trend(rows, TABLE_2A, "finetune", paper_gap=1.8)
    assert out["means"] == pytest.approx([52, 56, 61])
    assert out["gap"] == pytest.approx(9.0)
    # standard errors: sd 2 / sqrt 3 and sd 1 / sqrt 3; noise is twice the s.e. of the difference
    assert out["noise"] == pytest.approx(2 * ((4 / 3) + (1 / 3)) ** 0.5)
    assert out["monotone"] and out["verdict"] == "same direction" and out["seeds"] == 3
    assert trend(rows, TABLE_2A, "finetune", paper_gap=-1.0)["verdict"] == "opposite direction"


def test_trend_calls_a_small_gap_noise_and_sees_a_non_monotone_path():
    rows = _rows({(2, 1): [50, 60, 55], (2, 2): [40, 41, 42], (2, 3): [56, 50, 62]})
    out = trend(rows, TABLE_2B, "finetune", paper_gap=1.1)
    assert out["gap"] == pytest.approx(1.0) and out["verdict"] == "within noise" and not out["monotone"]
    one_seed = _rows({(2, 1): [50], (2, 2): [40], (2, 3): [70]})
    assert trend(one_seed, TABLE_2B, "finetune", paper_gap=1.1)["verdict"] == "too few seeds"
    with pytest.raises(ValueError, match="no 'linear' rows for alpha=2, D=1"):
        trend(rows, TABLE_2B, "linear", paper_gap=1.1)
