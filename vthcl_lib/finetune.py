"""Fine-tuning the slow encoder for action recognition on UCF-101 / HMDB-51 (VTHCL_SPEC c.2).

Taught in notebook ``06_action_recognition``. The protocol: the slow encoder (8 frames at the
slow stride), global average pooling of res5, dropout, one linear classifier; SGD with the lr
divided by 10 at fixed epochs (the paper: 0.1, /10 at 40 and 80 of 100, batch 64); testing on 10
uniformly spaced clips per video whose softmax probabilities are averaged (video-level accuracy,
the number the paper reports), with the clip-level accuracy beside it.

Initialisations (:func:`init_slow_encoder`): ``"random"`` (the encoder's own initialisation under
the run's seed), ``"vthcl"`` (our pre-training's ``slow_encoder.pt``) and ``"external"`` (any
checkpoint :func:`vthcl_lib.checkpoints.load_slow_encoder` reads, e.g. the official weights, with
its load report).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vthcl_lib.checkpoints import LoadReport, load_slow_encoder
from vthcl_lib.config import Config, load_params_file, resolve_config
from vthcl_lib.datasets import BadVideoBudgetExceeded, LabeledClipDataset, build_labeled_dataset
from vthcl_lib.engine import checkpoint_is_complete, ensure_pretrained, save_checkpoint, seed_run
from vthcl_lib.environment import resolve_device, seed_everything
from vthcl_lib.evaluate import autocast_context, clip_and_video_accuracy, downstream_loader
from vthcl_lib.models import ResNet3D, encoder_from_config
from vthcl_lib.progress import progress_bar
from vthcl_lib.runs import save_metrics
from vthcl_lib.video import VideoDecodeError

INITS = ("random", "vthcl", "external")
LOGGER = logging.getLogger("vthcl_lib.finetune")


class VideoClassifier(nn.Module):
    """Slow encoder -> global average pool of ``level`` -> dropout -> linear (notebook ``06_action_recognition``).

    ``forward(x [B, 3, T, H, W])`` returns logits ``[B, num_classes]``.
    """

    def __init__(self, encoder: ResNet3D, num_classes: int, *, dropout: float = 0.5, level: str = "res5"):
        super().__init__()
        if level not in encoder.stage_channels:
            raise ValueError(f"level={level!r}; expected one of {sorted(encoder.stage_channels)}")
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes={num_classes!r}; expected a whole number >= 2")
        self.encoder, self.level = encoder, level
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(encoder.stage_channels[level], int(num_classes))
        nn.init.normal_(self.fc.weight, std=0.01)  # pySlowFast/TPN heads start near zero
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature = self.encoder(x)[self.level].mean(dim=(2, 3, 4))
        return self.fc(self.dropout(feature))


def init_slow_encoder(cfg: Config, init: str, *, checkpoint: str | os.PathLike | None = None,
                      seed: int | None = None, zero_init_residual: bool = True,
                      **overrides: Any) -> tuple[ResNet3D, LoadReport | None]:
    """The slow encoder a downstream run starts from: ``(encoder, load report or None)``.

    Notebook ``06_action_recognition``. ``init="random"`` builds ``cfg.model``'s slow encoder with
    ``torch.manual_seed(seed)`` (default ``cfg.seed``), the initialisation pre-training itself starts
    from (``zero_init_residual=False`` keeps every residual branch active: the stronger random
    baseline for frozen features, notebook 07); ``"vthcl"`` and ``"external"`` load ``checkpoint`` into that architecture and return the
    :class:`~vthcl_lib.checkpoints.LoadReport` (print it: missing and unexpected keys, shape
    mismatches, whether BatchNorm statistics came with the weights). ``overrides`` go to the
    encoder builder (detection: ``res5_stride=1, res5_dilation=2``, notebook ``08_action_detection``).
    """
    if init not in INITS:
        raise ValueError(f"init={init!r}; expected one of {INITS}")
    if init == "random":
        if checkpoint is not None:
            raise ValueError("init='random' takes no checkpoint; use init='vthcl' or 'external' to load one")
        torch.manual_seed(cfg.seed if seed is None else int(seed))
        return encoder_from_config(cfg.model, "slow", zero_init_residual=zero_init_residual, **overrides), None
    if checkpoint is None:
        raise ValueError(f"init={init!r} needs checkpoint=<path to the weights>")
    return load_slow_encoder(checkpoint, model_cfg=cfg.model, overrides=overrides)


def checkpoint_for(cfg: Config, init: str, *, seed: int, pretrain_root: str | os.PathLike,
                   external: str | os.PathLike | None = None) -> Path | None:
    """The weights an initialisation starts from: None (random), seed ``seed``'s VTHCL pre-training, or ``external``.

    Notebooks ``06_action_recognition`` and ``07_linear_probe_and_retrieval``. For ``"vthcl"`` the
    pre-training of ``cfg`` with this seed lives in ``<pretrain_root>/seed<seed>`` and is trained
    there now if it is missing or unfinished (:func:`vthcl_lib.engine.ensure_pretrained`).
    """
    if init not in INITS:
        raise ValueError(f"init={init!r}; expected one of {INITS}")
    if init == "random":
        return None
    if init == "external":
        if external is None:
            raise ValueError("init='external' needs the path of the weights (EXTERNAL_CHECKPOINT)")
        if not Path(external).is_file():
            raise FileNotFoundError(f"external checkpoint '{external}' does not exist")
        return Path(external)
    return ensure_pretrained(seed_run(cfg, seed, pretrain_root))


def result_row(record: dict[str, Any], init: str) -> dict[str, Any]:
    """One summary row from a :func:`finetune` record (notebook ``06_action_recognition``)."""
    keys = ("seed", "split", "dataset", "top1", "clip_top1")
    return {"protocol": "finetune", "init": init, **{k: record[k] for k in keys}}


def step_lr(epoch: float, base_lr: float, milestones: tuple[int, ...], warmup_epochs: float = 0.0) -> float:
    """A step schedule at a (fractional) epoch: linear warm-up, then ``base_lr`` divided by 10 at each milestone.

    The schedule of every downstream protocol (notebooks ``06_action_recognition``,
    ``08_action_detection``, ``09_action_anticipation``).
    """
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return base_lr * (epoch + 1e-3) / warmup_epochs
    return base_lr * 0.1 ** sum(epoch >= m for m in milestones)


@dataclass(frozen=True)
class StepSchedule:
    """SGD with momentum and a step learning rate: what every downstream protocol trains with (notebooks 06, 08, 09)."""

    epochs: int
    batch_size: int
    lr: float
    milestones: tuple[int, ...]
    warmup_epochs: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 1e-4

    def lr_at(self, epoch: float) -> float:
        return step_lr(epoch, self.lr, self.milestones, self.warmup_epochs)


def train_with_schedule(model: nn.Module, train_set: Any, batch_loss: Callable[[Any], tuple],
                        schedule: StepSchedule, *, seed: int, stream: int, num_workers: int = 0,
                        collate_fn: Callable | None = None, desc: str = "train", progress: bool = True,
                        device: Any = None, precision: str = "fp32") -> list[dict]:
    """Train ``model`` (in train mode, BatchNorm included) with ``schedule``; returns per-epoch ``{epoch, loss, lr}``.

    ``batch_loss(batch) -> (mean loss, items)`` runs the model on one batch; a third value, the number
    of correct predictions, adds ``train_top1`` to the history. The batch order of epoch e follows
    ``default_rng([seed, e, stream])``, so runs repeat exactly on a CPU, with any ``num_workers``
    (:func:`~vthcl_lib.evaluate.downstream_loader`; its workers persist across epochs).
    ``batch_loss`` runs under :func:`~vthcl_lib.evaluate.autocast_context` (``precision`` on a CUDA
    ``device``; fp16 adds a gradient scaler). Notebooks ``06_action_recognition``,
    ``08_action_detection`` and ``09_action_anticipation``.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=schedule.lr, momentum=schedule.momentum,
                                weight_decay=schedule.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and precision == "fp16")
    steps_per_epoch = max(1, len(train_set) // schedule.batch_size)
    loader = downstream_loader(
        train_set, batch_size=schedule.batch_size, num_workers=num_workers, device=device,
        epoch_seed=lambda epoch: int(np.random.default_rng([seed, epoch, stream]).integers(2**62)),
        drop_last=len(train_set) >= schedule.batch_size, collate_fn=collate_fn)
    history = []
    bar = progress_bar(range(schedule.epochs), desc=desc, disable=not progress)
    for epoch in bar:
        train_set.set_epoch(epoch)
        loader.sampler.set_epoch(epoch)
        model.train()
        total, seen, correct = 0.0, 0, None
        for step, batch in enumerate(loader):
            for group in optimizer.param_groups:
                group["lr"] = schedule.lr_at(epoch + step / steps_per_epoch)
            with autocast_context(device, precision):
                loss, items, *hits = batch_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach()) * items
            seen += items
            if hits:
                correct = (correct or 0) + int(hits[0])
        record = {"epoch": epoch + 1, "loss": total / max(seen, 1)}
        if correct is not None:
            record["train_top1"] = correct / max(seen, 1)
        history.append({**record, "lr": schedule.lr_at(epoch)})
        bar.set_postfix(loss=f"{total / max(seen, 1):.4f}")
    return history


