"""prepare_*.py --short-side: short-GOP streaming re-encodes, parallel workers, settings in the manifest."""
from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest

import vthcl_lib.prepare as prepare
from conftest import coded_frames, decode_number, prepare_main, read_manifest
from test_prepare import _kinetics_download
from vthcl_lib.prepare import (
    DEFAULT_GOP,
    PrepareError,
    prepare_dataset,
    read_reencode_tag,
    reencode_video,
    run_reencodes,
    short_side_size,
)
from vthcl_lib.video import probe, read_frames, write_video


def keyframe_positions(path: Path) -> tuple[list[int], int]:
    """Presentation-order positions of the keyframe packets of ``path``, and its packet count."""
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=0) if p.pts is not None]
    order = sorted(range(len(packets)), key=lambda k: packets[k].pts)
    return [pos for pos, k in enumerate(order) if packets[k].is_keyframe], len(order)


def assert_gop_at_most(path: Path, gop: int) -> None:
    keys, n = keyframe_positions(path)
    assert keys[0] == 0
    gaps = np.diff(keys + [n])
    assert gaps.max() <= gop, (path, keys, n)


@pytest.fixture(scope="module")
def long_gop_source(tmp_path_factory) -> Path:
    """150 numbered frames, 48x64, H.264 at x264's default keyframe interval."""
    path = tmp_path_factory.mktemp("src") / "long_gop.mp4"
    return write_video(path, coded_frames(150), fps=30)


def test_source_has_one_keyframe_and_the_reencode_one_every_gop(long_gop_source, tmp_path):
    keys, n = keyframe_positions(long_gop_source)
    # x264's default keeps up to 250 frames between keyframes (scene cuts add a few): what --short-side kept
    assert n == 150 and np.diff(keys + [n]).max() > 2 * 16
    for name, gop in (("k.mp4", 16), ("u.avi", 16), ("d.mp4", DEFAULT_GOP)):
        result = reencode_video(long_gop_source, tmp_path / name, short_side=32, gop=gop)
        assert_gop_at_most(result.path, gop)
        assert len(keyframe_positions(result.path)[0]) >= math.ceil(150 / gop)
        info = probe(result.path, backend="pyav")
        assert (info.num_frames, info.height, info.width) == (150, 32, 42)
        assert info.fps == pytest.approx(30.0)
        assert result.frames == 150 and result.settings["gop"] == gop


def test_reencoded_frames_match_the_resized_input(long_gop_source, tmp_path):
    size = short_side_size(48, 64, 32)
    expected = read_frames(long_gop_source, range(150), backend="pyav", size=size).numpy().astype(float)
    for name in ("k.mp4", "u.avi"):
        out = reencode_video(long_gop_source, tmp_path / name, short_side=32, gop=16, chunk_frames=7).path
        got = read_frames(out, range(150), backend="pyav").numpy().astype(float)
        assert got.shape == expected.shape
        assert [decode_number(f) for f in got] == list(range(150))  # frame k is still frame k
        error = np.abs(got - expected).mean(axis=(1, 2, 3))
        assert error.max() < 8.0, (name, error.max())  # a few levels of 255 on these hard-edged 32x42 frames
        # Codec tolerance and nothing more: streaming in chunks of 7 gives the very pixels of encoding the
        # whole resized video in one go with the same codec and gop.
        direct = write_video(tmp_path / f"direct_{name}", expected.astype(np.uint8), fps=30, gop=16)
        assert np.array_equal(got, read_frames(direct, range(150), backend="pyav").numpy())
        assert np.abs(got[1:] - expected[:-1]).mean() > 2 * error.mean()  # its neighbour is much further
        # a random window read through a seek lands on the right frames too
        window = read_frames(out, [121, 125, 129, 133], backend="decord")
        assert [decode_number(f) for f in window] == [121, 125, 129, 133]


def test_the_encoder_loop_holds_one_chunk_whatever_the_length(tmp_path, monkeypatch):
    written: list[int] = []
    original = prepare.VideoWriter.write

    def spy(self, frames):
        written.append(len(frames))
        return original(self, frames)

    monkeypatch.setattr(prepare.VideoWriter, "write", spy)
    peaks = {}
    for n in (20, 203):
        source = write_video(tmp_path / f"src{n}.mp4", coded_frames(n))
        written.clear()
        result = reencode_video(source, tmp_path / f"out{n}.mp4", short_side=32, chunk_frames=8)
        assert result.frames == n and sum(written) == n
        assert result.chunks == len(written) == math.ceil(n / 8)
        assert max(written) == 8 and result.peak_frames_held == 8  # never more than one chunk of frames
        peaks[n] = result.peak_frames_held
    assert peaks[20] == peaks[203]  # ten times the length, the same memory


def test_settings_in_manifest_and_parallel_workers_give_the_same_manifest(tmp_path, capsys):
    k400 = _kinetics_download(tmp_path / "dl")
    args = ["--csv-dir", str(k400), "--videos", str(k400), "--short-side", "16", "--gop", "8", "--no-progress"]
    code, stdout, stderr = prepare_main(capsys, "kinetics400", *args, "--out", str(tmp_path / "one"))
    assert code == 0, stderr
    assert "short side 16, libx264 medium crf 23, gop 8" in stdout
    code, _, stderr = prepare_main(capsys, "kinetics400", *args, "--workers", "2", "--out", str(tmp_path / "two"))
    assert code == 0, stderr
    one, two = read_manifest(tmp_path / "one"), read_manifest(tmp_path / "two")
    assert one["reencode"] == {"short_side": 16, "codec": "libx264", "crf": 23, "preset": "medium", "gop": 8}
    one.pop("created"), two.pop("created")
    assert one == two
    ok = [e for e in one["videos"] if e["problem"] is None]
    assert len(ok) == 4
    for entry in ok:
        for out in ("one", "two"):
            path = tmp_path / out / entry["path"]
            assert_gop_at_most(path, 8)
            assert read_reencode_tag(path) == "vthcl-prepare short_side=16 codec=libx264 crf=23 preset=medium gop=8"
            assert probe(path).num_frames == entry["frames"] == 20


