"""Scan videos before training and list the bad ones: the quarantine list (DESIGN section 6).

Taught in notebook ``00_setup_and_data``. Each video gets one verdict:

* ok;
* ``"missing"``: the file does not exist;
* ``"empty"``: the file has 0 bytes;
* ``"undecodable"``: the container cannot be opened, or its first frame cannot be decoded;
* ``"truncated"``: fewer frames decode than the container declares, or its last frame cannot be decoded;
* ``"too_short"``: it decodes completely but has fewer than ``min_frames`` frames.

A truncated MPEG-4 AVI loses its index (written at the end), so decord counts only the frames still
present and would call the file fine; the scan therefore also reads the frame count the container's
header declares (through PyAV) and compares the fully decoded count against the larger of the two.

Command line (exit code 0: nothing bad, 1: some files bad, 2: wrong layout or arguments)::

    python -m vthcl_lib.scan --dataset ucf101 --root data/synthetic/ci/ucf101 --out quarantine.tsv
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from vthcl_lib.progress import progress_bar

from vthcl_lib.video import BACKENDS, VideoDecodeError, check_backend, VideoInfo, count_decodable_frames, declared_frames, probe, read_frames

PROBLEMS = ("missing", "empty", "undecodable", "truncated", "too_short")
DATASETS = ("kinetics400", "ucf101", "hmdb51")
QUARANTINE_HEADER = "path\tproblem\tdetail"


@dataclass(frozen=True)
class BadVideo:
    """One quarantined video: its path, the problem (one of ``PROBLEMS``) and a readable detail.

    Notebook ``00_setup_and_data``.
    """

    path: Path
    problem: str
    detail: str


@dataclass(frozen=True)
class VideoCheck:
    """Everything the scan learned about one video (notebook ``00_setup_and_data``).

    ``problem`` is ``None`` for a good video. ``info`` is the backend's probe (``None`` when it
    failed); ``decodable_frames`` the number of frames a full decode yields (``None`` when not counted).
    """

    path: Path
    problem: str | None
    detail: str = ""
    info: VideoInfo | None = None
    decodable_frames: int | None = None

    @property
    def num_frames(self) -> int | None:
        """Frames a reader can actually use: the decoded count when known, else the probe's."""
        if self.decodable_frames is not None:
            return self.decodable_frames
        return self.info.num_frames if self.info is not None else None


