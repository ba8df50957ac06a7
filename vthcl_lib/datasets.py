"""Datasets: annotation parsers for Kinetics-, UCF-101- and HMDB-51-style roots, and the torch datasets.

Taught in notebook ``00_setup_and_data`` (layouts, parsers, bad videos) and ``01_tempo_sampling``
(the pre-training pair). Synthetic and real data share the layouts, so one parser serves both:

* Kinetics: ``R/kinetics400/<split>.csv`` (``label,youtube_id,time_start,time_end,split``) and videos
  ``<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.<ext>`` (or flat under ``<split>/``);
* UCF-101: ``R/ucf101/UCF-101/<Class>/v_<Class>_gGG_cCC.avi`` and ``R/ucf101/ucfTrainTestlist/``
  (``classInd.txt``, ``trainlist0{1,2,3}.txt``, ``testlist0{1,2,3}.txt``);
* HMDB-51: ``R/hmdb51/videos/<class>/<name>.avi`` and
  ``R/hmdb51/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt`` (tag 1 train, 2 test, 0 unused).

Bad videos (DESIGN section 6): a missing, empty, truncated or undecodable file is a counted event,
logged as a warning on the ``vthcl_lib.datasets`` logger with the file's name; the dataset serves
another, deterministically chosen item instead. Once more than ``failure_budget`` distinct bad files
were met, :class:`BadVideoBudgetExceeded` stops the run and names them. Under DataLoader workers each
worker holds its own copy of the dataset and so counts its own bad files (the budget applies per
worker); the ``scan`` step lists every bad file before training.
"""
from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from vthcl_lib.cache import FrameCache
from vthcl_lib.tempo import (
    SHORT_VIDEO_RULES,
    check_tempo,
    keyframe_indices,
    observation_indices,
    observation_window,
    sample_tempo_indices,
    uniform_clip_starts,
    window_indices,
)
from vthcl_lib.transforms import (
    ClipAugmentation,
    augmentation_from_config,
    eval_transform_from_config,
    hflip,
    normalize,
    to_float_cthw,
)
from vthcl_lib.video import VideoDecodeError, probe, read_chosen_frames, read_frames

LOGGER_NAME = "vthcl_lib.datasets"
KINETICS_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi")
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
SPLITS = (1, 2, 3)
SUBSETS = ("train", "test")
LABELED_DATASETS = ("ucf101", "hmdb51")


class DatasetLayoutError(ValueError):
    """A data root lacks the files its layout needs; the message names the file and the expected layout.

    Notebook ``00_setup_and_data``.
    """


class BadVideoBudgetExceeded(RuntimeError):
    """More bad videos than ``failure_budget`` were met; the message lists them (notebook ``00_setup_and_data``)."""


@dataclass(frozen=True)
class VideoRecord:
    """One video of a dataset: its file, an id, an optional 0-based label and frame count.

    Notebook ``00_setup_and_data``.
    """

    path: Path
    video_id: str
    label: int | None = None
    num_frames: int | None = None


# --------------------------------------------------------------------------- parsers


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DatasetLayoutError(f"folder '{path}' does not exist; expected {what}")


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DatasetLayoutError(f"file '{path}' does not exist; expected {what}")


def _check_split(split: int, subset: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not known; expected one of {SPLITS}")
    if subset not in SUBSETS:
        raise ValueError(f"subset={subset!r} is not known; expected one of {SUBSETS}")


def _text_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a text file with their 1-based numbers; CRLF and trailing blanks removed."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


class _FolderIndex:
    """Directory listings read once, so resolving 240k Kinetics rows costs one listing per folder."""

    def __init__(self) -> None:
        self._names: dict[Path, frozenset[str]] = {}

    def contains(self, folder: Path, name: str) -> bool:
        if folder not in self._names:
            try:
                self._names[folder] = frozenset(os.listdir(folder))
            except OSError:
                self._names[folder] = frozenset()
        return name in self._names[folder]


def read_kinetics_csv(root: str | os.PathLike, split: str = "train") -> tuple[list[VideoRecord], list[str]]:
    """Records of a Kinetics-style ``root`` (``R/kinetics400``) for ``split``, in CSV order, and the label names.

    Labels are indices into the sorted label names (the second return value). Each path is the first
    existing file among ``<split>/<label>/<name>.<ext>`` and ``<split>/<name>.<ext>`` (ext ``.mp4``,
    ``.webm``, ``.mkv``, ``.avi``; a label folder with spaces may also be spelled with underscores);
    when none exists the canonical ``<split>/<label>/<name>.mp4`` is kept so a scan reports it
    missing. Notebook ``00_setup_and_data``.
    """
    root = Path(root)
    layout = "R/kinetics400/<split>.csv (label,youtube_id,time_start,time_end,split) and <split>/[<label>/]<video>"
    _require_dir(root, f"a Kinetics-style root: {layout}")
    csv_path = root / f"{split}.csv"
    _require_file(csv_path, f"the annotation CSV of split {split!r}: {layout}")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in KINETICS_COLUMNS if c not in header]
        if missing:
            raise DatasetLayoutError(
                f"'{csv_path}' lacks the columns {missing}; expected the header {','.join(KINETICS_COLUMNS)},split"
            )
        rows = []
        for line_no, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not any(row.values()):
                continue
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            except ValueError as err:
                raise DatasetLayoutError(
                    f"'{csv_path}' line {line_no}: time_start/time_end must be numbers, got "
                    f"{row['time_start']!r}/{row['time_end']!r}"
                ) from err
            if not row["youtube_id"]:
                raise DatasetLayoutError(f"'{csv_path}' line {line_no}: empty youtube_id")
            rows.append((row["label"], f"{row['youtube_id']}_{start:06d}_{end:06d}"))
    label_names = sorted({label for label, _ in rows if label})
    label_ids = {name: k for k, name in enumerate(label_names)}
    split_dir = root / split
    folders = _FolderIndex()
    records = []
    for label, name in rows:
        candidates = [split_dir / label, split_dir / label.replace(" ", "_"), split_dir] if label else [split_dir]
        path = next(
            (folder / (name + ext) for folder in dict.fromkeys(candidates) for ext in KINETICS_EXTENSIONS
             if folders.contains(folder, name + ext)),
            candidates[0] / f"{name}.mp4",
        )
        records.append(VideoRecord(path=path, video_id=name, label=label_ids.get(label)))
    return records, label_names


