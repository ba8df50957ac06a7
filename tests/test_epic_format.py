"""The Epic-Kitchens-55 action-label parser on a fixture in the real file's format."""
from __future__ import annotations

from pathlib import Path

import pytest

from vthcl_lib.datasets import DatasetLayoutError, read_epic_action_labels

FIXTURE = Path(__file__).parent / "fixtures" / "EPIC_train_action_labels.csv"


def test_reads_the_real_format_including_quoted_noun_lists():
    rows = read_epic_action_labels(FIXTURE)
    assert [r.uid for r in rows] == [0, 1, 2, 3]
    first, last = rows[0], rows[-1]
    assert (first.participant_id, first.video_id, first.narration) == ("P01", "P01_01", "open door")
    assert (first.start_frame, first.stop_frame, first.verb, first.verb_class, first.noun, first.noun_class) == \
        (8, 202, "open", 3, "door", 8)
    assert last.narration == "put down knife and fork" and last.action == (1, 4)  # the first noun is the label


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.replace(",stop_frame,", ",end_frame,", 1), "lacks the columns"),
    (lambda t: t.replace(",133,202,", ",x,202,", 1), "line 3"),
    (lambda t: t.replace(",340,459,", ",459,340,", 1), "line 4"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, edit, match):
    bad = tmp_path / "EPIC_train_action_labels.csv"
    bad.write_text(edit(FIXTURE.read_text()))
    with pytest.raises(DatasetLayoutError, match=match):
        read_epic_action_labels(bad)
    with pytest.raises(DatasetLayoutError):
        read_epic_action_labels(tmp_path / "missing.csv")
