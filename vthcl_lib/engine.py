"""The VTHCL pre-training engine: model, optimiser, schedule, AMP, DDP, exact resume, metrics.

Taught in notebook ``05_hierarchical_pretraining``. One step (VTHCL_SPEC a.9): encode the slow and
the fast clip, project each level with its own head, score against the other view's memory bank,
sum ``lambda^k (L_s^k + L_f^k)``, step SGD, then update the banks with the features of the whole
global batch (gathered across ranks first, so every rank's banks stay identical).

Exact resume: every random draw is a function of ``(seed, epoch, ...)`` (the sampler's order, the
window and augmentation of each clip, each step's negatives), and checkpoints are written at epoch
ends holding model, heads, banks, optimiser, schedule, RNG states and the history. A run killed
after a checkpoint and started again on the same ``run_dir`` redoes the unfinished epoch exactly
and ends, on CPU, with weights bit-identical to an uninterrupted run.

The run contract (DESIGN section 3): a checkpoint is reused or resumed when what defines the method
and the data matches (the model and contrast sections, the data section but :data:`DATA_MECHANICS`,
the seed, the dataset's identity), whatever the paths, workers, backend, cache or progress settings. On resume,
``epochs``, ``lr``, ``momentum``, ``weight_decay`` and ``warmup_epochs`` may change: they take
effect from the resumed epoch and ``metrics.json`` lists them under ``resumes``; ``batch_size``,
``optimizer``, ``max_steps_per_epoch`` and the seed may not (:data:`REFUSED_TRAIN`). A non-finite
loss or gradient stops the run at that step (:class:`TrainingDiverged`); an unreadable checkpoint
(:class:`CheckpointError`) or a failed save (:class:`SaveError`) stops it with the file's name.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import time
import zipfile
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from vthcl_lib.config import Config, validate
from vthcl_lib.contrastive import HierarchicalContrast
from vthcl_lib.datasets import EpochSampler, build_pretrain_dataset, shared_memory_bytes
from vthcl_lib.environment import resolve_device, seed_everything
from vthcl_lib.models import build_heads, encoder_from_config, levels_for
from vthcl_lib.progress import progress_bar
from vthcl_lib.runs import save_metrics, write_json_atomic

LOGGER = logging.getLogger("vthcl_lib.engine")
CHECKPOINT_NAME = "last.pt"
SLOW_ENCODER_NAME = "slow_encoder.pt"
CHECKPOINT_KEYS = ("model", "contrast", "optimizer", "scheduler", "scaler", "epoch", "history", "rng", "config")

# data settings that say where and how the clips are read, not what they are: never compared (every
# other data field -- dataset, tempo, crop, colour augmentation, normalisation -- is, new ones included)
DATA_MECHANICS = ("data_root", "backend", "use_cache", "cache_dir", "num_workers", "failure_budget",
                  "num_test_clips", "augment_on")  # augment_on: where the same augmentation runs (tested equal)
# optimisation settings a resume may change: applied from the resumed epoch and recorded in metrics.json
APPLIED_TRAIN = ("epochs", "lr", "momentum", "weight_decay", "warmup_epochs")
# settings a resume may not change: the optimiser's state, the bank's batches or the schedule's steps
# would no longer fit (precision, channels_last, sync_bn, micro_batch_size, checkpoint_every and
# progress are mechanics: never compared)
REFUSED_TRAIN = ("batch_size", "optimizer", "max_steps_per_epoch")


class RunError(RuntimeError):
    """A run that cannot go on; the message names the file or the step and what to do (notebook ``05_hierarchical_pretraining``)."""


class CheckpointError(RunError):
    """A checkpoint that cannot be read: empty, truncated, garbage, or not ours (notebook ``05_hierarchical_pretraining``)."""


class SaveError(RunError):
    """A checkpoint or metrics file that could not be written: disk full, permission denied (notebook ``05_hierarchical_pretraining``)."""


class TrainingDiverged(RunError):
    """A non-finite loss or gradient: the run stopped before the optimiser step that would spread it.

    Notebook ``05_hierarchical_pretraining``.
    """


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


class VTHCLNet(nn.Module):
    """The slow and the fast encoder with one projection head per level and pathway.

    ``forward(slow, fast)`` returns two dicts level -> L2-normalised ``[B, d]`` embeddings.
    Notebook ``05_hierarchical_pretraining``.
    """

    def __init__(self, model_cfg):
        super().__init__()
        self.levels = levels_for(model_cfg.levels)
        self.slow = encoder_from_config(model_cfg, "slow")
        self.fast = encoder_from_config(model_cfg, "fast")
        head_args = dict(levels=model_cfg.levels, out_dim=model_cfg.embed_dim, kind=model_cfg.head, hidden=model_cfg.head_hidden)
        self.heads_slow = build_heads(self.slow.stage_channels, **head_args)
        self.heads_fast = build_heads(self.fast.stage_channels, **head_args)

    def forward(self, slow: torch.Tensor, fast: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        maps_slow, maps_fast = self.slow(slow), self.fast(fast)
        z_slow = {k: self.heads_slow[k](maps_slow[k]) for k in self.levels}
        z_fast = {k: self.heads_fast[k](maps_fast[k]) for k in self.levels}
        return z_slow, z_fast


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up, then half-period cosine from 1 to 0 (SGDR without restarts; VTHCL_SPEC c.1)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def build_optimizer(params, train_cfg) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's) or AdamW, with the config's weight decay."""
    if train_cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train_cfg.lr, momentum=train_cfg.momentum, weight_decay=train_cfg.weight_decay)
    return torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)


