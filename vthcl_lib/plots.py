"""Pure plotting functions: each returns a matplotlib Figure and never shows it.

Figures are built as ``matplotlib.figure.Figure`` objects, not through pyplot, so nothing is
registered globally: a notebook cell that ends in one displays it exactly once, a widget redraws
it, and tests call the functions headless. Styling comes from seaborn.
"""
from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure
import numpy as np
import seaborn as sns
import torch

from vthcl_lib.tempo import sample_tempo_indices, uniform_clip_starts

SLOW_COLOR, FAST_COLOR = sns.color_palette("deep")[2], sns.color_palette("deep")[0]  # green slow, blue fast (paper's Fig. 1)


def plot_tempo_indices(
    alpha: int = 2, tau: int = 8, window: int = 64, start: int = 0, num_frames: int = 128, short_video: str = "clamp"
) -> Figure:
    """The raw frames of a video, the window, and which frames the slow and the fast clip take.

    Notebook ``01_tempo_sampling`` (the explorer). Invalid settings draw the error message instead
    of raising, so a slider never breaks the widget.
    """
    fig = Figure(figsize=(10, 2.6))
    ax = fig.subplots()
    try:
        start = min(start, max(num_frames - window, 0))
        slow, fast = sample_tempo_indices(
            num_frames, window=window, tau=tau, alpha=alpha, start=start, short_video=short_video
        )
    except ValueError as err:
        ax.text(0.5, 0.5, str(err), ha="center", va="center", wrap=True, color="firebrick")
        ax.set_axis_off()
        return fig
    ax.axvspan(start - 0.5, start + window - 0.5, color="0.92", label=f"window ({window} frames)")
    ax.scatter(np.arange(num_frames), np.zeros(num_frames), s=6, color="0.6", label="video frames")
    ax.scatter(fast, np.full(len(fast), 1.0), s=40, color=FAST_COLOR, label=f"fast: stride {tau // alpha}, {len(fast)} frames")
    ax.scatter(slow, np.full(len(slow), 2.0), s=60, marker="s", color=SLOW_COLOR, label=f"slow: stride {tau}, {len(slow)} frames")
    ax.set_yticks([0, 1, 2], ["video", "fast", "slow"])
    ax.set_ylim(-0.6, 2.6)
    ax.set_xlim(-1, num_frames)
    ax.set_xlabel("frame index")
    ax.set_title(f"alpha={alpha}, tau={tau}: slow = fast[::{alpha}]")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=4, frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def _as_images(frames) -> np.ndarray:
    """uint8 [T,H,W,3] or normalised float [C,T,H,W] -> displayable [T,H,W,3] in [0, 1]."""
    x = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    x = np.moveaxis(x, 0, -1)  # [C,T,H,W] -> [T,H,W,C]
    low, high = x.min(), x.max()
    return (x - low) / max(high - low, 1e-8)


def plot_frames(frames, *, title: str = "", indices: Sequence[int] | None = None, max_frames: int = 16) -> Figure:
    """One row of frames with their frame numbers (notebook ``00_setup_and_data``)."""
    images = _as_images(frames)[:max_frames]
    fig = Figure(figsize=(1.3 * len(images), 1.6))
    axes = fig.subplots(1, len(images), squeeze=False)
    for j, (ax, img) in enumerate(zip(axes[0], images)):
        ax.imshow(img)
        ax.set_axis_off()
        if indices is not None:
            ax.set_title(str(int(indices[j])), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_tempo_pair(slow, fast, *, slow_idx=None, fast_idx=None, title: str = "") -> Figure:
    """The fast clip on top, the slow clip below, each slow frame under the fast frame it equals.

    Notebook ``01_tempo_sampling``.
    """
    slow_img, fast_img = _as_images(slow), _as_images(fast)
    alpha = max(len(fast_img) // max(len(slow_img), 1), 1)
    fig = Figure(figsize=(1.1 * len(fast_img), 2.6))
    axes = fig.subplots(2, len(fast_img), squeeze=False)
    for j, ax in enumerate(axes[0]):
        ax.imshow(fast_img[j])
        ax.set_title(f"{fast_idx[j]}" if fast_idx is not None else "", fontsize=7)
    for j, ax in enumerate(axes[1]):
        if j % alpha == 0 and j // alpha < len(slow_img):
            ax.imshow(slow_img[j // alpha])
            ax.set_title(f"{slow_idx[j // alpha]}" if slow_idx is not None else "", fontsize=7)
    for ax in axes.flat:
        ax.set_axis_off()
    axes[0, 0].text(-0.1, 0.5, "fast", transform=axes[0, 0].transAxes, ha="right", va="center", color=FAST_COLOR)
    axes[1, 0].text(-0.1, 0.5, "slow", transform=axes[1, 0].transAxes, ha="right", va="center", color=SLOW_COLOR)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_clip_starts(num_frames: int = 250, window: int = 64, num_clips: int = 10) -> Figure:
    """The windows of the multi-clip test protocol over one video (notebook ``01_tempo_sampling``)."""
    starts = uniform_clip_starts(num_frames, window=window, num_clips=num_clips)
    fig = Figure(figsize=(9, 0.35 * num_clips + 1))
    ax = fig.subplots()
    palette = sns.color_palette("crest", num_clips)
    for k, start in enumerate(starts):
        ax.plot([start, min(start + window, num_frames) - 1], [k, k], lw=6, color=palette[k], solid_capstyle="butt")
    ax.set_xlim(0, num_frames)
    ax.set_yticks(range(num_clips), [f"clip {k + 1}" for k in range(num_clips)], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("frame index")
    ax.set_title(f"{num_clips} uniformly spaced {window}-frame windows over a {num_frames}-frame video")
    fig.tight_layout()
    return fig


def plot_class_examples(examples: dict[str, np.ndarray], *, frames_per_row: int = 8) -> Figure:
    """One row per class: evenly spaced frames of one example video (notebook ``00_setup_and_data``)."""
    fig = Figure(figsize=(1.2 * frames_per_row, 1.25 * len(examples)))
    axes = fig.subplots(len(examples), frames_per_row, squeeze=False)
    for row, (name, frames) in enumerate(examples.items()):
        images = _as_images(frames)
        picks = np.linspace(0, len(images) - 1, frames_per_row).round().astype(int)
        for col, k in enumerate(picks):
            axes[row, col].imshow(images[k])
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    return fig


def plot_bar(values: dict[str, float], *, xlabel: str, title: str = "") -> Figure:
    """A horizontal bar chart of named numbers (timings, counts)."""
    fig = Figure(figsize=(6, 0.45 * len(values) + 1))
    ax = fig.subplots()
    sns.barplot(x=list(values.values()), y=list(values.keys()), ax=ax, orient="h", color=FAST_COLOR)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig
