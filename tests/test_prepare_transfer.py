"""AVA v2.2 and Epic-Kitchens-55 preparation (data_scripts/prepare_{ava,epic_kitchens}.py) on "download"
trees re-arranged from the synthetic transfer sets, and the AVA parsers on real-format fixture files."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import prepare_main, read_manifest, read_quarantine, run_prepare_script
from vthcl_lib.config import resolve_config
from vthcl_lib.datasets import (
    DatasetLayoutError,
    group_ava_keyframes,
    read_ava_csv,
    read_ava_excluded_timestamps,
    read_ava_label_map,
    read_epic_action_labels,
)
from vthcl_lib.prepare import DEFAULT_SPLIT_RULE, LAYOUTS, PrepareError, prepare_dataset
from vthcl_lib.synthetic import MOTION_CLASSES, SHAPES
from vthcl_lib.synthetic_transfer import ensure_transfer_sets
from vthcl_lib.video import probe, read_frames, write_video

FIXTURES = Path(__file__).parent / "fixtures" / "ava"
AVA_REQUIRED = ["ava_action_list_v2.2.pbtxt", "ava_train_excluded_timestamps_v2.2.csv", "ava_train_v2.2.csv",
                "ava_val_excluded_timestamps_v2.2.csv", "ava_val_v2.2.csv"]
AVA_PERSON_BOXES = ["ava_detection_train_boxes_and_labels.csv", "ava_detection_val_boxes_and_labels.csv"]
# Two synthetic ids renamed to real AVA ids: YouTube ids may begin with '-' or '_' and hold '_' inside.
REAL_IDS = {"synava00000": "-5KQ66BBWC4", "synava00001": "_145Aa_xkuE"}
EPIC_VIDEOS = ["P01_01", "P01_02", "P01_03", "P01_04", "P02_01"]  # the ci preset's 5 videos, 4 per participant


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()






# --------------------------------------------------------------------------- AVA parsers on real-format rows


def test_read_ava_csv_annotations_in_the_real_format():
    rows = read_ava_csv(FIXTURES / "ava_val_v2.2.csv")
    assert len(rows) == 10
    first, last = rows[0], rows[-1]
    assert (first.video_id, first.timestamp, first.box, first.action_id, first.person_id, first.score) == \
        ("-5KQ66BBWC4", 902, (0.077, 0.151, 0.283, 0.811), 80, 1, None)
    assert (last.video_id, last.timestamp, last.box, last.action_id, last.person_id) == \
        ("_145Aa_xkuE", 1202, (0.0, 0.3, 0.211, 0.975), 17, 4)
    assert [r.action_id for r in rows] == [80, 12, 12, 17, 79, 12, 14, 11, 74, 17]
    assert sorted({r.video_id for r in rows}) == ["-5KQ66BBWC4", "_145Aa_xkuE"]


def test_read_ava_csv_person_boxes_in_pyslowfast_form():
    rows = read_ava_csv(FIXTURES / "ava_detection_val_boxes_and_labels.csv", kind="detections")
    assert len(rows) == 5
    low = rows[2]
    assert (low.video_id, low.timestamp, low.box, low.action_id, low.person_id, low.score) == \
        ("-5KQ66BBWC4", 902, (0.61, 0.402, 0.7, 0.69), None, None, 0.412377)
    assert [r.score for r in rows] == [0.998211, 0.981052, 0.412377, 0.99563, 0.999104]


@pytest.mark.parametrize("kind, line, replacement, match", [
    ("annotations", 3, "-5KQ66BBWC4,0902,0.226,0.032,0.366,0.497", "line 3: 6 fields; expected video_id,timestamp"),
    ("annotations", 1, "-5KQ66BBWC4,09O2,0.077,0.151,0.283,0.811,80,1", "line 1: invalid literal"),
    ("annotations", 2, "-5KQ66BBWC4,0902,0.077,0.151,1.283,0.811,12,1", r"line 2: box \(0.077, 0.151, 1.283, 0.811\)"),
    ("annotations", 6, "-5KQ66BBWC4,0903,0.289,0.162,0.081,0.818,12,1", "line 6: box"),
    ("annotations", 4, "-5KQ66BBWC4,0902,0.226,0.032,0.366,0.497,,0", "line 4: no action_id"),
    ("detections", 5, "_145Aa_xkuE,1202,0.449,0.055,0.928,0.996,", "line 5: 7 fields; expected"),
], ids=["short-row", "timestamp", "outside", "x2-before-x1", "no-action", "no-score"])
def test_read_ava_csv_bad_rows_name_the_file_and_line(tmp_path, kind, line, replacement, match):
    source = FIXTURES / ("ava_val_v2.2.csv" if kind == "annotations" else "ava_detection_val_boxes_and_labels.csv")
    lines = source.read_text().splitlines()
    lines[line - 1] = replacement
    bad = tmp_path / source.name
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetLayoutError, match=match) as err:
        read_ava_csv(bad, kind=kind)
    assert f"'{bad}'" in str(err.value)


def test_read_ava_csv_rejects_an_unknown_kind_and_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match="kind='boxes'; expected 'annotations' or 'detections'"):
        read_ava_csv(FIXTURES / "ava_val_v2.2.csv", kind="boxes")
    with pytest.raises(DatasetLayoutError, match="ava_train_v2.2.csv' does not exist"):
        read_ava_csv(tmp_path / "ava_train_v2.2.csv")


def test_read_ava_excluded_timestamps(tmp_path):
    assert read_ava_excluded_timestamps(FIXTURES / "ava_val_excluded_timestamps_v2.2.csv") == {
        ("-5KQ66BBWC4", 904), ("_145Aa_xkuE", 1203)}
    bad = tmp_path / "ava_val_excluded_timestamps_v2.2.csv"
    bad.write_text("-5KQ66BBWC4,0904\n_145Aa_xkuE\n")
    with pytest.raises(DatasetLayoutError, match=r"line 2: \['_145Aa_xkuE'\]; expected video_id,timestamp"):
        read_ava_excluded_timestamps(bad)


def test_read_ava_label_map_item_form():
    assert read_ava_label_map(FIXTURES / "ava_action_list_v2.2_for_activitynet_2019.pbtxt") == {
        1: "bend/bow (at the waist)", 11: "sit", 12: "stand", 14: "walk", 17: "carry/hold (an object)",
        74: "listen to (a person)", 79: "talk to (e.g., self, a person, a group)", 80: "watch (a person)",
    }


def test_read_ava_label_map_official_label_form():  # ava_v2.2.zip writes 'label { name label_id label_type }'
    assert read_ava_label_map(FIXTURES / "ava_action_list_v2.2.pbtxt") == {
        1: "bend/bow (at the waist)", 2: "crawl", 17: "carry/hold (an object)", 80: "watch (a person)"}


def test_group_ava_keyframes_merges_a_persons_actions_and_drops_excluded_keyframes():
    rows = read_ava_csv(FIXTURES / "ava_val_v2.2.csv")
    excluded = read_ava_excluded_timestamps(FIXTURES / "ava_val_excluded_timestamps_v2.2.csv")
    keyframes = group_ava_keyframes(rows, excluded=excluded)
    assert [(k.video_id, k.timestamp) for k in keyframes] == [
        ("-5KQ66BBWC4", 902), ("-5KQ66BBWC4", 903), ("_145Aa_xkuE", 1202)]  # 0904 is excluded
    first = keyframes[0]
    np.testing.assert_array_equal(first.boxes, np.array([[0.077, 0.151, 0.283, 0.811], [0.226, 0.032, 0.366, 0.497]],
                                                        np.float32))
    assert first.actions == (frozenset({80, 12}), frozenset({12, 17, 79}))
    np.testing.assert_array_equal(first.scores, np.ones(2, np.float32))
    assert keyframes[1].actions == (frozenset({12}),)
    assert keyframes[2].actions == (frozenset({11, 74}), frozenset({17}))
    assert [len(k.boxes) for k in group_ava_keyframes(rows)] == [2, 1, 1, 2]  # nothing excluded: 0904 stays


def test_group_ava_keyframes_drops_low_scoring_person_boxes():
    rows = read_ava_csv(FIXTURES / "ava_detection_val_boxes_and_labels.csv", kind="detections")
    excluded = read_ava_excluded_timestamps(FIXTURES / "ava_val_excluded_timestamps_v2.2.csv")
    keyframes = group_ava_keyframes(rows, excluded=excluded, min_score=0.9)
    assert [(k.video_id, k.timestamp) for k in keyframes] == [("-5KQ66BBWC4", 902), ("_145Aa_xkuE", 1202)]
    np.testing.assert_array_equal(keyframes[0].boxes, np.array([[0.079, 0.152, 0.28, 0.814], [0.223, 0.03, 0.37, 0.5]],
                                                               np.float32))
    np.testing.assert_array_equal(keyframes[0].scores, np.array([0.998211, 0.981052], np.float32))
    assert keyframes[0].actions == (frozenset(), frozenset())
    np.testing.assert_array_equal(keyframes[1].scores, np.array([0.999104], np.float32))
    assert [len(k.boxes) for k in group_ava_keyframes(rows)] == [3, 1, 1]  # no threshold, nothing excluded


# --------------------------------------------------------------------------- download trees


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """The ci preset's synthetic AVA-style and Epic-style sets, already in the project layouts."""
    root = tmp_path_factory.mktemp("synthetic")
    ensure_transfer_sets(root, resolve_config("ci").synthetic, progress=False)
    return root


