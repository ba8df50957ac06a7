"""Prepare a downloaded AVA v2.2: lay out, verify and index it, write manifest.json and quarantine.tsv.

    python data_scripts/prepare_ava.py --annotations /dl/ava/annotations --videos /dl/ava/videos/trainval --out data/ava

``--annotations`` holds ``ava_train_v2.2.csv``, ``ava_val_v2.2.csv``, ``ava_action_list_v2.2.pbtxt``
and ``ava_{train,val}_excluded_timestamps_v2.2.csv`` (and, copied when present, pySlowFast's person
boxes ``ava_detection_{train,val}_boxes_and_labels.csv``). The videos of the train and val CSVs are
found anywhere under ``--videos`` as ``<video_id>.<mkv|mp4|webm>`` and placed in
``<out>/videos/trainval/``. Options (``--help``): ``--copy``, ``--short-side 256`` (re-encodes to
H.264 ``.mp4``, streamed, a keyframe every ``--gop`` frames, default 32; ``--quality``, ``--preset``),
``--min-frames``, ``--backend``, ``--workers`` (processes for the scan and the re-encodes), ``--strict``. Without ``--videos``
and ``--annotations`` it verifies ``--out`` in place. The logic lives in ``vthcl_lib.prepare``
(notebooks ``00_setup_and_data``, ``08_action_detection``).
"""
import sys

from vthcl_lib.prepare import main

if __name__ == "__main__":
    sys.exit(main("ava"))
