"""Pure plotting functions: each returns a matplotlib Figure and never shows it.

Figures are built as ``matplotlib.figure.Figure`` objects, not through pyplot, so nothing is
registered globally: a notebook cell that ends in one displays it exactly once, a widget redraws
it, and tests call the functions headless. Styling comes from seaborn.

Importing this module is cheap: matplotlib and seaborn are imported by the first plot (each
notebook's import cell imports ``plots`` and must stay fast, issue 15.6), which also applies the
notebooks' theme once (:func:`seaborn`). Notebook ``00_setup_and_data`` onwards.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from vthcl_lib.tempo import sample_tempo_indices, uniform_clip_starts

if TYPE_CHECKING:  # annotations only: matplotlib is imported at the first plot
    from matplotlib.figure import Figure

# seaborn's "deep" palette, entries 2 and 0: green slow, blue fast (the paper's Fig. 1)
SLOW_COLOR = (0.3333333333333333, 0.6588235294117647, 0.40784313725490196)
FAST_COLOR = (0.2980392156862745, 0.4470588235294118, 0.6901960784313725)
THEME = {"context": "notebook", "style": "whitegrid"}  # what each notebook's import cell used to set

_styled = False


def seaborn():
    """seaborn, imported at first use, with the notebooks' theme (``THEME``) applied once.

    Every plotting function here calls it before drawing; a notebook cell that draws with seaborn
    itself starts with ``sns = plots.seaborn()`` (notebooks 06, 08, 11). In a Jupyter kernel it
    first turns on the inline backend (what ``%matplotlib inline`` did in the import cells), so
    figures show as images.
    """
    global _styled
    if not _styled:
        _inline_backend()  # first: importing seaborn imports pyplot
    import seaborn as sns

    if not _styled:
        sns.set_theme(**THEME)
        _styled = True
    return sns


def _inline_backend() -> None:
    shell_module = sys.modules.get("IPython")  # only a running IPython has it: never import it here
    shell = shell_module.get_ipython() if shell_module is not None else None
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return
    pyplot = sys.modules.get("matplotlib.pyplot")
    backend = pyplot.get_backend().lower() if pyplot is not None else "agg"
    if "inline" in backend or backend == "agg":  # nothing chosen yet (or MPLBACKEND=Agg)
        shell.run_line_magic("matplotlib", "inline")
    # else the reader chose a backend (%matplotlib widget, qt): keep it


def _figure(*args, **kwargs) -> "Figure":
    """A new ``Figure`` (pyplot-free) drawn in the notebooks' theme."""
    seaborn()
    from matplotlib.figure import Figure

    return Figure(*args, **kwargs)


def plot_tempo_indices(
    alpha: int = 2, tau: int = 8, window: int = 64, start: int = 0, num_frames: int = 128, short_video: str = "clamp"
) -> Figure:
    """The raw frames of a video, the window, and which frames the slow and the fast clip take.

    Notebook ``01_tempo_sampling`` (the explorer). Invalid settings draw the error message instead
    of raising, so a slider never breaks the widget.
    """
    from matplotlib import ticker

    fig = _figure(figsize=(10, 2.6))
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
    # The axis fits the window (plus a margin) rather than the whole video: a 16-frame window on
    # a 192-frame axis is a smudge.
    margin = max(2, window // 8)
    lo, hi = min(start, int(np.min(fast))), max(start + window, int(np.max(fast)) + 1)
    ax.set_xlim(max(lo - margin, -1), min(hi + margin, max(num_frames, hi)))
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # frames are whole numbers
    ax.set_xlabel(f"frame index (video: {num_frames} frames)")
    ax.set_title(f"alpha={alpha}, tau={tau}: slow = fast[::{alpha}]")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.42), ncol=4, frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def _rectangle(*args, **kwargs):
    from matplotlib.patches import Rectangle

    return Rectangle(*args, **kwargs)


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
    fig = _figure(figsize=(1.3 * len(images), 1.6))
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
    fig = _figure(figsize=(1.1 * len(fast_img), 2.6))
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
    fig = _figure(figsize=(9, 0.35 * num_clips + 1))
    ax = fig.subplots()
    sns = seaborn()
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
    fig = _figure(figsize=(1.2 * frames_per_row, 1.25 * len(examples)))
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
    fig = _figure(figsize=(6, 0.45 * len(values) + 1))
    ax = fig.subplots()
    sns = seaborn()
    sns.barplot(x=list(values.values()), y=list(values.keys()), ax=ax, orient="h", color=FAST_COLOR)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- pre-training (notebooks 02-04)