@pytest.fixture(scope="module")
def cfg():
    return resolve_config("ci").synthetic


def _ava_download(synthetic: Path, root: Path) -> tuple[Path, Path]:
    """AVA v2.2 as downloaded: the annotation files of ava_v2.2.zip and videos/trainval/<id>.<ext>.

    Two ids become real-looking ones; '-5KQ66BBWC4' comes as .mkv; synava00002 (train) is not
    downloaded; synava00004 (val) is garbage.
    """
    annotations, videos = root / "ava_v2.2", root / "videos" / "trainval"
    annotations.mkdir(parents=True)
    videos.mkdir(parents=True)
    for path in sorted((synthetic / "ava" / "annotations").iterdir()):
        text = path.read_text()
        for old, new in REAL_IDS.items():
            text = text.replace(old, new)
        (annotations / path.name).write_text(text)
    for path in sorted((synthetic / "ava" / "videos" / "trainval").iterdir()):
        shutil.copyfile(path, videos / f"{REAL_IDS.get(path.stem, path.stem)}.mp4")
    mp4 = videos / "-5KQ66BBWC4.mp4"
    write_video(videos / "-5KQ66BBWC4.mkv", read_frames(mp4, np.arange(probe(mp4).num_frames)), fps=25)
    mp4.unlink()
    (videos / "synava00002.mp4").unlink()
    (videos / "synava00004.mp4").write_bytes(b"\x00garbage" * 50)
    return annotations, videos


