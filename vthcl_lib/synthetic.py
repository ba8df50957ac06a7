"""Deterministic synthetic video corpus: sprites whose MOTION is the label, written as real video files.

Taught in notebook ``00_setup_and_data``. DESIGN section 4 and SYNTHETIC_NOTES shape it:

* the label is the motion pattern (:data:`MOTION_CLASSES`); appearance (shape, colour, size,
  background) is drawn independently of it, and each video has its own tempo (a speed factor,
  log-uniform in ``tempo_range``) that scales every speed and period;
* clutter keeps random features from solving the task: textured backgrounds from a small SHARED
  pool (a unique background per video is a per-instance shortcut), one small distractor sprite
  with its own unrelated motion, pixel noise and a random sprite colour;
* the clutter is configurable (``background="plain"``, ``distractor=False``, ``noise_sigma=0``):
  the ``demo`` preset turns it off, because with it even supervised training could not learn the
  motions in a CPU budget, while random features stay weak without it (notebook
  ``07_linear_probe_and_retrieval``);
* a horizontal flip never changes the label: every class is either unchanged by a flip or has a
  direction sign drawn both ways with equal probability (:data:`FLIP_BEHAVIOUR`,
  :func:`mirror_params`). The renderer is mirror-exact: flipping a rendered video gives the video
  of the mirrored motion (shapes are symmetric about their vertical axis).

The code is layered so later layouts (AVA-style detection with several actors, Epic-style
anticipation with consecutive segments) reuse it: appearance sampling (:func:`sample_appearance`),
motion functions (:func:`sample_motion_params`, :func:`motion_track`), a compositor for any number
of actors that returns each actor's box per frame (:func:`render_scene`), and per-layout writers
(:func:`write_kinetics_style`, :func:`write_ucf101_style`, :func:`write_hmdb51_style`) on top.

Determinism: every video draws from ``numpy.random.default_rng([seed, stream, a, b])`` built from
the config's seed, the dataset, the purpose and the video's index, so a corpus does not depend on
the number of workers or the order in which they finish.
"""
from __future__ import annotations

import colorsys
import csv
import dataclasses
import functools
import json
import math
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from vthcl_lib.progress import progress_bar

from vthcl_lib.config import SyntheticConfig
from vthcl_lib.video import write_video

# Sorted, so a class's index here is its 0-based id in every layout (UCF classInd order, HMDB sorted names).
MOTION_CLASSES = (
    "diagonal_slide",
    "flicker",
    "horizontal_slide",
    "orbit",
    "spin",
    "vertical_slide",
    "zigzag",
    "zoom_pulse",
)

# What a horizontal flip does to each class: none turns one class into another.
FLIP_BEHAVIOUR = {
    "diagonal_slide": "mirrors the horizontal direction; all four diagonal directions are drawn equally often",
    "flicker": "unchanged: the sprite stays in place while its brightness pulses",
    "horizontal_slide": "reverses left/right; both directions are drawn equally often",
    "orbit": "reverses the sense of the orbit; clockwise and counter-clockwise are drawn equally often",
    "spin": "reverses the sense of rotation; both senses are drawn equally often",
    "vertical_slide": "unchanged: up/down motion has no horizontal component",
    "zigzag": "reverses the horizontal travel; both directions are drawn equally often",
    "zoom_pulse": "unchanged: the sprite stays in place while its size pulses",
}

# Shapes fit inside the unit circle of the sprite's own frame and are symmetric about its vertical
# axis (u -> -u), which makes the renderer mirror-exact.
SHAPES = ("disc", "square", "triangle", "cross", "ring", "star", "diamond", "hexagon")

GENERATOR_VERSION = 3  # 2: MPEG-4 at a fixed quantiser; 3: plain backgrounds and the distractor made optional
BACKGROUNDS = ("texture", "plain")
PLAIN_GREY = 0.4  # the uniform background of background="plain"
LAYOUT_DIRS = ("kinetics400", "ucf101", "hmdb51")
STAMP_NAME = "corpus.json"
_IN_PROGRESS_NAME = ".synthetic_in_progress"

# Random streams: [seed, dataset * 10 + purpose, a, b] (fixed length: SeedSequence pads short keys with zeros).
_DATASET_CODES = {"kinetics400": 1, "ucf101": 2, "hmdb51": 3, "ava": 4, "epic_kitchens": 5,
                  "something_something_v1": 6, "backgrounds": 9}
_LENGTH, _CONTENT, _APPEARANCE, _SPLIT = 1, 2, 3, 4

SPRITE_RADIUS = (0.14, 0.22)  # main sprite radius as a fraction of the frame side
DISTRACTOR_RADIUS = (0.06, 0.09)
SPRITE_TONE = 0.6  # the lower half of a sprite is this much darker, so rotation shows on a disc too


def stream_rng(seed: int, dataset: str, purpose: int, a: int = 0, b: int = 0) -> np.random.Generator:
    """The random generator of one (dataset, purpose, index) stream; independent of worker order.

    Notebook ``00_setup_and_data``.
    """
    return np.random.default_rng([int(seed), _DATASET_CODES[dataset] * 10 + purpose, int(a), int(b)])


def camel_case(name: str) -> str:
    """``horizontal_slide`` -> ``HorizontalSlide`` (UCF-101-style folder names). Notebook ``00_setup_and_data``."""
    return "".join(part.capitalize() for part in name.split("_"))


