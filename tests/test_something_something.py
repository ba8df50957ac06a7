"""Something-Something V1: JPEG frame folders read as videos, the label CSVs as released, the synthetic set
in that format, its prepare script, and the datasets built on it (notebook 10's ICM model data)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import coded_frames, decode_number, prepare_main, read_manifest, read_quarantine, run_prepare_script
from vthcl_lib.config import resolve_config
from vthcl_lib.datasets import (
    STHV1_DIR,
    DatasetLayoutError,
    build_labeled_dataset,
    build_pretrain_dataset,
    is_sthv1_root,
    read_sthv1_labels,
    read_sthv1_split,
)
from vthcl_lib.prepare import PrepareError, prepare_dataset
from vthcl_lib.scan import check_video
from vthcl_lib.synthetic import MOTION_CLASSES
from vthcl_lib.synthetic_transfer import STHV1_TEMPLATES, ensure_transfer_sets
from vthcl_lib import synthetic_transfer
from vthcl_lib.video import FRAME_FOLDER_FPS, VideoDecodeError, count_decodable_frames, probe, read_frames

FIXTURE = Path(__file__).parent / "fixtures" / "something_something_v1"


def write_folder(folder: Path, frames: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)
    return folder


# --------------------------------------------------------------------------- a frame folder is a video


def test_frame_folder_reads_frame_accurately_in_any_order(tmp_path):
    folder = write_folder(tmp_path / "100218", coded_frames(15))
    clip = read_frames(folder, [14, 0, 3, 3, 9])
    assert clip.dtype == torch.uint8 and tuple(clip.shape) == (5, 48, 64, 3)
    assert [decode_number(f) for f in clip.numpy()] == [14, 0, 3, 3, 9]
    # both backends read a folder the same way (Pillow decodes it), and size= resizes like files
    assert read_frames(folder, [2], backend="pyav").equal(read_frames(folder, [2]))
    assert tuple(read_frames(folder, [1, 2], size=(24, 32)).shape) == (2, 24, 32, 3)


def test_frame_folder_orders_by_number_not_by_name(tmp_path):
    folder = tmp_path / "7"
    folder.mkdir()
    frames = coded_frames(11)
    for t, frame in enumerate(frames, start=1):  # unpadded names: '10.jpg' sorts before '2.jpg' as text
        Image.fromarray(frame).save(folder / f"{t}.jpg", quality=95)
    assert [decode_number(f) for f in read_frames(folder, range(11)).numpy()] == list(range(11))


def test_probe_and_count_of_a_frame_folder(tmp_path):
    folder = write_folder(tmp_path / "12", coded_frames(9, height=40, width=64))
    info = probe(folder)
    assert (info.num_frames, info.fps, info.height, info.width) == (9, FRAME_FOLDER_FPS, 40, 64)
    assert count_decodable_frames(folder) == 9


def test_frame_folder_errors_name_the_folder(tmp_path):
    empty = tmp_path / "55"
    empty.mkdir()
    with pytest.raises(VideoDecodeError, match="55.*no JPEG frames"):
        read_frames(empty, [0])
    folder = write_folder(tmp_path / "56", coded_frames(4))
    with pytest.raises(VideoDecodeError, match="56.*frame 4 requested; the folder holds 4"):
        read_frames(folder, [4])
    (folder / "cover.jpg").write_bytes(b"x")
    with pytest.raises(VideoDecodeError, match="must be numbers.*cover.jpg"):
        probe(folder)


def test_a_corrupt_jpeg_is_a_decode_error_and_the_scan_calls_the_folder_truncated(tmp_path):
    folder = write_folder(tmp_path / "57", coded_frames(6))
    (folder / "00004.jpg").write_bytes(b"\xff\xd8\xff garbage, not a JPEG")
    with pytest.raises(VideoDecodeError, match="57.*jpeg"):
        read_frames(folder, [3])
    assert count_decodable_frames(folder) == 3  # counts up to the first frame that fails
    check = check_video(folder)
    assert check.problem == "truncated" and "3 of 6" in check.detail


# --------------------------------------------------------------------------- the label CSVs as released


def test_labels_are_sorted_and_the_splits_read_in_file_order():
    assert is_sthv1_root(FIXTURE)
    labels = read_sthv1_labels(FIXTURE)
    assert labels == sorted(labels) and len(labels) == 4 and labels[0] == "Dropping something onto something"
    records, names = read_sthv1_split(FIXTURE, "train")
    assert names == labels
    assert [r.video_id for r in records] == ["100218", "48032", "7"]
    assert [names[r.label] for r in records] == [
        "Pushing something from left to right", "Holding something", "Dropping something onto something"]
    assert records[0].path == FIXTURE / "20bn-something-something-v1" / "100218"
    val, _ = read_sthv1_split(FIXTURE, "validation")
    assert [(r.video_id, names[r.label]) for r in val] == [("12", "Pushing something from right to left")]
    test, _ = read_sthv1_split(FIXTURE, "test")
    assert [(r.video_id, r.label) for r in test] == [("99", None), ("100", None)]


@pytest.mark.parametrize("line, match", [
    ("100218,Holding something", "line 1: expected '<video_id>;<label>' with a numeric id"),
    ("abc;Holding something", "line 1: expected '<video_id>;<label>' with a numeric id"),
    ("5;Juggling something", "line 1: label 'Juggling something' is not in something-something-v1-labels.csv"),
])
def test_a_bad_line_names_the_file_and_the_line(tmp_path, line, match):
    root = tmp_path / STHV1_DIR
    (root / "annotations").mkdir(parents=True)
    for name in ("labels", "validation", "test"):
        src = FIXTURE / "annotations" / f"something-something-v1-{name}.csv"
        (root / "annotations" / src.name).write_bytes(src.read_bytes())
    (root / "annotations" / "something-something-v1-train.csv").write_text(line + "\n")
    with pytest.raises(DatasetLayoutError, match=match):
        read_sthv1_split(root, "train")


def test_a_missing_list_a_repeated_video_and_an_unknown_split(tmp_path):
    root = tmp_path / STHV1_DIR
    (root / "annotations").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="something-something-v1-labels.csv' does not exist"):
        read_sthv1_labels(root)
    (root / "annotations" / "something-something-v1-labels.csv").write_text("Holding something\n")
    with pytest.raises(DatasetLayoutError, match="something-something-v1-train.csv' does not exist"):
        read_sthv1_split(root, "train")
    (root / "annotations" / "something-something-v1-train.csv").write_text("1;Holding something\n1;Holding something\n")
    with pytest.raises(DatasetLayoutError, match="line 2: video 1 is listed twice"):
        read_sthv1_split(root, "train")
    with pytest.raises(ValueError, match="split='val' is not a Something-Something V1 split"):
        read_sthv1_split(root, "val")


# --------------------------------------------------------------------------- the synthetic set


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sthv1_synthetic")
    ensure_transfer_sets(root, resolve_config("ci").synthetic, sets=("something_something_v1",), progress=False)
    return root


def test_synthetic_set_is_in_the_released_format(synthetic):
    cfg = resolve_config("ci").synthetic
    base = synthetic / STHV1_DIR
    assert synthetic_transfer.STHV1_DIR == STHV1_DIR  # the writer and the parser name one folder
    assert read_sthv1_labels(base) == sorted(STHV1_TEMPLATES[m] for m in MOTION_CLASSES)
    sizes = {"train": cfg.sthv1_train_videos, "validation": cfg.sthv1_val_videos, "test": cfg.sthv1_test_videos}
    for split, size in sizes.items():
        records, _ = read_sthv1_split(base, split)
        assert len(records) == size
        for record in records:
            info = probe(record.path)
            assert cfg.min_frames <= info.num_frames <= cfg.max_frames
            assert (info.height, info.width) == (cfg.frame_size, cfg.frame_size)
    stamp = json.loads((base / "corpus.json").read_text())
    assert stamp["counts"] == {split: {"videos": size} for split, size in sizes.items()}


def test_synthetic_set_is_deterministic(synthetic, tmp_path):
    ensure_transfer_sets(tmp_path, resolve_config("ci").synthetic, sets=("something_something_v1",), progress=False)
    a, b = synthetic / STHV1_DIR, tmp_path / STHV1_DIR
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "corpus.json")
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "corpus.json")
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_pretraining_and_labeled_datasets_read_the_frame_folders(synthetic):
    cfg = resolve_config("ci", data_root=str(synthetic), pretrain_dataset=STHV1_DIR)
    pairs = build_pretrain_dataset(cfg, progress=False)
    assert len(pairs) == cfg.synthetic.sthv1_train_videos
    slow, fast, index = pairs[0]
    assert tuple(slow.shape[1:]) == (cfg.data.window // cfg.data.tau, cfg.data.crop_size, cfg.data.crop_size)
    assert fast.shape[1] == slow.shape[1] * cfg.data.alpha and index == 0
    test = build_labeled_dataset(cfg, STHV1_DIR, 1, "test", progress=False)
    labels = [STHV1_TEMPLATES[m] for m in MOTION_CLASSES]
    val, _ = read_sthv1_split(synthetic / STHV1_DIR, "validation")
    assert len(test) == len(val) and test[0][1] == sorted(labels).index(sorted(labels)[val[0].label])
    with pytest.raises(ValueError, match="one official split"):
        build_labeled_dataset(cfg, STHV1_DIR, 2, "train", progress=False)


# --------------------------------------------------------------------------- the prepare script


def _download(synthetic: Path, root: Path) -> tuple[Path, Path]:
    import shutil

    src = synthetic / STHV1_DIR
    shutil.copytree(src / "20bn-something-something-v1", root / "20bn-something-something-v1")
    shutil.copytree(src / "annotations", root / "labels")
    return root / "20bn-something-something-v1", root / "labels"


def test_prepare_links_verifies_and_records_the_folders(synthetic, tmp_path, capsys):
    frames, labels = _download(synthetic, tmp_path / "dl")
    train, _ = read_sthv1_split(synthetic / STHV1_DIR, "train")
    broken = frames / train[1].video_id
    (sorted(broken.iterdir())[-1]).write_bytes(b"not a jpeg")  # the last frame is cut
    import shutil

    shutil.rmtree(frames / train[2].video_id)  # one listed video is missing
    out = tmp_path / "data" / STHV1_DIR
    code, stdout, _ = prepare_main(capsys, STHV1_DIR, "--videos", str(frames), "--annotations", str(labels),
                                   "--out", str(out))
    assert code == 0 and "missing" in stdout
    manifest = read_manifest(out)
    counts = manifest["counts"]
    total = sum(len(read_sthv1_split(out, s)[0]) for s in ("train", "validation", "test"))
    assert (counts["listed"], counts["present"], counts["missing"], counts["truncated"]) == (total, total - 1, 1, 1)
    assert counts["ok"] == total - 2
    assert set(manifest["split_files"]) == {f"annotations/something-something-v1-{s}.csv"
                                            for s in ("labels", "train", "validation", "test")}
    entry = next(e for e in manifest["videos"] if e["path"].endswith(train[0].video_id))
    assert entry["fps"] == FRAME_FOLDER_FPS and entry["frames"] == probe(out / entry["path"]).num_frames
    assert (out / "20bn-something-something-v1" / train[0].video_id).is_symlink()
    quarantined = {path for path, _ in read_quarantine(out)}
    assert any(p.endswith(train[1].video_id) for p in quarantined)
    assert any(p.endswith(train[2].video_id) for p in quarantined)


def test_prepare_copies_on_request_and_refuses_short_side(synthetic, tmp_path):
    frames, labels = _download(synthetic, tmp_path / "dl")
    out = tmp_path / "copy"
    prepare_dataset(STHV1_DIR, out=out, videos=frames, splits=labels, copy=True, progress=False)
    placed = out / "20bn-something-something-v1"
    assert all(p.is_dir() and not p.is_symlink() for p in placed.iterdir())
    with pytest.raises(PrepareError, match="JPEG frame folders"):
        prepare_dataset(STHV1_DIR, out=tmp_path / "small", videos=frames, splits=labels, short_side=64, progress=False)


def test_prepare_script_runs_and_names_missing_label_files(synthetic, tmp_path):
    frames, labels = _download(synthetic, tmp_path / "dl")
    (labels / "something-something-v1-validation.csv").unlink()
    result = run_prepare_script("prepare_something_something.py", "--videos", str(frames), "--annotations",
                                str(labels), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "something-something-v1-validation.csv" in result.stderr


def test_the_icm_model_pretrains_on_the_frame_folders(synthetic, tmp_path):
    from vthcl_lib import engine

    cfg = resolve_config("ci", data_root=str(synthetic), pretrain_dataset=STHV1_DIR, run_dir=str(tmp_path / "icm"),
                         levels=1, head="linear", epochs=1, progress=False)
    engine.pretrain(cfg)
    assert engine.checkpoint_is_complete(cfg)
    metrics = json.loads((tmp_path / "icm" / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 1 and np.isfinite(metrics["epochs"][0]["loss"])


def test_the_paper_icm_parameter_files_train_on_something_something():
    import yaml

    root = Path(__file__).resolve().parents[1] / "notebooks" / "params"
    for preset in ("paper_r18", "paper_r50"):
        params = yaml.safe_load((root / preset / "10_instance_correspondence_map.yaml").read_text())
        assert params["ICM_DATASET"] == STHV1_DIR and params["PRESET"] == preset
