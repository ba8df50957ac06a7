"""Prepare a downloaded Epic-Kitchens-55: lay out, verify and index it, write the anticipation split,
manifest.json and quarantine.tsv.

    python data_scripts/prepare_epic_kitchens.py --annotations /dl/epic-kitchens-55-annotations \
        --videos /dl/EPIC_KITCHENS_2018/videos/train --val-videos /dl/anticipation_val_videos.txt --out data/epic_kitchens

``--annotations`` holds ``EPIC_train_action_labels.csv`` (and, copied when present,
``EPIC_verb_classes.csv`` and ``EPIC_noun_classes.csv``). The labelled videos are found anywhere
under ``--videos`` (``<participant>/<video_id>.MP4`` as downloaded, or flat) and placed in
``<out>/videos/train/<participant>/``. ``--val-videos`` names the anticipation validation videos,
one id a line (the paper follows the Epic baseline's 232 train / 40 val videos); the rest train.
Without it, lists already in ``<out>/splits`` are kept, else the default holds out the last video
(by id) of each participant with at least 2 videos and says so. Options (``--help``): ``--copy``,
``--short-side 256`` (re-encodes to H.264 ``.MP4``, streamed, so an hour-long video needs one
chunk of memory; a keyframe every ``--gop`` frames, default 32; ``--quality``, ``--preset``),
``--min-frames``, ``--backend``, ``--workers`` (processes for the scan and the re-encodes),
``--strict``. Without ``--videos`` and ``--annotations`` it verifies ``--out`` in place. The logic
lives in ``vthcl_lib.prepare`` (notebooks ``00_setup_and_data``, ``09_action_anticipation``).
"""
import sys

from vthcl_lib.prepare import main

if __name__ == "__main__":
    sys.exit(main("epic_kitchens"))