def check_synthetic_config(cfg: SyntheticConfig) -> None:
    """Raise ``ValueError`` naming the field when ``cfg`` cannot make a corpus (notebook ``00_setup_and_data``)."""
    if cfg.frame_size % 2 or cfg.frame_size < 16:
        raise ValueError(f"synthetic frame_size={cfg.frame_size} must be even and >= 16 (H.264 needs even sizes)")
    if not 1 <= cfg.min_frames <= cfg.max_frames:
        raise ValueError(f"synthetic min_frames={cfg.min_frames}, max_frames={cfg.max_frames}: expected 1 <= min <= max")
    if cfg.fps < 1:
        raise ValueError(f"synthetic fps={cfg.fps} must be >= 1")
    if cfg.num_pretrain < 0:
        raise ValueError(f"synthetic num_pretrain={cfg.num_pretrain} must be >= 0")
    if cfg.ucf_groups < 3:
        raise ValueError(f"synthetic ucf_groups={cfg.ucf_groups} must be >= 3 (each of the 3 splits tests a group)")
    if cfg.ucf_clips_per_group < 1:
        raise ValueError(f"synthetic ucf_clips_per_group={cfg.ucf_clips_per_group} must be >= 1")
    if cfg.hmdb_per_class < 2:
        raise ValueError(f"synthetic hmdb_per_class={cfg.hmdb_per_class} must be >= 2 (one train and one test video)")
    if cfg.num_backgrounds < 1:
        raise ValueError(f"synthetic num_backgrounds={cfg.num_backgrounds} must be >= 1")
    low, high = cfg.tempo_range
    if not 0 < low <= high:
        raise ValueError(f"synthetic tempo_range={cfg.tempo_range}: expected 0 < low <= high")
    if cfg.noise_sigma < 0:
        raise ValueError(f"synthetic noise_sigma={cfg.noise_sigma} must be >= 0")
    if cfg.background not in BACKGROUNDS:
        raise ValueError(f"synthetic background={cfg.background!r}; expected one of {BACKGROUNDS}")
    if cfg.ava_train_videos < 1 or cfg.ava_val_videos < 1 or cfg.ava_seconds < 2:
        raise ValueError(f"synthetic ava_train_videos={cfg.ava_train_videos}, ava_val_videos={cfg.ava_val_videos}, "
                         f"ava_seconds={cfg.ava_seconds}: expected >= 1, >= 1 and >= 2 (one keyframe needs 2 s)")
    if cfg.ava_frame_size % 2 or cfg.ava_frame_size < 16 or not 1 <= cfg.ava_actors[0] <= cfg.ava_actors[1]:
        raise ValueError(f"synthetic ava_frame_size={cfg.ava_frame_size}, ava_actors={cfg.ava_actors}: expected an "
                         "even size >= 16 and 1 <= low <= high actors")
    if cfg.epic_train_videos < 1 or cfg.epic_val_videos < 1 or cfg.epic_segments < 2:
        raise ValueError(f"synthetic epic_train_videos={cfg.epic_train_videos}, epic_val_videos={cfg.epic_val_videos}, "
                         f"epic_segments={cfg.epic_segments}: expected >= 1, >= 1 and >= 2")
    if not 0 < cfg.epic_segment_seconds[0] <= cfg.epic_segment_seconds[1] or not 0 <= cfg.epic_follow_prob <= 1:
        raise ValueError(f"synthetic epic_segment_seconds={cfg.epic_segment_seconds}, epic_follow_prob="
                         f"{cfg.epic_follow_prob}: expected 0 < low <= high and a probability in [0, 1]")


# ----------------------------------------------------------------------------------------------
# Appearance


@dataclass(frozen=True)
class Appearance:
    """What a sprite looks like: shape, RGB colour in [0, 1] and radius (fraction of the frame side).

    ``background`` is the index into the shared background pool (used for the main actor only).
    Notebook ``00_setup_and_data``.
    """

    shape: str
    color: tuple[float, float, float]
    radius: float
    background: int = 0


def _random_color(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*saturation), rng.uniform(*value))
    return np.array(rgb, dtype=np.float32)