def plot_stage_flops(costs, *, title: str = "") -> Figure:
    """FLOPs per stage, slow against fast, one panel per setup (notebook ``02_slow_fast_encoders``).

    ``costs`` is a long-form table (a ``pandas.DataFrame`` or a list of dicts) with the columns
    ``setup`` (e.g. "preset", "paper R50"), ``pathway`` ("slow" / "fast"), ``stage`` and ``flops``,
    e.g. the rows of :func:`vthcl_lib.models.stage_costs` with the two labels added. Each panel has
    its own y-axis, in GFLOPs.
    """
    import pandas as pd

    frame = pd.DataFrame(costs).copy()
    frame["GFLOPs"] = frame["flops"] / 1e9
    setups = list(dict.fromkeys(frame["setup"]))
    fig = _figure(figsize=(4.2 * len(setups), 3.4))
    axes = fig.subplots(1, len(setups), squeeze=False)[0]
    palette = {"slow": SLOW_COLOR, "fast": FAST_COLOR}
    sns = seaborn()
    for ax, setup in zip(axes, setups):
        part = frame[frame["setup"] == setup]
        sns.barplot(data=part, x="stage", y="GFLOPs", hue="pathway", hue_order=[p for p in palette if p in set(part["pathway"])],
                    palette=palette, ax=ax)
        ax.set_title(setup)
        ax.set_xlabel("")
        ax.legend(title="", fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def _softmax_parts(pos_sim: float, neg_sims, temperature: float) -> tuple[float, np.ndarray, float]:
    """The positive's and the (descending) negatives' softmax weights over ``[pos, neg] / T``, and the loss."""
    neg = np.sort(np.asarray(neg_sims, dtype=np.float64).ravel())[::-1]
    logits = np.concatenate([[float(pos_sim)], neg]) / temperature
    log_z = logits.max() + np.log(np.exp(logits - logits.max()).sum())
    weights = np.exp(logits - log_z)
    return float(weights[0]), weights[1:], float(log_z - logits[0])


def plot_softmax_weights(pos_sim: float = 0.5, neg_sims=(0.3, 0.1, 0.0, -0.1), temperature: float = 0.07,
                         top_k: int = 10) -> Figure:
    """Where one query's softmax mass goes: the positive and each negative, hardest first.

    Notebook ``03_contrastive_loss`` (the temperature explorer). ``pos_sim`` is ``q . pos``, ``neg_sims``
    the ``q . neg_j``; the bars are the softmax weights of ``[pos, neg] / temperature`` (the gradient
    on negative j is proportional to its weight), the title gives the InfoNCE loss and the share of
    the negatives' mass that the ``top_k`` hardest ones take.
    """
    w_pos, w_neg, loss = _softmax_parts(pos_sim, neg_sims, temperature)
    top_k = max(1, min(int(top_k), len(w_neg)))
    share = w_neg[:top_k].sum() / max(w_neg.sum(), 1e-300)
    fig = _figure(figsize=(8, 3.2))
    ax = fig.subplots()
    rank = np.arange(1, len(w_neg) + 1)
    ax.bar(rank, w_neg, width=1.0, color=FAST_COLOR, linewidth=0, label="negatives, hardest first")  # no edges: 1000s of bars
    ax.axvspan(0.5, top_k + 0.5, color="0.9", zorder=0, label=f"top {top_k}")
    ax.axhline(w_pos, color=SLOW_COLOR, lw=2, label=f"positive: {w_pos:.3f}")
    ax.set_yscale("log")
    ax.set_ylim(max(min(w_neg.min(), w_pos) / 2, 1e-12), 1.5)
    ax.set_xlim(0.5, len(w_neg) + 0.5)
    ax.set_xlabel("negative, ranked by similarity to the query")
    ax.set_ylabel("softmax weight")
    ax.set_title(f"T = {temperature:.3g}: loss {loss:.3f}; the top {top_k} of {len(w_neg)} negatives take "
                 f"{100 * share:.0f}% of the negatives' weight", fontsize=10)
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    return fig


def plot_temperature_sweep(temperatures, losses, hard_share, *, hard_label: str = "hardest negatives",
                           marked: float | None = None) -> Figure:
    """InfoNCE loss, and the share of the negatives' weight on the hardest ones, against the temperature.

    Notebook ``03_contrastive_loss``. ``temperatures``, ``losses`` and ``hard_share`` (in [0, 1]) are
    equally long sequences; ``marked`` draws a vertical line (e.g. the preset's T). Log-scaled T axis.
    """
    t = np.asarray(temperatures, dtype=float)
    fig = _figure(figsize=(10, 3.4))
    ax_loss, ax_share = fig.subplots(1, 2)
    ax_loss.plot(t, np.asarray(losses, dtype=float), marker="o", ms=3, color=SLOW_COLOR)
    ax_loss.set_ylabel("InfoNCE loss")
    ax_share.plot(t, 100 * np.asarray(hard_share, dtype=float), marker="o", ms=3, color=FAST_COLOR)
    ax_share.set_ylabel(f"% of negatives' weight on\n{hard_label}")
    ax_share.set_ylim(0, 102)
    for ax in (ax_loss, ax_share):
        ax.set_xscale("log")
        ax.set_xlabel("temperature T")
        if marked is not None:
            ax.axvline(marked, color="0.4", ls="--", lw=1, label=f"T = {marked:g}")
            ax.legend(fontsize=8)
    ax_loss.set_title("loss")
    ax_share.set_title("where the gradient on negatives goes")
    fig.tight_layout()
    return fig


def plot_bank_staleness(cosines, *, title: str = "") -> Figure:
    """Cosine between a bank row and the live feature it stands for, over updates, one line per momentum.

    Notebook ``04_memory_bank``. ``cosines`` maps a label (e.g. the momentum m) to a sequence of
    cosines, one per update.
    """
    fig = _figure(figsize=(8, 3.4))
    ax = fig.subplots()
    sns = seaborn()
    palette = sns.color_palette("flare", len(cosines))
    for color, (label, values) in zip(palette, cosines.items()):
        values = np.asarray(values, dtype=float)
        ax.plot(np.arange(1, len(values) + 1), values, color=color, lw=1.8, label=f"m = {label}")
    ax.set_xlabel("update of the row (one per epoch in training)")
    ax.set_ylabel("cos(bank row, live feature)")
    ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.02)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