def read_ucf101_split(
    root: str | os.PathLike, split: int = 1, subset: str = "train"
) -> tuple[list[VideoRecord], list[str]]:
    """Records of UCF-101-style ``root`` (``R/ucf101``) for ``split`` 1..3 and ``subset`` "train"/"test".

    Labels are 0-based; class names come from ``classInd.txt`` in id order. The label of a line is
    its class folder (test lists carry no id); a train line's id must agree. Tolerates CRLF and
    trailing blanks. Notebook ``00_setup_and_data``.
    """
    _check_split(split, subset)
    root = Path(root)
    layout = ("R/ucf101/UCF-101/<Class>/v_<Class>_gGG_cCC.avi and "
              "R/ucf101/ucfTrainTestlist/{classInd,trainlist0k,testlist0k}.txt")
    _require_dir(root, f"a UCF-101-style root: {layout}")
    lists_dir, videos_dir = root / "ucfTrainTestlist", root / "UCF-101"
    _require_dir(lists_dir, f"the split lists folder: {layout}")
    _require_dir(videos_dir, f"the video folder: {layout}")
    class_file = lists_dir / "classInd.txt"
    _require_file(class_file, f"lines '<id> <ClassName>' with 1-based ids: {layout}")
    by_id: dict[int, str] = {}
    for line_no, line in _text_lines(class_file):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise DatasetLayoutError(f"'{class_file}' line {line_no}: expected '<id> <ClassName>', got {line!r}")
        by_id[int(parts[0])] = parts[1]
    if sorted(by_id) != list(range(1, len(by_id) + 1)):
        raise DatasetLayoutError(f"'{class_file}': class ids must run 1..{len(by_id)}, got {sorted(by_id)}")
    class_names = [by_id[k] for k in sorted(by_id)]
    # Case-insensitive: the real lists spell some class names with another case than their folder.
    label_of = {name.lower(): k for k, name in enumerate(class_names)}
    list_file = lists_dir / f"{subset}list0{split}.txt"
    _require_file(list_file, f"the {subset} list of split {split}: {layout}")
    records = []
    for line_no, line in _text_lines(list_file):
        parts = line.split()
        rel = parts[0].replace("\\", "/")
        folder = rel.split("/")[0]
        if "/" not in rel or folder.lower() not in label_of or len(parts) > 2:
            raise DatasetLayoutError(
                f"'{list_file}' line {line_no}: expected '<ClassName>/<video>.avi[ <id>]' with a class of "
                f"classInd.txt, got {line!r}"
            )
        label = label_of[folder.lower()]
        if len(parts) == 2 and parts[1] != str(label + 1):
            raise DatasetLayoutError(
                f"'{list_file}' line {line_no}: id {parts[1]} disagrees with class '{folder}' (id {label + 1})"
            )
        path = videos_dir / rel
        records.append(VideoRecord(path=path, video_id=path.stem, label=label))
    return records, class_names


_HMDB_SPLIT_FILE = re.compile(r"^(?P<name>.+)_test_split(?P<split>[123])\.txt$")


def read_hmdb51_split(
    root: str | os.PathLike, split: int = 1, subset: str = "train"
) -> tuple[list[VideoRecord], list[str]]:
    """Records of HMDB-51-style ``root`` (``R/hmdb51``) for ``split`` 1..3 and ``subset`` "train"/"test".

    Class ids are the sorted class names, 0-based; tag 1 lines are train, 2 test, 0 unused (left
    out). Tolerates CRLF and trailing blanks. Notebook ``00_setup_and_data``.
    """
    _check_split(split, subset)
    root = Path(root)
    layout = "R/hmdb51/videos/<class>/<name>.avi and R/hmdb51/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt"
    _require_dir(root, f"an HMDB-51-style root: {layout}")
    splits_dir, videos_dir = root / "testTrainMulti_7030_splits", root / "videos"
    _require_dir(splits_dir, f"the split files folder: {layout}")
    _require_dir(videos_dir, f"the video folder: {layout}")
    split_files = {}
    for entry in splits_dir.iterdir():
        match = _HMDB_SPLIT_FILE.match(entry.name)
        if match and int(match["split"]) == split:
            split_files[match["name"]] = entry
    if not split_files:
        raise DatasetLayoutError(
            f"folder '{splits_dir}' holds no '<class>_test_split{split}.txt' files; expected {layout}"
        )
    class_names = sorted(split_files)
    wanted_tag = "1" if subset == "train" else "2"
    records = []
    for label, name in enumerate(class_names):
        for line_no, line in _text_lines(split_files[name]):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DatasetLayoutError(
                    f"'{split_files[name]}' line {line_no}: expected '<video>.avi <tag>' with tag 0, 1 or 2, "
                    f"got {line!r}"
                )
            if parts[1] == wanted_tag:
                path = videos_dir / name / parts[0]
                records.append(VideoRecord(path=path, video_id=path.stem, label=label))
    return records, class_names


# --------------------------------------------------------------------------- frames


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


