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

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from vthcl_lib.config import Config
from vthcl_lib.models.heads import ProjectionHead
from vthcl_lib.synthetic import MOTION_CLASSES, make_video
from vthcl_lib.tempo import sample_tempo_indices
from vthcl_lib.transforms import normalize, to_float_cthw

IDENTITY_TOLERANCE = 1e-4  # float32 sums over a few hundred positions
PLATEAU = 1e-3  # pixels this close to a frame's maximum (maps scaled to [0, 1]) form its peak


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
    """Share of frames whose peak lies inside that frame's box (notebook ``10_instance_correspondence_map``).

    The peak is the centre of the pixels within :data:`PLATEAU` of the frame's maximum.

    ``heat`` is ``[T, H, W]`` at frame resolution; ``boxes`` ``[T, 4]`` pixel boxes ``(x1, y1, x2, y2)``,
    x2/y2 exclusive (the synthetic generator's convention). Frames whose box is empty are skipped.
    """
    boxes = torch.as_tensor(np.asarray(boxes), dtype=torch.float32)
    if heat.dim() != 3 or boxes.shape != (heat.shape[0], 4):
        raise ValueError(f"heat {tuple(heat.shape)} and boxes {tuple(boxes.shape)}; expected [T, H, W] and [T, 4]")
    # The peak is the centre of the frame's hottest plateau: an upsampled coarse map has flat maxima,
    # whose first pixel (argmax) would sit on the plateau's corner.
    peak = heat >= heat.flatten(1).max(dim=1).values[:, None, None] - PLATEAU
    rows = torch.arange(heat.shape[1], dtype=torch.float32)[None, :, None] + 0.5
    cols = torch.arange(heat.shape[2], dtype=torch.float32)[None, None, :] + 0.5
    count = peak.sum(dim=(1, 2)).float()
    ys, xs = (peak * rows).sum(dim=(1, 2)) / count, (peak * cols).sum(dim=(1, 2)) / count
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


@torch.no_grad()
def maps_for_clips(net: torch.nn.Module, slow: torch.Tensor, fast: torch.Tensor, *, level: str = "res5") -> CorrespondenceMaps:
    """The ICMs of clip pairs through a pre-trained net (``engine.VTHCLNet``: ``slow``, ``fast``, ``heads_*``).

    ``slow`` ``[B, 3, T_s, H, W]`` and ``fast`` ``[B, 3, T_f, H, W]`` normalised clips. Notebook
    ``10_instance_correspondence_map``.
    """
    net.eval()
    return correspondence_maps(net.slow(slow)[level], net.fast(fast)[level], net.heads_slow[level], net.heads_fast[level])


@dataclass(frozen=True)
class ClipPair:
    """A rendered synthetic slow/fast pair with the main sprite's boxes (notebook ``10_instance_correspondence_map``).

    ``slow_frames``/``fast_frames`` are uint8 ``[T, H, W, 3]``, ``slow``/``fast`` the normalised
    ``[3, T, H, W]`` inputs, ``*_boxes`` ``[T, 4]`` pixel boxes of the labelled sprite.
    """

    motion: str
    slow_frames: np.ndarray
    fast_frames: np.ndarray
    slow: torch.Tensor
    fast: torch.Tensor
    slow_boxes: np.ndarray
    fast_boxes: np.ndarray


def synthetic_clip_pairs(cfg: Config, count: int, *, seed: int = 0, frame_size: int | None = None) -> list[ClipPair]:
    """``count`` fresh synthetic videos (classes in turn) cut into the preset's slow/fast pair, with sprite boxes.

    The videos are rendered in memory with ``cfg.synthetic`` (never written, never in the training
    set), one window of ``window`` frames each, at full frame size without cropping so that the
    generator's boxes stay exact. ``frame_size`` (default the corpus's) renders larger frames, which
    gives a finer res5 map (stride 32). Notebook ``10_instance_correspondence_map``.
    """
    d = cfg.data
    render = cfg.synthetic if frame_size is None else replace(cfg.synthetic, frame_size=int(frame_size))
    pairs = []
    for k in range(int(count)):
        rng = np.random.default_rng([int(seed), 10, k])
        motion = MOTION_CLASSES[k % len(MOTION_CLASSES)]
        video = make_video(rng, motion, d.window, render)
        slow_idx, fast_idx = sample_tempo_indices(d.window, window=d.window, tau=d.tau, alpha=d.alpha, start=0)
        clips = {name: normalize(to_float_cthw(torch.from_numpy(video.frames[idx])), d.mean, d.std)
                 for name, idx in (("slow", slow_idx), ("fast", fast_idx))}
        pairs.append(ClipPair(motion, video.frames[slow_idx], video.frames[fast_idx], clips["slow"], clips["fast"],
                              video.boxes[0][slow_idx], video.boxes[0][fast_idx]))
    return pairs


def sprite_overlap(net: torch.nn.Module, pairs: list[ClipPair], *, level: str = "res5") -> dict[str, float]:
    """How often each pathway's ICM peaks on the labelled sprite: ``{"slow", "fast", "chance"}``.

    Per clip, :func:`peak_in_box` of the upsampled map against the sprite's boxes, averaged over
    clips; ``chance`` is the mean share of the frame the sprite's box covers (a peak placed at
    random). Notebook ``10_instance_correspondence_map``.
    """
    if not pairs:
        raise ValueError("pairs is empty; expected synthetic_clip_pairs(...)")
    maps = maps_for_clips(net, torch.stack([p.slow for p in pairs]), torch.stack([p.fast for p in pairs]), level=level)
    out = {"slow": [], "fast": [], "chance": []}
    for k, pair in enumerate(pairs):
        for name, icm, frames, boxes in (("slow", maps.slow[k], pair.slow_frames, pair.slow_boxes),
                                         ("fast", maps.fast[k], pair.fast_frames, pair.fast_boxes)):
            out[name].append(peak_in_box(upsample_map(icm, frames.shape[:3]), boxes))
        out["chance"].append(box_area_share(pair.slow_boxes, *pair.slow_frames.shape[1:3]))
    return {name: float(np.mean(values)) for name, values in out.items()}
