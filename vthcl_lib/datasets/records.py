"""Records, layout errors and the helpers every dataset format shares.

Notebook ``00_setup_and_data`` (layouts, parsers, bad videos).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


LOGGER_NAME = "vthcl_lib.datasets"  # the one logger of every module of the package
SPLITS = (1, 2, 3)
SUBSETS = ("train", "test")


class DatasetLayoutError(ValueError):
    """A data root lacks the files its layout needs; the message names the file and the expected layout.

    Notebook ``00_setup_and_data``.
    """


class BadVideoBudgetExceeded(RuntimeError):
    """More bad videos than ``failure_budget`` were met; the message lists them (notebook ``00_setup_and_data``)."""


@dataclass(frozen=True)
class VideoRecord:
    """One video of a dataset: its file, an id, an optional 0-based label, frame count and frame rate.

    The builders fill ``num_frames`` and ``fps`` from the frame-count index before training
    (:class:`vthcl_lib.datasets.frames.FrameIndex`), so no item probes its file. Notebook ``00_setup_and_data``.
    """

    path: Path
    video_id: str
    label: int | None = None
    num_frames: int | None = None
    fps: float | None = None


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DatasetLayoutError(f"folder '{path}' does not exist; expected {what}")


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DatasetLayoutError(f"file '{path}' does not exist; expected {what}")


def _check_split(split: int, subset: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not known; expected one of {SPLITS}")
    if subset not in SUBSETS:
        raise ValueError(f"subset={subset!r} is not known; expected one of {SUBSETS}")


def _text_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a text file with their 1-based numbers; CRLF and trailing blanks removed."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


class _FolderIndex:
    """Directory listings read once, so resolving 240k Kinetics rows costs one listing per folder."""

    def __init__(self) -> None:
        self._names: dict[Path, frozenset[str]] = {}

    def contains(self, folder: Path, name: str) -> bool:
        if folder not in self._names:
            try:
                self._names[folder] = frozenset(os.listdir(folder))
            except OSError:
                self._names[folder] = frozenset()
        return name in self._names[folder]


ID_VIDEO_EXTENSIONS = (".mp4", ".MP4", ".mkv", ".webm", ".avi")  # the order a video id's containers are tried in


def find_video(folders: Sequence[Path], video_id: str, *, default_suffix: str = ".mp4",
               listings: dict[Path, set[str]] | None = None) -> Path:
    """The first ``<folder>/<video_id><ext>`` that exists (folders, then :data:`ID_VIDEO_EXTENSIONS`, in order).

    Names are matched exactly against each folder's listing (cached in ``listings`` when given), so a
    case-insensitive file system cannot make ``.mp4`` stand for ``.MP4``. When none exists, the first
    folder's ``<video_id><default_suffix>`` comes back (reported as a missing video later). AVA and
    Epic-Kitchens name videos by id; the loaders here and ``prepare`` resolve them alike.
    Notebooks ``08_action_detection`` and ``09_action_anticipation``.
    """
    listings = {} if listings is None else listings
    for folder in folders:
        if folder not in listings:
            listings[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
        for ext in ID_VIDEO_EXTENSIONS:
            name = f"{video_id}{ext}"
            if name in listings[folder] and (folder / name).is_file():
                return folder / name
    return folders[0] / f"{video_id}{default_suffix}"
