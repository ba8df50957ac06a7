"""The paper-scale data path: uint8 items, colour batched in the step, persistent workers, the epoch in the index."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

from vthcl_lib.config import resolve_config
from vthcl_lib.datasets import augment_placement, build_pretrain_dataset, shared_memory_bytes
from vthcl_lib.engine import pretrain
from vthcl_lib.synthetic import ensure_synthetic

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ci_data():
    cfg = resolve_config("ci", base_dir=ROOT)
    ensure_synthetic(cfg.data.data_root, cfg.synthetic, progress=False)
    return cfg.data.data_root


def _cfg(ci_data, preset="ci", **overrides):
    return resolve_config(preset, data_root=ci_data, progress=False, **overrides)


@pytest.mark.parametrize("preset", ["ci", "demo"])  # demo: per-view colour draws and channel shuffles
def test_device_items_finish_into_the_worker_items(ci_data, preset):
    overrides = dict(window=16, tau=4, decode_size=(32, 32), crop_size=32) if preset == "demo" else {}
    worker = build_pretrain_dataset(_cfg(ci_data, preset, augment_on="worker", **overrides), progress=False)
    device = build_pretrain_dataset(_cfg(ci_data, preset, augment_on="device", **overrides), progress=False)
    assert (worker.augment_on, device.augment_on) == ("worker", "device")
    indices = [(1, i) for i in range(6)]  # (epoch, index), as the EpochSampler hands them out
    items = [device[i] for i in indices]
    fast_u8, colors, index = items[0]
    assert fast_u8.dtype == torch.uint8 and fast_u8.shape == (8, 32, 32, 3) and colors.shape == (2, 8)
    assert sum(t.nbytes for t in items[0][:2]) + 8 == device.item_bytes()
    slow, fast, index = device.finish_batch(default_collate(items), "cpu")
    ref_slow, ref_fast, ref_index = default_collate([worker[i] for i in indices])
    assert torch.equal(index, ref_index)
    assert slow.shape == ref_slow.shape and fast.shape == ref_fast.shape
    assert (fast - ref_fast).abs().max() < 0.05 and (fast - ref_fast).abs().mean() < 0.005  # uint8 resize rounding
    assert (slow - ref_slow).abs().max() < 0.05
    assert sum(t.nbytes for t in worker[0][:2]) + 8 == worker.item_bytes() == 6 * (device.item_bytes() - 72) + 8  # a sixth


def test_the_epoch_in_the_index_is_the_epoch_of_set_epoch(ci_data):
    dataset = build_pretrain_dataset(_cfg(ci_data, augment_on="device"), progress=False)
    dataset.set_epoch(3)
    a = dataset[2]
    dataset.set_epoch(0)
    b = dataset[(3, 2)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    assert not torch.equal(dataset[(4, 2)][0], a[0])


def test_auto_placement_is_the_device_on_cuda_and_the_workers_on_a_cpu(ci_data):
    assert augment_placement(_cfg(ci_data, device="cpu")) == "worker"
    assert augment_placement(_cfg(ci_data, device="cuda")) == "device"
    assert augment_placement(_cfg(ci_data, device="cpu", augment_on="device")) == "device"
    with pytest.raises(ValueError, match="augment_on"):
        _cfg(ci_data, augment_on="gpu")


def test_shared_memory_figure():
    cfg = resolve_config("paper_r18")
    per_item = 16 * 224 * 224 * 3 + 2 * 8 * 4 + 8  # uint8 fast clip, two colour draws, the index

    class Item:
        def item_bytes(self):
            return per_item
    assert per_item <= 2.5e6  # the paper item, handed back uint8 (float slow + fast: 14.45 MB)
    assert shared_memory_bytes(Item(), 32, cfg.data.num_workers) == per_item * 32 * 8 * 2
    assert shared_memory_bytes(Item(), 32, 0) == per_item * 32


def test_device_path_with_persistent_workers_trains_like_no_workers(ci_data, tmp_path, capsys):
    """Workers only move where items are made: the same losses with 0 and 2 (persistent) workers."""
    runs = {}
    for workers in (0, 2):
        cfg = _cfg(ci_data, run_dir=str(tmp_path / f"w{workers}"), epochs=2, augment_on="device",
                   num_workers=workers)
        runs[workers] = pretrain(cfg)
    assert [e["loss"] for e in runs[0]["epochs"]] == [e["loss"] for e in runs[2]["epochs"]]
    assert runs[0]["loss_per_level"] == runs[2]["loss_per_level"]
