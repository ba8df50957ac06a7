"""vthcl_lib.cache: whole-video decode once, atomic .npy entries, keys, memory mapping, DataLoader workers."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import vthcl_lib.cache as cache_module
from test_datasets import frame_number, identity_augmentation, numbered_frames
from vthcl_lib.cache import FrameCache
from vthcl_lib.datasets import FrameSource, PretrainDataset, VideoRecord
from vthcl_lib.video import VideoDecodeError, read_frames, write_video

LENGTHS = (20, 28, 36)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("cache_videos")
    return [write_video(root / f"v{k}.mp4", numbered_frames(n)) for k, n in enumerate(LENGTHS)]


@pytest.fixture()
def noise_file(tmp_path) -> Path:
    path = tmp_path / "noise.avi"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".npy")) if folder.exists() else []


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_cached_frames_equal_direct_decoding(videos, tmp_path, backend):
    cache = FrameCache(tmp_path / "c", decode_size=(16, 24), backend=backend)
    for path, n in zip(videos, LENGTHS):
        frames = cache.frames(path)
        assert frames.shape == (n, 16, 24, 3) and frames.dtype == np.uint8
        direct = read_frames(path, range(n), backend=backend, size=(16, 24)).numpy()
        np.testing.assert_array_equal(np.asarray(frames), direct)
        assert cache.num_frames(path) == n
    assert [frame_number(f) for f in FrameCache(tmp_path / "c", None, backend).frames(videos[0])] == list(range(20))


def test_decoded_once(videos, tmp_path, monkeypatch):
    calls = []

    def counting_read_frames(path, indices, **kwargs):
        calls.append(Path(path).name)
        return read_frames(path, indices, **kwargs)

    monkeypatch.setattr(cache_module, "read_frames", counting_read_frames)
    cache = FrameCache(tmp_path / "c", decode_size=(16, 16))
    first = np.asarray(cache.frames(videos[1]))
    second = np.asarray(cache.frames(videos[1]))
    cache.num_frames(videos[1])
    FrameCache(tmp_path / "c", decode_size=(16, 16)).frames(videos[1])  # another instance, same folder
    assert calls == ["v1.mp4"]
    np.testing.assert_array_equal(first, second)
    FrameCache(tmp_path / "c", decode_size=(8, 8)).frames(videos[1])  # another size is another entry
    assert calls == ["v1.mp4", "v1.mp4"]


def test_reads_are_memory_mapped_and_read_only(videos, tmp_path):
    cache = FrameCache(tmp_path / "c", decode_size=(16, 16))
    frames = cache.frames(videos[0])
    assert isinstance(frames, np.memmap) and not frames.flags.writeable
    assert cache.entry_path(videos[0]).stat().st_size >= LENGTHS[0] * 16 * 16 * 3  # N*H*W*3 bytes + header


def test_entries_are_atomic_and_failures_leave_nothing(videos, noise_file, tmp_path, monkeypatch):
    cache = FrameCache(tmp_path / "c", decode_size=(16, 16))
    assert cache.build(videos, progress=False) == {}
    assert len(list((tmp_path / "c").glob("*.npy"))) == len(videos) and leftovers(tmp_path / "c") == []

    with pytest.raises(VideoDecodeError, match="noise.avi"):
        cache.frames(noise_file)
    assert not cache.entry_path(noise_file).exists() and leftovers(tmp_path / "c") == []

    def failing_save(handle, array, **kwargs):
        handle.write(b"\x93NUMPY partial")  # a crash mid-write
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.np, "save", failing_save)
    fresh = FrameCache(tmp_path / "d", decode_size=(16, 16))
    with pytest.raises(OSError, match="disk full"):
        fresh.frames(videos[0])
    assert list((tmp_path / "d").iterdir()) == []


def test_build_collects_or_raises_failures(videos, noise_file, tmp_path):
    cache = FrameCache(tmp_path / "c", decode_size=(16, 16))
    with pytest.raises(VideoDecodeError, match="noise.avi"):
        cache.build([videos[0], noise_file], progress=False)
    failures = cache.build([*videos, noise_file, tmp_path / "missing.mp4"], progress=False, skip_bad=True)
    assert set(failures) == {str(noise_file), str(tmp_path / "missing.mp4")}
    assert all(cache.is_cached(p) for p in videos) and not cache.is_cached(noise_file)


def test_build_in_worker_processes(videos, noise_file, tmp_path):
    read_frames(videos[0], [0, 1])  # decord used in this process before the pool starts
    cache = FrameCache(tmp_path / "c", decode_size=(16, 16))
    failures = cache.build([*videos, noise_file], workers=2, progress=False, skip_bad=True)
    assert list(failures) == [str(noise_file)]
    assert [cache.num_frames(p) for p in videos] == list(LENGTHS) and leftovers(tmp_path / "c") == []


def test_key_changes_when_the_file_changes(tmp_path):
    path = write_video(tmp_path / "clip.mp4", numbered_frames(20))
    cache = FrameCache(tmp_path / "c", decode_size=(32, 32))
    old_entry = cache.entry_path(path)
    assert frame_number(cache.frames(path)[5]) == 5
    stat = path.stat()
    write_video(path, numbered_frames(24, offset=30))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new mtime even on coarse clocks
    assert cache.entry_path(path) != old_entry
    frames = cache.frames(path)
    assert frames.shape[0] == 24 and frame_number(frames[5]) == 35
    assert FrameCache(tmp_path / "c", decode_size=(16, 16)).entry_path(path) != cache.entry_path(path)


def test_frame_source_reads_from_cache(videos, tmp_path):
    cache = FrameCache(tmp_path / "c", decode_size=(32, 32))
    source = FrameSource(cache=cache)
    record = VideoRecord(path=videos[2], video_id="v2", num_frames=999)  # the cache's count wins
    assert source.num_frames(record) == LENGTHS[2]
    clip = source.read(record, [3, 1, 3, 35])
    assert clip.dtype == torch.uint8 and clip.shape == (4, 32, 32, 3)
    assert [frame_number(f) for f in clip] == [3, 1, 3, 35]
    with pytest.raises(VideoDecodeError, match="v2.mp4"):
        source.read(record, [36])
    with pytest.raises(ValueError, match="decode_size"):
        FrameSource(decode_size=(16, 16), cache=cache)


def test_dataloader_workers_read_from_cache(videos, tmp_path):
    cache = FrameCache(tmp_path / "c", decode_size=(32, 32))
    cache.build(videos, progress=False)
    records = [VideoRecord(path=p, video_id=p.stem) for p in videos]
    ds = PretrainDataset(records, window=16, tau=4, alpha=2, transform=identity_augmentation(),
                         source=FrameSource(cache=cache))
    expected = [ds[i] for i in range(len(ds))]
    loader = DataLoader(ds, batch_size=3, num_workers=2, timeout=60)
    slow, fast, index = next(iter(loader))
    assert index.tolist() == [0, 1, 2]
    assert torch.equal(fast, torch.stack([e[1] for e in expected]))
    assert torch.equal(slow, fast[:, :, ::2])
    assert leftovers(tmp_path / "c") == [] and len(list((tmp_path / "c").glob("*.npy"))) == len(videos)


def test_bad_arguments():
    with pytest.raises(ValueError, match="backend"):
        FrameCache("x", (16, 16), backend="opencv")
    with pytest.raises(ValueError, match="decode_size"):
        FrameCache("x", (0, 16))


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_truncated_video_is_bad_with_either_backend(tmp_path, backend):
    whole = write_video(tmp_path / "whole.avi", numbered_frames(40)).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: int(len(whole) * 0.8)])
    cache = FrameCache(tmp_path / "cache", (32, 32), backend=backend)
    with pytest.raises(VideoDecodeError, match="cut.avi"):
        cache.frames(cut)
    assert not list((tmp_path / "cache").glob("*.npy"))