def lr_at(epoch: float, cfg: Config) -> float:
    """The fine-tuning learning rate at a (fractional) epoch (:func:`step_lr` of ``cfg.finetune``).

    Notebook ``06_action_recognition`` plots it.
    """
    f = cfg.finetune
    return step_lr(epoch, f.finetune_lr, f.finetune_milestones, f.finetune_warmup_epochs)


def num_classes_of(*datasets: LabeledClipDataset) -> int:
    """Largest label + 1 over the datasets' records (notebook ``06_action_recognition``)."""
    return 1 + max(int(r.label) for d in datasets for r in d.records)


@torch.no_grad()
def predict_clips(model: nn.Module, test_set: Any, *, batch_size: int, device: torch.device,
                  num_workers: int = 0, precision: str = "fp32",
                  progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of every test clip: ``([V, K, C], labels [V])`` for a test-mode dataset (notebook ``06_action_recognition``).

    Each item is one video's K clips, decoded together; ``num_workers`` loader workers read them
    (:func:`~vthcl_lib.evaluate.downstream_loader`) and the model runs under
    :func:`~vthcl_lib.evaluate.autocast_context` (``precision``). Logits come back float32.
    """
    model.eval()
    logits, labels = [], []
    loader = downstream_loader(test_set, batch_size=max(1, batch_size // 4), num_workers=num_workers, device=device)
    for clips, label, _ in progress_bar(loader, desc="test clips", disable=not progress, leave=False):
        b, k = clips.shape[:2]
        with autocast_context(device, precision):
            out = model(clips.reshape(b * k, *clips.shape[2:]).to(device, non_blocking=True))
        logits.append(out.float().reshape(b, k, -1).cpu())
        labels.append(torch.as_tensor(label).reshape(-1))
    return torch.cat(logits), torch.cat(labels)


def finetune(cfg: Config, encoder: ResNet3D, *, dataset: str | None = None, split: int = 1,
             seed: int | None = None, progress: bool = True,
             save_to: str | os.PathLike | None = None) -> dict[str, Any]:
    """Fine-tune ``encoder`` on one split and test it; returns the run's record.

    Notebook ``06_action_recognition``. Data: :func:`~vthcl_lib.datasets.build_labeled_dataset`
    (train: augmented clips; test: ``num_test_clips`` uniformly spaced clips per video). The order of
    the training clips and the dropout masks follow ``seed`` (default ``cfg.seed``). The record:
    ``{"dataset", "split", "seed", "top1"`` (video level, 10-clip softmax average), ``"video_top1",
    "clip_top1"`` (each clip alone, labelled as such), ``"video_top5"`` (with >= 5 classes),
    ``"num_train", "num_test", "num_classes", "history"`` (per epoch: loss, train top-1, lr)``}``.
    With ``save_to`` the fine-tuned classifier is written there (atomically) before testing:
    ``{"model": state dict of the VideoClassifier, "num_classes", "dataset", "split", "seed", "config"}``.
    """
    f = cfg.finetune
    dataset = dataset or f.finetune_dataset
    seed = cfg.seed if seed is None else int(seed)
    device = resolve_device(cfg.device)
    train_set = build_labeled_dataset(cfg, dataset, split, "train", progress=progress)
    test_set = build_labeled_dataset(cfg, dataset, split, "test", progress=progress)
    if len(train_set) < f.finetune_batch_size:
        raise ValueError(f"finetune_batch_size={f.finetune_batch_size} is larger than the {len(train_set)} "
                         f"training videos of {dataset} split {split}")
    num_classes = num_classes_of(train_set, test_set)
    torch.manual_seed(seed)  # the classifier's initialisation and the dropout masks
    model = VideoClassifier(encoder, num_classes, dropout=f.dropout).to(device)
    schedule = StepSchedule(f.finetune_epochs, f.finetune_batch_size, f.finetune_lr, f.finetune_milestones,
                            f.finetune_warmup_epochs, f.finetune_momentum, f.finetune_weight_decay)

    def batch_loss(batch: tuple) -> tuple[torch.Tensor, int, int]:
        clips, labels, _ = batch
        clips, labels = clips.to(device), torch.as_tensor(labels).to(device)
        logits = model(clips)
        return F.cross_entropy(logits, labels), labels.shape[0], int((logits.argmax(dim=1) == labels).sum())

    history = train_with_schedule(model, train_set, batch_loss, schedule, seed=seed, stream=split,
                                  num_workers=cfg.data.num_workers, desc=f"fine-tune {dataset} split {split} seed {seed}",
                                  progress=progress, device=device, precision=cfg.train.precision)
    if save_to is not None:
        save_checkpoint(save_to, {"model": model.state_dict(), "num_classes": num_classes, "dataset": dataset,
                                  "split": int(split), "seed": seed, "config": cfg.to_dict()})
    logits, labels = predict_clips(model, test_set, batch_size=f.finetune_batch_size, device=device,
                                   num_workers=cfg.data.num_workers, precision=cfg.train.precision, progress=progress)
    record = {"dataset": dataset, "split": int(split), "seed": seed, "num_train": len(train_set),
              "num_test": len(test_set), "num_classes": num_classes, "history": history}
    acc = clip_and_video_accuracy(logits, labels, k=1)
    record.update(top1=acc["video_top1"], video_top1=acc["video_top1"], clip_top1=acc["clip_top1"])
    if num_classes >= 5:
        record["video_top5"] = clip_and_video_accuracy(logits, labels, k=5)["video_top5"]
    return record


# --------------------------------------------------------------------------- command line

# Notebook 06's parameters that are not config fields, and the config fields they stand for.
_NOTEBOOK_ONLY = ("init", "inits", "seeds", "split", "pretrain_root", "external_checkpoint", "interactive",
                  "pretrain_if_missing")
_RENAMED = {"dataset": "finetune_dataset", "epochs": "finetune_epochs"}
_PATHS = ("data_root", "run_dir", "cache_dir", "pretrain_root", "external_checkpoint")
FINETUNED_NAME = "finetuned.pt"


def _one_of(params: dict[str, Any], single: str, many: str, default: Any = None) -> Any:
    """``single=`` when given, else the only entry of the notebook's list ``many``, else ``default``."""
    if params.get(single) is not None:
        return params[single]
    listed = params.get(many)
    if isinstance(listed, (list, tuple)) and len(listed) == 1:
        return listed[0]
    if default is not None:
        return default
    several = isinstance(listed, (list, tuple))
    known = f"{many.upper()}={list(listed)} lists several" if several else f"no {many.upper()}"
    raise ValueError(f"{single}= is missing ({known}); the command line runs one job: pass {single}=<value>")


def _notebooks_dir(config_file: Path) -> Path | None:
    """The ``notebooks/`` folder a params YAML sits in: its relative paths are written for that working directory."""
    return next((p for p in config_file.resolve().parents if p.name == "notebooks"), None)


def job_from_params(params: dict[str, Any], *, config_file: str | os.PathLike | None = None,
                    overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Notebook 06's parameters (a params YAML plus ``key=value`` overrides) -> one fine-tuning job.

    Notebook ``06_action_recognition``; used by :func:`main`. Returns ``{"cfg", "init", "seed",
    "split", "pretrain_root", "external", "run_dir"}``. Relative paths in the YAML are the
    notebook's, written for papermill's ``--cwd notebooks``, so they resolve against the
    ``notebooks/`` folder that holds the file; paths typed on the command line resolve against the
    current directory. The lists the notebook loops over (``INITS``, ``SEEDS``, ``SPLITS``) pick one
    job: ``init=``, ``seed=``, ``split=`` (needed when the list has several entries; the seed
    defaults to ``SEEDS``' only entry, else ``SEED``). Without
    ``run_dir=`` on the command line the job gets its own folder ``<RUN_DIR>/<init>_seed<s>_split<k>``.
    ``pretrain_if_missing=true`` lets a ``"vthcl"`` job train a missing pre-training first, as the
    notebook does; by default the command line refuses (on a GPU server a mistyped
    ``pretrain_root`` must not start days of pre-training unasked).
    """
    overrides = {k.lower(): v for k, v in (overrides or {}).items()}
    from_file = {k.lower(): v for k, v in params.items()}
    nb_dir = _notebooks_dir(Path(config_file)) if config_file is not None else None
    for key in _PATHS:  # the YAML's relative paths are the notebook's (cwd notebooks/)
        value = from_file.get(key)
        if nb_dir is not None and isinstance(value, str) and value and not Path(value).is_absolute():
            from_file[key] = str((nb_dir / value).resolve())
    merged = {**from_file, **overrides}
    for key in _PATHS:
        if isinstance(merged.get(key), str) and merged[key].lower() in ("none", "null", ""):
            merged[key] = None
    init = str(_one_of(merged, "init", "inits"))
    if init not in INITS:
        raise ValueError(f"init={init!r}; expected one of {INITS}")
    fields = {_RENAMED.get(k, k): v for k, v in merged.items() if k not in _NOTEBOOK_ONLY}
    base_dir = nb_dir.parent if nb_dir is not None else None
    cfg = resolve_config(fields.pop("preset", None) or "demo", base_dir=base_dir, run_name="06_action_recognition",
                         **fields)
    # seed= typed here wins; else the notebook's SEEDS when it names one seed; else SEED
    seed = int(overrides["seed"]) if overrides.get("seed") is not None else int(_one_of(
        {k: v for k, v in merged.items() if k != "seed"}, "seed", "seeds", cfg.seed))
    split = int(_one_of(merged, "split", "splits", cfg.finetune.splits[0] if len(cfg.finetune.splits) == 1 else None))
    if split not in cfg.finetune.splits and "split" not in overrides:
        raise ValueError(f"split={split} is not among SPLITS={list(cfg.finetune.splits)}")
    run_dir = Path(cfg.run_dir)
    if "run_dir" not in overrides:
        run_dir = run_dir / f"{init}_seed{seed}_split{split}"
    pretrain_root = merged.get("pretrain_root") or str(Path(cfg.run_dir).parent / "pretrain")
    cfg = replace(cfg, seed=seed, run_dir=str(run_dir))
    train_missing = str(merged.get("pretrain_if_missing", "false")).lower()
    if train_missing not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"pretrain_if_missing={merged['pretrain_if_missing']!r}; expected true or false")
    return {"cfg": cfg, "init": init, "seed": seed, "split": split, "pretrain_root": Path(pretrain_root),
            "external": merged.get("external_checkpoint"), "run_dir": run_dir,
            "pretrain_if_missing": train_missing in ("true", "1", "yes")}


def run_job(job: dict[str, Any], *, progress: bool = True) -> dict[str, Any]:
    """Run one fine-tuning job of :func:`job_from_params` as notebook 06 does; returns its metrics.

    Notebook ``06_action_recognition``. The initial weights come from :func:`checkpoint_for`
    (``"vthcl"``: the pre-training of that seed under ``pretrain_root``, trained first if missing),
    the fine-tuned classifier goes to ``run_dir/checkpoints/finetuned.pt`` and the metrics to
    ``run_dir/metrics.json``, both written atomically.
    """
    cfg, init, seed, split = job["cfg"], job["init"], job["seed"], job["split"]
    run_dir = Path(job["run_dir"])
    seed_everything(seed)
    pretraining = seed_run(cfg, seed, job["pretrain_root"])
    if init == "vthcl" and not job.get("pretrain_if_missing") and not checkpoint_is_complete(pretraining):
        raise FileNotFoundError(
            f"pretrain_root='{job['pretrain_root']}' holds no finished pre-training of seed {seed} "
            f"('{pretraining.run_dir}'); train it first (python -m vthcl_lib.train --config FILE "
            f"run_dir={pretraining.run_dir}), point pretrain_root= at it, or pass pretrain_if_missing=true")
    ckpt = checkpoint_for(cfg, init, seed=seed, pretrain_root=job["pretrain_root"], external=job["external"])
    encoder, report = init_slow_encoder(cfg, init, checkpoint=ckpt, seed=seed)
    if report is not None:
        LOGGER.info("initial weights '%s':\n%s", ckpt, report)
    weights = run_dir / "checkpoints" / FINETUNED_NAME
    record = finetune(cfg, encoder, split=split, seed=seed, progress=progress, save_to=weights)
    metrics = {"job": "finetune", "preset": cfg.preset, "init": init,
               "initial_weights": None if ckpt is None else str(ckpt), "finetuned_checkpoint": str(weights),
               "row": result_row(record, init), **record, "config": cfg.to_dict()}
    save_metrics(run_dir, metrics, merge=False)
    return metrics


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exceeded|Exception): ")


def _one_line(err: BaseException) -> str:
    """An error as one line. A DataLoader worker's error arrives wrapped with its traceback: keep its own message."""
    lines = str(err).strip().splitlines()
    if any(line.startswith("Original Traceback") for line in lines):
        starts = [i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line)]
        if starts:
            lines = [_EXCEPTION_LINE.sub("", lines[starts[-1]])] + lines[starts[-1] + 1:]
    text = ""
    for line in (line.strip() for line in lines if line.strip()):  # a listing after "...:" continues the sentence
        text += (" " if text.endswith(":") else "; " if text else "") + line
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vthcl_lib.finetune --config FILE [key=value ...]``: one fine-tuning run of notebook 06.

    Notebook ``06_action_recognition``. Exit status 0 on success, 2 with one ``error:`` line naming
    the parameter or file on a wrong setting, missing data or weights, or bad videos beyond the budget.
    """
    from vthcl_lib.train import parse_overrides  # the pre-training command line's key=value rule

    parser = argparse.ArgumentParser(prog="python -m vthcl_lib.finetune", description=(
        "Fine-tune one (init, seed, split) of notebook 06 from a params YAML, e.g. "
        "notebooks/params/paper_r18/06_action_recognition.ucf101.yaml init=vthcl split=1"))
    parser.add_argument("--config", required=True, help="notebook 06's parameters YAML")
    parser.add_argument("overrides", nargs="*",
                        help="key=value: init=, seed=, split=, run_dir=, epochs=, pretrain_root=, "
                        "external_checkpoint=, pretrain_if_missing=, any config field")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        job = job_from_params(load_params_file(args.config), config_file=args.config,
                              overrides=parse_overrides(args.overrides))
        metrics = run_job(job, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, BadVideoBudgetExceeded, VideoDecodeError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # a loader worker that died (out of shared memory, killed): say so, in one line
        if "DataLoader worker" not in str(err):
            raise
        print(f"error: {_one_line(err)} (fewer num_workers=, or a larger /dev/shm)", file=sys.stderr)
        return 2
    print(f"done: {metrics['dataset']} split {metrics['split']} seed {metrics['seed']} init {metrics['init']}: "
          f"video top-1 {metrics['top1']:.4f}, clip top-1 {metrics['clip_top1']:.4f}; "
          f"metrics in {job['run_dir']}/metrics.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