def _epic_download(synthetic: Path, root: Path) -> tuple[Path, Path]:
    """Epic-Kitchens-55 as downloaded: the annotations repository and videos/train/<P>/<id>.MP4.

    P02_01 lies flat in videos/train; P01_03 is not downloaded; P01_02 is cut short (undecodable).
    """
    source = synthetic / "epic_kitchens"
    annotations = root / "epic-kitchens-55-annotations"
    shutil.copytree(source / "annotations", annotations)
    videos = root / "EPIC_KITCHENS_2018" / "videos" / "train"
    shutil.copytree(source / "videos" / "train", videos)
    assert sorted(p.stem for p in videos.rglob("*.MP4")) == EPIC_VIDEOS  # the ci preset this test is written for
    (videos / "P02" / "P02_01.MP4").rename(videos / "P02_01.MP4")
    (videos / "P02").rmdir()
    (videos / "P01" / "P01_03.MP4").unlink()
    truncated = videos / "P01" / "P01_02.MP4"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    return annotations, videos


# --------------------------------------------------------------------------- AVA v2.2


def test_ava_symlinked_layout_manifest_and_quarantine(synthetic, cfg, tmp_path):
    annotations, videos = _ava_download(synthetic, tmp_path / "dl")
    out = tmp_path / "data" / "ava"
    result = run_prepare_script("prepare_ava.py", "--annotations", str(annotations), "--videos", str(videos.parent), "--out", str(out))
    assert result.returncode == 0, result.stderr
    listed = cfg.ava_train_videos + cfg.ava_val_videos
    assert f"ava: {listed} listed, {listed - 1} present, {listed - 2} ok (symlink)" in result.stdout

    manifest = read_manifest(out)
    assert manifest["dataset"] == "ava" and manifest["layout"] == "symlink"
    assert manifest["sources"] == {"videos": str(videos.parent), "splits": str(annotations)}
    assert manifest["counts"] == {"listed": listed, "present": listed - 1, "missing": 1, "empty": 0, "undecodable": 1,
                                  "truncated": 0, "too_short": 0, "ok": listed - 2}
    assert manifest["split_files"] == {f"annotations/{name}": _sha(annotations / name)
                                       for name in sorted(AVA_REQUIRED + AVA_PERSON_BOXES)}
    train_rows = read_ava_csv(out / "annotations" / "ava_train_v2.2.csv")
    assert manifest["annotations"]["actions"] == len(MOTION_CLASSES)
    assert manifest["annotations"]["train"]["videos"] == cfg.ava_train_videos
    assert manifest["annotations"]["train"]["rows"] == len(train_rows)
    assert manifest["annotations"]["train"]["excluded_keyframes"] == 1  # the generator excludes one in video 1
    assert manifest["annotations"]["val"]["videos"] == cfg.ava_val_videos

    by_path = {e["path"]: e for e in manifest["videos"]}
    assert set(by_path) == {"videos/trainval/-5KQ66BBWC4.mkv", "videos/trainval/_145Aa_xkuE.mp4",
                            "videos/trainval/synava00002.mp4", "videos/trainval/synava00003.mp4",
                            "videos/trainval/synava00004.mp4"}
    assert by_path["videos/trainval/-5KQ66BBWC4.mkv"] == {
        "path": "videos/trainval/-5KQ66BBWC4.mkv", "frames": cfg.ava_seconds * cfg.fps, "fps": float(cfg.fps),
        "height": cfg.ava_frame_size, "width": cfg.ava_frame_size, "problem": None, "detail": None}
    assert read_quarantine(out) == {("videos/trainval/synava00002.mp4", "missing"),
                                ("videos/trainval/synava00004.mp4", "undecodable")}

    # What the detection loader reads: the copied annotations, and one link per downloaded video.
    for name in AVA_REQUIRED + AVA_PERSON_BOXES:
        assert (out / "annotations" / name).read_bytes() == (annotations / name).read_bytes()
    linked = out / "videos" / "trainval" / "_145Aa_xkuE.mp4"
    assert linked.is_symlink() and linked.resolve() == (videos / "_145Aa_xkuE.mp4").resolve()
    assert sorted(p.name for p in (out / "videos" / "trainval").iterdir()) == [
        "-5KQ66BBWC4.mkv", "_145Aa_xkuE.mp4", "synava00003.mp4", "synava00004.mp4"]
    assert {r.video_id for r in train_rows} == {"-5KQ66BBWC4", "_145Aa_xkuE", "synava00002"}


