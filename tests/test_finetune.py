"""Fine-tuning: initialisations, the step schedule, the classifier, and a real run on the ci corpus."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vthcl_lib.config import resolve_config
from vthcl_lib.engine import pretrain
from vthcl_lib.finetune import VideoClassifier, finetune, init_slow_encoder, lr_at
from vthcl_lib.models import build_encoder
from vthcl_lib.synthetic import ensure_synthetic

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ci_data():
    cfg = resolve_config("ci", base_dir=ROOT)
    ensure_synthetic(cfg.data.data_root, cfg.synthetic, progress=False)
    return cfg.data.data_root


def _cfg(ci_data, run_dir, **overrides):
    return resolve_config("ci", data_root=ci_data, run_dir=str(run_dir), progress=False, **overrides)


def test_paper_schedule_divides_by_ten_at_40_and_80():
    cfg = resolve_config("paper_r18")
    assert (cfg.finetune.finetune_epochs, cfg.finetune.finetune_batch_size) == (100, 64)
    assert [lr_at(e, cfg) for e in (0, 39.9, 40, 79.9, 80, 99)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    warm = resolve_config("paper_r18", finetune_warmup_epochs=2.0)
    assert lr_at(0.0, warm) < lr_at(1.0, warm) < 0.1 == pytest.approx(lr_at(2.0, warm))


def test_bad_finetune_settings_name_the_parameter():
    with pytest.raises(ValueError, match="finetune_milestones"):
        resolve_config("ci", finetune_milestones=(8, 4))
    with pytest.raises(ValueError, match="dropout"):
        resolve_config("ci", dropout=1.0)
    with pytest.raises(ValueError, match="splits"):
        resolve_config("ci", splits=(4,))


def test_random_init_is_seeded_and_loaded_inits_report(tmp_path):
    cfg = resolve_config("ci")
    a, report = init_slow_encoder(cfg, "random", seed=3)
    b, _ = init_slow_encoder(cfg, "random", seed=3)
    c, _ = init_slow_encoder(cfg, "random", seed=4)
    assert report is None
    assert torch.equal(a.stem.conv.weight, b.stem.conv.weight)
    assert not torch.equal(a.stem.conv.weight, c.stem.conv.weight)
    path = tmp_path / "plain.pt"
    torch.save(a.state_dict(), path)
    loaded, report = init_slow_encoder(cfg, "external", checkpoint=path)
    assert report.clean and report.bn_stats_present and report.loaded == report.total
    assert torch.equal(loaded.res5[0].conv_a.weight, a.res5[0].conv_a.weight)
    with pytest.raises(ValueError, match="needs checkpoint"):
        init_slow_encoder(cfg, "vthcl")
    with pytest.raises(ValueError, match="init="):
        init_slow_encoder(cfg, "imagenet")


def test_classifier_pools_the_chosen_level_and_applies_dropout_only_in_training():
    torch.manual_seed(0)
    model = VideoClassifier(build_encoder(18, "slow", base_width=4), 5, dropout=0.5)
    x = torch.randn(2, 3, 4, 32, 32)
    model.eval()
    assert model(x).shape == (2, 5)
    torch.testing.assert_close(model(x), model(x))
    pooled = model.encoder(x)["res5"].mean(dim=(2, 3, 4))
    torch.testing.assert_close(model(x), model.fc(pooled))
    with pytest.raises(ValueError, match="num_classes"):
        VideoClassifier(build_encoder(18, "slow", base_width=4), 1)


def test_finetune_runs_splits_from_random_and_pretrained_init(ci_data, tmp_path):
    cfg = _cfg(ci_data, tmp_path / "pre", epochs=1, finetune_epochs=2, finetune_batch_size=4, finetune_lr=0.05,
               finetune_milestones=(1,))
    pretrain(cfg)
    encoder, report = init_slow_encoder(cfg, "vthcl", checkpoint=Path(cfg.run_dir) / "checkpoints" / "slow_encoder.pt")
    assert report.clean
    out = finetune(cfg, encoder, split=2, seed=1, progress=False)
    assert out["split"] == 2 and out["seed"] == 1 and out["dataset"] == "ucf101"
    assert out["num_classes"] == 8 and out["num_test"] > 0
    assert 0.0 <= out["clip_top1"] <= 1.0 and out["top1"] == out["video_top1"]
    assert [h["lr"] for h in out["history"]] == pytest.approx([0.05, 0.005])
    again = finetune(cfg, init_slow_encoder(cfg, "vthcl", checkpoint=report.path)[0], split=2, seed=1, progress=False)
    assert again["history"] == out["history"] and again["top1"] == out["top1"]  # deterministic on a CPU
    hmdb = finetune(cfg, init_slow_encoder(cfg, "random", seed=0)[0], dataset="hmdb51", split=1, progress=False)
    assert hmdb["dataset"] == "hmdb51" and len(hmdb["history"]) == 2
