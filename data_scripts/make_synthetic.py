"""Write the synthetic video corpus of a preset (notebook ``00_setup_and_data`` does the same via ensure_synthetic).

    python data_scripts/make_synthetic.py --preset ci --out data/synthetic/ci
    python data_scripts/make_synthetic.py --preset demo --out data/synthetic/demo --workers 2

Without ``--force`` an existing corpus made from the same config is kept as it is.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from vthcl_lib.config import resolve_config
from vthcl_lib.synthetic import ensure_synthetic


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, generate (or keep) the corpus and print what is there. Notebook ``00_setup_and_data``."""
    parser = argparse.ArgumentParser(description="Generate the synthetic Kinetics/UCF-101/HMDB-51-style corpus.")
    parser.add_argument("--preset", choices=("ci", "demo"), required=True, help="config preset whose synthetic section is used")
    parser.add_argument("--out", required=True, help="data root to write (e.g. data/synthetic/demo)")
    parser.add_argument("--seed", type=int, default=None, help="corpus seed (default: the preset's synthetic.seed)")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering and encoding in parallel")
    parser.add_argument("--force", action="store_true", help="regenerate even when the stamp matches")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars (logs in CI)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers={args.workers} must be >= 1")

    cfg = resolve_config(args.preset).synthetic
    if args.seed is not None:
        cfg = dataclasses.replace(cfg, seed=args.seed)
    root = Path(args.out)
    start = time.perf_counter()
    stamp = ensure_synthetic(root, cfg, workers=args.workers, progress=not args.no_progress, force=args.force)
    seconds = time.perf_counter() - start
    verb = "wrote" if stamp["generated"] else "kept existing (config unchanged; --force regenerates)"
    print(f"{verb} synthetic corpus '{root}' (preset {args.preset}, seed {cfg.seed}):")
    for name, count in stamp["counts"].items():
        print(f"  {name:<12} {count['videos']:>6} videos {count['frames']:>9} frames")
    print(f"  stamp: {root / 'corpus.json'}")
    print(f"time: {seconds:.1f} s (workers={args.workers})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
