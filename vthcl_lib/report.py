"""Collect the downstream results of a runs folder into ``summary.json`` and one figure.

Taught in notebook ``07_linear_probe_and_retrieval`` (its last section writes the demo's summary);
``make demo`` calls ``python -m vthcl_lib.report <runs/demo>`` at the end.

Every downstream notebook stores its rows under ``"results"`` in its ``metrics.json``: one row per
(protocol, init, seed[, split]) with ``top1`` a fraction in [0, 1]. The summary keeps
``{"preset", "results": [{"protocol", "init", "seed", "top1"}, ...]}`` (fine-tuning rows averaged
over the splits that ran), and the per-protocol mean and standard deviation beside it.
"""
from __future__ import annotations

import argparse
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from vthcl_lib.runs import load_metrics, write_json_atomic

PROTOCOLS = ("linear", "knn", "retrieval_r1", "finetune")
SUMMARY_NAME = "summary.json"
FIGURE_NAME = "summary.png"


def find_result_rows(run_root: str | os.PathLike) -> list[dict[str, Any]]:
    """Every ``results`` row of every ``metrics.json`` below ``run_root``, tagged with its run folder.

    Notebook ``07_linear_probe_and_retrieval``.
    """
    root = Path(run_root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs folder '{root}' does not exist")
    rows = []
    for path in sorted(root.rglob("metrics.json")):
        metrics = load_metrics(path.parent)
        for row in metrics.get("results", []) or []:
            rows.append({**row, "run": str(path.parent.relative_to(root))})
    return rows


def summarise(rows: Iterable[Mapping[str, Any]], *, preset: str) -> dict[str, Any]:
    """Rows -> the summary: one row per (protocol, init, seed), fine-tuning averaged over its splits.

    Notebook ``07_linear_probe_and_retrieval``. Rows need ``protocol``, ``init``, ``seed`` and
    ``top1``; an unknown protocol or a top-1 outside [0, 1] is an error naming the row. Also
    returns ``"aggregate"``: ``{protocol: {init: {"mean", "std", "n"}}}`` (population std over seeds)
    and ``"gap"``: ``{protocol: mean(vthcl) - mean(random)}`` where both exist.
    """
    grouped: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for row in rows:
        missing = [k for k in ("protocol", "init", "seed", "top1") if k not in row]
        if missing:
            raise ValueError(f"result row {dict(row)} lacks {missing}")
        if row["protocol"] not in PROTOCOLS:
            raise ValueError(f"result row {dict(row)}: protocol {row['protocol']!r} is not one of {PROTOCOLS}")
        top1 = float(row["top1"])
        if not 0.0 <= top1 <= 1.0:
            raise ValueError(f"result row {dict(row)}: top1={top1} is not a fraction in [0, 1]")
        grouped[(row["protocol"], str(row["init"]), int(row["seed"]))].append(top1)
    order = {p: i for i, p in enumerate(PROTOCOLS)}
    results = [{"protocol": p, "init": init, "seed": seed, "top1": sum(v) / len(v)}
               for (p, init, seed), v in sorted(grouped.items(), key=lambda kv: (order[kv[0][0]], kv[0][1], kv[0][2]))]
    aggregate: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for p in PROTOCOLS:
        for init in sorted({r["init"] for r in results if r["protocol"] == p}):
            values = [r["top1"] for r in results if r["protocol"] == p and r["init"] == init]
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            aggregate[p][init] = {"mean": mean, "std": std, "n": len(values)}
    gap = {p: a["vthcl"]["mean"] - a["random"]["mean"] for p, a in aggregate.items() if {"vthcl", "random"} <= set(a)}
    return {"preset": preset, "results": results, "aggregate": dict(aggregate), "gap": gap}


def markdown_table(summary: Mapping[str, Any], protocols: Sequence[str] = PROTOCOLS) -> str:
    """The summary as a Markdown table (mean +- std over seeds, in %), as the README shows it.

    Notebook ``07_linear_probe_and_retrieval``.
    """
    from vthcl_lib.plots import PROTOCOL_NAMES as names

    agg, gap = summary["aggregate"], summary["gap"]
    lines = ["| protocol | random init | VTHCL init | gap (points) |", "|---|---|---|---|"]
    for p in protocols:
        if p not in agg:
            continue
        cells = []
        for init in ("random", "vthcl"):
            a = agg[p].get(init)
            cells.append(f"{100 * a['mean']:.1f} ± {100 * a['std']:.1f} (n={a['n']})" if a else "–")
        g = f"{100 * gap[p]:+.1f}" if p in gap else "–"
        lines.append(f"| {names.get(p, p)} | {cells[0]} | {cells[1]} | {g} |")
    return "\n".join(lines)


def write_summary(run_root: str | os.PathLike, *, preset: str, figure: bool = True) -> dict[str, Any]:
    """Collect ``run_root``'s rows, write ``summary.json`` (and ``summary.png``) there; returns the summary.

    Notebook ``07_linear_probe_and_retrieval``.
    """
    rows = find_result_rows(run_root)
    if not rows:
        raise ValueError(f"no metrics.json under '{run_root}' has result rows; run notebooks 06 and 07 first")
    summary = summarise(rows, preset=preset)
    write_json_atomic(Path(run_root) / SUMMARY_NAME, summary)
    if figure:
        from vthcl_lib.plots import plot_init_comparison

        fig = plot_init_comparison(summary["results"])
        fig.savefig(Path(run_root) / FIGURE_NAME, dpi=120, bbox_inches="tight")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vthcl_lib.report",
                                     description="Write summary.json and summary.png for a runs folder.")
    parser.add_argument("run_root", help="a runs folder, e.g. runs/demo")
    parser.add_argument("--preset", default=None, help="preset name recorded in the summary (default: the folder's name)")
    args = parser.parse_args(argv)
    summary = write_summary(args.run_root, preset=args.preset or Path(args.run_root).name)
    print(markdown_table(summary))
    print(f"wrote {Path(args.run_root) / SUMMARY_NAME} and {Path(args.run_root) / FIGURE_NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# ----------------------------------------------------------------------------------- against the paper's tables

# VTHCL_SPEC (d), the paper's v2 tables: (table, setting, metric, init) -> {"R18": %, "R50": %}.
PAPER_RESULTS: dict[tuple[str, str, str, str], dict[str, float]] = {}
for _data, _r18, _r50 in (("UCF-101", (68.0, 83.0, 92.6, 80.6), (61.1, 86.2, 94.8, 82.1)),
                          ("HMDB-51", (30.8, 48.2, 66.7, 48.6), (21.7, 51.8, 69.3, 49.2))):
    for _i, _init in enumerate(("random", "imagenet", "kinetics", "vthcl")):
        PAPER_RESULTS[("1", _data, "fine-tuning top-1", _init)] = {"R18": _r18[_i], "R50": _r50[_i]}
for _setting, _r18, _r50 in (("alpha=1, D=1", (78.2, 45.2), (80.3, 47.3)), ("alpha=2, D=1", (79.5, 47.4), (80.9, 47.7)),
                             ("alpha=4, D=1", (80.0, 48.2), (80.6, 48.0))):
    for _j, _data in enumerate(("UCF-101", "HMDB-51")):
        PAPER_RESULTS[("2a", _setting, f"{_data} fine-tuning top-1", "vthcl")] = {"R18": _r18[_j], "R50": _r50[_j]}
for _setting, _r18, _r50 in (("D=1, alpha=2", (79.5, 47.4), (80.9, 47.7)), ("D=2, alpha=2", (80.3, 47.9), (81.5, 48.5)),
                             ("D=3, alpha=2", (80.6, 48.6), (82.1, 49.2))):
    for _j, _data in enumerate(("UCF-101", "HMDB-51")):
        PAPER_RESULTS[("2b", _setting, f"{_data} fine-tuning top-1", "vthcl")] = {"R18": _r18[_j], "R50": _r50[_j]}
for _i, _init in enumerate(("random", "imagenet", "kinetics", "vthcl")):
    PAPER_RESULTS[("3a", "AVA", "frame mAP@0.5", _init)] = {"R18": (11.1, 13.4, 16.6, 13.9)[_i],
                                                             "R50": (7.9, 16.8, 21.4, 15.0)[_i]}
    PAPER_RESULTS[("3b", "Epic-Kitchens", "noun top-1", _init)] = {"R18": (8.9, 13.5, 14.2, 11.2)[_i],
                                                                   "R50": (8.2, 15.7, 15.8, 11.9)[_i]}
    PAPER_RESULTS[("3b", "Epic-Kitchens", "verb top-1", _init)] = {"R18": (26.3, 28.0, 28.8, 27.0)[_i],
                                                                   "R50": (26.3, 27.8, 30.2, 27.6)[_i]}
TABLE_TITLES = {"1": "Table 1: action recognition, fine-tuning", "2a": "Table 2a: relative tempo alpha",
                "2b": "Table 2b: hierarchy depth D", "3a": "Table 3a: AVA detection", "3b": "Table 3b: Epic anticipation"}
SUPERVISED_INITS = ("imagenet", "kinetics")
_DATASET_NAMES = {"ucf101": "UCF-101", "hmdb51": "HMDB-51"}


def scale_of(preset: str) -> str:
    """What a number measured at ``preset`` stands on: synthetic data or the real datasets (notebook ``12_results_report``)."""
    return "real data" if str(preset) in ("paper_r18", "paper_r50") else f"synthetic ({preset})"


def our_results(run_root: str | os.PathLike) -> list[dict[str, Any]]:
    """Every number of ours that has a place in the paper's tables, from the ``metrics.json`` files under ``run_root``.

    Notebook ``12_results_report``. Reads fine-tuning rows (``results``, protocol ``finetune``; splits
    averaged per seed), ablation rows (``ablation_results``: ``alpha``, ``levels``, ``dataset``, ``seed``,
    ``top1``) and transfer rows (``transfer_results``: AVA ``mAP``, Epic ``noun_top1`` / ``verb_top1``).
    Returns ``{"table", "setting", "metric", "init", "mean", "std", "n", "scale", "run"}`` rows, in %.
    """
    root = Path(run_root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs folder '{root}' does not exist")
    values: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    where: dict[tuple, tuple[str, str]] = {}
    for path in sorted(root.rglob("metrics.json")):
        metrics = load_metrics(path.parent)
        scale, run = scale_of(metrics.get("preset", "unknown")), str(path.parent.relative_to(root))

        def add(key: tuple, seed: Any, value: float) -> None:
            key = (*key, scale)  # numbers of different scales never average together
            values[key][int(seed)].append(100 * float(value))
            where[key] = (scale, run)

        for row in metrics.get("results", []) or []:
            if row.get("protocol") == "finetune":
                data = _DATASET_NAMES.get(row.get("dataset", metrics.get("dataset")), str(row.get("dataset")))
                add(("1", data, "fine-tuning top-1", row["init"]), row["seed"], row["top1"])
        for row in metrics.get("ablation_results", []) or []:
            if row.get("protocol", "finetune") != "finetune":
                continue  # Table 2 is fine-tuning; notebook 11 shows the linear probe beside it
            data = _DATASET_NAMES.get(row["dataset"], row["dataset"])
            if int(row["levels"]) == 1:
                add(("2a", f"alpha={row['alpha']}, D=1", f"{data} fine-tuning top-1", "vthcl"), row["seed"], row["top1"])
            if int(row["alpha"]) == 2:
                add(("2b", f"D={row['levels']}, alpha=2", f"{data} fine-tuning top-1", "vthcl"), row["seed"], row["top1"])
        for row in metrics.get("transfer_results", []) or []:
            if row.get("task") == "ava_detection":
                add(("3a", "AVA", "frame mAP@0.5", row["init"]), row["seed"], row["mAP"])
            elif row.get("task") == "epic_anticipation":
                add(("3b", "Epic-Kitchens", "noun top-1", row["init"]), row["seed"], row["noun_top1"])
                add(("3b", "Epic-Kitchens", "verb top-1", row["init"]), row["seed"], row["verb_top1"])
    out = []
    for key, by_seed in values.items():
        per_seed = [sum(v) / len(v) for _, v in sorted(by_seed.items())]  # e.g. splits averaged within a seed
        mean = sum(per_seed) / len(per_seed)
        std = math.sqrt(sum((v - mean) ** 2 for v in per_seed) / len(per_seed))
        out.append(dict(zip(("table", "setting", "metric", "init"), key[:4]), mean=mean, std=std, n=len(per_seed),
                        scale=where[key][0], run=where[key][1]))
    return out


def paper_comparison(ours: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The paper's every entry beside ours (or why ours is missing), table by table (notebook ``12_results_report``).

    Each row: ``table, setting, metric, init, paper_R18, paper_R50, ours`` (mean ± std over n seeds,
    or None), ``scale`` (synthetic or real data) and ``note`` (what is missing and why). Our own rows
    that the paper has no entry for are appended with empty paper columns.
    """
    by_key: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for r in ours:
        by_key[(r["table"], r["setting"], r["metric"], r["init"])].append(r)

    def row(key: tuple, paper: Mapping[str, float] | None, mine: Mapping[str, Any] | None, note: str) -> dict[str, Any]:
        return dict(zip(("table", "setting", "metric", "init"), key),
                    paper_R18=None if paper is None else paper["R18"], paper_R50=None if paper is None else paper["R50"],
                    ours=None if mine is None else f"{mine['mean']:.1f} ± {mine['std']:.1f} (n={mine['n']})",
                    scale=None if mine is None else mine["scale"], note=note)

    rows = []
    for key, paper in PAPER_RESULTS.items():
        mine = by_key.pop(key, [])
        if not mine:
            rows.append(row(key, paper, None, "not run here: supervised ImageNet/Kinetics weights are outside this project"
                            if key[3] in SUPERVISED_INITS else "not run yet: no metrics.json under this runs folder has it"))
        rows.extend(row(key, paper, m, "") for m in mine)
    for key, mine in by_key.items():
        rows.extend(row(key, None, m, "no entry in the paper's tables") for m in mine)
    order = {t: i for i, t in enumerate(TABLE_TITLES)}
    return sorted(rows, key=lambda r: order.get(r["table"], len(order)))


def comparison_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """:func:`paper_comparison` rows as one Markdown table per paper table (notebook ``12_results_report``)."""
    out = []
    for table, title in TABLE_TITLES.items():
        mine = [r for r in rows if r["table"] == table]
        if not mine:
            continue
        out += [f"**{title}**", "", "| setting | metric | init | paper R18 | paper R50 | ours | scale / note |",
                "|---|---|---|---|---|---|---|"]
        for r in mine:
            paper = ["-" if r[k] is None else f"{r[k]:.1f}" for k in ("paper_R18", "paper_R50")]
            out.append(f"| {r['setting']} | {r['metric']} | {r['init']} | {paper[0]} | {paper[1]} | "
                       f"{r['ours'] or '-'} | {r['scale'] or r['note']} |")
        out.append("")
    return "\n".join(out)
