"""Datasets: annotation parsers for the Kinetics-, UCF-101-, HMDB-51-, AVA- and Epic-Kitchens-style roots,
and the torch datasets.

Taught in notebook ``00_setup_and_data`` (layouts, parsers, bad videos) and ``01_tempo_sampling``
(the pre-training pair). Synthetic and real data share the layouts, so one parser serves both:

* Kinetics: ``R/kinetics400/<split>.csv`` (``label,youtube_id,time_start,time_end,split``) and videos
  ``<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.<ext>`` (or flat under ``<split>/``);
* UCF-101: ``R/ucf101/UCF-101/<Class>/v_<Class>_gGG_cCC.avi`` and ``R/ucf101/ucfTrainTestlist/``
  (``classInd.txt``, ``trainlist0{1,2,3}.txt``, ``testlist0{1,2,3}.txt``);
* HMDB-51: ``R/hmdb51/videos/<class>/<name>.avi`` and
  ``R/hmdb51/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt`` (tag 1 train, 2 test, 0 unused);
* Something-Something V1: ``R/something_something_v1/20bn-something-something-v1/<id>/00001.jpg ...``
  (JPEG frame folders) and ``annotations/something-something-v1-{labels,train,validation,test}.csv``.

Bad videos (DESIGN section 6): a missing, empty, truncated or undecodable file is a counted event,
logged as a warning on the ``vthcl_lib.datasets`` logger with the file's name; the dataset serves
another, deterministically chosen item instead. Once more than ``failure_budget`` distinct bad files
were met, :class:`BadVideoBudgetExceeded` stops the run and names them. Under DataLoader workers each
worker holds its own copy of the dataset and so counts its own bad files (the budget applies per
worker); the ``scan`` step lists every bad file before training.

The package holds one module per dataset format (:mod:`.kinetics`, :mod:`.ucf101`, :mod:`.hmdb51`,
:mod:`.ava`, :mod:`.epic_kitchens`, :mod:`.something_something`),
:mod:`.torch_datasets` (bad-video tracking, the pre-training
pair, labeled clips), :mod:`.frames` (frame sources, the frame-count index) and :mod:`.records` (records, layout errors,
shared helpers); a new format is one new module re-exported here. Every public name is importable
from ``vthcl_lib.datasets``.
"""
from vthcl_lib.datasets.records import (
    ID_VIDEO_EXTENSIONS,
    LOGGER_NAME,
    SPLITS,
    SUBSETS,
    BadVideoBudgetExceeded,
    DatasetLayoutError,
    VideoRecord,
    find_video,
)
from vthcl_lib.datasets.frames import FrameIndex, FrameSource, VideoMeta, frame_source_from_config
from vthcl_lib.datasets.ucf101 import read_ucf101_split
from vthcl_lib.datasets.hmdb51 import read_hmdb51_split
from vthcl_lib.datasets.torch_datasets import (
    AUGMENT_PLACEMENTS,
    LABELED_DATASETS,
    EpochSampler,
    LabeledClipDataset,
    PretrainDataset,
    build_labeled_dataset,
    shared_memory_bytes,
)
from vthcl_lib.datasets.kinetics import (
    KINETICS_COLUMNS,
    KINETICS_EXTENSIONS,
    augment_placement,
    build_pretrain_dataset,
    read_kinetics_csv,
)
from vthcl_lib.datasets.ava import (
    AVA_COLUMNS,
    AvaBox,
    AvaDetectionDataset,
    AvaKeyframe,
    build_ava_datasets,
    collate_keyframes,
    group_ava_keyframes,
    keyframe_key,
    read_ava_csv,
    read_ava_excluded_timestamps,
    read_ava_label_map,
)
from vthcl_lib.datasets.something_something import (
    STHV1_DIR,
    STHV1_SPLITS,
    is_sthv1_root,
    read_sthv1_labels,
    read_sthv1_split,
)
from vthcl_lib.datasets.epic_kitchens import (
    EPIC_COLUMNS,
    EpicAnticipationDataset,
    EpicSegment,
    build_epic_datasets,
    read_epic_action_labels,
    read_video_list,
)

__all__ = [
    "AUGMENT_PLACEMENTS", "EpochSampler", "augment_placement", "shared_memory_bytes",
    "AVA_COLUMNS", "EPIC_COLUMNS", "ID_VIDEO_EXTENSIONS", "KINETICS_COLUMNS", "KINETICS_EXTENSIONS",
    "LABELED_DATASETS", "LOGGER_NAME", "SPLITS", "STHV1_DIR", "STHV1_SPLITS", "SUBSETS",
    "AvaBox", "AvaDetectionDataset", "AvaKeyframe", "BadVideoBudgetExceeded", "DatasetLayoutError",
    "EpicAnticipationDataset", "EpicSegment", "FrameIndex", "FrameSource", "LabeledClipDataset", "PretrainDataset",
    "VideoMeta", "VideoRecord",
    "build_ava_datasets", "build_epic_datasets", "build_labeled_dataset", "build_pretrain_dataset",
    "collate_keyframes", "find_video", "frame_source_from_config", "group_ava_keyframes", "keyframe_key",
    "read_ava_csv", "read_ava_excluded_timestamps", "read_ava_label_map", "read_epic_action_labels",
    "is_sthv1_root", "read_hmdb51_split", "read_kinetics_csv", "read_sthv1_labels", "read_sthv1_split",
    "read_ucf101_split", "read_video_list",
]