def test_ava_short_side_reencodes_and_a_later_run_will_not_hide_behind_it(synthetic, cfg, tmp_path):
    annotations, videos = _ava_download(synthetic, tmp_path / "dl")
    out = tmp_path / "small"
    manifest = prepare_dataset("ava", out=out, videos=videos, splits=annotations, short_side=16, progress=False)
    ok = [e for e in manifest["videos"] if e["problem"] is None]
    assert sorted(e["path"] for e in ok) == ["videos/trainval/-5KQ66BBWC4.mp4", "videos/trainval/_145Aa_xkuE.mp4",
                                             "videos/trainval/synava00003.mp4"]  # the .mkv became H.264 .mp4
    assert {(e["height"], e["width"], e["frames"]) for e in ok} == {(16, 16, cfg.ava_seconds * cfg.fps)}
    reencoded = out / "videos" / "trainval" / "-5KQ66BBWC4.mp4"
    assert reencoded.is_file() and not reencoded.is_symlink()
    assert probe(reencoded, backend="pyav").num_frames == cfg.ava_seconds * cfg.fps
    # Linking the .mkv now would leave the re-encoded .mp4 first in the loader's order: refused, not hidden.
    with pytest.raises(PrepareError, match=r"-5KQ66BBWC4.mp4' would be read instead of '.*-5KQ66BBWC4.mkv'"):
        prepare_dataset("ava", out=out, videos=videos, splits=annotations, progress=False)


