"""Anticipation windows: tau_o seconds observed, ending tau_a seconds before the segment, at video boundaries."""
from __future__ import annotations

import numpy as np
import pytest

from vthcl_lib.anticipation import observation_indices, observation_window


def test_window_ends_tau_a_before_the_segment_and_lasts_tau_o():
    w = observation_window(200, 25, tau_o=1.0, tau_a=1.0)
    assert (w.first, w.end, w.wanted_first) == (150, 175, 150)
    assert not w.clipped and not w.empty
    idx = observation_indices(w, 8)
    assert idx.min() >= 150 and idx.max() < 175  # never a frame inside the anticipation gap
    assert np.all(np.diff(idx) > 0) and idx.tolist() == [151, 154, 157, 160, 164, 167, 170, 173]


def test_segment_starting_before_tau_o_plus_tau_a_is_clipped_and_padded_with_frame_0():
    w = observation_window(40, 25, tau_o=1.0, tau_a=1.0)  # window wanted at [-10, 15)
    assert (w.wanted_first, w.first, w.end) == (-10, 0, 15) and w.clipped and not w.empty
    idx = observation_indices(w, 5)
    assert idx.tolist() == [0, 0, 2, 7, 12]  # the same spacing as a full window; early positions read frame 0
    assert idx.max() < 15


def test_segment_inside_the_anticipation_gap_observes_nothing_but_frame_0():
    w = observation_window(10, 25, tau_o=1.0, tau_a=1.0)
    assert w.empty and w.end == 0 and w.clipped
    assert observation_indices(w, 4).tolist() == [0, 0, 0, 0]
    assert observation_window(0, 30).empty


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="segment_start"):
        observation_window(-1, 25)
    with pytest.raises(ValueError, match="fps"):
        observation_window(10, 0)
    with pytest.raises(ValueError, match="num_frames"):
        observation_indices(observation_window(100, 25), 0)


# ------------------------------------------------------------------ the model and metrics on the synthetic Epic-style set

import torch  # noqa: E402

from vthcl_lib.anticipation import (  # noqa: E402
    AnticipationModel,
    action_scores,
    anticipation_metrics,
    topk_hits,
    train_anticipation,
)
from vthcl_lib.config import resolve_config  # noqa: E402
from vthcl_lib.datasets import build_epic_datasets  # noqa: E402
from vthcl_lib.finetune import init_slow_encoder  # noqa: E402
from vthcl_lib.synthetic_transfer import ensure_transfer_sets  # noqa: E402
from vthcl_lib.transforms import normalize, to_float_cthw  # noqa: E402


@pytest.fixture(scope="module")
def epic_cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("epic_ci")
    cfg = resolve_config("ci", data_root=str(root), run_dir=str(root / "runs"))
    ensure_transfer_sets(root, cfg.synthetic, sets=("epic_kitchens",), progress=False)
    return cfg


def test_metrics_by_hand():
    verb_logits = torch.tensor([[3.0, 2.0, 1.0], [0.0, 1.0, 5.0]])
    noun_logits = torch.tensor([[0.0, 4.0], [2.0, 1.0]])
    verbs, nouns = torch.tensor([1, 2]), torch.tensor([1, 0])
    assert topk_hits(verb_logits, verbs, 1).tolist() == [False, True]
    assert topk_hits(verb_logits, verbs, 2).tolist() == [True, True]
    scores = action_scores(verb_logits, noun_logits)
    brute = torch.stack([torch.log_softmax(verb_logits, 1)[:, v] + torch.log_softmax(noun_logits, 1)[:, n]
                         for v in range(3) for n in range(2)], dim=1)
    torch.testing.assert_close(scores, brute)
    m = anticipation_metrics(verb_logits, noun_logits, verbs, nouns, ks=(1, 2))
    # action 0: best pair (0, 1), true (1, 1) second; action 1: best (2, 0) = true
    assert m == {"verb_top1": 0.5, "verb_top2": 1.0, "noun_top1": 1.0, "noun_top2": 1.0,
                 "action_top1": 0.5, "action_top2": 1.0}


def test_action_rank_equals_the_dense_matrix_rank_bit_for_bit():
    from vthcl_lib.anticipation import action_rank, label_rank
    from vthcl_lib.bench import anticipation_metrics_before

    g = torch.Generator().manual_seed(0)
    for verbs_n, nouns_n, ties in ((7, 11, False), (5, 3, True), (1, 9, False), (12, 1, True), (20, 64, True)):
        b = 200
        if ties:  # few distinct logits: many equal pairs, including sums that round to the same float
            verb_logits = torch.randint(0, 3, (b, verbs_n), generator=g).float() * 0.7
            noun_logits = torch.randint(0, 3, (b, nouns_n), generator=g).float() * 1.3
        else:
            verb_logits, noun_logits = torch.randn(b, verbs_n, generator=g), torch.randn(b, nouns_n, generator=g) * 3
        verbs, nouns = torch.randint(0, verbs_n, (b,), generator=g), torch.randint(0, nouns_n, (b,), generator=g)
        dense = label_rank(action_scores(verb_logits, noun_logits), verbs * nouns_n + nouns)
        assert torch.equal(action_rank(verb_logits, noun_logits, verbs, nouns), dense)
        if not ties:  # distinct scores: the same top-k as the dense matrix's topk, for every k
            ks = (1, 2, 5, 10, verbs_n * nouns_n)
            assert anticipation_metrics(verb_logits, noun_logits, verbs, nouns, ks=ks) == \
                anticipation_metrics_before(verb_logits, noun_logits, verbs, nouns, ks=ks)


