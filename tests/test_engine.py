"""The pre-training engine: schedule, model, metrics, checkpoints, exact resume after a kill, torchrun."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vthcl_lib.config import resolve_config
from vthcl_lib.contrastive import HierarchicalContrast
from vthcl_lib.engine import VTHCLNet, bank_digest, checkpoint_is_complete, lr_factor, pretrain
from vthcl_lib.synthetic import ensure_synthetic
from vthcl_lib.train import main as train_main, parse_overrides

ROOT = Path(__file__).resolve().parents[1]
CI_PARAMS = str(ROOT / "notebooks" / "params" / "ci.yaml")


@pytest.fixture(scope="module")
def ci_data():
    cfg = resolve_config("ci", base_dir=ROOT)
    ensure_synthetic(cfg.data.data_root, cfg.synthetic, progress=False)
    return cfg.data.data_root


def _cfg(ci_data, run_dir, **overrides):
    return resolve_config("ci", data_root=ci_data, run_dir=str(run_dir), progress=False, **overrides)


def test_lr_schedule_is_warmup_then_half_cosine():
    assert lr_factor(0, 100, 0) == 1.0
    assert lr_factor(50, 100, 0) == pytest.approx(0.5)
    assert lr_factor(100, 100, 0) == pytest.approx(0.0)
    assert [lr_factor(s, 100, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 100, 4) == 1.0


@pytest.mark.parametrize("levels, names", [(1, ["res5"]), (2, ["res4", "res5"]), (3, ["res3", "res4", "res5"])])
def test_model_embeds_each_level_of_both_pathways(levels, names):
    cfg = resolve_config("ci", levels=levels)
    net = VTHCLNet(cfg.model)
    z_slow, z_fast = net(torch.randn(2, 3, 4, 32, 32), torch.randn(2, 3, 8, 32, 32))
    assert sorted(z_slow) == sorted(z_fast) == names
    for z in [*z_slow.values(), *z_fast.values()]:
        assert z.shape == (2, cfg.model.embed_dim)
        torch.testing.assert_close(z.norm(dim=1), torch.ones(2))


def test_pretrain_writes_metrics_and_checkpoints_and_resumes(ci_data, tmp_path, caplog):
    cfg = _cfg(ci_data, tmp_path / "run", epochs=2)
    metrics = pretrain(cfg)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert sorted(metrics["loss_per_level"]) == ["res3", "res4", "res5"]
    assert all(len(v) == 2 for v in metrics["loss_per_level"].values())
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["loss_per_level"] == metrics["loss_per_level"]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert {"model", "contrast", "optimizer", "scheduler", "epoch", "rng", "config", "history"} <= set(state)
    assert state["epoch"] == 2 and any(k.startswith("banks.res5_slow") for k in state["contrast"])
    assert checkpoint_is_complete(cfg)
    encoder = torch.load(tmp_path / "run" / "checkpoints" / "slow_encoder.pt", weights_only=False)
    assert any(k.startswith("res5.") for k in encoder["slow_encoder"])
    with caplog.at_level("WARNING", logger="vthcl_lib.engine"):
        again = pretrain(cfg)  # same run_dir: resumes, nothing left to do
    assert again["epochs"] == metrics["epochs"]
    assert "resuming" in caplog.text


def test_resume_refuses_other_settings(ci_data, tmp_path):
    pretrain(_cfg(ci_data, tmp_path / "run", epochs=1))
    with pytest.raises(ValueError, match="other model settings"):
        pretrain(_cfg(ci_data, tmp_path / "run", epochs=1, base_width=4))
    assert not checkpoint_is_complete(_cfg(ci_data, tmp_path / "run", epochs=3))


def _train_cmd(run_dir, ci_data, *extra):
    return [sys.executable, "-m", "vthcl_lib.train", "--config", CI_PARAMS, f"run_dir={run_dir}",
            f"data_root={ci_data}", "progress=false", *extra]


def test_killed_run_resumes_to_bit_identical_weights(ci_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    epochs = "epochs=8"
    full = tmp_path / "full"
    subprocess.run(_train_cmd(full, ci_data, epochs), check=True, env=env, cwd=ROOT, capture_output=True, timeout=300)

    cut = tmp_path / "cut"
    proc = subprocess.Popen(_train_cmd(cut, ci_data, epochs), env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = cut / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_after = torch.load(checkpoint, weights_only=False)["epoch"]
    assert 1 <= killed_after < 8, "the kill must land after a checkpoint and before the end"
    done = subprocess.run(_train_cmd(cut, ci_data, epochs), check=True, env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert f"resuming '{checkpoint}' after epoch {killed_after}" in done.stderr

    a = torch.load(full / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(checkpoint, weights_only=False)
    for part in ("model", "contrast"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after resume"


def test_torchrun_two_ranks_keep_identical_banks(ci_data, tmp_path):
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "vthcl_lib.train", "--config", CI_PARAMS, f"run_dir={run_dir}", f"data_root={ci_data}",
           "epochs=2", "progress=false"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    ranks = [json.loads((run_dir / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["bank_digest"] == ranks[1]["bank_digest"]
    cfg = _cfg(ci_data, run_dir)
    untouched = HierarchicalContrast.from_config(cfg.contrast, num_items=24, levels=("res3", "res4", "res5"),
                                                 dim=cfg.model.embed_dim, generator=torch.Generator().manual_seed(0))
    assert ranks[0]["bank_digest"] != bank_digest(untouched)  # the banks were trained, identically
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2


def test_cli_reports_bad_input(capsys, tmp_path):
    assert train_main(["--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err
    assert train_main(["--config", CI_PARAMS, "alpha=3"]) == 2
    assert "divisible" in capsys.readouterr().err
    assert train_main(["--config", CI_PARAMS, "job=dance"]) == 2
    assert train_main(["--config", CI_PARAMS, f"data_root={tmp_path / 'nothing'}", f"run_dir={tmp_path / 'r'}"]) == 2
    assert "kinetics400" in capsys.readouterr().err  # a data root without the expected files, named
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["epochs"])
    assert parse_overrides(["RUN_DIR=a=b"]) == {"run_dir": "a=b"}
