"""Synthetic AVA-style and Epic-style sets: real formats, boxes on the actors, consecutive segments, stamps."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vthcl_lib.config import resolve_config
from vthcl_lib.datasets import (
    group_ava_keyframes,
    read_ava_csv,
    read_ava_excluded_timestamps,
    read_ava_label_map,
    read_epic_action_labels,
    read_video_list,
)
from vthcl_lib.detection import box_iou
from vthcl_lib.synthetic import MOTION_CLASSES, SHAPES
from vthcl_lib.synthetic_transfer import (
    NOUN_SUCCESSOR_SHIFT,
    scene_background as background_of,
    VERB_SUCCESSOR_SHIFT,
    ensure_transfer_sets,
    make_ava_video,
    make_epic_video,
    plan_epic_segments,
    successor,
)
from vthcl_lib.video import probe, read_frames


@pytest.fixture(scope="module")
def cfg():
    return resolve_config("ci").synthetic


@pytest.fixture(scope="module")
def sets(tmp_path_factory, cfg):
    root = tmp_path_factory.mktemp("transfer")
    return root, ensure_transfer_sets(root, cfg, progress=False)


def test_ava_files_parse_back_with_the_real_format_readers(sets, cfg):
    root, stamps = sets
    ann = root / "ava" / "annotations"
    assert read_ava_label_map(ann / "ava_action_list_v2.2.pbtxt") == {
        i: m.replace("_", " ") for i, m in enumerate(MOTION_CLASSES, start=1)}
    rows = read_ava_csv(ann / "ava_train_v2.2.csv")
    assert len(rows) == stamps["ava"]["counts"]["train"]["boxes"] > 0
    assert {r.video_id for r in rows} <= {f"synava{i:05d}" for i in range(cfg.ava_train_videos)}
    assert {r.timestamp for r in rows} <= set(range(1, cfg.ava_seconds))
    excluded = read_ava_excluded_timestamps(ann / "ava_train_excluded_timestamps_v2.2.csv")
    assert excluded and not {(r.video_id, r.timestamp) for r in rows} & excluded  # excluded keyframes carry no rows
    for r in rows:
        assert len(r.video_id) == 11 and r.person_id is not None and 1 <= r.action_id <= len(MOTION_CLASSES)
    video = root / "ava" / "videos" / "trainval" / f"{rows[0].video_id}.mp4"
    info = probe(video)
    assert (info.num_frames, info.height, round(info.fps)) == (cfg.ava_seconds * cfg.fps, cfg.ava_frame_size, cfg.fps)


def test_ava_boxes_enclose_the_actor_and_the_person_boxes_match_them(sets, cfg):
    root, _ = sets
    frames, actors = make_ava_video(cfg, 0)
    assert cfg.ava_actors[0] <= len(actors) <= cfg.ava_actors[1]
    size = cfg.ava_frame_size
    for actor in actors:
        x1, y1, x2, y2 = np.round(actor["boxes"][cfg.fps] * size).astype(int)  # keyframe at 1 s
        inside = frames[cfg.fps, y1:y2, x1:x2].astype(float)
        empty = background_of(cfg, size, 0)[y1:y2, x1:x2] * 255
        assert np.abs(inside - empty).max() > 60  # the sprite is inside its box
    ann = root / "ava" / "annotations"
    truth = group_ava_keyframes(read_ava_csv(ann / "ava_val_v2.2.csv"),
                                excluded=read_ava_excluded_timestamps(ann / "ava_val_excluded_timestamps_v2.2.csv"))
    people = group_ava_keyframes(read_ava_csv(ann / "ava_detection_val_boxes_and_labels.csv", kind="detections"),
                                 min_score=0.9)
    by_key = {(k.video_id, k.timestamp): k for k in people}
    for keyframe in truth:
        found = by_key[(keyframe.video_id, keyframe.timestamp)]
        assert len(found.boxes) == len(keyframe.boxes)  # the false box scores below 0.9
        iou = box_iou(torch.from_numpy(keyframe.boxes), torch.from_numpy(found.boxes))
        assert float(iou.max(dim=1).values.min()) > 0.6


def test_epic_segments_are_consecutive_and_follow_their_successor_rule(cfg):
    plan = plan_epic_segments(cfg, 0)
    assert plan[0]["start_frame"] == cfg.fps  # one second of empty scene first
    for a, b in zip(plan, plan[1:]):
        assert b["start_frame"] == a["stop_frame"] + 1
    follow = dataclasses.replace(cfg, epic_follow_prob=1.0, epic_segments=6)
    plan = plan_epic_segments(follow, 3)
    for a, b in zip(plan, plan[1:]):
        assert b["verb_class"] == successor(a["verb_class"], len(MOTION_CLASSES), VERB_SUCCESSOR_SHIFT)
        assert b["noun_class"] == successor(a["noun_class"], len(SHAPES), NOUN_SUCCESSOR_SHIFT)
    frames, segments = make_epic_video(cfg, 0)
    assert len(frames) == segments[-1]["stop_frame"] + 1
    assert np.all(frames[: cfg.fps] == frames[0])
    assert np.abs(frames[0].astype(float) - background_of(cfg, cfg.frame_size, 0) * 255).max() < 1  # an empty scene


def test_epic_files_parse_back_and_split_the_videos(sets, cfg):
    root, stamps = sets
    base = root / "epic_kitchens"
    segments = read_epic_action_labels(base / "annotations" / "EPIC_train_action_labels.csv")
    assert len(segments) == (cfg.epic_train_videos + cfg.epic_val_videos) * cfg.epic_segments
    train = read_video_list(base / "splits" / "anticipation_train_videos.txt")
    val = read_video_list(base / "splits" / "anticipation_val_videos.txt")
    assert len(train) == cfg.epic_train_videos and len(val) == cfg.epic_val_videos and not set(train) & set(val)
    first = segments[0]
    assert (first.participant_id, first.video_id, first.start_frame) == ("P01", "P01_01", cfg.fps)
    assert first.verb == MOTION_CLASSES[first.verb_class].replace("_", "-") and first.noun == SHAPES[first.noun_class]
    assert first.narration == f"{first.verb} {first.noun}"
    video = base / "videos" / "train" / "P01" / "P01_01.MP4"
    assert probe(video).num_frames == max(s.stop_frame for s in segments if s.video_id == "P01_01") + 1
    assert read_frames(video, [0]).shape == (1, cfg.frame_size, cfg.frame_size, 3)


def test_stamps_keep_each_set_until_its_own_config_changes(sets, cfg):
    root, _ = sets
    again = ensure_transfer_sets(root, cfg, progress=False)
    assert not again["ava"]["generated"] and not again["epic_kitchens"]["generated"]
    changed = ensure_transfer_sets(root, dataclasses.replace(cfg, epic_follow_prob=0.5), progress=False)
    assert changed["epic_kitchens"]["generated"] and not changed["ava"]["generated"]
    ensure_transfer_sets(root, cfg, progress=False)  # back to the module's config for the other tests


def test_same_seed_same_annotations(tmp_path, cfg):
    a = ensure_transfer_sets(tmp_path / "a", cfg, sets=("ava",), progress=False)
    b = ensure_transfer_sets(tmp_path / "b", cfg, sets=("ava",), progress=False)
    assert a["ava"]["counts"] == b["ava"]["counts"]
    name = "ava/annotations/ava_detection_val_boxes_and_labels.csv"
    assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    with pytest.raises(ValueError, match="unknown"):
        ensure_transfer_sets(tmp_path / "c", cfg, sets=("kinetics",), progress=False)
