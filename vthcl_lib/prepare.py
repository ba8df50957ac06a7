"""Prepare a downloaded real dataset: lay it out, index and verify every video, write a manifest.

Taught in notebook ``00_setup_and_data`` (real-data layouts); run through
``data_scripts/prepare_{ucf101,hmdb51,kinetics,ava,epic_kitchens}.py`` (DESIGN section 4, "Real datasets").
AVA v2.2 and Epic-Kitchens-55 are read in notebooks ``08_action_detection`` and ``09_action_anticipation``.

Given the user's extracted download (a video folder and its split files, CSVs or annotation files),
:func:`prepare_dataset`

1. copies the split files / CSVs into the project layout under ``out`` (they are small, and the
   manifest hashes exactly the bytes the loader reads);
2. lists every video the splits name, through the same parsers the loader uses
   (``vthcl_lib.datasets``), and finds each one in the download by file name, whatever its folders;
3. scans each one (:func:`vthcl_lib.scan.scan_videos`: frame count, fps, size, decodability);
4. places it at its project path: a symlink (default), a copy (``copy=True``), nothing when the
   download already is the project layout (verified in place), or, with ``short_side``, a re-encoded
   file whose short side is ``short_side`` pixels (H.264 ``.mp4`` for Kinetics and AVA, ``.MP4`` for
   Epic-Kitchens, MPEG-4 ``.avi`` for UCF-101 / HMDB-51, same file stem, same frames and fps) with a
   keyframe at least every ``gop`` frames (default 32, so a random 64-frame window decodes from
   close by, not from the clip's start), streamed a chunk at a time (memory does not grow with the
   video) in ``workers`` processes. Bad videos are placed as they are: the quarantine list names
   them and the loader's failure budget handles them;
5. writes ``out/manifest.json`` (counts, sha256 of every split file, the re-encode settings, one
   entry per video) and ``out/quarantine.tsv`` beside it.

AVA and Epic-Kitchens name their videos by id (``<video_id>.<ext>``, any container), so their videos
are found by file stem. AVA lists the distinct videos of ``ava_{train,val}_v2.2.csv`` and places them
in ``videos/trainval/``. Epic-Kitchens places ``videos/train/<participant>/<video_id>.MP4`` and also
writes the anticipation split lists ``splits/anticipation_{train,val}_videos.txt`` (see
:func:`write_anticipation_split`; hashed with the annotation files, and the manifest's
``"anticipation_split"`` says which rule chose them). Both manifests add an ``"annotations"``
summary (rows, keyframes, videos, classes) of files parsed and cross-checked on the way.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from vthcl_lib.progress import progress_bar

from vthcl_lib.datasets import ID_VIDEO_EXTENSIONS
from vthcl_lib.scan import PROBLEMS, VideoCheck, scan_videos
from vthcl_lib.video import (
    BACKENDS,
    QUANTISER_DEFAULT,
    X264_DEFAULT_CRF,
    X264_DEFAULT_PRESET,
    X264_PRESETS,
    VideoDecodeError,
    VideoWriter,
    check_backend,
    probe,
    resize_frames,
)

MANIFEST_NAME = "manifest.json"
QUARANTINE_NAME = "quarantine.tsv"
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi")


class PrepareError(ValueError):
    """The download cannot be prepared (missing or malformed split files, wrong folders).

    The message names the file or folder and what was expected. Notebook ``00_setup_and_data``.
    """


@dataclass(frozen=True)
class DatasetLayout:
    """Where one dataset's parts live under its project root, and how to list its videos."""

    name: str
    videos_dir: str  # folder of videos under the dataset root ("" for Kinetics: <root>/<split>/...)
    splits_dir: str  # folder of split files under the dataset root ("" for Kinetics CSVs)
    reencode_suffix: str  # container written by --short-side
    split_file_patterns: tuple[str, ...]  # globs copied from the user's split folder
    required_split_files: tuple[str, ...]  # names that must be there
    list_records: Callable[[Path], list]  # dataset root -> every listed VideoRecord
    splits_what: str = ""  # what the split folder holds, for error messages ("" -> "the <name> split files")
    find_by_id: bool = False  # videos are named <video_id>.<any container>: found by file stem
    describe: Callable[[Path], dict] | None = None  # dataset root -> checked annotation summary for the manifest
    write_splits: Callable[[Path, Path | None], tuple[list[Path], dict]] | None = None  # lists derived from annotations
    frame_folders: bool = False  # each video is a folder of JPEG frames named by its id (Something-Something V1)


def _list_ucf101(root: Path) -> list:
    from vthcl_lib.datasets import read_ucf101_split

    return [r for split in (1, 2, 3) for subset in ("train", "test") for r in read_ucf101_split(root, split, subset)[0]]


def _list_hmdb51(root: Path) -> list:
    from vthcl_lib.datasets import read_hmdb51_split

    return [r for split in (1, 2, 3) for subset in ("train", "test") for r in read_hmdb51_split(root, split, subset)[0]]


def _list_sthv1(root: Path) -> list:
    from vthcl_lib.datasets import STHV1_SPLITS, read_sthv1_split

    present = [s for s in STHV1_SPLITS if (root / "annotations" / f"something-something-v1-{s}.csv").is_file()]
    return [r for split in present for r in read_sthv1_split(root, split)[0]]


def _list_kinetics(root: Path) -> list:
    from vthcl_lib.datasets import read_kinetics_csv

    splits = [name for name in ("train", "val", "test") if (root / f"{name}.csv").is_file()]
    return [r for split in splits for r in read_kinetics_csv(root, split)[0]]


# --------------------------------------------------------------------------- AVA v2.2 and Epic-Kitchens-55

