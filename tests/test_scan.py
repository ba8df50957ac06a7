"""Tests of vthcl_lib.scan: each kind of bad video, the quarantine TSV, the command line's exit codes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vthcl_lib.datasets import VideoRecord
from vthcl_lib.scan import PROBLEMS, QUARANTINE_HEADER, check_video, scan_videos
from vthcl_lib.video import write_video

NUM_FRAMES = 30


def _frames(num_frames: int, seed: int = 0, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, size, size, 3), dtype=np.uint8)
    shift = (np.arange(num_frames) * 5 % 255).astype(np.uint8)[:, None, None, None]
    return base + shift  # content changes every frame, as in a real video


@pytest.fixture(scope="module")
def video_zoo(tmp_path_factory) -> dict[str, Path]:
    """One file per verdict (good ones in three containers)."""
    root = tmp_path_factory.mktemp("zoo")
    zoo = {
        "good_avi": write_video(root / "good.avi", _frames(NUM_FRAMES)),
        "good_mp4": write_video(root / "good.mp4", _frames(NUM_FRAMES, 1)),
        "good_webm": write_video(root / "good.webm", _frames(NUM_FRAMES, 2)),
        "short": write_video(root / "short.avi", _frames(5, 3)),
        "missing": root / "missing.avi",
        "empty": root / "empty.avi",
        "random": root / "random.avi",
        "text": root / "text.avi",
        "truncated": root / "truncated.avi",
    }
    zoo["empty"].write_bytes(b"")
    zoo["random"].write_bytes(np.random.default_rng(4).bytes(4000))
    zoo["text"].write_text("this is a text file, not a video\n" * 20)
    data = write_video(root / "whole.avi", _frames(NUM_FRAMES, 5)).read_bytes()
    zoo["truncated"].write_bytes(data[: int(len(data) * 0.6)])
    return zoo


EXPECTED = {
    "good_avi": None, "good_mp4": None, "good_webm": None, "short": "too_short", "missing": "missing",
    "empty": "empty", "random": "undecodable", "text": "undecodable", "truncated": "truncated",
}


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_scan_gives_each_file_its_verdict(video_zoo, backend):
    report = scan_videos(list(video_zoo.values()), min_frames=10, backend=backend, progress=False)
    verdicts = {name: check.problem for name, check in zip(video_zoo, report.checks)}
    assert verdicts == EXPECTED
    assert report.ok == 3 and report.total == len(video_zoo)
    assert report.counts == {"missing": 1, "empty": 1, "undecodable": 2, "truncated": 1, "too_short": 1}
    assert list(report.counts) == list(PROBLEMS)
    assert {bad.path for bad in report.bad} == {video_zoo[n] for n, p in EXPECTED.items() if p}


def test_truncated_avi_is_found_although_decord_counts_only_what_is_left(video_zoo):
    # A cut MPEG-4 AVI loses its index: decord alone would report the few frames left as a valid,
    # shorter video, so probe compares its count with the header's declared count (30).
    check = check_video(video_zoo["truncated"], backend="decord")
    assert check.problem == "truncated"
    assert f"truncated: the container declares {NUM_FRAMES} frames, decord finds" in check.detail
    # PyAV's probe trusts the header, so there the last frame is what fails.
    pyav = check_video(video_zoo["truncated"], backend="pyav")
    assert pyav.problem == "truncated" and pyav.detail.startswith(f"last frame ({NUM_FRAMES - 1})")


def test_good_video_reports_its_probe_and_full_count(video_zoo):
    check = check_video(video_zoo["good_mp4"])
    assert check.problem is None and check.detail == ""
    assert check.decodable_frames == NUM_FRAMES == check.num_frames
    assert (check.info.height, check.info.width, round(check.info.fps)) == (32, 32, 25)
    assert check_video(video_zoo["short"], min_frames=5).problem is None  # exactly min_frames is enough
    assert "5 frames, fewer than min_frames=6" in check_video(video_zoo["short"], min_frames=6).detail


def test_bad_verdicts_name_the_reason(video_zoo):
    assert check_video(video_zoo["missing"]).detail == "file does not exist"
    assert check_video(video_zoo["empty"]).detail == "file is empty (0 bytes)"
    assert "decord" in check_video(video_zoo["text"]).detail


def test_scan_accepts_records_and_keeps_their_order(video_zoo):
    records = [VideoRecord(video_zoo["missing"], "a"), VideoRecord(video_zoo["good_avi"], "b", label=0)]
    report = scan_videos(records, progress=False)
    assert [c.path for c in report.checks] == [video_zoo["missing"], video_zoo["good_avi"]]
    assert [c.problem for c in report.checks] == ["missing", None]


def test_scan_in_worker_processes_agrees_with_the_serial_scan(video_zoo):
    paths = [video_zoo[name] for name in ("good_avi", "truncated", "random", "short")]
    serial = scan_videos(paths, min_frames=10, progress=False)
    pooled = scan_videos(paths, min_frames=10, progress=False, workers=2)
    assert [(c.path, c.problem, c.detail) for c in pooled.checks] == [(c.path, c.problem, c.detail) for c in serial.checks]


def test_quarantine_tsv_lists_the_bad_files(video_zoo, tmp_path):
    report = scan_videos(list(video_zoo.values()), min_frames=10, progress=False)
    out = report.write_quarantine(tmp_path / "q" / "quarantine.tsv")
    lines = out.read_text().splitlines()
    assert lines[0] == QUARANTINE_HEADER
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(row) == 3 and row[2] for row in rows)
    assert {(Path(r[0]), r[1]) for r in rows} == {(video_zoo[n], p) for n, p in EXPECTED.items() if p}
    relative = report.write_quarantine(tmp_path / "rel.tsv", relative_to=video_zoo["good_avi"].parent)
    assert "empty.avi\tempty\tfile is empty (0 bytes)" in relative.read_text().splitlines()
    clean = scan_videos([video_zoo["good_avi"]], progress=False).write_quarantine(tmp_path / "clean.tsv")
    assert clean.read_text() == QUARANTINE_HEADER + "\n"


def test_summary_is_readable(video_zoo):
    report = scan_videos([video_zoo["good_avi"], video_zoo["empty"], video_zoo["random"]], progress=False)
    text = report.summary()
    assert text.splitlines()[0] == "scanned 3 videos: 1 ok, 2 bad"
    assert "empty        1" in text and "undecodable  1" in text and "truncated" not in text
    assert f"[empty] {video_zoo['empty']}: file is empty (0 bytes)" in text
    assert "... and 1 more" in report.summary(max_listed=1)


def test_bad_arguments_are_named(video_zoo):
    with pytest.raises(ValueError, match="backend='ffmpeg'"):
        scan_videos([video_zoo["good_avi"]], backend="ffmpeg")
    with pytest.raises(ValueError, match="min_frames=0"):
        scan_videos([video_zoo["good_avi"]], min_frames=0)
    with pytest.raises(TypeError, match="records with a .path"):
        scan_videos([42])


# --------------------------------------------------------------------------- command line


def _ucf_tree(root: Path) -> Path:
    """A 2-class, 2-group UCF-101-style root with CRLF lists."""
    ucf = root / "ucf101"
    classes = ["ApplyLipstick", "Biking"]
    lines = {"train": [], "test": []}
    for cid, name in enumerate(classes, start=1):
        for group in (1, 2):
            rel = f"{name}/v_{name}_g{group:02d}_c01.avi"
            write_video(ucf / "UCF-101" / rel, _frames(20, cid * 10 + group))
            lines["test" if group == 1 else "train"].append(rel if group == 1 else f"{rel} {cid}")
    lists = ucf / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_bytes("".join(f"{k} {c}\r\n" for k, c in enumerate(classes, 1)).encode())
    for k in (1, 2, 3):
        (lists / f"trainlist0{k}.txt").write_bytes("".join(f"{x}\r\n" for x in lines["train"]).encode())
        (lists / f"testlist0{k}.txt").write_bytes("".join(f"{x}\r\n" for x in lines["test"]).encode())
    return ucf


def _run_scan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vthcl_lib.scan", "--no-progress", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_exit_codes_and_quarantine_file(tmp_path):
    ucf = _ucf_tree(tmp_path / "R")
    out = tmp_path / "q.tsv"
    good = _run_scan("--dataset", "ucf101", "--root", str(tmp_path / "R"), "--out", str(out))
    assert good.returncode == 0, good.stderr
    assert "scanned 4 videos: 4 ok, 0 bad" in good.stdout
    assert out.read_text() == QUARANTINE_HEADER + "\n"

    broken = ucf / "UCF-101" / "Biking" / "v_Biking_g02_c01.avi"
    broken.write_bytes(b"not a video")
    bad = _run_scan("--dataset", "ucf101", "--root", str(ucf), "--subset", "train", "--out", str(out), "--backend", "pyav")
    assert bad.returncode == 1, bad.stderr
    assert "scanned 2 videos: 1 ok, 1 bad" in bad.stdout
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    assert [(Path(r[0]), r[1]) for r in rows] == [(broken, "undecodable")]

    wrong = _run_scan("--dataset", "hmdb51", "--root", str(ucf), "--out", str(tmp_path / "x.tsv"))
    assert wrong.returncode == 2
    assert "testTrainMulti_7030_splits" in wrong.stderr and "does not exist" in wrong.stderr
    assert not (tmp_path / "x.tsv").exists()


def test_cli_kinetics_missing_video_and_min_frames(tmp_path):
    k400 = tmp_path / "kinetics400"
    write_video(k400 / "train" / "biking" / "syn00000001_000000_000001.mp4", _frames(20))
    (k400 / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "biking,syn00000001,0,1,train\n"
        "biking,syn00000002,0,1,train\n"
    )
    out = tmp_path / "q.tsv"
    result = _run_scan("--dataset", "kinetics400", "--root", str(k400), "--min-frames", "25", "--out", str(out))
    assert result.returncode == 1
    problems = sorted(line.split("\t")[1] for line in out.read_text().splitlines()[1:])
    assert problems == ["missing", "too_short"]
