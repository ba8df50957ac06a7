"""The VTHCL objective: InfoNCE, NCE with a constant Z, memory banks and the hierarchical loss.

Taught in notebooks ``03_contrastive_loss`` (InfoNCE by hand, then :func:`info_nce`),
``04_memory_bank`` (:class:`MemoryBank`, its momentum update, negative sampling and its cost) and
``05_hierarchical_pretraining`` (:class:`HierarchicalContrast`, the full objective of VTHCL_SPEC a.7).

Conventions (VTHCL_SPEC a.3-a.7, f.1):

* Every embedding fed in is already L2-normalised by its projection head; nothing here renormalises
  it, so a dot product is the cosine similarity.
* For each level k, the slow clip's embedding is a query whose positive is the fast view of the same
  video and whose negatives are fast-bank entries of other videos (``loss_slow``), and the other way
  round (``loss_fast``); the total is ``sum_k lambda^k (L_s^k + L_f^k)``.
* Bank keys carry no gradient (CMC detaches them): gradient flows only through the queries, and
  through the live positive when ``positives="live"``.
* The banks are updated by a separate call after the loss (CMC scores against the old memory first),
  so a distributed engine can all-gather features and indices before updating, keeping every
  rank's banks identical.
"""
from __future__ import annotations

import logging
import math
import statistics
import time
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vthcl_lib.config import ContrastConfig

LOGGER_NAME = "vthcl_lib.contrastive"
NEGATIVE_MODES = ("shared", "per_query")
POSITIVE_MODES = ("bank", "live")
LOSS_MODES = ("softmax", "nce")


# ----------------------------------------------------------------------------- validation helpers


def _check_positive_number(name: str, value) -> None:
    if isinstance(value, torch.Tensor):
        return  # a learnable temperature is the caller's business; checking it would sync the device
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a finite number > 0")