def _transform_clip(transform: Callable, frames: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """One clip through either call convention: ``aug(frames, rng=...)`` -> tuple, or ``t(frames)``."""
    if isinstance(transform, ClipAugmentation):
        return transform(frames, rng=rng)[0]
    out = transform(frames)
    return out[0] if isinstance(out, tuple) else out


class _BadVideoTracker:
    """Shared bad-video bookkeeping of the datasets: count, log, enforce the budget, pick a substitute."""

    records: list[VideoRecord]
    seed: int
    epoch: int
    failure_budget: int
    bad_videos: dict[str, str]
    logger: logging.Logger

    def _init_tracking(self, failure_budget: int, logger: logging.Logger | None) -> None:
        if int(failure_budget) != failure_budget or failure_budget < 0:
            raise ValueError(f"failure_budget={failure_budget!r} must be a whole number >= 0")
        self.failure_budget = int(failure_budget)
        self.bad_videos = {}
        self._distinct_videos = len({str(r.path) for r in self.records})
        self.logger = logger or logging.getLogger(LOGGER_NAME)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: a (seed, epoch, index) always gives the same sample (notebook ``01_tempo_sampling``)."""
        self.epoch = int(epoch)

    def _note_bad(self, record: VideoRecord, reason: str) -> None:
        key = str(record.path)
        if key in self.bad_videos:
            return
        self.bad_videos[key] = reason
        self.logger.warning(
            "bad video '%s': %s; serving another video instead (%d bad so far, budget %d)",
            key, reason, len(self.bad_videos), self.failure_budget,
        )
        if len(self.bad_videos) > self.failure_budget:
            listing = "\n".join(f"  {path}: {why}" for path, why in self.bad_videos.items())
            raise BadVideoBudgetExceeded(
                f"{len(self.bad_videos)} bad videos met, more than failure_budget={self.failure_budget}; "
                f"run the scan step, fix or quarantine them:\n{listing}"
            )

    def _candidates(self, index: int):
        """``index`` first, then substitutes drawn from their own stream, skipping known bad files.

        The substitutes come from ``default_rng([seed, epoch, index, 1])`` so that the choice does not
        depend on how much randomness a failed attempt used.
        """
        yield index
        draw = np.random.default_rng([self.seed, self.epoch, index, 1])
        while True:
            if len(self.bad_videos) >= self._distinct_videos:
                raise BadVideoBudgetExceeded(
                    f"every one of the {len(self.records)} videos is bad:\n"
                    + "\n".join(f"  {path}: {why}" for path, why in self.bad_videos.items())
                )
            yield int(draw.integers(len(self.records)))

    def _serve(self, index: int, make: Callable[[VideoRecord, np.random.Generator], tuple]) -> tuple[int, tuple]:
        """Run ``make(record, rng)`` on ``index`` or, when its video is bad, on a substitute."""
        if not 0 <= index < len(self.records):
            raise IndexError(f"index {index} out of range for a dataset of {len(self.records)} videos")
        for candidate in self._candidates(index):
            record = self.records[candidate]
            if str(record.path) in self.bad_videos:
                continue
            # A fresh generator per attempt: the served sample depends on (seed, epoch, index) only.
            rng = np.random.default_rng([self.seed, self.epoch, index])
            try:
                return candidate, make(record, rng)
            except VideoDecodeError as err:
                self._note_bad(record, err.reason)
        raise AssertionError("unreachable")  # pragma: no cover - _candidates never ends by itself


def _num_frames_or_bad(source: FrameSource, record: VideoRecord) -> int:
    n = source.num_frames(record)
    if n < 1:
        raise VideoDecodeError(record.path, "the video holds no frames")
    return n


class PretrainDataset(_BadVideoTracker, Dataset):
    """Visual-tempo pairs for pre-training: ``(slow, fast, index)`` per item (notebook ``01_tempo_sampling``).

    Each item draws one window of ``window`` consecutive frames (uniform start), decodes the fast
    clip (stride ``tau/alpha``, ``alpha*window/tau`` frames) ONCE, applies ONE augmentation draw of
    ``transform`` to it and takes the slow clip as ``fast[:, ::alpha]`` (``window/tau`` frames),
    which equals augmenting ``fast[::alpha]`` with the same draw. Shapes: float
    ``[C, window/tau, h, w]`` and ``[C, alpha*window/tau, h, w]``.

    Randomness comes from ``np.random.default_rng([seed, epoch, index])``; call :meth:`set_epoch`
    each epoch. The returned index is the memory-bank index of the video actually served: ``index``
    itself, or the substitute's index when the video was bad (module docstring). ``bad_videos``
    maps each bad file met (by this process) to the reason.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        *,
        window: int,
        tau: int,
        alpha: int,
        transform: ClipAugmentation,
        source: FrameSource,
        seed: int = 0,
        short_video: str = "clamp",
        failure_budget: int = 20,
        logger: logging.Logger | None = None,
    ):
        check_tempo(window, tau, alpha)
        if short_video not in SHORT_VIDEO_RULES:
            raise ValueError(f"short_video={short_video!r} is not known; expected one of {SHORT_VIDEO_RULES}")
        if not records:
            raise ValueError("records is empty: a pre-training dataset needs at least one video")
        self.records = list(records)
        self.window, self.tau, self.alpha = int(window), int(tau), int(alpha)
        self.transform, self.source = transform, source
        self.seed, self.epoch, self.short_video = int(seed), 0, short_video
        self._init_tracking(failure_budget, logger)

    def __len__(self) -> int:
        return len(self.records)

    def _make(self, record: VideoRecord, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n = _num_frames_or_bad(self.source, record)
        _, fast_idx = sample_tempo_indices(
            n, window=self.window, tau=self.tau, alpha=self.alpha, rng=rng, short_video=self.short_video
        )
        frames = self.source.read(record, fast_idx)
        if isinstance(self.transform, ClipAugmentation):
            return self.transform.tempo_pair(frames, self.alpha, rng)
        fast = _transform_clip(self.transform, frames, rng)
        return fast[:, :: self.alpha], fast

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        served, (slow, fast) = self._serve(int(index), self._make)
        return slow, fast, served


class LabeledClipDataset(_BadVideoTracker, Dataset):
    """Labeled clips for fine-tuning and testing (notebook ``06_action_recognition``).

    ``mode="train"``: one random window of ``num_frames*stride`` frames, ``num_frames`` frames at
    ``stride``, returns ``(clip [C, T, h, w], label, video_id)``. ``mode="test"``: ``num_clips``
    windows at :func:`vthcl_lib.tempo.uniform_clip_starts` over the whole video (their frames
    decoded together, once), returns ``(clips [num_clips, C, T, h, w], label, video_id)``.
    ``transform`` is a :class:`ClipAugmentation` (called with the item's rng; in test mode one draw
    per clip) or an :class:`EvalTransform`-like ``t(frames)``. Bad videos as in the module docstring;
    a substitute's label and id are returned with its clip.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        *,
        num_frames: int,
        stride: int,
        transform: Callable,
        source: FrameSource,
        mode: str = "train",
        num_clips: int = 10,
        seed: int = 0,
        short_video: str = "clamp",
        failure_budget: int = 20,
        logger: logging.Logger | None = None,
    ):
        for name, value in (("num_frames", num_frames), ("stride", stride), ("num_clips", num_clips)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name}={value!r} must be a whole number >= 1")
        if mode not in ("train", "test"):
            raise ValueError(f"mode={mode!r} is not known; expected 'train' or 'test'")
        if short_video not in SHORT_VIDEO_RULES:
            raise ValueError(f"short_video={short_video!r} is not known; expected one of {SHORT_VIDEO_RULES}")
        if not records:
            raise ValueError("records is empty: a labeled dataset needs at least one video")
        unlabeled = [r for r in records if r.label is None]
        if unlabeled:
            raise ValueError(f"{len(unlabeled)} records have no label, e.g. '{unlabeled[0].path}'")
        self.records = list(records)
        self.num_frames, self.stride, self.num_clips = int(num_frames), int(stride), int(num_clips)
        self.window = self.num_frames * self.stride
        self.transform, self.source, self.mode = transform, source, mode
        self.seed, self.epoch, self.short_video = int(seed), 0, short_video
        self._init_tracking(failure_budget, logger)

    def __len__(self) -> int:
        return len(self.records)

    def clip_indices(self, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Frame indices ``[clips, T]`` this dataset reads from a ``num_frames``-frame video.

        Train mode: one window with a uniform random start (``rng``); test mode: the
        ``uniform_clip_starts`` windows. Notebook ``01_tempo_sampling``.
        """
        if self.mode == "train":
            rng = np.random.default_rng() if rng is None else rng
            starts = [int(rng.integers(0, max(num_frames - self.window, 0) + 1))]
        else:
            starts = uniform_clip_starts(num_frames, window=self.window, num_clips=self.num_clips)
        return np.stack([
            window_indices(int(s), num_frames, window=self.window, stride=self.stride, short_video=self.short_video)
            for s in starts
        ])

    def _make(self, record: VideoRecord, rng: np.random.Generator) -> tuple[torch.Tensor]:
        # One open of the file for all the clips: count, then decode the union of their frames once.
        frames, idx = self.source.read_windows(record, lambda n: self.clip_indices(n, rng))
        clips = frames.reshape(idx.shape[0], idx.shape[1], *frames.shape[1:])
        out = [_transform_clip(self.transform, clip, rng) for clip in clips]
        return (out[0],) if self.mode == "train" else (torch.stack(out),)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        served, (clip,) = self._serve(int(index), self._make)
        record = self.records[served]
        return clip, int(record.label), record.video_id


# --------------------------------------------------------------------------- Epic-Kitchens-55 annotations

EPIC_COLUMNS = ("uid", "participant_id", "video_id", "narration", "start_timestamp", "stop_timestamp",
                "start_frame", "stop_frame", "verb", "verb_class", "noun", "noun_class")


@dataclass(frozen=True)
class EpicSegment:
    """One row of ``EPIC_train_action_labels.csv`` (Epic-Kitchens-55); notebook ``09_action_anticipation``.

    ``action`` is the (verb_class, noun_class) pair the anticipation protocol scores as one label.
    """

    uid: int
    participant_id: str
    video_id: str
    narration: str
    start_frame: int
    stop_frame: int
    verb: str
    verb_class: int
    noun: str
    noun_class: int

    @property
    def action(self) -> tuple[int, int]:
        return (self.verb_class, self.noun_class)


def read_epic_action_labels(csv_path: str | os.PathLike) -> list[EpicSegment]:
    """Parse Epic-Kitchens-55's ``EPIC_train_action_labels.csv`` into :class:`EpicSegment` rows, in file order.

    Notebook ``09_action_anticipation``. Extra columns (``all_nouns``, ``all_noun_classes``, the
    timestamps) are read past; a missing column, a non-integer frame or class, or a segment that ends
    before it starts is a :class:`DatasetLayoutError` naming the file and line.
    """
    csv_path = Path(csv_path)
    _require_file(csv_path, "Epic-Kitchens-55's EPIC_train_action_labels.csv")
    segments = []
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in EPIC_COLUMNS if c not in header]
        if missing:
            raise DatasetLayoutError(f"'{csv_path}' lacks the columns {missing}; expected at least {','.join(EPIC_COLUMNS)}")
        for line_no, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if not any(row.values()):
                continue
            try:
                ints = {k: int(row[k]) for k in ("uid", "start_frame", "stop_frame", "verb_class", "noun_class")}
            except ValueError as err:
                raise DatasetLayoutError(f"'{csv_path}' line {line_no}: {err}; expected whole numbers in uid, "
                                         "start_frame, stop_frame, verb_class and noun_class") from err
            if ints["stop_frame"] < ints["start_frame"] or ints["start_frame"] < 0:
                raise DatasetLayoutError(f"'{csv_path}' line {line_no}: start_frame={ints['start_frame']}, "
                                         f"stop_frame={ints['stop_frame']}; expected 0 <= start_frame <= stop_frame")
            segments.append(EpicSegment(participant_id=row["participant_id"], video_id=row["video_id"],
                                        narration=row["narration"], verb=row["verb"], noun=row["noun"], **ints))
    return segments


