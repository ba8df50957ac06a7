"""The synthetic corpus: exact on-disk layouts, decodable videos, determinism, stamps, boxes, flip invariance."""
from __future__ import annotations

import csv
import dataclasses
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vthcl_lib import synthetic as syn
from vthcl_lib.config import SyntheticConfig
from vthcl_lib.video import count_decodable_frames, probe, read_frames

ROOT = Path(__file__).resolve().parents[1]
TINY = SyntheticConfig(
    frame_size=32, min_frames=20, max_frames=30, fps=25, num_pretrain=8, ucf_groups=3, ucf_clips_per_group=2,
    hmdb_per_class=3, num_backgrounds=2, seed=0,
)
SIGNED = ("diagonal_slide", "horizontal_slide", "orbit", "spin", "zigzag")  # classes a flip maps onto themselves by sign


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != "corpus.json"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    syn.generate_corpus(root, TINY, progress=False)
    return root


# ---------------------------------------------------------------------------------------------- layouts


def test_kinetics_layout(corpus):
    base = corpus / "kinetics400"
    with open(base / "train.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["label", "youtube_id", "time_start", "time_end", "split"]
    assert len(rows) == 1 + TINY.num_pretrain
    for label, youtube_id, start, end, split in rows[1:]:
        assert label in syn.MOTION_CLASSES and split == "train" and start == "0"
        assert re.fullmatch(r"syn\d{8}", youtube_id) and len(youtube_id) == 11  # as long as a real YouTube id
        path = base / "train" / label / f"{youtube_id}_000000_{int(end):06d}.mp4"
        assert path.is_file()
        assert int(end) == math.ceil(probe(path).num_frames / TINY.fps)
    assert len(list(base.rglob("*.mp4"))) == TINY.num_pretrain


def test_ucf101_layout_and_group_splits(corpus):
    base = corpus / "ucf101"
    lists = base / "ucfTrainTestlist"
    class_ind = (lists / "classInd.txt").read_bytes().decode()
    assert class_ind.endswith("\r\n")  # CRLF, as the real files
    entries = [line.split() for line in class_ind.splitlines()]
    names = [name for _, name in entries]
    assert [int(i) for i, _ in entries] == list(range(1, 9))
    assert names == sorted(names) == [syn.camel_case(m) for m in syn.MOTION_CLASSES]
    assert "HorizontalSlide" in names
    videos = sorted(str(p.relative_to(base / "UCF-101")) for p in (base / "UCF-101").rglob("*.avi"))
    assert len(videos) == 8 * TINY.ucf_groups * TINY.ucf_clips_per_group
    for split in (1, 2, 3):
        train = (lists / f"trainlist0{split}.txt").read_bytes().decode().splitlines()
        test = (lists / f"testlist0{split}.txt").read_bytes().decode().splitlines()
        test_groups = set(syn.ucf_test_groups(TINY.ucf_groups, split))
        assert test_groups == {split}  # 3 groups: chunk = max(1, round(3 * 7 / 25)) = 1
        seen_train, seen_test = set(), set()
        for line in train:
            m = re.fullmatch(r"([A-Za-z]+)/v_\1_g(\d\d)_c(\d\d)\.avi (\d+)", line)
            assert m, line
            assert names[int(m.group(4)) - 1] == m.group(1)
            assert int(m.group(2)) not in test_groups
            seen_train.add(line.split()[0])
        for line in test:
            m = re.fullmatch(r"([A-Za-z]+)/v_\1_g(\d\d)_c(\d\d)\.avi", line)
            assert m, line
            assert int(m.group(2)) in test_groups
            seen_test.add(line)
        assert not seen_train & seen_test
        assert sorted(seen_train | seen_test) == videos


def test_ucf_group_rule_matches_the_real_splits():
    assert [list(syn.ucf_test_groups(25, k)) for k in (1, 2, 3)] == [
        list(range(1, 8)), list(range(8, 15)), list(range(15, 22))]
    assert list(syn.ucf_test_groups(6, 3)) == [5, 6]  # chunk = round(6 * 7 / 25) = 2
    with pytest.raises(ValueError, match="split"):
        syn.ucf_test_groups(25, 4)


def test_hmdb51_layout_and_70_30_tags(corpus):
    base = corpus / "hmdb51"
    assert sorted(p.name for p in (base / "videos").iterdir()) == sorted(syn.MOTION_CLASSES)
    n_train = round(TINY.hmdb_per_class * 0.7)
    partitions = set()
    for motion in syn.MOTION_CLASSES:
        videos = sorted(p.name for p in (base / "videos" / motion).glob("*.avi"))
        assert len(videos) == TINY.hmdb_per_class
        for split in (1, 2, 3):
            lines = (base / "testTrainMulti_7030_splits" / f"{motion}_test_split{split}.txt").read_text().splitlines()
            parsed = [line.split() for line in lines]
            assert all(re.fullmatch(r"\S+\.avi [12] ?", line) for line in lines)
            assert sorted(name for name, _ in parsed) == videos
            tags = [tag for _, tag in parsed]
            assert tags.count("1") == n_train and tags.count("2") == TINY.hmdb_per_class - n_train
            partitions.add(tuple(tags))
    assert len(partitions) > 1  # a fresh partition per class and split, not one fixed pattern


# ---------------------------------------------------------------------------------------------- videos


@pytest.mark.parametrize("pattern", ["kinetics400/train/*/*.mp4", "ucf101/UCF-101/*/*.avi", "hmdb51/videos/*/*.avi"])
def test_videos_decode_with_the_right_size_and_length(corpus, pattern):
    paths = sorted(corpus.glob(pattern))
    assert paths
    lengths = set()
    for path in paths[:4]:
        info = probe(path)
        assert (info.height, info.width) == (TINY.frame_size, TINY.frame_size)
        assert TINY.min_frames <= info.num_frames <= TINY.max_frames
        assert info.fps == pytest.approx(TINY.fps)
        assert count_decodable_frames(path) == info.num_frames  # nothing truncated
        clip = read_frames(path, [0, info.num_frames - 1])
        assert tuple(clip.shape) == (2, TINY.frame_size, TINY.frame_size, 3)
        assert clip.float().std() > 5  # real content, not a blank frame
        lengths.add(info.num_frames)
    assert len(lengths) > 1  # lengths are drawn per video
    pyav = read_frames(paths[0], [1, 3], backend="pyav")
    assert tuple(pyav.shape) == (2, TINY.frame_size, TINY.frame_size, 3)


def test_same_seed_is_byte_identical_whatever_the_workers_and_another_seed_differs(corpus, tmp_path):
    syn.generate_corpus(tmp_path / "again", TINY, workers=2, progress=False)
    first, again = _files(corpus), _files(tmp_path / "again")
    assert first.keys() == again.keys() and len(first) > 100
    assert all(first[k] == again[k] for k in first)
    syn.generate_corpus(tmp_path / "other", dataclasses.replace(TINY, seed=1), progress=False)
    other = _files(tmp_path / "other")
    videos = [k for k in first if k.endswith((".mp4", ".avi"))]
    assert sum(first[k] != other.get(k) for k in videos) == len(videos)


def test_ensure_synthetic_regenerates_only_when_the_config_changes(tmp_path):
    small = dataclasses.replace(TINY, num_pretrain=4, hmdb_per_class=2, ucf_clips_per_group=1)
    first = syn.ensure_synthetic(tmp_path, small, progress=False)
    assert first["generated"] and (tmp_path / "corpus.json").is_file()
    assert first["counts"]["kinetics400"]["videos"] == 4
    stamp_time = (tmp_path / "corpus.json").stat().st_mtime_ns
    video = next((tmp_path / "kinetics400").rglob("*.mp4"))
    video_time = video.stat().st_mtime_ns
    again = syn.ensure_synthetic(tmp_path, small, progress=False)
    assert not again["generated"] and again["config"] == first["config"]
    assert (tmp_path / "corpus.json").stat().st_mtime_ns == stamp_time and video.stat().st_mtime_ns == video_time
    changed = syn.ensure_synthetic(tmp_path, dataclasses.replace(small, num_pretrain=2), progress=False)
    assert changed["generated"]
    assert len(list((tmp_path / "kinetics400").rglob("*.mp4"))) == 2  # no stale videos from the bigger corpus
    assert syn.read_stamp(tmp_path)["config"]["num_pretrain"] == 2
    (tmp_path / "corpus.json").unlink()
    assert syn.ensure_synthetic(tmp_path, small, progress=False)["generated"]  # missing stamp: redo


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="frame_size"):
        syn.check_synthetic_config(dataclasses.replace(TINY, frame_size=33))
    with pytest.raises(ValueError, match="ucf_groups"):
        syn.generate_corpus("/nonexistent/never", dataclasses.replace(TINY, ucf_groups=2))
    with pytest.raises(ValueError, match="motion='jump'"):
        syn.render_video(np.random.default_rng(0), "jump", 10, TINY)
    with pytest.raises(ValueError, match="workers"):
        syn.write_hmdb51_style("/nonexistent/never", TINY, workers=0)


