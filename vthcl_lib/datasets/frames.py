"""Frame sources: where a dataset gets its frames (a frame cache or direct decoding), and the
frame-count index: the up-front pass over a dataset's videos (bad files, frame counts, fps).

Notebook ``01_tempo_sampling``. Frame counts and frame rates are known before training, never probed
per item (probing opens the file, and with decord indexes all of it, so its cost grows with the
file's length): :class:`FrameIndex` takes them from the prepare step's ``manifest.json`` when it is
there and current, else measures each video once, in parallel, and keeps the result in
``.frame_index.json`` beside the data, keyed by the file's size and modification time so that a
changed file is measured again.
"""
from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from vthcl_lib.cache import FrameCache
from vthcl_lib.datasets.records import LOGGER_NAME, BadVideoBudgetExceeded, VideoRecord
from vthcl_lib.progress import progress_bar
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


MANIFEST_NAME = "manifest.json"  # written by vthcl_lib.prepare (not imported: prepare comes after datasets)
INDEX_NAME = ".frame_index.json"
_INDEX_VERSION = 1


@dataclass(frozen=True)
class VideoMeta:
    """Frame count and frame rate of one video, as the frame-count index knows them (notebook ``01_tempo_sampling``)."""

    num_frames: int
    fps: float


def _file_key(path: Path) -> list[int] | None:
    """(size, mtime in ns) of the file a path points to; None when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


class FrameIndex:
    """Frame counts and fps of a dataset's videos, known once, before training (notebook ``01_tempo_sampling``).

    ``root`` is the dataset's folder (``<data_root>/kinetics400``, ...): its ``manifest.json`` (from
    ``data_scripts/prepare_*.py``) gives the count and fps of every video it lists as good, for
    files not modified since the manifest was written; every other video is measured once with
    :func:`vthcl_lib.video.probe` (``workers`` threads: the decoders release the GIL) and kept in
    ``root/.frame_index.json`` (written atomically), keyed by backend, path, size and modification
    time. ``root=None`` measures without keeping anything. A folder that cannot be written is
    measured and used all the same, with a warning.
    """

    def __init__(self, root: str | os.PathLike | None, *, backend: str = "decord", workers: int | None = None):
        self.root = None if root is None else Path(root)
        self.backend = backend
        self.workers = max(1, workers if workers is not None else min(8, os.cpu_count() or 1))

    def _manifest(self) -> dict[str, VideoMeta]:
        path = self.root / MANIFEST_NAME if self.root is not None else None
        if path is None or not path.is_file():
            return {}
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            written = path.stat().st_mtime_ns
            entries = manifest["videos"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            logging.getLogger(LOGGER_NAME).warning("ignoring '%s' (%s); measuring frame counts instead", path, err)
            return {}
        out = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("problem") or not entry.get("frames") or not entry.get("fps"):
                continue  # a video the prepare step found bad is measured (and judged) here again
            video = self.root / entry["path"]
            key = _file_key(video)
            if key is not None and key[1] <= written:  # changed after the manifest: measure it again
                out[str(video)] = VideoMeta(int(entry["frames"]), float(entry["fps"]))
        return out

    def _load(self) -> dict[str, dict]:
        path = self.root / INDEX_NAME if self.root is not None else None
        if path is None or not path.is_file():
            return {}
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("version") != _INDEX_VERSION:
                return {}
            return dict(stored.get("backends", {}).get(self.backend, {}))
        except (OSError, ValueError, AttributeError) as err:
            logging.getLogger(LOGGER_NAME).warning("ignoring '%s' (%s); measuring frame counts again", path, err)
            return {}

    def _save(self, entries: dict[str, dict]) -> None:
        path = self.root / INDEX_NAME
        tmp = path.with_name(f".{INDEX_NAME}.{os.getpid()}.tmp")
        try:
            stored = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            backends = stored.get("backends", {}) if stored.get("version") == _INDEX_VERSION else {}
        except (OSError, ValueError, AttributeError):
            backends = {}
        backends[self.backend] = entries
        try:
            tmp.write_text(json.dumps({"version": _INDEX_VERSION, "backends": backends}) + "\n", encoding="utf-8")
            os.replace(tmp, path)  # atomic: readers see the old index or the new one, never half of one
        except OSError as err:
            logging.getLogger(LOGGER_NAME).warning("cannot write the frame-count index '%s' (%s); "
                                                   "the counts will be measured again next time", path, err)
        finally:
            tmp.unlink(missing_ok=True)

    def _rel(self, path: Path) -> str:
        if self.root is not None:
            try:
                return Path(os.path.relpath(path, self.root)).as_posix()
            except ValueError:  # another drive (Windows)
                pass
        return str(path)

    def lookup(self, paths: Iterable[str | os.PathLike], *, progress: bool = True
               ) -> tuple[dict[str, VideoMeta], dict[str, str]]:
        """``({path: VideoMeta}, {path: reason})`` for ``paths``: the known ones, and the ones that cannot be read.

        Notebook ``01_tempo_sampling``.
        """
        paths = [Path(p) for p in dict.fromkeys(str(p) for p in paths)]
        known, failures = {}, {}
        from_manifest = self._manifest()
        stored = self._load()
        todo = []
        for path in paths:
            if str(path) in from_manifest:
                known[str(path)] = from_manifest[str(path)]
                continue
            entry, key = stored.get(self._rel(path)), _file_key(path)
            if entry is not None and key is not None and entry.get("key") == key:
                if "error" in entry:
                    failures[str(path)] = entry["error"]
                else:
                    known[str(path)] = VideoMeta(int(entry["frames"]), float(entry["fps"]))
            else:
                todo.append(path)
        if todo:
            measured = self._measure(todo, progress=progress)
            for path, (meta, error) in measured.items():
                if error is not None:
                    failures[str(path)] = error
                else:
                    known[str(path)] = meta
            if self.root is not None:
                for path, (meta, error) in measured.items():
                    key = _file_key(path)
                    if key is None:
                        continue  # missing: nothing to key it by, so it is checked again next time
                    stored[self._rel(path)] = {"key": key, "error": error} if error is not None else \
                        {"key": key, "frames": meta.num_frames, "fps": meta.fps}
                self._save(stored)
        return known, failures

    def _measure(self, paths: list[Path], *, progress: bool) -> dict[Path, tuple[VideoMeta | None, str | None]]:
        def one(path: Path) -> tuple[VideoMeta | None, str | None]:
            try:
                info = probe(path, backend=self.backend)
            except VideoDecodeError as err:
                return None, err.reason
            return VideoMeta(int(info.num_frames), float(info.fps)), None

        out = {}
        with progress_bar(total=len(paths), desc="frame counts", unit="video", disable=not progress) as bar:
            if self.workers > 1 and len(paths) > 1:
                with ThreadPoolExecutor(max_workers=self.workers) as pool:
                    for path, result in zip(paths, pool.map(one, paths)):
                        out[path] = result
                        bar.update(1)
            else:
                for path in paths:
                    out[path] = one(path)
                    bar.update(1)
        return out


def _prepare_records(
    records: list[VideoRecord], source: FrameSource, failure_budget: int, *, progress: bool,
    root: str | os.PathLike | None = None,
) -> tuple[list[VideoRecord], dict[str, str]]:
    """Know every video before training: fill in frame counts (and fps), collect the bad files.

    With a cache every video is decoded up front; without one the counts come from the
    :class:`FrameIndex` of ``root`` (the dataset's folder).
    """
    if source.cache is None:
        meta, failures = FrameIndex(root, backend=source.backend).lookup([r.path for r in records], progress=progress)
    else:
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
    if source.cache is not None:
        records = [r if str(r.path) in failures else replace(r, num_frames=source.cache.num_frames(r.path))
                   for r in records]
    else:
        records = [r if str(r.path) in failures else
                   replace(r, num_frames=meta[str(r.path)].num_frames, fps=meta[str(r.path)].fps) for r in records]
    return records, failures


def _good_videos(videos: dict[str, VideoRecord], source: FrameSource, failure_budget: int, backend: str,
                 *, progress: bool, root: str | os.PathLike | None = None
                 ) -> tuple[dict[str, VideoRecord], dict[str, float], dict[str, str]]:
    """Decode/cache or index the videos, drop the bad ones (within the budget), know each good one's fps."""
    records, failures = _prepare_records(list(videos.values()), source, failure_budget, progress=progress, root=root)
    good, fps = {}, {}
    for record in records:
        if str(record.path) in failures:
            continue
        if record.fps is not None:
            fps[record.video_id] = float(record.fps)
            good[record.video_id] = record
            continue
        try:  # the cache keeps frames, not rates
            fps[record.video_id] = float(probe(record.path, backend=backend).fps)
        except VideoDecodeError as err:
            failures[str(record.path)] = err.reason
            continue
        good[record.video_id] = record
    if not good:
        raise BadVideoBudgetExceeded(f"none of the {len(videos)} videos can be read: {failures}")
    return good, fps, failures