BANK_HEALTH = {  # history key suffix -> (panel title, what the reader looks for)
    "bank_cos": ("cos(live embedding, its own bank row)", "staleness: 0 = random rows, 1 = rows track the encoder"),
    "spread": ("mean cosine between clips in a batch", "collapse: near 1 = one direction for every clip"),
    "acc": ("in-batch retrieval (slow -> fast)", "instance discrimination; chance = 1 / batch"),
}


def plot_bank_health(histories, *, level: str = "res5", title: str = "") -> Figure:
    """Per epoch of pre-training: the bank's staleness, the embeddings' collapse and in-batch retrieval.

    Notebooks ``04_memory_bank`` and ``07_linear_probe_and_retrieval``. ``histories`` maps a label
    (a seed, a setting) to a pre-training history: the ``epochs`` list of its ``metrics.json``,
    whose records carry ``"<level>/bank_cos"``, ``"<level>/spread"`` and ``"<level>/acc"``
    (:class:`~vthcl_lib.contrastive.HierarchicalContrast` statistics, epoch means).
    """
    if not histories:
        raise ValueError("plot_bank_health needs at least one history")
    from matplotlib import ticker

    fig = _figure(figsize=(11, 3.3))
    sns = seaborn()
    axes = fig.subplots(1, len(BANK_HEALTH))
    palette = sns.color_palette("deep", len(histories))
    for color, (label, history) in zip(palette, histories.items()):
        missing = [k for k in BANK_HEALTH if f"{level}/{k}" not in history[0]]
        if missing:
            raise ValueError(f"history {label!r} has no {', '.join(f'{level}/{k}' for k in missing)} "
                             "(written by pre-trainings since the bank_cos and spread statistics)")
        epochs = [h["epoch"] for h in history]
        for ax, key in zip(axes, BANK_HEALTH):
            ax.plot(epochs, [h[f"{level}/{key}"] for h in history], marker="o", ms=3, color=color, label=str(label))
    for ax, (key, (name, hint)) in zip(axes, BANK_HEALTH.items()):
        ax.set_title(f"{level}: {name}", fontsize=9)
        ax.set_xlabel(f"epoch\n({hint})", fontsize=8)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set_ylim(min(-0.05, ax.get_ylim()[0]), 1.02)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