# ---------------------------------------------------------------------------------------------- content


def test_boxes_hold_the_sprite_on_a_flat_background():
    background = np.full((40, 40, 3), 0.5, np.float32)
    appearance = syn.Appearance(shape="square", color=(1.0, 0.1, 0.1), radius=0.2)
    params = syn.sample_motion_params(np.random.default_rng(3), "diagonal_slide", appearance.radius)
    frames, boxes = syn.render_scene(background, [syn.Actor(appearance, syn.motion_track(params, 30, 1.5))])
    assert frames.shape == (30, 40, 40, 3) and boxes.shape == (1, 30, 4)
    grey = np.uint8(round(0.5 * 255))
    for frame, (x1, y1, x2, y2) in zip(frames, boxes[0].astype(int)):
        assert 0 <= x1 < x2 <= 40 and 0 <= y1 < y2 <= 40
        changed = np.abs(frame.astype(int) - grey).sum(-1) > 0
        inside = np.zeros_like(changed)
        inside[max(y1 - 1, 0):y2 + 1, max(x1 - 1, 0):x2 + 1] = True  # one pixel of antialiased edge
        assert changed[y1:y2, x1:x2].mean() > 0.5
        assert not changed[~inside].any()


@pytest.mark.parametrize("motion", syn.MOTION_CLASSES)
def test_render_video_boxes_contain_the_sprite(motion):
    cfg = dataclasses.replace(TINY, frame_size=48, noise_sigma=0.0)
    for seed in range(3):
        video = syn.make_video(np.random.default_rng(seed), motion, 40, cfg)
        frames, boxes = syn.render_video(np.random.default_rng(seed), motion, 40, cfg)
        assert np.array_equal(frames, video.frames) and np.array_equal(boxes, video.boxes[0])
        assert frames.shape == (40, 48, 48, 3) and frames.dtype == np.uint8 and boxes.shape == (40, 4)
        background = syn.background_pool(cfg.frame_size, cfg.num_backgrounds, cfg.seed)[video.appearance.background]
        background = np.round(background * 255).astype(int)
        for frame, (x1, y1, x2, y2) in zip(frames, boxes.astype(int)):
            assert x2 - x1 >= 3 and y2 - y1 >= 3
            differs = np.abs(frame[y1:y2, x1:x2].astype(int) - background[y1:y2, x1:x2]).sum(-1) > 12
            assert differs.mean() > 0.3


