"""The paper_small preset (issue 14, point 5): the paper's own objective at a CPU scale on the demo corpus."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from vthcl_lib import engine, report
from vthcl_lib.config import PRESETS, load_params_file, resolve_config
from vthcl_lib.contrastive import HierarchicalContrast
from vthcl_lib.synthetic import ensure_synthetic

ROOT = Path(__file__).resolve().parents[1]


def test_paper_small_keeps_the_papers_objective():
    cfg, paper = resolve_config("paper_small"), resolve_config("paper_r18")
    c, t, d = cfg.contrast, cfg.train, cfg.data
    assert "paper_small" in PRESETS
    assert (c.positives, c.negatives, c.loss, c.in_batch_negatives) == ("bank", "shared", "softmax", False)
    assert c.temperature == paper.contrast.temperature == 0.07
    assert c.mask_own_index and c.level_weights == paper.contrast.level_weights and cfg.model.levels == 3
    assert (t.optimizer, t.momentum) == ("sgd", paper.train.momentum) and t.momentum > 0
    assert t.weight_decay == paper.train.weight_decay
    assert d.color_per_view is False  # one shared augmentation draw for both views
    assert cfg.model.head == "mlp" and cfg.model.embed_dim == paper.model.embed_dim


def test_paper_small_schedule_is_the_papers_half_cosine():
    t = resolve_config("paper_small").train
    total = 10 * t.epochs
    warmup = int(round(t.warmup_epochs * 10))
    factors = [engine.lr_factor(s, total, warmup) for s in range(total + 1)]
    assert max(factors) == pytest.approx(1.0) and factors[-1] == pytest.approx(0.0)
    after = factors[warmup:]
    assert all(a >= b for a, b in zip(after, after[1:]))  # no steps: monotone decay after the warm-up


def test_paper_small_reads_the_demo_corpus_and_counts_as_synthetic():
    cfg, demo = resolve_config("paper_small"), resolve_config("demo")
    assert cfg.data.data_root == demo.data.data_root == "data/synthetic/demo"
    assert cfg.synthetic == demo.synthetic  # same stamp: the demo corpus is reused, never regenerated
    assert cfg.data.decode_size == demo.data.decode_size  # and so is its frame cache
    assert cfg.run_dir == "runs/paper_small"
    assert report.scale_of("paper_small") == "synthetic (paper_small)"
    assert report.scale_of("paper_r50") == "real data"


def test_notebooks_treat_only_the_full_paper_presets_as_real_data():
    for path in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        assert 'startswith(\\"paper' not in path.read_text(), f"{path.name}: paper_small would count as real data"


def test_paper_small_params_file_and_make_target():
    params = load_params_file(ROOT / "notebooks" / "params" / "paper_small.yaml")
    assert params["preset"] == "paper_small"
    make = (ROOT / "Makefile").read_text()
    target = re.search(r"^demo-paper-small:.*?(?=^\S|\Z)", make, flags=re.S | re.M).group(0)
    assert "notebooks/params/paper_small.yaml" in make and "07_linear_probe_and_retrieval" in target
    assert "SEEDS" in target


def test_a_tiny_pretraining_at_paper_small_settings_updates_the_banks(tmp_path):
    ci = resolve_config("ci", base_dir=ROOT)
    ensure_synthetic(ci.data.data_root, ci.synthetic, progress=False)
    cfg = resolve_config(
        "paper_small", data_root=ci.data.data_root, run_dir=str(tmp_path / "run"), progress=False, epochs=1,
        max_steps_per_epoch=2, batch_size=4, window=16, tau=4, decode_size=(32, 32), crop_size=32, base_width=4,
        embed_dim=16, num_negatives=8)
    metrics = engine.pretrain(cfg)
    state = engine.load_checkpoint(tmp_path / "run" / "checkpoints" / engine.CHECKPOINT_NAME)
    assert state["optimizer"]["param_groups"][0]["momentum"] == cfg.train.momentum
    start = HierarchicalContrast.from_config(  # the banks as they were before the first step
        cfg.contrast, num_items=state["contrast"]["banks.res5_slow.weight"].shape[0],
        levels=("res3", "res4", "res5"), dim=16, generator=torch.Generator().manual_seed(cfg.seed))
    for key, before in start.state_dict().items():
        if key.startswith("banks."):
            changed = (state["contrast"][key] != before).any(dim=1)
            assert int(changed.sum()) == 2 * 4, key  # two steps of four videos, every other row untouched
    record = metrics["epochs"][0]
    assert all(f"{k}/bank_cos" in record for k in ("res3", "res4", "res5"))
    assert all(-1.0 <= record[f"{k}/bank_cos"] <= 1.0 for k in ("res3", "res4", "res5"))


def test_bank_positive_probe_records_each_epoch_on_a_subset():
    ci = resolve_config("ci", base_dir=ROOT)
    ensure_synthetic(ci.data.data_root, ci.synthetic, progress=False)
    cfg = resolve_config(
        "paper_small", data_root=ci.data.data_root, progress=False, epochs=2, batch_size=4, window=16, tau=4,
        decode_size=(32, 32), crop_size=32, base_width=4, embed_dim=16)
    for fixed in (False, True):
        history = engine.bank_positive_probe(cfg, num_videos=8, fixed_clips=fixed)
        assert [r["updates_per_row"] for r in history] == [1, 2]
        for r in history:
            assert r["chance"] == pytest.approx(math.log(8))  # the 7 other rows and the positive
            assert 0.0 <= r["bank_top1"] <= 1.0 and 0.0 <= r["acc"] <= 1.0 and -1.0 <= r["spread"] <= 1.0
            assert math.isfinite(r["loss_term"]) and r["loss_term"] > 0
        # epoch 1 scores against the banks' random start, epoch 2 against rows written in epoch 1
        assert abs(history[0]["bank_cos"]) < 0.25 < history[1]["bank_cos"]


def test_bank_positive_probe_refuses_bad_sizes():
    cfg = resolve_config("paper_small", progress=False)
    with pytest.raises(ValueError, match="num_videos"):
        engine.bank_positive_probe(cfg, num_videos=1)
