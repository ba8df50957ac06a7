"""Epic-Kitchens-style action anticipation (VTHCL_SPEC c.5).

Taught in notebook ``09_action_anticipation``. The protocol observes ``tau_o`` seconds of video that
END ``tau_a`` seconds before an action segment starts and predicts the segment's verb, noun and
action (the (verb, noun) pair) from them:

* the observed frames come from :func:`vthcl_lib.tempo.observation_window` and
  :func:`vthcl_lib.tempo.observation_indices` (clipped at frame 0 and padded with the first frame,
  RULSTM's rule, so segments near a video's start still give full-length clips);
* :class:`AnticipationModel` is the paper's model: the slow encoder, global average pooling of res5,
  a shared MLP and two linear heads (verbs, nouns), trained with the sum of their cross-entropies;
* :func:`anticipation_metrics` gives top-1 and top-5 accuracy of verbs, nouns and actions; an
  action's score is the product of its verb's and its noun's probabilities, and its rank among
  all (verb, noun) pairs comes from :func:`action_rank` without a dense ``[B, V * N]`` matrix.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vthcl_lib.config import Config
from vthcl_lib.datasets import build_epic_datasets
from vthcl_lib.environment import resolve_device
from vthcl_lib.evaluate import autocast_context, downstream_loader
from vthcl_lib.finetune import StepSchedule, train_with_schedule
from vthcl_lib.models import ResNet3D
from vthcl_lib.progress import progress_bar
from vthcl_lib.tempo import ObservationWindow, observation_indices, observation_window

__all__ = ["ObservationWindow", "observation_window", "observation_indices", "AnticipationModel", "label_rank",
           "topk_hits", "action_scores", "action_rank", "anticipation_metrics", "predict_segments",
           "train_anticipation"]


class AnticipationModel(nn.Module):
    """Slow encoder -> res5 average -> shared MLP (linear, ReLU, dropout) -> verb and noun heads.

    Notebook ``09_action_anticipation``. ``forward(x [B, 3, T, H, W])`` returns
    ``(verb_logits [B, V], noun_logits [B, N])``.
    """

    def __init__(self, encoder: ResNet3D, num_verbs: int, num_nouns: int, *, hidden: int = 512, dropout: float = 0.5,
                 level: str = "res5"):
        super().__init__()
        if level not in encoder.stage_channels:
            raise ValueError(f"level={level!r}; expected one of {sorted(encoder.stage_channels)}")
        for name, value in (("num_verbs", num_verbs), ("num_nouns", num_nouns), ("hidden", hidden)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name}={value!r}; expected a whole number >= 1")
        self.encoder, self.level = encoder, level
        self.mlp = nn.Sequential(nn.Linear(encoder.stage_channels[level], int(hidden)), nn.ReLU(inplace=True),
                                 nn.Dropout(dropout))
        self.verb_head = nn.Linear(int(hidden), int(num_verbs))
        self.noun_head = nn.Linear(int(hidden), int(num_nouns))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shared = self.mlp(self.encoder(x)[self.level].mean(dim=(2, 3, 4)))
        return self.verb_head(shared), self.noun_head(shared)


def _check_scores(scores: Any, name: str, labels: Any = None) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or scores.shape[1] < 1:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"{name} has shape {shape}; expected [B, C] scores")
    if not torch.isfinite(scores).all():
        raise ValueError(f"{name} holds NaN or infinite values: the model diverged")
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1)
        if len(labels) != len(scores) or (len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= scores.shape[1])):
            raise ValueError(f"labels for {name}: expected {len(scores)} class ids in [0, {scores.shape[1]})")
    return scores


def label_rank(scores: torch.Tensor, labels: torch.Tensor, *, name: str = "scores") -> torch.Tensor:
    """``[B]`` rank of each row's label: how many classes score at least as high, itself included.

    Notebook ``09_action_anticipation``. Rank 1 is the top; a label tied with other classes ranks
    after all of them, so constant scores never count as hits (``topk``'s order among ties is
    unspecified).
    """
    scores = _check_scores(scores, name, labels).detach()
    target = scores.gather(1, torch.as_tensor(labels).reshape(-1, 1).long().to(scores.device))
    return (scores >= target).sum(dim=1)


def topk_hits(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean ``[B]``: is the label among the ``k`` highest scores (notebook ``09_action_anticipation``).

    Ties count against the label (:func:`label_rank`); with distinct scores this is exactly
    "the label is in ``scores.topk(k)``".
    """
    return label_rank(scores, labels) <= int(k)


