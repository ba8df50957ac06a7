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