def test_motion_semantics_from_the_tracks():
    rng = np.random.default_rng(0)
    spread = {}
    for motion in syn.MOTION_CLASSES:
        params = syn.sample_motion_params(rng, motion, 0.18)
        track = syn.motion_track(params, 64, 1.0)
        spread[motion] = (np.ptp(track.x), np.ptp(track.y), np.ptp(track.angle), np.ptp(track.scale), np.ptp(track.brightness))
        assert track.x.min() >= params.margin - 1e-9 and track.x.max() <= 1 - params.margin + 1e-9
        assert track.y.min() >= params.margin - 1e-9 and track.y.max() <= 1 - params.margin + 1e-9
    moving = lambda v: v > 0.05  # noqa: E731
    assert moving(spread["horizontal_slide"][0]) and spread["horizontal_slide"][1] == 0
    assert moving(spread["vertical_slide"][1]) and spread["vertical_slide"][0] == 0
    assert moving(spread["diagonal_slide"][0]) and moving(spread["diagonal_slide"][1])
    assert moving(spread["orbit"][0]) and moving(spread["orbit"][1]) and spread["orbit"][2] == 0
    assert moving(spread["zigzag"][0]) and moving(spread["zigzag"][1])
    for still in ("spin", "zoom_pulse", "flicker"):
        assert spread[still][0] == spread[still][1] == 0
    assert moving(spread["spin"][2]) and moving(spread["zoom_pulse"][3]) and moving(spread["flicker"][4])