_NEGATIVES, _ORDER = 1, 2  # purposes, so the streams never coincide


def step_seed(seed: int, epoch: int, step: int, purpose: int = _NEGATIVES) -> int:
    """The seed of one step's negatives (or, with ``purpose=_ORDER``, of an epoch's order).

    The same on every rank and after any resume.
    """
    return int(np.random.default_rng([seed, epoch, step, purpose]).integers(2**62))


def make_loader(dataset, cfg: Config, dist: DistContext, epoch: int, device: torch.device) -> DataLoader:
    """This epoch's loader: the order is a function of (seed, epoch), split across ranks when distributed."""
    if cfg.train.batch_size % dist.world_size:
        raise ValueError(f"batch_size={cfg.train.batch_size} must be divisible by the {dist.world_size} ranks")
    per_rank = cfg.train.batch_size // dist.world_size
    if len(dataset) < cfg.train.batch_size:
        raise ValueError(f"batch_size={cfg.train.batch_size} is larger than the {len(dataset)} videos available")
    dataset.set_epoch(epoch)

    def order(epoch: int):  # the epoch rides in each index (EpochSampler): persistent workers follow it
        if dist.distributed:
            sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                         seed=cfg.seed, drop_last=True)
            sampler.set_epoch(epoch)
            return sampler
        return RandomSampler(dataset, generator=torch.Generator().manual_seed(step_seed(cfg.seed, epoch, 0, _ORDER)))
    workers = cfg.data.num_workers
    return DataLoader(dataset, batch_size=per_rank, sampler=EpochSampler(order, len(order(epoch)), epoch),
                      num_workers=workers, drop_last=True, pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0)