def test_ava_copy_replaces_an_earlier_link_the_loader_would_read_first(synthetic, tmp_path):
    annotations, videos = _ava_download(synthetic, tmp_path / "dl")
    out = tmp_path / "data" / "ava"
    prepare_dataset("ava", out=out, videos=videos, splits=annotations, progress=False)
    assert (out / "videos" / "trainval" / "_145Aa_xkuE.mp4").is_symlink()
    # The video comes again in another container, its extension in capitals: placed as the loader spells it.
    (videos / "_145Aa_xkuE.mp4").rename(videos / "_145Aa_xkuE.WEBM")
    manifest = prepare_dataset("ava", out=out, videos=videos, splits=annotations, copy=True, progress=False)
    placed = out / "videos" / "trainval" / "_145Aa_xkuE.webm"
    assert placed.is_file() and not placed.is_symlink()
    assert not (out / "videos" / "trainval" / "_145Aa_xkuE.mp4").exists()
    assert manifest["layout"] == "copy" and "videos/trainval/_145Aa_xkuE.webm" in {e["path"] for e in manifest["videos"]}
    assert [Path(r.path).name for r in LAYOUTS["ava"].list_records(out)][:2] == ["-5KQ66BBWC4.mkv", "_145Aa_xkuE.webm"]


@pytest.mark.parametrize("damage, message", [
    (lambda ann: (ann / "ava_val_excluded_timestamps_v2.2.csv").unlink(),
     "lacks ava_val_excluded_timestamps_v2.2.csv (AVA v2.2's annotation files, as in ava_v2.2.zip)"),
    (lambda ann: (ann / "ava_train_v2.2.csv").write_text("-5KQ66BBWC4,0001,0.1,0.1,0.5,0.5,3,0\n-5KQ66BBWC4,0001\n"),
     "ava_train_v2.2.csv' line 2: 2 fields"),
    (lambda ann: (ann / "ava_val_v2.2.csv").write_text("synava00003,0001,0.1,0.1,0.5,0.5,99,0\n"),
     "ava_val_v2.2.csv' uses action ids [99] that"),
], ids=["missing-file", "short-row", "unknown-action"])
def test_ava_bad_annotations_exit_2_with_a_message(synthetic, tmp_path, capsys, damage, message):
    annotations, videos = _ava_download(synthetic, tmp_path / "dl")
    damage(annotations)
    out = tmp_path / "o"
    code, _, stderr = prepare_main(capsys, "ava", "--annotations", str(annotations), "--videos", str(videos), "--out", str(out))
    assert code == 2 and stderr.startswith("error: ") and message in stderr
    assert not (out / "manifest.json").exists()


