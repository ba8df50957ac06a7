"""vthcl_lib.datasets: the three layout parsers, the pre-training and labeled datasets, bad videos, builders."""
from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vthcl_lib.config import resolve_config
from vthcl_lib.datasets import (
    BadVideoBudgetExceeded,
    DatasetLayoutError,
    FrameSource,
    LabeledClipDataset,
    PretrainDataset,
    VideoRecord,
    build_labeled_dataset,
    build_pretrain_dataset,
    read_hmdb51_split,
    read_kinetics_csv,
    read_ucf101_split,
)
from vthcl_lib.tempo import uniform_clip_starts
from vthcl_lib.transforms import ClipAugmentation, EvalTransform
from vthcl_lib.video import count_decodable_frames, declared_frames, write_video

SIZE = 32  # frames are SIZE x SIZE
CELL = 8  # the frame number is written as bright/dark CELL x CELL blocks, one per bit
BITS = 6


def numbered_frames(num_frames: int, offset: int = 0) -> np.ndarray:
    """Frames whose first BITS blocks (row-major on a 4x4 grid) spell ``frame number + offset`` in binary."""
    frames = np.full((num_frames, SIZE, SIZE, 3), 60, np.uint8)
    per_row = SIZE // CELL
    for k in range(num_frames):
        for b in range(BITS):
            if ((k + offset) >> b) & 1:
                r, c = divmod(b, per_row)
                frames[k, r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL] = 230
        frames[k, 3 * CELL :, :, 1] = (k * 13) % 200  # content that changes every frame
    return frames


def frame_number(image) -> int:
    """Read back the number written by :func:`numbered_frames` from an ``[H, W, 3]`` image (0..255 scale)."""
    img = np.asarray(image, dtype=np.float32)
    cell_h, cell_w = img.shape[0] / 4, img.shape[1] / 4
    value = 0
    for b in range(BITS):
        r, c = divmod(b, 4)
        patch = img[int((r + 0.3) * cell_h) : int((r + 0.7) * cell_h), int((c + 0.3) * cell_w) : int((c + 0.7) * cell_w)]
        if patch.mean() > 145:
            value |= 1 << b
    return value


def clip_numbers(clip: torch.Tensor) -> list[int]:
    """Frame numbers of a float ``[C, T, H, W]`` clip in [0, 1] (identity transform, mean 0, std 1)."""
    images = (clip.permute(1, 2, 3, 0) * 255).numpy()
    return [frame_number(img) for img in images]


def identity_augmentation() -> ClipAugmentation:
    """Full-frame crop at the frame size, no flip, no colour change, no normalisation."""
    return ClipAugmentation(
        crop_size=SIZE, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, color_jitter=0.0,
        hue_jitter=0.0, grayscale_prob=0.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
    )


LENGTHS = (24, 30, 36, 40)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("videos")
    return [write_video(root / f"good{k}.mp4", numbered_frames(n)) for k, n in enumerate(LENGTHS)]


@pytest.fixture(scope="module")
def short_video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("short") / "short.mp4", numbered_frames(10))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, videos) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    noise = root / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    truncated = root / "truncated.mp4"
    data = videos[3].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # the MP4 index is gone: opening fails
    # An AVI cut at 80%: its header still promises 40 frames, but decoding stops part-way.
    data = write_video(root / "whole.avi", numbered_frames(40)).read_bytes()
    cut_avi = root / "cut.avi"
    cut_avi.write_bytes(data[: int(len(data) * 0.8)])
    assert declared_frames(cut_avi) == 40 and count_decodable_frames(cut_avi) < 40, "adjust the cut"
    return {"missing": root / "missing.mp4", "empty": empty, "noise": noise, "truncated": truncated, "cut_avi": cut_avi}


def records_of(paths, labels=None) -> list[VideoRecord]:
    return [VideoRecord(path=Path(p), video_id=Path(p).stem, label=None if labels is None else labels[k])
            for k, p in enumerate(paths)]


# --------------------------------------------------------------------------- parsers