def action_scores(verb_logits: torch.Tensor, noun_logits: torch.Tensor) -> torch.Tensor:
    """``[B, V * N]`` log-probabilities of every (verb, noun) pair, column ``v * N + n`` (notebook ``09_action_anticipation``).

    Verbs and nouns are treated as independent given the clip: log p(v) + log p(n). Dense: for
    Epic-Kitchens-55 that is 125 x 352 = 44,000 columns per segment; the metrics use
    :func:`action_rank`, which never builds it.
    """
    return (F.log_softmax(verb_logits.float(), dim=1)[:, :, None]
            + F.log_softmax(noun_logits.float(), dim=1)[:, None, :]).flatten(1)


def action_rank(verb_logits: torch.Tensor, noun_logits: torch.Tensor, verbs: torch.Tensor,
                nouns: torch.Tensor) -> torch.Tensor:
    """``[B]`` rank of the true (verb, noun) pair among all ``V * N`` pairs, without the ``[B, V * N]`` matrix.

    Notebook ``09_action_anticipation``. The same number as :func:`label_rank` of
    :func:`action_scores` at the true action's column, bit for bit: a pair's score is the float32
    sum ``log p(v) + log p(n)``, and a rounded sum never decreases when one term grows. So for
    each verb, the nouns whose pair scores at least the true pair form a tail of the nouns sorted
    by log-probability, found by a binary search over that sorted row (``floor(log2 N) + 1`` steps on
    ``[B, V]`` tensors), and the rank is the sum of the tails' lengths. Exact for every k, not
    only 1 and 5: memory ``O(B (V + N))``, time ``O(B V log N)``.
    """
    verb_logits = _check_scores(verb_logits, "verb_logits", verbs)
    noun_logits = _check_scores(noun_logits, "noun_logits", nouns)
    if len(verb_logits) != len(noun_logits):
        raise ValueError(f"verb_logits has {len(verb_logits)} rows and noun_logits {len(noun_logits)}; expected the same")
    log_verb = F.log_softmax(verb_logits.detach().float(), dim=1)  # a metric: no graph
    log_noun = F.log_softmax(noun_logits.detach().float(), dim=1)
    device = log_verb.device
    verbs = torch.as_tensor(verbs).reshape(-1, 1).long().to(device)
    nouns = torch.as_tensor(nouns).reshape(-1, 1).long().to(device)
    target = log_verb.gather(1, verbs) + log_noun.gather(1, nouns)  # [B, 1]: the dense matrix's entry
    if log_noun.device.type == "cpu":  # numpy's sort is many times faster than torch's on CPU rows
        sorted_noun = torch.from_numpy(np.sort(log_noun.numpy(), axis=1))
    else:
        sorted_noun = log_noun.sort(dim=1).values  # ascending
    num_nouns = sorted_noun.shape[1]
    # per (row, verb): how many sorted nouns fall short of the target, by a branchless binary search
    # (steps of 2^j, largest first; each step moves past a block that still falls short)
    below = torch.zeros_like(log_verb, dtype=torch.long)
    step = 1 << (num_nouns.bit_length() - 1)
    while step:
        probe = below + step
        index = (probe - 1).clamp(max=num_nouns - 1)
        short = (log_verb + sorted_noun.gather(1, index)) < target
        below += step * (short & (probe <= num_nouns))
        step >>= 1
    return (num_nouns - below).sum(dim=1)