# --------------------------------------------------------------------------- Epic-Kitchens-55


def test_epic_layout_default_split_and_quarantine(synthetic, cfg, tmp_path):
    annotations, videos = _epic_download(synthetic, tmp_path / "dl")
    out = tmp_path / "data" / "epic_kitchens"
    result = run_prepare_script("prepare_epic_kitchens.py", "--annotations", str(annotations), "--videos", str(videos),
                  "--out", str(out), "--strict")
    assert result.returncode == 1, result.stderr  # --strict: one missing and one undecodable video
    assert "epic_kitchens: 5 listed, 4 present, 3 ok (symlink)" in result.stdout
    assert f"anticipation split: 4 train, 1 val videos (default: {DEFAULT_SPLIT_RULE})" in result.stdout
    assert "pass --val-videos FILE" in result.stdout

    # P01 has 4 videos: its last is held out; P02 has 1 and keeps it for training.
    splits = out / "splits"
    assert (splits / "anticipation_val_videos.txt").read_text() == "P01_04\n"
    assert (splits / "anticipation_train_videos.txt").read_text() == "P01_01\nP01_02\nP01_03\nP02_01\n"
    manifest = read_manifest(out)
    assert manifest["anticipation_split"] == {"source": f"default: {DEFAULT_SPLIT_RULE}", "train": 4, "val": 1}
    assert manifest["counts"] == {"listed": 5, "present": 4, "missing": 1, "empty": 0, "undecodable": 1,
                                  "truncated": 0, "too_short": 0, "ok": 3}
    assert manifest["split_files"] == {
        **{f"annotations/{p.name}": _sha(p) for p in sorted(annotations.iterdir())},
        "splits/anticipation_train_videos.txt": _sha(splits / "anticipation_train_videos.txt"),
        "splits/anticipation_val_videos.txt": _sha(splits / "anticipation_val_videos.txt"),
    }
    segments = read_epic_action_labels(annotations / "EPIC_train_action_labels.csv")
    assert manifest["annotations"] == {
        "segments": 5 * cfg.epic_segments, "videos": 5, "participants": 2,
        "verb_classes_used": len({s.verb_class for s in segments}), "noun_classes_used": len({s.noun_class for s in segments}),
        "verb_classes": len(MOTION_CLASSES), "noun_classes": len(SHAPES),
    }
    assert {e["path"] for e in manifest["videos"]} == {f"videos/train/{v[:3]}/{v}.MP4" for v in EPIC_VIDEOS}
    assert read_quarantine(out) == {("videos/train/P01/P01_03.MP4", "missing"),
                                ("videos/train/P01/P01_02.MP4", "undecodable")}
    flat = out / "videos" / "train" / "P02" / "P02_01.MP4"  # the flat download goes into its participant's folder
    assert flat.is_symlink() and flat.resolve() == (videos / "P02_01.MP4").resolve()
    assert read_frames(flat, [0]).shape == (1, cfg.frame_size, cfg.frame_size, 3)


