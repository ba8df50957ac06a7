"""The frame-count index: counts and fps known before training (manifest, else measured once), never per item."""
from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest

from vthcl_lib.config import resolve_config
from vthcl_lib.datasets import FrameIndex, build_pretrain_dataset
from vthcl_lib.datasets import frames as frames_module
from vthcl_lib.datasets.frames import INDEX_NAME, MANIFEST_NAME
from vthcl_lib.video import write_video

LENGTHS = {"a": 20, "b": 33, "c": 27}


def _video(path, n, fps=25):
    frames = np.zeros((n, 16, 16, 3), np.uint8)
    frames[:, :, :, 1] = (np.arange(n) * 7 % 200)[:, None, None]
    return write_video(path, frames, fps=fps)


@pytest.fixture()
def root(tmp_path):
    for name, n in LENGTHS.items():
        _video(tmp_path / "videos" / f"{name}.mp4", n)
    return tmp_path


def _paths(root):
    return [root / "videos" / f"{name}.mp4" for name in LENGTHS]


def _no_probe(monkeypatch):
    def fail(path, **_):
        raise AssertionError(f"probed '{path}'")
    monkeypatch.setattr(frames_module, "probe", fail)


def test_counts_are_measured_once_and_kept_beside_the_data(root, monkeypatch):
    known, failures = FrameIndex(root, workers=2).lookup(_paths(root), progress=False)
    assert failures == {}
    assert {os.path.basename(p): m.num_frames for p, m in known.items()} == {f"{k}.mp4": n for k, n in LENGTHS.items()}
    assert all(m.fps == pytest.approx(25) for m in known.values())
    stored = json.loads((root / INDEX_NAME).read_text())
    assert set(stored["backends"]["decord"]) == {f"videos/{k}.mp4" for k in LENGTHS}  # relative: the tree may move
    _no_probe(monkeypatch)
    again, _ = FrameIndex(root).lookup(_paths(root), progress=False)
    assert again == known


def test_a_changed_file_is_measured_again(root):
    FrameIndex(root).lookup(_paths(root), progress=False)
    _video(root / "videos" / "b.mp4", 41)
    known, _ = FrameIndex(root).lookup(_paths(root), progress=False)
    assert known[str(root / "videos" / "b.mp4")].num_frames == 41
    assert known[str(root / "videos" / "a.mp4")].num_frames == 20


def test_the_prepare_manifest_is_used_when_current(root, monkeypatch):
    entries = [{"path": f"videos/{k}.mp4", "frames": 100 + n, "fps": 30.0, "problem": None} for k, n in LENGTHS.items()]
    entries[2]["problem"] = "truncated"  # a video the prepare step judged bad is measured here instead
    (root / MANIFEST_NAME).write_text(json.dumps({"videos": entries}))
    later = (root / MANIFEST_NAME).stat().st_mtime_ns + 5_000_000_000
    os.utime(root / "videos" / "b.mp4", ns=(later, later))  # modified after the manifest: measured
    known, _ = FrameIndex(root).lookup(_paths(root), progress=False)
    by_name = {os.path.basename(p): (m.num_frames, m.fps) for p, m in known.items()}
    assert by_name["a.mp4"] == (120, 30.0)  # from the manifest, not measured
    assert by_name["b.mp4"][0] == 33 and by_name["c.mp4"][0] == 27
    _no_probe(monkeypatch)  # and the measured ones are kept
    assert FrameIndex(root).lookup(_paths(root), progress=False)[0] == known


def test_bad_files_are_reported_and_remembered(root, monkeypatch):
    (root / "videos" / "broken.mp4").write_bytes(b"not a video at all" * 50)
    paths = [*_paths(root), root / "videos" / "broken.mp4", root / "videos" / "missing.mp4"]
    known, failures = FrameIndex(root).lookup(paths, progress=False)
    assert len(known) == 3 and set(failures) == {str(paths[3]), str(paths[4])}
    assert "does not exist" in failures[str(paths[4])]
    _no_probe(monkeypatch)
    with pytest.raises(AssertionError, match="missing.mp4"):  # a missing file has no key: checked again
        FrameIndex(root).lookup(paths, progress=False)
    assert FrameIndex(root).lookup(paths[:4], progress=False)[1] == {str(paths[3]): failures[str(paths[3])]}


def test_an_unwritable_folder_still_gets_its_counts(root, monkeypatch, caplog):
    def refuse(*_, **__):
        raise PermissionError("read-only file system")
    monkeypatch.setattr(frames_module.os, "replace", refuse)
    known, _ = FrameIndex(root).lookup(_paths(root), progress=False)
    assert len(known) == 3 and not (root / INDEX_NAME).exists()
    assert any("cannot write the frame-count index" in r.getMessage() for r in caplog.records)


def test_pretrain_items_never_probe_their_file(tmp_path, monkeypatch):
    """Without the frame cache (the paper presets), the builder knows every count; items only decode."""
    root = tmp_path / "kinetics400"
    rows = ["label,youtube_id,time_start,time_end,split"]
    for k, n in enumerate((40, 70)):
        _video(root / "train" / "x" / f"v{k}_000000_000010.mp4", n)
        rows.append(f"x,v{k},0,10,train")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    cfg = resolve_config("ci", data_root=str(tmp_path))
    cfg = replace(cfg, data=replace(cfg.data, use_cache=False, decode_size=None))
    dataset = build_pretrain_dataset(cfg, progress=False)
    assert [r.num_frames for r in dataset.records] == [40, 70]
    assert [r.fps for r in dataset.records] == [pytest.approx(25)] * 2
    _no_probe(monkeypatch)
    monkeypatch.setattr("vthcl_lib.video.probe", frames_module.probe)
    for i in range(2):
        slow, fast, index = dataset[i]
        assert index == i and fast.shape[1] == 2 * slow.shape[1]