BANK_PROBE = {  # record key -> (panel title, what the reader looks for)
    "loss_term": ("loss per term / log(N + 1)", "1 = chance; below 1: the bank positive is found"),
    "bank_top1": ("own fast-bank row is the nearest", "instance discrimination against the bank"),
    "spread": ("mean cosine between clips in a batch", "collapse: near 1 = one direction for every clip"),
}


def plot_bank_probe(histories, *, title: str = "") -> Figure:
    """Per bank update of each row: loss against chance, bank top-1 and spread (notebook ``07_linear_probe_and_retrieval``).

    ``histories`` maps a label (e.g. "fresh draw each epoch", "one fixed clip per video") to the
    records of :func:`vthcl_lib.engine.bank_positive_probe`. The first panel divides each loss by
    the record's ``chance`` (``log(N + 1)``) and marks 1 with a dashed line.
    """
    if not histories:
        raise ValueError("plot_bank_probe needs at least one history")
    from matplotlib import ticker

    fig = _figure(figsize=(11, 3.3))
    sns = seaborn()
    axes = fig.subplots(1, len(BANK_PROBE))
    palette = sns.color_palette("deep", len(histories))
    for color, (label, history) in zip(palette, histories.items()):
        missing = [k for k in ("updates_per_row", "chance", *BANK_PROBE) if k not in history[0]]
        if missing:
            raise ValueError(f"history {label!r} has no {', '.join(missing)} (records of engine.bank_positive_probe)")
        x = [h["updates_per_row"] for h in history]
        for ax, key in zip(axes, BANK_PROBE):
            y = [h[key] / h["chance"] if key == "loss_term" else h[key] for h in history]
            ax.plot(x, y, marker="o", ms=2, color=color, label=str(label))
    for ax, (key, (name, hint)) in zip(axes, BANK_PROBE.items()):
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"bank updates per row (= epochs)\n({hint})", fontsize=8)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axes[0].axhline(1.0, color="grey", lw=0.8, ls="--")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_negatives_cost(costs, *, title: str = "") -> Figure:
    """Seconds and bytes gathered for shared against per-query negatives (notebook ``04_memory_bank``).

    ``costs`` is a long-form table (DataFrame or list of dicts) with the columns ``batch``,
    ``negatives``, ``mode`` ("shared" / "per_query"), ``seconds`` and ``bytes_gathered``, e.g. rows of
    :func:`vthcl_lib.contrastive.negatives_cost` with their sizes. Both axes are logarithmic.
    """
    import pandas as pd
    from matplotlib import ticker as mticker

    frame = pd.DataFrame(costs).copy()
    frame["milliseconds"] = 1000 * frame["seconds"]
    frame["MB gathered"] = frame["bytes_gathered"] / 1e6
    frame["B"] = frame["batch"].astype(str)
    fig = _figure(figsize=(11, 3.6))
    axes = fig.subplots(1, 2)
    palette = {"shared": SLOW_COLOR, "per_query": FAST_COLOR}
    sns = seaborn()
    for ax, column in zip(axes, ("milliseconds", "MB gathered")):
        sns.lineplot(data=frame, x="negatives", y=column, hue="mode", style="B", markers=True, palette=palette, ax=ax)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        low, high = ax.get_ylim()
        plain = mticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)  # 0.1, 1, 10 rather than 10^-1, 10^0, 10^1
        ax.yaxis.set_minor_formatter(plain if high / low < 10 else mticker.NullFormatter())  # label within a decade
        ax.set_xlabel("N (negatives per query)")
    axes[0].get_legend().remove()
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # one legend, outside the data
    axes[0].set_title("forward + backward of InfoNCE")
    axes[1].set_title("negatives gathered from the bank")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_pretraining_curves(metrics: dict) -> Figure:
    """Per-level loss ``L_s^k + L_f^k`` and in-batch retrieval accuracy per epoch (notebook ``05_hierarchical_pretraining``).

    ``metrics`` is what :func:`vthcl_lib.engine.pretrain` returns (or its ``metrics.json``).
    """
    from matplotlib import ticker

    history = metrics["epochs"]
    levels = metrics["levels"]
    epochs = [h["epoch"] for h in history]
    fig = _figure(figsize=(10, 3.4))
    loss_ax, acc_ax = fig.subplots(1, 2)
    sns = seaborn()
    palette = sns.color_palette("viridis", len(levels))
    for color, level in zip(palette, levels):
        loss_ax.plot(epochs, metrics["loss_per_level"][level], marker="o", color=color, label=level)
        acc_ax.plot(epochs, [h[f"{level}/acc"] for h in history], marker="o", color=color, label=level)
    batch = metrics.get("config", {}).get("train", {}).get("batch_size")
    if batch:
        acc_ax.axhline(1 / batch, color="0.5", ls="--", lw=1, label=f"chance (1/{batch})")
    loss_ax.set(xlabel="epoch", ylabel="L_s + L_f", title="memory-bank loss per level")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="in-batch slow-to-fast retrieval", ylim=(0, 1.02))
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # epochs are whole numbers
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- downstream (notebooks 06-07)