def test_epic_val_videos_short_side_and_kept_lists(synthetic, cfg, tmp_path, capsys):
    annotations, videos = _epic_download(synthetic, tmp_path / "dl")
    out = tmp_path / "data" / "epic_kitchens"
    val_file = tmp_path / "epic_baseline_val.txt"
    val_file.write_text("# the validation videos\nP02_01\n\nP01_02\n")
    code, stdout, stderr = prepare_main(capsys, "epic_kitchens", "--annotations", str(annotations), "--videos", str(videos),
                                 "--out", str(out), "--val-videos", str(val_file), "--short-side", "16")
    assert code == 0, stderr
    assert f"anticipation split: 3 train, 2 val videos (--val-videos {val_file})" in stdout
    assert "pass --val-videos FILE" not in stdout
    lists = {s: out / "splits" / f"anticipation_{s}_videos.txt" for s in ("train", "val")}
    assert lists["val"].read_text() == "P01_02\nP02_01\n"
    assert lists["train"].read_text() == "P01_01\nP01_03\nP01_04\n"
    manifest = read_manifest(out)
    ok = sorted((e["path"], e["height"], e["width"], e["frames"]) for e in manifest["videos"] if e["problem"] is None)
    frames = {v: probe(synthetic / "epic_kitchens" / "videos" / "train" / v[:3] / f"{v}.MP4").num_frames
              for v in ("P01_01", "P01_04", "P02_01")}
    assert ok == [(f"videos/train/{v[:3]}/{v}.MP4", 16, 16, n) for v, n in sorted(frames.items())]
    reencoded = out / "videos" / "train" / "P02" / "P02_01.MP4"
    assert reencoded.is_file() and not reencoded.is_symlink()
    assert probe(reencoded, backend="pyav").num_frames == frames["P02_01"]

    # A re-run without --val-videos keeps the lists it finds; a bad --val-videos names its file and ids.
    code, stdout, _ = prepare_main(capsys, "epic_kitchens", "--annotations", str(annotations), "--videos", str(videos),
                            "--out", str(out), "--short-side", "16")
    assert code == 0 and "(kept the existing lists)" in stdout
    assert lists["val"].read_text() == "P01_02\nP02_01\n"
    val_file.write_text("P01_04\nP09_99\n")
    code, _, stderr = prepare_main(capsys, "epic_kitchens", "--annotations", str(annotations), "--videos", str(videos),
                            "--out", str(out), "--val-videos", str(val_file))
    assert code == 2 and f"--val-videos '{val_file}' names 1 videos" in stderr and "['P09_99']" in stderr
    assert lists["val"].read_text() == "P01_02\nP02_01\n"  # untouched by the failed run


def test_epic_verified_in_place_keeps_the_synthetic_split(synthetic, tmp_path, capsys):
    root = tmp_path / "epic_kitchens"
    shutil.copytree(synthetic / "epic_kitchens", root)
    before = {p.name: p.read_bytes() for p in (root / "splits").iterdir()}
    code, stdout, stderr = prepare_main(capsys, "epic_kitchens", "--out", str(root))
    assert code == 0, stderr
    assert "epic_kitchens: 5 listed, 5 present, 5 ok (in place)" in stdout
    assert {p.name: p.read_bytes() for p in (root / "splits").iterdir()} == before
    manifest = read_manifest(root)
    assert manifest["anticipation_split"]["source"] == "kept the existing lists"
    assert read_quarantine(root) == set()
    with pytest.raises(ValueError, match="val_videos='v.txt' applies to epic_kitchens only, not ava"):
        prepare_dataset("ava", out=tmp_path / "ava", val_videos="v.txt")


def test_epic_missing_labels_and_a_split_without_validation(synthetic, tmp_path, capsys):
    annotations, videos = _epic_download(synthetic, tmp_path / "dl")
    (annotations / "EPIC_train_action_labels.csv").rename(annotations / "labels.csv")
    code, _, stderr = prepare_main(capsys, "epic_kitchens", "--annotations", str(annotations), "--videos", str(videos),
                            "--out", str(tmp_path / "o"))
    assert code == 2 and "lacks EPIC_train_action_labels.csv (Epic-Kitchens-55's action labels" in stderr
    # Only P02's one video left: the default cannot hold any out, and says what to pass instead.
    labels = (annotations / "labels.csv").read_text().splitlines()
    (annotations / "EPIC_train_action_labels.csv").write_text("\n".join([labels[0]] + [r for r in labels if ",P02," in r]))
    with pytest.raises(PrepareError, match="leaves no val videos .* among the 1 videos .*pass --val-videos"):
        prepare_dataset("epic_kitchens", out=tmp_path / "o", videos=videos, splits=annotations, progress=False)