def _check_count(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be a whole number >= {minimum}")


def _check_choice(name: str, value, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not known; expected one of {tuple(choices)}")


def _check_indices(name: str, indices, num_items: int) -> torch.Tensor:
    """A long tensor of row indices, all in ``[0, num_items)``."""
    if not isinstance(indices, torch.Tensor) or indices.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} must be an integer (long) tensor, got {type(indices).__name__}"
                         f"{'' if not isinstance(indices, torch.Tensor) else ' of ' + str(indices.dtype)}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_items):
        raise ValueError(f"{name} must lie in [0, {num_items}) (the bank size = the dataset size); "
                         f"got values in [{int(indices.min())}, {int(indices.max())}]")
    return indices.long()


def _scores(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
            negative_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated float32 similarities: ``pos`` ``[B]`` and ``neg`` ``[B, N]`` (shared: one matmul)."""
    if not isinstance(query, torch.Tensor) or query.ndim != 2:
        raise ValueError(f"query must be a [B, d] tensor, got shape {tuple(getattr(query, 'shape', ()))}")
    batch, dim = query.shape
    if not isinstance(positive, torch.Tensor) or positive.shape != query.shape:
        raise ValueError(f"positive must have the query's shape {tuple(query.shape)}, "
                         f"got {tuple(getattr(positive, 'shape', ()))}")
    if not isinstance(negatives, torch.Tensor) or negatives.ndim not in (2, 3) or negatives.shape[-1] != dim \
            or (negatives.ndim == 3 and negatives.shape[0] != batch):
        raise ValueError(f"negatives must be [N, {dim}] (shared) or [{batch}, N, {dim}] (per query) for a query "
                         f"of shape {tuple(query.shape)}, got {tuple(getattr(negatives, 'shape', ()))}")
    num_neg = negatives.shape[-2]
    if negative_mask is not None and (not isinstance(negative_mask, torch.Tensor)
                                      or negative_mask.dtype != torch.bool
                                      or negative_mask.shape != (batch, num_neg)):
        raise ValueError(f"negative_mask must be a bool tensor of shape ({batch}, {num_neg}), got "
                         f"{getattr(negative_mask, 'dtype', type(negative_mask).__name__)} "
                         f"{tuple(getattr(negative_mask, 'shape', ()))}")
    # At least float32, even under autocast: bf16 logits at T = 0.07 over thousands of negatives
    # lose the signal. float64 inputs stay float64 (gradient checks, notebook 03's hand comparison).
    dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=query.device.type, enabled=False):
        q = query.to(dtype)
        pos = (q * positive.to(dtype)).sum(dim=1)
        if negatives.ndim == 2:
            neg = q @ negatives.to(dtype).T  # one [B, d] x [d, N] matmul, no [B, N, d] gather
        else:
            neg = torch.einsum("bd,bnd->bn", q, negatives.to(dtype))
    return pos, neg


# ----------------------------------------------------------------------------- InfoNCE (softmax form)


def info_nce(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, temperature: float, *,
             negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE: softmax cross-entropy over ``[q.pos, q.neg_1..N] / T`` with target 0, mean over the batch.

    Notebook ``03_contrastive_loss``. ``query`` and ``positive`` are ``[B, d]``; ``negatives`` is
    ``[N, d]`` (one set shared by the whole batch: the logits are one matmul ``q @ neg.T``) or
    ``[B, N, d]`` (a set per query, CMC's gather). Inputs are assumed L2-normalised (the heads do
    it) and are not renormalised here. ``negative_mask`` ``[B, N]`` (bool) removes the True
    entries from the softmax (their logit becomes ``-inf``), e.g. a query's own bank entry drawn
    among shared negatives. Logits are computed in (at least) float32, also under autocast.
    Returns a scalar.
    """
    _check_positive_number("temperature", temperature)
    pos, neg = _scores(query, positive, negatives, negative_mask)
    if negative_mask is not None:
        neg = neg.masked_fill(negative_mask, float("-inf"))  # exp(-inf) = 0: gone from the softmax sum
    logits = torch.cat([pos[:, None], neg], dim=1) / temperature
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


# ----------------------------------------------------------------------------- NCE with a constant Z


def nce_loss(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, temperature: float, *,
             log_z: float | torch.Tensor, num_items: int,
             negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Binary NCE loss of lemniscate/CMC with a constant partition function Z = ``exp(log_z)``.

    Notebook ``03_contrastive_loss`` (the alternative form of VTHCL_SPEC a.6 / f.1). Each score
    ``s`` becomes ``P = exp(s / T) / Z``; the noise distribution is uniform, ``P_n = 1 / num_items``,
    with ``K = N`` noise samples (N = the number of negative columns, also where some are masked):

        loss = -(1/B) [ sum_b log(P_pos / (P_pos + K P_n)) + sum_{b,j} log(K P_n / (P_neg + K P_n)) ]

    computed in log space (``-softplus``), so small temperatures cannot overflow ``exp``; it equals
    CMC's ``NCECriterion`` up to its ``eps = 1e-7`` in the denominators. Masked negatives
    (``negative_mask`` True) drop out of the sum. Shapes as in :func:`info_nce`.
    """
    _check_positive_number("temperature", temperature)
    _check_count("num_items", num_items, 1)
    pos, neg = _scores(query, positive, negatives, negative_mask)
    log_kpn = math.log(neg.shape[1]) - math.log(num_items) if neg.shape[1] else float("-inf")
    log_p_pos = pos / temperature - log_z
    log_p_neg = neg / temperature - log_z
    # log(P / (P + K Pn)) = -softplus(log K Pn - log P);  log(K Pn / (P + K Pn)) = -softplus(log P - log K Pn)
    term_pos = -F.softplus(log_kpn - log_p_pos)
    term_neg = -F.softplus(log_p_neg - log_kpn)
    if negative_mask is not None:
        term_neg = term_neg.masked_fill(negative_mask, 0.0)
    return -(term_pos.sum() + term_neg.sum()) / pos.shape[0]


class NCECriterion(nn.Module):
    """NCE loss whose constant Z is estimated once, from the first batch, then frozen.

    Notebook ``03_contrastive_loss``. As lemniscate/CMC do: on the first call
    ``Z = mean(exp(s / T)) * num_items`` over that batch's scores (positive and unmasked negatives);
    it is logged once (``"normalization constant Z set to ..."``) and kept in the buffers ``log_z``
    and ``z_set``, so it travels in ``state_dict`` and a resumed run never re-estimates it silently.
    Under ``torchrun`` each rank estimates its own Z from its local batch unless the engine makes
    them agree (broadcast ``log_z`` after the first step).
    """

    def __init__(self, num_items: int, temperature: float = 0.07):
        super().__init__()
        _check_count("num_items", num_items, 1)
        _check_positive_number("temperature", temperature)
        self.num_items = num_items
        self.temperature = temperature
        self.register_buffer("log_z", torch.zeros(()))
        self.register_buffer("z_set", torch.zeros((), dtype=torch.bool))

    @property
    def z(self) -> float:
        """The frozen constant Z (``nan`` before the first batch)."""
        return math.exp(float(self.log_z)) if bool(self.z_set) else float("nan")

    def forward(self, query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, *,
                negative_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The NCE loss of :func:`nce_loss`, estimating and freezing Z on the first call."""
        if not bool(self.z_set):
            with torch.no_grad():
                pos, neg = _scores(query, positive, negatives, negative_mask)
                scaled = torch.cat([pos[:, None], neg], dim=1) / self.temperature
                if negative_mask is not None:
                    keep = torch.cat([torch.zeros_like(negative_mask[:, :1]), negative_mask], dim=1)
                    scaled = scaled.masked_fill(keep, float("-inf"))
                count = scaled.isfinite().sum()
                # log(mean(exp(s/T)) * n), via logsumexp so T = 0.01 cannot overflow
                log_z = torch.logsumexp(scaled.flatten(), 0) - torch.log(count.float()) + math.log(self.num_items)
                self.log_z.copy_(log_z)
                self.z_set.fill_(True)
            logging.getLogger(LOGGER_NAME).info("normalization constant Z set to %.4g", self.z)
        return nce_loss(query, positive, negatives, self.temperature, log_z=self.log_z,
                        num_items=self.num_items, negative_mask=negative_mask)

    def extra_repr(self) -> str:
        return f"num_items={self.num_items}, temperature={self.temperature}, z={self.z:.4g}"


# ----------------------------------------------------------------------------- memory bank


class MemoryBank(nn.Module):
    """An ``[num_items, dim]`` memory of embeddings, one row per training video (InsDis/CMC).

    Notebook ``04_memory_bank``. ``.weight`` is a registered buffer (saved in ``state_dict``,
    moved by ``.to()``, never trained). It starts as CMC's: uniform in ``[-s, s]`` with
    ``s = 1 / sqrt(dim / 3)``, so each row has squared norm 1 in expectation but is not normalised;
    pass ``generator`` to make it reproducible. ``num_items`` must equal the dataset size (row i is
    video i). ``momentum`` m follows CMC: ``B[i] <- normalize(m B[i] + (1 - m) z)``, so m is the
    weight of the OLD entry (SlowFast's ``MOMENTUM`` weights the new one).
    """

    def __init__(self, num_items: int, dim: int, momentum: float = 0.5, *,
                 generator: torch.Generator | None = None):
        super().__init__()
        _check_count("num_items", num_items, 1)
        _check_count("dim", dim, 1)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise ValueError(f"momentum={momentum!r} must be in [0, 1) (the weight of the old bank entry)")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.num_items, self.dim, self.momentum = num_items, dim, float(momentum)
        bound = 1.0 / math.sqrt(dim / 3)
        device = generator.device if generator is not None else None
        init = torch.rand(num_items, dim, generator=generator, device=device) * (2 * bound) - bound
        self.register_buffer("weight", init)

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        """The rows ``weight[indices]`` (any index shape, plus a trailing ``dim``), detached."""
        return self._take(_check_indices("indices", indices, self.num_items))

    def _take(self, idx: torch.Tensor) -> torch.Tensor:
        # unchecked gather for the training step: its range check would sync the device per call
        idx = idx.to(self.weight.device)
        return self.weight.index_select(0, idx.reshape(-1)).view(*idx.shape, self.dim).detach()

    def sample_negatives(self, num: int, *, generator: torch.Generator | None,
                         batch_size: int | None = None) -> torch.Tensor:
        """Uniform row indices: ``[num]`` (one set shared by a batch) or ``[batch_size, num]`` (per query).

        Notebook ``04_memory_bank``. Drawn with replacement by ``torch.randint`` on ``generator``
        (``None``: torch's global generator), as CMC's uniform alias sampler and SlowFast do:
        duplicates and a query's own index can occur; the caller masks the own index. ``num`` is
        capped at ``num_items - 1`` (the number of OTHER videos), so a small bank is not oversampled.
        Indices are returned on the bank's device.
        """
        _check_count("num", num, 1)
        if batch_size is not None:
            _check_count("batch_size", batch_size, 1)
        if self.num_items < 2:
            raise ValueError(f"num_items={self.num_items}: a bank needs at least 2 rows to have negatives")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        num = min(num, self.num_items - 1)
        shape = (num,) if batch_size is None else (batch_size, num)
        device = generator.device if generator is not None else self.weight.device
        idx = torch.randint(0, self.num_items, shape, generator=generator, device=device)
        return idx.to(self.weight.device)

    @torch.no_grad()
    def update(self, indices: torch.Tensor, z: torch.Tensor) -> None:
        """``B[i] <- normalize(m B[i] + (1 - m) z_i)`` for each row i of the batch (CMC's Eq. 7).

        Notebook ``04_memory_bank``. ``z`` is ``[len(indices), dim]`` (detached here). An index that
        repeats within one call (DistributedSampler pads a short last batch with repeats) gets ONE
        momentum step towards the mean of its ``z`` rows: deterministic and independent of order.
        """
        idx = _check_indices("indices", indices, self.num_items).to(self.weight.device)
        if idx.ndim != 1:
            raise ValueError(f"indices must be 1-D [B], got shape {tuple(idx.shape)}")
        if not isinstance(z, torch.Tensor) or z.shape != (idx.shape[0], self.dim):
            raise ValueError(f"z must have shape ({idx.shape[0]}, {self.dim}) to match indices and the bank, "
                             f"got {tuple(getattr(z, 'shape', ()))}")
        z = z.detach().to(device=self.weight.device, dtype=self.weight.dtype)
        rows, inverse = torch.unique(idx, return_inverse=True)
        sums = torch.zeros(rows.shape[0], self.dim, dtype=z.dtype, device=z.device).index_add_(0, inverse, z)
        counts = torch.bincount(inverse, minlength=rows.shape[0]).to(z.dtype)
        mean = sums / counts[:, None]
        new = F.normalize(self.momentum * self.weight.index_select(0, rows) + (1 - self.momentum) * mean, dim=1)
        self.weight.index_copy_(0, rows, new)

    def extra_repr(self) -> str:
        return f"num_items={self.num_items}, dim={self.dim}, momentum={self.momentum}"


# ----------------------------------------------------------------------------- hierarchical objective


class HierarchicalContrast(nn.Module):
    """The VTHCL objective ``sum_k lambda^k (L_s^k + L_f^k)`` over feature levels, with two banks per level.

    Notebook ``05_hierarchical_pretraining`` (VTHCL_SPEC a.3-a.7). For each level k (e.g. ``"res5"``):

    * ``L_s^k``: query ``z_slow[k]``, positive the fast bank's row of the same video (``positives=
      "bank"``, CMC: detached, stale by up to one epoch) or the live ``z_fast[k]`` (``"live"``: an
      end-to-end variant, gradient reaches both views), negatives from the fast bank;
    * ``L_f^k``: the same with the roles of slow and fast swapped.

    ``banks`` holds ``"<level>_slow"`` and ``"<level>_fast"`` (:class:`MemoryBank`, ``num_items`` =
    dataset size). ``negatives="shared"`` draws ONE set of N indices per step, reused for every
    level and both directions (one ``q @ B[neg].T`` matmul each); ``"per_query"`` draws ``[B, N]``
    (CMC's gather, ``B * N * d`` floats per level and direction). With ``mask_own_index`` a query's
    own video is masked wherever it is drawn among its negatives. N is ``min(num_negatives,
    num_items - 1)``. ``in_batch_negatives`` adds the other view's *live* embeddings of the rest of
    the (per-rank) batch as B - 1 more negatives (SimCLR-style, with gradient), which matters on a
    small pool where the bank rows are stale (notebook ``07_linear_probe_and_retrieval``). ``loss="nce"`` swaps InfoNCE for :class:`NCECriterion`, one per level and
    query direction (``criteria["<level>_slow"]`` scores slow queries).

    :meth:`forward` does not touch the banks; call :meth:`update_banks` after it (with features and
    indices all-gathered across ranks under torchrun).
    """

    def __init__(self, num_items: int, levels: Sequence[str], dim: int, *, temperature: float = 0.07,
                 num_negatives: int = 16384, momentum: float = 0.5,
                 level_weights: Mapping[str, float] | None = None, negatives: str = "shared",
                 positives: str = "bank", loss: str = "softmax", mask_own_index: bool = True,
                 in_batch_negatives: bool = False, generator: torch.Generator | None = None):
        super().__init__()
        _check_count("num_items", num_items, 2)
        _check_count("dim", dim, 1)
        _check_count("num_negatives", num_negatives, 1)
        _check_positive_number("temperature", temperature)
        _check_choice("negatives", negatives, NEGATIVE_MODES)
        _check_choice("positives", positives, POSITIVE_MODES)
        _check_choice("loss", loss, LOSS_MODES)
        if isinstance(levels, str) or not levels or not all(isinstance(k, str) and k and "." not in k for k in levels) \
                or len(set(levels)) != len(levels):
            raise ValueError(f"levels={levels!r} must be a non-empty sequence of distinct names without '.', "
                             f"e.g. ('res3', 'res4', 'res5')")
        if not isinstance(mask_own_index, bool):
            raise ValueError(f"mask_own_index={mask_own_index!r} must be True or False")
        if not isinstance(in_batch_negatives, bool):
            raise ValueError(f"in_batch_negatives={in_batch_negatives!r} must be True or False")
        if in_batch_negatives and (negatives != "shared" or loss != "softmax"):
            raise ValueError("in_batch_negatives=True needs negatives='shared' and loss='softmax'")
        self.in_batch_negatives = in_batch_negatives
        self.levels = tuple(levels)
        if level_weights is None:
            level_weights = {k: 1.0 for k in self.levels}
        if not isinstance(level_weights, Mapping) or set(level_weights) != set(self.levels):
            raise ValueError(f"level_weights={level_weights!r} must map exactly the levels {self.levels} to weights")
        for k, w in level_weights.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ValueError(f"level_weights[{k!r}]={w!r} must be a finite number >= 0")
        self.level_weights = {k: float(level_weights[k]) for k in self.levels}
        self.num_items, self.dim, self.temperature = num_items, dim, temperature
        self.num_negatives = min(num_negatives, num_items - 1)
        self.negatives, self.positives, self.loss, self.mask_own_index = negatives, positives, loss, mask_own_index
        self.banks = nn.ModuleDict({
            f"{k}_{view}": MemoryBank(num_items, dim, momentum, generator=generator)
            for k in self.levels for view in ("slow", "fast")
        })
        self.criteria = nn.ModuleDict({
            f"{k}_{view}": NCECriterion(num_items, temperature) for k in self.levels for view in ("slow", "fast")
        }) if loss == "nce" else None

    @classmethod
    def from_config(cls, contrast: ContrastConfig, *, num_items: int, levels: Sequence[str], dim: int,
                    generator: torch.Generator | None = None) -> "HierarchicalContrast":
        """Build from a :class:`~vthcl_lib.config.ContrastConfig`; its ``level_weights`` are for
        (res3, res4, res5) and the last ``len(levels)`` of them are used. Notebook ``05_hierarchical_pretraining``."""
        weights = tuple(contrast.level_weights)
        if len(weights) < len(levels):
            raise ValueError(f"level_weights={weights!r} has fewer entries than levels={tuple(levels)!r}")
        return cls(num_items, levels, dim, temperature=contrast.temperature,
                   num_negatives=contrast.num_negatives, momentum=contrast.bank_momentum,
                   level_weights=dict(zip(levels, weights[len(weights) - len(levels):])),
                   negatives=contrast.negatives, positives=contrast.positives, loss=contrast.loss,
                   mask_own_index=contrast.mask_own_index, in_batch_negatives=contrast.in_batch_negatives,
                   generator=generator)

    def _check_batch(self, z_slow, z_fast, indices) -> torch.Tensor:
        for name, z in (("z_slow", z_slow), ("z_fast", z_fast)):
            if not isinstance(z, Mapping) or set(z) != set(self.levels):
                keys = sorted(z) if isinstance(z, Mapping) else type(z).__name__
                raise ValueError(f"{name} must be a dict with exactly the levels {self.levels}, got {keys}")
        idx = _check_indices("indices", indices, self.num_items)
        if idx.ndim != 1:
            raise ValueError(f"indices must be 1-D [B], got shape {tuple(idx.shape)}")
        for name, z in (("z_slow", z_slow), ("z_fast", z_fast)):
            for k in self.levels:
                if not isinstance(z[k], torch.Tensor) or z[k].shape != (idx.shape[0], self.dim):
                    raise ValueError(f"{name}[{k!r}] must have shape ({idx.shape[0]}, {self.dim}) "
                                     f"(batch of indices, dim), got {tuple(getattr(z[k], 'shape', ()))}")
        return idx

    def draw_negatives(self, indices: torch.Tensor, *,
                       generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This step's negative indices and mask: ``([N], [B, N])`` shared or ``([B, N], [B, N])`` per query.

        Notebook ``05_hierarchical_pretraining``. The mask is True where a query meets its own
        index (``None`` when ``mask_own_index`` is off).
        """
        return self._draw(_check_indices("indices", indices, self.num_items), generator)

    def _draw(self, idx: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        bank = self.banks[f"{self.levels[0]}_slow"]  # all banks have the same size: any one draws
        batch_size = None if self.negatives == "shared" else idx.shape[0]
        neg = bank.sample_negatives(self.num_negatives, generator=generator, batch_size=batch_size)
        mask = None
        if self.mask_own_index:
            own = idx.to(neg.device)[:, None]
            mask = (neg[None, :] if neg.ndim == 1 else neg) == own
        return neg, mask

    def _loss(self, key: str, query, positive, negatives, mask) -> torch.Tensor:
        if self.criteria is not None:
            return self.criteria[key](query, positive, negatives, negative_mask=mask)
        return info_nce(query, positive, negatives, self.temperature, negative_mask=mask)

    def forward(self, z_slow: Mapping[str, torch.Tensor], z_fast: Mapping[str, torch.Tensor],
                indices: torch.Tensor, *, generator: torch.Generator | None) -> tuple[torch.Tensor, dict[str, float]]:
        """``(total_loss, stats)`` for one batch; the banks are read, not written.

        ``z_slow[k]``, ``z_fast[k]``: L2-normalised ``[B, dim]`` embeddings per level; ``indices``:
        ``[B]`` dataset indices (= bank rows); ``generator`` draws the negatives. ``stats`` (floats):
        ``"<level>/loss_slow"``, ``"<level>/loss_fast"``, ``"<level>/acc"``, ``"<level>/bank_cos"``,
        ``"<level>/spread"`` and ``"loss"``.
        ``acc`` is in-batch retrieval accuracy: the fraction of slow queries whose most similar
        live fast embedding in the batch is their own clip's (chance = 1/B). Unlike the
        memory-bank loss, whose positives are random in the first epoch, it is an honest signal.
        ``"<level>/bank_cos"`` measures the bank's staleness: the mean cosine between each live
        embedding and its own view's bank row as read this step (before the update), over both
        views; near 0 while the rows are still their random start, near 1 when they track the
        encoder (notebook ``04_memory_bank``). ``"<level>/spread"`` is the mean cosine between the
        live slow embeddings of different clips in the batch: near 1 when the embeddings have
        collapsed onto one direction (then a bank row tells its video from no other), lower as
        they spread over the sphere.
        """
        idx = self._check_batch(z_slow, z_fast, indices)
        neg, mask = self._draw(idx, generator)
        total = None
        parts = []
        for k in self.levels:
            bank_s, bank_f = self.banks[f"{k}_slow"], self.banks[f"{k}_fast"]
            pos_for_slow = bank_f._take(idx) if self.positives == "bank" else z_fast[k]
            pos_for_fast = bank_s._take(idx) if self.positives == "bank" else z_slow[k]
            neg_f, neg_s, neg_mask = bank_f._take(neg), bank_s._take(neg), mask
            if self.in_batch_negatives:  # the batch's other live embeddings join the shared negatives
                neg_f, neg_s = torch.cat([neg_f, z_fast[k]]), torch.cat([neg_s, z_slow[k]])
                eye = torch.eye(idx.shape[0], dtype=torch.bool, device=neg_f.device)  # never one's own clip
                bank_mask = mask if mask is not None else torch.zeros(idx.shape[0], neg.shape[0], dtype=torch.bool,
                                                                      device=neg_f.device)
                neg_mask = torch.cat([bank_mask.to(neg_f.device), eye], dim=1)
            loss_s = self._loss(f"{k}_slow", z_slow[k], pos_for_slow, neg_f, neg_mask)
            loss_f = self._loss(f"{k}_fast", z_fast[k], pos_for_fast, neg_s, neg_mask)
            term = self.level_weights[k] * (loss_s + loss_f)
            total = term if total is None else total + term
            with torch.no_grad():
                sim = z_slow[k].detach().float() @ z_fast[k].detach().float().T
                own = torch.arange(sim.shape[0], device=sim.device)
                acc = (sim.argmax(dim=1) == own).float().mean()
                row_s, row_f = bank_s._take(idx), bank_f._take(idx)  # this step's rows, not yet updated
                bank_cos = 0.5 * (F.cosine_similarity(z_slow[k].detach().float(), row_s.float(), dim=1).mean()
                                  + F.cosine_similarity(z_fast[k].detach().float(), row_f.float(), dim=1).mean())
                pairs = max(sim.shape[0] * (sim.shape[0] - 1), 1)
                own_sim = z_slow[k].detach().float() @ z_slow[k].detach().float().T
                spread = (own_sim.sum() - own_sim.diagonal().sum()) / pairs
            parts += [loss_s.detach(), loss_f.detach(), acc, bank_cos, spread]
        values = torch.stack([*parts, total.detach()]).tolist()  # one device sync for all stats
        stats = {}
        for i, k in enumerate(self.levels):
            (stats[f"{k}/loss_slow"], stats[f"{k}/loss_fast"], stats[f"{k}/acc"],
             stats[f"{k}/bank_cos"], stats[f"{k}/spread"]) = values[5 * i: 5 * i + 5]
        stats["loss"] = values[-1]
        return total, stats

    @torch.no_grad()
    def update_banks(self, z_slow: Mapping[str, torch.Tensor], z_fast: Mapping[str, torch.Tensor],
                     indices: torch.Tensor) -> None:
        """Momentum-update every level's slow and fast bank rows ``indices`` (no gradient).

        Notebook ``05_hierarchical_pretraining``. Call after :meth:`forward` (and after the
        backward pass), with features and indices gathered from all ranks so banks stay identical.
        """
        idx = self._check_batch(z_slow, z_fast, indices)
        for k in self.levels:
            self.banks[f"{k}_slow"].update(idx, z_slow[k].detach())
            self.banks[f"{k}_fast"].update(idx, z_fast[k].detach())

    def extra_repr(self) -> str:
        return (f"levels={self.levels}, dim={self.dim}, num_items={self.num_items}, temperature={self.temperature}, "
                f"num_negatives={self.num_negatives}, negatives={self.negatives!r}, positives={self.positives!r}, "
                f"loss={self.loss!r}, mask_own_index={self.mask_own_index}, in_batch_negatives={self.in_batch_negatives}, "
                f"level_weights={self.level_weights}")


# ----------------------------------------------------------------------------- benchmark helper


def negatives_cost(batch: int, num_negatives: int, dim: int, bank_size: int, mode: str, repeats: int = 3, *,
                   device: str | torch.device = "cpu", seed: int = 0) -> dict[str, float | int]:
    """Time one :func:`info_nce` forward + backward with ``"shared"`` or ``"per_query"`` negatives.

    Notebook ``04_memory_bank`` and the benchmark script. The negatives are gathered from a random
    normalised ``[bank_size, dim]`` bank each repeat (the gather is part of the cost). Returns
    ``seconds`` (median over ``repeats``) and ``bytes_gathered`` (size of the gathered negative
    tensor: ``N * d * 4`` shared vs ``B * N * d * 4`` per query, float32).
    """
    _check_count("batch", batch, 1)
    _check_count("num_negatives", num_negatives, 1)
    _check_count("dim", dim, 1)
    _check_count("bank_size", bank_size, 2)
    _check_count("repeats", repeats, 1)
    _check_choice("mode", mode, NEGATIVE_MODES)
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    bank = MemoryBank(bank_size, dim, generator=gen).to(device)
    bank.weight.copy_(F.normalize(bank.weight, dim=1))
    query = F.normalize(torch.randn(batch, dim, generator=gen), dim=1).to(device).requires_grad_(True)
    positive = F.normalize(torch.randn(batch, dim, generator=gen), dim=1).to(device)
    times, gathered_bytes = [], 0
    for _ in range(repeats):
        neg_idx = bank.sample_negatives(num_negatives, generator=gen,
                                        batch_size=None if mode == "shared" else batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        negatives = bank.gather(neg_idx)
        loss = info_nce(query, positive, negatives, 0.07)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        gathered_bytes = negatives.numel() * negatives.element_size()
        query.grad = None
    return {"seconds": statistics.median(times), "bytes_gathered": int(gathered_bytes)}


# ----------------------------------------------------------------------------- memorisation check


def memorise_free_embeddings(num_items: int = 32, *, dim: int = 128, batch: int = 16, steps: int = 200,
                             lr: float = 0.03, temperature: float = 0.07, start_cos: float = 0.95,
                             positives: str = "bank", seed: int = 0) -> list[dict[str, float]]:
    """The objective alone, no encoder: can it memorise ``num_items`` instances? One record per step.

    Notebook ``04_memory_bank`` (issue 14: a bug check of the bank-positive path). Each instance
    has a free slow and a free fast embedding (parameters, L2-normalised when used) that start
    as ``sqrt(start_cos) mu + sqrt(1 - start_cos) e`` with one shared direction ``mu`` and
    independent random ``e`` per instance and view, so different instances start at mean cosine
    ``start_cos`` (a random-init encoder gives about 0.8-0.95) and the two views of one instance
    are no more alike than any other pair. The steps are :func:`pretrain`'s: a batch of
    ``batch`` indices drawn without replacement, :class:`HierarchicalContrast` (one level, shared
    negatives = all other rows, own index masked) against the banks as they are, SGD with momentum
    0.9, then :meth:`HierarchicalContrast.update_banks`. Records: ``step``, ``loss`` (the sum of
    the two directions), ``chance`` (``2 log(N + 1)``), ``acc``, ``bank_cos``, ``spread``.
    """
    _check_count("num_items", num_items, 2)
    _check_count("batch", batch, 1)
    _check_count("steps", steps, 1)
    _check_positive_number("lr", lr)
    if batch > num_items:
        raise ValueError(f"batch={batch} must be at most num_items={num_items}")
    if isinstance(start_cos, bool) or not isinstance(start_cos, (int, float)) or not 0 <= start_cos < 1:
        raise ValueError(f"start_cos={start_cos!r} must be in [0, 1)")
    gen = torch.Generator().manual_seed(seed)
    mu = F.normalize(torch.randn(dim, generator=gen), dim=0)

    def start() -> nn.Parameter:
        e = F.normalize(torch.randn(num_items, dim, generator=gen), dim=1)
        return nn.Parameter(math.sqrt(start_cos) * mu + math.sqrt(1 - start_cos) * e)

    slow, fast = start(), start()
    contrast = HierarchicalContrast(num_items, ("res5",), dim, temperature=temperature, positives=positives,
                                    generator=gen)
    optimizer = torch.optim.SGD([slow, fast], lr=lr, momentum=0.9)
    history = []
    for step in range(steps):
        idx = torch.randperm(num_items, generator=gen)[:batch]
        z_slow, z_fast = {"res5": F.normalize(slow[idx], dim=1)}, {"res5": F.normalize(fast[idx], dim=1)}
        loss, stats = contrast(z_slow, z_fast, idx, generator=gen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        contrast.update_banks(z_slow, z_fast, idx)
        history.append({"step": step + 1, "loss": stats["loss"], "chance": 2 * math.log(contrast.num_negatives + 1),
                        "acc": stats["res5/acc"], "bank_cos": stats["res5/bank_cos"],
                        "spread": stats["res5/spread"]})
    return history