def _rng_state() -> dict[str, Any]:
    # plain ints and tensors only, so a checkpoint loads with torch.load(weights_only=True)
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """``torch.save`` through a temp file, fsync and a rename: a kill or a full disk never leaves a half file.

    Raises :class:`SaveError` naming ``path`` when the write fails (disk full, permission denied);
    the previous file at ``path`` is then untouched. Notebook ``05_hierarchical_pretraining``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch's zip writer reports ENOSPC as a RuntimeError
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
        kept = "the previous checkpoint there is unchanged" if path.exists() else "nothing was written"
        raise SaveError(f"could not write '{path}': {reason}; {kept}. Free disk space or fix the folder's "
                        "permissions, then run the same command again to resume") from err
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint of ours, read with ``torch.load(weights_only=True)``: tensors and plain Python only.

    Raises :class:`CheckpointError` naming the file when it is empty, truncated, garbage or not a
    vthcl pre-training checkpoint. Notebook ``05_hierarchical_pretraining``.
    """
    path = Path(path)
    fix = f"move it aside (e.g. mv '{path}' '{path}.bad') to start this run afresh"
    if not zipfile.is_zipfile(path):  # torch.save always writes a zip; an empty or cut file has no directory
        size = path.stat().st_size if path.exists() else 0
        raise CheckpointError(f"checkpoint '{path}' is empty, truncated or not a checkpoint ({size} bytes, not "
                              f"the zip archive torch.save writes); {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, EOFError, zip errors: all mean "unreadable"
        first = (str(err).strip().splitlines() or [""])[0][:160] or type(err).__name__
        if "weights only load failed" in first.lower():
            what = "holds objects a vthcl checkpoint never holds (was it written by another program?)"
        else:
            what = f"is corrupt ({type(err).__name__}: {first})"
        raise CheckpointError(f"checkpoint '{path}' {what}; {fix}") from err
    missing = [k for k in CHECKPOINT_KEYS if k not in state] if isinstance(state, dict) else list(CHECKPOINT_KEYS)
    if missing:
        raise CheckpointError(f"checkpoint '{path}' is not a vthcl pre-training checkpoint (it lacks "
                              f"{', '.join(missing)}); {fix}")
    return state


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples -> lists, so stored and current settings compare equal


def dataset_identity(cfg: Config) -> dict[str, Any]:
    """What the pre-training videos are, independent of where they lie: the dataset's name, a SHA-256
    of its ``train.csv`` and, for a synthetic corpus, of its generator stamp (``corpus.json``).

    Entries that cannot be read are left out (a downstream machine may hold the run but not the data).
    Notebook ``05_hierarchical_pretraining``.
    """
    root = Path(cfg.data.data_root)
    out: dict[str, Any] = {"name": cfg.data.pretrain_dataset}
    csv_path = root / cfg.data.pretrain_dataset / "train.csv"
    if csv_path.is_file():
        out["train_csv_sha256"] = hashlib.sha256(csv_path.read_bytes()).hexdigest()
    stamp = root / "corpus.json"
    if stamp.is_file():
        try:
            record = json.loads(stamp.read_text())
            key = json.dumps({"version": record.get("version"), "config": record.get("config")}, sort_keys=True)
            out["corpus_sha256"] = hashlib.sha256(key.encode()).hexdigest()
        except (ValueError, AttributeError):
            pass
    return out


def _check_resumable(state: dict[str, Any], cfg: Config, path: Path) -> None:
    """Refuse a checkpoint whose method or data differ from ``cfg``'s: that would silently mix two runs.

    Compared: the seed, the model and contrast sections, the data section but :data:`DATA_MECHANICS`,
    the dataset's identity and :data:`REFUSED_TRAIN`; never paths, workers, backend, cache or progress.
    """
    stored, current = _plain(state["config"]), _plain(cfg.to_dict())
    hint = "use a new run_dir or the same settings"
    for section in ("model", "contrast", "data"):
        old = stored.get(section, {})
        # a field the checkpoint predates is not compared: it did not exist when the run was made
        changed = sorted(k for k in current[section]
                         if k in old and old[k] != current[section][k] and not (section == "data" and k in DATA_MECHANICS))
        if changed:
            raise ValueError(f"'{path}' was written with other {section} settings ({', '.join(changed)}); {hint}")
    if stored.get("seed") != current["seed"]:
        raise ValueError(f"'{path}' was written with seed={stored.get('seed')}, not {current['seed']}; {hint}")
    for key in REFUSED_TRAIN:
        old, new = stored.get("train", {}).get(key), current["train"][key]
        if old != new:
            raise ValueError(f"'{path}' was written with {key}={old!r}, not {new!r}; {key} cannot change on "
                             f"resume; {hint}")
    here, there = dataset_identity(cfg), state.get("dataset") or {}
    differ = sorted(k for k in here.keys() & there.keys() if here[k] != there[k])
    if differ:
        raise ValueError(f"'{path}' was trained on other videos than data_root='{cfg.data.data_root}' holds "
                         f"({', '.join(differ)} differ); {hint}")


def _applied_changes(state: dict[str, Any], cfg: Config) -> dict[str, list]:
    """The :data:`APPLIED_TRAIN` settings ``cfg`` changes against the checkpoint: name -> [old, new]."""
    stored, current = _plain(state["config"]).get("train", {}), _plain(cfg.to_dict())["train"]
    return {k: [stored.get(k), current[k]] for k in APPLIED_TRAIN if stored.get(k) != current[k]}


def bank_digest(contrast: HierarchicalContrast) -> str:
    """SHA-256 over every memory bank's bytes: equal digests mean identical banks (checked across ranks)."""
    digest = hashlib.sha256()
    for name, bank in sorted(contrast.banks.items()):
        digest.update(name.encode())
        digest.update(bank.weight.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _gather(tensor: torch.Tensor, dist: DistContext) -> torch.Tensor:
    if not dist.distributed:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.world_size)]
    torch_dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def _mean_over_ranks(values: dict[str, float], dist: DistContext, device: torch.device) -> dict[str, float]:
    if not dist.distributed:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    torch_dist.all_reduce(t)
    return {k: float(v) / dist.world_size for k, v in zip(keys, t.tolist())}


