"""Epic-Kitchens-55-style roots: the action labels, the anticipation split lists, the dataset and its builder.

Notebook ``09_action_anticipation``.
"""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from vthcl_lib.datasets.frames import FrameSource, _good_videos, frame_source_from_config
from vthcl_lib.datasets.records import (
    DatasetLayoutError,
    VideoRecord,
    _require_dir,
    _require_file,
    _text_lines,
    find_video,
)
from vthcl_lib.datasets.torch_datasets import _BadVideoTracker, _num_frames_or_bad, _transform_clip
from vthcl_lib.tempo import observation_indices, observation_window
from vthcl_lib.transforms import augmentation_from_config, eval_transform_from_config


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
    videos, fps, failures = _good_videos(videos, source, d.failure_budget, d.backend, progress=progress, root=root)
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
