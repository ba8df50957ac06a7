"""AVA v2.2-style roots: the box CSVs, excluded timestamps, the action list, the dataset and its builder.

Notebook ``08_action_detection``.
"""
from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from vthcl_lib.datasets.frames import FrameSource, _good_videos, frame_source_from_config
from vthcl_lib.datasets.records import DatasetLayoutError, VideoRecord, _require_dir, _require_file, find_video
from vthcl_lib.datasets.torch_datasets import _BadVideoTracker, _num_frames_or_bad
from vthcl_lib.tempo import keyframe_indices
from vthcl_lib.transforms import hflip, normalize, to_float_cthw


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
    videos, fps, failures = _good_videos(videos, source, d.failure_budget, d.backend, progress=progress, root=root)
    class_ids = sorted(label_map)
    common = dict(class_ids=class_ids, clip_frames=d.window // d.tau, stride=d.tau, source=source, mean=d.mean,
                  std=d.std, seed=cfg.seed, failure_budget=d.failure_budget)
    train = AvaDetectionDataset([k for k in subsets["train"] if k.video_id in videos], videos, fps, flip=True, **common)
    val = AvaDetectionDataset([k for k in proposals if k.video_id in videos], videos, fps, **common)
    for dataset in (train, val):
        dataset.bad_videos.update(failures)
    return {"train": train, "val": val, "val_ground_truth": [k for k in subsets["val"] if k.video_id in videos],
            "label_map": label_map, "class_ids": class_ids, "val_boxes": val_boxes, "bad_videos": failures}