def test_ties_count_against_the_label_and_bad_logits_are_named():
    from vthcl_lib.anticipation import label_rank

    from vthcl_lib.anticipation import action_rank

    with_grad = torch.randn(2, 3, requires_grad=True), torch.randn(2, 4, requires_grad=True)
    assert action_rank(*with_grad, torch.tensor([0, 1]), torch.tensor([2, 3])).shape == (2,)  # logits of a live model
    flat = torch.zeros(4, 6)
    assert label_rank(flat, torch.tensor([0, 1, 2, 5])).tolist() == [6, 6, 6, 6]
    m = anticipation_metrics(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]), torch.tensor([2, 3]))
    assert m["verb_top1"] == 0.0 and m["action_top5"] == 0.0  # constant scores never hit
    with pytest.raises(ValueError, match="verb_logits holds NaN"):
        anticipation_metrics(torch.full((1, 3), float("nan")), torch.zeros(1, 2), torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"labels for noun_logits: expected 1 class ids in \[0, 2\)"):
        anticipation_metrics(torch.zeros(1, 3), torch.zeros(1, 2), torch.tensor([0]), torch.tensor([2]))


def test_dataset_observes_the_window_before_the_segment_padding_at_the_video_start(epic_cfg):
    data = build_epic_datasets(epic_cfg, progress=False)
    val = data["val"]
    an, d = epic_cfg.anticipation, epic_cfg.data
    first = val.segments[0]  # starts 1 s in: earlier than tau_o + tau_a? check what the window does
    window = observation_window(first.start_frame, 25, tau_o=an.tau_o, tau_a=an.tau_a)
    idx = observation_indices(window, d.window // d.tau)
    record = val.records[0]
    expected = normalize(to_float_cthw(val.source.read(record, idx)), d.mean, d.std)
    clip, verb, noun, uid = val[0]
    assert (verb, noun, uid) == (first.verb_class, first.noun_class, first.uid)
    assert clip.shape == expected.shape and torch.allclose(clip, expected, atol=1e-5)  # ci: crop = decode size
    assert idx.max() < first.start_frame - round(an.tau_a * 25)  # nothing from the anticipation gap


def test_segment_starting_before_tau_o_plus_tau_a_reads_frame_0_for_the_missing_part(epic_cfg):
    from dataclasses import replace

    cfg = replace(epic_cfg, anticipation=replace(epic_cfg.anticipation, tau_o=1.0, tau_a=0.6))  # 1.6 s > 1 s lead
    val = build_epic_datasets(cfg, progress=False)["val"]
    window = val.windows[val.segments[0].uid]
    assert window.clipped and window.wanted_first < 0
    idx = observation_indices(window, 4)
    assert idx[0] == 0 and idx.max() < window.end
    clip = val[0][0]
    frame0 = normalize(to_float_cthw(val.source.read(val.records[0], [0])), cfg.data.mean, cfg.data.std)
    assert torch.allclose(clip[:, :1], frame0, atol=1e-5)


def test_model_heads_and_a_short_training_run(epic_cfg):
    encoder, _ = init_slow_encoder(epic_cfg, "random", seed=0)
    model = AnticipationModel(encoder, 8, 6, hidden=16)
    verb_logits, noun_logits = model(torch.randn(2, 3, 4, 32, 32))
    assert verb_logits.shape == (2, 8) and noun_logits.shape == (2, 6)
    record = train_anticipation(epic_cfg, encoder, seed=0, progress=False)
    assert [h["lr"] for h in record["history"]] == pytest.approx([0.05, 0.005])
    for key in ("verb_top1", "verb_top5", "noun_top1", "noun_top5", "action_top1", "action_top5"):
        assert 0.0 <= record[key] <= 1.0
    assert record["verb_top1"] <= record["verb_top5"] and record["action_top1"] <= record["action_top5"]
    assert record["top1"] == record["noun_top1"] and record["num_val"] == 10


def test_builder_names_missing_folders_split_clashes_and_counts_missing_videos(epic_cfg, tmp_path):
    import shutil
    from dataclasses import replace

    from vthcl_lib.datasets import DatasetLayoutError

    empty = replace(epic_cfg, data=replace(epic_cfg.data, data_root=str(tmp_path)))
    with pytest.raises(DatasetLayoutError, match="prepare_epic_kitchens"):
        build_epic_datasets(empty, progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(epic_cfg.data.data_root + "/epic_kitchens", copy / "epic_kitchens")
    cfg = replace(epic_cfg, data=replace(epic_cfg.data, data_root=str(copy), cache_dir=str(tmp_path / "cache")))
    val_list = copy / "epic_kitchens" / "splits" / "anticipation_val_videos.txt"
    first_val = val_list.read_text().split()[0]
    next(copy.rglob(f"{first_val}.MP4")).unlink()
    data = build_epic_datasets(cfg, progress=False)
    assert len(data["bad_videos"]) == 1 and first_val in next(iter(data["bad_videos"]))
    assert {s.video_id for s in data["val"].segments} == set(val_list.read_text().split()) - {first_val}
    train_list = copy / "epic_kitchens" / "splits" / "anticipation_train_videos.txt"
    train_list.write_text(train_list.read_text() + f"{first_val}\n")
    with pytest.raises(DatasetLayoutError, match="both anticipation split lists"):
        build_epic_datasets(cfg, progress=False)