def anticipation_metrics(verb_logits: torch.Tensor, noun_logits: torch.Tensor, verbs: torch.Tensor,
                         nouns: torch.Tensor, *, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"verb_top1", "verb_top5", "noun_top1", ..., "action_top5"}`` in [0, 1] (notebook ``09_action_anticipation``).

    A hit at k: the label ranks <= k (:func:`label_rank`; :func:`action_rank` for the pairs,
    whose score is the product of the verb's and the noun's probabilities).
    """
    ranks = {"verb": label_rank(verb_logits, verbs, name="verb_logits"),
             "noun": label_rank(noun_logits, nouns, name="noun_logits"),
             "action": action_rank(verb_logits, noun_logits, verbs, nouns)}
    return {f"{name}_top{k}": float((rank <= int(k)).float().mean()) for name, rank in ranks.items() for k in ks}


@torch.no_grad()
def predict_segments(model: AnticipationModel, dataset: Any, *, batch_size: int, device: torch.device,
                     num_workers: int = 0, precision: str = "fp32", progress: bool = True) -> dict[str, torch.Tensor]:
    """Logits and labels of every segment: ``{"verb_logits", "noun_logits", "verbs", "nouns"}`` (notebook ``09_action_anticipation``).

    ``num_workers`` loader workers read the segments (:func:`~vthcl_lib.evaluate.downstream_loader`);
    the model runs under :func:`~vthcl_lib.evaluate.autocast_context` (``precision``); logits are float32.
    """
    model.eval()
    parts: dict[str, list] = {"verb_logits": [], "noun_logits": [], "verbs": [], "nouns": []}
    loader = downstream_loader(dataset, batch_size=batch_size, num_workers=num_workers, device=device)
    for clips, verbs, nouns, _ in progress_bar(loader, desc="anticipate", disable=not progress, leave=False):
        with autocast_context(device, precision):
            verb_logits, noun_logits = model(clips.to(device, non_blocking=True))
        for key, value in zip(parts, (verb_logits.float().cpu(), noun_logits.float().cpu(), verbs, nouns)):
            parts[key].append(torch.as_tensor(value))
    return {key: torch.cat(values) for key, values in parts.items()}


def train_anticipation(cfg: Config, encoder: ResNet3D, *, seed: int | None = None, progress: bool = True,
                       data: dict | None = None) -> dict[str, Any]:
    """Train :class:`AnticipationModel` on the training segments, then score the validation segments.

    Notebook ``09_action_anticipation``. ``data`` is :func:`~vthcl_lib.datasets.build_epic_datasets`'s
    output (built here when None). The order of the segments, the augmentation and the dropout
    masks follow ``seed`` (default ``cfg.seed``). Returns the :func:`anticipation_metrics` plus
    ``"top1"`` (= noun top-1, the paper's headline number beside the verb's), ``"num_train",
    "num_val", "seed", "history"``.
    """
    an = cfg.anticipation
    seed = cfg.seed if seed is None else int(seed)
    data = build_epic_datasets(cfg, progress=progress) if data is None else data
    train_set = data["train"]
    device = resolve_device(cfg.device)
    torch.manual_seed(seed)
    model = AnticipationModel(encoder, data["num_verbs"], data["num_nouns"], hidden=an.mlp_hidden,
                              dropout=an.anticipation_dropout).to(device)
    schedule = StepSchedule(an.anticipation_epochs, an.anticipation_batch_size, an.anticipation_lr,
                            an.anticipation_milestones, an.anticipation_warmup_epochs, an.anticipation_momentum,
                            an.anticipation_weight_decay)

    def batch_loss(batch: tuple) -> tuple[torch.Tensor, int]:
        clips, verbs, nouns, _ = batch
        verb_logits, noun_logits = model(clips.to(device))
        loss = F.cross_entropy(verb_logits, verbs.to(device)) + F.cross_entropy(noun_logits, nouns.to(device))
        return loss, len(verbs)

    history = train_with_schedule(model, train_set, batch_loss, schedule, seed=seed, stream=9,
                                  num_workers=cfg.data.num_workers, desc=f"anticipation seed {seed}", progress=progress,
                                  device=device, precision=cfg.train.precision)
    out = predict_segments(model, data["val"], batch_size=an.anticipation_batch_size, device=device,
                           num_workers=cfg.data.num_workers, precision=cfg.train.precision, progress=progress)
    metrics = anticipation_metrics(out["verb_logits"], out["noun_logits"], out["verbs"], out["nouns"])
    return {**metrics, "top1": metrics["noun_top1"], "num_train": len(train_set), "num_val": len(data["val"]),
            "seed": seed, "history": history}
