"""Kinetics-style roots: ``R/kinetics400/<split>.csv`` and its videos; the pre-training dataset's builder.

Notebooks ``00_setup_and_data`` (the layout) and ``05_hierarchical_pretraining`` (the builder).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

from vthcl_lib.datasets.frames import _prepare_records, frame_source_from_config
from vthcl_lib.datasets.records import DatasetLayoutError, VideoRecord, _FolderIndex, _require_dir, _require_file
from vthcl_lib.datasets.something_something import is_sthv1_root, read_sthv1_split
from vthcl_lib.datasets.torch_datasets import PretrainDataset
from vthcl_lib.transforms import augmentation_from_config


KINETICS_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi")
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def read_kinetics_csv(root: str | os.PathLike, split: str = "train") -> tuple[list[VideoRecord], list[str]]:
    """Records of a Kinetics-style ``root`` (``R/kinetics400``) for ``split``, in CSV order, and the label names.

    Labels are indices into the sorted label names (the second return value). Each path is the first
    existing file among ``<split>/<label>/<name>.<ext>`` and ``<split>/<name>.<ext>`` (ext ``.mp4``,
    ``.webm``, ``.mkv``, ``.avi``; a label folder with spaces may also be spelled with underscores);
    when none exists the canonical ``<split>/<label>/<name>.mp4`` is kept so a scan reports it
    missing. Notebook ``00_setup_and_data``.
    """
    root = Path(root)
    layout = "R/kinetics400/<split>.csv (label,youtube_id,time_start,time_end,split) and <split>/[<label>/]<video>"
    _require_dir(root, f"a Kinetics-style root: {layout}")
    csv_path = root / f"{split}.csv"
    _require_file(csv_path, f"the annotation CSV of split {split!r}: {layout}")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in KINETICS_COLUMNS if c not in header]
        if missing:
            raise DatasetLayoutError(
                f"'{csv_path}' lacks the columns {missing}; expected the header {','.join(KINETICS_COLUMNS)},split"
            )
        rows = []
        for line_no, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not any(row.values()):
                continue
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            except ValueError as err:
                raise DatasetLayoutError(
                    f"'{csv_path}' line {line_no}: time_start/time_end must be numbers, got "
                    f"{row['time_start']!r}/{row['time_end']!r}"
                ) from err
            if not row["youtube_id"]:
                raise DatasetLayoutError(f"'{csv_path}' line {line_no}: empty youtube_id")
            rows.append((row["label"], f"{row['youtube_id']}_{start:06d}_{end:06d}"))
    label_names = sorted({label for label, _ in rows if label})
    label_ids = {name: k for k, name in enumerate(label_names)}
    split_dir = root / split
    folders = _FolderIndex()
    records = []
    for label, name in rows:
        candidates = [split_dir / label, split_dir / label.replace(" ", "_"), split_dir] if label else [split_dir]
        path = next(
            (folder / (name + ext) for folder in dict.fromkeys(candidates) for ext in KINETICS_EXTENSIONS
             if folders.contains(folder, name + ext)),
            candidates[0] / f"{name}.mp4",
        )
        records.append(VideoRecord(path=path, video_id=name, label=label_ids.get(label)))
    return records, label_names


def build_pretrain_dataset(cfg, *, split: str = "train", progress: bool = True) -> PretrainDataset:
    """Config -> Kinetics-style records -> frame source (cache if ``use_cache``) -> augmentation -> dataset.

    ``<data_root>/<pretrain_dataset>`` may also be a Something-Something V1 root (its label list
    decides), whose frame folders then serve as the videos (notebook ``10_instance_correspondence_map``).

    Raises :class:`DatasetLayoutError` when ``<data_root>/<pretrain_dataset>`` or its CSV is missing.
    With the cache, every video is decoded once here (``progress`` shows a bar); without it the
    frame counts come from the :class:`~vthcl_lib.datasets.frames.FrameIndex`; files that fail are
    counted as bad from the start. ``data.augment_on`` places the colour augmentation
    (:func:`augment_placement`). Notebook ``05_hierarchical_pretraining``.
    """
    d = cfg.data
    root = Path(d.data_root) / d.pretrain_dataset
    _require_dir(root, f"the pre-training dataset folder '{d.pretrain_dataset}' under data_root='{d.data_root}' "
                       "(generate the synthetic data or prepare Kinetics-400 first)")
    if is_sthv1_root(root):  # Something-Something V1 (the paper's ICM data): frame folders, ';' CSVs
        records, _ = read_sthv1_split(root, {"val": "validation"}.get(split, split))
    else:
        records, _ = read_kinetics_csv(root, split)
    if not records:
        raise DatasetLayoutError(f"the {split} list of '{root}' names no videos")
    source = frame_source_from_config(d)
    records, failures = _prepare_records(records, source, d.failure_budget, progress=progress, root=root)
    dataset = PretrainDataset(
        records, window=d.window, tau=d.tau, alpha=d.alpha, transform=augmentation_from_config(d), source=source,
        seed=cfg.seed, short_video=d.short_video, failure_budget=d.failure_budget, augment_on=augment_placement(cfg),
    )
    dataset.bad_videos.update(failures)
    return dataset


def augment_placement(cfg) -> str:
    """``"device"`` or ``"worker"``: where ``cfg``'s pre-training runs the colour augmentation.

    ``data.augment_on="auto"`` means the device when training on CUDA (the workers then hand over
    uint8 clips, a sixth of the bytes), else the workers: on a CPU the step would do the same work
    serially on the cores the workers share, and measures slower per item even with no workers
    (the placement figures of ``python -m vthcl_lib.bench data``).
    Notebook ``05_hierarchical_pretraining``.
    """
    if cfg.data.augment_on != "auto":
        return cfg.data.augment_on
    cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    return "device" if cuda else "worker"
