"""Tensor-only clip transforms; one random draw shared by both clips of a tempo pair.

Taught in notebook ``01_tempo_sampling``. VTHCL_SPEC a.1: the paper leaves spatial augmentation
open; we draw ONE random resized crop, flip, colour jitter and grayscale per raw clip and apply it
to the slow and the fast clip alike, so tempo is the only difference between the views
(SYNTHETIC_NOTES: independent augmentation blocked learning altogether).

Clips enter as uint8 ``[T, H, W, 3]`` (as :func:`vthcl_lib.video.read_frames` returns them) and
leave as normalised float ``[C, T, h, w]``. Every random number comes from the
``numpy.random.Generator`` passed in, so a seed fixes the result.

The paper-scale data path splits the augmentation in two (:meth:`ClipAugmentation.tempo_pair_uint8`
in the loader's workers, :meth:`ClipAugmentation.color_batch` in the training step): the workers
crop, resize and flip on uint8 and hand back the clip as uint8 plus the colour draw as numbers
(:func:`color_vector`), and the colour jitter, channel order, grayscale and normalisation of the whole
batch run at once on the training device. Same draws, same clips (up to the uint8 rounding of the resize).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

_GRAY = torch.tensor([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the augmentation: apply it to every clip of a pair (notebook ``01_tempo_sampling``)."""

    top: int
    left: int
    height: int
    width: int
    flip: bool
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0
    grayscale: bool = False
    channel_order: tuple[int, int, int] = (0, 1, 2)  # a permutation of RGB (channel_shuffle_prob)


def sample_crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """A random crop ``(top, left, h, w)`` covering ``scale`` of the area with aspect ``ratio``.

    The Inception-style rule: ten tries, then the largest centred crop that fits the ratio.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def to_float_cthw(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float ``[3, T, H, W]`` in ``[0, 1]``."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [T, H, W, 3], got shape {tuple(frames.shape)}")
    return frames.permute(3, 0, 1, 2).float().div_(255.0)


def resized_crop(clip: torch.Tensor, top: int, left: int, height: int, width: int, size: int) -> torch.Tensor:
    """Crop ``[C, T, H, W]`` and resize the crop to ``size x size`` (bilinear, antialiased)."""
    crop = clip[:, :, top : top + height, left : left + width]
    c, t = crop.shape[:2]
    out = F.interpolate(
        crop.reshape(1, c * t, height, width),
        size=(size, size), mode="bilinear", antialias=True, align_corners=False,
    )
    return out.reshape(c, t, size, size)


def resized_crop_uint8(frames: torch.Tensor, top: int, left: int, height: int, width: int, size: int) -> torch.Tensor:
    """Crop uint8 ``[T, H, W, 3]`` and resize to ``size x size`` (bilinear, antialiased), staying uint8 ``[T, s, s, 3]``.

    Works on the frames' channels-last layout (torch's fast uint8 path), about ten times cheaper
    than the float route at 224 pixels; it differs from :func:`resized_crop` by the rounding to uint8.
    """
    crop = frames[:, top : top + height, left : left + width].permute(0, 3, 1, 2)
    out = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.permute(0, 2, 3, 1).contiguous()


def hflip(clip: torch.Tensor) -> torch.Tensor:
    """Mirror ``[C, T, H, W]`` left to right."""
    return clip.flip(-1)


def grayscale(clip: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, repeated over the three channels."""
    luma = torch.einsum("c,cthw->thw", _GRAY.to(clip), clip)
    return luma.unsqueeze(0).expand_as(clip).clone()


