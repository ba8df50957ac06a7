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