def read_video_list(path: str | os.PathLike) -> list[str]:
    """Video ids, one per line (blank lines and ``#`` comments skipped); notebook ``09_action_anticipation``."""
    path = Path(path)
    _require_file(path, "a video list (one video id per line)")
    return [line for _, line in _text_lines(path) if not line.startswith("#")]


# --------------------------------------------------------------------------- AVA v2.2 annotations

AVA_COLUMNS = ("video_id", "timestamp", "x1", "y1", "x2", "y2", "action_id", "person_id")


@dataclass(frozen=True)
class AvaBox:
    """One row of an AVA CSV (notebook ``08_action_detection``).

    ``box`` is ``(x1, y1, x2, y2)`` normalised to [0, 1]. Annotation files fill ``action_id``
    (1-based) and, from v2.1 on, ``person_id``; detection files (person boxes) leave the action
    empty and fill ``score``.
    """

    video_id: str
    timestamp: int
    box: tuple[float, float, float, float]
    action_id: int | None = None
    person_id: int | None = None
    score: float | None = None


@dataclass(frozen=True)
class AvaKeyframe:
    """Every person box of one keyframe with its set of actions (notebook ``08_action_detection``).

    ``boxes`` is float32 ``[K, 4]`` normalised; ``actions[k]`` the 1-based action ids of box k
    (empty for person boxes that come from a detector); ``scores[k]`` the detector's score or 1.
    """

    video_id: str
    timestamp: int
    boxes: np.ndarray
    actions: tuple[frozenset[int], ...]
    scores: np.ndarray