def _autocast(device: torch.device, precision: str):
    if device.type != "cuda" or precision == "fp32":
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _any_rank(flag: bool, dist: DistContext, device: torch.device) -> bool:
    """True when ``flag`` is True on any rank (every rank gets the same answer, so all stop together)."""
    if not dist.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def accumulate_gradients(model: nn.Module, contrast: HierarchicalContrast, slow: torch.Tensor, fast: torch.Tensor,
                         index: torch.Tensor, *, negatives_seed: int, micro_batch_size: int | None = None,
                         precision: str = "fp32", scaler: torch.amp.GradScaler | None = None,
                         ) -> tuple[dict[str, float], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Forward and backward of one (per-rank) batch, whole or in micro-batches; gradients add up in ``.grad``.

    Notebook ``05_hierarchical_pretraining``. Each micro-batch's loss is weighted by its share of
    the batch, and each draws the step's negatives from a generator seeded with ``negatives_seed``,
    so every micro-batch meets the same shared negatives and reads the same, not yet updated, banks:
    the summed gradients equal the whole batch's. Not with BatchNorm in training mode: it normalises
    each micro-batch by that micro-batch's own mean and variance, so a BN model's gradients (and its
    running statistics) differ slightly; the NCE loss also estimates its Z from the first micro-batch
    only. Under DDP the gradients are all-reduced once, on the last micro-batch. Returns the batch's
    mean stats and its detached embeddings per level (for the bank update, once per step).
    """
    batch = slow.shape[0]
    size = micro_batch_size or batch
    if batch % size:
        raise ValueError(f"micro_batch_size={size} must divide each rank's batch of {batch}")
    device = slow.device
    starts = list(range(0, batch, size))
    sums: dict[str, float] = {}
    feats_slow: dict[str, list[torch.Tensor]] = {}
    feats_fast: dict[str, list[torch.Tensor]] = {}
    for i, start in enumerate(starts):
        part = slice(start, start + size)
        sync = i == len(starts) - 1 or not hasattr(model, "no_sync")
        with nullcontext() if sync else model.no_sync():
            with _autocast(device, precision):
                z_slow, z_fast = model(slow[part], fast[part])
            z_slow = {k: v.float() for k, v in z_slow.items()}
            z_fast = {k: v.float() for k, v in z_fast.items()}
            generator = torch.Generator(device=device).manual_seed(negatives_seed)
            loss, stats = contrast(z_slow, z_fast, index[part], generator=generator)
            loss = loss * (size / batch) if size != batch else loss
            (scaler.scale(loss) if scaler is not None else loss).backward()
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + float(value)
        for k in z_slow:
            feats_slow.setdefault(k, []).append(z_slow[k].detach())
            feats_fast.setdefault(k, []).append(z_fast[k].detach())
    stats = {k: v / len(starts) for k, v in sums.items()}
    return stats, {k: torch.cat(v) for k, v in feats_slow.items()}, {k: torch.cat(v) for k, v in feats_fast.items()}


def train_step(model: nn.Module, contrast: HierarchicalContrast, optimizer: torch.optim.Optimizer,
               slow: torch.Tensor, fast: torch.Tensor, index: torch.Tensor, *, negatives_seed: int,
               scheduler=None, scaler: torch.amp.GradScaler | None = None,
               micro_batch_size: int | None = None, precision: str = "fp32",
               check: Callable[[dict[str, float]], None] | None = None,
               gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
    """One training step on one batch, as :func:`pretrain` takes it (notebook ``05_hierarchical_pretraining``).

    Both encoders and the heads at every level, the losses against the banks, backward
    (:func:`accumulate_gradients`), then ``check(stats)`` (it may raise: the weights are still
    untouched), the optimiser step (through ``scaler`` when given), the schedule's step, and last
    the bank update with the batch's detached embeddings (``gather`` collects every rank's first).
    Returns the batch's stats (``loss`` and per-level losses and accuracies).
    """
    optimizer.zero_grad(set_to_none=True)
    stats, z_slow, z_fast = accumulate_gradients(
        model, contrast, slow, fast, index, negatives_seed=negatives_seed,
        micro_batch_size=micro_batch_size, precision=precision, scaler=scaler)
    if check is not None:
        check(stats)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    gather = gather or (lambda t: t)
    with torch.no_grad():  # every rank updates its banks with the whole global batch, once per step
        contrast.update_banks({k: gather(v) for k, v in z_slow.items()},
                              {k: gather(v) for k, v in z_fast.items()}, gather(index))
    return stats


def _level_of(name: str) -> str:
    found = re.search(r"res\d", name)
    return found.group(0) if found else "stem"


def non_finite_report(stats: dict[str, float], net: nn.Module, levels: tuple[str, ...], *,
                      check_grads: bool = True) -> str | None:
    """What is not finite after a backward pass, naming the level; None when the loss and gradients are fine.

    Notebook ``05_hierarchical_pretraining``. Cheap when all is well: one norm over all gradients.
    """
    bad = [k for k in levels if not (math.isfinite(stats[f"{k}/loss_slow"]) and math.isfinite(stats[f"{k}/loss_fast"]))]
    if bad or not math.isfinite(stats["loss"]):
        values = ", ".join(f"{k}/loss_{v}={stats[f'{k}/loss_{v}']:.4g}" for k in bad for v in ("slow", "fast"))
        return (f"the loss is not finite (loss={stats['loss']}) at level {', '.join(bad) or 'sum'}"
                + (f" ({values})" if values else ""))
    if not check_grads:
        return None
    named = [(n, p.grad) for n, p in net.named_parameters() if p.grad is not None]
    if not named:
        return None
    total = torch.nn.utils.get_total_norm([g for _, g in named], error_if_nonfinite=False)
    if torch.isfinite(total):
        return None
    for name, grad in named:  # the slow path, once: which parameter, which level
        if not torch.isfinite(grad).all():
            return f"a gradient is not finite at level {_level_of(name)} (first: {name})"
    return "the gradient norm is not finite (it overflows)"


def _apply_changes(optimizer, scheduler, cfg: Config, factor: float) -> None:
    """After loading the optimiser and schedule: the config's lr, momentum and weight decay from now on."""
    t = cfg.train
    for group in optimizer.param_groups:
        group["initial_lr"] = t.lr
        group["weight_decay"] = t.weight_decay
        if "momentum" in group:
            group["momentum"] = t.momentum
        group["lr"] = t.lr * factor  # the (possibly new) schedule at the resumed step
    scheduler.base_lrs = [t.lr for _ in optimizer.param_groups]
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def pretrain(cfg: Config, *, dist: DistContext | None = None) -> dict[str, Any]:
    """Run (or resume) VTHCL pre-training as ``cfg`` says; returns the metrics written to ``run_dir/metrics.json``.

    Checkpoints go to ``run_dir/checkpoints/last.pt`` (atomic; every ``checkpoint_every`` epochs and
    at the end), the slow encoder alone to ``run_dir/checkpoints/slow_encoder.pt`` for downstream
    use. Started again on the same ``run_dir`` it resumes (see the module docstring for what may
    change). Raises ``ValueError`` for settings or data that cannot work (before any data is read
    when the settings are at fault), :class:`TrainingDiverged`, :class:`CheckpointError` or
    :class:`SaveError`. Notebook ``05_hierarchical_pretraining``.
    """
    validate(cfg)
    dist = dist or DistContext()
    if cfg.train.batch_size % dist.world_size:
        raise ValueError(f"batch_size={cfg.train.batch_size} must be divisible by the {dist.world_size} ranks")
    per_rank = cfg.train.batch_size // dist.world_size
    if cfg.train.micro_batch_size and per_rank % cfg.train.micro_batch_size:
        raise ValueError(f"micro_batch_size={cfg.train.micro_batch_size} must divide each rank's batch of "
                         f"{per_rank} (batch_size={cfg.train.batch_size} over {dist.world_size} ranks)")
    device = resolve_device(cfg.device)
    if device.type == "cuda" and dist.distributed:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    run_dir = Path(cfg.run_dir)
    ckpt_path = run_dir / "checkpoints" / CHECKPOINT_NAME
    state = None
    if ckpt_path.exists():  # checked before the data is read: a refusal costs nothing
        state = load_checkpoint(ckpt_path)
        _check_resumable(state, cfg, ckpt_path)
        if state["epoch"] > cfg.train.epochs:
            raise ValueError(f"'{ckpt_path}' holds {state['epoch']} epochs, more than epochs={cfg.train.epochs}; "
                             "use a new run_dir or epochs >= what it holds")
    seed_everything(cfg.seed)

    dataset = build_pretrain_dataset(cfg, progress=cfg.train.progress and dist.is_main)
    net = VTHCLNet(cfg.model)
    if cfg.train.sync_bn and dist.distributed and device.type == "cuda":
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    net = net.to(device)
    if cfg.train.channels_last and device.type == "cuda":
        net = net.to(memory_format=torch.channels_last_3d)
    contrast = HierarchicalContrast.from_config(
        cfg.contrast, num_items=len(dataset), levels=net.levels, dim=cfg.model.embed_dim,
        generator=torch.Generator().manual_seed(cfg.seed),
    ).to(device)
    model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None) \
        if dist.distributed else net
    optimizer = build_optimizer(net.parameters(), cfg.train)
    loader = make_loader(dataset, cfg, dist, 0, device)  # one loader, persistent workers, for the whole run
    steps_per_epoch = len(loader)
    if dist.is_main and cfg.train.progress:
        print(f"data loader: {dataset.augment_on} augmentation, shared memory per rank up to "
              f"{shared_memory_bytes(dataset, loader.batch_size, cfg.data.num_workers) / 2**20:.1f} MiB "
              f"(bytes per item x batch x workers x prefetch 2)")
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
    total_steps = steps_per_epoch * cfg.train.epochs
    warmup = int(round(cfg.train.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and cfg.train.precision == "fp16")
    identity = dataset_identity(cfg)

    start_epoch, history, resumes = 0, [], []
    if state is not None:
        net.load_state_dict(state["model"])
        contrast.load_state_dict(state["contrast"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        start_epoch, history, resumes = state["epoch"], state["history"], list(state.get("resumes", []))
        changes = _applied_changes(state, cfg)
        _apply_changes(optimizer, scheduler, cfg, lr_factor(scheduler.last_epoch, total_steps, warmup))
        if dist.is_main:
            LOGGER.info("resuming '%s' after epoch %d of %d", ckpt_path, start_epoch, cfg.train.epochs)
        if changes and start_epoch < cfg.train.epochs:
            resumes.append({"epoch": start_epoch, "changed": changes})
            if dist.is_main:
                LOGGER.warning("from epoch %d on: %s", start_epoch + 1,
                               ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items()))
        del state

    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        loader.sampler.set_epoch(epoch)
        sums: dict[str, float] = {}
        started = time.perf_counter()
        bar = progress_bar(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", unit="step",
                           disable=not (cfg.train.progress and dist.is_main), leave=False)
        for step, batch in enumerate(loader):
            if step >= steps_per_epoch:
                break
            slow, fast, index = dataset.finish_batch(batch, device)  # uint8 clips: colour batched on the device
            if cfg.train.channels_last and device.type == "cuda":
                slow, fast = (t.contiguous(memory_format=torch.channels_last_3d) for t in (slow, fast))

            def check(stats: dict[str, float]) -> None:
                # fp16's scaler skips steps with inf gradients by design; the loss is checked all the same
                problem = non_finite_report(stats, net, net.levels, check_grads=not scaler.is_enabled())
                if _any_rank(problem is not None, dist, device):
                    bar.close()
                    raise TrainingDiverged(_diverged_message(
                        problem or "another rank's loss or gradient is not finite",
                        epoch, step, steps_per_epoch, cfg, ckpt_path, optimizer))

            stats = train_step(model, contrast, optimizer, slow, fast, index,
                               negatives_seed=step_seed(cfg.seed, epoch, step), scheduler=scheduler,
                               scaler=scaler, micro_batch_size=cfg.train.micro_batch_size,
                               precision=cfg.train.precision, check=check, gather=lambda t: _gather(t, dist))
            if dist.distributed and contrast.criteria is not None and epoch == start_epoch and step == 0:
                for buffer in contrast.criteria.buffers():  # NCE's Z: rank 0's estimate everywhere
                    torch_dist.broadcast(buffer, src=0)
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            bar.set_postfix(loss=f"{float(stats['loss']):.3f}")
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - started
        means = _mean_over_ranks({k: v / steps_per_epoch for k, v in sums.items()}, dist, device)
        record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "seconds": seconds,
                  "clips_per_s": steps_per_epoch * cfg.train.batch_size / seconds, **means}
        history.append(record)
        last = epoch + 1 == cfg.train.epochs
        failure = None
        if dist.is_main:
            LOGGER.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in record.items()})
            try:
                _save_metrics(run_dir, _metrics(cfg, history, net.levels, resumes))
                if last or (epoch + 1) % cfg.train.checkpoint_every == 0:
                    save_checkpoint(ckpt_path, {
                        "model": net.state_dict(), "contrast": contrast.state_dict(),
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(), "epoch": epoch + 1, "history": history, "rng": _rng_state(),
                        "config": cfg.to_dict(), "dataset": identity, "resumes": resumes,
                    })
            except SaveError as err:
                failure = err
        if _any_rank(failure is not None, dist, device):  # a failed save stops every rank, not just rank 0
            raise failure or SaveError(f"rank 0 could not write into '{run_dir}' (see its message)")
        if dist.distributed:
            torch_dist.barrier()

    if dist.is_main:
        save_checkpoint(run_dir / "checkpoints" / SLOW_ENCODER_NAME,
                        {"slow_encoder": net.slow.state_dict(), "model": cfg.to_dict()["model"], "config": cfg.to_dict()})
    write_json_atomic(run_dir / "ranks" / f"rank{dist.rank}.json",
                      {"rank": dist.rank, "world_size": dist.world_size, "bank_digest": bank_digest(contrast),
                       "bad_videos": dict(dataset.bad_videos)})
    return _metrics(cfg, history, net.levels, resumes)