INIT_PALETTE = {"random": "0.6", "vthcl": FAST_COLOR, "external": "#8c564b"}
PROTOCOL_NAMES = {"linear": "linear probe", "knn": "weighted kNN", "retrieval_r1": "retrieval R@1",
                  "finetune": "fine-tuning"}


def plot_init_comparison(results: Sequence[dict], *, title: str = "random vs VTHCL initialisation") -> Figure:
    """Top-1 per protocol for each initialisation: bars at the mean over seeds, one dot per seed.

    Notebook ``07_linear_probe_and_retrieval``; ``results`` are the summary's rows
    (``{"protocol", "init", "seed", "top1"}``, top-1 as a fraction).
    """
    if not results:
        raise ValueError("results is empty; expected rows with protocol, init, seed and top1")
    order = [p for p in PROTOCOL_NAMES if any(r["protocol"] == p for r in results)]
    inits = [i for i in INIT_PALETTE if any(r["init"] == i for r in results)]
    data = {"protocol": [PROTOCOL_NAMES[r["protocol"]] for r in results],
            "init": [r["init"] for r in results], "top-1 (%)": [100 * r["top1"] for r in results]}
    fig = _figure(figsize=(1.9 * len(order) + 2, 3.6))
    ax = fig.subplots()
    names = [PROTOCOL_NAMES[p] for p in order]
    palette = {i: INIT_PALETTE[i] for i in inits}
    sns = seaborn()
    sns.barplot(data=data, x="protocol", y="top-1 (%)", hue="init", order=names, hue_order=inits,
                palette=palette, errorbar=None, alpha=0.75, ax=ax)
    sns.stripplot(data=data, x="protocol", y="top-1 (%)", hue="init", order=names, hue_order=inits,
                  palette=palette, dodge=True, color="k", edgecolor="k", linewidth=0.6, size=5, legend=False, ax=ax)
    ax.set(title=title, xlabel="", ylim=(0, 100))
    fig.tight_layout()
    return fig