def read_ava_csv(csv_path: str | os.PathLike, *, kind: str = "annotations") -> list[AvaBox]:
    """Parse an AVA CSV: ``kind="annotations"`` (``ava_{train,val}_v2.2.csv``: video_id, timestamp,
    x1, y1, x2, y2, action_id[, person_id]) or ``"detections"`` (person boxes, pySlowFast's
    ``ava_detection_*_boxes_and_labels.csv``: ..., x2, y2, [action_id], score).

    Notebook ``08_action_detection``. A short row, a non-numeric field, a box outside [0, 1] or
    with ``x2 <= x1`` / ``y2 <= y1`` is a :class:`DatasetLayoutError` naming the file and line.
    """
    if kind not in ("annotations", "detections"):
        raise ValueError(f"kind={kind!r}; expected 'annotations' or 'detections'")
    csv_path = Path(csv_path)
    _require_file(csv_path, f"an AVA {kind} CSV (video_id,timestamp,x1,y1,x2,y2,...)")
    rows = []
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            row = [field.strip() for field in row]
            if not any(row):
                continue
            if len(row) < (7 if kind == "annotations" else 8):
                raise DatasetLayoutError(f"'{csv_path}' line {line_no}: {len(row)} fields; expected "
                                         + ("video_id,timestamp,x1,y1,x2,y2,action_id[,person_id]" if kind == "annotations"
                                            else "video_id,timestamp,x1,y1,x2,y2,[action_id],score"))
            try:
                box = tuple(float(v) for v in row[2:6])
                timestamp = int(row[1])
                action = int(row[6]) if row[6] else None
                person = int(row[7]) if kind == "annotations" and len(row) > 7 and row[7] else None
                score = float(row[7]) if kind == "detections" else None
            except ValueError as err:
                raise DatasetLayoutError(f"'{csv_path}' line {line_no}: {err}; expected an integer timestamp, "
                                         "four box coordinates, integer action and person ids"
                                         + (" and a float score" if kind == "detections" else "")) from err
            x1, y1, x2, y2 = box
            if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
                raise DatasetLayoutError(f"'{csv_path}' line {line_no}: box {box}; expected normalised "
                                         "0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")
            if kind == "annotations" and action is None:
                raise DatasetLayoutError(f"'{csv_path}' line {line_no}: no action_id; annotation rows need one")
            rows.append(AvaBox(row[0], timestamp, box, action, person, score))  # type: ignore[arg-type]
    return rows


def read_ava_excluded_timestamps(csv_path: str | os.PathLike) -> set[tuple[str, int]]:
    """``ava_*_excluded_timestamps_v2.2.csv`` -> {(video_id, timestamp)} (notebook ``08_action_detection``)."""
    csv_path = Path(csv_path)
    _require_file(csv_path, "an AVA excluded-timestamps CSV (video_id,timestamp)")
    out = set()
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            if not any(f.strip() for f in row):
                continue
            try:
                out.add((row[0].strip(), int(row[1])))
            except (IndexError, ValueError) as err:
                raise DatasetLayoutError(f"'{csv_path}' line {line_no}: {row}; expected video_id,timestamp") from err
    return out


_PBTXT_ITEM = re.compile(r"\b(?:item|label)\s*\{(?P<body>[^}]*)\}", re.S)  # both forms AVA ships


def read_ava_label_map(pbtxt_path: str | os.PathLike) -> dict[int, str]:
    """``ava_action_list_v2.2.pbtxt`` -> {action id: name} (notebook ``08_action_detection``).

    Reads ``name:`` with ``id:`` (or ``label_id:``) inside each ``item { ... }`` (the ActivityNet
    60-class list) or ``label { ... }`` (the full list in ``ava_v2.2.zip``).
    """
    pbtxt_path = Path(pbtxt_path)
    _require_file(pbtxt_path, "AVA's action list (ava_action_list_v2.2.pbtxt)")
    labels = {}
    for match in _PBTXT_ITEM.finditer(pbtxt_path.read_text(encoding="utf-8")):
        body = match.group("body")
        name = re.search(r'name:\s*"(?P<v>[^"]*)"', body)
        ident = re.search(r"\b(?:label_)?id:\s*(?P<v>\d+)", body)
        if not name or not ident:
            raise DatasetLayoutError(f"'{pbtxt_path}': item {body.strip()!r} lacks a name or an id")
        labels[int(ident.group("v"))] = name.group("v")
    if not labels:
        raise DatasetLayoutError(f"'{pbtxt_path}' holds no 'item {{ name: ... id: ... }}' or "
                                 "'label {{ name: ... label_id: ... }}' entries")
    return labels


def group_ava_keyframes(rows: Sequence[AvaBox], *, excluded: set[tuple[str, int]] = frozenset(),
                        min_score: float = 0.0) -> list[AvaKeyframe]:
    """Rows -> one :class:`AvaKeyframe` per (video, timestamp), in order of first appearance.

    Rows of the same person (same ``person_id``, or the same box when there is none) merge into one
    box with a set of actions, as AVA lists one row per (person, action). Excluded keyframes and
    detections scoring below ``min_score`` are dropped. Notebook ``08_action_detection``.
    """
    frames: dict[tuple[str, int], dict] = {}
    for row in rows:
        key = (row.video_id, row.timestamp)
        if key in excluded or (row.score is not None and row.score < min_score):
            continue
        people = frames.setdefault(key, {})
        person = (row.person_id, row.box) if row.person_id is not None else (None, row.box)
        entry = people.setdefault(person, {"box": row.box, "actions": set(), "score": 1.0 if row.score is None else row.score})
        if row.action_id is not None:
            entry["actions"].add(row.action_id)
    out = []
    for (video_id, timestamp), people in frames.items():
        entries = list(people.values())
        out.append(AvaKeyframe(
            video_id, timestamp, np.array([e["box"] for e in entries], dtype=np.float32).reshape(-1, 4),
            tuple(frozenset(e["actions"]) for e in entries), np.array([e["score"] for e in entries], dtype=np.float32)))
    return out


