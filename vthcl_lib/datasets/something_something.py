"""Something-Something V1 roots: JPEG frame folders and the label CSVs as 20BN released them.

Layout under the data root (``data_scripts/prepare_something_something.py`` lays it out)::

    R/something_something_v1/20bn-something-something-v1/<video_id>/00001.jpg, 00002.jpg, ...
    R/something_something_v1/annotations/something-something-v1-labels.csv       one label a line
    R/something_something_v1/annotations/something-something-v1-train.csv        <video_id>;<label>
    R/something_something_v1/annotations/something-something-v1-validation.csv   <video_id>;<label>
    R/something_something_v1/annotations/something-something-v1-test.csv         <video_id>

A frame folder is a video to :mod:`vthcl_lib.video` (12 fps, the rate the frames were extracted at).
Class ids are the positions of the sorted label names (TSM's and TSN's convention). The paper
trains its Instance Correspondence Map model here (VTHCL_SPEC, Fig. 4); notebook
``10_instance_correspondence_map``.
"""
from __future__ import annotations

import os
from pathlib import Path

from vthcl_lib.datasets.records import DatasetLayoutError, VideoRecord, _require_dir, _require_file, _text_lines

STHV1_DIR = "something_something_v1"  # the folder under the data root
STHV1_FRAMES_DIR = "20bn-something-something-v1"
STHV1_ANNOTATIONS_DIR = "annotations"
STHV1_LABELS = "something-something-v1-labels.csv"
STHV1_SPLITS = ("train", "validation", "test")
STHV1_LAYOUT = (
    "R/something_something_v1/20bn-something-something-v1/<video_id>/00001.jpg ... and "
    "R/something_something_v1/annotations/something-something-v1-{labels,train,validation,test}.csv"
)


def sthv1_split_file(split: str) -> str:
    """The released file name of ``split`` ("train", "validation" or "test")."""
    if split not in STHV1_SPLITS:
        raise ValueError(f"split={split!r} is not a Something-Something V1 split; expected one of {STHV1_SPLITS}")
    return f"something-something-v1-{split}.csv"


def is_sthv1_root(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds Something-Something V1's label file (so it is read as that format)."""
    return (Path(root) / STHV1_ANNOTATIONS_DIR / STHV1_LABELS).is_file()


def read_sthv1_labels(root: str | os.PathLike) -> list[str]:
    """The sorted label names of ``something-something-v1-labels.csv`` (174 in the release).

    Notebook ``10_instance_correspondence_map``.
    """
    path = Path(root) / STHV1_ANNOTATIONS_DIR / STHV1_LABELS
    _require_file(path, f"the label list: {STHV1_LAYOUT}")
    names = [line for _, line in _text_lines(path)]
    if not names:
        raise DatasetLayoutError(f"'{path}' lists no labels; expected one label name a line")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DatasetLayoutError(f"'{path}' lists {repeated[0]!r} more than once")
    return sorted(names)


def read_sthv1_split(root: str | os.PathLike, split: str = "train") -> tuple[list[VideoRecord], list[str]]:
    """Records of a Something-Something V1 ``root`` (``R/something_something_v1``) for ``split``, in file order.

    Each record's path is the video's frame folder; its label is the class id (None for "test",
    which is released without labels). A line must be ``<video_id>;<label>`` (``<video_id>`` for
    the test split) with a numeric id and a label from the label list; otherwise
    :class:`DatasetLayoutError` names the file, the line and what was expected. Returns the sorted
    label names too. Notebook ``10_instance_correspondence_map``.
    """
    root = Path(root)
    _require_dir(root, f"a Something-Something V1 root: {STHV1_LAYOUT}")
    labels = read_sthv1_labels(root)
    label_ids = {name: k for k, name in enumerate(labels)}
    path = root / STHV1_ANNOTATIONS_DIR / sthv1_split_file(split)
    _require_file(path, f"the {split} list: {STHV1_LAYOUT}")
    frames = root / STHV1_FRAMES_DIR
    records, seen = [], set()
    for line_no, line in _text_lines(path):
        video_id, sep, label = line.partition(";")
        video_id, label = video_id.strip(), label.strip()
        expected = "'<video_id>'" if split == "test" else "'<video_id>;<label>'"
        if not video_id.isdigit() or (split != "test" and not sep):
            raise DatasetLayoutError(f"'{path}' line {line_no}: expected {expected} with a numeric id, got {line!r}")
        if split != "test" and label not in label_ids:
            raise DatasetLayoutError(f"'{path}' line {line_no}: label {label!r} is not in {STHV1_LABELS}")
        if video_id in seen:
            raise DatasetLayoutError(f"'{path}' line {line_no}: video {video_id} is listed twice")
        seen.add(video_id)
        records.append(VideoRecord(path=frames / video_id, video_id=video_id,
                                   label=label_ids[label] if split != "test" else None))
    return records, labels