AVA_ANNOTATIONS = (
    "ava_train_v2.2.csv", "ava_val_v2.2.csv", "ava_action_list_v2.2.pbtxt",
    "ava_train_excluded_timestamps_v2.2.csv", "ava_val_excluded_timestamps_v2.2.csv",
)
# Copied when present: pySlowFast's person boxes (validation scores these) and the 60-class list of the
# ActivityNet challenge protocol, which the 80-class list above contains.
AVA_OPTIONAL_ANNOTATIONS = (
    "ava_detection_train_boxes_and_labels.csv", "ava_detection_val_boxes_and_labels.csv",
    "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
)
EPIC_LABELS = "EPIC_train_action_labels.csv"
EPIC_CLASS_FILES = ("EPIC_verb_classes.csv", "EPIC_noun_classes.csv")
ANTICIPATION_SPLITS = ("train", "val")


def anticipation_list_path(root: str | os.PathLike, subset: str) -> Path:
    """``<root>/splits/anticipation_<subset>_videos.txt`` (notebook ``09_action_anticipation``)."""
    if subset not in ANTICIPATION_SPLITS:
        raise ValueError(f"subset={subset!r}; expected one of {ANTICIPATION_SPLITS}")
    return Path(root) / "splits" / f"anticipation_{subset}_videos.txt"


def _list_ava(root: Path) -> list:
    from vthcl_lib.datasets import VideoRecord, find_video, read_ava_csv

    video_ids: dict[str, None] = {}  # distinct, in file order
    for subset in ("train", "val"):
        video_ids.update(dict.fromkeys(row.video_id for row in read_ava_csv(root / "annotations" / f"ava_{subset}_v2.2.csv")))
    folders = [root / "videos" / "trainval", root / "videos"]
    listings: dict[Path, set[str]] = {}
    return [VideoRecord(find_video(folders, vid, listings=listings), vid) for vid in video_ids]


def describe_ava(root: str | os.PathLike) -> dict:
    """Parse and cross-check an AVA v2.2 layout's annotations; return their counts for the manifest.

    Every action id of ``ava_{train,val}_v2.2.csv`` must be in ``ava_action_list_v2.2.pbtxt``;
    the excluded timestamps and the person-box files (when present) must parse. A problem is a
    :class:`~vthcl_lib.datasets.DatasetLayoutError` naming the file. Notebook ``08_action_detection``.
    """
    from vthcl_lib.datasets import (
        DatasetLayoutError,
        group_ava_keyframes,
        read_ava_csv,
        read_ava_excluded_timestamps,
        read_ava_label_map,
    )

    ann = Path(root) / "annotations"
    label_map_path = ann / "ava_action_list_v2.2.pbtxt"
    labels = read_ava_label_map(label_map_path)
    summary: dict = {"actions": len(labels)}
    for subset in ("train", "val"):
        csv_path = ann / f"ava_{subset}_v2.2.csv"
        rows = read_ava_csv(csv_path)
        unknown = sorted({row.action_id for row in rows} - set(labels))
        if unknown:
            raise DatasetLayoutError(f"'{csv_path}' uses action ids {unknown[:5]} that '{label_map_path}' does not "
                                     f"list; expected ids among its {len(labels)} actions")
        excluded = read_ava_excluded_timestamps(ann / f"ava_{subset}_excluded_timestamps_v2.2.csv")
        summary[subset] = {
            "videos": len({row.video_id for row in rows}),
            "rows": len(rows),
            "keyframes": len(group_ava_keyframes(rows, excluded=excluded)),
            "excluded_keyframes": len(excluded),
        }
        boxes_path = ann / f"ava_detection_{subset}_boxes_and_labels.csv"
        if boxes_path.is_file():
            summary[subset]["person_boxes"] = len(read_ava_csv(boxes_path, kind="detections"))
    return summary


def _epic_video_participants(root: Path) -> dict[str, str]:
    """Video id -> participant id, in the label file's order."""
    from vthcl_lib.datasets import read_epic_action_labels

    participants: dict[str, str] = {}
    for segment in read_epic_action_labels(root / "annotations" / EPIC_LABELS):
        participants.setdefault(segment.video_id, segment.participant_id)
    return participants


def _list_epic(root: Path) -> list:
    from vthcl_lib.datasets import VideoRecord, find_video, read_video_list

    in_split = {vid for subset in ANTICIPATION_SPLITS for vid in read_video_list(anticipation_list_path(root, subset))}
    videos = root / "videos"
    listings: dict[Path, set[str]] = {}
    return [
        # The real layout first, then flat: where the anticipation loader looks, in its order.
        VideoRecord(find_video([videos / "train" / participant, videos / "train", videos], vid, default_suffix=".MP4",
                               listings=listings), vid)
        for vid, participant in _epic_video_participants(root).items()
        if vid in in_split
    ]


def describe_epic(root: str | os.PathLike) -> dict:
    """Counts of an Epic-Kitchens-55 layout's action labels (segments, videos, participants, classes).

    Class counts come from ``EPIC_{verb,noun}_classes.csv`` when present (``null`` otherwise).
    Notebook ``09_action_anticipation``.
    """
    from vthcl_lib.datasets import read_epic_action_labels

    ann = Path(root) / "annotations"
    segments = read_epic_action_labels(ann / EPIC_LABELS)
    summary = {
        "segments": len(segments),
        "videos": len({s.video_id for s in segments}),
        "participants": len({s.participant_id for s in segments}),
        "verb_classes_used": len({s.verb_class for s in segments}),
        "noun_classes_used": len({s.noun_class for s in segments}),
    }
    for kind, name in zip(("verb_classes", "noun_classes"), EPIC_CLASS_FILES):
        summary[kind] = _csv_data_rows(ann / name) if (ann / name).is_file() else None
    return summary


