"""Decoded-frame cache: each video decoded ONCE into a uint8 ``.npy`` file, then memory-mapped.

Taught in notebook ``00_setup_and_data`` (why CPU presets cache) and ``01_tempo_sampling`` (reading clips).

On a laptop CPU, decoding dominates the cost of a training step on tiny frames. The CPU presets
therefore decode every video once, at ``decode_size``, and store the frames as a plain ``.npy`` array
``[N, H, W, 3]`` (uint8). Later reads memory-map the file and copy only the frames a clip needs.

Size on disk: ``N * H * W * 3`` bytes per video (``N`` frames at ``decode_size = (H, W)``), e.g. a
100-frame video at 64x64 takes 1.2 MB, at 32x32 0.3 MB; 2000 such 64x64 videos take about 2.5 GB.
That is why the paper presets (native frame size, 240k videos) do not cache.

An entry is keyed by a hash of (resolved path, file size, modification time, ``decode_size``,
backend), so editing or replacing a video makes a new entry instead of serving stale frames. Entries
are written atomically (temp file + ``os.replace``): a crash or a decode failure never leaves a
partial ``.npy`` under an entry's name. The cache holds no open file or reader, so it is safe to
carry into forked DataLoader workers; concurrent writers of one entry write identical bytes and the
last ``os.replace`` wins.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Iterable

import numpy as np
from vthcl_lib.progress import progress_bar

from vthcl_lib.video import VideoDecodeError, check_backend, check_size, probe, read_frames


class FrameCache:
    """Whole-video uint8 frame cache under ``cache_dir`` (see the module docstring for size and keys).

    ``decode_size=(h, w)`` resizes at decode time; ``None`` keeps each file's own size (costly on
    disk). ``backend`` is the decoder (``"decord"`` or ``"pyav"``). Notebook ``00_setup_and_data``.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        decode_size: tuple[int, int] | None,
        backend: str = "decord",
    ):
        check_backend(backend)
        decode_size = check_size(decode_size, "decode_size")
        self.cache_dir = Path(cache_dir)
        self.decode_size = decode_size
        self.backend = backend

    def __repr__(self) -> str:
        return f"FrameCache(cache_dir='{self.cache_dir}', decode_size={self.decode_size}, backend={self.backend!r})"

    def entry_path(self, path: str | os.PathLike) -> Path:
        """The ``.npy`` file that holds (or will hold) the frames of ``path`` in its current version.

        Raises :class:`VideoDecodeError` when the video file is missing. Notebook ``00_setup_and_data``.
        """
        path = Path(path)
        try:
            stat = path.stat()
            resolved = path.resolve()
        except OSError as err:
            raise VideoDecodeError(path, "file does not exist") from err
        key = f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}|{self.decode_size}|{self.backend}"
        digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:20]
        # The stem keeps cache folders readable; the digest makes the name unique.
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in path.stem)[:48]
        return self.cache_dir / f"{stem}-{digest}.npy"

    def is_cached(self, path: str | os.PathLike) -> bool:
        """Whether the current version of ``path`` already has an entry (notebook ``00_setup_and_data``)."""
        try:
            return self.entry_path(path).is_file()
        except VideoDecodeError:
            return False

    def frames(self, path: str | os.PathLike) -> np.ndarray:
        """All frames of ``path`` as a read-only memory-mapped uint8 array ``[N, H, W, 3]``.

        Decodes and stores the video first if it has no entry yet; a decode failure raises
        :class:`VideoDecodeError` naming the file. Notebook ``01_tempo_sampling``.
        """
        entry = self.ensure(path)
        try:
            return np.load(entry, mmap_mode="r")
        except (OSError, ValueError) as err:
            # A damaged entry (disk full, foreign file): drop it so the next call decodes afresh.
            entry.unlink(missing_ok=True)
            raise VideoDecodeError(path, f"cache entry '{entry}' is unreadable: {err}") from err

    def num_frames(self, path: str | os.PathLike) -> int:
        """Number of cached frames of ``path`` (builds the entry if needed; notebook ``00_setup_and_data``)."""
        return int(self.frames(path).shape[0])

    def ensure(self, path: str | os.PathLike) -> Path:
        """Make sure ``path`` has an entry; return the entry's file (notebook ``00_setup_and_data``)."""
        entry = self.entry_path(path)
        if entry.is_file():
            return entry
        frames = self._decode_whole(Path(path))
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f".{entry.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as handle:
                np.save(handle, frames, allow_pickle=False)
            os.replace(tmp, entry)
        finally:
            tmp.unlink(missing_ok=True)
        return entry

    def _decode_whole(self, path: Path) -> np.ndarray:
        # A truncated file fails here with either backend (decord's probe checks the header's count;
        # PyAV's read stops short): DESIGN section 6 counts it as bad, not as a shorter video.
        num_frames = probe(path, backend=self.backend).num_frames
        frames = read_frames(path, np.arange(num_frames), backend=self.backend, size=self.decode_size)
        return np.ascontiguousarray(frames.numpy())

    def build(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        workers: int = 0,
        progress: bool = True,
        skip_bad: bool = False,
    ) -> dict[str, str]:
        """Fill the cache for ``paths`` up front; returns ``{path: reason}`` for videos that failed.

        ``workers > 1`` decodes in a pool of freshly spawned processes (each opens its own readers;
        spawned, not forked, because a fork after torch ran its OpenMP pool deadlocks). A failure
        raises :class:`VideoDecodeError` naming the file unless ``skip_bad=True``, in which case it
        is collected in the returned dict. ``progress`` shows a progress bar. Notebook ``00_setup_and_data``.
        """
        todo = [Path(p) for p in dict.fromkeys(str(p) for p in paths) if not self.is_cached(p)]
        failures: dict[str, str] = {}
        bar = progress_bar(total=len(todo), desc="caching frames", unit="video", disable=not progress)
        try:
            if workers > 1 and len(todo) > 1:
                context = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_single_thread) as pool:
                    futures = {pool.submit(_ensure_in_worker, self.cache_dir, self.decode_size, self.backend, p): p
                               for p in todo}
                    for future in as_completed(futures):
                        error = future.result()
                        bar.update(1)
                        if error is not None:
                            if not skip_bad:
                                pool.shutdown(cancel_futures=True)
                                raise VideoDecodeError(futures[future], error)
                            failures[str(futures[future])] = error
            else:
                for p in todo:
                    try:
                        self.ensure(p)
                    except VideoDecodeError as err:
                        if not skip_bad:
                            raise
                        failures[str(p)] = err.reason
                    bar.update(1)
        finally:
            bar.close()
        return failures


def _single_thread() -> None:
    """Pool initializer: one torch thread per worker; the workers already share the cores."""
    import torch

    torch.set_num_threads(1)


def _ensure_in_worker(cache_dir: Path, decode_size, backend: str, path: Path) -> str | None:
    """Pool task: build one entry in a worker process; return the failure reason or None."""
    try:
        FrameCache(cache_dir, decode_size, backend).ensure(path)
    except VideoDecodeError as err:
        return err.reason
    return None