class ScanReport:
    """The result of :func:`scan_videos`: counts, the bad videos, and the quarantine file.

    Notebook ``00_setup_and_data``.
    """

    def __init__(self, checks: Sequence[VideoCheck]):
        self.checks: list[VideoCheck] = list(checks)

    @property
    def total(self) -> int:
        """Number of videos scanned."""
        return len(self.checks)

    @property
    def ok(self) -> int:
        """Number of good videos."""
        return sum(1 for check in self.checks if check.problem is None)

    @property
    def bad(self) -> list[BadVideo]:
        """The bad videos, in scan order."""
        return [BadVideo(c.path, c.problem, c.detail) for c in self.checks if c.problem is not None]

    @property
    def counts(self) -> dict[str, int]:
        """Problem -> number of videos with it; every problem in ``PROBLEMS`` is present (0 if none)."""
        found = Counter(check.problem for check in self.checks if check.problem is not None)
        return {problem: found.get(problem, 0) for problem in PROBLEMS}

    def write_quarantine(self, path: str | os.PathLike, *, relative_to: str | os.PathLike | None = None) -> Path:
        """Write the bad videos as TSV ``path<TAB>problem<TAB>detail`` under a header line.

        ``relative_to`` writes paths relative to that folder (a manifest's folder). The file is
        written even when nothing is bad (header only), so its presence says a scan ran.
        Notebook ``00_setup_and_data``.
        """
        path = Path(path)
        lines = [QUARANTINE_HEADER]
        for bad in self.bad:
            shown = Path(os.path.relpath(bad.path, relative_to)) if relative_to is not None else bad.path
            detail = " ".join(bad.detail.split())  # tabs or newlines in a reason would break the columns
            lines.append(f"{shown.as_posix()}\t{bad.problem}\t{detail}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def summary(self, *, max_listed: int = 20) -> str:
        """A readable multi-line summary: totals, counts per problem, and the first bad files."""
        lines = [f"scanned {self.total} videos: {self.ok} ok, {self.total - self.ok} bad"]
        lines += [f"  {problem:<12} {count}" for problem, count in self.counts.items() if count]
        bad = self.bad
        for item in bad[:max_listed]:
            lines.append(f"  [{item.problem}] {item.path}: {item.detail}")
        if len(bad) > max_listed:
            lines.append(f"  ... and {len(bad) - max_listed} more (see the quarantine file)")
        return "\n".join(lines)

    def with_paths(self, paths: Sequence[str | os.PathLike]) -> "ScanReport":
        """The same verdicts under other paths (one per check, in order), e.g. where a prepare step put the files."""
        if len(paths) != len(self.checks):
            raise ValueError(f"with_paths needs {len(self.checks)} paths, got {len(paths)}")
        return ScanReport([replace(check, path=Path(p)) for check, p in zip(self.checks, paths)])


def check_video(path: str | os.PathLike, *, min_frames: int = 1, backend: str = "decord") -> VideoCheck:
    """Scan one video and return its :class:`VideoCheck` (verdicts as in the module docstring).

    Never raises for a bad file: every failure becomes a verdict. Notebook ``00_setup_and_data``.
    """
    path = Path(path)
    if not path.exists():
        return VideoCheck(path, "missing", "file does not exist")
    if path.is_file() and path.stat().st_size == 0:
        return VideoCheck(path, "empty", "file is empty (0 bytes)")
    try:
        info = probe(path, backend=backend)
    except VideoDecodeError as err:
        return VideoCheck(path, "truncated" if err.reason.startswith("truncated") else "undecodable", err.reason)
    except Exception as err:  # noqa: BLE001 - a scan must survive whatever a broken file triggers
        return VideoCheck(path, "undecodable", f"{type(err).__name__}: {err}")
    try:
        read_frames(path, [0], backend=backend)
    except Exception as err:  # noqa: BLE001
        reason = err.reason if isinstance(err, VideoDecodeError) else f"{type(err).__name__}: {err}"
        return VideoCheck(path, "undecodable", f"first frame: {reason}", info)
    try:
        read_frames(path, [info.num_frames - 1], backend=backend)
    except Exception as err:  # noqa: BLE001
        reason = err.reason if isinstance(err, VideoDecodeError) else f"{type(err).__name__}: {err}"
        return VideoCheck(path, "truncated", f"last frame ({info.num_frames - 1}): {reason}", info)
    try:
        decodable = count_decodable_frames(path)
    except Exception as err:  # noqa: BLE001
        reason = err.reason if isinstance(err, VideoDecodeError) else f"{type(err).__name__}: {err}"
        return VideoCheck(path, "undecodable", f"full decode: {reason}", info)
    expected = max(info.num_frames, declared_frames(path) or 0)
    if decodable < expected:
        detail = f"only {decodable} of {expected} frames decode ({backend} probe: {info.num_frames})"
        return VideoCheck(path, "truncated", detail, info, decodable)
    if decodable < min_frames:
        return VideoCheck(path, "too_short", f"{decodable} frames, fewer than min_frames={min_frames}", info, decodable)
    return VideoCheck(path, None, "", info, decodable)


def _check_for_pool(job: tuple[str, int, str]) -> VideoCheck:
    path, min_frames, backend = job
    return check_video(path, min_frames=min_frames, backend=backend)


def _as_path(item) -> Path:
    # A VideoRecord (or anything with .path) or a plain path.
    target = getattr(item, "path", item)
    if not isinstance(target, (str, os.PathLike)):
        raise TypeError(f"scan_videos expects paths or records with a .path, got {type(item).__name__}: {item!r}")
    return Path(target)


def scan_videos(
    records_or_paths: Iterable,
    *,
    min_frames: int = 1,
    backend: str = "decord",
    progress: bool = True,
    workers: int = 0,
) -> ScanReport:
    """Check every video and return a :class:`ScanReport`; the quarantine list made before training.

    ``records_or_paths``: ``VideoRecord``s (anything with ``.path``) or paths. A full decode of
    each file is what finds truncation, so this costs about one pass over the data;
    ``workers > 0`` spreads it over that many processes. Never crashes or stops on a bad file.
    Notebook ``00_setup_and_data``.
    """
    check_backend(backend)
    if int(min_frames) != min_frames or min_frames < 1:
        raise ValueError(f"min_frames={min_frames!r} must be a whole number >= 1")
    if int(workers) != workers or workers < 0:
        raise ValueError(f"workers={workers!r} must be a whole number >= 0")
    paths = [_as_path(item) for item in records_or_paths]
    bar = dict(total=len(paths), desc="scan", unit="video", disable=not progress)
    if workers == 0 or len(paths) < 2:
        return ScanReport([check_video(p, min_frames=min_frames, backend=backend) for p in progress_bar(paths, **bar)])
    import multiprocessing

    # spawn, not fork: the parent may hold torch threads, which forked children inherit badly.
    jobs = [(str(p), int(min_frames), backend) for p in paths]
    with multiprocessing.get_context("spawn").Pool(int(workers)) as pool:
        checks = list(progress_bar(pool.imap(_check_for_pool, jobs, chunksize=4), **bar))
    return ScanReport([replace(check, path=p) for check, p in zip(checks, paths)])


def _dataset_root(root: Path, dataset: str) -> Path:
    # Accept the data root (R) as well as the dataset's own folder (R/<dataset>).
    return root / dataset if (root / dataset).is_dir() else root


def list_dataset_records(dataset: str, root: str | os.PathLike, *, split: int = 1, subset: str = "all") -> list:
    """The ``VideoRecord``s a scan covers: one split's ``train``, ``test`` or ``all`` (both, deduplicated).

    For Kinetics ``split`` is ignored; ``train`` reads ``train.csv``, ``test`` reads ``val.csv``, and
    ``all`` reads every CSV present. Layout errors raise ``DatasetLayoutError``. Notebook ``00_setup_and_data``.
    """
    # Imported here: the scan itself works on plain paths and needs no parser.
    from vthcl_lib.datasets import DatasetLayoutError, read_hmdb51_split, read_kinetics_csv, read_ucf101_split

    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r} is not known; expected one of {DATASETS}")
    if subset not in ("train", "test", "all"):
        raise ValueError(f"subset={subset!r} is not known; expected 'train', 'test' or 'all'")
    root = _dataset_root(Path(root), dataset)
    records: list = []
    if dataset == "kinetics400":
        wanted = {"train": ["train"], "test": ["val"], "all": ["train", "val", "test"]}[subset]
        if subset == "all":
            wanted = [name for name in wanted if (root / f"{name}.csv").is_file()] or ["train"]
        for name in wanted:
            records += read_kinetics_csv(root, split=name)[0]
    else:
        reader = read_ucf101_split if dataset == "ucf101" else read_hmdb51_split
        for part in (["train", "test"] if subset == "all" else [subset]):
            records += reader(root, split=split, subset=part)[0]
    if not records:
        raise DatasetLayoutError(f"no videos are listed for {dataset} under '{root}' (split={split}, subset={subset})")
    unique: dict[Path, object] = {}
    for record in records:
        unique.setdefault(Path(record.path), record)
    return list(unique.values())


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m vthcl_lib.scan`` argument parser (notebook ``00_setup_and_data``)."""
    parser = argparse.ArgumentParser(
        prog="python -m vthcl_lib.scan",
        description="Scan a dataset's videos and write the quarantine list of bad files "
        "(exit 0: all good, 1: some bad, 2: wrong layout).",
    )
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--root", required=True, type=Path, help="the dataset folder (R/<dataset>) or the data root R")
    parser.add_argument("--split", type=int, default=1, help="UCF-101/HMDB-51 split 1, 2 or 3 (default 1)")
    parser.add_argument("--subset", choices=("train", "test", "all"), default="all", help="default: all")
    parser.add_argument("--min-frames", type=int, default=1, help="videos with fewer frames are too_short")
    parser.add_argument("--backend", choices=BACKENDS, default="decord")
    parser.add_argument("--workers", type=int, default=0, help="processes for the scan (0: in this process)")
    parser.add_argument("--out", type=Path, default=Path("quarantine.tsv"), help="quarantine TSV (default ./quarantine.tsv)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scan command line; returns the exit code (notebook ``00_setup_and_data``)."""
    from vthcl_lib.datasets import DatasetLayoutError

    args = build_parser().parse_args(argv)
    try:
        records = list_dataset_records(args.dataset, args.root, split=args.split, subset=args.subset)
        report = scan_videos(
            records, min_frames=args.min_frames, backend=args.backend, progress=not args.no_progress, workers=args.workers
        )
    except (DatasetLayoutError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report.write_quarantine(args.out)
    print(report.summary())
    print(f"quarantine list: {args.out}")
    return 0 if not report.bad else 1


if __name__ == "__main__":
    sys.exit(main())
