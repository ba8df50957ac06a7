"""The torch datasets shared by the formats: bad-video tracking, the pre-training pair, labeled clips.

Notebooks ``01_tempo_sampling`` (the pre-training pair) and ``06_action_recognition`` (labeled clips).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from vthcl_lib.datasets.frames import FrameSource, _prepare_records, frame_source_from_config
from vthcl_lib.datasets.hmdb51 import read_hmdb51_split
from vthcl_lib.datasets.records import (
    LOGGER_NAME,
    BadVideoBudgetExceeded,
    DatasetLayoutError,
    VideoRecord,
    _check_split,
    _require_dir,
)
from vthcl_lib.datasets.something_something import read_sthv1_split
from vthcl_lib.datasets.ucf101 import read_ucf101_split
from vthcl_lib.tempo import SHORT_VIDEO_RULES, check_tempo, sample_tempo_indices, uniform_clip_starts, window_indices
from vthcl_lib.transforms import ClipAugmentation, augmentation_from_config, eval_transform_from_config
from vthcl_lib.video import VideoDecodeError


LABELED_DATASETS = ("ucf101", "hmdb51", "something_something_v1")
AUGMENT_PLACEMENTS = ("auto", "worker", "device")  # DataConfig.augment_on


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
    each epoch, or index with ``(epoch, index)`` pairs (:class:`EpochSampler`, which persistent
    DataLoader workers need: their copies of the dataset never see ``set_epoch``). The returned
    index is the memory-bank index of the video actually served: ``index`` itself, or the
    substitute's index when the video was bad (module docstring). ``bad_videos`` maps each bad file
    met (by this process) to the reason.

    ``augment_on="device"`` (the paper presets on GPUs, notebook ``05_hierarchical_pretraining``):
    an item is ``(fast, colors, index)`` instead, the fast clip as uint8 ``[alpha*window/tau, h, w, 3]``
    after crop, resize and flip, and the colour draws of the fast and the slow clip as float
    ``[2, 8]``; no slow clip crosses to the main process (it is ``fast[::alpha]``), and
    :meth:`finish_batch` turns a batch into the float pair on the training device with the same
    draws. ``augment_on="worker"`` (the default) does all of it per item, as floats.
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
        augment_on: str = "worker",
    ):
        check_tempo(window, tau, alpha)
        if short_video not in SHORT_VIDEO_RULES:
            raise ValueError(f"short_video={short_video!r} is not known; expected one of {SHORT_VIDEO_RULES}")
        if not records:
            raise ValueError("records is empty: a pre-training dataset needs at least one video")
        if augment_on not in AUGMENT_PLACEMENTS[1:]:
            raise ValueError(f"augment_on={augment_on!r} is not known; expected 'worker' or 'device'")
        if augment_on == "device" and not isinstance(transform, ClipAugmentation):
            raise ValueError(f"augment_on='device' needs a ClipAugmentation transform, got {type(transform).__name__}")
        self.records = list(records)
        self.window, self.tau, self.alpha = int(window), int(tau), int(alpha)
        self.transform, self.source, self.augment_on = transform, source, augment_on
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
        if self.augment_on == "device":
            return self.transform.tempo_pair_uint8(frames, self.alpha, rng)
        if isinstance(self.transform, ClipAugmentation):
            return self.transform.tempo_pair(frames, self.alpha, rng)
        fast = _transform_clip(self.transform, frames, rng)
        return fast[:, :: self.alpha], fast

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        if isinstance(index, tuple):  # (epoch, index) from an EpochSampler
            self.epoch, index = int(index[0]), index[1]
        served, (first, second) = self._serve(int(index), self._make)
        return first, second, served

    def finish_batch(self, batch: Sequence[torch.Tensor], device: torch.device | str
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A collated batch -> ``(slow, fast, index)`` on ``device``, ready for the encoders.

        With ``augment_on="device"`` the uint8 clips cross to the device and get their colour
        draws and normalisation there, all at once (:meth:`ClipAugmentation.color_batch`).
        Notebook ``05_hierarchical_pretraining``.
        """
        first, second, index = (t.to(device, non_blocking=True) for t in batch)
        if self.augment_on == "device":
            slow, fast = self.transform.color_batch(first, second, self.alpha)
            return slow, fast, index
        return first, second, index

    def item_bytes(self) -> int:
        """Bytes one item hands to the main process (its tensors), from the shapes (notebook ``05_hierarchical_pretraining``)."""
        t_fast = self.alpha * self.window // self.tau
        crop = self.transform.crop_size if isinstance(self.transform, ClipAugmentation) else None
        if crop is None:
            return sum(t.nbytes for t in self[0][:2]) + 8
        if self.augment_on == "device":
            return t_fast * crop * crop * 3 + 2 * 8 * 4 + 8  # uint8 fast clip, two colour draws, the index
        return (t_fast + t_fast // self.alpha) * 3 * crop * crop * 4 + 8  # float slow and fast clips


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` pairs: the order of ``order(epoch)``, with the epoch riding along.

    Persistent DataLoader workers keep their own copy of the dataset for the whole run, so
    :meth:`PretrainDataset.set_epoch` in the main process would not reach them; the epoch in each
    index does. Call :meth:`set_epoch` before each epoch. Notebook ``05_hierarchical_pretraining``.
    """

    def __init__(self, order: Callable[[int], Iterable[int]], length: int, epoch: int = 0):
        self.order, self.length, self.epoch = order, int(length), int(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, int(i)) for i in self.order(epoch))

    def __len__(self) -> int:
        return self.length


def shared_memory_bytes(dataset: PretrainDataset, batch_size: int, num_workers: int, prefetch_factor: int = 2) -> int:
    """Shared memory one rank's loader holds at most: bytes per item x batch x workers x prefetch.

    Containers ship a 64 MB ``/dev/shm`` by default; the engine prints this figure at start so a
    run that needs more says so before its first batch. Notebook ``05_hierarchical_pretraining``.
    """
    return dataset.item_bytes() * batch_size * max(num_workers, 1) * (prefetch_factor if num_workers else 1)


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
    if dataset == "something_something_v1":  # one official split: train, and validation to test on
        _check_split(split, subset)
        if split != 1:
            raise ValueError(f"split={split!r}: Something-Something V1 has one official split; use split=1")
        records, _ = read_sthv1_split(root, "train" if subset == "train" else "validation")
    else:
        reader = read_ucf101_split if dataset == "ucf101" else read_hmdb51_split
        records, _ = reader(root, split, subset)
    if not records:
        raise DatasetLayoutError(f"split {split} of '{root}' lists no {subset} videos")
    source = frame_source_from_config(d)
    records, failures = _prepare_records(records, source, d.failure_budget, progress=progress, root=root)
    transform = augmentation_from_config(d) if mode == "train" else eval_transform_from_config(d)
    labeled = LabeledClipDataset(
        records, num_frames=num_frames or d.window // d.tau, stride=stride or d.tau, transform=transform,
        source=source, mode=mode, num_clips=d.num_test_clips, seed=cfg.seed, short_video=d.short_video,
        failure_budget=d.failure_budget,
    )
    labeled.bad_videos.update(failures)
    return labeled
