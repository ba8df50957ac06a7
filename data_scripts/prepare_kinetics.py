"""Prepare a downloaded Kinetics-400: lay out, verify and index it, write manifest.json and quarantine.tsv.

    python data_scripts/prepare_kinetics.py --csv-dir /dl/kinetics400 --videos /dl/kinetics400 --out data/kinetics400

``--csv-dir`` holds ``train.csv`` and ``val.csv`` (``test.csv`` too if present); videos are found
anywhere under ``--videos`` by name (``<youtube_id>_<start:06d>_<end:06d>`` or ``<youtube_id>``;
``.mp4``, ``.webm``, ``.mkv``). Options (``--help``): ``--copy``, ``--short-side 128`` (re-encodes to
H.264 ``.mp4``, a keyframe every ``--gop`` frames, default 32; ``--quality``, ``--preset``), ``--min-frames``,
``--backend``, ``--workers`` (processes for the scan and the re-encodes), ``--strict``. Without ``--videos`` and
``--csv-dir`` it verifies ``--out`` in place. The logic lives in ``vthcl_lib.prepare``
(notebook ``00_setup_and_data``).
"""
import sys

from vthcl_lib.prepare import main

if __name__ == "__main__":
    sys.exit(main("kinetics400"))
