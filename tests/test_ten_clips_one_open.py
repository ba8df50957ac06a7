"""A test video's clips come from one open of its file and equal the per-clip path exactly (notebook 06).

The item of a test-mode :class:`~vthcl_lib.datasets.LabeledClipDataset` is a video's K clips: the frame
count and the union of their frames come from one reader (:meth:`FrameSource.read_windows`), not a probe
and then a read, nor one read per clip.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vthcl_lib import video
from vthcl_lib.datasets import FrameSource, LabeledClipDataset, VideoRecord
from vthcl_lib.transforms import ClipAugmentation, EvalTransform


@pytest.fixture(scope="module")
def two_videos(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("oneopen")
    rng = np.random.default_rng(0)
    out = []
    for k, n in enumerate((37, 52)):
        frames = np.repeat(rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8), 8, axis=1).repeat(8, axis=2)
        out.append(video.write_video(root / f"v{k}.mp4", frames))
    return out


class _Opens:
    """Counts the files opened through decord and PyAV while it is installed."""

    def __init__(self, monkeypatch):
        import av
        import decord

        self.decord, self.pyav = [], []
        real_reader, real_open = decord.VideoReader, av.open

        def reader(path, *args, **kwargs):
            self.decord.append(str(path))
            return real_reader(path, *args, **kwargs)

        def av_open(path, *args, **kwargs):
            self.pyav.append(str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(decord, "VideoReader", reader)
        monkeypatch.setattr(av, "open", av_open)


@pytest.mark.parametrize("known_count", [False, True])
@pytest.mark.parametrize("augment", [False, True])
def test_ten_clips_come_from_one_open_and_equal_the_per_clip_path(two_videos, monkeypatch, known_count, augment):
    counts = {p: video.probe(p).num_frames for p in two_videos}
    records = [VideoRecord(p, p.stem, label=k, num_frames=counts[p] if known_count else None)
               for k, p in enumerate(two_videos)]
    transform = ClipAugmentation(crop_size=24) if augment else EvalTransform(24)
    ds = LabeledClipDataset(records, num_frames=4, stride=3, transform=transform, source=FrameSource(),
                            mode="test", num_clips=10, seed=5)
    opens = _Opens(monkeypatch)
    items = [ds[i] for i in range(len(ds))]
    assert opens.decord == [str(p) for p in two_videos] and opens.pyav == []  # one open per video, no probe
    monkeypatch.undo()
    for i, (record, (clips, label, video_id)) in enumerate(zip(records, items)):
        assert clips.shape == (10, 3, 4, 24, 24) and (label, video_id) == (i, record.video_id)
        windows = ds.clip_indices(counts[record.path])
        rng = np.random.default_rng([5, 0, i])  # the item's own stream, drawn clip after clip
        for clip, window in zip(clips, windows):
            frames = video.read_frames(record.path, window)  # the per-clip path: one read per clip
            expected = transform(frames, rng=rng)[0] if augment else transform(frames)
            assert torch.equal(clip, expected)


def test_one_open_reader_names_a_bad_file(tmp_path):
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(video.VideoDecodeError, match="noise.mp4"):
        video.read_chosen_frames(bad, lambda n: np.arange(n))


