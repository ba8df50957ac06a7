"""The pre-training engine: schedule, model, metrics, checkpoints, exact resume after a kill, torchrun,
the run contract (reuse by method and data, changes on resume), divergence, checkpoint faults, accumulation."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vthcl_lib.config import resolve_config
from vthcl_lib.contrastive import HierarchicalContrast
from vthcl_lib import engine
from vthcl_lib.engine import (CheckpointError, SaveError, TrainingDiverged, VTHCLNet, accumulate_gradients, bank_digest,
                              checkpoint_is_complete, ensure_pretrained, load_checkpoint, lr_factor, non_finite_report,
                              pretrain, save_checkpoint)
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
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)  # no pickled objects
    assert {"model", "contrast", "optimizer", "scheduler", "epoch", "rng", "config", "history"} <= set(state)
    assert state["epoch"] == 2 and any(k.startswith("banks.res5_slow") for k in state["contrast"])
    assert checkpoint_is_complete(cfg)
    encoder = torch.load(tmp_path / "run" / "checkpoints" / "slow_encoder.pt", weights_only=True)
    assert any(k.startswith("res5.") for k in encoder["slow_encoder"])
    with caplog.at_level("INFO", logger="vthcl_lib.engine"):
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
    killed_after = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= killed_after < 8, "the kill must land after a checkpoint and before the end"
    done = subprocess.run(_train_cmd(cut, ci_data, epochs), check=True, env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert f"resuming '{checkpoint}' after epoch {killed_after}" in done.stderr

    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(checkpoint, weights_only=True)
    for part in ("model", "contrast"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after resume"


def _repo_like(tmp_path: Path) -> Path:
    """A folder laid out like the repo root for the presets' relative paths: ``data`` links to the repo's."""
    here = tmp_path / "checkout"
    here.mkdir()
    (here / "data").symlink_to(ROOT / "data", target_is_directory=True)
    return here


def _no_training(*args, **kwargs):
    raise AssertionError("ensure_pretrained trained again instead of reusing the finished run")


def test_torchrun_two_ranks_keep_identical_banks_and_the_run_is_reused(ci_data, tmp_path, monkeypatch):
    # the paper's layout: torchrun from a checkout (data_root relative), micro-batches per rank, seed 1;
    # then a notebook (absolute data_root, another cwd) must reuse it without training
    here = _repo_like(tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "vthcl_lib.train", "--config", CI_PARAMS, "run_dir=runs/ci/pretrain/seed1", "seed=1",
           "micro_batch_size=2", "progress=false"]
    out = subprocess.run(cmd, cwd=here, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = here / "runs" / "ci" / "pretrain" / "seed1"
    ranks = [json.loads((run_dir / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["bank_digest"] == ranks[1]["bank_digest"]
    cfg = _cfg(ci_data, run_dir)
    untouched = HierarchicalContrast.from_config(cfg.contrast, num_items=24, levels=("res3", "res4", "res5"),
                                                 dim=cfg.model.embed_dim, generator=torch.Generator().manual_seed(1))
    assert ranks[0]["bank_digest"] != bank_digest(untouched)  # the banks were trained, identically
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2 and metrics["config"]["data"]["data_root"] == "data/synthetic/ci"

    monkeypatch.chdir(ROOT / "notebooks")
    monkeypatch.setattr(engine, "pretrain", _no_training)
    notebook_cfg = resolve_config("ci", base_dir="..", data_root=str(Path(ci_data).resolve()), run_dir=str(run_dir),
                                  seed=1, num_workers=2, progress=False)
    assert Path(notebook_cfg.data.data_root).is_absolute()
    assert ensure_pretrained(notebook_cfg) == run_dir / "checkpoints" / "slow_encoder.pt"


def test_cli_pretraining_is_reused_from_another_cwd_with_an_absolute_data_root(ci_data, tmp_path, monkeypatch):
    here = _repo_like(tmp_path)
    cmd = [sys.executable, "-m", "vthcl_lib.train", "--config", CI_PARAMS, "run_dir=runs/ci/pretrain/seed0"]
    out = subprocess.run(cmd, cwd=here, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = here / "runs" / "ci" / "pretrain" / "seed0"
    before = (run_dir / "checkpoints" / "last.pt").stat().st_mtime_ns
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(engine, "pretrain", _no_training)
    # what a notebook passes: absolute paths; other workers, backend and cache settings do not matter
    cfg = resolve_config("ci", base_dir=ROOT, run_dir=str(run_dir), num_workers=3, backend="pyav", use_cache=False,
                         cache_dir=str(tmp_path / "elsewhere"), failure_budget=0, progress=False)
    assert checkpoint_is_complete(cfg)
    assert ensure_pretrained(cfg).is_file()
    assert (run_dir / "checkpoints" / "last.pt").stat().st_mtime_ns == before
    # what defines the method or the data does matter
    assert not checkpoint_is_complete(replace(cfg, seed=1))
    assert not checkpoint_is_complete(resolve_config("ci", base_dir=ROOT, run_dir=str(run_dir), alpha=4))
    assert not checkpoint_is_complete(resolve_config("ci", base_dir=ROOT, run_dir=str(run_dir), grayscale_prob=0.5))


def test_resume_applies_a_new_lr_and_records_it(ci_data, tmp_path):
    run = tmp_path / "run"
    pretrain(_cfg(ci_data, run, epochs=1, lr=0.01, max_steps_per_epoch=1))
    metrics = pretrain(_cfg(ci_data, run, epochs=3, lr=0.02, weight_decay=1e-3, max_steps_per_epoch=1))
    assert metrics["resumes"] == [{"epoch": 1, "changed": {"epochs": [1, 3], "lr": [0.01, 0.02],
                                                           "weight_decay": [1e-4, 1e-3]}}]
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["resumes"] == metrics["resumes"] and on_disk["config"]["train"]["lr"] == 0.02
    # the lr after epoch 2 is the new lr on the new schedule (3 one-step epochs), not the old one
    assert metrics["epochs"][1]["lr"] == pytest.approx(0.02 * lr_factor(2, 3, 0))
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["optimizer"]["param_groups"][0]["weight_decay"] == 1e-3
    assert state["resumes"] == metrics["resumes"]


@pytest.fixture(scope="module")
def one_epoch_run(ci_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("one_epoch") / "run"
    pretrain(_cfg(ci_data, run, epochs=1, max_steps_per_epoch=1))
    return run


@pytest.mark.parametrize("change, name", [({"optimizer": "adamw"}, "optimizer"), ({"batch_size": 4}, "batch_size"),
                                          ({"max_steps_per_epoch": 2}, "max_steps_per_epoch"), ({"seed": 5}, "seed")])
def test_resume_refuses_settings_that_cannot_change(ci_data, one_epoch_run, change, name):
    cfg = _cfg(ci_data, one_epoch_run, epochs=2, **{"max_steps_per_epoch": 1, **change})
    with pytest.raises(ValueError, match=rf"{name}=.*not .*use a new run_dir"):
        pretrain(cfg)
    assert not checkpoint_is_complete(_cfg(ci_data, one_epoch_run, epochs=1, **{"max_steps_per_epoch": 1, **change}))
    assert load_checkpoint(one_epoch_run / "checkpoints" / "last.pt")["epoch"] == 1


def test_more_epochs_on_disk_than_asked_is_refused(ci_data, one_epoch_run):
    assert checkpoint_is_complete(_cfg(ci_data, one_epoch_run, epochs=1, max_steps_per_epoch=1))
    assert not checkpoint_is_complete(_cfg(ci_data, one_epoch_run, epochs=2, max_steps_per_epoch=1))
    run = one_epoch_run.parent / "two"
    shutil.copytree(one_epoch_run, run)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    save_checkpoint(run / "checkpoints" / "last.pt", {**state, "epoch": 2})
    with pytest.raises(ValueError, match="holds 2 epochs, more than epochs=1"):
        ensure_pretrained(_cfg(ci_data, run, epochs=1, max_steps_per_epoch=1))


def test_non_finite_loss_stops_at_that_step_and_keeps_the_last_good_checkpoint(ci_data, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as caught:
        pretrain(_cfg(ci_data, run, epochs=2, lr=1e6))
    message = str(caught.value)
    assert "epoch 2/2, step" in message and "not finite" in message and "res5" in message
    assert "last good checkpoint" in message and str(run / "checkpoints" / "last.pt") in message
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (run / "checkpoints" / "slow_encoder.pt").exists()  # nothing from the bad step
    assert len(json.loads((run / "metrics.json").read_text())["epochs"]) == 1


def test_non_finite_gradient_names_its_level():
    cfg = resolve_config("ci")
    net = VTHCLNet(cfg.model)
    stats = {f"{k}/loss_{v}": 1.0 for k in net.levels for v in ("slow", "fast")} | {"loss": 6.0}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    assert non_finite_report(stats, net, net.levels) is None
    name, param = next((n, p) for n, p in net.named_parameters() if n.startswith("fast.res4"))
    param.grad.view(-1)[0] = float("inf")
    assert "gradient is not finite at level res4" in non_finite_report(stats, net, net.levels)
    stats["res3/loss_slow"] = float("nan")
    assert "loss is not finite" in non_finite_report(stats, net, net.levels)
    assert "level res3" in non_finite_report(stats, net, net.levels)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short", os.urandom(4096)], ids=["empty", "cut", "random"])
def test_unreadable_checkpoint_is_named_in_one_message(ci_data, tmp_path, content, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    bad = run / "checkpoints" / "last.pt"
    bad.write_bytes(content)
    cfg = _cfg(ci_data, run)
    for call in (checkpoint_is_complete, ensure_pretrained, pretrain):
        with pytest.raises(CheckpointError, match=f"'{bad}'.*move it aside"):
            call(cfg)
    assert train_main(["--config", CI_PARAMS, f"run_dir={run}", f"data_root={ci_data}", "progress=false"]) == 1
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [err.strip().splitlines()[-1]]
    assert str(bad) in err and "Traceback" not in err
    assert bad.read_bytes() == content  # left for the user to inspect


def test_truncated_real_checkpoint_is_named(tmp_path):
    good = save_checkpoint(tmp_path / "good.pt", {"weights": torch.randn(1000)})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt' is empty, truncated"):
        load_checkpoint(cut)
    with pytest.raises(CheckpointError, match="not a vthcl pre-training checkpoint"):
        load_checkpoint(good)


def test_a_full_disk_during_a_save_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "checkpoints" / "last.pt", {"epoch": 1, "w": torch.ones(3)})
    before = path.read_bytes()
    real_save = torch.save

    def half_then_enospc(obj, handle, *args, **kwargs):
        import io

        buffer = io.BytesIO()
        real_save(obj, buffer)
        handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_enospc)
    with pytest.raises(SaveError, match=f"could not write '{path}': No space left on device; the previous"):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp file left behind


def _make_read_only(folder: Path) -> callable:
    """chmod a-w; as root (which ignores modes) also the immutable flag. Returns the undo."""
    folder.chmod(0o555)
    if os.access(folder, os.W_OK) or os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        assert done.returncode == 0, f"cannot make a read-only folder here: {done.stderr!r}"
        return lambda: (subprocess.run(["chattr", "-i", str(folder)], check=True), folder.chmod(0o755))
    return lambda: folder.chmod(0o755)


def test_a_read_only_folder_names_the_file_and_keeps_the_previous_one(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoints" / "last.pt", {"epoch": 1})
    undo = _make_read_only(path.parent)
    try:
        with pytest.raises(SaveError, match=f"could not write '{path}': Permission denied|Operation not permitted"):
            save_checkpoint(path, {"epoch": 2})
    finally:
        undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}


def _without_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    for name, child in module.named_children():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            setattr(module, name, torch.nn.Identity())
        else:
            _without_batchnorm(child)
    return module


def _grads_after(net, micro, batch):
    cfg = resolve_config("ci")
    contrast = HierarchicalContrast.from_config(cfg.contrast, num_items=24, levels=net.levels,
                                                dim=cfg.model.embed_dim, generator=torch.Generator().manual_seed(0))
    net.zero_grad(set_to_none=True)
    stats, z_slow, z_fast = accumulate_gradients(net, contrast, *batch, negatives_seed=7, micro_batch_size=micro)
    contrast.update_banks(z_slow, z_fast, batch[2])
    return {n: p.grad.clone() for n, p in net.named_parameters()}, stats, contrast.state_dict()


def test_accumulated_gradients_equal_the_whole_batch_without_batchnorm():
    torch.manual_seed(0)
    cfg = resolve_config("ci")
    batch = (torch.randn(8, 3, 4, 32, 32), torch.randn(8, 3, 8, 32, 32), torch.randperm(24)[:8])
    net = _without_batchnorm(VTHCLNet(cfg.model))
    whole, stats_whole, banks_whole = _grads_after(net, None, batch)
    for micro in (4, 2, 1):
        acc, stats, banks = _grads_after(net, micro, batch)
        for name in whole:
            torch.testing.assert_close(acc[name], whole[name], rtol=1e-4, atol=1e-6, msg=f"{name} (micro {micro})")
        # the same negatives and the same not-yet-updated banks: the memory-bank loss is the same
        assert stats["loss"] == pytest.approx(stats_whole["loss"], rel=1e-5)
        for key in banks_whole:  # one update per step, with all the batch's features (equal up to rounding)
            torch.testing.assert_close(banks[key], banks_whole[key], rtol=1e-4, atol=1e-6)
    # with BatchNorm in training mode each micro-batch is normalised by its own statistics: gradients differ
    bn_net = VTHCLNet(cfg.model)
    bn_whole, _, _ = _grads_after(bn_net, None, batch)
    bn_micro, _, _ = _grads_after(bn_net, 2, batch)
    assert not all(torch.allclose(bn_micro[n], bn_whole[n], rtol=1e-4, atol=1e-6) for n in bn_whole)


def test_failure_budget_is_a_message_on_the_command_line(ci_data, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(Path(ci_data) / "kinetics400", root / "kinetics400", ignore=shutil.ignore_patterns("*.mp4", "*.avi"))
    for line in (root / "kinetics400" / "train.csv").read_text().splitlines()[1:]:
        label, youtube_id = line.split(",")[:2]
        target = root / "kinetics400" / "train" / label / f"{youtube_id}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"not a video")
    code = train_main(["--config", CI_PARAMS, f"run_dir={tmp_path / 'run'}", f"data_root={root}", "progress=false"])
    err = capsys.readouterr().err
    assert code == 1 and "error:" in err and "Traceback" not in err
    assert "bad videos" in err or "none of the" in err


def test_cli_reports_bad_input(capsys, tmp_path):
    assert train_main(["--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err
    assert train_main(["--config", CI_PARAMS, "alpha=3"]) == 2
    assert "divisible" in capsys.readouterr().err
    assert train_main(["--config", CI_PARAMS, "job=dance"]) == 2
    assert train_main(["--config", CI_PARAMS, f"run_dir={tmp_path / 'c'}", "checkpoint_every=0"]) == 2
    assert "checkpoint_every=0" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert train_main(["--config", CI_PARAMS, f"run_dir={tmp_path / 'c'}", "lr=inf"]) == 2
    assert "lr=inf" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("PRESET: [ci\n")
    assert train_main(["--config", str(broken)]) == 2
    assert "broken.yaml' is not valid YAML" in capsys.readouterr().err
    assert train_main(["--config", CI_PARAMS, f"data_root={tmp_path / 'nothing'}", f"run_dir={tmp_path / 'r'}"]) == 2
    assert "kinetics400" in capsys.readouterr().err  # a data root without the expected files, named
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["epochs"])
    assert parse_overrides(["RUN_DIR=a=b"]) == {"run_dir": "a=b"}


def _step_by_hand(net, contrast, optimizer, slow, fast, index, negatives_seed, contrast_cfg):
    """One training step written out: encoders and heads, the 2 x D losses, backward, step, banks."""
    import torch.nn.functional as F

    from vthcl_lib.contrastive import info_nce

    z_slow, z_fast = net(slow, fast)
    neg, mask = contrast.draw_negatives(index, generator=torch.Generator().manual_seed(negatives_seed))
    weights = dict(zip(("res3", "res4", "res5"), contrast_cfg.level_weights))
    live, total = contrast_cfg.positives == "live", 0.0
    for k in net.levels:
        bank_s, bank_f = contrast.banks[f"{k}_slow"].weight, contrast.banks[f"{k}_fast"].weight
        pos_s, pos_f = (z_fast[k], z_slow[k]) if live else (bank_f[index], bank_s[index])
        neg_f, neg_s, m = bank_f[neg], bank_s[neg], mask
        if contrast_cfg.in_batch_negatives:
            neg_f, neg_s = torch.cat([neg_f, z_fast[k]]), torch.cat([neg_s, z_slow[k]])
            m = torch.cat([mask, torch.eye(len(index), dtype=torch.bool)], dim=1)
        total = total + weights[k] * (info_nce(z_slow[k], pos_s, neg_f, contrast_cfg.temperature, negative_mask=m)
                                      + info_nce(z_fast[k], pos_f, neg_s, contrast_cfg.temperature, negative_mask=m))
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    momentum = contrast_cfg.bank_momentum
    with torch.no_grad():  # B[i] <- normalize(m B[i] + (1 - m) z_i), after the step
        for k in net.levels:
            for side, z in (("slow", z_slow[k]), ("fast", z_fast[k])):
                bank = contrast.banks[f"{k}_{side}"].weight
                bank[index] = F.normalize(momentum * bank[index] + (1 - momentum) * z.detach(), dim=1)
    return float(total.detach())


@pytest.mark.parametrize("variant", [{}, {"positives": "live", "in_batch_negatives": True}],
                         ids=["bank positives", "live positives, in-batch negatives"])
def test_train_step_equals_a_step_written_by_hand(variant):
    import copy

    cfg = resolve_config("ci", levels=2)
    contrast_cfg = replace(cfg.contrast, **variant)
    torch.manual_seed(0)
    net = VTHCLNet(cfg.model)
    contrast = HierarchicalContrast.from_config(contrast_cfg, num_items=12, levels=net.levels,
                                                dim=cfg.model.embed_dim, generator=torch.Generator().manual_seed(1))
    net_hand, contrast_hand = copy.deepcopy(net), copy.deepcopy(contrast)
    slow, fast = torch.randn(4, 3, 4, 32, 32), torch.randn(4, 3, 8, 32, 32)
    index = torch.tensor([0, 3, 7, 11])
    before = {n: p.detach().clone() for n, p in net.named_parameters()}

    stats = engine.train_step(net, contrast, engine.build_optimizer(net.parameters(), cfg.train),
                              slow, fast, index, negatives_seed=5)
    by_hand = _step_by_hand(net_hand, contrast_hand, engine.build_optimizer(net_hand.parameters(), cfg.train),
                            slow, fast, index, 5, contrast_cfg)

    assert stats["loss"] == pytest.approx(by_hand, rel=1e-5)
    for (name, p), (_, q) in zip(net.named_parameters(), net_hand.named_parameters()):
        torch.testing.assert_close(p, q, msg=lambda m: f"{name}: {m}")
    assert any(not torch.equal(p, before[n]) for n, p in net.named_parameters())  # the step did move weights
    for name, bank in contrast.banks.items():
        torch.testing.assert_close(bank.weight, contrast_hand.banks[name].weight, msg=lambda m: f"bank {name}: {m}")
    for (name, b), (_, c) in zip(net.named_buffers(), net_hand.named_buffers()):
        torch.testing.assert_close(b, c)  # BatchNorm statistics of the one forward


def test_train_step_check_runs_before_the_weights_change():
    cfg = resolve_config("ci", levels=1)
    net = VTHCLNet(cfg.model)
    contrast = HierarchicalContrast.from_config(cfg.contrast, num_items=4, levels=net.levels, dim=cfg.model.embed_dim)
    weights = {n: p.detach().clone() for n, p in net.named_parameters()}
    banks = {n: b.weight.clone() for n, b in contrast.banks.items()}

    def refuse(stats):
        assert "loss" in stats
        raise TrainingDiverged("stop")

    with pytest.raises(TrainingDiverged, match="stop"):
        engine.train_step(net, contrast, engine.build_optimizer(net.parameters(), cfg.train),
                          torch.randn(2, 3, 4, 32, 32), torch.randn(2, 3, 8, 32, 32), torch.tensor([0, 1]),
                          negatives_seed=0, check=refuse)
    assert all(torch.equal(p, weights[n]) for n, p in net.named_parameters())
    assert all(torch.equal(b.weight, banks[n]) for n, b in contrast.banks.items())