def plot_finetune_history(histories: dict[str, Sequence[dict]], *, title: str = "fine-tuning") -> Figure:
    """Training loss, training top-1 and the learning rate per epoch, one line per run (notebook ``06_action_recognition``).

    ``histories`` maps a run's name (e.g. ``"vthcl seed 0"``) to :func:`vthcl_lib.finetune.finetune`'s ``history``.
    """
    from matplotlib import ticker

    if not histories:
        raise ValueError("histories is empty; expected {run name: per-epoch records}")
    fig = _figure(figsize=(12, 3.2))
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    sns = seaborn()
    palette = sns.color_palette("tab10", len(histories))
    for color, (name, history) in zip(palette, histories.items()):
        epochs = [h["epoch"] for h in history]
        loss_ax.plot(epochs, [h["loss"] for h in history], color=color, label=name)
        acc_ax.plot(epochs, [100 * h["train_top1"] for h in history], color=color, label=name)
        lr_ax.step(epochs, [h["lr"] for h in history], where="post", color=color, label=name)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title=f"{title}: training loss")
    acc_ax.set(xlabel="epoch", ylabel="train top-1 (%)", title="training accuracy (augmented clips)", ylim=(0, 100))
    lr_ax.set(xlabel="epoch", ylabel="learning rate", title="step schedule", yscale="log")
    for ax in (loss_ax, acc_ax, lr_ax):
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # epochs are whole numbers
    acc_ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_keyframe_boxes(frame, boxes, labels: Sequence[str], *, scores: Sequence[float] | None = None,
                        title: str = "") -> Figure:
    """One keyframe with its person boxes (normalised ``[K, 4]``) and a label per box (notebook ``08_action_detection``).

    ``frame`` is uint8 ``[H, W, 3]``; ``scores`` (optional) are written after the labels.
    """
    image = _as_images(np.asarray(frame)[None])[0]
    height, width = image.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(labels) != len(boxes):
        raise ValueError(f"{len(labels)} labels for {len(boxes)} boxes; expected one label per box")
    fig = _figure(figsize=(4, 4.2))
    ax = fig.subplots()
    ax.imshow(image)
    sns = seaborn()
    palette = sns.color_palette("bright", max(len(boxes), 1))
    for k, (box, label) in enumerate(zip(boxes, labels)):
        x1, y1, x2, y2 = box * np.array([width, height, width, height])
        ax.add_patch(_rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=2, color=palette[k]))
        text = label if scores is None else f"{label} {scores[k]:.2f}"
        ax.text(x1, max(y1 - 2, 4), text, color="white", fontsize=8, bbox={"facecolor": palette[k], "pad": 1, "lw": 0})
    ax.set(title=title, xticks=[], yticks=[])
    fig.tight_layout()
    return fig


