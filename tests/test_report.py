"""The downstream summary: rows from metrics.json files -> summary.json, table and figure."""
from __future__ import annotations

import json

import pytest

from vthcl_lib.evaluate import frozen_protocols
from vthcl_lib.config import resolve_config
from vthcl_lib.report import find_result_rows, markdown_table, summarise, write_summary
from vthcl_lib.runs import save_metrics


def _rows():
    rows = []
    for seed, (r, v) in enumerate([(0.20, 0.40), (0.30, 0.50), (0.25, 0.45)]):
        rows += [{"protocol": "linear", "init": "random", "seed": seed, "top1": r},
                 {"protocol": "linear", "init": "vthcl", "seed": seed, "top1": v}]
        # fine-tuning: two splits per seed are averaged into one row
        rows += [{"protocol": "finetune", "init": "vthcl", "seed": seed, "split": s, "top1": v + d}
                 for s, d in ((1, 0.1), (2, -0.1))]
    return rows


def test_summary_averages_splits_and_computes_gap():
    summary = summarise(_rows(), preset="demo")
    assert summary["preset"] == "demo"
    assert {(r["protocol"], r["init"], r["seed"]): r["top1"] for r in summary["results"]} == pytest.approx({
        ("linear", "random", 0): 0.20, ("linear", "random", 1): 0.30, ("linear", "random", 2): 0.25,
        ("linear", "vthcl", 0): 0.40, ("linear", "vthcl", 1): 0.50, ("linear", "vthcl", 2): 0.45,
        ("finetune", "vthcl", 0): 0.40, ("finetune", "vthcl", 1): 0.50, ("finetune", "vthcl", 2): 0.45})
    assert set(summary["results"][0]) == {"protocol", "init", "seed", "top1"}
    agg = summary["aggregate"]["linear"]
    assert agg["random"]["mean"] == pytest.approx(0.25) and agg["vthcl"]["mean"] == pytest.approx(0.45)
    assert agg["random"]["std"] == pytest.approx((0.05 ** 2 * 2 / 3) ** 0.5)
    assert summary["gap"] == pytest.approx({"linear": 0.20})  # no random fine-tuning rows: no gap
    table = markdown_table(summary)
    assert "| linear probe | 25.0 ± 4.1 (n=3) | 45.0 ± 4.1 (n=3) | +20.0 |" in table
    assert "| fine-tuning | – | 45.0 ± 4.1 (n=3) | – |" in table


@pytest.mark.parametrize("bad, match", [({"protocol": "top5"}, "protocol"), ({"top1": 45.0}, "fraction"),
                                        ({"seed": None, "init": None}, None)])
def test_bad_rows_are_named(bad, match):
    row = {"protocol": "linear", "init": "random", "seed": 0, "top1": 0.5, **bad}
    row = {k: v for k, v in row.items() if v is not None}
    with pytest.raises(ValueError, match=match or "lacks"):
        summarise([row], preset="demo")


def test_write_summary_collects_every_metrics_file(tmp_path):
    rows = _rows()
    save_metrics(tmp_path / "06_action_recognition", {"results": [r for r in rows if r["protocol"] == "finetune"]})
    save_metrics(tmp_path / "07_linear_probe_and_retrieval", {"results": [r for r in rows if r["protocol"] != "finetune"]})
    save_metrics(tmp_path / "05_hierarchical_pretraining", {"last_epoch_loss": 3.0})  # no rows: ignored
    assert len(find_result_rows(tmp_path)) == len(rows)
    summary = write_summary(tmp_path, preset="demo")
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["results"] == summary["results"] and len(on_disk["results"]) == 9
    assert (tmp_path / "summary.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no metrics.json"):
        write_summary(tmp_path / "05_hierarchical_pretraining", preset="demo")


def test_frozen_protocols_share_one_extraction():
    import torch

    # Two well-separated classes along the first axis: every protocol is perfect.
    train_x = torch.tensor([[5.0, 0.1], [4.0, -0.2], [-5.0, 0.3], [-4.0, 0.0]])
    train_y = torch.tensor([0, 0, 1, 1])
    test_x, test_y = torch.tensor([[3.0, 0.0], [-3.0, 0.1]]), torch.tensor([0, 1])
    out = frozen_protocols(train_x, train_y, test_x, test_y, resolve_config("ci", knn_k=3).probe)
    assert out["linear"]["top1"] == 1.0 and out["knn"]["top1"] == 1.0 and out["knn"]["k"] == 3
    assert out["retrieval"] == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "R@20": 1.0, "R@50": 1.0}


