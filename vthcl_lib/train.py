"""Command line: ``python -m vthcl_lib.train --config FILE [key=value ...]``.

The config file is a papermill parameters YAML from ``notebooks/params/`` (``PRESET: ci`` and
friends); ``key=value`` pairs override single fields by name (``run_dir=runs/x epochs=2 seed=0``).
Running the same command again on the same ``run_dir`` resumes. Under ``torchrun`` each process
joins the process group (gloo on CPU, NCCL on GPU) from the environment torchrun sets.

Taught in notebook ``05_hierarchical_pretraining``. Like a notebook, this entry point is where
environment variables are read (torchrun's RANK, WORLD_SIZE, LOCAL_RANK); the library takes them
as arguments.

Every expected failure (a bad setting, missing data, too many bad videos, an unreadable checkpoint, a
failed save, a diverged loss, out of memory) prints one ``error: ...`` message on stderr and exits
with code 2 (settings and input) or 1 (the run went wrong), never a traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

import torch
import torch.distributed as torch_dist

from vthcl_lib.config import config_from_params, load_params_file
from vthcl_lib.datasets import BadVideoBudgetExceeded
from vthcl_lib.engine import DistContext, RunError, pretrain

JOBS = ("pretrain",)


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """``["epochs=2", "RUN_DIR=runs/x"]`` -> ``{"epochs": "2", "run_dir": "runs/x"}``; malformed pairs are errors."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {pair!r} is not of the form key=value")
        out[key.strip().lower()] = value
    return out


def _dist_from_env() -> DistContext:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistContext(rank=int(os.environ.get("RANK", "0")), world_size=world,
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vthcl_lib.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a parameters YAML, e.g. notebooks/params/ci.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value pairs (run_dir=..., epochs=..., seed=...)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        params = load_params_file(args.config)
        params.update(parse_overrides(args.overrides))
        job = str(params.pop("job", "pretrain"))
        if job not in JOBS:
            raise ValueError(f"job={job!r} is not known; expected one of {JOBS}")
        cfg = config_from_params(params)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    dist = _dist_from_env()
    if dist.distributed:
        backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
        torch_dist.init_process_group(backend=backend)
    try:
        metrics = pretrain(cfg, dist=dist)
    except ValueError as err:  # wrong settings or data (a missing data root, no GPU for device=cuda, ...)
        return _fail(err, dist, 2, every_rank=False)
    except (RunError, BadVideoBudgetExceeded) as err:  # the run went wrong: diverged, unreadable or unsaved
        return _fail(err, dist, 1, every_rank=False)
    except torch.OutOfMemoryError as err:
        return _fail(f"out of memory ({str(err).splitlines()[0]}); set micro_batch_size to a divisor of "
                     f"each rank's batch ({cfg.train.batch_size // dist.world_size}) to accumulate gradients", dist, 1)
    except OSError as err:  # a disk or permission problem outside the checkpoint code (data, cache)
        return _fail(err, dist, 1)
    except KeyboardInterrupt:
        return _fail("interrupted; run the same command again to resume from the last checkpoint", dist, 130)
    finally:
        if dist.distributed and torch_dist.is_initialized():
            torch_dist.destroy_process_group()
    if dist.is_main:
        final = metrics["final"]
        print(f"done: {len(metrics['epochs'])} epochs, final loss {final.get('loss', float('nan')):.4f}; "
              f"metrics in {cfg.run_dir}/metrics.json")
    return 0


def _fail(err: BaseException | str, dist: DistContext, code: int, *, every_rank: bool = True) -> int:
    """The message on stderr, and the exit code.

    Settings, data, checkpoint, save and divergence errors are the same on every rank (the engine
    makes the ranks agree), so under torchrun rank 0 alone says them; the others (out of memory, a
    local disk) are said by each rank that meets them, prefixed with its rank.
    """
    if dist.is_main or every_rank:
        prefix = f"[rank {dist.rank}] " if dist.distributed and every_rank else ""
        print(f"{prefix}error: {err}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