def _csv_data_rows(path: Path) -> int:
    with open(path, newline="", encoding="utf-8") as handle:
        return max(sum(1 for row in csv.reader(handle) if any(field.strip() for field in row)) - 1, 0)


DEFAULT_SPLIT_RULE = "held out the last video (by id) of each participant with at least 2 videos"


def write_anticipation_split(root: str | os.PathLike, val_videos: str | os.PathLike | None = None) -> tuple[list[Path], dict]:
    """Write ``splits/anticipation_{train,val}_videos.txt`` (one video id a line, sorted) under ``root``.

    The videos are those of ``annotations/EPIC_train_action_labels.csv``. Validation is, in order:

    1. the ids in ``val_videos`` (a file, one id a line), e.g. the Epic baseline's 40 of its 272
       videos that the paper follows; every other labelled video trains;
    2. the lists already under ``root`` when both exist (a re-run, or a layout verified in place),
       checked against the labels;
    3. the default: :data:`DEFAULT_SPLIT_RULE`, the rest trains.

    Returns the two list paths and ``{"source", "train", "val"}`` (``source`` says which rule chose).
    Ids the labels do not name, or a subset left empty, are a :class:`PrepareError`.
    Notebook ``09_action_anticipation``.
    """
    from vthcl_lib.datasets import read_video_list

    root = Path(root)
    labels_path = root / "annotations" / EPIC_LABELS
    participants = _epic_video_participants(root)
    lists = {subset: anticipation_list_path(root, subset) for subset in ANTICIPATION_SPLITS}

    def unknown_ids(ids: list[str], where: str) -> None:
        unknown = [vid for vid in ids if vid not in participants]
        if unknown:
            raise PrepareError(f"{where} names {len(unknown)} videos that '{labels_path}' does not, e.g. {unknown[:3]}; "
                               f"expected video ids of its rows such as '{next(iter(participants))}'")

    if val_videos is not None:
        val = sorted(set(read_video_list(val_videos)))
        unknown_ids(val, f"--val-videos '{val_videos}'")
        split = {"val": val, "train": sorted(set(participants) - set(val))}
        source = f"--val-videos {Path(val_videos).absolute()}"
    elif all(path.is_file() for path in lists.values()):
        split = {subset: read_video_list(path) for subset, path in lists.items()}
        for subset, path in lists.items():
            unknown_ids(split[subset], f"the existing '{path}' (pass --val-videos or delete the lists to start over)")
        both = sorted(set(split["train"]) & set(split["val"]))
        if both:
            raise PrepareError(f"videos {both[:3]} are in both '{lists['train']}' and '{lists['val']}'; "
                               "expected disjoint lists (pass --val-videos to rewrite them)")
        source = "kept the existing lists"
    else:
        by_participant: dict[str, list[str]] = {}
        for vid, participant in participants.items():
            by_participant.setdefault(participant, []).append(vid)
        val = sorted(max(videos) for videos in by_participant.values() if len(videos) >= 2)
        split = {"val": val, "train": sorted(set(participants) - set(val))}
        source = f"default: {DEFAULT_SPLIT_RULE}"
    for subset in ANTICIPATION_SPLITS:
        if not split[subset]:
            raise PrepareError(f"the anticipation split leaves no {subset} videos ({source}) among the "
                               f"{len(participants)} videos of '{labels_path}'; pass --val-videos with a proper subset")
    if source != "kept the existing lists":
        lists["train"].parent.mkdir(parents=True, exist_ok=True)
        for subset, path in lists.items():
            path.write_text("".join(f"{vid}\n" for vid in split[subset]), encoding="utf-8")
    return list(lists.values()), {"source": source, "train": len(split["train"]), "val": len(split["val"])}


