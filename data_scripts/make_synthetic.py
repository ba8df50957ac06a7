"""Write the synthetic video corpus of a preset (notebook ``00_setup_and_data`` does the same via ensure_synthetic).

    python data_scripts/make_synthetic.py --preset ci --out data/synthetic/ci
    python data_scripts/make_synthetic.py --preset demo --out data/synthetic/demo --workers 2
    python data_scripts/make_synthetic.py --preset demo --out data/synthetic/demo --sets ava epic_kitchens

The recognition corpus (Kinetics-, UCF-101- and HMDB-51-style) and the transfer sets (AVA-style for
notebook 08, Epic-Kitchens-style for notebook 09, Something-Something-V1-style frame folders for
notebook 10's ICM model) each carry their own stamp; without ``--force`` a set
made from the same config is kept as it is.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from vthcl_lib.config import resolve_config
from vthcl_lib.synthetic import ensure_synthetic
from vthcl_lib.synthetic_transfer import TRANSFER_WRITERS, ensure_transfer_sets

SETS = ("recognition", *TRANSFER_WRITERS)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, generate (or keep) the corpus and print what is there. Notebook ``00_setup_and_data``."""
    parser = argparse.ArgumentParser(description="Generate the synthetic Kinetics/UCF-101/HMDB-51-style corpus.")
    parser.add_argument("--preset", choices=("ci", "demo"), required=True, help="config preset whose synthetic section is used")
    parser.add_argument("--out", required=True, help="data root to write (e.g. data/synthetic/demo)")
    parser.add_argument("--seed", type=int, default=None, help="corpus seed (default: the preset's synthetic.seed)")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering and encoding in parallel")
    parser.add_argument("--force", action="store_true", help="regenerate even when the stamp matches")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars (logs in CI)")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS),
                        help="which sets to write (default: all): recognition = Kinetics/UCF-101/HMDB-51 styles")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers={args.workers} must be >= 1")

    cfg = resolve_config(args.preset).synthetic
    if args.seed is not None:
        cfg = dataclasses.replace(cfg, seed=args.seed)
    root = Path(args.out)
    start = time.perf_counter()
    if "recognition" in args.sets:
        stamp = ensure_synthetic(root, cfg, workers=args.workers, progress=not args.no_progress, force=args.force)
        verb = "wrote" if stamp["generated"] else "kept existing (config unchanged; --force regenerates)"
        print(f"{verb} synthetic corpus '{root}' (preset {args.preset}, seed {cfg.seed}):")
        for name, count in stamp["counts"].items():
            print(f"  {name:<14} {count['videos']:>6} videos {count['frames']:>9} frames")
        print(f"  stamp: {root / 'corpus.json'}")
    transfer = [s for s in args.sets if s != "recognition"]
    if transfer:
        stamps = ensure_transfer_sets(root, cfg, sets=tuple(transfer), progress=not args.no_progress, force=args.force)
        for name, stamp in stamps.items():
            verb = "wrote" if stamp["generated"] else "kept"
            parts = ", ".join(f"{subset}: " + " ".join(f"{v} {k}" for k, v in c.items()) for subset, c in stamp["counts"].items())
            print(f"  {name:<14} {verb} ({parts}); stamp: {root / name / 'corpus.json'}")
    print(f"time: {time.perf_counter() - start:.1f} s (workers={args.workers})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
