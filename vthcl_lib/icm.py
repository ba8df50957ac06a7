"""Instance Correspondence Maps: where in space-time the slow and the fast clip agree (VTHCL_SPEC a.8, c.6).

Taught in notebook ``10_instance_correspondence_map``. With a *linear* projection phi (one 1x1x1
convolution W, bias b) pooling and projection commute:

    phi(x^s) = W mean_{t,h,w} F^s[:, t, h, w] + b = mean_{t,h,w} (W F^s[:, t, h, w] + b)        (Eq. 10)

so the global cosine similarity of the two clips' embeddings splits over the positions of the res5 map:

    ICM^s[t, h, w] = (W F^s[:, t, h, w] + b) . phi(x^f) / (||phi(x^s)|| ||phi(x^f)||)            (Eq. 11)

and ``mean(ICM^s) = cos(phi(x^s), phi(x^f))``; ``ICM^f`` swaps the roles. :func:`correspondence_maps`
checks that identity on every call. For display the maps are upsampled to the frames and min-max
normalised per clip (:func:`upsample_map`); :func:`peak_in_box` measures whether a map's peak falls
on an object, e.g. the synthetic sprite whose box the generator knows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vthcl_lib.models.heads import ProjectionHead

IDENTITY_TOLERANCE = 1e-4  # float32 sums over a few hundred positions


@dataclass(frozen=True)
class CorrespondenceMaps:
    """The two maps of a batch and the global cosine they split (notebook ``10_instance_correspondence_map``).

    ``slow`` is ``[B, T_s, h, w]``, ``fast`` ``[B, T_f, h, w]`` (res5 resolution); ``cosine`` ``[B]``.
    """

    slow: torch.Tensor
    fast: torch.Tensor
    cosine: torch.Tensor


def correspondence_maps(slow_map: torch.Tensor, fast_map: torch.Tensor, slow_head: ProjectionHead,
                        fast_head: ProjectionHead) -> CorrespondenceMaps:
    """Eq. 11 for both pathways from res5 maps ``[B, C, T, h, w]`` and their linear heads.

    Notebook ``10_instance_correspondence_map``. Raises ``ValueError`` for non-linear heads (an MLP
    does not commute with pooling) and ``AssertionError`` if a map's mean ever differs from the
    global cosine by more than :data:`IDENTITY_TOLERANCE`.
    """
    for name, head in (("slow_head", slow_head), ("fast_head", fast_head)):
        if head.kind != "linear":
            raise ValueError(f"{name} is kind={head.kind!r}; the ICM needs kind='linear' (model head='linear')")
    per_position_s = slow_head.project_map(slow_map).float()  # [B, d, T, h, w]
    per_position_f = fast_head.project_map(fast_map).float()
    phi_s, phi_f = per_position_s.mean(dim=(2, 3, 4)), per_position_f.mean(dim=(2, 3, 4))  # Eq. 10
    scale = phi_s.norm(dim=1) * phi_f.norm(dim=1)
    slow = torch.einsum("bdthw,bd->bthw", per_position_s, phi_f) / scale[:, None, None, None]
    fast = torch.einsum("bdthw,bd->bthw", per_position_f, phi_s) / scale[:, None, None, None]
    cosine = F.cosine_similarity(phi_s, phi_f, dim=1)
    for name, icm in (("slow", slow), ("fast", fast)):
        gap = float((icm.mean(dim=(1, 2, 3)) - cosine).abs().max().detach())
        assert gap < IDENTITY_TOLERANCE, f"mean of the {name} ICM differs from the global cosine by {gap:.2e}"
    return CorrespondenceMaps(slow=slow, fast=fast, cosine=cosine)


def upsample_map(icm: torch.Tensor, size: tuple[int, int, int], *, normalise: bool = True) -> torch.Tensor:
    """One clip's map ``[T, h, w]`` -> ``size = (T, H, W)`` by trilinear interpolation, min-max scaled to [0, 1].

    Notebook ``10_instance_correspondence_map``. ``normalise=False`` keeps the raw values.
    """
    if icm.dim() != 3:
        raise ValueError(f"icm has shape {tuple(icm.shape)}; expected one clip's [T, h, w]")
    up = F.interpolate(icm[None, None].float(), size=tuple(int(s) for s in size), mode="trilinear",
                       align_corners=False)[0, 0]
    if not normalise:
        return up
    low, high = up.min(), up.max()
    return (up - low) / (high - low) if float(high - low) > 0 else torch.zeros_like(up)


def peak_in_box(heat: torch.Tensor, boxes: np.ndarray | torch.Tensor) -> float:
    """Share of frames whose hottest pixel lies inside that frame's box (notebook ``10_instance_correspondence_map``).

    ``heat`` is ``[T, H, W]`` at frame resolution; ``boxes`` ``[T, 4]`` pixel boxes ``(x1, y1, x2, y2)``,
    x2/y2 exclusive (the synthetic generator's convention). Frames whose box is empty are skipped.
    """
    boxes = torch.as_tensor(np.asarray(boxes), dtype=torch.float32)
    if heat.dim() != 3 or boxes.shape != (heat.shape[0], 4):
        raise ValueError(f"heat {tuple(heat.shape)} and boxes {tuple(boxes.shape)}; expected [T, H, W] and [T, 4]")
    width = heat.shape[2]
    flat = heat.reshape(heat.shape[0], -1).argmax(dim=1)
    ys, xs = (flat // width).float() + 0.5, (flat % width).float() + 0.5  # pixel centres
    visible = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    inside = (xs >= boxes[:, 0]) & (xs <= boxes[:, 2]) & (ys >= boxes[:, 1]) & (ys <= boxes[:, 3])
    if not bool(visible.any()):
        raise ValueError("no frame has a non-empty box; nothing to measure")
    return float(inside[visible].float().mean())


def box_area_share(boxes: np.ndarray | torch.Tensor, height: int, width: int) -> float:
    """Mean share of the frame the (visible) boxes cover: the chance level of :func:`peak_in_box`.

    Notebook ``10_instance_correspondence_map``.
    """
    boxes = torch.as_tensor(np.asarray(boxes), dtype=torch.float32)
    areas = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    visible = areas > 0
    return float((areas[visible] / (height * width)).mean()) if bool(visible.any()) else 0.0