LAYOUTS = {
    "ucf101": DatasetLayout(
        "ucf101", "UCF-101", "ucfTrainTestlist", ".avi", ("*.txt",),
        ("classInd.txt",) + tuple(f"{kind}list0{k}.txt" for kind in ("train", "test") for k in (1, 2, 3)),
        _list_ucf101,
    ),
    "hmdb51": DatasetLayout(
        "hmdb51", "videos", "testTrainMulti_7030_splits", ".avi", ("*_test_split[123].txt",), (), _list_hmdb51
    ),
    "kinetics400": DatasetLayout("kinetics400", "", "", ".mp4", ("train.csv", "val.csv", "test.csv"), ("train.csv",), _list_kinetics),
    "ava": DatasetLayout(
        "ava", "videos/trainval", "annotations", ".mp4", AVA_ANNOTATIONS + AVA_OPTIONAL_ANNOTATIONS, AVA_ANNOTATIONS,
        _list_ava, splits_what="AVA v2.2's annotation files, as in ava_v2.2.zip", find_by_id=True, describe=describe_ava,
    ),
    "epic_kitchens": DatasetLayout(
        "epic_kitchens", "videos/train", "annotations", ".MP4", (EPIC_LABELS,) + EPIC_CLASS_FILES, (EPIC_LABELS,),
        _list_epic, splits_what="Epic-Kitchens-55's action labels, as in the epic-kitchens-55-annotations repository",
        find_by_id=True, describe=describe_epic, write_splits=write_anticipation_split,
    ),
    "something_something_v1": DatasetLayout(
        "something_something_v1", "20bn-something-something-v1", "annotations", "",
        ("something-something-v1-*.csv",),
        tuple(f"something-something-v1-{name}.csv" for name in ("labels", "train", "validation")),
        _list_sthv1, splits_what="Something-Something V1's label files (something-something-v1-labels.csv, "
        "-train.csv, -validation.csv, -test.csv)", find_by_id=True, frame_folders=True,
    ),
}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (notebook ``00_setup_and_data``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(h, w) with the short side ``short_side`` and the aspect ratio kept, both even (H.264 needs it).

    Notebook ``00_setup_and_data``.
    """
    if int(short_side) != short_side or short_side < 2:
        raise ValueError(f"short_side={short_side!r} must be a whole number >= 2")

    def even(x: float) -> int:
        return max(2, int(round(x / 2)) * 2)

    if height <= width:
        return even(short_side), even(width * short_side / height)
    return even(height * short_side / width), even(short_side)


DEFAULT_GOP = 32  # frames between keyframes in a re-encode: a 64-frame window decodes at most 31 frames early
DEFAULT_CHUNK_FRAMES = 32
_TAG = "vthcl-prepare"  # the container comment a re-encode carries: its settings, so a re-run knows them


@dataclass(frozen=True)
class ReencodeResult:
    """What :func:`reencode_video` did (notebook ``00_setup_and_data``).

    ``peak_frames_held``: the most decoded frames held at once, at most ``chunk_frames`` whatever the
    video's length (the encoder's own look-ahead, a fixed few dozen frames, comes on top).
    """

    path: Path
    frames: int
    chunks: int
    peak_frames_held: int
    settings: dict


def reencode_settings(path: str | os.PathLike, *, short_side: int, gop: int = DEFAULT_GOP,
                      quality: int | None = None, preset: str | None = None) -> dict:
    """The settings a re-encode to ``path`` records: ``short_side`` and the encoder's (codec, crf or
    quantiser, preset, gop), defaults spelled out. Invalid values raise ``ValueError`` naming them.
    Notebook ``00_setup_and_data``.
    """
    short_side_size(2, 2, short_side)
    return {"short_side": int(short_side), **VideoWriter(path, gop=gop, quality=quality, preset=preset).settings}


def _settings_tag(settings: dict) -> str:
    return _TAG + " " + " ".join(f"{key}={value}" for key, value in settings.items())


def read_reencode_tag(path: str | os.PathLike) -> str | None:
    """The settings comment a re-encode wrote into ``path``, or None (not ours, or unreadable).

    Notebook ``00_setup_and_data``.
    """
    import av

    try:
        with av.open(str(path)) as container:
            comment = container.metadata.get("comment")
    except Exception:  # noqa: BLE001 - anything unreadable simply has no tag
        return None
    return comment if comment and comment.startswith(_TAG) else None


def reencode_video(
    source: str | os.PathLike,
    target: str | os.PathLike,
    *,
    short_side: int,
    gop: int = DEFAULT_GOP,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    quality: int | None = None,
    preset: str | None = None,
) -> ReencodeResult:
    """Re-encode ``source`` to ``target`` (codec from its extension) with short side ``short_side``.

    Streams: PyAV decodes frame by frame, every ``chunk_frames`` frames are resized together
    (:func:`~vthcl_lib.video.resize_frames`, the loader's own resize) and handed to the encoder, so
    memory is bounded by one chunk whatever the video's length. A keyframe at least every ``gop``
    frames keeps a random window's decode short. Every frame and the fps are kept; the settings go
    into the file's comment tag (:func:`read_reencode_tag`). The file appears only when complete;
    a failure raises :class:`~vthcl_lib.video.VideoDecodeError` naming ``source``. Notebook ``00_setup_and_data``.
    """
    import av

    if int(chunk_frames) != chunk_frames or chunk_frames < 1:
        raise ValueError(f"chunk_frames={chunk_frames!r} must be a whole number >= 1")
    source, target = Path(source), Path(target)
    settings = reencode_settings(target, short_side=short_side, gop=gop, quality=quality, preset=preset)
    frames = chunks = peak = 0
    try:
        with av.open(str(source)) as container:
            if not container.streams.video:
                raise VideoDecodeError(source, "no video stream in the file")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            # The exact rate (30000/1001, not 29), so frame times stay where they were.
            fps = Fraction(rate).limit_denominator(1001) if rate and rate > 0 else Fraction(25)
            writer = VideoWriter(target, fps=fps, gop=gop, quality=quality, preset=preset,
                                 comment=_settings_tag(settings))
            with writer:
                buffer: list[np.ndarray] = []
                size = None
                for frame in container.decode(stream):
                    if size is None:
                        size = short_side_size(frame.height, frame.width, short_side)
                    buffer.append(frame.to_ndarray(format="rgb24"))
                    peak = max(peak, len(buffer))
                    if len(buffer) == chunk_frames:
                        writer.write(_resized(buffer, size, source))
                        frames, chunks = frames + len(buffer), chunks + 1
                        buffer.clear()
                if buffer:
                    writer.write(_resized(buffer, size, source))
                    frames, chunks = frames + len(buffer), chunks + 1
                if frames == 0:
                    raise VideoDecodeError(source, "the file holds no frames")
    except VideoDecodeError:
        raise
    except av.FFmpegError as err:
        raise VideoDecodeError(source, f"pyav: {type(err).__name__}: {str(err).strip()[:300]}") from err
    return ReencodeResult(target, frames, chunks, peak, settings)


def _resized(buffer: list[np.ndarray], size: tuple[int, int], source: Path) -> torch.Tensor:
    if any(image.shape != buffer[0].shape for image in buffer):
        raise VideoDecodeError(source, f"frame size changes inside the video ({buffer[0].shape[:2]} and others)")
    return resize_frames(torch.from_numpy(np.stack(buffer)), size)


def _same_path(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def _copy_split_files(layout: DatasetLayout, splits: Path, target_dir: Path) -> list[Path]:
    what = layout.splits_what or f"the {layout.name} split files"
    folder = "annotation folder" if layout.splits_dir == "annotations" else "split folder"
    if not splits.is_dir():
        raise PrepareError(f"{folder} '{splits}' does not exist; expected {what}")
    found = sorted({p for pattern in layout.split_file_patterns for p in splits.glob(pattern) if p.is_file()})
    names = {p.name for p in found}
    missing = [name for name in layout.required_split_files if name not in names]
    if missing or not found:
        wanted = ", ".join(missing or layout.split_file_patterns)
        raise PrepareError(f"{folder} '{splits}' lacks {wanted} ({what})")
    if _same_path(splits, target_dir):
        return found
    target_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in found:
        shutil.copyfile(path, target_dir / path.name)
        copied.append(target_dir / path.name)
    return copied


def _index_sources(videos: Path, *, skip: Path | None, progress: bool, frame_folders: bool = False) -> dict[str, list[Path]]:
    """File name -> paths, and for Kinetics-style names also stem and youtube id -> paths.

    ``skip``: a folder inside ``videos`` not to index (an ``out`` placed inside the download).
    ``frame_folders``: the videos are the folders directly under ``videos`` (Something-Something V1's
    ``<id>/00001.jpg ...``), indexed by name.
    """
    index: dict[str, list[Path]] = {}
    if frame_folders:
        for path in videos.iterdir():
            if path.is_dir() and not path.name.startswith(".") and (skip is None or path != skip):
                index.setdefault(path.name, []).append(path)
        return index
    files = (
        p for p in videos.rglob("*")
        if p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".") and (skip is None or skip not in p.parents)
    )
    for path in progress_bar(files, desc="index download", unit="file", disable=not progress):
        stem = path.stem
        keys = {path.name, path.name.lower(), stem}
        parts = stem.rsplit("_", 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            keys.add(parts[0])  # <youtube_id>_<start>_<end> -> <youtube_id>
        for key in keys:
            index.setdefault(key, []).append(path)
    return index


def _find_source(record_path: Path, index: dict[str, list[Path]], kinetics: bool, by_id: bool = False) -> Path | None:
    if by_id:
        # Exactly the id: the index also files '<id>_<start>_<end>' under '<id>' for Kinetics.
        candidates = [p for p in index.get(record_path.stem, []) if p.stem == record_path.stem]
    elif kinetics:
        stem = record_path.stem
        candidates = index.get(stem) or index.get(stem.rsplit("_", 2)[0]) or []
    else:
        # Case-insensitive fallback: the real UCF-101 lists spell some names unlike their files.
        candidates = index.get(record_path.name) or index.get(record_path.name.lower()) or []
    if not candidates:
        return None
    # Several files with one name: prefer the one in the same class/label folder, then a stable order.
    same_folder = [p for p in candidates if p.parent.name == record_path.parent.name]
    return sorted(same_folder or candidates)[0]


def _placed_suffix(source: Path, layout: DatasetLayout) -> str:
    # Id-resolving loaders try exact extensions (ID_VIDEO_EXTENSIONS): '<id>.MKV' is placed as '<id>.mkv'.
    if layout.find_by_id and source.suffix not in ID_VIDEO_EXTENSIONS:
        return source.suffix.lower()
    return source.suffix


def _place(source: Path, target: Path, copy: bool) -> None:
    if _same_path(source, target):
        return
    if target.is_symlink() or target.exists():
        if target.is_dir() and not target.is_symlink():
            raise PrepareError(f"'{target}' is a folder; expected to put a video file there")
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if copy and source.is_dir():  # a frame folder
        shutil.copytree(source, target)
    elif copy:
        shutil.copy2(source, target)
    else:
        target.symlink_to(source.resolve())


def _clear_shadowing_siblings(target: Path) -> None:
    """Remove links ``<id><ext>`` beside ``target`` that an id-resolving loader would read before it.

    A link (from an earlier run with another container or without ``--short-side``) loses no data;
    a real file there is the user's, so it is an error naming it.
    """
    if target.suffix not in ID_VIDEO_EXTENSIONS or not target.parent.is_dir():
        return
    # Exact names from the listing: on a case-insensitive file system '<id>.mp4' must not mean '<id>.MP4'.
    names = set(os.listdir(target.parent))
    for ext in ID_VIDEO_EXTENSIONS[: ID_VIDEO_EXTENSIONS.index(target.suffix)]:
        sibling = target.with_suffix(ext)
        if sibling.name not in names:
            continue
        if sibling.is_symlink():
            sibling.unlink()
        else:
            raise PrepareError(f"'{sibling}' would be read instead of '{target}' (the loader tries "
                               f"{', '.join(ID_VIDEO_EXTENSIONS)} in turn); remove it or choose another --out")


def _reencoded_is_current(target: Path, check: VideoCheck, settings: dict, backend: str) -> bool:
    # Lets an interrupted run resume: a finished re-encode (written atomically) with the same settings is kept.
    if target.is_symlink() or not target.is_file() or check.info is None:
        return False
    if read_reencode_tag(target) != _settings_tag(settings):
        return False  # another gop, crf, preset or short side (or not ours): redone
    try:
        info = probe(target, backend=backend)
    except Exception:  # noqa: BLE001 - anything unreadable is simply redone
        return False
    wanted = short_side_size(check.info.height, check.info.width, settings["short_side"])
    return (info.height, info.width) == wanted and info.num_frames == check.num_frames


def _reencode_job(job: tuple) -> str | None:
    """One re-encode in a pool process; returns None, or why it failed (exceptions need not pickle)."""
    source, target, settings, chunk_frames = job
    try:
        reencode_video(source, target, short_side=settings["short_side"], gop=settings["gop"],
                       quality=settings.get("crf", settings.get("quantiser")), preset=settings["preset"],
                       chunk_frames=chunk_frames)
    except Exception as err:  # noqa: BLE001 - reported by the parent, naming the file
        return str(err) if isinstance(err, VideoDecodeError) else f"{type(err).__name__}: {err}"
    return None


def _pool_process_init() -> None:
    torch.set_num_threads(1)  # one process per core: the resize must not start a thread per core in each


def run_reencodes(
    jobs: Sequence[tuple[Path, Path]],
    settings: dict,
    *,
    workers: int = 0,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    progress: bool = True,
) -> None:
    """Re-encode each ``(source, target)`` with ``settings`` (:func:`reencode_settings`), in ``workers``
    processes (0: in this one). The first failure stops the run with a :class:`PrepareError` naming
    the file; finished re-encodes stay (a re-run keeps them). Notebook ``00_setup_and_data``.
    """
    failed: tuple[tuple[Path, Path], str] | None = None
    bar = dict(total=len(jobs), desc="re-encode", unit="video", disable=not progress)
    packed = [(str(src), str(dst), settings, chunk_frames) for src, dst in jobs]
    if workers == 0 or len(jobs) < 2:
        for job, packed_job in zip(progress_bar(jobs, **bar), packed):
            error = _reencode_job(packed_job)
            if error is not None:
                failed = (job, error)
                break
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        # spawn, not fork: the parent may hold torch threads, which forked children inherit badly.
        with ProcessPoolExecutor(int(workers), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_pool_process_init) as pool:
            futures = {pool.submit(_reencode_job, packed_job): job for job, packed_job in zip(jobs, packed)}
            for future in progress_bar(as_completed(futures), **bar):
                try:
                    error = future.result()
                except BrokenProcessPool as err:  # a worker died (out of memory, a signal)
                    error = f"a re-encode process died ({err})"
                if error is not None:
                    failed = (futures[future], error)
                    for other in futures:
                        other.cancel()  # the running ones finish; nothing new starts
                    break
    if failed is not None:
        (source, target), error = failed
        raise PrepareError(f"re-encoding '{source}' into '{target}' failed: {error}; the re-encodes already "
                           "finished are kept, so a re-run resumes")


def _entry(out: Path, path: Path, check: VideoCheck, info) -> dict:
    frames = check.num_frames if info is None or info is check.info else info.num_frames
    return {
        "path": Path(os.path.relpath(path, out)).as_posix(),
        "frames": frames,
        "fps": round(float(info.fps), 6) if info is not None else None,
        "height": info.height if info is not None else None,
        "width": info.width if info is not None else None,
        "problem": check.problem,
        "detail": check.detail or None,
    }


def prepare_dataset(
    dataset: str,
    *,
    out: str | os.PathLike,
    videos: str | os.PathLike | None = None,
    splits: str | os.PathLike | None = None,
    copy: bool = False,
    short_side: int | None = None,
    min_frames: int = 1,
    backend: str = "decord",
    workers: int = 0,
    quality: int | None = None,
    progress: bool = True,
    val_videos: str | os.PathLike | None = None,
    gop: int | None = None,
    preset: str | None = None,
) -> dict:
    """Lay out, verify and index one dataset under ``out``; write and return its manifest.

    ``dataset``: ``"ucf101"``, ``"hmdb51"``, ``"kinetics400"``, ``"ava"``, ``"epic_kitchens"`` or
    ``"something_something_v1"`` (JPEG frame folders: linked or copied, never re-encoded).
    ``videos`` and ``splits`` (for Kinetics: the folder with ``train.csv``/``val.csv``; for AVA and
    Epic-Kitchens: the annotation folder) default to ``out``'s own layout, which verifies a copy
    already in place. ``val_videos`` (Epic-Kitchens only): the anticipation validation videos, see
    :func:`write_anticipation_split`. ``short_side`` re-encodes (:func:`reencode_video`) with a
    keyframe every ``gop`` frames (default :data:`DEFAULT_GOP`), CRF or quantiser ``quality`` and x264
    ``preset``, in ``workers`` processes (which also scan); the manifest's ``"reencode"`` records them.
    Missing or malformed split files raise :class:`PrepareError`. Notebook ``00_setup_and_data``.
    """
    from vthcl_lib.datasets import DatasetLayoutError

    if dataset not in LAYOUTS:
        raise ValueError(f"dataset={dataset!r} is not known; expected one of {sorted(LAYOUTS)}")
    if val_videos is not None and LAYOUTS[dataset].write_splits is None:
        raise ValueError(f"val_videos={str(val_videos)!r} applies to epic_kitchens only, not {dataset}")
    check_backend(backend)
    if int(workers) != workers or workers < 0:
        raise ValueError(f"workers={workers!r} must be a whole number >= 0")
    layout = LAYOUTS[dataset]
    if short_side is not None and layout.frame_folders:
        raise PrepareError(f"--short-side re-encodes video files; {dataset} ships JPEG frame folders "
                           "(Something-Something V1's frames are 100 pixels high already): leave it out")
    settings = None
    if short_side is not None:  # validates every setting before any work
        settings = reencode_settings(Path("video" + layout.reencode_suffix), short_side=short_side,
                                     gop=DEFAULT_GOP if gop is None else gop, quality=quality, preset=preset)
    else:
        given = {"gop": gop, "quality": quality, "preset": preset}
        given = {name: value for name, value in given.items() if value is not None}
        if given:
            raise ValueError(f"{', '.join(f'{k}={v!r}' for k, v in given.items())} only apply when re-encoding; "
                             "expected short_side (--short-side) too")
    out = Path(out).absolute()
    video_root = out / layout.videos_dir if layout.videos_dir else out
    videos = Path(videos).absolute() if videos is not None else video_root
    splits = Path(splits).absolute() if splits is not None else out / layout.splits_dir
    if not videos.is_dir():
        raise PrepareError(f"video folder '{videos}' does not exist; expected the extracted {dataset} videos")
    in_place = _same_path(videos, video_root)
    if in_place and short_side is not None:
        raise PrepareError(
            f"--short-side re-encodes into a new layout; '{videos}' already is the layout under '{out}': choose another --out"
        )

    split_files = _copy_split_files(layout, splits, out / layout.splits_dir)
    video_root.mkdir(parents=True, exist_ok=True)
    extra: dict = {}
    try:
        if layout.write_splits is not None:
            written, extra["anticipation_split"] = layout.write_splits(out, Path(val_videos) if val_videos else None)
            split_files += written
        if layout.describe is not None:
            extra["annotations"] = layout.describe(out)
        records = layout.list_records(out)
    except DatasetLayoutError as err:
        raise PrepareError(f"cannot read the {dataset} split files: {err}") from err
    listed = list({Path(r.path): None for r in records})  # unique, in listing order
    if not listed:
        raise PrepareError(f"the {dataset} split files in '{splits}' list no videos")

    if in_place:  # verify what the loader itself would read, nothing else
        sources = [path if path.exists() else None for path in listed]
        targets = list(listed)
    else:
        index = _index_sources(videos, skip=out, progress=progress, frame_folders=layout.frame_folders)
        sources = [_find_source(path, index, kinetics=dataset == "kinetics400", by_id=layout.find_by_id) for path in listed]
        # The project path keeps the download's container (Kinetics comes as .mp4, .webm or .mkv).
        targets = [path.with_suffix(_placed_suffix(src, layout)) if src is not None else path
                   for path, src in zip(listed, sources)]
    report = scan_videos(
        [src if src is not None else path for path, src in zip(listed, sources)],
        min_frames=min_frames, backend=backend, progress=progress, workers=workers,
    )

    final_paths, reencoded, pending = [], [], []
    jobs = list(zip(targets, sources, report.checks))
    for target, source, check in progress_bar(jobs, desc="lay out", unit="video", disable=not progress):
        if source is not None and settings is not None and check.problem is None:
            target = target.with_suffix(layout.reencode_suffix)
            if layout.find_by_id:
                _clear_shadowing_siblings(target)
            if not _reencoded_is_current(target, check, settings, backend):
                if target.is_symlink():
                    target.unlink()  # never write through a link into the download
                pending.append((source, target))
            reencoded.append(True)
        else:
            if source is not None and not in_place:
                if layout.find_by_id:
                    _clear_shadowing_siblings(target)
                _place(source, target, copy)
            reencoded.append(False)
        final_paths.append(target)
    if pending:
        run_reencodes(pending, settings, workers=workers, progress=progress)
    entries = [_entry(out, target, check, probe(target, backend=backend) if again else check.info)
               for target, check, again in zip(final_paths, report.checks, reencoded)]

    _check_layout_readable(layout, out, final_paths, sources)
    final_report = report.with_paths(final_paths)
    counts = {"listed": len(listed), "present": sum(src is not None for src in sources)}
    counts.update(final_report.counts)
    counts["ok"] = final_report.ok
    manifest = {
        "dataset": dataset,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sources": {"videos": str(videos), "splits": str(splits)},
        "layout": "in place" if in_place else ("copy" if copy else "symlink"),
        "short_side": short_side,
        "reencode": settings,  # short side, codec, crf or quantiser, preset, gop; null without --short-side
        "min_frames": min_frames,
        "backend": backend,
        "counts": counts,
        "split_files": {Path(os.path.relpath(p, out)).as_posix(): sha256_file(p) for p in split_files},
        **extra,
        "quarantine": QUARANTINE_NAME,
        "videos": entries,
    }
    final_report.write_quarantine(out / QUARANTINE_NAME, relative_to=out)
    tmp = out / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST_NAME)  # atomic: a run records a complete manifest or none
    return manifest


def _check_layout_readable(layout: DatasetLayout, out: Path, final_paths: list[Path], sources: list) -> None:
    # The loader must find every placed video where it was put; a mismatch is a bug, not bad data.
    resolved = {Path(r.path) for r in layout.list_records(out)}
    lost = [p for p, src in zip(final_paths, sources) if src is not None and p not in resolved]
    if lost:
        raise RuntimeError(f"{len(lost)} placed videos are not where the {layout.name} parser looks, e.g. '{lost[0]}'")


def summarize_manifest(manifest: dict, out: str | os.PathLike) -> str:
    """A readable summary of a manifest: counts, split-file count, where files went (notebook ``00_setup_and_data``)."""
    counts = manifest["counts"]
    lines = [
        f"{manifest['dataset']}: {counts['listed']} listed, {counts['present']} present, {counts['ok']} ok "
        f"({manifest['layout']}{_reencode_summary(manifest.get('reencode'))})"
    ]
    lines += [f"  {problem:<12} {counts[problem]}" for problem in PROBLEMS if counts[problem]]
    lines.append(f"  {len(manifest['split_files'])} split files hashed")
    if "anticipation_split" in manifest:
        split = manifest["anticipation_split"]
        lines.append(f"  anticipation split: {split['train']} train, {split['val']} val videos ({split['source']})")
        if split["source"].startswith("default"):
            lines.append("  (pass --val-videos FILE for the Epic baseline's 232 train / 40 val videos the paper follows)")
    lines.append(f"  manifest:   {Path(out) / MANIFEST_NAME}")
    lines.append(f"  quarantine: {Path(out) / QUARANTINE_NAME}")
    return "\n".join(lines)


def _reencode_summary(settings: dict | None) -> str:
    if not settings:
        return ""
    rate = f"crf {settings['crf']}" if "crf" in settings else f"quantiser {settings.get('quantiser')}"
    preset = f" {settings['preset']}" if settings.get("preset") else ""
    return f", short side {settings['short_side']}, {settings['codec']}{preset} {rate}, gop {settings['gop']}"


def build_parser(dataset: str) -> argparse.ArgumentParser:
    """Argument parser of ``data_scripts/prepare_<dataset>.py`` (notebook ``00_setup_and_data``)."""
    script = {"kinetics400": "prepare_kinetics.py", "something_something_v1": "prepare_something_something.py"}.get(
        dataset, f"prepare_{dataset}.py")  # prepare_ava.py, ...
    parser = argparse.ArgumentParser(
        prog=script,
        description=f"Lay out, verify and index a downloaded {dataset} copy; writes <out>/{MANIFEST_NAME} "
        f"and <out>/{QUARANTINE_NAME} (exit 0: done, 1: --strict and bad videos, 2: missing or malformed input).",
    )
    layout = LAYOUTS[dataset]
    if dataset == "kinetics400":
        parser.add_argument("--csv-dir", dest="splits", type=Path, help="folder with train.csv and val.csv (default: --out)")
    elif dataset == "ava":
        parser.add_argument("--annotations", dest="splits", type=Path, metavar="DIR",
                            help=f"folder with {', '.join(AVA_ANNOTATIONS)} (and, copied when present, "
                            f"{', '.join(AVA_OPTIONAL_ANNOTATIONS)}) (default: <out>/annotations)")
    elif dataset == "epic_kitchens":
        parser.add_argument("--annotations", dest="splits", type=Path, metavar="DIR",
                            help=f"folder with {EPIC_LABELS} (and, copied when present, {', '.join(EPIC_CLASS_FILES)}), "
                            "e.g. a clone of epic-kitchens-55-annotations (default: <out>/annotations)")
        parser.add_argument("--val-videos", type=Path, metavar="FILE",
                            help="file of anticipation validation video ids, one a line (the Epic baseline's 40); the "
                            f"other labelled videos train. Default: keep <out>/splits' lists, else {DEFAULT_SPLIT_RULE}")
    elif dataset == "something_something_v1":
        parser.add_argument("--annotations", dest="splits", type=Path, metavar="DIR",
                            help="folder with something-something-v1-{labels,train,validation,test}.csv as released "
                            "(default: <out>/annotations)")
    else:
        parser.add_argument("--splits", type=Path, help=f"the extracted {layout.splits_dir} folder (default: inside --out)")
    video_help = {
        "ava": "the folder of <video_id>.<mkv|mp4|webm> files, e.g. the download's videos/trainval",
        "epic_kitchens": "the folder of <participant>/<video_id>.MP4 (or flat <video_id>.MP4), e.g. the download's videos/train",
        "something_something_v1": "the extracted 20bn-something-something-v1 folder of <video_id>/00001.jpg ... folders",
    }.get(dataset, "the extracted video folder")
    parser.add_argument("--videos", type=Path, help=f"{video_help} (default: inside --out: verify in place)")
    parser.add_argument("--out", type=Path, required=True, help=f"the project's dataset folder, e.g. data/{dataset}")
    parser.add_argument("--copy", action="store_true", help="copy the videos instead of symlinking them")
    parser.add_argument("--short-side", type=int, help=f"re-encode to this short side ({layout.reencode_suffix})")
    parser.add_argument("--gop", type=int, help=f"with --short-side: a keyframe at least every GOP frames "
                        f"(default {DEFAULT_GOP}; a random window then decodes at most GOP-1 frames before it)")
    parser.add_argument("--quality", type=int, help="encoder quality for --short-side: x264 CRF (default "
                        f"{X264_DEFAULT_CRF}), MPEG-4 quantiser (default {QUANTISER_DEFAULT})")
    parser.add_argument("--preset", choices=X264_PRESETS, help=f"x264 preset for --short-side into .mp4 "
                        f"(default {X264_DEFAULT_PRESET})")
    parser.add_argument("--min-frames", type=int, default=1, help="videos with fewer frames are too_short")
    parser.add_argument("--backend", choices=BACKENDS, default="decord")
    parser.add_argument("--workers", type=int, default=0,
                        help="processes for the scan and the re-encodes (0: in this process)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any video is missing or bad")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(dataset: str, argv: Sequence[str] | None = None) -> int:
    """Command line of the prepare scripts; returns the exit code (notebook ``00_setup_and_data``)."""
    args = build_parser(dataset).parse_args(argv)
    try:
        manifest = prepare_dataset(
            dataset, out=args.out, videos=args.videos, splits=args.splits, copy=args.copy,
            short_side=args.short_side, min_frames=args.min_frames, backend=args.backend,
            workers=args.workers, quality=args.quality, progress=not args.no_progress,
            val_videos=getattr(args, "val_videos", None), gop=args.gop, preset=args.preset,
        )
    except (PrepareError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summarize_manifest(manifest, args.out))
    bad = manifest["counts"]["listed"] - manifest["counts"]["ok"]
    return 1 if args.strict and bad else 0