def test_command_line_prints_the_table(tmp_path, capsys):
    from vthcl_lib.report import main

    save_metrics(tmp_path / "07_linear_probe_and_retrieval", {"results": _rows()})
    assert main([str(tmp_path), "--preset", "demo"]) == 0
    out = capsys.readouterr().out
    assert "| linear probe |" in out and "summary.json" in out
    assert json.loads((tmp_path / "summary.json").read_text())["preset"] == "demo"


def test_our_results_sit_beside_the_papers_tables_with_their_scale_and_whats_missing(tmp_path):
    from vthcl_lib.report import PAPER_RESULTS, our_results, paper_comparison, scale_of
    from vthcl_lib.runs import save_metrics

    save_metrics(tmp_path / "demo" / "06", {"preset": "demo", "dataset": "ucf101", "results": [
        {"protocol": "finetune", "init": "vthcl", "seed": 0, "split": 1, "dataset": "ucf101", "top1": 0.30},
        {"protocol": "finetune", "init": "vthcl", "seed": 0, "split": 2, "dataset": "ucf101", "top1": 0.40},
        {"protocol": "finetune", "init": "vthcl", "seed": 1, "split": 1, "dataset": "ucf101", "top1": 0.45},
        {"protocol": "linear", "init": "vthcl", "seed": 0, "top1": 0.9}]})  # not a paper table entry: ignored
    save_metrics(tmp_path / "demo" / "08", {"preset": "demo", "transfer_results": [
        {"task": "ava_detection", "init": "random", "seed": 0, "mAP": 0.25}]})
    save_metrics(tmp_path / "real" / "09", {"preset": "paper_r18", "transfer_results": [
        {"task": "epic_anticipation", "init": "vthcl", "seed": 0, "noun_top1": 0.11, "verb_top1": 0.27}]})
    save_metrics(tmp_path / "demo" / "11", {"preset": "demo", "ablation_results": [
        {"alpha": 2, "levels": 1, "dataset": "hmdb51", "seed": 0, "top1": 0.2}]})
    ours = {(r["table"], r["setting"], r["metric"], r["init"]): r for r in our_results(tmp_path)}
    ucf = ours[("1", "UCF-101", "fine-tuning top-1", "vthcl")]
    assert (round(ucf["mean"], 6), round(ucf["std"], 6), ucf["n"]) == (40.0, 5.0, 2)  # seed 0: splits averaged to 35
    assert ours[("3a", "AVA", "frame mAP@0.5", "random")]["mean"] == pytest.approx(25.0)
    assert ours[("3b", "Epic-Kitchens", "verb top-1", "vthcl")]["scale"] == "real data" == scale_of("paper_r50")
    assert ours[("2a", "alpha=2, D=1", "HMDB-51 fine-tuning top-1", "vthcl")]["mean"] == pytest.approx(20.0)
    assert ours[("2b", "D=1, alpha=2", "HMDB-51 fine-tuning top-1", "vthcl")]["scale"] == "synthetic (demo)"
    rows = paper_comparison(list(ours.values()))
    assert len(rows) == len(PAPER_RESULTS)  # every entry of ours has a paper entry here
    by = {(r["table"], r["setting"], r["metric"], r["init"]): r for r in rows}
    assert by[("1", "UCF-101", "fine-tuning top-1", "vthcl")]["ours"] == "40.0 ± 5.0 (n=2)"
    assert by[("1", "UCF-101", "fine-tuning top-1", "vthcl")]["paper_R18"] == 80.6
    assert "outside this project" in by[("3a", "AVA", "frame mAP@0.5", "kinetics")]["note"]
    assert "not run yet" in by[("1", "HMDB-51", "fine-tuning top-1", "random")]["note"]
    assert [r["table"] for r in rows] == sorted([r["table"] for r in rows], key=["1", "2a", "2b", "3a", "3b"].index)