def test_a_rerun_keeps_same_settings_and_redoes_changed_ones(tmp_path):
    k400 = _kinetics_download(tmp_path / "dl")
    out = tmp_path / "small"
    kwargs = dict(out=out, videos=k400, splits=k400, short_side=16, progress=False)
    prepare_dataset("kinetics400", gop=8, **kwargs)
    path = out / "train/riding a bike/aaaaaaaaaaa_000010_000020.mp4"
    before = path.stat().st_mtime_ns
    prepare_dataset("kinetics400", gop=8, **kwargs)
    assert path.stat().st_mtime_ns == before  # same settings: kept
    manifest = prepare_dataset("kinetics400", gop=4, quality=30, **kwargs)
    assert path.stat().st_mtime_ns != before  # another gop: redone
    assert manifest["reencode"]["gop"] == 4 and manifest["reencode"]["crf"] == 30
    assert_gop_at_most(path, 4)
    assert "gop=4" in read_reencode_tag(path)


def test_ucf101_reencode_records_mpeg4_quantiser(tmp_path):
    from test_prepare import _ucf_download

    videos, lists = _ucf_download(tmp_path / "dl")
    manifest = prepare_dataset("ucf101", out=tmp_path / "o", videos=videos, splits=lists, short_side=16, progress=False)
    assert manifest["reencode"] == {"short_side": 16, "codec": "mpeg4", "quantiser": 4, "preset": None, "gop": 32}
    for entry in manifest["videos"]:
        if entry["problem"] is None:
            assert_gop_at_most(tmp_path / "o" / entry["path"], 32)
            tag = read_reencode_tag(tmp_path / "o" / entry["path"])  # AVI keeps the settings tag too
            assert tag == "vthcl-prepare short_side=16 codec=mpeg4 quantiser=4 preset=None gop=32"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--gop", "8"], "expected short_side (--short-side) too"),
        (["--short-side", "16", "--gop", "0"], "gop=0 must be a whole number >= 1"),
        (["--short-side", "16", "--preset", "fast"], "preset='fast' applies to H.264 (libx264) only, not mpeg4"),
        (["--short-side", "16", "--workers", "-1"], "workers=-1"),
    ],
    ids=["gop-without-short-side", "gop-zero", "preset-on-avi", "workers"],
)
def test_bad_reencode_settings_exit_2_naming_the_parameter(tmp_path, capsys, extra, message):
    from test_prepare import _ucf_download

    videos, lists = _ucf_download(tmp_path / "dl")
    code, _, stderr = prepare_main(capsys, "ucf101", "--videos", str(videos), "--splits", str(lists),
                                   "--out", str(tmp_path / "o"), *extra)
    assert code == 2 and stderr.startswith("error: ") and message in stderr, stderr
    assert not (tmp_path / "o" / "manifest.json").exists()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failed_reencode_stops_naming_the_file_and_leaves_no_partial_file(tmp_path, long_gop_source, workers):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    good_target, bad_target = tmp_path / "out" / "good.mp4", tmp_path / "out" / "bad.mp4"
    settings = prepare.reencode_settings(good_target, short_side=16)
    with pytest.raises(PrepareError, match="re-encoding '.*garbage.mp4' into '.*bad.mp4' failed") as info:
        run_reencodes([(long_gop_source, good_target), (garbage, bad_target)], settings, workers=workers,
                      progress=False)
    assert "a re-run resumes" in str(info.value)
    assert not bad_target.exists()
    leftovers = [p.name for p in (tmp_path / "out").iterdir()] if (tmp_path / "out").exists() else []
    assert all(not name.startswith(".") for name in leftovers), leftovers  # no temp file left behind


def test_decode_gop_bench_encodes_what_it_says_and_reports_ratios(tmp_path, capsys):
    """`python -m vthcl_lib.bench decode-gop` at a tiny size: the files it times have the keyframes it claims."""
    import json

    from vthcl_lib.bench import main

    out = tmp_path / "gop.json"
    code = main(["decode-gop", "--frames", "160", "--windows", "2", "--rounds", "1", "--gops", "64", "8",
                 "--size", "64", "86", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "ratio" in printed and "gop 64 single-shot / gop 8" in printed
    result = json.loads(out.read_text())
    files = result["files"]
    assert list(files) == ["gop 64", "gop 64 single-shot", "gop 8"]
    assert all(f["frames"] == 160 and f["codec"] == "libx264" for f in files.values())
    assert files["gop 8"]["largest_keyframe_gap"] <= 8
    assert files["gop 64 single-shot"]["largest_keyframe_gap"] == 64  # scene cuts off: exactly the GOP
    assert files["gop 64 single-shot"]["scene_cuts"] is False and "scene_cuts" not in files["gop 8"]
    assert result["clip_frames"] == 16 and result["size"] == [64, 86]
    for backend in ("decord", "pyav"):
        assert set(result["ratio"][backend]) == {"gop 64", "gop 64 single-shot"}
        assert all(seconds > 0 for seconds in result["seconds_per_window"][backend].values())
    with pytest.raises(SystemExit) as info:
        main(["decode-gop", "--frames", "10"])
    assert info.value.code == 2 and "--frames must be >= 64" in capsys.readouterr().err