def _rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    r, g, b = rgb.unbind(0)
    maxc, _ = rgb.max(0)
    minc, _ = rgb.min(0)
    delta = maxc - minc
    sat = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    safe = delta.clamp_min(1e-12)
    hue = torch.where(maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    return torch.stack([hue, sat, maxc])


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    h, s, v = hsv.unbind(0)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros_like(hsv)
    for k, (r, g, b) in enumerate(choices):
        mask = i == k
        out[0] = torch.where(mask, r, out[0])
        out[1] = torch.where(mask, g, out[1])
        out[2] = torch.where(mask, b, out[2])
    return out


def color_jitter(clip: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float) -> torch.Tensor:
    """Brightness, contrast and saturation factors and a hue shift (fraction of a turn), in that order.

    The same factors for every frame: colour must not change along time, or it would pose as motion.
    """
    out = (clip * brightness).clamp(0, 1)
    mean = grayscale(out).mean(dim=(-2, -1), keepdim=True)  # per frame, so slow == fast[::alpha] still holds
    out = ((out - mean) * contrast + mean).clamp(0, 1)
    gray = grayscale(out)
    out = ((out - gray) * saturation + gray).clamp(0, 1)
    if hue:
        hsv = _rgb_to_hsv(out)
        hsv[0] = (hsv[0] + hue) % 1.0
        out = _hsv_to_rgb(hsv).clamp(0, 1)
    return out


COLOR_FIELDS = ("brightness", "contrast", "saturation", "hue", "grayscale", "order0", "order1", "order2")


def color_vector(params: AugmentParams) -> torch.Tensor:
    """The colour part of a draw as float32 ``[8]`` (:data:`COLOR_FIELDS`), what a worker hands back with a clip."""
    return torch.tensor([params.brightness, params.contrast, params.saturation, params.hue, float(params.grayscale),
                         *map(float, params.channel_order)], dtype=torch.float32)


def color_jitter_batch(clips: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """:func:`color_jitter` of float ``[B, 3, T, H, W]`` with each clip's own factors (``colors [B, 8]``).

    Clips whose factors are the identity (no jitter drawn) come back unchanged, as in the per-clip path.
    """
    b, c, s, h = (colors[:, k].to(clips).view(-1, 1, 1, 1, 1) for k in range(4))
    out = (clips * b).clamp(0, 1)
    mean = _luma(out).mean(dim=(-2, -1), keepdim=True)  # per frame, as color_jitter
    out = ((out - mean) * c + mean).clamp(0, 1)
    gray = _luma(out)
    out = ((out - gray) * s + gray).clamp(0, 1)
    hsv = _rgb_to_hsv(out.transpose(0, 1))  # channels first: the HSV helpers unbind dim 0
    hsv[0] = (hsv[0] + h.transpose(0, 1)) % 1.0
    hued = _hsv_to_rgb(hsv).clamp(0, 1).transpose(0, 1)
    out = torch.where(h != 0, hued, out)
    identity = (b == 1) & (c == 1) & (s == 1) & (h == 0)
    return torch.where(identity, clips, out)


def _luma(clips: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of ``[B, 3, T, H, W]`` as ``[B, 1, T, H, W]``."""
    return (clips * _GRAY.to(clips).view(1, 3, 1, 1, 1)).sum(1, keepdim=True)


def normalize(clip: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` on ``[C, T, H, W]``."""
    m = torch.tensor(mean, dtype=clip.dtype).view(-1, 1, 1, 1)
    s = torch.tensor(std, dtype=clip.dtype).view(-1, 1, 1, 1)
    return (clip - m) / s


@dataclass(frozen=True)
class ClipAugmentation:
    """Training augmentation: random resized crop, flip, colour jitter, channel shuffle, grayscale, normalise.

    ``sample`` draws the parameters once; ``apply`` uses them; calling the object with several
    clips applies one draw to all of them (notebook ``01_tempo_sampling``). With
    ``color_per_view`` the geometry (crop, flip) is still drawn once, but every clip gets its own
    colour draw (jitter, channel order, grayscale): the views then share what moved where, not
    what colour it had, so colour cannot identify a video (notebook ``07_linear_probe_and_retrieval``).
    """

    crop_size: int = 56
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    color_jitter: float = 0.4
    hue_jitter: float = 0.1
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    channel_shuffle_prob: float = 0.0  # chance of a random RGB permutation (a large hue change)
    color_per_view: bool = False  # one colour draw per clip of a pair instead of one for both

    def sample(self, rng: np.random.Generator, height: int, width: int) -> AugmentParams:
        top, left, h, w = sample_crop_box(rng, height, width, self.crop_scale, self.crop_ratio)
        flip = bool(rng.random() < self.flip_prob)
        return self.sample_color(rng, AugmentParams(top, left, h, w, flip))

    def sample_color(self, rng: np.random.Generator, geometry: AugmentParams) -> AugmentParams:
        """``geometry``'s crop and flip with a fresh colour draw (jitter, channel order, grayscale)."""
        jitter = {}
        if (self.color_jitter > 0 or self.hue_jitter > 0) and rng.random() < self.jitter_prob:
            s = self.color_jitter
            jitter = dict(
                brightness=float(rng.uniform(1 - s, 1 + s)), contrast=float(rng.uniform(1 - s, 1 + s)),
                saturation=float(rng.uniform(1 - s, 1 + s)), hue=float(rng.uniform(-self.hue_jitter, self.hue_jitter)),
            )
        order = (0, 1, 2)
        if self.channel_shuffle_prob > 0 and rng.random() < self.channel_shuffle_prob:
            order = tuple(int(c) for c in rng.permutation(3))
        gray = bool(rng.random() < self.grayscale_prob)
        return AugmentParams(geometry.top, geometry.left, geometry.height, geometry.width, geometry.flip,
                             grayscale=gray, channel_order=order, **jitter)  # type: ignore[arg-type]

    def geometry(self, frames: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Crop, resize and flip: uint8 ``[T, H, W, C]`` -> float ``[C, T, crop, crop]`` in [0, 1]."""
        clip = resized_crop(to_float_cthw(frames), params.top, params.left, params.height, params.width, self.crop_size)
        return hflip(clip) if params.flip else clip

    def color(self, clip: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Colour jitter, channel order, grayscale and normalisation of a float ``[C, T, h, w]`` clip."""
        if (params.brightness, params.contrast, params.saturation, params.hue) != (1.0, 1.0, 1.0, 0.0):
            clip = color_jitter(clip, params.brightness, params.contrast, params.saturation, params.hue)
        if params.channel_order != (0, 1, 2):
            clip = clip[list(params.channel_order)]
        if params.grayscale:
            clip = grayscale(clip)
        return normalize(clip, self.mean, self.std)

    def apply(self, frames: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        return self.color(self.geometry(frames, params), params)

    def tempo_pair(self, fast_frames: torch.Tensor, alpha: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(slow, fast)`` from the fast clip's frames: one geometry; the slow clip is ``fast[:, ::alpha]``.

        With one colour draw the slow clip is simply the augmented fast clip subsampled; with
        ``color_per_view`` the slow clip gets its own colour draw. Notebook ``01_tempo_sampling``.
        """
        params = self.sample(rng, *fast_frames.shape[1:3])
        base = self.geometry(fast_frames, params)
        fast = self.color(base, params)
        if not self.color_per_view:
            return fast[:, ::alpha], fast
        return self.color(base[:, ::alpha], self.sample_color(rng, params)), fast

    def tempo_pair_uint8(self, fast_frames: torch.Tensor, alpha: int, rng: np.random.Generator
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """The worker's half of :meth:`tempo_pair`: ``(fast uint8 [T, crop, crop, 3], colours [2, 8])``.

        The same draws in the same order as :meth:`tempo_pair`; row 0 of ``colours`` is the fast
        clip's colour draw, row 1 the slow clip's (the same row unless ``color_per_view``). No slow
        clip is handed back: it is ``fast[::alpha]``, a view. :meth:`color_batch` finishes the batch.
        Notebook ``05_hierarchical_pretraining``.
        """
        params = self.sample(rng, *fast_frames.shape[1:3])
        fast = resized_crop_uint8(fast_frames, params.top, params.left, params.height, params.width, self.crop_size)
        if params.flip:
            fast = fast.flip(2)
        slow_params = self.sample_color(rng, params) if self.color_per_view else params
        return fast, torch.stack([color_vector(params), color_vector(slow_params)])

    def color_batch(self, fast: torch.Tensor, colors: torch.Tensor, alpha: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's half of :meth:`tempo_pair`, for a whole batch on its device: ``(slow, fast)`` float
        ``[B, 3, T, crop, crop]`` normalised, from uint8 ``fast [B, T, crop, crop, 3]`` and ``colors [B, 2, 8]``.

        Colour jitter, channel order, grayscale and normalisation, each clip with its own draw; the
        slow clip is ``fast[:, :, ::alpha]`` (a view) or, with ``color_per_view``, its frames with
        their own colour draw. Notebook ``05_hierarchical_pretraining``.
        """
        if fast.ndim != 5 or fast.shape[-1] != 3 or colors.shape != (fast.shape[0], 2, len(COLOR_FIELDS)):
            raise ValueError(f"expected fast [B, T, H, W, 3] and colors [B, 2, {len(COLOR_FIELDS)}], got "
                             f"{tuple(fast.shape)} and {tuple(colors.shape)}")
        # [B, T, H, W, 3] -> [B, 3, T, H, W] as a view: channels-last memory, as channels_last_3d wants
        base = fast.permute(0, 4, 1, 2, 3).float().div_(255.0)
        out_fast = self._color_batch(base, colors[:, 0])
        if not self.color_per_view:
            return out_fast[:, :, ::alpha], out_fast
        return self._color_batch(base[:, :, ::alpha], colors[:, 1]), out_fast

    def _color_batch(self, clips: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
        colors = colors.to(clips.device)
        clips = color_jitter_batch(clips, colors)
        order = colors[:, 5:8].long().view(-1, 3, 1, 1, 1).expand_as(clips)
        clips = torch.gather(clips, 1, order)
        clips = torch.where(colors[:, 4].view(-1, 1, 1, 1, 1) > 0.5, _luma(clips).expand_as(clips), clips)
        mean = torch.tensor(self.mean, dtype=clips.dtype, device=clips.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.std, dtype=clips.dtype, device=clips.device).view(1, -1, 1, 1, 1)
        return (clips - mean) / std

    def __call__(self, *clips: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        heights = {tuple(c.shape[1:3]) for c in clips}
        if len(heights) != 1:
            raise ValueError(f"clips of one pair must share their frame size, got {sorted(heights)}")
        params = self.sample(rng, *heights.pop())
        if not self.color_per_view:
            return tuple(self.apply(c, params) for c in clips)
        draws = [params] + [self.sample_color(rng, params) for _ in clips[1:]]
        return tuple(self.apply(c, p) for c, p in zip(clips, draws))


@dataclass(frozen=True)
class EvalTransform:
    """Test-time transform: resize the short side to ``crop_size``, centre crop, normalise."""

    crop_size: int = 56
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        height, width = frames.shape[1:3]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        clip = resized_crop(to_float_cthw(frames), top, left, side, side, self.crop_size)
        return normalize(clip, self.mean, self.std)


def augmentation_from_config(data_cfg) -> ClipAugmentation:
    """The training augmentation a :class:`vthcl_lib.config.DataConfig` describes."""
    return ClipAugmentation(
        crop_size=data_cfg.crop_size, crop_scale=tuple(data_cfg.crop_scale), color_jitter=data_cfg.color_jitter,
        hue_jitter=data_cfg.hue_jitter, grayscale_prob=data_cfg.grayscale_prob,
        mean=tuple(data_cfg.mean), std=tuple(data_cfg.std), channel_shuffle_prob=data_cfg.channel_shuffle_prob,
        color_per_view=data_cfg.color_per_view,
    )


def eval_transform_from_config(data_cfg) -> EvalTransform:
    """The test-time transform a :class:`vthcl_lib.config.DataConfig` describes."""
    return EvalTransform(crop_size=data_cfg.crop_size, mean=tuple(data_cfg.mean), std=tuple(data_cfg.std))