def write_crlf(path: Path, lines: list[str]) -> None:
    """Write like the real annotation files: CRLF endings, trailing blanks, a blank line at the end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join(lines) + "\r\n  \r\n").encode())


def test_kinetics_csv_label_folder_flat_and_missing(tmp_path):
    root = tmp_path / "kinetics400"
    write_crlf(root / "train.csv", [
        "label,youtube_id,time_start,time_end,split",
        "zoom_pulse,syn00000001,0,2,train",
        "air drumming,abcdefghijk,10,20,train",
        "bounce,syn00000003,0,3,train ",
        "zoom_pulse,syn00000004,0,2,train",
    ])
    (root / "train" / "zoom_pulse").mkdir(parents=True)
    (root / "train" / "zoom_pulse" / "syn00000001_000000_000002.mp4").write_bytes(b"x")
    (root / "train" / "air_drumming").mkdir()
    (root / "train" / "air_drumming" / "abcdefghijk_000010_000020.mkv").write_bytes(b"x")
    (root / "train" / "syn00000003_000000_000003.webm").write_bytes(b"x")  # flat layout

    records, labels = read_kinetics_csv(root)
    assert labels == ["air drumming", "bounce", "zoom_pulse"]
    assert [r.video_id for r in records] == [
        "syn00000001_000000_000002", "abcdefghijk_000010_000020", "syn00000003_000000_000003", "syn00000004_000000_000002",
    ]
    assert [r.label for r in records] == [2, 0, 1, 2]
    assert records[0].path == root / "train" / "zoom_pulse" / "syn00000001_000000_000002.mp4"
    assert records[1].path == root / "train" / "air_drumming" / "abcdefghijk_000010_000020.mkv"
    assert records[2].path == root / "train" / "syn00000003_000000_000003.webm"
    # A missing video keeps the canonical path, so a scan reports it.
    assert records[3].path == root / "train" / "zoom_pulse" / "syn00000004_000000_000002.mp4"
    assert not records[3].path.exists()


def test_kinetics_missing_files_name_them(tmp_path):
    with pytest.raises(DatasetLayoutError, match="kinetics400"):
        read_kinetics_csv(tmp_path / "kinetics400")
    (tmp_path / "kinetics400").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"val\.csv"):
        read_kinetics_csv(tmp_path / "kinetics400", split="val")
    (tmp_path / "kinetics400" / "train.csv").write_text("label,youtube_id\nx,y\n")
    with pytest.raises(DatasetLayoutError, match="time_start"):
        read_kinetics_csv(tmp_path / "kinetics400")


UCF_CLASSES = ["BounceBall", "HorizontalSlide", "Spin"]


def make_ucf_tree(root: Path, groups: int = 4) -> None:
    lists = root / "ucfTrainTestlist"
    write_crlf(lists / "classInd.txt", [f"{k + 1} {name} " for k, name in enumerate(UCF_CLASSES)])
    for split in (1, 2, 3):
        test_group = split  # one test group per split in this tiny tree
        train, test = [], []
        for k, name in enumerate(UCF_CLASSES):
            for g in range(1, groups + 1):
                rel = f"{name}/v_{name}_g{g:02d}_c01.avi"
                (test if g == test_group else train).append(rel if g == test_group else f"{rel} {k + 1}")
        write_crlf(lists / f"trainlist0{split}.txt", train)
        write_crlf(lists / f"testlist0{split}.txt", test)
    (root / "UCF-101").mkdir(parents=True)


def test_ucf101_splits(tmp_path):
    root = tmp_path / "ucf101"
    make_ucf_tree(root)
    for split in (1, 2, 3):
        train, names = read_ucf101_split(root, split, "train")
        test, _ = read_ucf101_split(root, split, "test")
        assert names == UCF_CLASSES
        assert len(train) == 9 and len(test) == 3
        assert all(f"_g{split:02d}_" in r.video_id for r in test)
        assert not any(f"_g{split:02d}_" in r.video_id for r in train)
        assert [r.label for r in test] == [0, 1, 2]
    first = read_ucf101_split(root, 1, "train")[0][0]
    assert first.path == root / "UCF-101" / "BounceBall" / "v_BounceBall_g02_c01.avi"
    assert first.video_id == "v_BounceBall_g02_c01" and first.label == 0


def test_ucf101_bad_arguments_and_layout(tmp_path):
    root = tmp_path / "ucf101"
    make_ucf_tree(root)
    with pytest.raises(ValueError, match="split"):
        read_ucf101_split(root, 4)
    with pytest.raises(ValueError, match="subset"):
        read_ucf101_split(root, 1, "val")
    (root / "ucfTrainTestlist" / "classInd.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"classInd\.txt"):
        read_ucf101_split(root, 1)
    with pytest.raises(DatasetLayoutError, match="ucf101"):
        read_ucf101_split(tmp_path / "nowhere" / "ucf101", 1)
    make_ucf_tree(tmp_path / "other")
    (tmp_path / "other" / "UCF-101").rmdir()
    with pytest.raises(DatasetLayoutError, match="UCF-101"):
        read_ucf101_split(tmp_path / "other", 1)


def make_hmdb_tree(root: Path) -> None:
    for name in ("zoom_pulse", "bounce"):
        for split in (1, 2, 3):
            # 10 videos: tags cycle so each split differs; video 9 is always unused (tag 0).
            lines = []
            for v in range(10):
                tag = 0 if v == 9 else (2 if (v + split) % 3 == 0 else 1)
                lines.append(f"{name}_{v}.avi {tag} ")
            write_crlf(root / "testTrainMulti_7030_splits" / f"{name}_test_split{split}.txt", lines)
    (root / "videos").mkdir(parents=True)


def test_hmdb51_splits_tags_and_layout(tmp_path):
    root = tmp_path / "hmdb51"
    make_hmdb_tree(root)
    for split in (1, 2, 3):
        train, names = read_hmdb51_split(root, split, "train")
        test, _ = read_hmdb51_split(root, split, "test")
        assert names == ["bounce", "zoom_pulse"]
        expected_test = sorted(f"{n}_{v}" for n in names for v in range(9) if (v + split) % 3 == 0)
        assert sorted(r.video_id for r in test) == expected_test
        assert len(train) + len(test) == 18  # tag 0 (video 9) left out of both
        assert not any(r.video_id.endswith("_9") for r in train + test)
        assert {r.label for r in train if r.video_id.startswith("bounce")} == {0}
        assert train[0].path == root / "videos" / "bounce" / f"{train[0].video_id}.avi"
    with pytest.raises(ValueError, match="split"):
        read_hmdb51_split(root, 0)
    with pytest.raises(DatasetLayoutError, match="testTrainMulti_7030_splits"):
        read_hmdb51_split(tmp_path, 1)


# --------------------------------------------------------------------------- pre-training dataset


@pytest.mark.parametrize("alpha", [1, 2, 4])
def test_pretrain_shapes_and_slow_is_fast_strided(videos, alpha):
    window, tau = 16, 4
    ds = PretrainDataset(records_of(videos), window=window, tau=tau, alpha=alpha,
                         transform=identity_augmentation(), source=FrameSource())
    assert len(ds) == len(videos)
    for i in range(len(ds)):
        slow, fast, index = ds[i]
        assert index == i
        assert slow.shape == (3, window // tau, SIZE, SIZE) and slow.dtype == torch.float32
        assert fast.shape == (3, alpha * window // tau, SIZE, SIZE)
        fast_numbers, slow_numbers = clip_numbers(fast), clip_numbers(slow)
        step = tau // alpha
        assert fast_numbers == list(range(fast_numbers[0], fast_numbers[0] + step * len(fast_numbers), step))
        assert fast_numbers[-1] < LENGTHS[i]
        assert slow_numbers == fast_numbers[::alpha]


def test_augmenting_fast_then_striding_equals_augmenting_slow(videos):
    aug = ClipAugmentation(crop_size=24, crop_scale=(0.3, 1.0), color_jitter=0.4, hue_jitter=0.1, grayscale_prob=0.3)
    fast = FrameSource().read(records_of(videos)[0], np.arange(0, 16))
    for seed in range(6):
        for alpha in (2, 4):
            fast_aug, slow_aug = aug(fast, fast[::alpha], rng=np.random.default_rng(seed))
            torch.testing.assert_close(fast_aug[:, ::alpha], slow_aug, rtol=1e-5, atol=1e-5)


def test_pretrain_is_deterministic_per_seed_epoch_index(videos):
    def make(seed=0):
        return PretrainDataset(records_of(videos), window=16, tau=4, alpha=2,
                               transform=ClipAugmentation(crop_size=24), source=FrameSource(), seed=seed)

    a, b = make(), make()
    for i in range(len(a)):
        for x, y in zip(a[i][:2], b[i][:2]):
            assert torch.equal(x, y)
        assert torch.equal(a[i][1], a[i][1])
    epoch0 = [a[i][1] for i in range(len(a))]
    a.set_epoch(1)
    epoch1 = [a[i][1] for i in range(len(a))]
    assert any(not torch.equal(x, y) for x, y in zip(epoch0, epoch1))
    b.set_epoch(1)
    assert all(torch.equal(x, b[i][1]) for i, x in enumerate(epoch1))
    other_seed = make(seed=5)
    assert any(not torch.equal(x, other_seed[i][1]) for i, x in enumerate(epoch0))


def test_pretrain_in_dataloader_workers_after_main_process_read(videos):
    ds = PretrainDataset(records_of(videos), window=16, tau=4, alpha=2,
                         transform=ClipAugmentation(crop_size=24), source=FrameSource(backend="decord"))
    ds.set_epoch(3)
    expected = [ds[i] for i in range(len(ds))]  # the main process decodes first (decord loaded, readers closed)
    copy = pickle.loads(pickle.dumps(ds))  # nothing unpicklable (no reader) rides along to workers
    assert torch.equal(copy[1][1], expected[1][1])
    loader = DataLoader(ds, batch_size=2, num_workers=2, timeout=60)
    slow, fast, index = zip(*loader)
    slow, fast, index = torch.cat(slow), torch.cat(fast), torch.cat(index)
    assert index.tolist() == list(range(len(ds)))
    assert torch.equal(slow, torch.stack([e[0] for e in expected]))
    assert torch.equal(fast, torch.stack([e[1] for e in expected]))


def test_short_video_uses_clamp_rule(short_video):
    ds = PretrainDataset(records_of([short_video]), window=16, tau=4, alpha=2,
                         transform=identity_augmentation(), source=FrameSource())
    slow, fast, _ = ds[0]
    assert clip_numbers(fast) == [0, 2, 4, 6, 8, 9, 9, 9]  # past the end: the last frame repeats
    assert clip_numbers(slow) == [0, 4, 8, 9]
    loop = PretrainDataset(records_of([short_video]), window=16, tau=4, alpha=2, short_video="loop",
                           transform=identity_augmentation(), source=FrameSource())
    assert clip_numbers(loop[0][1]) == [0, 2, 4, 6, 8, 0, 2, 4]


def test_pretrain_rejects_bad_parameters(videos):
    with pytest.raises(ValueError, match="tau"):
        PretrainDataset(records_of(videos), window=16, tau=3, alpha=2, transform=identity_augmentation(),
                        source=FrameSource())
    with pytest.raises(ValueError, match="short_video"):
        PretrainDataset(records_of(videos), window=16, tau=4, alpha=2, transform=identity_augmentation(),
                        source=FrameSource(), short_video="wrap")


# --------------------------------------------------------------------------- labeled dataset


def test_labeled_train_and_test_modes(videos):
    records = records_of(videos, labels=[0, 1, 2, 1])
    train = LabeledClipDataset(records, num_frames=4, stride=4, transform=identity_augmentation(),
                               source=FrameSource(), mode="train")
    clip, label, video_id = train[1]
    assert clip.shape == (3, 4, SIZE, SIZE) and label == 1 and video_id == "good1"
    numbers = clip_numbers(clip)
    assert numbers == list(range(numbers[0], numbers[0] + 16, 4))

    test = LabeledClipDataset(records, num_frames=4, stride=4, transform=EvalTransform(SIZE, (0, 0, 0), (1, 1, 1)),
                              source=FrameSource(), mode="test", num_clips=3)
    for i, n in enumerate(LENGTHS):
        clips, label, video_id = test[i]
        assert clips.shape == (3, 3, 4, SIZE, SIZE) and label == records[i].label and video_id == f"good{i}"
        starts = uniform_clip_starts(n, window=16, num_clips=3)
        for clip, start in zip(clips, starts):
            assert clip_numbers(clip) == [int(start) + 4 * k for k in range(4)]


def test_labeled_eval_transform_crops_and_normalises(videos):
    test = LabeledClipDataset(records_of(videos[:1], labels=[0]), num_frames=2, stride=2, mode="test", num_clips=2,
                              transform=EvalTransform(16), source=FrameSource(decode_size=(24, 24)))
    clips, _, _ = test[0]
    assert clips.shape == (2, 3, 2, 16, 16)
    assert clips.min() < 0 < clips.max()  # normalised with the default mean and std


# --------------------------------------------------------------------------- bad videos


def test_bad_videos_are_skipped_logged_and_counted(videos, bad_files, caplog):
    paths = [videos[0], bad_files["missing"], videos[1], bad_files["empty"], bad_files["noise"], videos[2],
             bad_files["truncated"], bad_files["cut_avi"]]
    good = {0, 2, 5}
    ds = PretrainDataset(records_of(paths), window=16, tau=4, alpha=2, transform=identity_augmentation(),
                         source=FrameSource(), failure_budget=10)
    with caplog.at_level(logging.WARNING, logger="vthcl_lib.datasets"):
        served = [ds[i][2] for i in range(len(ds))]
    assert all(s in good for s in served)
    assert [served[i] for i in sorted(good)] == sorted(good)  # good videos serve themselves
    assert set(ds.bad_videos) == {str(p) for p in bad_files.values()}
    assert "does not exist" in ds.bad_videos[str(bad_files["missing"])]
    assert "empty" in ds.bad_videos[str(bad_files["empty"])]
    for path in bad_files.values():
        assert any(str(path) in rec.getMessage() and rec.levelno == logging.WARNING for rec in caplog.records)
    # The substitute is deterministic: a fresh dataset serves the same items.
    again = PretrainDataset(records_of(paths), window=16, tau=4, alpha=2, transform=identity_augmentation(),
                            source=FrameSource(), failure_budget=10)
    for i in range(len(ds)):
        slow, fast, index = again[i]
        assert index == served[i] and torch.equal(fast, ds[i][1])


def test_failure_budget_exceeded_names_the_files(videos, bad_files):
    paths = [bad_files["missing"], bad_files["empty"], bad_files["noise"], videos[0]]
    ds = PretrainDataset(records_of(paths), window=16, tau=4, alpha=2, transform=identity_augmentation(),
                         source=FrameSource(), failure_budget=2)
    with pytest.raises(BadVideoBudgetExceeded) as info:
        for i in range(len(ds)):
            ds[i]
    for key in ("missing", "empty", "noise"):
        assert str(bad_files[key]) in str(info.value)


def test_all_videos_bad_stops_instead_of_looping(bad_files):
    ds = LabeledClipDataset(records_of([bad_files["missing"], bad_files["noise"]], labels=[0, 1]), num_frames=4,
                            stride=2, transform=EvalTransform(16), source=FrameSource(), failure_budget=50)
    with pytest.raises(BadVideoBudgetExceeded, match="every one"):
        ds[0]


def test_labeled_dataset_substitutes_bad_video(videos, bad_files):
    ds = LabeledClipDataset(records_of([bad_files["truncated"], videos[0]], labels=[3, 7]), num_frames=4, stride=2,
                            transform=identity_augmentation(), source=FrameSource())
    clip, label, video_id = ds[0]
    assert (label, video_id) == (7, "good0") and clip.shape == (3, 4, SIZE, SIZE)
    assert list(ds.bad_videos) == [str(bad_files["truncated"])]


# --------------------------------------------------------------------------- builders


def make_data_root(root: Path) -> None:
    """A tiny synthetic-style data root with all three layouts and real videos."""
    kin = root / "kinetics400"
    lines = ["label,youtube_id,time_start,time_end,split"]
    for k, label in enumerate(["bounce", "spin", "bounce", "spin"]):
        youtube_id = f"syn{k:08d}"
        lines.append(f"{label},{youtube_id},0,2,train")
        write_video(kin / "train" / label / f"{youtube_id}_000000_000002.mp4", numbered_frames(20 + 4 * k))
    (kin / "train.csv").write_text("\n".join(lines) + "\n")
    ucf = root / "ucf101"
    make_ucf_tree(ucf, groups=3)
    for name in UCF_CLASSES:
        for g in range(1, 4):
            write_video(ucf / "UCF-101" / name / f"v_{name}_g{g:02d}_c01.avi", numbered_frames(20))
    hmdb = root / "hmdb51"
    make_hmdb_tree(hmdb)
    for name in ("zoom_pulse", "bounce"):
        for v in range(10):
            write_video(hmdb / "videos" / name / f"{name}_{v}.avi", numbered_frames(20))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data_root")
    make_data_root(root)
    return root


@pytest.mark.parametrize("use_cache", [True, False])
def test_build_pretrain_dataset(data_root, use_cache, tmp_path):
    cfg = resolve_config("ci", data_root=str(data_root), use_cache=use_cache, cache_dir=str(tmp_path / "cache"))
    ds = build_pretrain_dataset(cfg, progress=False)
    assert isinstance(ds, PretrainDataset) and len(ds) == 4
    slow, fast, index = ds[2]
    assert slow.shape == (3, 4, 32, 32) and fast.shape == (3, 8, 32, 32) and index == 2
    if use_cache:
        assert [r.num_frames for r in ds.records] == [20, 24, 28, 32]
        assert len(list((tmp_path / "cache").glob("*.npy"))) == 4
    else:
        assert not (tmp_path / "cache").exists()


def test_build_uses_default_cache_dir(data_root, tmp_path):
    cfg = resolve_config("ci", data_root=str(data_root))
    ds = build_labeled_dataset(cfg, "ucf101", split=2, subset="test", progress=False)
    assert ds.source.cache.cache_dir == data_root / ".frame_cache"
    clips, label, video_id = ds[0]
    assert clips.shape == (3, 3, 4, 32, 32)  # ci: 3 test clips of window/tau frames
    assert "_g02_" in video_id and label == 0


def test_build_labeled_datasets(data_root):
    cfg = resolve_config("ci", data_root=str(data_root), use_cache=False)
    ucf = build_labeled_dataset(cfg, "ucf101", split=1, subset="train")
    assert ucf.mode == "train" and len(ucf) == 6
    clip, label, _ = ucf[0]
    assert clip.shape == (3, 4, 32, 32) and label == 0
    hmdb = build_labeled_dataset(cfg, "hmdb51", split=3, subset="test")
    assert hmdb.mode == "test" and isinstance(hmdb.transform, EvalTransform)
    assert hmdb[0][0].shape == (3, 3, 4, 32, 32)


def test_build_missing_dataset_folder(tmp_path):
    cfg = resolve_config("ci", data_root=str(tmp_path))
    with pytest.raises(DatasetLayoutError, match="kinetics400"):
        build_pretrain_dataset(cfg)
    with pytest.raises(DatasetLayoutError, match="hmdb51"):
        build_labeled_dataset(cfg, "hmdb51")
    with pytest.raises(ValueError, match="dataset"):
        build_labeled_dataset(cfg, "kinetics")
