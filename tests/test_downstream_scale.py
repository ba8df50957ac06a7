"""Downstream jobs at paper scale: one loader for every evaluation path, autocast, the fine-tuning command line.

Results must not depend on the number of loader workers, CUDA runs autocast as the preset says while a CPU run
stays bit-identical to the loop before, and ``python -m vthcl_lib.finetune`` runs notebook 06's job from a
params YAML. (The 10 test clips from one open of the file: tests/test_ten_clips_one_open.py.)
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vthcl_lib.config import resolve_config
from vthcl_lib.datasets import BadVideoBudgetExceeded, build_labeled_dataset
from vthcl_lib.evaluate import autocast_context, downstream_loader, extract_features, frozen_features
from vthcl_lib.finetune import (
    _one_line,
    StepSchedule,
    VideoClassifier,
    finetune,
    init_slow_encoder,
    job_from_params,
    predict_clips,
    train_with_schedule,
)
from vthcl_lib.synthetic import ensure_synthetic

ROOT = Path(__file__).resolve().parents[1]
CI_PARAMS = ROOT / "notebooks" / "params" / "ci.yaml"
PAPER_FINETUNE = ROOT / "notebooks" / "params" / "paper_r18" / "06_action_recognition.ucf101.yaml"


@pytest.fixture(scope="module")
def ci_data():
    cfg = resolve_config("ci", base_dir=ROOT)
    ensure_synthetic(cfg.data.data_root, cfg.synthetic, progress=False)
    return cfg.data.data_root


def _cfg(ci_data, tmp_path, **overrides):
    return resolve_config("ci", data_root=ci_data, run_dir=str(tmp_path / "run"), progress=False, **overrides)


# --------------------------------------------------------------------------- one loader, any number of workers


class _Indexed(Dataset):
    def __init__(self, n):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor([i, self.epoch])


def test_training_order_repeats_a_loader_rebuilt_every_epoch():
    data, seed_of = _Indexed(11), (lambda e: 1000 + 7 * e)
    loader = downstream_loader(data, batch_size=3, epoch_seed=seed_of, drop_last=True)
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        data.set_epoch(epoch)
        old = DataLoader(data, batch_size=3, shuffle=True, drop_last=True,
                         generator=torch.Generator().manual_seed(seed_of(epoch)))
        got, want = list(loader), list(old)
        assert len(got) == len(want) == 3
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        assert all(int(x) == epoch for batch in got for x in batch[:, 1])  # the epoch reached the item


def test_persistent_workers_see_each_epoch():
    data = _Indexed(8)
    loader = downstream_loader(data, batch_size=4, num_workers=2, epoch_seed=lambda e: e)
    assert loader.persistent_workers and loader.num_workers == 2
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        seen = torch.cat(list(loader))
        assert sorted(seen[:, 0].tolist()) == list(range(8)) and set(seen[:, 1].tolist()) == {epoch}


def test_loader_settings_are_checked():
    with pytest.raises(ValueError, match="num_workers"):
        downstream_loader(_Indexed(3), batch_size=2, num_workers=-1)
    with pytest.raises(ValueError, match="batch_size"):
        downstream_loader(_Indexed(3), batch_size=0)
    with pytest.raises(ValueError, match="shuffle_seed"):
        downstream_loader(_Indexed(3), batch_size=2, shuffle_seed=0, epoch_seed=lambda e: e)
    assert not downstream_loader(_Indexed(3), batch_size=2, device="cpu").pin_memory


def test_finetune_is_the_same_with_0_and_2_workers(ci_data, tmp_path):
    runs = {}
    for workers in (0, 2):
        cfg = _cfg(ci_data, tmp_path / f"w{workers}", num_workers=workers, finetune_epochs=1)
        encoder, _ = init_slow_encoder(cfg, "random", seed=3)
        weights = tmp_path / f"w{workers}.pt"
        record = finetune(cfg, encoder, seed=3, progress=False, save_to=weights)
        runs[workers] = record, torch.load(weights, weights_only=False)["model"]
    (rec0, state0), (rec2, state2) = runs[0], runs[2]
    assert rec0["history"] == rec2["history"] and rec0["top1"] == rec2["top1"] and rec0["clip_top1"] == rec2["clip_top1"]
    assert all(torch.equal(state0[k], state2[k]) for k in state0)


def test_features_and_logits_are_the_same_with_0_and_2_workers(ci_data, tmp_path):
    cfg = _cfg(ci_data, tmp_path)
    train_set = build_labeled_dataset(cfg, "ucf101", 1, "train", mode="test", progress=False)
    test_set = build_labeled_dataset(cfg, "ucf101", 1, "test", progress=False)
    out = {}
    for workers in (0, 2):
        encoder, _ = init_slow_encoder(cfg, "random", seed=0, zero_init_residual=False)
        feats = frozen_features(encoder, train_set, test_set, device="cpu", seed=1, batch_size=4,
                                recalibrate_batches=2, num_workers=workers, progress=False)
        model = VideoClassifier(encoder, 6).eval()
        logits, labels = predict_clips(model, test_set, batch_size=8, device=torch.device("cpu"), num_workers=workers,
                                       progress=False)
        out[workers] = feats, logits, labels
    (f0, l0, y0), (f2, l2, y2) = out[0], out[2]
    assert all(torch.equal(f0[k], f2[k]) for k in f0) and torch.equal(l0, l2) and torch.equal(y0, y2)
    assert f0["test_x"].shape[0] == len(test_set) and l0.shape[:2] == (len(test_set), cfg.data.num_test_clips)


def test_detection_and_anticipation_are_the_same_with_0_and_2_workers(tmp_path):
    from vthcl_lib.anticipation import train_anticipation
    from vthcl_lib.detection import detection_encoder_overrides, train_detector
    from vthcl_lib.synthetic_transfer import ensure_transfer_sets

    base = resolve_config("ci", data_root=str(tmp_path / "data"), run_dir=str(tmp_path / "runs"), progress=False,
                          detection_epochs=1, anticipation_epochs=1)
    ensure_transfer_sets(tmp_path / "data", base.synthetic, sets=("ava", "epic_kitchens"), progress=False)
    results = {}
    for workers in (0, 2):
        cfg = resolve_config("ci", data_root=str(tmp_path / "data"), run_dir=str(tmp_path / "runs"), progress=False,
                             detection_epochs=1, anticipation_epochs=1, num_workers=workers)
        encoder, _ = init_slow_encoder(cfg, "random", seed=0, **detection_encoder_overrides(cfg))
        detection = train_detector(cfg, encoder, seed=0, progress=False)
        encoder, _ = init_slow_encoder(cfg, "random", seed=0)
        anticipation = train_anticipation(cfg, encoder, seed=0, progress=False)
        results[workers] = detection, anticipation
    assert results[0] == results[2]
    assert results[0][0]["num_val"] > 0 and results[0][1]["num_val"] > 0


# --------------------------------------------------------------------------- autocast


def test_autocast_follows_the_device_and_the_precision():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # building a CUDA autocast without a GPU warns; its settings still show
        bf16 = autocast_context(torch.device("cuda"), "bf16")
        fp16 = autocast_context("cuda:0", "fp16")
        fp32 = autocast_context(torch.device("cuda"), "fp32")
    assert (bf16.device, bf16.fast_dtype) == ("cuda", torch.bfloat16)
    assert (fp16.device, fp16.fast_dtype) == ("cuda", torch.float16)
    assert fp32.device == "cuda" and not fp32._enabled
    for precision in ("fp32", "bf16", "fp16"):
        with autocast_context(torch.device("cpu"), precision):
            assert not torch.is_autocast_enabled("cpu")  # nothing changes on a CPU
            assert torch.nn.Linear(3, 2)(torch.ones(1, 3)).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        autocast_context("cpu", "int8")


def test_paper_presets_run_downstream_jobs_in_bf16():
    for preset in ("paper_r18", "paper_r50"):
        cfg = resolve_config(preset)
        assert cfg.train.precision == "bf16" and cfg.data.num_workers >= 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert autocast_context(torch.device("cuda"), cfg.train.precision).fast_dtype == torch.bfloat16


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))

    def forward(self, x):
        return self.net(x)


class _Points(Dataset):
    def __init__(self, n=20):
        self.x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
        self.y = torch.arange(n) % 3
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def _old_training_loop(model, data, schedule, *, seed, stream):
    """The loop before this change: a DataLoader rebuilt every epoch, fp32, no scaler (a CPU reference)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=schedule.lr, momentum=schedule.momentum,
                                weight_decay=schedule.weight_decay)
    steps = max(1, len(data) // schedule.batch_size)
    for epoch in range(schedule.epochs):
        data.set_epoch(epoch)
        order = torch.Generator().manual_seed(int(np.random.default_rng([seed, epoch, stream]).integers(2**62)))
        model.train()
        for step, (x, y) in enumerate(DataLoader(data, batch_size=schedule.batch_size, shuffle=True,
                                                 generator=order, drop_last=True)):
            for group in optimizer.param_groups:
                group["lr"] = schedule.lr_at(epoch + step / steps)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cpu_training_is_bit_identical_to_the_loop_before(precision):
    schedule = StepSchedule(epochs=3, batch_size=4, lr=0.1, milestones=(2,))
    torch.manual_seed(0)
    reference = _Tiny()
    model = _Tiny()
    model.load_state_dict(reference.state_dict())
    torch.manual_seed(1)
    _old_training_loop(reference, _Points(), schedule, seed=2, stream=6)
    torch.manual_seed(1)  # the same dropout masks: the loader must not draw on the global RNG

    def batch_loss(batch):
        x, y = batch
        return F.cross_entropy(model(x), y), len(y)

    train_with_schedule(model, _Points(), batch_loss, schedule, seed=2, stream=6, progress=False,
                        device="cpu", precision=precision)
    for (name, a), b in zip(reference.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_feature_extraction_on_cpu_ignores_the_precision(ci_data, tmp_path):
    cfg = _cfg(ci_data, tmp_path)
    test_set = build_labeled_dataset(cfg, "ucf101", 1, "test", progress=False)
    encoder, _ = init_slow_encoder(cfg, "random", seed=0)
    fp32 = extract_features(encoder, test_set, batch_size=4, device="cpu", precision="fp32", progress=False)
    bf16 = extract_features(encoder, test_set, batch_size=4, device="cpu", precision="bf16", progress=False)
    assert torch.equal(fp32[0], bf16[0]) and fp32[0].dtype == torch.float32


# --------------------------------------------------------------------------- the command line


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "vthcl_lib.finetune", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_cli_finetunes_one_job_and_writes_metrics_and_weights(ci_data, tmp_path):
    run_dir = tmp_path / "ft"
    done = _cli("--config", CI_PARAMS, "--no-progress", "init=random", f"data_root={ci_data}", f"run_dir={run_dir}",
                "epochs=1", "seed=2", "split=1", "num_workers=2")
    assert done.returncode == 0, done.stderr
    assert "video top-1" in done.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["job"], metrics["init"], metrics["seed"], metrics["split"]) == ("finetune", "random", 2, 1)
    assert 0 <= metrics["top1"] <= 1 and len(metrics["history"]) == 1 and metrics["config"]["data"]["num_workers"] == 2
    saved = torch.load(run_dir / "checkpoints" / "finetuned.pt", weights_only=False)
    cfg = resolve_config("ci")
    encoder, _ = init_slow_encoder(cfg, "random")
    model = VideoClassifier(encoder, saved["num_classes"])
    model.load_state_dict(saved["model"])  # the whole fine-tuned classifier, loadable as such
    assert saved["seed"] == 2 and not list(run_dir.glob("**/*.tmp"))


@pytest.mark.parametrize("args, named", [
    (["--config", "nowhere.yaml"], "nowhere.yaml"),
    (["--config", CI_PARAMS, "init=random", "alhpa=4"], "alhpa"),
    (["--config", CI_PARAMS, "init=imagenet"], "init='imagenet'"),
    (["--config", CI_PARAMS, "init=random", "finetune_lr=-1"], "finetune_lr"),
    (["--config", CI_PARAMS, "init=random", "split=1", "data_root=/nonexistent/vthcl"], "/nonexistent/vthcl"),
    (["--config", PAPER_FINETUNE], "INITS"),
    (["--config", PAPER_FINETUNE, "init=vthcl"], "SPLITS"),
    (["--config", CI_PARAMS, "init=external", "split=1", "external_checkpoint=missing.pt"], "missing.pt"),
    (["--config", CI_PARAMS, "epochs"], "epochs"),
    (["--config", CI_PARAMS, "init=vthcl", "split=1", "pretrain_root=no_pretraining"], "pretrain_if_missing"),
])
def test_cli_errors_are_one_line_naming_the_parameter_or_file(args, named, tmp_path):
    done = _cli(*args, f"run_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and named in errors[0], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run" / "metrics.json").exists()


class _BadEverywhere(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        raise BadVideoBudgetExceeded("3 bad videos met, more than failure_budget=2; run the scan step:\n"
                                     "  /data/a.mp4: file is empty (0 bytes)")


def test_an_error_raised_in_a_loader_worker_becomes_one_line():
    with pytest.raises(Exception) as info:
        list(downstream_loader(_BadEverywhere(), batch_size=2, num_workers=1))
    assert "Original Traceback" in str(info.value)  # what the DataLoader hands back from its worker
    line = _one_line(info.value)
    assert line == "3 bad videos met, more than failure_budget=2; run the scan step: /data/a.mp4: file is empty (0 bytes)"


def test_yaml_paths_are_the_notebooks_and_each_job_gets_its_own_folder():
    from vthcl_lib.config import load_params_file

    job = job_from_params(load_params_file(PAPER_FINETUNE), config_file=PAPER_FINETUNE,
                          overrides={"init": "vthcl", "split": "2", "device": "cpu"})
    runs = ROOT / "runs" / "paper_r18"
    assert job["run_dir"] == runs / "06_action_recognition_ucf101" / "vthcl_seed0_split2"
    assert job["pretrain_root"] == runs / "pretrain" and job["cfg"].data.data_root == str(ROOT / "data")
    assert (job["init"], job["seed"], job["split"]) == ("vthcl", 0, 2)
    assert job["cfg"].train.precision == "bf16" and job["cfg"].data.num_workers == 8
