"""Prepare a downloaded real dataset: lay it out, index and verify every video, write a manifest.

Taught in notebook ``00_setup_and_data`` (real-data layouts); run through
``data_scripts/prepare_{ucf101,hmdb51,kinetics}.py`` (DESIGN section 4, "Real datasets").

Given the user's extracted download (a video folder and its split files or CSVs), :func:`prepare_dataset`

1. copies the split files / CSVs into the project layout under ``out`` (they are small, and the
   manifest hashes exactly the bytes the loader reads);
2. lists every video the splits name, through the same parsers the loader uses
   (``vthcl_lib.datasets``), and finds each one in the download by file name, whatever its folders;
3. scans each one (:func:`vthcl_lib.scan.scan_videos`: frame count, fps, size, decodability);
4. places it at its project path: a symlink (default), a copy (``copy=True``), nothing when the
   download already is the project layout (verified in place), or, with ``short_side``, a re-encoded
   file whose short side is ``short_side`` pixels (H.264 ``.mp4`` for Kinetics, MPEG-4 ``.avi`` for
   UCF-101 / HMDB-51, same file stem, same frames and fps). Bad videos are placed as they are: the
   quarantine list names them and the loader's failure budget handles them;
5. writes ``out/manifest.json`` (counts, sha256 of every split file, one entry per video) and
   ``out/quarantine.tsv`` beside it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from vthcl_lib.scan import PROBLEMS, VideoCheck, scan_videos
from vthcl_lib.video import BACKENDS, check_backend, probe, read_frames, write_video

MANIFEST_NAME = "manifest.json"
QUARANTINE_NAME = "quarantine.tsv"
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi")


class PrepareError(ValueError):
    """The download cannot be prepared (missing or malformed split files, wrong folders).

    The message names the file or folder and what was expected. Notebook ``00_setup_and_data``.
    """


@dataclass(frozen=True)
class DatasetLayout:
    """Where one dataset's parts live under its project root, and how to list its videos."""

    name: str
    videos_dir: str  # folder of videos under the dataset root ("" for Kinetics: <root>/<split>/...)
    splits_dir: str  # folder of split files under the dataset root ("" for Kinetics CSVs)
    reencode_suffix: str  # container written by --short-side
    split_file_patterns: tuple[str, ...]  # globs copied from the user's split folder
    required_split_files: tuple[str, ...]  # names that must be there
    list_records: Callable[[Path], list]  # dataset root -> every listed VideoRecord


def _list_ucf101(root: Path) -> list:
    from vthcl_lib.datasets import read_ucf101_split

    return [r for split in (1, 2, 3) for subset in ("train", "test") for r in read_ucf101_split(root, split, subset)[0]]


def _list_hmdb51(root: Path) -> list:
    from vthcl_lib.datasets import read_hmdb51_split

    return [r for split in (1, 2, 3) for subset in ("train", "test") for r in read_hmdb51_split(root, split, subset)[0]]


def _list_kinetics(root: Path) -> list:
    from vthcl_lib.datasets import read_kinetics_csv

    splits = [name for name in ("train", "val", "test") if (root / f"{name}.csv").is_file()]
    return [r for split in splits for r in read_kinetics_csv(root, split)[0]]


