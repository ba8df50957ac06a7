"""Issue 14: why the paper's objective stays at chance at paper_small. A dev tool (minutes of CPU).

Runs :func:`vthcl_lib.engine.bank_positive_probe` (the paper_small objective on the first
``--videos`` pre-training videos) and appends one JSON line per run to ``--out``: the settings
and one record per epoch (loss per term against chance, in-batch retrieval, bank top-1, bank_cos,
spread). ``--fixed`` serves each video's epoch-0 clip at every step (no new augmentation draw).
Any other ``name=value`` is a config override, as on the notebooks' command lines.

    OMP_NUM_THREADS=1 .venv/bin/python tools/bank_probe.py --videos 32 --epochs 60 batch_size=16
    OMP_NUM_THREADS=1 .venv/bin/python tools/bank_probe.py --videos 32 --epochs 60 --fixed batch_size=16
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=32, help="the first N pre-training videos (default 32)")
    parser.add_argument("--epochs", type=int, default=60, help="= bank updates per row (default 60)")
    parser.add_argument("--fixed", action="store_true", help="the same clip of each video at every step")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bank_probe.jsonl"), help="JSON lines appended here")
    parser.add_argument("overrides", nargs="*", help="config overrides name=value (preset paper_small)")
    args = parser.parse_args(argv)
    from vthcl_lib import engine
    from vthcl_lib.config import resolve_config
    try:
        pairs = dict(o.split("=", 1) for o in args.overrides)
    except ValueError:
        print(f"overrides must be name=value, got {args.overrides}", file=sys.stderr)
        return 2
    try:
        cfg = resolve_config("paper_small", base_dir=ROOT, device="cpu", progress=False, epochs=args.epochs,
                             **pairs)
        started = time.perf_counter()
        history = engine.bank_positive_probe(cfg, num_videos=args.videos, fixed_clips=args.fixed)
    except (ValueError, OSError) as err:
        print(f"bank_probe: {err}", file=sys.stderr)
        return 2
    row = {"videos": args.videos, "fixed": args.fixed, "overrides": pairs, "batch_size": cfg.train.batch_size,
           "seconds": round(time.perf_counter() - started, 1), "history": history}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    for r in history[:: max(1, len(history) // 6)] + history[-1:]:
        print({k: round(v, 3) for k, v in r.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