def sample_appearance(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    *,
    radius_range: tuple[float, float] = SPRITE_RADIUS,
) -> Appearance:
    """Draw a shape, a saturated colour, a radius and a background index, all independent of the label.

    Notebook ``00_setup_and_data``.
    """
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    color = tuple(float(c) for c in _random_color(rng, (0.5, 1.0), (0.65, 1.0)))
    radius = float(rng.uniform(*radius_range))
    background = int(rng.integers(cfg.num_backgrounds))
    return Appearance(shape=shape, color=color, radius=radius, background=background)  # type: ignore[arg-type]


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """One background: pink noise plus an oriented grating, mapped between two muted colours."""
    noise = rng.standard_normal((size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    falloff = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / size) ** 1.6  # low frequencies dominate, like real clutter
    field = np.fft.ifft2(np.fft.fft2(noise) * falloff).real
    field = (field - field.mean()) / (field.std() + 1e-8)
    theta = rng.uniform(0, np.pi)
    cycles = rng.uniform(2.0, 6.0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    grating = np.sin(2 * np.pi * cycles * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 2 * np.pi))
    level = 1.0 / (1.0 + np.exp(-(0.8 * field + 0.6 * grating)))  # squash to (0, 1)
    dark = _random_color(rng, (0.2, 0.6), (0.15, 0.45))
    light = _random_color(rng, (0.2, 0.6), (0.5, 0.85))
    return (dark + level[..., None] * (light - dark)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def background_pool(frame_size: int, num_backgrounds: int, seed: int) -> np.ndarray:
    """The shared pool of textured backgrounds, float32 ``[num_backgrounds, S, S, 3]`` in [0, 1], read-only.

    One pool per (size, count, seed) for the whole corpus: SYNTHETIC_NOTES measured that a small
    shared pool beats one unique background per video. Notebook ``00_setup_and_data``.
    """
    rng = stream_rng(seed, "backgrounds", _APPEARANCE, frame_size, num_backgrounds)
    pool = np.stack([_texture(rng, frame_size) for _ in range(num_backgrounds)])
    pool.setflags(write=False)  # cached and shared: nobody may paint on it
    return pool


# ----------------------------------------------------------------------------------------------
# Motion


@dataclass(frozen=True)
class MotionParams:
    """The random parameters of one motion; positions are fractions of the frame, times are frames at tempo 1.

    Which fields a motion uses: slides ``x0, y0, vx, vy``; ``orbit`` centre ``x0, y0``, ``radius``,
    ``omega``, ``phase``; ``spin`` ``omega``; ``zoom_pulse`` and ``flicker`` ``period``, ``amplitude``,
    ``phase``; ``zigzag`` ``vx`` plus a vertical triangle wave (``amplitude``, ``period``, ``phase``);
    the distractor's ``wander`` two sinusoids (``amplitude``/``period``/``phase`` in x, ``*_y`` in y).
    ``margin`` keeps the whole sprite inside the frame. Notebook ``00_setup_and_data``.
    """

    motion: str
    x0: float
    y0: float
    margin: float
    angle0: float = 0.0
    vx: float = 0.0
    vy: float = 0.0
    omega: float = 0.0
    radius: float = 0.0
    period: float = 1.0
    amplitude: float = 0.0
    phase: float = 0.0
    period_y: float = 1.0
    amplitude_y: float = 0.0
    phase_y: float = 0.0

    @property
    def mirror_sign(self) -> int:
        """The sign a horizontal flip negates (+1 or -1); 0 for motions a flip leaves unchanged."""
        if self.motion in ("horizontal_slide", "diagonal_slide", "zigzag"):
            return 1 if self.vx > 0 else -1
        if self.motion in ("orbit", "spin"):
            return 1 if self.omega > 0 else -1
        return 0


@dataclass(frozen=True)
class Track:
    """An actor's state per frame: centre ``x, y`` (frame fractions), ``angle`` (rad), ``scale`` and ``brightness``.

    Notebook ``00_setup_and_data``.
    """

    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray
    scale: np.ndarray
    brightness: np.ndarray


MAX_SCALE = {"zoom_pulse": 1.4}  # the largest scale a motion reaches (others stay at 1)


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def sample_motion_params(rng: np.random.Generator, motion: str, sprite_radius: float) -> MotionParams:
    """Draw the parameters of ``motion`` for a sprite of radius ``sprite_radius`` (frame fractions).

    Directions and senses are drawn both ways with probability 1/2, so a horizontal flip maps the
    class onto itself (:data:`FLIP_BEHAVIOUR`). Base speeds and periods are chosen so that even at
    the highest tempo the slow pathway (stride 8) sees a period in at least three frames.
    Notebook ``00_setup_and_data``.
    """
    if motion not in MOTION_CLASSES and motion != "wander":
        raise ValueError(f"motion={motion!r} is not known; expected one of {MOTION_CLASSES} (or 'wander')")
    margin = sprite_radius * MAX_SCALE.get(motion, 1.0) + 0.01
    span = (margin, 1.0 - margin)
    angle0 = float(rng.uniform(-np.pi, np.pi))
    x0, y0 = float(rng.uniform(*span)), float(rng.uniform(*span))
    common = dict(motion=motion, x0=x0, y0=y0, margin=margin, angle0=angle0)
    speed = float(rng.uniform(0.8, 1.25))  # per-video jitter of the base speed, on top of the tempo
    if motion == "horizontal_slide":
        return MotionParams(**common, vx=_sign(rng) * 0.018 * speed)
    if motion == "vertical_slide":
        return MotionParams(**common, vy=_sign(rng) * 0.018 * speed)
    if motion == "diagonal_slide":
        step = 0.018 * speed / math.sqrt(2)
        return MotionParams(**common, vx=_sign(rng) * step, vy=_sign(rng) * step)
    if motion == "orbit":
        orbit = float(rng.uniform(0.14, max(0.14, min(0.24, 0.5 - margin))))
        cx = float(rng.uniform(margin + orbit, max(margin + orbit, 1 - margin - orbit)))
        cy = float(rng.uniform(margin + orbit, max(margin + orbit, 1 - margin - orbit)))
        return MotionParams(**{**common, "x0": cx, "y0": cy}, radius=orbit, omega=_sign(rng) * 2 * np.pi / 56 * speed,
                            phase=float(rng.uniform(0, 2 * np.pi)))
    if motion == "spin":
        return MotionParams(**common, omega=_sign(rng) * 2 * np.pi / 64 * speed)
    if motion == "zoom_pulse":
        return MotionParams(**common, period=48 / speed, amplitude=float(rng.uniform(0.3, 0.4)),
                            phase=float(rng.uniform(0, 2 * np.pi)))
    if motion == "flicker":
        return MotionParams(**common, period=40 / speed, amplitude=float(rng.uniform(0.6, 0.8)),
                            phase=float(rng.uniform(0, 2 * np.pi)))
    if motion == "zigzag":
        amplitude = 0.1
        y0 = float(rng.uniform(margin + amplitude, max(margin + amplitude, 1 - margin - amplitude)))
        return MotionParams(**{**common, "y0": y0}, vx=_sign(rng) * 0.012 * speed, period=48 / speed,
                            amplitude=amplitude, phase=float(rng.uniform(0, 1)))
    # "wander": the distractor's smooth, unrelated drift (two sinusoids of random amplitude and period)
    return MotionParams(
        **common,
        amplitude=float(rng.uniform(0.1, 0.3)) * _sign(rng), period=float(rng.uniform(30, 80)),
        phase=float(rng.uniform(0, 2 * np.pi)),
        amplitude_y=float(rng.uniform(0.1, 0.3)), period_y=float(rng.uniform(30, 80)),
        phase_y=float(rng.uniform(0, 2 * np.pi)),
    )


def mirror_params(params: MotionParams) -> MotionParams:
    """The parameters of the horizontally mirrored motion (x -> 1 - x); same class, sign reversed.

    Notebook ``00_setup_and_data``: ``motion_track(mirror_params(p))`` is the flipped ``motion_track(p)``.
    """
    mirrored = dataclasses.replace(params, x0=1.0 - params.x0, angle0=-params.angle0, vx=-params.vx, omega=-params.omega)
    if params.motion == "orbit":  # cos(pi - a) = -cos(a): the orbit runs the other way round
        mirrored = dataclasses.replace(mirrored, phase=math.pi - params.phase)
    if params.motion == "wander":
        mirrored = dataclasses.replace(mirrored, amplitude=-params.amplitude)
    return mirrored


def fold(p: np.ndarray, low: float, high: float) -> np.ndarray:
    """Reflect positions ``p`` into ``[low, high]`` as a ball bouncing off walls (a triangle wave).

    Notebook ``00_setup_and_data``.
    """
    length = high - low
    if length <= 0:
        return np.full_like(p, (low + high) / 2)
    q = np.mod(p - low, 2 * length)
    return low + np.where(q <= length, q, 2 * length - q)


def motion_track(params: MotionParams, num_frames: int, tempo: float = 1.0) -> Track:
    """Evaluate a motion at frames ``0..num_frames-1``; ``tempo`` scales every speed and period.

    Notebook ``00_setup_and_data``.
    """
    t = np.arange(num_frames, dtype=np.float64) * tempo  # time in tempo-1 frames
    low, high = params.margin, 1.0 - params.margin
    ones = np.ones(num_frames)
    x, y = params.x0 * ones, params.y0 * ones
    angle, scale, brightness = params.angle0 + params.omega * t, ones.copy(), ones.copy()
    m = params.motion
    if m in ("horizontal_slide", "vertical_slide", "diagonal_slide"):
        x, y = fold(params.x0 + params.vx * t, low, high), fold(params.y0 + params.vy * t, low, high)
    elif m == "orbit":
        x = params.x0 + params.radius * np.cos(params.phase + params.omega * t)
        y = params.y0 + params.radius * np.sin(params.phase + params.omega * t)
        angle = params.angle0 * ones  # the sprite circles without turning
    elif m == "zoom_pulse":
        scale = 1.0 + params.amplitude * np.sin(2 * np.pi * t / params.period + params.phase)
    elif m == "flicker":
        brightness = 1.0 - params.amplitude * (0.5 + 0.5 * np.sin(2 * np.pi * t / params.period + params.phase))
    elif m == "zigzag":
        x = fold(params.x0 + params.vx * t, low, high)
        wave = 2 * np.abs(np.mod(t / params.period + params.phase, 1.0) - 0.5) * 2 - 1  # triangle wave in [-1, 1]
        y = params.y0 + params.amplitude * wave
    elif m == "wander":
        x = fold(params.x0 + params.amplitude * np.sin(2 * np.pi * t / params.period + params.phase), low, high)
        y = fold(params.y0 + params.amplitude_y * np.sin(2 * np.pi * t / params.period_y + params.phase_y), low, high)
    return Track(x=x, y=y, angle=angle, scale=scale, brightness=brightness)


# ----------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class Actor:
    """One sprite in a scene: its appearance and its track (notebook ``00_setup_and_data``)."""

    appearance: Appearance
    track: Track


def _shape_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance to the shape's edge in sprite radii (negative inside); even in u."""
    au, av = np.abs(u), np.abs(v)
    if shape == "disc":
        return np.hypot(u, v) - 0.9
    if shape == "square":
        return np.maximum(au, av) - 0.66
    if shape == "diamond":
        return (au + av - 0.92) * (1 / math.sqrt(2))
    if shape == "cross":
        return np.minimum(np.maximum(au - 0.9, av - 0.3), np.maximum(au - 0.3, av - 0.9))
    if shape == "ring":
        return np.abs(np.hypot(u, v) - 0.64) - 0.26
    if shape == "triangle":  # apex up (negative v), symmetric in u
        c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
        return np.maximum(v, c * au - s * v) - 0.45
    if shape == "hexagon":
        c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
        return np.maximum(au, s * au + c * av) - 0.78
    if shape == "star":  # five points, one pointing up; angle measured from the vertical axis keeps it even in u
        r = np.hypot(u, v)
        rim = 0.58 + 0.32 * np.cos(5 * np.arctan2(au, -v))
        return (r - rim) * 0.7
    raise ValueError(f"shape={shape!r} is not known; expected one of {SHAPES}")


def render_scene(
    background: np.ndarray,
    actors: Sequence[Actor],
    *,
    noise_sigma: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Composite ``actors`` (in order, later ones on top) over a static ``background`` and add pixel noise.

    ``background`` is float ``[H, W, 3]`` in [0, 1]; every actor's track has the same length T.
    Returns ``(frames, boxes)``: uint8 ``[T, H, W, 3]`` and float32 ``[len(actors), T, 4]`` holding
    each actor's own box ``(x1, y1, x2, y2)`` in pixels (x2, y2 exclusive) around the pixels its
    shape covers at least half, occlusion ignored (all zeros if it covers none). Vectorised: each actor is
    drawn in a small moving window around it, all frames at once. Notebook ``00_setup_and_data``.
    """
    background = np.asarray(background, dtype=np.float32)
    if background.ndim != 3 or background.shape[-1] != 3:
        raise ValueError(f"background must be [H, W, 3], got shape {background.shape}")
    if not actors:
        raise ValueError("render_scene needs at least one actor")
    lengths = {len(a.track.x) for a in actors}
    if len(lengths) != 1:
        raise ValueError(f"all actors' tracks must have the same length, got {sorted(lengths)}")
    num_frames = lengths.pop()
    height, width = background.shape[:2]
    side = min(height, width)
    frames = np.broadcast_to(background, (num_frames, height, width, 3)).copy()
    boxes = np.zeros((len(actors), num_frames, 4), dtype=np.float32)
    frame_idx = np.arange(num_frames)[:, None, None]
    for k, actor in enumerate(actors):
        app, track = actor.appearance, actor.track
        radius_px = (app.radius * side * track.scale).astype(np.float32)  # [T]
        win = min(int(math.ceil(2 * float(radius_px.max()))) + 4, height, width)
        cx, cy = (track.x * width).astype(np.float32), (track.y * height).astype(np.float32)
        left = np.clip(np.round(cx - win / 2), 0, width - win).astype(np.int64)
        top = np.clip(np.round(cy - win / 2), 0, height - win).astype(np.int64)
        cols = left[:, None] + np.arange(win)  # [T, win]
        rows = top[:, None] + np.arange(win)
        dx = (cols + 0.5 - cx[:, None]).astype(np.float32)[:, None, :]
        dy = (rows + 0.5 - cy[:, None]).astype(np.float32)[:, :, None]
        cos = np.cos(track.angle).astype(np.float32)[:, None, None]
        sin = np.sin(track.angle).astype(np.float32)[:, None, None]
        inv = (1.0 / radius_px)[:, None, None]
        u = (cos * dx + sin * dy) * inv  # the sprite's own frame, in radii
        v = (cos * dy - sin * dx) * inv
        dist = _shape_distance(app.shape, u, v)
        alpha = np.clip(0.5 - dist * radius_px[:, None, None], 0.0, 1.0)  # about one pixel of antialiasing
        tone = np.where(v < 0, np.float32(1.0), np.float32(SPRITE_TONE)) * track.brightness.astype(np.float32)[:, None, None]
        color = np.asarray(app.color, dtype=np.float32) * tone[..., None]
        patch_rows, patch_cols = rows[:, :, None], cols[:, None, :]
        patch = frames[frame_idx, patch_rows, patch_cols]
        patch += alpha[..., None] * (color - patch)
        frames[frame_idx, patch_rows, patch_cols] = patch
        inside = alpha >= 0.5
        row_hit, col_hit = inside.any(axis=2), inside.any(axis=1)  # [T, win]
        seen = row_hit.any(axis=1)
        first_row, last_row = row_hit.argmax(axis=1), win - 1 - row_hit[:, ::-1].argmax(axis=1)
        first_col, last_col = col_hit.argmax(axis=1), win - 1 - col_hit[:, ::-1].argmax(axis=1)
        box = np.stack([left + first_col, top + first_row, left + last_col + 1, top + last_row + 1], axis=1)
        boxes[k] = np.where(seen[:, None], box, 0)
    if noise_sigma > 0:
        rng = np.random.default_rng() if rng is None else rng
        frames += rng.standard_normal(frames.shape, dtype=np.float32) * np.float32(noise_sigma)
    return np.clip(frames * 255.0 + 0.5, 0, 255).astype(np.uint8), boxes


@dataclass(frozen=True)
class SyntheticVideo:
    """A rendered labeled video and everything drawn for it (notebook ``00_setup_and_data``).

    ``boxes`` is ``[num_actors, T, 4]``: the main sprite first, then the distractor (when the config has one).
    """

    frames: np.ndarray
    boxes: np.ndarray
    motion: str
    tempo: float
    appearance: Appearance
    params: MotionParams


def sample_tempo(rng: np.random.Generator, tempo_range: tuple[float, float]) -> float:
    """A speed factor, log-uniform in ``tempo_range`` (so 0.5x and 2x are equally likely). Notebook ``00_setup_and_data``."""
    low, high = tempo_range
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def make_video(
    rng: np.random.Generator,
    motion: str,
    num_frames: int,
    cfg: SyntheticConfig,
    *,
    appearance: Appearance | None = None,
) -> SyntheticVideo:
    """Render one video of class ``motion``: main sprite, distractor, shared background, noise.

    ``appearance`` fixes the main sprite's look (UCF-style groups share one); otherwise it is drawn.
    Notebook ``00_setup_and_data``.
    """
    if motion not in MOTION_CLASSES:
        raise ValueError(f"motion={motion!r} is not a class; expected one of {MOTION_CLASSES}")
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames={num_frames!r} must be a whole number >= 1")
    tempo = sample_tempo(rng, cfg.tempo_range)
    look = sample_appearance(rng, cfg)
    appearance = look if appearance is None else appearance
    params = sample_motion_params(rng, motion, appearance.radius)
    actors = [Actor(appearance, motion_track(params, num_frames, tempo))]
    if cfg.distractor:
        distractor_look = sample_appearance(rng, cfg, radius_range=DISTRACTOR_RADIUS)
        distractor_params = sample_motion_params(rng, "wander", distractor_look.radius)
        actors.append(Actor(distractor_look, motion_track(distractor_params, num_frames, tempo)))
    if cfg.background == "plain":
        background = np.full((cfg.frame_size, cfg.frame_size, 3), PLAIN_GREY, np.float32)
    else:
        background = background_pool(cfg.frame_size, cfg.num_backgrounds, cfg.seed)[appearance.background % cfg.num_backgrounds]
    frames, boxes = render_scene(background, actors, noise_sigma=cfg.noise_sigma, rng=rng)
    return SyntheticVideo(frames=frames, boxes=boxes, motion=motion, tempo=tempo, appearance=appearance, params=params)


def render_video(
    rng: np.random.Generator, motion: str, num_frames: int, cfg: SyntheticConfig
) -> tuple[np.ndarray, np.ndarray]:
    """One labeled clip: uint8 frames ``[T, H, W, 3]`` and the main sprite's boxes ``[T, 4]`` (x1, y1, x2, y2 pixels).

    Notebook ``00_setup_and_data`` shows one per class.
    """
    video = make_video(rng, motion, num_frames, cfg)
    return video.frames, video.boxes[0]


# ----------------------------------------------------------------------------------------------
# Writing: one job per video, run alone or in a process pool


@dataclass(frozen=True)
class _VideoJob:
    path: str
    motion: str
    num_frames: int
    content_key: tuple[str, int, int]  # (dataset, a, b) of the content stream
    appearance_key: tuple[str, int, int] | None  # set when clips share a look (UCF groups)


def _draw_length(cfg: SyntheticConfig, dataset: str, index: int) -> int:
    return int(stream_rng(cfg.seed, dataset, _LENGTH, index).integers(cfg.min_frames, cfg.max_frames + 1))


def _write_one(job: _VideoJob, cfg: SyntheticConfig) -> int:
    appearance = None
    if job.appearance_key is not None:
        appearance = sample_appearance(stream_rng(cfg.seed, job.appearance_key[0], _APPEARANCE, *job.appearance_key[1:]), cfg)
    rng = stream_rng(cfg.seed, job.content_key[0], _CONTENT, *job.content_key[1:])
    video = make_video(rng, job.motion, job.num_frames, cfg, appearance=appearance)
    write_video(job.path, video.frames, fps=cfg.fps)
    return job.num_frames


def _run_jobs(jobs: Sequence[_VideoJob], cfg: SyntheticConfig, *, workers: int, progress: bool, desc: str) -> int:
    """Render and write every job; returns the total number of frames written."""
    if workers < 1 or int(workers) != workers:
        raise ValueError(f"workers={workers!r} must be a whole number >= 1")
    work: Callable[[_VideoJob], int] = functools.partial(_write_one, cfg=cfg)
    bar = progress_bar(total=len(jobs), desc=desc, unit="video", disable=not progress)
    total = 0
    try:
        if workers == 1 or len(jobs) < 2:
            for job in jobs:
                total += work(job)
                bar.update()
        else:
            # fork: workers inherit the imported modules; no decoder is open at this point.
            with multiprocessing.get_context("fork").Pool(int(workers)) as pool:
                for frames in pool.imap_unordered(work, jobs, chunksize=4):
                    total += frames
                    bar.update()
    finally:
        bar.close()
    return total


def kinetics_video_name(youtube_id: str, time_start: int, time_end: int, ext: str = ".mp4") -> str:
    """``<youtube_id>_<time_start:06d>_<time_end:06d><ext>``, the official Kinetics clip name. Notebook ``00_setup_and_data``."""
    return f"{youtube_id}_{int(time_start):06d}_{int(time_end):06d}{ext}"


def write_kinetics_style(root: str | os.PathLike, cfg: SyntheticConfig, *, workers: int = 1, progress: bool = True) -> dict:
    """Write the unlabeled pool: ``root/kinetics400/train.csv`` and ``train/<label>/<id>_<start>_<end>.mp4`` (H.264).

    Labels (the motion class, cycled through :data:`MOTION_CLASSES`) are recorded as in Kinetics but
    pre-training ignores them. Returns ``{"videos": n, "frames": total}``. Notebook ``00_setup_and_data``.
    """
    check_synthetic_config(cfg)
    base = Path(root) / "kinetics400"
    rows, jobs = [], []
    for i in range(cfg.num_pretrain):
        motion = MOTION_CLASSES[i % len(MOTION_CLASSES)]
        num_frames = _draw_length(cfg, "kinetics400", i)
        youtube_id, time_end = f"syn{i:08d}", math.ceil(num_frames / cfg.fps)
        path = base / "train" / motion / kinetics_video_name(youtube_id, 0, time_end)
        rows.append((motion, youtube_id, 0, time_end, "train"))
        jobs.append(_VideoJob(str(path), motion, num_frames, ("kinetics400", i, 0), None))
    frames = _run_jobs(jobs, cfg, workers=workers, progress=progress, desc="kinetics400")
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "train.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        writer.writerows(rows)
    return {"videos": len(jobs), "frames": frames}


def ucf_test_groups(num_groups: int, split: int) -> range:
    """Groups (1-based) that UCF-style split ``split`` (1..3) tests on; the rest train.

    ``chunk = max(1, round(G * 7 / 25))`` and split k tests groups ``(k-1)*chunk+1 .. k*chunk``,
    which for the real 25 groups gives 1-7, 8-14, 15-21. Notebook ``00_setup_and_data``.
    """
    if split not in (1, 2, 3):
        raise ValueError(f"split={split!r} must be 1, 2 or 3")
    chunk = max(1, round(num_groups * 7 / 25))
    return range((split - 1) * chunk + 1, min(split * chunk, num_groups) + 1)


def ucf_video_name(class_name: str, group: int, clip: int) -> str:
    """``v_<ClassName>_g<GG>_c<CC>.avi`` (1-based group and clip). Notebook ``00_setup_and_data``."""
    return f"v_{class_name}_g{group:02d}_c{clip:02d}.avi"


def write_ucf101_style(root: str | os.PathLike, cfg: SyntheticConfig, *, workers: int = 1, progress: bool = True) -> dict:
    """Write ``root/ucf101/UCF-101/<Class>/v_<Class>_gGG_cCC.avi`` (MPEG-4) and ``ucfTrainTestlist/``.

    As in the real set, the clips of one group share a look (shape, colour, size, background) and
    the splits keep groups apart, so a group never appears in both train and test. The list files
    use CRLF line ends like the real ones. Returns ``{"videos": n, "frames": total}``.
    Notebook ``00_setup_and_data``.
    """
    check_synthetic_config(cfg)
    base = Path(root) / "ucf101"
    classes = [camel_case(m) for m in MOTION_CLASSES]  # already alphabetical
    jobs, entries = [], []  # entries: (relative path, class id 1-based, group)
    for c, (motion, name) in enumerate(zip(MOTION_CLASSES, classes)):
        for g in range(1, cfg.ucf_groups + 1):
            for clip in range(1, cfg.ucf_clips_per_group + 1):
                index = (c * cfg.ucf_groups + g - 1) * cfg.ucf_clips_per_group + clip - 1
                rel = f"{name}/{ucf_video_name(name, g, clip)}"
                jobs.append(_VideoJob(str(base / "UCF-101" / rel), motion, _draw_length(cfg, "ucf101", index),
                                      ("ucf101", index, 0), ("ucf101", c, g)))
                entries.append((rel, c + 1, g))
    frames = _run_jobs(jobs, cfg, workers=workers, progress=progress, desc="ucf101")
    lists = base / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    crlf = "\r\n"
    (lists / "classInd.txt").write_bytes("".join(f"{i} {n}{crlf}" for i, n in enumerate(classes, 1)).encode())
    for split in (1, 2, 3):
        test = set(ucf_test_groups(cfg.ucf_groups, split))
        train_lines = [f"{rel} {cid}{crlf}" for rel, cid, g in entries if g not in test]
        test_lines = [f"{rel}{crlf}" for rel, _, g in entries if g in test]
        (lists / f"trainlist0{split}.txt").write_bytes("".join(train_lines).encode())
        (lists / f"testlist0{split}.txt").write_bytes("".join(test_lines).encode())
    return {"videos": len(jobs), "frames": frames}


HMDB_TRAIN_FRACTION = 0.7


def hmdb_video_name(class_name: str, index: int) -> str:
    """``syn_<class_name>_<index:03d>`` (no extension). Notebook ``00_setup_and_data``."""
    return f"syn_{class_name}_{index:03d}"


def write_hmdb51_style(root: str | os.PathLike, cfg: SyntheticConfig, *, workers: int = 1, progress: bool = True) -> dict:
    """Write ``root/hmdb51/videos/<class>/<name>.avi`` (MPEG-4) and ``testTrainMulti_7030_splits/``.

    Each ``<class>_test_split{1,2,3}.txt`` tags every video ``1`` (train, 70%) or ``2`` (test, 30%),
    a fresh random partition per class and split; lines end in a blank as in the real files.
    Returns ``{"videos": n, "frames": total}``. Notebook ``00_setup_and_data``.
    """
    check_synthetic_config(cfg)
    base = Path(root) / "hmdb51"
    jobs = []
    names: dict[str, list[str]] = {}
    for c, motion in enumerate(MOTION_CLASSES):
        names[motion] = []
        for k in range(cfg.hmdb_per_class):
            index = c * cfg.hmdb_per_class + k
            name = hmdb_video_name(motion, k)
            names[motion].append(name)
            jobs.append(_VideoJob(str(base / "videos" / motion / f"{name}.avi"), motion,
                                  _draw_length(cfg, "hmdb51", index), ("hmdb51", index, 0), None))
    frames = _run_jobs(jobs, cfg, workers=workers, progress=progress, desc="hmdb51")
    splits = base / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True, exist_ok=True)
    n_train = round(cfg.hmdb_per_class * HMDB_TRAIN_FRACTION)
    for c, motion in enumerate(MOTION_CLASSES):
        for split in (1, 2, 3):
            order = stream_rng(cfg.seed, "hmdb51", _SPLIT, c, split).permutation(cfg.hmdb_per_class)
            tags = np.full(cfg.hmdb_per_class, 2)
            tags[order[:n_train]] = 1
            lines = "".join(f"{name}.avi {tag} \n" for name, tag in zip(names[motion], tags))
            (splits / f"{motion}_test_split{split}.txt").write_text(lines)
    return {"videos": len(jobs), "frames": frames}


# ----------------------------------------------------------------------------------------------
# The whole corpus


TRANSFER_PREFIXES = ("ava_", "epic_", "sthv1_")  # fields of the sets of vthcl_lib.synthetic_transfer


def _config_record(cfg: SyntheticConfig) -> dict[str, Any]:
    """The stamp's config: every field except the transfer sets' own, which have their own stamps."""
    record = {k: v for k, v in dataclasses.asdict(cfg).items() if not k.startswith(TRANSFER_PREFIXES)}
    return json.loads(json.dumps(record))  # tuples become lists, as in the stamp


def read_stamp(root: str | os.PathLike) -> dict | None:
    """The ``corpus.json`` stamp under ``root``, or None when missing or unreadable. Notebook ``00_setup_and_data``."""
    path = Path(root) / STAMP_NAME
    try:
        stamp = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def stamp_matches(root: str | os.PathLike, cfg: SyntheticConfig) -> bool:
    """True when ``root`` holds a finished corpus made by this generator version from ``cfg``.

    Notebook ``00_setup_and_data``.
    """
    root = Path(root)
    stamp = read_stamp(root)
    return (
        stamp is not None
        and stamp.get("version") == GENERATOR_VERSION
        and stamp.get("config") == _config_record(cfg)
        and not (root / _IN_PROGRESS_NAME).exists()
        and all((root / d).is_dir() for d in LAYOUT_DIRS)
    )


def generate_corpus(root: str | os.PathLike, cfg: SyntheticConfig, *, workers: int = 1, progress: bool = True) -> dict:
    """Write the Kinetics-, UCF-101- and HMDB-51-style sets under ``root`` and stamp ``root/corpus.json``.

    An earlier synthetic corpus in ``root`` (one with a stamp or an unfinished one) is removed
    first, so no stale videos survive a smaller config; other folders are left alone. The stamp is
    written last, so an interrupted run is redone. Returns the stamp: ``config``, ``counts``,
    ``seconds``, ``version``, ``classes``. Notebook ``00_setup_and_data``.
    """
    check_synthetic_config(cfg)
    root = Path(root)
    start = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    if (root / STAMP_NAME).exists() or (root / _IN_PROGRESS_NAME).exists():
        for name in LAYOUT_DIRS:
            shutil.rmtree(root / name, ignore_errors=True)
    (root / STAMP_NAME).unlink(missing_ok=True)
    (root / _IN_PROGRESS_NAME).write_text("generation started; removed when corpus.json is written\n")
    counts = {}
    for name, writer in (("kinetics400", write_kinetics_style), ("ucf101", write_ucf101_style),
                         ("hmdb51", write_hmdb51_style)):
        counts[name] = writer(root, cfg, workers=workers, progress=progress)
    stamp = {
        "generator": "vthcl_lib.synthetic",
        "version": GENERATOR_VERSION,
        "config": _config_record(cfg),
        "classes": list(MOTION_CLASSES),
        "counts": counts,
        "seconds": round(time.perf_counter() - start, 2),
        "workers": int(workers),
    }
    tmp = root / f".{STAMP_NAME}.tmp"
    tmp.write_text(json.dumps(stamp, indent=2) + "\n")
    os.replace(tmp, root / STAMP_NAME)
    (root / _IN_PROGRESS_NAME).unlink(missing_ok=True)
    return stamp


def ensure_synthetic(
    root: str | os.PathLike,
    cfg: SyntheticConfig,
    *,
    workers: int = 1,
    progress: bool = True,
    force: bool = False,
) -> dict:
    """Generate the corpus unless ``root/corpus.json`` already records this config (cheap when it does).

    Returns the stamp with an extra key ``"generated"`` (True when this call wrote the videos).
    Notebook ``00_setup_and_data`` calls it before anything reads data.
    """
    check_synthetic_config(cfg)
    if not force and stamp_matches(root, cfg):
        return {**read_stamp(root), "generated": False}  # type: ignore[dict-item]
    return {**generate_corpus(root, cfg, workers=workers, progress=progress), "generated": True}
