"""Projection heads phi: pooled feature map -> L2-normalised embedding z (VTHCL_SPEC a.4, a.7, a.8).

Taught in notebook ``02_slow_fast_encoders``; one head per level and pathway is used in
``05_hierarchical_pretraining``. Every head global-average-pools its level's feature map over
(T, H, W), projects it to ``out_dim`` (d = 128) and L2-normalises, so that a dot product between two
embeddings is their cosine. ``kind="mlp"`` is the paper's non-linear phi (Linear-ReLU-Linear, as
SimCLR / MoCo-v2 suggest); ``kind="linear"`` is the single 1x1x1 conv of the Instance Correspondence
Map experiment: being linear, it commutes with pooling, so :meth:`ProjectionHead.project_map` gives
the per-position projections whose mean is the pooled projection (Eq. 10).
"""
from __future__ import annotations

from numbers import Integral
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = ("res3", "res4", "res5")  # the hierarchy, shallow to deep; D levels use the last D
HEAD_KINDS = ("mlp", "linear")


def levels_for(num_levels: int) -> tuple[str, ...]:
    """The stages contrasted with D levels: 1 -> (res5,), 2 -> (res4, res5), 3 -> (res3, res4, res5).

    Notebook ``05_hierarchical_pretraining``.
    """
    if isinstance(num_levels, bool) or not isinstance(num_levels, Integral) or not 1 <= num_levels <= len(LEVELS):
        raise ValueError(f"levels={num_levels!r}; expected 1 ({{res5}}), 2 ({{res4, res5}}) "
                         "or 3 ({res3, res4, res5})")
    return LEVELS[-int(num_levels):]


class ProjectionHead(nn.Module):
    """phi for one level and pathway: GAP over (T, H, W) -> projection -> L2-normalise.

    Notebook ``02_slow_fast_encoders``.

    ``kind="mlp"``: Linear(in_dim, hidden or in_dim) -> ReLU -> Linear(., out_dim).
    ``kind="linear"``: one 1x1x1 Conv3d(in_dim, out_dim), applied to the pooled vector.
    ``forward`` takes a feature map ``[B, C, T, H, W]`` (or an already pooled ``[B, C]``) and
    returns ``[B, out_dim]`` with unit rows.
    """

    def __init__(self, in_dim: int, out_dim: int = 128, kind: str = "mlp", hidden: int | None = None):
        super().__init__()
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden", hidden)):
            if value is None and name == "hidden":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; expected a whole number >= 1")
        if kind not in HEAD_KINDS:
            raise ValueError(f"kind={kind!r}; expected one of {HEAD_KINDS}")
        if kind == "linear" and hidden is not None:
            raise ValueError(f"hidden={hidden!r} only applies to kind='mlp'; expected None for kind='linear'")
        self.in_dim, self.out_dim, self.kind = in_dim, out_dim, kind
        if kind == "mlp":
            width = hidden or in_dim  # MoCo-v2's choice: hidden width = input width
            self.proj = nn.Sequential(nn.Linear(in_dim, width), nn.ReLU(inplace=True), nn.Linear(width, out_dim))
        else:
            self.proj = nn.Conv3d(in_dim, out_dim, kernel_size=1)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            x = x.mean(dim=(2, 3, 4))
        elif x.dim() != 2:
            raise ValueError(f"input has shape {tuple(x.shape)}; expected [B, C, T, H, W] or [B, C]")
        if x.shape[1] != self.in_dim:
            raise ValueError(f"input has {x.shape[1]} channels; expected in_dim={self.in_dim}")
        return x

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled projection before normalisation, ``[B, out_dim]`` (phi(x) of Eq. 10)."""
        pooled = self._pool(x)
        if self.kind == "mlp":
            return self.proj(pooled)
        # The 1x1x1 conv is a linear map of channels; on the pooled vector it is F.linear.
        return F.linear(pooled, self.proj.weight.flatten(1), self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(x), dim=1)

    def project_map(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Per-position projections ``W F[:, t, h, w] + b``, ``[B, out_dim, T, H, W]``, un-normalised.

        Only for kind "linear" (notebook ``02_slow_fast_encoders``; used by the ICM).

        Their mean over (T, H, W) equals :meth:`project` of the same map, which is what lets the
        Instance Correspondence Map split the global similarity over space-time (VTHCL_SPEC a.8).
        """
        if self.kind != "linear":
            raise ValueError(f"project_map needs kind='linear' (a linear phi commutes with pooling); "
                             f"this head is kind={self.kind!r}")
        if feature_map.dim() != 5 or feature_map.shape[1] != self.in_dim:
            raise ValueError(f"feature_map has shape {tuple(feature_map.shape)}; expected [B, {self.in_dim}, T, H, W]")
        return self.proj(feature_map)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


def build_heads(stage_channels: Mapping[str, int], levels: int, out_dim: int = 128, kind: str = "mlp",
                hidden: int | None = None) -> nn.ModuleDict:
    """One :class:`ProjectionHead` per contrasted level, keyed "res3"/"res4"/"res5".

    Notebook ``05_hierarchical_pretraining``.

    ``stage_channels`` is an encoder's ``stage_channels``; ``levels`` is D (see :func:`levels_for`).
    Build one ModuleDict per pathway: the slow and fast heads differ in input width (VTHCL_SPEC g.6).
    """
    names = levels_for(levels)
    missing = [name for name in names if name not in stage_channels]
    if missing:
        raise ValueError(f"stage_channels={dict(stage_channels)} lacks {missing}; expected channels for {names}")
    return nn.ModuleDict({name: ProjectionHead(stage_channels[name], out_dim, kind, hidden) for name in names})


def heads_from_config(model_cfg: Any, encoder: nn.Module) -> nn.ModuleDict:
    """``build_heads`` for ``encoder`` with a ``ModelConfig``'s levels, embed_dim, head and head_hidden.

    Notebook ``05_hierarchical_pretraining``.
    """
    return build_heads(encoder.stage_channels, model_cfg.levels, out_dim=model_cfg.embed_dim, kind=model_cfg.head,
                       hidden=model_cfg.head_hidden)
