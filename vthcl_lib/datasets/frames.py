"""Frame sources: where a dataset gets its frames (a frame cache or direct decoding), and the
up-front pass over a dataset's videos (bad files, frame counts, fps).

Notebook ``01_tempo_sampling``.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from vthcl_lib.cache import FrameCache
from vthcl_lib.datasets.records import LOGGER_NAME, BadVideoBudgetExceeded, VideoRecord
from vthcl_lib.video import VideoDecodeError, probe, read_chosen_frames, read_frames


class FrameSource:
    """Where a dataset gets frames: a :class:`FrameCache` when given, else direct decoding.

    Holds no open reader (only a backend name, a size and the cache's folder), so it is safe to
    fork into DataLoader workers. With a cache, frames come at the cache's ``decode_size`` from the
    cache's backend. Notebook ``01_tempo_sampling``.
    """

    def __init__(
        self,
        backend: str = "decord",
        decode_size: tuple[int, int] | None = None,
        cache: FrameCache | None = None,
    ):
        if cache is not None and decode_size is not None and tuple(decode_size) != cache.decode_size:
            raise ValueError(
                f"decode_size={tuple(decode_size)} differs from the cache's decode_size={cache.decode_size}; "
                "pass decode_size=None to use the cache's"
            )
        self.backend = backend
        if cache is not None:
            decode_size = cache.decode_size
        self.decode_size = None if decode_size is None else tuple(decode_size)
        self.cache = cache

    def __repr__(self) -> str:
        return f"FrameSource(backend={self.backend!r}, decode_size={self.decode_size}, cache={self.cache!r})"

    def num_frames(self, record: VideoRecord) -> int:
        """Frame count of ``record``: the cache's, else the record's own, else :func:`probe`'s.

        Notebook ``01_tempo_sampling``.
        """
        if self.cache is not None:
            return self.cache.num_frames(record.path)
        if record.num_frames is not None:
            return int(record.num_frames)
        return probe(record.path, backend=self.backend).num_frames

    def read_windows(self, record: VideoRecord,
                     choose: Callable[[int], np.ndarray]) -> tuple[torch.Tensor, np.ndarray]:
        """``(frames, indices)`` with ``indices = choose(frame count)``, from ONE open of the file.

        ``frames`` is uint8 ``[indices.size, H, W, 3]`` in the order of ``indices.reshape(-1)``, so
        ``choose`` may return several clips' windows ``[K, T]`` (a test video's 10 clips) and
        their union is decoded once. When the count is known (the cache's, the record's) only the
        decode opens the file; otherwise the reader that decodes also counts
        (:func:`vthcl_lib.video.read_chosen_frames`), instead of a probe and then a read.
        Notebook ``06_action_recognition``.
        """
        if self.cache is None and record.num_frames is None:
            return read_chosen_frames(record.path, choose, backend=self.backend, size=self.decode_size)
        n = self.num_frames(record)
        if n < 1:
            raise VideoDecodeError(record.path, "the video holds no frames")
        indices = np.asarray(choose(n))
        return self.read(record, indices.reshape(-1)), indices

    def read(self, record: VideoRecord, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Frames ``indices`` of ``record`` as uint8 ``[T, H, W, 3]`` (notebook ``01_tempo_sampling``)."""
        if self.cache is None:
            return read_frames(record.path, indices, backend=self.backend, size=self.decode_size)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0 or idx.min() < 0:
            raise ValueError(f"indices must be a non-empty sequence of frame numbers >= 0, got {indices!r}")
        frames = self.cache.frames(record.path)
        if idx.max() >= frames.shape[0]:
            raise VideoDecodeError(
                record.path, f"frame {idx.max()} requested but the cache holds {frames.shape[0]} frames"
            )
        return torch.from_numpy(np.ascontiguousarray(frames[idx]))


def frame_source_from_config(data_cfg) -> FrameSource:
    """The :class:`FrameSource` a :class:`vthcl_lib.config.DataConfig` describes (notebook ``00_setup_and_data``).

    With ``use_cache`` the frames come from a :class:`FrameCache` under ``cache_dir`` (default
    ``<data_root>/.frame_cache``).
    """
    if not data_cfg.use_cache:
        return FrameSource(backend=data_cfg.backend, decode_size=data_cfg.decode_size)
    cache_dir = data_cfg.cache_dir or Path(data_cfg.data_root) / ".frame_cache"
    return FrameSource(cache=FrameCache(cache_dir, data_cfg.decode_size, backend=data_cfg.backend))


def _prepare_records(
    records: list[VideoRecord], source: FrameSource, failure_budget: int, *, progress: bool
) -> tuple[list[VideoRecord], dict[str, str]]:
    """With a cache: decode everything up front, fill in frame counts, collect the bad files."""
    if source.cache is None:
        return records, {}
    failures = source.cache.build([r.path for r in records], progress=progress, skip_bad=True)
    logger = logging.getLogger(LOGGER_NAME)
    for path, reason in failures.items():
        logger.warning("bad video '%s': %s", path, reason)
    if len(failures) > failure_budget:
        listing = "\n".join(f"  {path}: {why}" for path, why in failures.items())
        raise BadVideoBudgetExceeded(
            f"{len(failures)} bad videos, more than failure_budget={failure_budget}; "
            f"run the scan step, fix or quarantine them:\n{listing}"
        )
    if len(failures) == len({str(r.path) for r in records}):
        raise BadVideoBudgetExceeded(f"none of the {len(records)} videos can be decoded")
    records = [
        r if str(r.path) in failures else replace(r, num_frames=source.cache.num_frames(r.path)) for r in records
    ]
    return records, failures


def _good_videos(videos: dict[str, VideoRecord], source: FrameSource, failure_budget: int, backend: str,
                 *, progress: bool) -> tuple[dict[str, VideoRecord], dict[str, float], dict[str, str]]:
    """Decode/cache the videos, drop the bad ones (within the budget), probe each good one's fps."""
    records, failures = _prepare_records(list(videos.values()), source, failure_budget, progress=progress)
    good, fps = {}, {}
    for record in records:
        if str(record.path) in failures:
            continue
        try:
            fps[record.video_id] = float(probe(record.path, backend=backend).fps)
        except VideoDecodeError as err:
            failures[str(record.path)] = err.reason
            continue
        good[record.video_id] = record
    if not good:
        raise BadVideoBudgetExceeded(f"none of the {len(videos)} videos can be read: {failures}")
    return good, fps, failures