def plot_metric_by_init(rows: Sequence[dict], metrics: Sequence[str], *, title: str = "random vs VTHCL") -> Figure:
    """Named metrics (fractions) per initialisation: bars at the mean over seeds, a dot per seed.

    Notebooks ``08_action_detection`` and ``09_action_anticipation``; ``rows`` are dicts with
    ``init``, ``seed`` and each of ``metrics``.
    """
    if not rows:
        raise ValueError("rows is empty; expected dicts with init, seed and the metrics")
    missing = [m for m in metrics if any(m not in r for r in rows)]
    if missing:
        raise ValueError(f"metrics {missing} are missing from some rows")
    inits = [i for i in INIT_PALETTE if any(r["init"] == i for r in rows)]
    data = {"metric": [m for r in rows for m in metrics], "init": [r["init"] for r in rows for _ in metrics],
            "%": [100 * r[m] for r in rows for m in metrics]}
    fig = _figure(figsize=(1.6 * len(metrics) + 2, 3.4))
    ax = fig.subplots()
    palette = {i: INIT_PALETTE[i] for i in inits}
    sns = seaborn()
    sns.barplot(data=data, x="metric", y="%", hue="init", order=list(metrics), hue_order=inits, palette=palette,
                errorbar=None, alpha=0.75, ax=ax)
    sns.stripplot(data=data, x="metric", y="%", hue="init", order=list(metrics), hue_order=inits, palette=palette,
                  dodge=True, color="k", edgecolor="k", linewidth=0.6, size=5, legend=False, ax=ax)
    ax.set(title=title, xlabel="", ylim=(0, 100))
    fig.tight_layout()
    return fig


def plot_icm(frames, heat, *, boxes=None, title: str = "", max_frames: int = 8) -> Figure:
    """Frames with their Instance Correspondence Map overlaid (notebook ``10_instance_correspondence_map``).

    ``frames`` uint8 ``[T, H, W, 3]``; ``heat`` ``[T, H, W]`` in [0, 1] (``icm.upsample_map``);
    ``boxes`` optional ``[T, 4]`` pixel boxes drawn in white. At most ``max_frames`` evenly spaced frames.
    """
    images = _as_images(np.asarray(frames))
    heat = heat.detach().cpu().numpy() if isinstance(heat, torch.Tensor) else np.asarray(heat)
    if heat.shape != images.shape[:3]:
        raise ValueError(f"heat has shape {heat.shape}; expected the frames' [T, H, W] = {images.shape[:3]}")
    picks = np.linspace(0, len(images) - 1, min(max_frames, len(images))).round().astype(int)
    # One or two frames (the explorer) are drawn large; a strip of frames smaller each.
    side = 3.2 if len(picks) <= 2 else 1.6
    fig = _figure(figsize=(side * len(picks) + 1.2, side + 0.5), layout="constrained")
    axes = fig.subplots(1, len(picks), squeeze=False)[0]
    for ax, t in zip(axes, picks):
        ax.imshow(images[t])
        overlay = ax.imshow(heat[t], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        if boxes is not None:
            x1, y1, x2, y2 = np.asarray(boxes)[t]
            ax.add_patch(_rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=1.2, color="white"))
        ax.set(xticks=[], yticks=[], title=f"t={t}")
    bar = fig.colorbar(overlay, ax=list(axes), shrink=0.9, pad=0.02)
    bar.set_label("ICM")  # 0 low, 1 high: the per-clip scaling of icm.upsample_map
    fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------- honest numbers (all notebooks)

CI_NOTE = ("**ci preset:** this run checks that the code paths work on a tiny corpus for an epoch or two; "
           "its numbers say nothing about the method. For what VTHCL does on the synthetic corpus see the "
           "demo figures in the README (*What the demo shows*, `make demo`), and for real data the paper's tables.")


def preset_note(preset) -> str | None:
    """The note a result table or plot carries at ``preset`` (a name, or a config with ``.preset``).

    Every notebook with results shows it after them (``widgets.note``). At ``ci`` the numbers come
    from a few steps on a tiny corpus, so they are labelled as a code-path check; other presets
    (``demo``, ``paper_*``) measure the method and need no note: ``None``.
    """
    name = getattr(preset, "preset", preset)
    if not isinstance(name, str):
        raise TypeError(f"preset_note expects a preset name or a config with .preset; got {type(name).__name__}")
    return CI_NOTE if name == "ci" else None
