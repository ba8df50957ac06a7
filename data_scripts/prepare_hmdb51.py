"""Prepare a downloaded HMDB-51: lay out, verify and index it, write manifest.json and quarantine.tsv.

    python data_scripts/prepare_hmdb51.py --videos /dl/hmdb51 --splits /dl/testTrainMulti_7030_splits --out data/hmdb51

``--videos`` is the folder of extracted class folders (``<class>/<video>.avi``). Options (``--help``):
``--copy`` copies instead of symlinking, ``--short-side 128`` re-encodes (MPEG-4 ``.avi``,
a keyframe every ``--gop`` frames, default 32; ``--quality``), ``--min-frames``, ``--backend``, ``--workers``
(processes for the scan and the re-encodes), ``--strict``. Without ``--videos`` and ``--splits`` it
verifies ``--out`` in place. The logic lives in ``vthcl_lib.prepare`` (notebook ``00_setup_and_data``).
"""
import sys

from vthcl_lib.prepare import main

if __name__ == "__main__":
    sys.exit(main("hmdb51"))
