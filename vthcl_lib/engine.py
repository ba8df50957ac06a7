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
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from vthcl_lib.config import Config
from vthcl_lib.contrastive import HierarchicalContrast
from vthcl_lib.datasets import EpochSampler, build_pretrain_dataset, shared_memory_bytes
from vthcl_lib.environment import resolve_device, seed_everything
from vthcl_lib.models import build_heads, encoder_from_config, levels_for
from vthcl_lib.runs import save_metrics, write_json_atomic

LOGGER = logging.getLogger("vthcl_lib.engine")
CHECKPOINT_NAME = "last.pt"
SLOW_ENCODER_NAME = "slow_encoder.pt"


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
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """``torch.save`` through a temp file and a rename: a kill never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check_resumable(stored: dict[str, Any], cfg: Config, path: Path) -> None:
    """Refuse to resume a run whose model, objective or data differ: that would silently mix two runs."""
    current = cfg.to_dict()
    for section in ("model", "contrast", "data"):
        if stored.get(section) != current[section]:
            changed = sorted(k for k in current[section] if stored.get(section, {}).get(k) != current[section][k])
            raise ValueError(f"'{path}' was written with other {section} settings ({', '.join(changed)}); "
                             "use a new run_dir or the same settings")
    if stored["train"]["batch_size"] != cfg.train.batch_size:
        raise ValueError(f"'{path}' was written with batch_size={stored['train']['batch_size']}, not {cfg.train.batch_size}")


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


def pretrain(cfg: Config, *, dist: DistContext | None = None) -> dict[str, Any]:
    """Run (or resume) VTHCL pre-training as ``cfg`` says; returns the metrics written to ``run_dir/metrics.json``.

    Checkpoints go to ``run_dir/checkpoints/last.pt`` (atomic; every ``checkpoint_every`` epochs and
    at the end), the slow encoder alone to ``run_dir/checkpoints/slow_encoder.pt`` for downstream
    use. Started again on the same ``run_dir`` it resumes. Notebook ``05_hierarchical_pretraining``.
    """
    dist = dist or DistContext()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and dist.distributed:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    run_dir = Path(cfg.run_dir)
    ckpt_path = run_dir / "checkpoints" / CHECKPOINT_NAME
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

    start_epoch, history = 0, []
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        _check_resumable(state["config"], cfg, ckpt_path)
        net.load_state_dict(state["model"])
        contrast.load_state_dict(state["contrast"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        start_epoch, history = state["epoch"], state["history"]
        if dist.is_main:
            LOGGER.warning("resuming '%s' after epoch %d of %d", ckpt_path, start_epoch, cfg.train.epochs)

    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        loader.sampler.set_epoch(epoch)
        sums: dict[str, float] = {}
        started = time.perf_counter()
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                   disable=not (cfg.train.progress and dist.is_main), leave=False)
        for step, batch in enumerate(loader):
            if step >= steps_per_epoch:
                break
            slow, fast, index = dataset.finish_batch(batch, device)  # uint8 clips: colour batched on the device
            if cfg.train.channels_last and device.type == "cuda":
                slow, fast = (t.contiguous(memory_format=torch.channels_last_3d) for t in (slow, fast))
            generator = torch.Generator(device=device).manual_seed(step_seed(cfg.seed, epoch, step))
            with _autocast(device, cfg.train.precision):
                z_slow, z_fast = model(slow, fast)
            z_slow = {k: v.float() for k, v in z_slow.items()}
            z_fast = {k: v.float() for k, v in z_fast.items()}
            loss, stats = contrast(z_slow, z_fast, index, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if dist.distributed and contrast.criteria is not None and epoch == start_epoch and step == 0:
                for buffer in contrast.criteria.buffers():  # NCE's Z: rank 0's estimate everywhere
                    torch_dist.broadcast(buffer, src=0)
            with torch.no_grad():  # every rank updates its banks with the whole global batch
                contrast.update_banks({k: _gather(v.detach(), dist) for k, v in z_slow.items()},
                                      {k: _gather(v.detach(), dist) for k, v in z_fast.items()}, _gather(index, dist))
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            bar.update(1)
            bar.set_postfix(loss=f"{float(stats['loss']):.3f}")
        bar.close()
        seconds = time.perf_counter() - started
        means = _mean_over_ranks({k: v / steps_per_epoch for k, v in sums.items()}, dist, device)
        record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "seconds": seconds,
                  "clips_per_s": steps_per_epoch * cfg.train.batch_size / seconds, **means}
        history.append(record)
        last = epoch + 1 == cfg.train.epochs
        if dist.is_main:
            LOGGER.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in record.items()})
            save_metrics(run_dir, _metrics(cfg, history, net.levels))
            if last or (epoch + 1) % cfg.train.checkpoint_every == 0:
                save_checkpoint(ckpt_path, {
                    "model": net.state_dict(), "contrast": contrast.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch + 1,
                    "history": history, "rng": _rng_state(), "config": cfg.to_dict(),
                })
        if dist.distributed:
            torch_dist.barrier()

    if dist.is_main:
        save_checkpoint(run_dir / "checkpoints" / SLOW_ENCODER_NAME,
                        {"slow_encoder": net.slow.state_dict(), "model": cfg.to_dict()["model"], "config": cfg.to_dict()})
    write_json_atomic(run_dir / "ranks" / f"rank{dist.rank}.json",
                      {"rank": dist.rank, "world_size": dist.world_size, "bank_digest": bank_digest(contrast),
                       "bad_videos": dict(dataset.bad_videos)})
    return _metrics(cfg, history, net.levels)


def _metrics(cfg: Config, history: list[dict[str, Any]], levels: tuple[str, ...]) -> dict[str, Any]:
    """metrics.json: the config, per-epoch records, and the loss per level per epoch (L_s^k + L_f^k)."""
    per_level = {k: [h[f"{k}/loss_slow"] + h[f"{k}/loss_fast"] for h in history] for k in levels}
    return {"job": "pretrain", "preset": cfg.preset, "config": cfg.to_dict(), "epochs": history,
            "loss_per_level": per_level, "levels": list(levels),
            "final": history[-1] if history else {}}


def checkpoint_is_complete(cfg: Config) -> bool:
    """True when ``run_dir`` holds a finished pre-training run of ``cfg`` (all epochs)."""
    path = Path(cfg.run_dir) / "checkpoints" / CHECKPOINT_NAME
    if not path.exists():
        return False
    state = torch.load(path, map_location="cpu", weights_only=False)
    try:
        _check_resumable(state["config"], cfg, path)
    except ValueError:
        return False
    return state["epoch"] >= cfg.train.epochs


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
    state = torch.load(Path(cfg.run_dir) / "checkpoints" / CHECKPOINT_NAME, map_location="cpu", weights_only=False)
    net = VTHCLNet(cfg.model)
    net.load_state_dict(state["model"])
    return net.eval()
