"""The paper's ablations: relative tempo alpha (Table 2a) and hierarchy depth D (Table 2b) (VTHCL_SPEC d).

Taught in notebook ``11_ablations``. Each point (alpha, D) is one pre-training per seed, in its own
run folder, scored downstream by the linear probe (frozen res5) and by fine-tuning, on the same
data, split and schedule as notebooks 06-07. Table 2a varies alpha with D = 1; Table 2b varies D
with alpha = 2; the point (alpha = 2, D = 1) belongs to both. The point that equals the preset's own
settings reuses the main pre-training (``pretrain_root``) instead of training it twice.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from vthcl_lib.config import Config, validate
from vthcl_lib.datasets import build_labeled_dataset
from vthcl_lib.engine import ensure_pretrained, seed_run
from vthcl_lib.environment import resolve_device
from vthcl_lib.evaluate import frozen_features, frozen_protocols
from vthcl_lib.finetune import finetune, init_slow_encoder

TABLE_2A = ((1, 1), (2, 1), (4, 1))  # (alpha, D): the relative tempo with a single level
TABLE_2B = ((2, 1), (2, 2), (2, 3))  # the depth of the hierarchy at alpha = 2
ABLATION_POINTS = tuple(dict.fromkeys(TABLE_2A + TABLE_2B))
ABLATION_PROTOCOLS = ("linear", "finetune")


def point_name(alpha: int, levels: int) -> str:
    """``alpha<a>_D<d>``, the run folder of one ablation point (notebook ``11_ablations``)."""
    return f"alpha{int(alpha)}_D{int(levels)}"


def ablation_config(cfg: Config, alpha: int, levels: int, *, epochs: int | None = None) -> Config:
    """``cfg`` with the relative tempo ``alpha`` and ``levels`` = D (and optionally other pre-training epochs).

    Notebook ``11_ablations``. Fails at once when ``tau`` is not divisible by ``alpha``.
    """
    out = replace(cfg, data=replace(cfg.data, alpha=int(alpha)), model=replace(cfg.model, levels=int(levels)))
    if epochs is not None:
        out = replace(out, train=replace(out.train, epochs=int(epochs)))
    validate(out)
    return out


def point_run_root(cfg: Config, alpha: int, levels: int, *, pretrain_root: str | os.PathLike,
                   ablation_root: str | os.PathLike, epochs: int | None = None) -> Path:
    """Where the seeds of a point are pre-trained: the main ``pretrain_root`` for the preset's own point, else
    ``<ablation_root>/<point_name>`` (notebook ``11_ablations``)."""
    own = (int(alpha), int(levels)) == (cfg.data.alpha, cfg.model.levels) and epochs in (None, cfg.train.epochs)
    return Path(pretrain_root) if own else Path(ablation_root) / point_name(alpha, levels)


def score_point(cfg: Config, alpha: int, levels: int, seed: int, *, pretrain_root: str | os.PathLike,
                ablation_root: str | os.PathLike, epochs: int | None = None, dataset: str = "ucf101", split: int = 1,
                protocols: Sequence[str] = ABLATION_PROTOCOLS, progress: bool = True) -> list[dict[str, Any]]:
    """Pre-train point (alpha, D) with ``seed`` if missing, then score its slow encoder: one row per protocol.

    Notebook ``11_ablations``. Rows: ``{"alpha", "levels", "seed", "dataset", "split", "protocol",
    "top1"}`` (top-1 a fraction), the form ``report.our_results`` reads as ``ablation_results``.
    Downstream data, probe and schedule come from ``cfg`` itself, the same for every point.
    """
    unknown = sorted(set(protocols) - set(ABLATION_PROTOCOLS))
    if unknown:
        raise ValueError(f"protocols {unknown} are not known; expected some of {ABLATION_PROTOCOLS}")
    point_cfg = ablation_config(cfg, alpha, levels, epochs=epochs)
    root = point_run_root(cfg, alpha, levels, pretrain_root=pretrain_root, ablation_root=ablation_root, epochs=epochs)
    checkpoint = ensure_pretrained(seed_run(point_cfg, seed, root))
    common = {"alpha": int(alpha), "levels": int(levels), "seed": int(seed), "dataset": dataset, "split": int(split)}
    rows = []
    if "linear" in protocols:
        train_set = build_labeled_dataset(cfg, dataset, split, "train", mode="test", progress=progress)
        test_set = build_labeled_dataset(cfg, dataset, split, "test", progress=progress)
        encoder, _ = init_slow_encoder(point_cfg, "vthcl", checkpoint=checkpoint)
        feats = frozen_features(encoder, train_set, test_set, level=cfg.probe.probe_level, device=resolve_device(cfg.device),
                                seed=seed, num_workers=cfg.data.num_workers, precision=cfg.train.precision,
                                progress=progress)
        scores = frozen_protocols(feats["train_x"], feats["train_y"], feats["test_x"], feats["test_y"], cfg.probe, seed=seed)
        rows.append({**common, "protocol": "linear", "top1": scores["linear"]["top1"]})
    if "finetune" in protocols:
        encoder, _ = init_slow_encoder(point_cfg, "vthcl", checkpoint=checkpoint)
        record = finetune(cfg, encoder, dataset=dataset, split=split, seed=seed, progress=progress)
        rows.append({**common, "protocol": "finetune", "top1": record["top1"]})
    return rows


def trend(rows: Sequence[dict[str, Any]], points: Sequence[tuple[int, int]], protocol: str,
          paper_gap: float) -> dict[str, Any]:
    """Whether our scores along ``points`` move like the paper's: the first-to-last gap against the seeds' noise.

    Notebook ``11_ablations``. ``rows`` are :func:`score_point` rows; ``paper_gap`` is the paper's
    last-minus-first difference (points). Returns per-point ``means`` (in %), ``gap`` (last minus
    first, in points), ``noise`` (twice the standard error of that difference, from the per-seed
    spread), ``monotone`` (the means never step against the gap), and ``verdict``: ``"too few seeds"``
    when an end point has fewer than two (no noise estimate), ``"within noise"`` when ``|gap| <= noise``,
    else ``"same direction"`` or ``"opposite direction"`` as the paper.
    """
    values = []
    for alpha, levels in points:
        v = [100 * r["top1"] for r in rows
             if r["protocol"] == protocol and r["alpha"] == alpha and r["levels"] == levels]
        if not v:
            raise ValueError(f"no {protocol!r} rows for alpha={alpha}, D={levels}; score that point first")
        values.append(v)
    means = [sum(v) / len(v) for v in values]

    def sem2(v: list[float]) -> float:  # squared standard error of a mean (0 with one seed)
        if len(v) < 2:
            return 0.0
        m = sum(v) / len(v)
        return sum((x - m) ** 2 for x in v) / (len(v) - 1) / len(v)

    gap = means[-1] - means[0]
    noise = 2.0 * (sem2(values[0]) + sem2(values[-1])) ** 0.5
    steps = [b - a for a, b in zip(means, means[1:])]
    monotone = all(s * gap >= 0 for s in steps)
    if min(len(values[0]), len(values[-1])) < 2:
        verdict = "too few seeds"
    elif abs(gap) <= noise or gap == 0:
        verdict = "within noise"
    else:
        verdict = "same direction" if gap * paper_gap > 0 else "opposite direction"
    return {"protocol": protocol, "means": means, "gap": gap, "noise": noise, "monotone": monotone,
            "paper_gap": float(paper_gap), "verdict": verdict, "seeds": min(len(v) for v in values)}
