"""Prepare a downloaded Something-Something V1: lay out, verify and index it, write manifest.json and quarantine.tsv.

    python data_scripts/prepare_something_something.py --videos /dl/20bn-something-something-v1 \
        --annotations /dl/something-something-v1-annotations --out data/something_something_v1

``--videos`` is the extracted frame folder (``<video_id>/00001.jpg ...``, 12 fps JPEGs, 100 pixels high);
``--annotations`` holds ``something-something-v1-{labels,train,validation,test}.csv`` as released
(``<video_id>;<label>``). The folders are linked (``--copy`` copies them), never re-encoded. Options
(``--help``): ``--min-frames``, ``--workers``, ``--strict``. Without ``--videos`` and ``--annotations`` it
verifies ``--out`` in place. The logic lives in ``vthcl_lib.prepare``; the paper trains its Instance
Correspondence Map model on this set (notebook ``10_instance_correspondence_map``).
"""
import sys

from vthcl_lib.prepare import main

if __name__ == "__main__":
    sys.exit(main("something_something_v1"))