def test_tempo_scales_every_speed_and_period():
    for motion in syn.MOTION_CLASSES:
        params = syn.sample_motion_params(np.random.default_rng(5), motion, 0.15)
        fast, slow = syn.motion_track(params, 30, 2.0), syn.motion_track(params, 60, 1.0)
        for field in ("x", "y", "angle", "scale", "brightness"):
            assert np.allclose(getattr(fast, field), getattr(slow, field)[::2]), (motion, field)
    tempos = [syn.sample_tempo(np.random.default_rng(s), (0.5, 2.0)) for s in range(400)]
    assert 0.5 <= min(tempos) and max(tempos) <= 2.0
    assert abs(np.mean(np.log(tempos))) < 0.1  # log-uniform: as many slow-downs as speed-ups


def test_flip_invariance_is_documented_and_signs_are_drawn_both_ways():
    assert set(syn.FLIP_BEHAVIOUR) == set(syn.MOTION_CLASSES) and len(syn.MOTION_CLASSES) == 8
    assert list(syn.MOTION_CLASSES) == sorted(syn.MOTION_CLASSES)
    for motion in syn.MOTION_CLASSES:
        signs = {syn.sample_motion_params(np.random.default_rng(s), motion, 0.15).mirror_sign for s in range(40)}
        assert signs == ({-1, 1} if motion in SIGNED else {0}), motion
        doc = syn.FLIP_BEHAVIOUR[motion]
        assert ("drawn equally often" in doc) == (motion in SIGNED) and doc.startswith("unchanged") != (motion in SIGNED)


@pytest.mark.parametrize("motion", syn.MOTION_CLASSES)
def test_a_flipped_video_is_the_video_of_the_mirrored_motion(motion):
    rng = np.random.default_rng(11)
    params = syn.sample_motion_params(rng, motion, 0.2)
    mirrored = syn.mirror_params(params)
    assert mirrored.motion == motion and mirrored.mirror_sign == -params.mirror_sign
    assert params.margin <= mirrored.x0 <= 1 - params.margin  # inside the class's own sampling range
    track, flipped = syn.motion_track(params, 40, 1.3), syn.motion_track(mirrored, 40, 1.3)
    assert np.allclose(flipped.x, 1 - track.x) and np.allclose(flipped.y, track.y)
    assert np.allclose(np.cos(flipped.angle), np.cos(-track.angle)) and np.allclose(np.sin(flipped.angle), np.sin(-track.angle))
    assert np.allclose(flipped.scale, track.scale) and np.allclose(flipped.brightness, track.brightness)
    # Pixels: every shape is symmetric, so flipping the rendered video gives the mirrored motion's video.
    background = syn.background_pool(32, 2, 0)[0]
    for shape in syn.SHAPES:
        look = syn.Appearance(shape=shape, color=(0.9, 0.8, 0.1), radius=0.2)
        frames, boxes = syn.render_scene(background, [syn.Actor(look, track)])
        mirror_frames, mirror_boxes = syn.render_scene(background[:, ::-1], [syn.Actor(look, flipped)])
        assert np.abs(frames[:, :, ::-1].astype(int) - mirror_frames).max() <= 2, shape
        assert np.abs(32 - boxes[0][:, [2, 0]] - mirror_boxes[0][:, [0, 2]]).max() <= 1