def _save_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    try:
        save_metrics(run_dir, metrics)
    except OSError as err:
        raise SaveError(f"could not write '{run_dir / 'metrics.json'}': {err.strerror or err}; free disk space or "
                        "fix the folder's permissions, then run the same command again to resume") from err


def _diverged_message(problem: str, epoch: int, step: int, steps: int, cfg: Config, ckpt_path: Path,
                      optimizer) -> str:
    kept = (f"the last good checkpoint '{ckpt_path}' is kept" if ckpt_path.exists()
            else "no checkpoint had been written yet")
    return (f"training diverged at epoch {epoch + 1}/{cfg.train.epochs}, step {step + 1}/{steps}: {problem}; "
            f"stopped before the optimiser step, {kept} and nothing from this step is saved. "
            f"Lower lr (now {optimizer.param_groups[0]['lr']:.3g}, lr={cfg.train.lr:g}) or warm up longer")


def _metrics(cfg: Config, history: list[dict[str, Any]], levels: tuple[str, ...],
             resumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """metrics.json: the config, per-epoch records, the loss per level per epoch (L_s^k + L_f^k) and
    ``resumes``: each resume that changed an optimisation setting (epoch, name -> [old, new])."""
    per_level = {k: [h[f"{k}/loss_slow"] + h[f"{k}/loss_fast"] for h in history] for k in levels}
    return {"job": "pretrain", "preset": cfg.preset, "config": cfg.to_dict(), "epochs": history,
            "loss_per_level": per_level, "levels": list(levels), "resumes": list(resumes or []),
            "final": history[-1] if history else {}}


def checkpoint_is_complete(cfg: Config) -> bool:
    """True when ``run_dir`` holds a finished pre-training run of ``cfg``: same method and data, all epochs.

    False when there is no checkpoint, it is unfinished or it does not fit ``cfg`` (then
    :func:`pretrain` resumes it or says why not). Raises :class:`CheckpointError` naming the file
    when it cannot be read. Paths, workers, backend and cache settings do not matter; a finished
    run trained with other optimisation settings (lr, ...) is reused with a warning naming them.
    Notebooks ``06_action_recognition`` to ``10_instance_correspondence_map`` (through :func:`ensure_pretrained`).
    """
    path = Path(cfg.run_dir) / "checkpoints" / CHECKPOINT_NAME
    if not path.exists():
        return False
    state = load_checkpoint(path)
    try:
        _check_resumable(state, cfg, path)
    except ValueError:
        return False
    if state["epoch"] != cfg.train.epochs:
        return False
    changes = {k: v for k, v in _applied_changes(state, cfg).items() if k != "epochs"}
    if changes:
        LOGGER.warning("reusing the finished run '%s' though it was trained with %s", path,
                       ", ".join(f"{k}={old} (the config says {new})" for k, (old, new) in changes.items()))
    return True


def seed_run(cfg: Config, seed: int, root: str | os.PathLike) -> Config:
    """``cfg`` with ``seed`` and the run folder ``<root>/seed<seed>``: one pre-training per seed.

    Notebooks 06 and 07 compare initialisations over several seeds; each seed gets its own
    pre-training, found (or made) by :func:`ensure_pretrained`.
    """
    return replace(cfg, seed=int(seed), run_dir=str(Path(root) / f"seed{int(seed)}"))


def ensure_pretrained(cfg: Config) -> Path:
    """The slow encoder of ``cfg``'s pre-training: loaded if ``run_dir`` has it, else trained (or resumed) now.

    Later notebooks call this instead of depending on notebook 05 having run.
    """
    if not checkpoint_is_complete(cfg):
        pretrain(cfg)
    return Path(cfg.run_dir) / "checkpoints" / SLOW_ENCODER_NAME


def load_pretrained_net(cfg: Config) -> VTHCLNet:
    """Both encoders and every head of ``cfg``'s pre-training (trained now if missing), in eval mode on the CPU.

    Notebook ``10_instance_correspondence_map`` needs the heads too (the ICM reads phi), which the
    downstream ``slow_encoder.pt`` leaves out.
    """
    ensure_pretrained(cfg)
    state = load_checkpoint(Path(cfg.run_dir) / "checkpoints" / CHECKPOINT_NAME)
    net = VTHCLNet(cfg.model)
    net.load_state_dict(state["model"])
    return net.eval()


def bank_positive_probe(cfg: Config, *, num_videos: int, fixed_clips: bool = False) -> list[dict[str, float]]:
    """Train the config's objective on the first ``num_videos`` pre-training videos; one record per epoch.

    Notebook ``07_linear_probe_and_retrieval`` (issue 14's "why does the paper's objective not
    learn"). Same pieces as :func:`pretrain` (sampler, :func:`accumulate_gradients`, schedule, bank
    update after the step) on a subset, so that each bank row gets ``cfg.train.epochs`` updates
    in minutes. ``fixed_clips=True`` serves every video's epoch-0 clip at every step (no new crop,
    colour draw or window): a bank positive then shows the encoder the same input it was computed
    from. Each record holds ``epoch``, ``updates_per_row`` (= epoch: each row is written once an
    epoch when ``batch_size`` divides ``num_videos``; else the loader drops a different remainder
    each epoch), ``loss_term`` (the top level's slow-query loss), ``chance`` (``log(N + 1)``),
    ``acc`` (in-batch retrieval), ``bank_top1`` (how often a slow query's most similar fast-bank
    row is its own video's, over the epoch, read before the update; chance ``1 / num_videos``),
    ``bank_cos`` and ``spread``. Nothing is written to disk.
    """
    validate(cfg)
    if isinstance(num_videos, bool) or not isinstance(num_videos, int) or num_videos < 2:
        raise ValueError(f"num_videos={num_videos!r} must be a whole number >= 2")
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    dataset = build_pretrain_dataset(cfg, progress=False)
    if num_videos > len(dataset):
        raise ValueError(f"num_videos={num_videos} is more than the {len(dataset)} pre-training videos")
    dataset.records = dataset.records[:num_videos]
    net = VTHCLNet(cfg.model).to(device)
    top = net.levels[-1]
    contrast = HierarchicalContrast.from_config(cfg.contrast, num_items=num_videos, levels=net.levels,
                                                dim=cfg.model.embed_dim,
                                                generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    optimizer = build_optimizer(net.parameters(), cfg.train)
    loader = make_loader(dataset, cfg, DistContext(), 0, device)
    steps = len(loader)
    total, warmup = steps * cfg.train.epochs, int(round(cfg.train.warmup_epochs * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup))
    fixed = {i: dataset[(0, i)][:2] for i in range(num_videos)} if fixed_clips else None
    history = []
    for epoch in range(cfg.train.epochs):
        net.train()
        loader.sampler.set_epoch(epoch)
        sums: dict[str, float] = {}
        for step, batch in enumerate(loader):
            slow, fast, index = dataset.finish_batch(batch, device)
            if fixed is not None:
                slow = torch.stack([fixed[int(i)][0] for i in index]).to(device)
                fast = torch.stack([fixed[int(i)][1] for i in index]).to(device)
            optimizer.zero_grad(set_to_none=True)
            stats, z_slow, z_fast = accumulate_gradients(net, contrast, slow, fast, index,
                                                         negatives_seed=step_seed(cfg.seed, epoch, step))
            with torch.no_grad():  # before the update: the rows the step scored against
                sim = z_slow[top] @ contrast.banks[f"{top}_fast"].weight.T
                stats["bank_top1"] = float((sim.argmax(dim=1) == index.to(sim.device)).float().mean())
            optimizer.step()
            scheduler.step()
            contrast.update_banks(z_slow, z_fast, index)
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        mean = {k: v / steps for k, v in sums.items()}
        history.append({"epoch": epoch + 1, "updates_per_row": epoch + 1, "loss_term": mean[f"{top}/loss_slow"],
                        "chance": math.log(contrast.num_negatives + 1), "acc": mean[f"{top}/acc"],
                        "bank_top1": mean["bank_top1"], "bank_cos": mean[f"{top}/bank_cos"],
                        "spread": mean[f"{top}/spread"]})
    return history