LAYOUTS = {
    "ucf101": DatasetLayout(
        "ucf101", "UCF-101", "ucfTrainTestlist", ".avi", ("*.txt",),
        ("classInd.txt",) + tuple(f"{kind}list0{k}.txt" for kind in ("train", "test") for k in (1, 2, 3)),
        _list_ucf101,
    ),
    "hmdb51": DatasetLayout(
        "hmdb51", "videos", "testTrainMulti_7030_splits", ".avi", ("*_test_split[123].txt",), (), _list_hmdb51
    ),
    "kinetics400": DatasetLayout("kinetics400", "", "", ".mp4", ("train.csv", "val.csv", "test.csv"), ("train.csv",), _list_kinetics),
}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (notebook ``00_setup_and_data``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(h, w) with the short side ``short_side`` and the aspect ratio kept, both even (H.264 needs it).

    Notebook ``00_setup_and_data``.
    """
    if int(short_side) != short_side or short_side < 2:
        raise ValueError(f"short_side={short_side!r} must be a whole number >= 2")

    def even(x: float) -> int:
        return max(2, int(round(x / 2)) * 2)

    if height <= width:
        return even(short_side), even(width * short_side / height)
    return even(height * short_side / width), even(short_side)


def reencode_video(
    source: str | os.PathLike,
    target: str | os.PathLike,
    *,
    short_side: int,
    backend: str = "decord",
    chunk_frames: int = 128,
    quality: int | None = None,
) -> Path:
    """Re-encode ``source`` to ``target`` (codec from its extension) with short side ``short_side``.

    Frames are decoded ``chunk_frames`` at a time and resized right away, so the full-size video is
    never in memory at once; every frame and the fps are kept. Notebook ``00_setup_and_data``.
    """
    info = probe(source, backend=backend)
    size = short_side_size(info.height, info.width, short_side)
    chunks = [
        read_frames(source, np.arange(start, min(start + chunk_frames, info.num_frames)), backend=backend, size=size)
        for start in range(0, info.num_frames, chunk_frames)
    ]
    # The exact rate (30000/1001, not 29), so frame times stay where they were.
    fps = Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else Fraction(25)
    return write_video(target, torch.cat(chunks), fps=fps, quality=quality)


def _same_path(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def _copy_split_files(layout: DatasetLayout, splits: Path, target_dir: Path) -> list[Path]:
    if not splits.is_dir():
        raise PrepareError(f"split folder '{splits}' does not exist; expected the extracted {layout.name} split files")
    found = sorted({p for pattern in layout.split_file_patterns for p in splits.glob(pattern) if p.is_file()})
    names = {p.name for p in found}
    missing = [name for name in layout.required_split_files if name not in names]
    if missing or not found:
        wanted = ", ".join(missing or layout.split_file_patterns)
        raise PrepareError(f"split folder '{splits}' lacks {wanted} (the {layout.name} split files)")
    if _same_path(splits, target_dir):
        return found
    target_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in found:
        shutil.copyfile(path, target_dir / path.name)
        copied.append(target_dir / path.name)
    return copied


def _index_sources(videos: Path, *, skip: Path | None, progress: bool) -> dict[str, list[Path]]:
    """File name -> paths, and for Kinetics-style names also stem and youtube id -> paths.

    ``skip``: a folder inside ``videos`` not to index (an ``out`` placed inside the download).
    """
    index: dict[str, list[Path]] = {}
    files = (
        p for p in videos.rglob("*")
        if p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".") and (skip is None or skip not in p.parents)
    )
    for path in tqdm(files, desc="index download", unit="file", disable=not progress):
        stem = path.stem
        keys = {path.name, path.name.lower(), stem}
        parts = stem.rsplit("_", 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            keys.add(parts[0])  # <youtube_id>_<start>_<end> -> <youtube_id>
        for key in keys:
            index.setdefault(key, []).append(path)
    return index


def _find_source(record_path: Path, index: dict[str, list[Path]], kinetics: bool) -> Path | None:
    if kinetics:
        stem = record_path.stem
        candidates = index.get(stem) or index.get(stem.rsplit("_", 2)[0]) or []
    else:
        # Case-insensitive fallback: the real UCF-101 lists spell some names unlike their files.
        candidates = index.get(record_path.name) or index.get(record_path.name.lower()) or []
    if not candidates:
        return None
    # Several files with one name: prefer the one in the same class/label folder, then a stable order.
    same_folder = [p for p in candidates if p.parent.name == record_path.parent.name]
    return sorted(same_folder or candidates)[0]


def _place(source: Path, target: Path, copy: bool) -> None:
    if _same_path(source, target):
        return
    if target.is_symlink() or target.exists():
        if target.is_dir() and not target.is_symlink():
            raise PrepareError(f"'{target}' is a folder; expected to put a video file there")
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copy2(source, target)
    else:
        target.symlink_to(source.resolve())


def _reencoded_is_current(target: Path, check: VideoCheck, short_side: int, backend: str) -> bool:
    # Lets an interrupted run resume: a finished re-encode (written atomically) is kept.
    if target.is_symlink() or not target.is_file() or check.info is None:
        return False
    try:
        info = probe(target, backend=backend)
    except Exception:  # noqa: BLE001 - anything unreadable is simply redone
        return False
    wanted = short_side_size(check.info.height, check.info.width, short_side)
    return (info.height, info.width) == wanted and info.num_frames == check.num_frames


def _entry(out: Path, path: Path, check: VideoCheck, info) -> dict:
    frames = check.num_frames if info is None or info is check.info else info.num_frames
    return {
        "path": Path(os.path.relpath(path, out)).as_posix(),
        "frames": frames,
        "fps": round(float(info.fps), 6) if info is not None else None,
        "height": info.height if info is not None else None,
        "width": info.width if info is not None else None,
        "problem": check.problem,
        "detail": check.detail or None,
    }


def prepare_dataset(
    dataset: str,
    *,
    out: str | os.PathLike,
    videos: str | os.PathLike | None = None,
    splits: str | os.PathLike | None = None,
    copy: bool = False,
    short_side: int | None = None,
    min_frames: int = 1,
    backend: str = "decord",
    workers: int = 0,
    quality: int | None = None,
    progress: bool = True,
) -> dict:
    """Lay out, verify and index one dataset under ``out``; write and return its manifest.

    ``dataset``: ``"ucf101"``, ``"hmdb51"`` or ``"kinetics400"``. ``videos`` and ``splits`` (for
    Kinetics: the folder with ``train.csv``/``val.csv``) default to ``out``'s own layout, which
    verifies a copy already in place. Missing or malformed split files raise :class:`PrepareError`.
    Notebook ``00_setup_and_data``.
    """
    from vthcl_lib.datasets import DatasetLayoutError

    if dataset not in LAYOUTS:
        raise ValueError(f"dataset={dataset!r} is not known; expected one of {sorted(LAYOUTS)}")
    check_backend(backend)
    if short_side is not None:
        short_side_size(2, 2, short_side)  # validates the value before any work
    layout = LAYOUTS[dataset]
    out = Path(out).absolute()
    video_root = out / layout.videos_dir if layout.videos_dir else out
    videos = Path(videos).absolute() if videos is not None else video_root
    splits = Path(splits).absolute() if splits is not None else out / layout.splits_dir
    if not videos.is_dir():
        raise PrepareError(f"video folder '{videos}' does not exist; expected the extracted {dataset} videos")
    in_place = _same_path(videos, video_root)
    if in_place and short_side is not None:
        raise PrepareError(
            f"--short-side re-encodes into a new layout; '{videos}' already is the layout under '{out}': choose another --out"
        )

    split_files = _copy_split_files(layout, splits, out / layout.splits_dir)
    video_root.mkdir(parents=True, exist_ok=True)
    try:
        records = layout.list_records(out)
    except DatasetLayoutError as err:
        raise PrepareError(f"cannot read the {dataset} split files: {err}") from err
    listed = list({Path(r.path): None for r in records})  # unique, in listing order
    if not listed:
        raise PrepareError(f"the {dataset} split files in '{splits}' list no videos")

    if in_place:  # verify what the loader itself would read, nothing else
        sources = [path if path.exists() else None for path in listed]
        targets = list(listed)
    else:
        index = _index_sources(videos, skip=out, progress=progress)
        sources = [_find_source(path, index, kinetics=dataset == "kinetics400") for path in listed]
        # The project path keeps the download's container (Kinetics comes as .mp4, .webm or .mkv).
        targets = [path.with_suffix(src.suffix) if src is not None else path for path, src in zip(listed, sources)]
    report = scan_videos(
        [src if src is not None else path for path, src in zip(listed, sources)],
        min_frames=min_frames, backend=backend, progress=progress, workers=workers,
    )

    entries, final_paths = [], []
    jobs = list(zip(targets, sources, report.checks))
    for target, source, check in tqdm(jobs, desc="lay out", unit="video", disable=not progress):
        info = check.info
        if source is not None and short_side is not None and check.problem is None:
            target = target.with_suffix(layout.reencode_suffix)
            if not _reencoded_is_current(target, check, short_side, backend):
                if target.is_symlink():
                    target.unlink()  # never write through a link into the download
                reencode_video(source, target, short_side=short_side, backend=backend, quality=quality)
            info = probe(target, backend=backend)
        elif source is not None and not in_place:
            _place(source, target, copy)
        final_paths.append(target)
        entries.append(_entry(out, target, check, info))

    _check_layout_readable(layout, out, final_paths, sources)
    final_report = report.with_paths(final_paths)
    counts = {"listed": len(listed), "present": sum(src is not None for src in sources)}
    counts.update(final_report.counts)
    counts["ok"] = final_report.ok
    manifest = {
        "dataset": dataset,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sources": {"videos": str(videos), "splits": str(splits)},
        "layout": "in place" if in_place else ("copy" if copy else "symlink"),
        "short_side": short_side,
        "min_frames": min_frames,
        "backend": backend,
        "counts": counts,
        "split_files": {Path(os.path.relpath(p, out)).as_posix(): sha256_file(p) for p in split_files},
        "quarantine": QUARANTINE_NAME,
        "videos": entries,
    }
    final_report.write_quarantine(out / QUARANTINE_NAME, relative_to=out)
    tmp = out / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST_NAME)  # atomic: a run records a complete manifest or none
    return manifest


def _check_layout_readable(layout: DatasetLayout, out: Path, final_paths: list[Path], sources: list) -> None:
    # The loader must find every placed video where it was put; a mismatch is a bug, not bad data.
    resolved = {Path(r.path) for r in layout.list_records(out)}
    lost = [p for p, src in zip(final_paths, sources) if src is not None and p not in resolved]
    if lost:
        raise RuntimeError(f"{len(lost)} placed videos are not where the {layout.name} parser looks, e.g. '{lost[0]}'")


def summarize_manifest(manifest: dict, out: str | os.PathLike) -> str:
    """A readable summary of a manifest: counts, split-file count, where files went (notebook ``00_setup_and_data``)."""
    counts = manifest["counts"]
    lines = [
        f"{manifest['dataset']}: {counts['listed']} listed, {counts['present']} present, {counts['ok']} ok "
        f"({manifest['layout']}{', short side ' + str(manifest['short_side']) if manifest['short_side'] else ''})"
    ]
    lines += [f"  {problem:<12} {counts[problem]}" for problem in PROBLEMS if counts[problem]]
    lines.append(f"  {len(manifest['split_files'])} split files hashed")
    lines.append(f"  manifest:   {Path(out) / MANIFEST_NAME}")
    lines.append(f"  quarantine: {Path(out) / QUARANTINE_NAME}")
    return "\n".join(lines)


def build_parser(dataset: str) -> argparse.ArgumentParser:
    """Argument parser of ``data_scripts/prepare_<dataset>.py`` (notebook ``00_setup_and_data``)."""
    script = {"kinetics400": "prepare_kinetics.py"}.get(dataset, f"prepare_{dataset}.py")
    parser = argparse.ArgumentParser(
        prog=script,
        description=f"Lay out, verify and index a downloaded {dataset} copy; writes <out>/{MANIFEST_NAME} "
        f"and <out>/{QUARANTINE_NAME} (exit 0: done, 1: --strict and bad videos, 2: missing or malformed input).",
    )
    layout = LAYOUTS[dataset]
    if dataset == "kinetics400":
        parser.add_argument("--csv-dir", dest="splits", type=Path, help="folder with train.csv and val.csv (default: --out)")
    else:
        parser.add_argument("--splits", type=Path, help=f"the extracted {layout.splits_dir} folder (default: inside --out)")
    parser.add_argument("--videos", type=Path, help="the extracted video folder (default: inside --out: verify in place)")
    parser.add_argument("--out", type=Path, required=True, help=f"the project's dataset folder, e.g. data/{dataset}")
    parser.add_argument("--copy", action="store_true", help="copy the videos instead of symlinking them")
    parser.add_argument("--short-side", type=int, help=f"re-encode to this short side ({layout.reencode_suffix})")
    parser.add_argument("--quality", type=int, help="encoder quality for --short-side (codec default if unset)")
    parser.add_argument("--min-frames", type=int, default=1, help="videos with fewer frames are too_short")
    parser.add_argument("--backend", choices=BACKENDS, default="decord")
    parser.add_argument("--workers", type=int, default=0, help="processes for the scan (0: in this process)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any video is missing or bad")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(dataset: str, argv: Sequence[str] | None = None) -> int:
    """Command line of the prepare scripts; returns the exit code (notebook ``00_setup_and_data``)."""
    args = build_parser(dataset).parse_args(argv)
    try:
        manifest = prepare_dataset(
            dataset, out=args.out, videos=args.videos, splits=args.splits, copy=args.copy,
            short_side=args.short_side, min_frames=args.min_frames, backend=args.backend,
            workers=args.workers, quality=args.quality, progress=not args.no_progress,
        )
    except (PrepareError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summarize_manifest(manifest, args.out))
    bad = manifest["counts"]["listed"] - manifest["counts"]["ok"]
    return 1 if args.strict and bad else 0
