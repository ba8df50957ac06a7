"""Evaluation protocols on hand-made features with answers worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vthcl_lib.evaluate import (
    clip_and_video_accuracy,
    extract_features,
    knn_accuracy,
    knn_classify,
    linear_probe,
    recalibrate_batchnorm,
    retrieval_recall,
    topk_accuracy,
    video_level_predictions,
)
from vthcl_lib.models import build_encoder

# One video, three clips, two classes: one clip is over-confident in class 0, two clips mildly prefer class 1.
# Mean logits = (3.33, 1.33) -> class 0; mean softmax p0 = (s(10) + 2 s(-2)) / 3 = 0.41 -> class 1.
DISAGREE = torch.tensor([[[10.0, 0.0], [0.0, 2.0], [0.0, 2.0]]])


def test_video_level_averages_softmax_not_logits():
    probs = video_level_predictions(DISAGREE)
    expected0 = (1 / (1 + math.exp(-10)) + 2 / (1 + math.exp(2))) / 3
    assert probs.shape == (1, 2)
    assert probs[0, 0].item() == pytest.approx(expected0, abs=1e-6)
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert probs.argmax().item() == 1
    assert DISAGREE.mean(dim=1).argmax().item() == 0  # averaging logits would pick the other class


def test_video_level_rows_with_ids_match_the_3d_form_and_keep_first_seen_order():
    logits = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0))
    # rows of video "b" first, then "a", then "c", interleaved
    rows = torch.cat([logits[1, :2], logits[0, :2], logits[1, 2:], logits[2], logits[0, 2:]])
    ids = ["b", "b", "a", "a", "b", "b", "c", "c", "c", "c", "a", "a"]
    probs, order = video_level_predictions(rows, ids, return_ids=True)
    assert order == ["b", "a", "c"]
    assert torch.allclose(probs, video_level_predictions(logits)[[1, 0, 2]], atol=1e-6)


def test_topk_accuracy_counts_label_among_top_k():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
    labels = torch.tensor([2, 0, 0])
    assert topk_accuracy(scores, labels, k=1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, labels, k=2) == pytest.approx(2 / 3)
    assert topk_accuracy(scores, labels, k=3) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="k=4"):
        topk_accuracy(scores, labels, k=4)
    with pytest.raises(ValueError, match="labels"):
        topk_accuracy(scores, torch.tensor([0, 1]))


def test_clip_and_video_accuracy_labels_both_levels():
    # video 0 (label 1): the DISAGREE clips -> 2 of 3 clips right, video right;
    # video 1 (label 0): clips (0.2 vs 0) right, (0 vs 0.1) wrong, (0.3 vs 0) right -> video right
    logits = torch.cat([DISAGREE, torch.tensor([[[0.2, 0.0], [0.0, 0.1], [0.3, 0.0]]])])
    out = clip_and_video_accuracy(logits, torch.tensor([1, 0]))
    assert out == {"clip_top1": pytest.approx(4 / 6), "video_top1": pytest.approx(1.0), "num_clips": 6, "num_videos": 2}
    rows = logits.reshape(6, 2)
    out_rows = clip_and_video_accuracy(rows, torch.tensor([1, 1, 1, 0, 0, 0]), video_ids=[7, 7, 7, 9, 9, 9])
    assert out_rows == out
    with pytest.raises(ValueError, match="labels differ"):
        clip_and_video_accuracy(rows, torch.tensor([1, 0, 1, 0, 0, 0]), video_ids=[7, 7, 7, 9, 9, 9])


def _blobs(n_per_class: int, num_classes: int, dim: int, seed: int, spread: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(num_classes, dim) * 5.0
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = centres[y] + spread * torch.randn(len(y), dim, generator=g)
    return x, y


def test_linear_probe_solves_a_separable_problem():
    train_x, train_y = _blobs(30, 6, 10, seed=0)
    test_x, test_y = _blobs(20, 6, 10, seed=1)
    out = linear_probe(train_x, train_y, test_x, test_y, epochs=20, lr=0.05, weight_decay=0.0, batch_size=90, seed=0)
    assert out["top1"] == 1.0 and out["train_top1"] == 1.0 and out["top5"] == 1.0
    again = linear_probe(train_x, train_y, test_x, test_y, epochs=20, lr=0.05, weight_decay=0.0, batch_size=90, seed=0)
    assert again == out  # deterministic under the seed


def test_linear_probe_cannot_learn_random_labels():
    g = torch.Generator().manual_seed(3)
    train_x, test_x = torch.randn(200, 8, generator=g), torch.randn(400, 8, generator=g)
    train_y, test_y = torch.randint(0, 4, (200,), generator=g), torch.randint(0, 4, (400,), generator=g)
    out = linear_probe(train_x, train_y, test_x, test_y, epochs=50, lr=0.05, weight_decay=0.0, batch_size=None, seed=0)
    assert out["top1"] < 0.36  # chance is 0.25
    assert "top5" not in out  # only 4 classes
    with pytest.raises(ValueError, match="test_x"):
        linear_probe(train_x, train_y, test_x[:, :3], test_y)


def test_knn_weights_change_the_vote():
    # Query along the x axis. Class 0: one neighbour at cos 1. Class 1: two neighbours at cos 0.6.
    # Majority (3 nearest): class 1 (2 votes to 1). Weighted with T = 0.1: e^10 > 2 e^6 -> class 0.
    train_x = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8], [-1.0, 0.0]])
    train_y = torch.tensor([0, 1, 1, 0])
    query = torch.tensor([[2.0, 0.0]])
    assert knn_classify(train_x, train_y, query, k=3, temperature=None).tolist() == [1]
    assert knn_classify(train_x, train_y, query, k=3, temperature=0.1).tolist() == [0]
    # With a high temperature the weights are nearly equal and the majority wins again.
    assert knn_classify(train_x, train_y, query, k=3, temperature=100.0).tolist() == [1]
    # k = 1: the single nearest neighbour; k beyond the gallery is capped.
    queries = torch.tensor([[0.0, 1.0], [-3.0, 0.1]])
    assert knn_classify(train_x, train_y, queries, k=1).tolist() == [1, 0]
    assert knn_accuracy(train_x, train_y, queries, torch.tensor([1, 1]), k=1) == 0.5
    assert knn_classify(train_x, train_y, query, k=99, temperature=None).tolist() == [0]  # 2 vs 2: lower index


def test_retrieval_recall_exact_values():
    # Gallery on the unit circle (after centring; its mean is 0): angles 0, 90, 180, 270 deg.
    train_x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    train_y = torch.tensor([0, 1, 2, 3])
    # q0 near 0 deg (label 0): rank 1 hit. q1 at ~10 deg labelled 1: nearest 0 deg, then 90 deg -> hit at 2.
    # q2 at 180 deg labelled 0: order 180, 90/270, 0 -> hit only at 4.
    test_x = torch.tensor([[2.0, 0.1], [1.0, 0.17], [-1.0, 0.0]])
    test_y = torch.tensor([0, 1, 0])
    out = retrieval_recall(train_x, train_y, test_x, test_y, ks=(1, 2, 3, 4, 50))
    assert out == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3), "R@3": pytest.approx(2 / 3),
                   "R@4": pytest.approx(1.0), "R@50": pytest.approx(1.0)}


def test_retrieval_centres_with_the_train_mean():
    # Every gallery item shares a big offset; without centring all cosines are ~1 and ties rule.
    offset = torch.tensor([100.0, 100.0])
    train_x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]]) + offset
    test_x = torch.tensor([[-0.5, 0.0]]) + offset
    out = retrieval_recall(train_x, torch.tensor([0, 1]), test_x, torch.tensor([1]), ks=(1,))
    assert out["R@1"] == 1.0


class _ClipSet(Dataset):
    """Tiny in-memory labelled clips; ``clips`` per item > 1 gives test-mode [K, C, T, H, W] items."""

    def __init__(self, n: int, clips: int = 1, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        shape = (clips, 3, 2, 16, 16) if clips > 1 else (3, 2, 16, 16)
        self.data = torch.randn(n, *shape, generator=g)
        self.labels = torch.arange(n) % 3

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i], int(self.labels[i]), f"v{i}"


def test_extract_features_shapes_eval_mode_and_clip_averaging():
    torch.manual_seed(0)
    enc = build_encoder(18, "slow", base_width=4)
    enc.train()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    feats, labels, ids = extract_features(enc, _ClipSet(5), batch_size=2, device="cpu", progress=False)
    assert feats.shape == (5, enc.stage_channels["res5"]) and feats.dtype == torch.float32
    assert labels.tolist() == [0, 1, 2, 0, 1] and ids == [f"v{i}" for i in range(5)]
    assert enc.training  # mode restored
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())  # BN stats untouched (eval mode)

    multi = _ClipSet(3, clips=4)
    feats_k, _, _ = extract_features(enc, multi, level="res4", batch_size=2, device="cpu", progress=False)
    enc.eval()
    with torch.no_grad():
        manual = enc(multi.data[1])["res4"].mean(dim=(2, 3, 4)).mean(dim=0)
    assert feats_k.shape == (3, enc.stage_channels["res4"])
    assert torch.allclose(feats_k[1], manual, atol=1e-5)
    with pytest.raises(ValueError, match="level='res9'"):
        extract_features(enc, multi, level="res9", batch_size=2, device="cpu", progress=False)


class _BNOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm3d(3, momentum=0.1)

    def forward(self, x):
        return {"res5": self.bn(x)}


class _Plain(Dataset):
    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i], 0, i


def test_recalibrate_batchnorm_matches_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(8, 3, 2, 4, 4, generator=g) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1, 1) + 5.0
    model = _BNOnly().eval()
    model.bn.running_mean.fill_(-7.0)  # stale statistics that must disappear
    loader = DataLoader(_Plain(data), batch_size=4, shuffle=False)  # a DataLoader is used as given
    seen = recalibrate_batchnorm(model, loader, num_batches=None)
    assert seen == 8
    # Cumulative average over two equal batches = mean of the batch means (= the overall mean) and
    # mean of the per-batch unbiased variances.
    batches = [data[:4], data[4:]]
    per_channel = [b.transpose(0, 1).reshape(3, -1) for b in batches]
    mean = torch.stack([p.mean(dim=1) for p in per_channel]).mean(dim=0)
    var = torch.stack([p.var(dim=1, unbiased=True) for p in per_channel]).mean(dim=0)
    assert torch.allclose(model.bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(model.bn.running_mean, data.transpose(0, 1).reshape(3, -1).mean(dim=1), atol=1e-5)
    assert torch.allclose(model.bn.running_var, var, atol=1e-4)
    assert model.bn.momentum == 0.1 and not model.training and not model.bn.training  # restored

    # num_batches limits the data used: one batch -> that batch's statistics exactly
    recalibrate_batchnorm(model, loader, num_batches=1)
    assert torch.allclose(model.bn.running_mean, per_channel[0].mean(dim=1), atol=1e-5)
    assert torch.allclose(model.bn.running_var, per_channel[0].var(dim=1, unbiased=True), atol=1e-4)
    # A dataset is shuffled into batches; the overall mean does not depend on the order.
    assert recalibrate_batchnorm(model, _Plain(data), num_batches=None, batch_size=4, seed=1) == 8
    assert torch.allclose(model.bn.running_mean, mean, atol=1e-5)
    with pytest.raises(ValueError, match="num_batches"):
        recalibrate_batchnorm(model, _Plain(data), num_batches=0)


def test_recalibrate_batchnorm_on_an_encoder_changes_stats_but_not_weights():
    torch.manual_seed(0)
    enc = build_encoder(18, "slow", base_width=4)
    weights = {k: v.clone() for k, v in enc.state_dict().items() if "running" not in k and "num_batches" not in k}
    recalibrate_batchnorm(enc, _ClipSet(4, clips=2), num_batches=2, batch_size=2)
    assert not torch.allclose(enc.stem.bn.running_mean, torch.zeros_like(enc.stem.bn.running_mean))
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in weights.items())
    assert enc.training and enc.stem.bn.momentum == 0.1


def test_frozen_features_extract_once_then_read_the_cache(tmp_path):
    from vthcl_lib.evaluate import frozen_features

    torch.manual_seed(0)
    enc = build_encoder(18, "slow", base_width=4)
    train, test = _ClipSet(6, clips=2, seed=1), _ClipSet(4, clips=2, seed=2)
    cache = tmp_path / "f" / "feats.pt"
    first = frozen_features(enc, train, test, batch_size=3, device="cpu", cache_path=cache, progress=False)
    assert first["train_x"].shape == (6, enc.stage_channels["res5"]) and first["test_x"].shape[0] == 4
    torch.testing.assert_close(first["train_x"], extract_features(enc, train, batch_size=3, device="cpu", progress=False)[0])
    with torch.no_grad():  # a changed encoder is not consulted again: the cached features come back
        for p in enc.parameters():
            p.add_(1.0)
    again = frozen_features(enc, train, test, batch_size=3, device="cpu", cache_path=cache, progress=False)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert sorted(p.name for p in cache.parent.iterdir()) == ["feats.pt"]  # no temp file left behind
