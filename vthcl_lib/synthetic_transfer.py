"""Synthetic AVA-style (detection), Epic-Kitchens-style (anticipation) and Something-Something-V1-style
(the ICM model's data) sets in the real annotation formats.

Taught in notebooks ``08_action_detection``, ``09_action_anticipation`` and
``10_instance_correspondence_map``; written by
``data_scripts/make_synthetic.py`` beside the recognition corpus of :mod:`vthcl_lib.synthetic`,
whose appearance, motion and compositor they reuse.

* **AVA-style** (``<root>/ava``): videos of ``ava_seconds`` seconds with 2-3 actors, each doing one
  motion class (its action), keyframes at 1 fps (seconds 1 .. ava_seconds - 1). Annotations as AVA
  v2.2 ships them: ``ava_{train,val}_v2.2.csv`` rows ``video_id,timestamp,x1,y1,x2,y2,action_id,
  person_id`` (boxes normalised to [0, 1], action ids 1-based), ``ava_action_list_v2.2.pbtxt``,
  ``ava_{train,val}_excluded_timestamps_v2.2.csv``, and person boxes for testing in pySlowFast's
  ``ava_detection_val_boxes_and_labels.csv`` form (``...,x2,y2,,score``): the true boxes jittered,
  plus one low-scoring false box per keyframe that the score threshold removes.
* **Epic-style** (``<root>/epic_kitchens``): long videos of consecutive segments, one sprite each;
  the **noun is the sprite's shape and the verb its motion**. The next segment's verb is the
  current verb's successor with probability ``epic_follow_prob`` (else random), and likewise the
  noun, so that what is seen before a segment says something about it: anticipation is learnable.
  Each video opens with one second of empty scene. Annotations: ``EPIC_train_action_labels.csv`` with
  Epic-Kitchens-55's columns, ``EPIC_verb_classes.csv``, ``EPIC_noun_classes.csv``, and the
  train/validation video lists the anticipation split uses.
* **Something-Something-V1-style** (``<root>/something_something_v1``): JPEG frame folders
  ``20bn-something-something-v1/<id>/00001.jpg ...`` (numeric ids, as V1's), one sprite doing one
  motion class each, labelled with a V1-style template sentence; ``annotations/something-something-v1-
  {labels,train,validation,test}.csv`` as 20BN released them (``<id>;<label>``, the test list ids only).

Each set has its own ``corpus.json`` stamp (the fields it depends on), so changing one leaves the
others alone. Everything is deterministic in the config's seed.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from vthcl_lib.progress import progress_bar

from vthcl_lib.config import SyntheticConfig
from vthcl_lib.synthetic import (
    MOTION_CLASSES,
    PLAIN_GREY,
    SHAPES,
    STAMP_NAME,
    Actor,
    background_pool,
    check_synthetic_config,
    make_video,
    motion_track,
    render_scene,
    sample_appearance,
    sample_motion_params,
    sample_tempo,
    stream_rng,
)
from vthcl_lib.video import write_video

TRANSFER_VERSION = 2  # 2: the first video of each subset has an excluded keyframe
AVA_ACTOR_RADIUS = (0.08, 0.12)  # actors are smaller than the recognition sprite: several share a frame
AVA_VERSION = "v2.2"
EPIC_LEAD_SECONDS = 1.0  # empty scene before the first segment
VERB_SUCCESSOR_SHIFT, NOUN_SUCCESSOR_SHIFT = 3, 5  # successor of class k: (k + shift) mod count
_CONTENT, _SPLIT_PURPOSE = 2, 4
_BASE_FIELDS = ("frame_size", "fps", "background", "num_backgrounds", "tempo_range", "noise_sigma", "seed")


def _stamp_record(cfg: SyntheticConfig, prefix: str) -> dict[str, Any]:
    record = {k: v for k, v in dataclasses.asdict(cfg).items() if k.startswith(prefix) or k in _BASE_FIELDS}
    return json.loads(json.dumps(record))


def scene_background(cfg: SyntheticConfig, size: int, index: int) -> np.ndarray:
    """The static float ``[size, size, 3]`` background of video ``index`` (notebooks ``08_action_detection``, ``09_action_anticipation``)."""
    if cfg.background == "plain":
        return np.full((size, size, 3), PLAIN_GREY, np.float32)
    return background_pool(size, cfg.num_backgrounds, cfg.seed)[index % cfg.num_backgrounds]


def _write_stamp(base: Path, cfg: SyntheticConfig, prefix: str, counts: dict) -> dict:
    stamp = {"generator": "vthcl_lib.synthetic_transfer", "version": TRANSFER_VERSION,
             "config": _stamp_record(cfg, prefix), "counts": counts}
    tmp = base / f".{STAMP_NAME}.tmp"
    tmp.write_text(json.dumps(stamp, indent=2) + "\n")
    os.replace(tmp, base / STAMP_NAME)
    return stamp


def _stamp_matches(base: Path, cfg: SyntheticConfig, prefix: str) -> bool:
    try:
        stamp = json.loads((base / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("version") == TRANSFER_VERSION and stamp.get("config") == _stamp_record(cfg, prefix)


# ----------------------------------------------------------------------------------------------- AVA-style


def ava_video_id(index: int) -> str:
    """An 11-character id like YouTube's (AVA's video ids are YouTube ids). Notebook ``08_action_detection``."""
    return f"synava{index:05d}"


def ava_keyframes(cfg: SyntheticConfig) -> list[int]:
    """Keyframe timestamps in seconds: 1 .. ava_seconds - 1 (AVA annotates one keyframe per second)."""
    return list(range(1, cfg.ava_seconds))


def make_ava_video(cfg: SyntheticConfig, index: int) -> tuple[np.ndarray, list[dict]]:
    """Render AVA-style video ``index``: frames ``[T, S, S, 3]`` and one dict per actor.

    Each actor dict holds ``person_id``, ``action_id`` (1-based index into
    :data:`~vthcl_lib.synthetic.MOTION_CLASSES`) and ``boxes`` ``[T, 4]`` normalised to [0, 1].
    Notebook ``08_action_detection``.
    """
    rng = stream_rng(cfg.seed, "ava", _CONTENT, index)
    size, num_frames = cfg.ava_frame_size, cfg.ava_seconds * cfg.fps
    tempo = sample_tempo(rng, cfg.tempo_range)
    count = int(rng.integers(cfg.ava_actors[0], cfg.ava_actors[1] + 1))
    actors, labels = [], []
    for person in range(count):
        look = sample_appearance(rng, cfg, radius_range=AVA_ACTOR_RADIUS)
        motion = MOTION_CLASSES[int(rng.integers(len(MOTION_CLASSES)))]
        params = sample_motion_params(rng, motion, look.radius)
        actors.append(Actor(look, motion_track(params, num_frames, tempo * float(rng.uniform(0.8, 1.25)))))
        labels.append({"person_id": person, "action_id": MOTION_CLASSES.index(motion) + 1})
    frames, boxes = render_scene(scene_background(cfg, size, index), actors, noise_sigma=cfg.noise_sigma, rng=rng)
    for label, actor_boxes in zip(labels, boxes):
        label["boxes"] = np.clip(actor_boxes / size, 0.0, 1.0)
    return frames, labels


def _jitter_box(rng: np.random.Generator, box: np.ndarray) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    shift = rng.uniform(-0.06, 0.06, 4) * np.array([w, h, w, h])
    out = np.clip(box + shift, 0.0, 1.0)
    return out if out[2] > out[0] and out[3] > out[1] else box


def _fmt(x: float) -> str:
    return f"{float(x):.3f}"


def write_ava_style(root: str | os.PathLike, cfg: SyntheticConfig, *, progress: bool = True) -> dict:
    """Write ``root/ava``: ``videos/trainval/<id>.mp4`` and AVA v2.2's annotation files (see the module doc).

    Returns ``{"train": {"videos", "boxes"}, "val": {...}}``. Notebook ``08_action_detection``.
    """
    check_synthetic_config(cfg)
    base = Path(root) / "ava"
    ann = base / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    keyframes = ava_keyframes(cfg)
    subsets = {"train": range(cfg.ava_train_videos),
               "val": range(cfg.ava_train_videos, cfg.ava_train_videos + cfg.ava_val_videos)}
    counts = {}
    bar = progress_bar(total=cfg.ava_train_videos + cfg.ava_val_videos, desc="ava", unit="video", disable=not progress)
    for subset, indices in subsets.items():
        rows, predicted, excluded = [], [], []
        for index in indices:
            vid = ava_video_id(index)
            frames, actors = make_ava_video(cfg, index)
            write_video(base / "videos" / "trainval" / f"{vid}.mp4", frames, fps=cfg.fps)
            box_rng = stream_rng(cfg.seed, "ava", _SPLIT_PURPOSE, index)
            for ts in keyframes:
                frame = min(ts * cfg.fps, len(frames) - 1)
                for actor in actors:
                    box = actor["boxes"][frame]
                    if box[2] <= box[0] or box[3] <= box[1]:
                        continue  # the actor covers no pixel at this keyframe
                    rows.append([vid, f"{ts:04d}", *map(_fmt, box), actor["action_id"], actor["person_id"]])
                    predicted.append([vid, f"{ts:04d}", *map(_fmt, _jitter_box(box_rng, box)), "",
                                      f"{box_rng.uniform(0.92, 1.0):.6f}"])
                x1, y1 = box_rng.uniform(0.0, 0.6, 2)
                w, h = box_rng.uniform(0.15, 0.35, 2)
                predicted.append([vid, f"{ts:04d}", _fmt(x1), _fmt(y1), _fmt(min(x1 + w, 1)), _fmt(min(y1 + h, 1)), "",
                                  f"{box_rng.uniform(0.2, 0.8):.6f}"])  # a false person box, below the threshold
            if (index - indices.start) % 4 == 0:  # AVA lists a few keyframes whose annotations are unreliable
                excluded.append([vid, f"{keyframes[-1]:04d}"])
            bar.update()
        excluded_keys = {tuple(e) for e in excluded}
        rows = [r for r in rows if (r[0], r[1]) not in excluded_keys]
        _write_csv(ann / f"ava_{subset}_{AVA_VERSION}.csv", rows)
        _write_csv(ann / f"ava_{subset}_excluded_timestamps_{AVA_VERSION}.csv", excluded)
        _write_csv(ann / f"ava_detection_{subset}_boxes_and_labels.csv", predicted)
        counts[subset] = {"videos": len(indices), "boxes": len(rows)}
    bar.close()
    items = "".join(f'item {{\n  name: "{name.replace("_", " ")}"\n  id: {i}\n}}\n'
                    for i, name in enumerate(MOTION_CLASSES, start=1))
    (ann / f"ava_action_list_{AVA_VERSION}.pbtxt").write_text(items)
    return counts


def _write_csv(path: Path, rows: list, header: list[str] | None = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- Epic-style


def epic_video_id(index: int) -> tuple[str, str]:
    """``(participant_id, video_id)``: four videos per participant, ``P01_01`` style. Notebook ``09_action_anticipation``."""
    participant = f"P{index // 4 + 1:02d}"
    return participant, f"{participant}_{index % 4 + 1:02d}"


def successor(label: int, count: int, shift: int) -> int:
    """The class that usually follows ``label`` (notebook ``09_action_anticipation``)."""
    return (label + shift) % count


def plan_epic_segments(cfg: SyntheticConfig, index: int) -> list[dict]:
    """The segments of Epic-style video ``index``: start/stop frames, verb and noun classes (0-based).

    Segments are consecutive after a one-second empty lead; the first verb and noun are drawn
    uniformly, each later one is the previous one's successor with probability ``epic_follow_prob``.
    Notebook ``09_action_anticipation``.
    """
    rng = stream_rng(cfg.seed, "epic_kitchens", _SPLIT_PURPOSE, index)
    start = int(round(EPIC_LEAD_SECONDS * cfg.fps))
    verb, noun = int(rng.integers(len(MOTION_CLASSES))), int(rng.integers(len(SHAPES)))
    segments = []
    for k in range(cfg.epic_segments):
        if k:
            verb = successor(verb, len(MOTION_CLASSES), VERB_SUCCESSOR_SHIFT) if rng.random() < cfg.epic_follow_prob \
                else int(rng.integers(len(MOTION_CLASSES)))
            noun = successor(noun, len(SHAPES), NOUN_SUCCESSOR_SHIFT) if rng.random() < cfg.epic_follow_prob \
                else int(rng.integers(len(SHAPES)))
        length = int(round(rng.uniform(*cfg.epic_segment_seconds) * cfg.fps))
        segments.append({"start_frame": start, "stop_frame": start + length - 1, "verb_class": verb, "noun_class": noun})
        start += length
    return segments


def make_epic_video(cfg: SyntheticConfig, index: int) -> tuple[np.ndarray, list[dict]]:
    """Render Epic-style video ``index``: frames ``[T, S, S, 3]`` and its :func:`plan_epic_segments`.

    Notebook ``09_action_anticipation``.
    """
    segments = plan_epic_segments(cfg, index)
    rng = stream_rng(cfg.seed, "epic_kitchens", _CONTENT, index)
    background = scene_background(cfg, cfg.frame_size, index)
    lead = segments[0]["start_frame"]
    parts = [np.broadcast_to(np.clip(background * 255.0 + 0.5, 0, 255).astype(np.uint8),
                             (lead, cfg.frame_size, cfg.frame_size, 3))]
    for seg in segments:
        look = dataclasses.replace(sample_appearance(rng, cfg), shape=SHAPES[seg["noun_class"]])
        motion = MOTION_CLASSES[seg["verb_class"]]
        length = seg["stop_frame"] - seg["start_frame"] + 1
        track = motion_track(sample_motion_params(rng, motion, look.radius), length, sample_tempo(rng, cfg.tempo_range))
        frames, _ = render_scene(background, [Actor(look, track)], noise_sigma=cfg.noise_sigma, rng=rng)
        parts.append(frames)
    return np.concatenate(parts), segments


def _timestamp(frame: int, fps: int) -> str:
    seconds = frame / fps
    return f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}:{seconds % 60:06.3f}"


EPIC_LABEL_HEADER = ["uid", "participant_id", "video_id", "narration", "start_timestamp", "stop_timestamp",
                     "start_frame", "stop_frame", "verb", "verb_class", "noun", "noun_class", "all_nouns",
                     "all_noun_classes"]


def write_epic_style(root: str | os.PathLike, cfg: SyntheticConfig, *, progress: bool = True) -> dict:
    """Write ``root/epic_kitchens``: ``videos/train/<P>/<video>.MP4`` and Epic-Kitchens-55's label files.

    Also ``splits/anticipation_{train,val}_videos.txt``, the video lists the anticipation split
    reads. Returns ``{"train": {"videos", "segments"}, "val": {...}}``. Notebook ``09_action_anticipation``.
    """
    check_synthetic_config(cfg)
    base = Path(root) / "epic_kitchens"
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    (base / "splits").mkdir(parents=True, exist_ok=True)
    total = cfg.epic_train_videos + cfg.epic_val_videos
    rows, lists, counts = [], {"train": [], "val": []}, {}
    for index in progress_bar(range(total), desc="epic_kitchens", unit="video", disable=not progress):
        participant, vid = epic_video_id(index)
        frames, segments = make_epic_video(cfg, index)
        write_video(base / "videos" / "train" / participant / f"{vid}.MP4", frames, fps=cfg.fps)
        subset = "train" if index < cfg.epic_train_videos else "val"
        lists[subset].append(vid)
        for seg in segments:
            verb, noun = MOTION_CLASSES[seg["verb_class"]].replace("_", "-"), SHAPES[seg["noun_class"]]
            rows.append([len(rows), participant, vid, f"{verb} {noun}", _timestamp(seg["start_frame"], cfg.fps),
                         _timestamp(seg["stop_frame"], cfg.fps), seg["start_frame"], seg["stop_frame"], verb,
                         seg["verb_class"], noun, seg["noun_class"], f"['{noun}']", f"[{seg['noun_class']}]"])
        counts.setdefault(subset, {"videos": 0, "segments": 0})
        counts[subset]["videos"] += 1
        counts[subset]["segments"] += len(segments)
    _write_csv(base / "annotations" / "EPIC_train_action_labels.csv", rows, EPIC_LABEL_HEADER)
    _write_csv(base / "annotations" / "EPIC_verb_classes.csv",
               [[i, m.replace("_", "-"), f"['{m.replace('_', '-')}']"] for i, m in enumerate(MOTION_CLASSES)],
               ["verb_id", "class_key", "verbs"])
    _write_csv(base / "annotations" / "EPIC_noun_classes.csv",
               [[i, s, f"['{s}']"] for i, s in enumerate(SHAPES)], ["noun_id", "class_key", "nouns"])
    for subset, videos in lists.items():
        (base / "splits" / f"anticipation_{subset}_videos.txt").write_text("".join(f"{v}\n" for v in videos))
    return counts


# --------------------------------------------------------------------------------- Something-Something V1

# V1's labels are template sentences about "something"; one per motion class, in MOTION_CLASSES order.
STHV1_TEMPLATES = {
    "diagonal_slide": "Moving something diagonally across the view",
    "flicker": "Showing something flickering on and off",
    "horizontal_slide": "Moving something from one side to the other",
    "orbit": "Moving something around in a circle",
    "spin": "Spinning something in place",
    "vertical_slide": "Moving something up and down",
    "zigzag": "Moving something in a zigzag",
    "zoom_pulse": "Moving something closer and away again",
}
STHV1_FIRST_ID = 100001  # V1's ids are plain numbers
STHV1_DIR = "something_something_v1"  # the folder vthcl_lib.datasets reads (datasets.STHV1_DIR)


def write_sthv1_style(root: str | os.PathLike, cfg: SyntheticConfig, *, progress: bool = True) -> dict:
    """Write ``root/something_something_v1``: JPEG frame folders and V1's four annotation CSVs (module doc).

    Each video is one sprite doing one motion class (its label's template) over the corpus's
    backgrounds, ``[min_frames, max_frames]`` frames long. Returns ``{split: {"videos": n}}``.
    Notebook ``10_instance_correspondence_map``.
    """
    from PIL import Image

    check_synthetic_config(cfg)
    base = Path(root) / STHV1_DIR
    frames_dir, ann = base / "20bn-something-something-v1", base / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    sizes = {"train": cfg.sthv1_train_videos, "validation": cfg.sthv1_val_videos, "test": cfg.sthv1_test_videos}
    rows: dict[str, list[str]] = {split: [] for split in sizes}
    bar = progress_bar(total=sum(sizes.values()), desc="something-something v1", unit="video", disable=not progress)
    index = 0
    for split, count in sizes.items():
        for _ in range(count):
            draw = stream_rng(cfg.seed, STHV1_DIR, _SPLIT_PURPOSE, index)
            motion = MOTION_CLASSES[int(draw.integers(len(MOTION_CLASSES)))]
            rng = stream_rng(cfg.seed, STHV1_DIR, _CONTENT, index)
            length = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
            video = make_video(rng, motion, length, cfg)
            folder = frames_dir / str(STHV1_FIRST_ID + index)
            folder.mkdir(parents=True, exist_ok=True)
            for t, frame in enumerate(video.frames, start=1):
                Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=90)
            label = STHV1_TEMPLATES[motion]
            rows[split].append(f"{folder.name}" if split == "test" else f"{folder.name};{label}")
            index += 1
            bar.update()
    bar.close()
    (ann / "something-something-v1-labels.csv").write_text("".join(f"{STHV1_TEMPLATES[m]}\n" for m in MOTION_CLASSES))
    for split, lines in rows.items():
        (ann / f"something-something-v1-{split}.csv").write_text("".join(f"{line}\n" for line in lines))
    return {split: {"videos": len(lines)} for split, lines in rows.items()}


# ----------------------------------------------------------------------------------------------- all sets


TRANSFER_WRITERS = {"ava": (write_ava_style, "ava_"), "epic_kitchens": (write_epic_style, "epic_"),
                    "something_something_v1": (write_sthv1_style, "sthv1_")}


def ensure_transfer_sets(root: str | os.PathLike, cfg: SyntheticConfig, *, sets: tuple[str, ...] = ("ava", "epic_kitchens"),
                         progress: bool = True, force: bool = False) -> dict[str, dict]:
    """Write each of ``sets`` under ``root`` unless its ``corpus.json`` stamp already records this config.

    Returns ``{set: stamp + {"generated": bool}}``. A set being rewritten is removed first, so no
    stale video survives a smaller config. Notebooks ``08_action_detection`` and ``09_action_anticipation``.
    """
    check_synthetic_config(cfg)
    unknown = [s for s in sets if s not in TRANSFER_WRITERS]
    if unknown:
        raise ValueError(f"sets={sets}: {unknown} unknown; expected some of {tuple(TRANSFER_WRITERS)}")
    out = {}
    for name in sets:
        writer, prefix = TRANSFER_WRITERS[name]
        base = Path(root) / name
        if not force and _stamp_matches(base, cfg, prefix):
            out[name] = {**json.loads((base / STAMP_NAME).read_text()), "generated": False}
            continue
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        counts = writer(root, cfg, progress=progress)
        out[name] = {**_write_stamp(base, cfg, prefix, counts), "generated": True}
    return out
