"""UCF-101-style roots: ``R/ucf101/UCF-101/<Class>/*.avi`` and ``R/ucf101/ucfTrainTestlist/``.

Notebook ``00_setup_and_data``.
"""
from __future__ import annotations

import os
from pathlib import Path

from vthcl_lib.datasets.records import (
    DatasetLayoutError,
    VideoRecord,
    _check_split,
    _require_dir,
    _require_file,
    _text_lines,
)


def read_ucf101_split(
    root: str | os.PathLike, split: int = 1, subset: str = "train"
) -> tuple[list[VideoRecord], list[str]]:
    """Records of UCF-101-style ``root`` (``R/ucf101``) for ``split`` 1..3 and ``subset`` "train"/"test".

    Labels are 0-based; class names come from ``classInd.txt`` in id order. The label of a line is
    its class folder (test lists carry no id); a train line's id must agree. Tolerates CRLF and
    trailing blanks. Notebook ``00_setup_and_data``.
    """
    _check_split(split, subset)
    root = Path(root)
    layout = ("R/ucf101/UCF-101/<Class>/v_<Class>_gGG_cCC.avi and "
              "R/ucf101/ucfTrainTestlist/{classInd,trainlist0k,testlist0k}.txt")
    _require_dir(root, f"a UCF-101-style root: {layout}")
    lists_dir, videos_dir = root / "ucfTrainTestlist", root / "UCF-101"
    _require_dir(lists_dir, f"the split lists folder: {layout}")
    _require_dir(videos_dir, f"the video folder: {layout}")
    class_file = lists_dir / "classInd.txt"
    _require_file(class_file, f"lines '<id> <ClassName>' with 1-based ids: {layout}")
    by_id: dict[int, str] = {}
    for line_no, line in _text_lines(class_file):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise DatasetLayoutError(f"'{class_file}' line {line_no}: expected '<id> <ClassName>', got {line!r}")
        by_id[int(parts[0])] = parts[1]
    if sorted(by_id) != list(range(1, len(by_id) + 1)):
        raise DatasetLayoutError(f"'{class_file}': class ids must run 1..{len(by_id)}, got {sorted(by_id)}")
    class_names = [by_id[k] for k in sorted(by_id)]
    # Case-insensitive: the real lists spell some class names with another case than their folder.
    label_of = {name.lower(): k for k, name in enumerate(class_names)}
    list_file = lists_dir / f"{subset}list0{split}.txt"
    _require_file(list_file, f"the {subset} list of split {split}: {layout}")
    records = []
    for line_no, line in _text_lines(list_file):
        parts = line.split()
        rel = parts[0].replace("\\", "/")
        folder = rel.split("/")[0]
        if "/" not in rel or folder.lower() not in label_of or len(parts) > 2:
            raise DatasetLayoutError(
                f"'{list_file}' line {line_no}: expected '<ClassName>/<video>.avi[ <id>]' with a class of "
                f"classInd.txt, got {line!r}"
            )
        label = label_of[folder.lower()]
        if len(parts) == 2 and parts[1] != str(label + 1):
            raise DatasetLayoutError(
                f"'{list_file}' line {line_no}: id {parts[1]} disagrees with class '{folder}' (id {label + 1})"
            )
        path = videos_dir / rel
        records.append(VideoRecord(path=path, video_id=path.stem, label=label))
    return records, class_names
