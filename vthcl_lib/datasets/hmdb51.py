"""HMDB-51-style roots: ``R/hmdb51/videos/<class>/*.avi`` and ``testTrainMulti_7030_splits/``.

Notebook ``00_setup_and_data``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from vthcl_lib.datasets.records import (
    DatasetLayoutError,
    VideoRecord,
    _check_split,
    _require_dir,
    _text_lines,
)


_HMDB_SPLIT_FILE = re.compile(r"^(?P<name>.+)_test_split(?P<split>[123])\.txt$")


def read_hmdb51_split(
    root: str | os.PathLike, split: int = 1, subset: str = "train"
) -> tuple[list[VideoRecord], list[str]]:
    """Records of HMDB-51-style ``root`` (``R/hmdb51``) for ``split`` 1..3 and ``subset`` "train"/"test".

    Class ids are the sorted class names, 0-based; tag 1 lines are train, 2 test, 0 unused (left
    out). Tolerates CRLF and trailing blanks. Notebook ``00_setup_and_data``.
    """
    _check_split(split, subset)
    root = Path(root)
    layout = "R/hmdb51/videos/<class>/<name>.avi and R/hmdb51/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt"
    _require_dir(root, f"an HMDB-51-style root: {layout}")
    splits_dir, videos_dir = root / "testTrainMulti_7030_splits", root / "videos"
    _require_dir(splits_dir, f"the split files folder: {layout}")
    _require_dir(videos_dir, f"the video folder: {layout}")
    split_files = {}
    for entry in splits_dir.iterdir():
        match = _HMDB_SPLIT_FILE.match(entry.name)
        if match and int(match["split"]) == split:
            split_files[match["name"]] = entry
    if not split_files:
        raise DatasetLayoutError(
            f"folder '{splits_dir}' holds no '<class>_test_split{split}.txt' files; expected {layout}"
        )
    class_names = sorted(split_files)
    wanted_tag = "1" if subset == "train" else "2"
    records = []
    for label, name in enumerate(class_names):
        for line_no, line in _text_lines(split_files[name]):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DatasetLayoutError(
                    f"'{split_files[name]}' line {line_no}: expected '<video>.avi <tag>' with tag 0, 1 or 2, "
                    f"got {line!r}"
                )
            if parts[1] == wanted_tag:
                path = videos_dir / name / parts[0]
                records.append(VideoRecord(path=path, video_id=path.stem, label=label))
    return records, class_names