# --------------------------------------------------------------------------- detection and anticipation datasets


def keyframe_key(video_id: str, timestamp: int) -> str:
    """``"<video_id>,<timestamp:04d>"``, AVA's own key of a keyframe (notebook ``08_action_detection``)."""
    return f"{video_id},{int(timestamp):04d}"


class AvaDetectionDataset(_BadVideoTracker, Dataset):
    """AVA-style keyframes for detection (notebook ``08_action_detection``).

    ``keyframes`` are :class:`AvaKeyframe` (ground truth for training, person boxes for testing);
    ``videos`` maps a video id to its :class:`VideoRecord`, ``fps`` to its frame rate. An item is
    ``(clip [3, T, H, W], boxes [K, 4] normalised, targets [K, C] multi-hot, key)`` with
    ``targets[k, c] = 1`` when box k does ``class_ids[c]``. ``flip=True`` (training) mirrors the
    clip and its boxes with probability 1/2; the frames are otherwise only normalised (no crop, so
    the boxes stay where they are). Bad videos as in the module docstring.
    """

    def __init__(self, keyframes: Sequence[AvaKeyframe], videos: dict[str, VideoRecord], fps: dict[str, float], *,
                 class_ids: Sequence[int], clip_frames: int, stride: int, source: FrameSource,
                 mean: Sequence[float], std: Sequence[float], flip: bool = False, seed: int = 0,
                 failure_budget: int = 20, logger: logging.Logger | None = None):
        if not keyframes:
            raise ValueError("keyframes is empty: a detection dataset needs at least one keyframe")
        unknown = sorted({k.video_id for k in keyframes} - set(videos))
        if unknown:
            raise ValueError(f"{len(unknown)} keyframes' videos have no record, e.g. '{unknown[0]}'")
        self.keyframes = list(keyframes)
        self.by_key = {keyframe_key(k.video_id, k.timestamp): k for k in self.keyframes}
        # one record per keyframe (its key as id), so bad-video bookkeeping serves another keyframe
        self.records = [replace(videos[k.video_id], video_id=keyframe_key(k.video_id, k.timestamp)) for k in keyframes]
        self.fps, self.class_ids = dict(fps), [int(c) for c in class_ids]
        self.column = {c: i for i, c in enumerate(self.class_ids)}
        self.clip_frames, self.stride, self.source, self.flip = int(clip_frames), int(stride), source, bool(flip)
        self.mean, self.std = tuple(mean), tuple(std)
        self.seed, self.epoch = int(seed), 0
        self._init_tracking(failure_budget, logger)

    def __len__(self) -> int:
        return len(self.keyframes)

    def targets(self, keyframe: AvaKeyframe) -> torch.Tensor:
        """Multi-hot ``[K, C]`` of a keyframe's action sets (ids outside ``class_ids`` are ignored)."""
        out = torch.zeros(len(keyframe.actions), len(self.class_ids))
        for k, actions in enumerate(keyframe.actions):
            for a in actions:
                if a in self.column:
                    out[k, self.column[a]] = 1.0
        return out

    def _make(self, record: VideoRecord, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        keyframe = self.by_key[record.video_id]
        idx = keyframe_indices(keyframe.timestamp, self.fps[keyframe.video_id], _num_frames_or_bad(self.source, record),
                               clip_frames=self.clip_frames, stride=self.stride)
        clip = normalize(to_float_cthw(self.source.read(record, idx)), self.mean, self.std)
        boxes = torch.from_numpy(keyframe.boxes.copy())
        if self.flip and rng.random() < 0.5:
            clip = hflip(clip)
            boxes = torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], dim=1)
        return clip, boxes

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
        served, (clip, boxes) = self._serve(int(index), self._make)
        key = self.records[served].video_id
        return clip, boxes, self.targets(self.by_key[key]), key


