"""Frozen-feature evaluation: multi-clip accuracy, feature extraction, linear probe, kNN, retrieval.

Taught in notebooks ``06_action_recognition`` (the 10-clip video-level protocol, VTHCL_SPEC c.2) and
``07_linear_probe_and_retrieval`` (linear probe c.3, weighted kNN in the InsDis style, video
retrieval R@k). Everything works on plain tensors (numpy arrays are accepted too), so a notebook can
extract features once and then try every protocol on them.

Fairness note (SYNTHETIC_NOTES, "Details that matter"): recalibrate the BatchNorm statistics of both
the random and the pre-trained encoder on clean training clips (:func:`recalibrate_batchnorm`)
before :func:`extract_features`; otherwise one of the two is compared with stale statistics.
"""
from __future__ import annotations

from numbers import Integral, Real
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from vthcl_lib.progress import progress_bar

# Queries are scored against the gallery in chunks of this many rows so that a K400-sized
# similarity matrix never has to exist at once.
_QUERY_CHUNK = 1024


# --------------------------------------------------------------------------- argument checks


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name}={value!r}; expected a whole number >= 1")
    return int(value)


def _check_positive_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not value > 0:
        raise ValueError(f"{name}={value!r}; expected a number > 0")
    return float(value)


def _features(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() != 2 or t.shape[0] == 0:
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected a non-empty [N, C] feature matrix")
    if not t.is_floating_point():
        t = t.float()
    return t


def _labels(y: Any, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(y)
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected [{n}] integer labels")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} has dtype {t.dtype}; expected integer class labels")
    if n and int(t.min()) < 0:
        raise ValueError(f"{name} has negative labels; expected class indices >= 0")
    return t.long()


def _same_width(a: torch.Tensor, b: torch.Tensor, a_name: str, b_name: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{b_name} has {b.shape[1]} feature channels; expected {a.shape[1]} like {a_name}")


# --------------------------------------------------------------------------- multi-clip accuracy


def _group_rows(video_ids: Sequence[Any], num_rows: int) -> tuple[torch.Tensor, np.ndarray, list]:
    """Row -> video index (videos numbered in order of their first row), each video's first row, the ids."""
    ids = list(video_ids)
    if len(ids) != num_rows:
        raise ValueError(f"video_ids has {len(ids)} entries; expected one per clip row ({num_rows})")
    # np.unique sorts; re-rank the groups by their first row so videos keep their input order.
    _, first, inverse = np.unique(np.asarray([str(i) for i in ids]), return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    group = torch.as_tensor(rank[inverse.reshape(-1)], dtype=torch.long)
    return group, first[order], [ids[i] for i in first[order]]


def video_level_predictions(clip_logits: Any, video_ids: Sequence[Any] | None = None, *,
                            return_ids: bool = False):
    """Per-video class probabilities: softmax of every clip, averaged over a video's clips.

    Notebook ``06_action_recognition``. This is the standard 10-clip test protocol (VTHCL_SPEC c.2):
    the *probabilities* are averaged, not the logits, so one over-confident clip cannot outvote the
    others by the size of its logits alone.

    ``clip_logits`` is either ``[V, K, C]`` (K clips of each of V videos; ``video_ids`` must be None)
    or ``[M, C]`` per-clip rows with ``video_ids`` (length M) naming each row's video; the videos
    then come out in the order of their first row. Returns ``[V, C]`` probabilities, or
    ``(probs, ids)`` with ``return_ids=True`` (``ids`` a list, ``range(V)`` for the 3-D form).
    """
    logits = torch.as_tensor(clip_logits)
    if not logits.is_floating_point():
        logits = logits.float()
    if video_ids is None:
        if logits.dim() != 3 or 0 in logits.shape:
            raise ValueError(f"clip_logits has shape {tuple(logits.shape)}; expected [V, K, C] "
                             "(or [M, C] together with video_ids)")
        probs = logits.softmax(dim=-1).mean(dim=1)
        return (probs, list(range(probs.shape[0]))) if return_ids else probs
    if logits.dim() != 2 or 0 in logits.shape:
        raise ValueError(f"clip_logits has shape {tuple(logits.shape)}; expected [M, C] per-clip rows with video_ids")
    group, _, ids = _group_rows(video_ids, logits.shape[0])
    group = group.to(logits.device)
    num_videos = len(ids)
    probs = logits.softmax(dim=-1)
    sums = torch.zeros(num_videos, probs.shape[1], dtype=probs.dtype, device=probs.device).index_add_(0, group, probs)
    counts = torch.bincount(group, minlength=num_videos).to(probs.dtype)
    probs = sums / counts[:, None]
    return (probs, ids) if return_ids else probs


def topk_accuracy(probs_or_logits: Any, labels: Any, k: int = 1) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores (notebook ``06_action_recognition``).

    Works on logits or probabilities alike (softmax keeps the order). ``k`` above the number of
    classes is an error, not a silent 100%.
    """
    scores = _features(probs_or_logits, "probs_or_logits")
    y = _labels(labels, scores.shape[0], "labels").to(scores.device)
    k = _check_positive_int("k", k)
    if k > scores.shape[1]:
        raise ValueError(f"k={k}; expected k <= the number of classes ({scores.shape[1]})")
    top = scores.topk(k, dim=1).indices
    return float((top == y[:, None]).any(dim=1).float().mean())


def clip_and_video_accuracy(clip_logits: Any, labels: Any, *, video_ids: Sequence[Any] | None = None,
                            k: int = 1) -> dict[str, float]:
    """Clip-level and video-level top-k accuracy side by side (notebook ``06_action_recognition``).

    ``clip_logits`` ``[V, K, C]`` with ``labels`` ``[V]``, or per-clip rows ``[M, C]`` with
    ``video_ids`` and ``labels`` ``[M]`` (one per row; a video's rows must agree). Returns
    ``{"clip_top{k}": every clip judged alone, "video_top{k}": softmax averaged over a video's clips
    (the number the paper reports), "num_clips": M, "num_videos": V}``.
    """
    logits = torch.as_tensor(clip_logits)
    if video_ids is None:
        if logits.dim() != 3:
            raise ValueError(f"clip_logits has shape {tuple(logits.shape)}; expected [V, K, C] "
                             "(or [M, C] together with video_ids)")
        v, kk, c = logits.shape
        y_video = _labels(labels, v, "labels")
        clip_top = topk_accuracy(logits.reshape(v * kk, c), y_video.repeat_interleave(kk), k)
        video_top = topk_accuracy(video_level_predictions(logits), y_video, k)
        num_clips, num_videos = v * kk, v
    else:
        if logits.dim() != 2:
            raise ValueError(f"clip_logits has shape {tuple(logits.shape)}; expected [M, C] per-clip rows")
        y_rows = _labels(labels, logits.shape[0], "labels")
        probs, ids = video_level_predictions(logits, video_ids, return_ids=True)
        group, first_rows, _ = _group_rows(video_ids, logits.shape[0])
        y_video = y_rows[torch.as_tensor(first_rows, dtype=torch.long)]
        if not torch.equal(y_rows, y_video[group]):
            raise ValueError("labels differ between clips of the same video; expected one label per video")
        clip_top = topk_accuracy(logits, y_rows, k)
        video_top = topk_accuracy(probs, y_video, k)
        num_clips, num_videos = logits.shape[0], len(ids)
    return {f"clip_top{k}": clip_top, f"video_top{k}": video_top, "num_clips": num_clips, "num_videos": num_videos}


# --------------------------------------------------------------------------- features from an encoder


def autocast_context(device: Any, precision: str = "fp32"):
    """The autocast context of a downstream forward pass: bf16/fp16 on CUDA, nothing on a CPU.

    Notebooks ``06_action_recognition`` to ``09_action_anticipation``. ``precision`` is the run's
    ``cfg.train.precision`` (``"fp32"``, ``"bf16"``, ``"fp16"``): the paper presets say ``"bf16"``,
    so fine-tuning, detection, anticipation and feature extraction run in bf16 there, as
    pre-training does. The rule is the engine's own helper, so both stay the same.
    """
    from vthcl_lib.engine import _autocast  # one rule for pre-training and downstream jobs

    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision={precision!r}; expected one of ('fp32', 'bf16', 'fp16')")
    return _autocast(torch.device(device) if device is not None else torch.device("cpu"), precision)


class EpochOrder(Sampler):
    """Training order for a loader whose workers live across epochs: ``(epoch, index)`` pairs.

    Notebooks ``06_action_recognition``, ``08_action_detection``, ``09_action_anticipation``.
    :meth:`set_epoch` selects the epoch; its order is the permutation that
    ``DataLoader(shuffle=True, generator=torch.Generator().manual_seed(seed_of_epoch(epoch)))``
    gives (that loader first draws its workers' base seed from the generator, so this does too),
    so a run repeats the batches of a loader rebuilt every epoch. The epoch travels with each index
    to the workers (:class:`AtEpoch`), which a persistent worker's copy of the dataset needs.
    """

    def __init__(self, num_items: int, seed_of_epoch: Callable[[int], int]):
        self.num_items, self.seed_of_epoch, self.epoch = _check_positive_int("num_items", num_items), seed_of_epoch, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(int(self.seed_of_epoch(self.epoch)))
        torch.empty((), dtype=torch.int64).random_(generator=generator)  # the draw DataLoader spends on worker seeds
        epoch = self.epoch
        return iter([(epoch, i) for i in torch.randperm(self.num_items, generator=generator).tolist()])


class AtEpoch(Dataset):
    """``dataset`` indexed by ``(epoch, index)``: sets the epoch of this process's copy, then returns the item.

    Items depend on ``(seed, epoch, index)`` only (the datasets draw from
    ``default_rng([seed, epoch, index])``), so the worker that serves an item does not change it.
    Notebooks ``06_action_recognition`` to ``09_action_anticipation``.
    """

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if getattr(self.dataset, "epoch", epoch) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


def downstream_loader(dataset: Any, *, batch_size: int, num_workers: int = 0, device: Any = None,
                      shuffle_seed: int | None = None, epoch_seed: Callable[[int], int] | None = None,
                      drop_last: bool = False, collate_fn: Callable | None = None) -> DataLoader:
    """The one DataLoader of every downstream and evaluation path (notebooks ``06`` to ``09``).

    ``num_workers`` is the preset's ``cfg.data.num_workers``; memory is pinned when ``device`` is
    CUDA. The datasets hold no open reader (each item opens its file inside the worker that reads
    it), and each item is a function of ``(seed, epoch, index)``, so the batches are the same with
    0 or 8 workers. The order:

    * neither seed: the dataset's order (scoring, feature extraction);
    * ``shuffle_seed=s``: one pass in the order ``DataLoader(shuffle=True,
      generator=torch.Generator().manual_seed(s))`` gives (BatchNorm recalibration);
    * ``epoch_seed=f``: training; the loader's ``sampler`` is an :class:`EpochOrder` (call its
      ``set_epoch(e)`` before each epoch: order seeded by ``f(e)``) and the workers persist
      across epochs, since the epoch reaches them with every index.
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    if isinstance(num_workers, bool) or not isinstance(num_workers, Integral) or num_workers < 0:
        raise ValueError(f"num_workers={num_workers!r}; expected a whole number >= 0")
    if shuffle_seed is not None and epoch_seed is not None:
        raise ValueError("pass shuffle_seed (one shuffled pass) or epoch_seed (training epochs), not both")
    if not isinstance(dataset, Dataset) and not hasattr(dataset, "__getitem__"):
        raise ValueError(f"dataset is a {type(dataset).__name__}; expected a Dataset")
    device = torch.device("cpu") if device is None else torch.device(device)
    common = dict(batch_size=batch_size, num_workers=int(num_workers), pin_memory=device.type == "cuda",
                  drop_last=drop_last, collate_fn=collate_fn)
    if epoch_seed is not None:
        # A generator of its own so that the workers' base seed never draws on the global RNG
        # (that one also drives dropout, which must not depend on the number of workers).
        return DataLoader(AtEpoch(dataset), sampler=EpochOrder(len(dataset), epoch_seed),
                          generator=torch.Generator().manual_seed(0), persistent_workers=num_workers > 0, **common)
    if shuffle_seed is not None:
        return DataLoader(dataset, shuffle=True, generator=torch.Generator().manual_seed(int(shuffle_seed)), **common)
    return DataLoader(dataset, shuffle=False, **common)


def _loader(loader_or_dataset: Any, batch_size: int, num_workers: int, *, shuffle: bool = False,
            seed: int = 0, device: Any = None) -> DataLoader:
    if isinstance(loader_or_dataset, DataLoader):
        return loader_or_dataset
    if not isinstance(loader_or_dataset, Dataset) and not hasattr(loader_or_dataset, "__getitem__"):
        raise ValueError(f"loader_or_dataset is a {type(loader_or_dataset).__name__}; expected a Dataset or DataLoader")
    return downstream_loader(loader_or_dataset, batch_size=batch_size, num_workers=num_workers, device=device,
                             shuffle_seed=seed if shuffle else None)


def _clips_of(batch: Any) -> torch.Tensor:
    clips = batch[0] if isinstance(batch, (list, tuple)) else batch
    if not isinstance(clips, torch.Tensor) or clips.dim() not in (5, 6):
        shape = tuple(clips.shape) if isinstance(clips, torch.Tensor) else type(clips).__name__
        raise ValueError(f"a batch's clips have shape {shape}; expected [B, C, T, H, W] or [B, K, C, T, H, W]")
    return clips


def _encoder_device(encoder: nn.Module, device: Any) -> torch.device:
    if device is not None:
        return torch.device(device)
    first = next(encoder.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


@torch.no_grad()
def extract_features(encoder: nn.Module, dataset: Any, *, level: str = "res5", batch_size: int, device: Any,
                     num_workers: int = 0, precision: str = "fp32",
                     progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Frozen features of every item: ``(features [N, C], labels [N], video_ids)``.

    Notebook ``07_linear_probe_and_retrieval``.

    ``encoder`` returns a dict of feature maps (a :class:`~vthcl_lib.models.ResNet3D`); the feature
    is the global average pool over (T, H, W) of ``level``. ``dataset`` (or a DataLoader) yields
    ``(clip [C, T, H, W], label, video_id)`` (train mode) or ``(clips [K, C, T, H, W], label,
    video_id)`` (test mode); in test mode a video's feature is the mean over its K clips. The
    encoder is moved to ``device`` (None: where its parameters are) and run in eval mode without
    gradients; its train/eval mode is restored afterwards. Features come back float32 on the CPU,
    in dataset order. Items are read by ``num_workers`` loader workers (:func:`downstream_loader`;
    the preset's ``cfg.data.num_workers``) and the forward pass runs under
    :func:`autocast_context` (``precision``, the preset's ``cfg.train.precision``: bf16 on CUDA
    at the paper presets, nothing changes on a CPU).
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    device = _encoder_device(encoder, device)
    loader = _loader(dataset, batch_size, num_workers, device=device)
    encoder.to(device)
    was_training = encoder.training
    encoder.eval()  # BN must use its running statistics, not the batch's
    feats, labels, ids = [], [], []
    try:
        for batch in progress_bar(loader, desc=f"features ({level})", disable=not progress, leave=False):
            clips = _clips_of(batch)
            b = clips.shape[0]
            num_clips = clips.shape[1] if clips.dim() == 6 else 1
            x = clips.reshape(b * num_clips, *clips.shape[-4:]).to(device, non_blocking=True)
            with autocast_context(device, precision):
                maps = encoder(x)
            if not isinstance(maps, dict) or level not in maps:
                known = sorted(maps) if isinstance(maps, dict) else type(maps).__name__
                raise ValueError(f"level={level!r}; the encoder returned {known}")
            pooled = maps[level].float().mean(dim=(2, 3, 4))
            feats.append(pooled.reshape(b, num_clips, -1).mean(dim=1).cpu())
            if isinstance(batch, (list, tuple)) and len(batch) >= 2:
                labels.append(torch.as_tensor(batch[1]).reshape(-1).long())
            if isinstance(batch, (list, tuple)) and len(batch) >= 3:
                vid = batch[2]
                ids.extend(vid.tolist() if isinstance(vid, torch.Tensor) else list(vid))
    finally:
        encoder.train(was_training)
    if not feats:
        raise ValueError("dataset is empty; expected at least one item")
    label_tensor = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)
    return torch.cat(feats), label_tensor, ids


@torch.no_grad()
def recalibrate_batchnorm(encoder: nn.Module, loader_or_dataset: Any, *, num_batches: int | None,
                          batch_size: int = 32, device: Any = None, seed: int = 0, num_workers: int = 0,
                          precision: str = "fp32") -> int:
    """Recompute every BatchNorm's running mean/variance from data; returns the clips seen.

    Notebook ``07_linear_probe_and_retrieval`` (SYNTHETIC_NOTES: do this for the random and the
    pre-trained encoder alike, on *clean* training clips, i.e. the eval transform, before
    extracting features).

    The running statistics are reset and re-estimated with ``momentum=None``, PyTorch's cumulative
    average, over ``num_batches`` batches (None: the whole loader), so the result is the mean of the
    per-batch statistics rather than an exponential average dominated by the last batches. Only the
    BN layers run in train mode; weights are untouched; the original momenta and train/eval modes
    are restored. A dataset is wrapped in a DataLoader shuffled with ``seed`` (so the batches mix
    classes; :func:`downstream_loader` with ``num_workers`` workers); a DataLoader is used as given.
    Test-mode items ``[K, C, T, H, W]`` are flattened to K clips each. The forward passes run under
    :func:`autocast_context` (``precision``), as the extraction that follows does.
    """
    if num_batches is not None:
        num_batches = _check_positive_int("num_batches", num_batches)
    device = _encoder_device(encoder, device)
    loader = _loader(loader_or_dataset, _check_positive_int("batch_size", batch_size), num_workers, shuffle=True,
                     seed=seed, device=device)
    encoder.to(device)
    bns = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        raise ValueError("encoder has no BatchNorm layer with running statistics; nothing to recalibrate")
    modes = {m: m.training for m in encoder.modules()}
    momenta = [bn.momentum for bn in bns]
    seen = 0
    try:
        encoder.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average over the batches below
            bn.train()
        for i, batch in enumerate(loader):
            if num_batches is not None and i >= num_batches:
                break
            clips = _clips_of(batch)
            x = clips.reshape(-1, *clips.shape[-4:]).to(device, non_blocking=True)
            with autocast_context(device, precision):
                encoder(x)
            seen += x.shape[0]
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        for module, mode in modes.items():
            module.training = mode
    if seen == 0:
        raise ValueError("loader_or_dataset gave no batches; expected training clips to recalibrate on")
    return seen


# --------------------------------------------------------------------------- linear probe


def linear_probe(train_x: Any, train_y: Any, test_x: Any, test_y: Any, *, epochs: int = 100, lr: float = 1e-2,
                 weight_decay: float = 1e-4, batch_size: int | None = 256, seed: int = 0,
                 num_classes: int | None = None, optimizer: str = "adamw") -> dict[str, float]:
    """Train a linear classifier on frozen features; ``{"top1", "top5" (C >= 5), "train_top1"}``.

    Notebook ``07_linear_probe_and_retrieval`` (VTHCL_SPEC c.3).

    Features are standardised with the *train* mean and std (a constant channel becomes 0), then a
    zero-initialised ``Linear(C, num_classes)`` is trained with cross-entropy for ``epochs`` passes,
    mini-batches of ``batch_size`` (None: full batch) in an order drawn from ``seed``, with AdamW
    (``optimizer="adamw"``) or SGD momentum 0.9 (``"sgd"``). Zero init and the seeded order make
    the result deterministic. ``num_classes`` defaults to the largest label + 1. Accuracies are
    fractions in [0, 1].
    """
    tr_x, te_x = _features(train_x, "train_x").float(), _features(test_x, "test_x").float()
    _same_width(tr_x, te_x, "train_x", "test_x")
    tr_y, te_y = _labels(train_y, tr_x.shape[0], "train_y"), _labels(test_y, te_x.shape[0], "test_y")
    epochs = _check_positive_int("epochs", epochs)
    lr = _check_positive_real("lr", lr)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, Real) or weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay!r}; expected a number >= 0")
    if batch_size is not None:
        batch_size = _check_positive_int("batch_size", batch_size)
    if optimizer not in ("adamw", "sgd"):
        raise ValueError(f"optimizer={optimizer!r}; expected 'adamw' or 'sgd'")
    top_label = int(max(tr_y.max(), te_y.max())) + 1
    if num_classes is None:
        num_classes = top_label
    num_classes = _check_positive_int("num_classes", num_classes)
    if num_classes < top_label:
        raise ValueError(f"num_classes={num_classes}; the labels go up to {top_label - 1}")

    mean, std = tr_x.mean(dim=0), tr_x.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    tr_x, te_x = (tr_x - mean) / std, (te_x - mean) / std

    fc = nn.Linear(tr_x.shape[1], num_classes).to(tr_x.device)
    nn.init.zeros_(fc.weight)
    nn.init.zeros_(fc.bias)
    if optimizer == "adamw":
        opt = torch.optim.AdamW(fc.parameters(), lr=lr, weight_decay=float(weight_decay))
    else:
        opt = torch.optim.SGD(fc.parameters(), lr=lr, momentum=0.9, weight_decay=float(weight_decay))
    n = tr_x.shape[0]
    step = n if batch_size is None else min(batch_size, n)
    generator = torch.Generator().manual_seed(int(seed))
    onehot = F.one_hot(tr_y, num_classes).to(tr_x.dtype)
    with torch.no_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator).to(tr_x.device)
            for start in range(0, n, step):
                idx = order[start:start + step]
                x = tr_x[idx]
                # Closed-form gradient of the mean cross-entropy of a linear layer, (softmax - onehot) / B:
                # exact, and it skips the autograd engine, whose per-step overhead dominates so small a model.
                err = (fc(x).softmax(dim=1) - onehot[idx]) / x.shape[0]
                fc.weight.grad = err.T @ x
                fc.bias.grad = err.sum(dim=0)
                opt.step()
    with torch.no_grad():
        test_logits, train_logits = fc(te_x), fc(tr_x)
    out = {"top1": topk_accuracy(test_logits, te_y, 1), "train_top1": topk_accuracy(train_logits, tr_y, 1)}
    if num_classes >= 5:
        out["top5"] = topk_accuracy(test_logits, te_y, 5)
    return out


# --------------------------------------------------------------------------- kNN and retrieval


def knn_classify(train_x: Any, train_y: Any, test_x: Any, *, k: int = 20, temperature: float | None = 0.07,
                 num_classes: int | None = None) -> torch.Tensor:
    """Weighted k-nearest-neighbour labels on cosine similarity, ``[M]`` (InsDis style).

    Notebook ``07_linear_probe_and_retrieval``.

    Each of a query's ``k`` most similar training items votes for its label with weight
    ``exp(sim / temperature)`` (Wu et al. 2018); the class with the largest summed weight wins
    (ties: the lower class index). ``temperature=None`` gives the plain majority vote. ``k`` is
    capped at the number of training items. ``num_classes`` defaults to the largest label + 1.
    """
    tr_x, te_x = _features(train_x, "train_x"), _features(test_x, "test_x")
    _same_width(tr_x, te_x, "train_x", "test_x")
    tr_y = _labels(train_y, tr_x.shape[0], "train_y").to(tr_x.device)
    k = min(_check_positive_int("k", k), tr_x.shape[0])
    if temperature is not None:
        temperature = _check_positive_real("temperature", temperature)
    if num_classes is None:
        num_classes = int(tr_y.max()) + 1
    num_classes = _check_positive_int("num_classes", num_classes)
    if int(tr_y.max()) >= num_classes:
        raise ValueError(f"num_classes={num_classes}; train_y goes up to {int(tr_y.max())}")
    gallery = F.normalize(tr_x.float(), dim=1)
    preds = []
    for start in range(0, te_x.shape[0], _QUERY_CHUNK):
        q = F.normalize(te_x[start:start + _QUERY_CHUNK].float().to(gallery.device), dim=1)
        sim, idx = (q @ gallery.T).topk(k, dim=1)
        weights = torch.ones_like(sim) if temperature is None else (sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=q.device).scatter_add_(1, tr_y[idx], weights)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds).cpu()


def knn_accuracy(train_x: Any, train_y: Any, test_x: Any, test_y: Any, *, k: int = 20,
                 temperature: float | None = 0.07, num_classes: int | None = None) -> float:
    """Top-1 accuracy of :func:`knn_classify` (notebook ``07_linear_probe_and_retrieval``)."""
    preds = knn_classify(train_x, train_y, test_x, k=k, temperature=temperature, num_classes=num_classes)
    y = _labels(test_y, preds.shape[0], "test_y")
    return float((preds == y).float().mean())


def retrieval_recall(train_x: Any, train_y: Any, test_x: Any, test_y: Any,
                     ks: Sequence[int] = (1, 5, 10, 20, 50)) -> dict[str, float]:
    """Video retrieval recall ``{"R@k": fraction}``: test videos query the training gallery.

    Notebook ``07_linear_probe_and_retrieval``.

    Both sets are centred with the *training* mean and L2-normalised; gallery items are ranked by
    cosine similarity; a query is a hit at k when any of its k nearest gallery items shares its
    label. A k larger than the gallery is capped at the gallery size (every item is then retrieved).
    """
    tr_x, te_x = _features(train_x, "train_x").float(), _features(test_x, "test_x").float()
    _same_width(tr_x, te_x, "train_x", "test_x")
    tr_y = _labels(train_y, tr_x.shape[0], "train_y").to(tr_x.device)
    te_y = _labels(test_y, te_x.shape[0], "test_y").to(tr_x.device)
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks=(); expected at least one k")
    ks = tuple(_check_positive_int("ks", k) for k in ks)
    mean = tr_x.mean(dim=0)
    gallery = F.normalize(tr_x - mean, dim=1)
    k_max = min(max(ks), gallery.shape[0])
    hits = []
    for start in range(0, te_x.shape[0], _QUERY_CHUNK):
        q = F.normalize(te_x[start:start + _QUERY_CHUNK].to(gallery.device) - mean, dim=1)
        idx = (q @ gallery.T).topk(k_max, dim=1).indices
        same = tr_y[idx] == te_y[start:start + _QUERY_CHUNK, None]
        hits.append(same.cumsum(dim=1) > 0)  # hit within the first j items
    hit = torch.cat(hits)
    return {f"R@{k}": float(hit[:, min(k, k_max) - 1].float().mean()) for k in ks}


# --------------------------------------------------------------------------- all frozen protocols at once


def frozen_protocols(train_x: Any, train_y: Any, test_x: Any, test_y: Any, probe_cfg: Any, *,
                     seed: int = 0) -> dict[str, Any]:
    """The three frozen-feature protocols on one extraction: ``{"linear", "knn", "retrieval"}``.

    Notebook ``07_linear_probe_and_retrieval``. ``probe_cfg`` is a
    :class:`vthcl_lib.config.ProbeConfig` (probe epochs/lr/weight decay, kNN k and temperature,
    retrieval ks). ``"linear"`` is :func:`linear_probe`'s record (``top1``, ``train_top1``, ``top5``
    with >= 5 classes), ``"knn"`` is ``{"top1", "k", "temperature"}``, ``"retrieval"`` is
    :func:`retrieval_recall`'s ``{"R@k": ...}``.
    """
    p = probe_cfg
    linear = linear_probe(train_x, train_y, test_x, test_y, epochs=p.probe_epochs, lr=p.probe_lr,
                          weight_decay=p.probe_weight_decay, seed=seed)
    knn = knn_accuracy(train_x, train_y, test_x, test_y, k=p.knn_k, temperature=p.knn_temperature)
    retrieval = retrieval_recall(train_x, train_y, test_x, test_y, ks=p.retrieval_ks)
    return {"linear": linear, "knn": {"top1": knn, "k": p.knn_k, "temperature": p.knn_temperature},
            "retrieval": retrieval}


def frozen_features(encoder: nn.Module, train_set: Any, test_set: Any, *, level: str = "res5", device: Any = None,
                    recalibrate: bool = True, seed: int = 0, batch_size: int = 8, recalibrate_batches: int | None = 20,
                    cache_path: str | None = None, num_workers: int = 0, precision: str = "fp32",
                    progress: bool = True) -> dict[str, torch.Tensor]:
    """One extraction for every frozen protocol: ``{"train_x", "train_y", "test_x", "test_y"}``.

    Notebook ``07_linear_probe_and_retrieval``. With ``recalibrate`` the encoder's BatchNorm
    statistics are first re-estimated on ``train_set`` (which should yield *clean* clips: the eval
    transform, i.e. ``build_labeled_dataset(..., "train", mode="test")``). With ``cache_path`` the
    features are saved there (atomically) and read back on the next call instead of re-extracted.
    ``num_workers`` and ``precision`` (the preset's ``cfg.data.num_workers`` and
    ``cfg.train.precision``) go to every pass: recalibration and both extractions.
    """
    from pathlib import Path

    if cache_path is not None and Path(cache_path).is_file():
        return torch.load(cache_path, map_location="cpu", weights_only=True)
    if recalibrate:
        recalibrate_batchnorm(encoder, train_set, num_batches=recalibrate_batches, batch_size=batch_size,
                              device=device, seed=seed, num_workers=num_workers, precision=precision)
    loading = dict(level=level, batch_size=batch_size, device=device, num_workers=num_workers, precision=precision,
                   progress=progress)
    train_x, train_y, _ = extract_features(encoder, train_set, **loading)
    test_x, test_y, _ = extract_features(encoder, test_set, **loading)
    out = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    if cache_path is not None:
        from vthcl_lib.engine import save_checkpoint  # the same atomic write as the checkpoints

        save_checkpoint(cache_path, out)
    return out