def test_appearance_is_independent_of_the_label():
    looks = {m: [syn.make_video(np.random.default_rng(s), m, 2, TINY).appearance for s in range(24)]
             for m in ("spin", "horizontal_slide")}
    for motion, drawn in looks.items():
        assert len({a.shape for a in drawn}) >= 5 and len({a.background for a in drawn}) == TINY.num_backgrounds
    # the same seed gives the same look whatever the class: appearance is drawn before the motion
    assert [a.shape for a in looks["spin"]] == [a.shape for a in looks["horizontal_slide"]]


def test_background_pool_is_small_shared_and_textured():
    pool = syn.background_pool(32, 4, 0)
    assert pool.shape == (4, 32, 32, 3) and not pool.flags.writeable
    assert pool is syn.background_pool(32, 4, 0)
    assert all(img.std() > 0.02 for img in pool)  # textured, not flat
    assert not np.allclose(pool[0], pool[1])


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_writes_the_ci_corpus_then_keeps_it(tmp_path):
    out = tmp_path / "ci"
    cmd = [sys.executable, str(ROOT / "data_scripts" / "make_synthetic.py"), "--preset", "ci", "--out", str(out),
           "--seed", "3", "--no-progress"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "wrote" in first.stdout and "kinetics400" in first.stdout and "time:" in first.stdout
    assert syn.read_stamp(out)["config"]["seed"] == 3
    assert len(list((out / "ucf101" / "UCF-101").rglob("*.avi"))) == 48  # ci: 8 classes x 6 groups x 1 clip
    assert (out / "ava" / "annotations" / "ava_train_v2.2.csv").is_file()  # the transfer sets come by default
    assert (out / "epic_kitchens" / "annotations" / "EPIC_train_action_labels.csv").is_file()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "kept existing" in second.stdout
    assert "ava            kept" in second.stdout and "epic_kitchens  kept" in second.stdout
    only = subprocess.run([*cmd[:5], str(tmp_path / "only"), "--sets", "epic_kitchens", "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert only.returncode == 0, only.stderr
    assert sorted(p.name for p in (tmp_path / "only").iterdir()) == ["epic_kitchens"]
    bad = subprocess.run([*cmd[:2], "--preset", "paper_r18", "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode != 0 and "preset" in bad.stderr


def test_plain_background_without_distractor_shows_only_the_sprite():
    cfg = dataclasses.replace(TINY, background="plain", distractor=False, noise_sigma=0.0)
    video = syn.make_video(np.random.default_rng(5), "orbit", 24, cfg)
    assert video.boxes.shape == (1, 24, 4)  # the main sprite alone
    grey = np.uint8(round(syn.PLAIN_GREY * 255))
    for frame, (x1, y1, x2, y2) in zip(video.frames, video.boxes[0].astype(int)):
        outside = np.ones(frame.shape[:2], bool)
        outside[max(y1 - 1, 0):y2 + 1, max(x1 - 1, 0):x2 + 1] = False
        assert (frame[outside] == grey).all()  # nothing but the uniform grey away from the sprite
    cluttered = syn.make_video(np.random.default_rng(5), "orbit", 24, TINY)
    assert cluttered.boxes.shape == (2, 24, 4)  # the default keeps the distractor
    with pytest.raises(ValueError, match="background"):
        syn.check_synthetic_config(dataclasses.replace(TINY, background="noise"))