def collate_keyframes(batch: Sequence[tuple]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Stack clips and concatenate boxes: ``(clips [B, ...], rois [K, 5] = (b, x1, y1, x2, y2) normalised,
    targets [K, C], keys)`` (notebook ``08_action_detection``)."""
    clips = torch.stack([item[0] for item in batch])
    rois = torch.cat([torch.cat([torch.full((len(item[1]), 1), float(b)), item[1]], dim=1) for b, item in enumerate(batch)])
    return clips, rois, torch.cat([item[2] for item in batch]), [item[3] for item in batch]


class EpicAnticipationDataset(_BadVideoTracker, Dataset):
    """Epic-style anticipation samples (notebook ``09_action_anticipation``).

    For each segment the clip is ``clip_frames`` frames spread over the ``tau_o`` seconds that end
    ``tau_a`` seconds before the segment starts (:func:`vthcl_lib.anticipation.observation_indices`:
    clipped and padded with the first frame near the video's start). An item is
    ``(clip [3, T, h, w], verb_class, noun_class, uid)``. ``transform`` as in
    :class:`LabeledClipDataset`; bad videos as in the module docstring.
    """

    def __init__(self, segments: Sequence[EpicSegment], videos: dict[str, VideoRecord], fps: dict[str, float], *,
                 clip_frames: int, tau_o: float, tau_a: float, transform: Callable, source: FrameSource,
                 seed: int = 0, failure_budget: int = 20, logger: logging.Logger | None = None):
        if not segments:
            raise ValueError("segments is empty: an anticipation dataset needs at least one segment")
        unknown = sorted({s.video_id for s in segments} - set(videos))
        if unknown:
            raise ValueError(f"{len(unknown)} segments' videos have no record, e.g. '{unknown[0]}'")
        self.segments = list(segments)
        self.by_uid = {s.uid: s for s in self.segments}
        self.windows = {s.uid: observation_window(s.start_frame, fps[s.video_id], tau_o=tau_o, tau_a=tau_a)
                        for s in self.segments}
        self.records = [replace(videos[s.video_id], video_id=str(s.uid)) for s in self.segments]
        self.clip_frames, self.transform, self.source = int(clip_frames), transform, source
        self.seed, self.epoch = int(seed), 0
        self._init_tracking(failure_budget, logger)

    def __len__(self) -> int:
        return len(self.segments)

    def _make(self, record: VideoRecord, rng: np.random.Generator) -> tuple[torch.Tensor]:
        idx = observation_indices(self.windows[int(record.video_id)], self.clip_frames)
        idx = np.minimum(idx, _num_frames_or_bad(self.source, record) - 1)
        return (_transform_clip(self.transform, self.source.read(record, idx), rng),)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, int]:
        served, (clip,) = self._serve(int(index), self._make)
        segment = self.by_uid[int(self.records[served].video_id)]
        return clip, segment.verb_class, segment.noun_class, segment.uid


# --------------------------------------------------------------------------- builders from a config


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


def build_pretrain_dataset(cfg, *, split: str = "train", progress: bool = True) -> PretrainDataset:
    """Config -> Kinetics-style records -> frame source (cache if ``use_cache``) -> augmentation -> dataset.

    Raises :class:`DatasetLayoutError` when ``<data_root>/<pretrain_dataset>`` or its CSV is missing.
    With the cache, every video is decoded once here (``progress`` shows a bar) and files that fail
    are counted as bad from the start. Notebook ``05_hierarchical_pretraining``.
    """
    d = cfg.data
    root = Path(d.data_root) / d.pretrain_dataset
    _require_dir(root, f"the pre-training dataset folder '{d.pretrain_dataset}' under data_root='{d.data_root}' "
                       "(generate the synthetic data or prepare Kinetics-400 first)")
    records, _ = read_kinetics_csv(root, split)
    if not records:
        raise DatasetLayoutError(f"'{root / (split + '.csv')}' lists no videos")
    source = frame_source_from_config(d)
    records, failures = _prepare_records(records, source, d.failure_budget, progress=progress)
    dataset = PretrainDataset(
        records, window=d.window, tau=d.tau, alpha=d.alpha, transform=augmentation_from_config(d), source=source,
        seed=cfg.seed, short_video=d.short_video, failure_budget=d.failure_budget,
    )
    dataset.bad_videos.update(failures)
    return dataset


def build_labeled_dataset(
    cfg,
    dataset: str = "ucf101",
    split: int = 1,
    subset: str = "train",
    mode: str | None = None,
    *,
    num_frames: int | None = None,
    stride: int | None = None,
    progress: bool = True,
) -> LabeledClipDataset:
    """Config -> UCF-101/HMDB-51 records -> frame source -> transform -> :class:`LabeledClipDataset`.

    ``mode`` defaults to "train" for the train subset (augmentation from the config) and "test"
    otherwise (:class:`EvalTransform`, ``num_test_clips`` clips). Clips have ``num_frames`` frames
    at ``stride`` (defaults: the slow clip's ``window/tau`` frames at stride ``tau``, as fine-tuning
    feeds the slow encoder). Raises :class:`DatasetLayoutError` when ``<data_root>/<dataset>`` is
    missing. Notebook ``06_action_recognition``.
    """
    if dataset not in LABELED_DATASETS:
        raise ValueError(f"dataset={dataset!r} is not known; expected one of {LABELED_DATASETS}")
    mode = mode or ("train" if subset == "train" else "test")
    d = cfg.data
    root = Path(d.data_root) / dataset
    _require_dir(root, f"the '{dataset}' folder under data_root='{d.data_root}' "
                       "(generate the synthetic data or prepare the dataset first)")
    reader = read_ucf101_split if dataset == "ucf101" else read_hmdb51_split
    records, _ = reader(root, split, subset)
    if not records:
        raise DatasetLayoutError(f"split {split} of '{root}' lists no {subset} videos")
    source = frame_source_from_config(d)
    records, failures = _prepare_records(records, source, d.failure_budget, progress=progress)
    transform = augmentation_from_config(d) if mode == "train" else eval_transform_from_config(d)
    labeled = LabeledClipDataset(
        records, num_frames=num_frames or d.window // d.tau, stride=stride or d.tau, transform=transform,
        source=source, mode=mode, num_clips=d.num_test_clips, seed=cfg.seed, short_video=d.short_video,
        failure_budget=d.failure_budget,
    )
    labeled.bad_videos.update(failures)
    return labeled


ID_VIDEO_EXTENSIONS = (".mp4", ".MP4", ".mkv", ".webm", ".avi")  # the order a video id's containers are tried in


def find_video(folders: Sequence[Path], video_id: str, *, default_suffix: str = ".mp4",
               listings: dict[Path, set[str]] | None = None) -> Path:
    """The first ``<folder>/<video_id><ext>`` that exists (folders, then :data:`ID_VIDEO_EXTENSIONS`, in order).

    Names are matched exactly against each folder's listing (cached in ``listings`` when given), so a
    case-insensitive file system cannot make ``.mp4`` stand for ``.MP4``. When none exists, the first
    folder's ``<video_id><default_suffix>`` comes back (reported as a missing video later). AVA and
    Epic-Kitchens name videos by id; the loaders here and ``prepare`` resolve them alike.
    Notebooks ``08_action_detection`` and ``09_action_anticipation``.
    """
    listings = {} if listings is None else listings
    for folder in folders:
        if folder not in listings:
            listings[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
        for ext in ID_VIDEO_EXTENSIONS:
            name = f"{video_id}{ext}"
            if name in listings[folder] and (folder / name).is_file():
                return folder / name
    return folders[0] / f"{video_id}{default_suffix}"


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


def build_ava_datasets(cfg, *, progress: bool = True) -> dict:
    """Config -> AVA v2.2-layout root -> training and validation :class:`AvaDetectionDataset`.

    Notebook ``08_action_detection``. Reads ``<data_root>/<detection_dataset>/annotations/``
    (``ava_{train,val}_v2.2.csv``, the excluded timestamps, the action list ``action_list``, whose
    classes are the ones trained and scored: 60 in the standard protocol) and the
    videos ``videos/trainval/<video_id>.<ext>``. Training uses the ground-truth boxes; validation
    the person boxes of ``ava_detection_val_boxes_and_labels.csv`` scoring at least
    ``proposal_score_threshold`` (the ground-truth boxes when that file is absent; the returned
    ``"val_boxes"`` says which). Returns ``{"train", "val", "val_ground_truth", "label_map",
    "class_ids", "val_boxes", "bad_videos"}``. Clips: ``window // tau`` frames at stride ``tau``
    around each keyframe, decoded at ``detection_decode_size``.
    """
    d, det = cfg.data, cfg.detection
    root = Path(d.data_root) / det.detection_dataset
    _require_dir(root, f"the AVA-style folder '{det.detection_dataset}' under data_root='{d.data_root}' "
                       "(generate the synthetic data or run data_scripts/prepare_ava.py first)")
    ann = root / "annotations"
    label_map = read_ava_label_map(ann / det.action_list)
    subsets = {}
    for subset in ("train", "val"):
        excluded_path = ann / f"ava_{subset}_excluded_timestamps_v2.2.csv"
        excluded = read_ava_excluded_timestamps(excluded_path) if excluded_path.is_file() else set()
        subsets[subset] = group_ava_keyframes(read_ava_csv(ann / f"ava_{subset}_v2.2.csv"), excluded=excluded)
    boxes_path = ann / "ava_detection_val_boxes_and_labels.csv"
    val_boxes = "detected" if boxes_path.is_file() else "ground_truth"
    proposals = subsets["val"]
    if val_boxes == "detected":
        gt_keys = {(k.video_id, k.timestamp) for k in subsets["val"]}
        proposals = [k for k in group_ava_keyframes(read_ava_csv(boxes_path, kind="detections"),
                                                    min_score=det.proposal_score_threshold)
                     if (k.video_id, k.timestamp) in gt_keys]  # score only annotated, non-excluded keyframes
    folders = [root / "videos" / "trainval", root / "videos"]
    wanted = {k.video_id for keyframes in (*subsets.values(), proposals) for k in keyframes}
    listings: dict[Path, set[str]] = {}
    videos = {v: VideoRecord(find_video(folders, v, listings=listings), v) for v in sorted(wanted)}
    source = frame_source_from_config(replace(d, decode_size=det.detection_decode_size))
    videos, fps, failures = _good_videos(videos, source, d.failure_budget, d.backend, progress=progress)
    class_ids = sorted(label_map)
    common = dict(class_ids=class_ids, clip_frames=d.window // d.tau, stride=d.tau, source=source, mean=d.mean,
                  std=d.std, seed=cfg.seed, failure_budget=d.failure_budget)
    train = AvaDetectionDataset([k for k in subsets["train"] if k.video_id in videos], videos, fps, flip=True, **common)
    val = AvaDetectionDataset([k for k in proposals if k.video_id in videos], videos, fps, **common)
    for dataset in (train, val):
        dataset.bad_videos.update(failures)
    return {"train": train, "val": val, "val_ground_truth": [k for k in subsets["val"] if k.video_id in videos],
            "label_map": label_map, "class_ids": class_ids, "val_boxes": val_boxes, "bad_videos": failures}


def _class_count(path: Path, fallback: int) -> int:
    """Rows of an ``EPIC_{verb,noun}_classes.csv`` (header excluded) when present, else ``fallback``."""
    if not path.is_file():
        return fallback
    with open(path, newline="", encoding="utf-8") as handle:
        return max(sum(1 for row in csv.reader(handle) if any(row)) - 1, fallback)


def build_epic_datasets(cfg, *, progress: bool = True) -> dict:
    """Config -> Epic-Kitchens-55-layout root -> training and validation :class:`EpicAnticipationDataset`.

    Notebook ``09_action_anticipation``. Reads ``<data_root>/<anticipation_dataset>/annotations/
    EPIC_train_action_labels.csv``, the split lists ``splits/anticipation_{train,val}_videos.txt`` and
    the videos ``videos/train/<participant>/<video_id>.<ext>``. Training clips are augmented as in
    fine-tuning, validation clips centre-cropped. Returns ``{"train", "val", "num_verbs",
    "num_nouns", "bad_videos"}`` (class counts from ``EPIC_{verb,noun}_classes.csv`` when present).
    """
    d, an = cfg.data, cfg.anticipation
    root = Path(d.data_root) / an.anticipation_dataset
    _require_dir(root, f"the Epic-style folder '{an.anticipation_dataset}' under data_root='{d.data_root}' "
                       "(generate the synthetic data or run data_scripts/prepare_epic_kitchens.py first)")
    segments = read_epic_action_labels(root / "annotations" / "EPIC_train_action_labels.csv")
    lists = {s: set(read_video_list(root / "splits" / f"anticipation_{s}_videos.txt")) for s in ("train", "val")}
    both = lists["train"] & lists["val"]
    if both:
        raise DatasetLayoutError(f"videos {sorted(both)[:3]} are in both anticipation split lists under '{root / 'splits'}'")
    videos, listings = {}, {}
    for seg in segments:
        if seg.video_id in lists["train"] | lists["val"] and seg.video_id not in videos:
            folders = [root / "videos" / "train" / seg.participant_id, root / "videos" / "train", root / "videos"]
            videos[seg.video_id] = VideoRecord(find_video(folders, seg.video_id, default_suffix=".MP4", listings=listings),
                                               seg.video_id)
    size = an.anticipation_decode_size or d.decode_size
    source = frame_source_from_config(replace(d, decode_size=size))
    videos, fps, failures = _good_videos(videos, source, d.failure_budget, d.backend, progress=progress)
    common = dict(clip_frames=d.window // d.tau, tau_o=an.tau_o, tau_a=an.tau_a, source=source, seed=cfg.seed,
                  failure_budget=d.failure_budget)
    out = {"bad_videos": failures}
    for subset, transform in (("train", augmentation_from_config(d)), ("val", eval_transform_from_config(d))):
        chosen = [s for s in segments if s.video_id in lists[subset] and s.video_id in videos]
        if not chosen:
            raise DatasetLayoutError(f"no readable {subset} segments: the videos of "
                                     f"'{root / 'splits' / f'anticipation_{subset}_videos.txt'}' are missing or bad")
        out[subset] = EpicAnticipationDataset(chosen, videos, fps, transform=transform, **common)
        out[subset].bad_videos.update(failures)
    out["num_verbs"] = _class_count(root / "annotations" / "EPIC_verb_classes.csv", 1 + max(s.verb_class for s in segments))
    out["num_nouns"] = _class_count(root / "annotations" / "EPIC_noun_classes.csv", 1 + max(s.noun_class for s in segments))
    return out
