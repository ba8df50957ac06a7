"""Tests of vthcl_lib.prepare and the data_scripts/prepare_*.py command lines on tiny "download" trees."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import prepare_main, read_manifest, read_quarantine, run_prepare_script
from vthcl_lib.datasets import read_hmdb51_split, read_kinetics_csv, read_ucf101_split
from vthcl_lib.prepare import PrepareError, prepare_dataset, short_side_size
from vthcl_lib.video import probe, read_frames, write_video

NUM_FRAMES = 20
HEIGHT, WIDTH = 32, 64  # not square, so --short-side must keep the aspect ratio (decord fails on widths 16, 24, 48, 72)


def _frames(seed: int, num_frames: int = NUM_FRAMES) -> np.ndarray:
    base = np.random.default_rng(seed).integers(0, 255, (1, HEIGHT, WIDTH, 3), dtype=np.uint8)
    return base + (np.arange(num_frames) * 7 % 255).astype(np.uint8)[:, None, None, None]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()






# --------------------------------------------------------------------------- download trees

UCF_CLASSES = ["ApplyEyeMakeup", "Biking"]


def _ucf_download(root: Path) -> tuple[Path, Path]:
    """UCF-101 as extracted: 2 classes x 3 groups x 1 clip, CRLF lists; one video absent, one garbage."""
    videos, lists = root / "UCF-101", root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    entries = []
    for cid, name in enumerate(UCF_CLASSES, start=1):
        for group in (1, 2, 3):
            rel = f"{name}/v_{name}_g{group:02d}_c01.avi"
            entries.append((cid, group, rel))
            write_video(videos / rel, _frames(cid * 10 + group))
    (videos / "Biking" / "v_Biking_g03_c01.avi").unlink()  # listed but not downloaded
    (videos / "Biking" / "v_Biking_g02_c01.avi").write_bytes(b"\x00garbage" * 50)
    (lists / "classInd.txt").write_bytes("".join(f"{k} {c}\r\n" for k, c in enumerate(UCF_CLASSES, 1)).encode())
    for split in (1, 2, 3):  # chunk = max(1, round(3 * 7 / 25)) = 1 group per test split
        train = "".join(f"{rel} {cid} \r\n" for cid, g, rel in entries if g != split)
        test = "".join(f"{rel}\r\n" for cid, g, rel in entries if g == split)
        (lists / f"trainlist0{split}.txt").write_bytes(train.encode())
        (lists / f"testlist0{split}.txt").write_bytes(test.encode())
    return videos, lists


def _hmdb_download(root: Path) -> tuple[Path, Path]:
    """HMDB-51 as extracted: <class>/<video>.avi, 2 classes x 3 videos; one too short."""
    videos, splits = root / "hmdb51", root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for cid, name in enumerate(["brush_hair", "cartwheel"]):
        names = [f"{name}_clip{k}_f_cm_np1_fr_med_{k}.avi" for k in range(3)]
        for k, video in enumerate(names):
            frames = _frames(cid * 10 + k, num_frames=6 if (cid, k) == (1, 2) else NUM_FRAMES)
            write_video(videos / name / video, frames)
        for split in (1, 2, 3):
            tags = ["1", "1", "2"] if split != 2 else ["2", "1", "1"]
            (splits / f"{name}_test_split{split}.txt").write_text("".join(f"{v} {t} \n" for v, t in zip(names, tags)))
    return videos, splits


def _kinetics_download(root: Path) -> Path:
    """Kinetics as downloaded: label folders for train, flat val, one .webm, one id-only name, one absent."""
    k400 = root / "kinetics400"
    (k400).mkdir(parents=True)
    (k400 / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "riding a bike,aaaaaaaaaaa,10,20,train\n"
        "riding a bike,bbbbbbbbbbb,0,10,train\n"
        "juggling,ccccccccccc,5,15,train\n"
        "juggling,ddddddddddd,0,10,train\n"
    )
    (k400 / "val.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "juggling,eeeeeeeeeee,0,10,val\n"
    )
    write_video(k400 / "train" / "riding a bike" / "aaaaaaaaaaa_000010_000020.mp4", _frames(1))
    write_video(k400 / "train" / "riding a bike" / "bbbbbbbbbbb_000000_000010.webm", _frames(2))
    write_video(k400 / "train" / "juggling" / "ccccccccccc.mp4", _frames(3))  # id-only file name
    write_video(k400 / "val" / "eeeeeeeeeee_000000_000010.mp4", _frames(5))  # no label folder
    return k400


# --------------------------------------------------------------------------- UCF-101


def test_ucf101_symlinked_layout_manifest_and_quarantine(tmp_path, capsys):
    videos, lists = _ucf_download(tmp_path / "dl")
    out = tmp_path / "data" / "ucf101"
    result = run_prepare_script("prepare_ucf101.py", "--videos", str(videos), "--splits", str(lists), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "ucf101: 6 listed, 5 present, 4 ok (symlink)" in result.stdout

    manifest = read_manifest(out)
    assert manifest["dataset"] == "ucf101" and manifest["layout"] == "symlink"
    assert manifest["sources"] == {"videos": str(videos), "splits": str(lists)}
    assert manifest["counts"] == {
        "listed": 6, "present": 5, "missing": 1, "empty": 0, "undecodable": 1, "truncated": 0, "too_short": 0, "ok": 4
    }
    assert manifest["split_files"] == {f"ucfTrainTestlist/{p.name}": _sha(p) for p in sorted(lists.iterdir())}
    assert len(manifest["split_files"]) == 7 and manifest["created"].endswith("+00:00")
    by_path = {e["path"]: e for e in manifest["videos"]}
    assert len(by_path) == 6
    good = by_path["UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"]
    assert good == {"path": good["path"], "frames": NUM_FRAMES, "fps": 25.0, "height": HEIGHT, "width": WIDTH,
                    "problem": None, "detail": None}
    assert by_path["UCF-101/Biking/v_Biking_g03_c01.avi"]["problem"] == "missing"
    assert by_path["UCF-101/Biking/v_Biking_g02_c01.avi"]["problem"] == "undecodable"
    assert read_quarantine(out) == {("UCF-101/Biking/v_Biking_g03_c01.avi", "missing"),
                                ("UCF-101/Biking/v_Biking_g02_c01.avi", "undecodable")}

    # The parsers read the laid-out copy; its files are links into the download.
    records, classes = read_ucf101_split(out, split=1, subset="train")
    assert classes == UCF_CLASSES and len(records) == 4
    linked = out / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g02_c01.avi"
    assert linked.is_symlink() and linked.resolve() == (videos / linked.relative_to(out / "UCF-101")).resolve()
    assert read_frames(linked, [0, NUM_FRAMES - 1]).shape == (2, HEIGHT, WIDTH, 3)
    assert (out / "ucfTrainTestlist" / "classInd.txt").read_bytes() == (lists / "classInd.txt").read_bytes()

    # --strict turns the bad videos into exit code 1; a re-run keeps the same layout.
    code, _, _ = prepare_main(capsys, "ucf101", "--videos", str(videos), "--splits", str(lists), "--out", str(out), "--strict")
    assert code == 1 and read_manifest(out)["counts"] == manifest["counts"]


def test_ucf101_short_side_reencodes_and_keeps_frames(tmp_path):
    videos, lists = _ucf_download(tmp_path / "dl")
    out = tmp_path / "small"
    result = run_prepare_script("prepare_ucf101.py", "--videos", str(videos), "--splits", str(lists), "--out", str(out),
                  "--short-side", "16")
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(out)
    assert manifest["short_side"] == 16 and manifest["counts"]["ok"] == 4
    ok = [e for e in manifest["videos"] if e["problem"] is None]
    assert {(e["height"], e["width"], e["frames"]) for e in ok} == {(16, 32, NUM_FRAMES)}
    for entry in ok:
        path = out / entry["path"]
        assert path.suffix == ".avi" and path.is_file() and not path.is_symlink()
        assert probe(path, backend="pyav").num_frames == NUM_FRAMES
    # The bad file stays as it came (linked), so the quarantine list and the loader see it.
    assert (out / "UCF-101/Biking/v_Biking_g02_c01.avi").is_symlink()
    # The download is untouched.
    assert probe(videos / "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi").height == HEIGHT


def test_ucf101_verified_in_place(tmp_path, capsys):
    videos, lists = _ucf_download(tmp_path / "ucf101")
    out = tmp_path / "ucf101"
    code, stdout, _ = prepare_main(capsys, "ucf101", "--out", str(out))
    assert code == 0 and "(in place)" in stdout
    manifest = read_manifest(out)
    assert manifest["layout"] == "in place" and manifest["counts"]["present"] == 5
    assert manifest["sources"] == {"videos": str(videos), "splits": str(lists)}
    assert not any(p.is_symlink() for p in videos.rglob("*"))
    code, _, stderr = prepare_main(capsys, "ucf101", "--out", str(out), "--short-side", "16")
    assert code == 2 and "choose another --out" in stderr


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda lists: (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\nBiking\n"), "classInd.txt' line 2"),
        (lambda lists: (lists / "testlist02.txt").unlink(), "lacks testlist02.txt"),
        (lambda lists: (lists / "trainlist01.txt").write_text("Biking/v_Biking_g02_c01.avi 1\n"), "disagrees"),
    ],
    ids=["classind", "missing-list", "wrong-id"],
)
def test_ucf101_malformed_splits_exit_2_with_a_message(tmp_path, capsys, damage, message):
    videos, lists = _ucf_download(tmp_path / "dl")
    damage(lists)
    code, _, stderr = prepare_main(capsys, "ucf101", "--videos", str(videos), "--splits", str(lists), "--out", str(tmp_path / "o"))
    assert code == 2
    assert stderr.startswith("error: ") and message in stderr
    assert not (tmp_path / "o" / "manifest.json").exists()


# --------------------------------------------------------------------------- HMDB-51


def test_hmdb51_copied_layout(tmp_path):
    videos, splits = _hmdb_download(tmp_path / "dl")
    out = tmp_path / "data" / "hmdb51"
    result = run_prepare_script("prepare_hmdb51.py", "--videos", str(videos), "--splits", str(splits), "--out", str(out),
                  "--copy", "--min-frames", "8")
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(out)
    assert manifest["layout"] == "copy"
    assert manifest["counts"] == {
        "listed": 6, "present": 6, "missing": 0, "empty": 0, "undecodable": 0, "truncated": 0, "too_short": 1, "ok": 5
    }
    assert manifest["split_files"] == {f"testTrainMulti_7030_splits/{p.name}": _sha(p) for p in splits.iterdir()}
    assert len(manifest["split_files"]) == 6
    short = "videos/cartwheel/cartwheel_clip2_f_cm_np1_fr_med_2.avi"
    assert read_quarantine(out) == {(short, "too_short")}
    assert next(e for e in manifest["videos"] if e["path"] == short)["frames"] == 6
    records, classes = read_hmdb51_split(out, split=2, subset="test")
    assert classes == ["brush_hair", "cartwheel"] and len(records) == 2
    assert all(r.path.is_file() and not r.path.is_symlink() for r in records)


def test_hmdb51_malformed_tag_and_missing_folder(tmp_path, capsys):
    videos, splits = _hmdb_download(tmp_path / "dl")
    (splits / "cartwheel_test_split3.txt").write_text("cartwheel_clip0_f_cm_np1_fr_med_0.avi 7\n")
    bad = run_prepare_script("prepare_hmdb51.py", "--videos", str(videos), "--splits", str(splits), "--out", str(tmp_path / "o"))
    assert bad.returncode == 2 and "cartwheel_test_split3.txt' line 1" in bad.stderr
    code, _, stderr = prepare_main(capsys, "hmdb51", "--videos", str(videos), "--splits", str(tmp_path / "nope"),
                            "--out", str(tmp_path / "o"))
    assert code == 2 and "split folder" in stderr and "nope" in stderr


# --------------------------------------------------------------------------- Kinetics-400


def test_kinetics_layout_finds_videos_by_name(tmp_path):
    k400 = _kinetics_download(tmp_path / "dl")
    out = tmp_path / "data" / "kinetics400"
    result = run_prepare_script("prepare_kinetics.py", "--csv-dir", str(k400), "--videos", str(k400), "--out", str(out))
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(out)
    assert manifest["counts"] == {
        "listed": 5, "present": 4, "missing": 1, "empty": 0, "undecodable": 0, "truncated": 0, "too_short": 0, "ok": 4
    }
    assert manifest["split_files"] == {"train.csv": _sha(k400 / "train.csv"), "val.csv": _sha(k400 / "val.csv")}
    paths = {e["path"] for e in manifest["videos"]}
    assert paths == {
        "train/riding a bike/aaaaaaaaaaa_000010_000020.mp4",
        "train/riding a bike/bbbbbbbbbbb_000000_000010.webm",  # the container is kept
        "train/juggling/ccccccccccc_000005_000015.mp4",  # found by its youtube id, named canonically
        "train/juggling/ddddddddddd_000000_000010.mp4",  # missing: the canonical path
        "val/juggling/eeeeeeeeeee_000000_000010.mp4",  # placed in its label folder
    }
    assert read_quarantine(out) == {("train/juggling/ddddddddddd_000000_000010.mp4", "missing")}
    records, labels = read_kinetics_csv(out, "train")
    assert labels == ["juggling", "riding a bike"]
    assert [r.path.is_file() for r in records] == [True, True, True, False]
    assert read_frames(records[1].path, [NUM_FRAMES - 1]).shape == (1, HEIGHT, WIDTH, 3)


def test_kinetics_short_side_writes_h264_mp4(tmp_path):
    k400 = _kinetics_download(tmp_path / "dl")
    out = tmp_path / "small"
    manifest = prepare_dataset("kinetics400", out=out, videos=k400, splits=k400, short_side=16, progress=False)
    ok = [e for e in manifest["videos"] if e["problem"] is None]
    assert len(ok) == 4 and all(e["path"].endswith(".mp4") for e in ok)
    assert {(e["height"], e["width"], e["frames"]) for e in ok} == {(16, 32, NUM_FRAMES)}
    webm = out / "train/riding a bike/bbbbbbbbbbb_000000_000010.mp4"
    assert webm.is_file() and not (out / "train/riding a bike/bbbbbbbbbbb_000000_000010.webm").exists()
    records, _ = read_kinetics_csv(out, "train")
    assert records[1].path == webm
    # A second run keeps the finished re-encodes (resumable) and writes the same counts.
    before = webm.stat().st_mtime_ns
    again = prepare_dataset("kinetics400", out=out, videos=k400, splits=k400, short_side=16, progress=False)
    assert webm.stat().st_mtime_ns == before and again["counts"] == manifest["counts"]


def test_kinetics_missing_or_malformed_csv(tmp_path):
    k400 = _kinetics_download(tmp_path / "dl")
    (k400 / "train.csv").write_text("label,youtube_id\njuggling,ccccccccccc\n")
    bad = run_prepare_script("prepare_kinetics.py", "--csv-dir", str(k400), "--videos", str(k400), "--out", str(tmp_path / "o"))
    assert bad.returncode == 2 and "lacks the columns ['time_start', 'time_end']" in bad.stderr
    (k400 / "train.csv").unlink()
    with pytest.raises(PrepareError, match="lacks train.csv"):
        prepare_dataset("kinetics400", out=tmp_path / "o", videos=k400, splits=k400, progress=False)


def test_short_side_size_keeps_aspect_and_even_sizes():
    assert short_side_size(240, 320, 128) == (128, 170)
    assert short_side_size(320, 240, 128) == (170, 128)
    assert short_side_size(360, 640, 128) == (128, 228)
    with pytest.raises(ValueError, match="short_side=1"):
        short_side_size(240, 320, 1)
