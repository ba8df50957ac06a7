"""3D RoIAlign against a naive per-box reference, and frame-level AP on hand-made detections."""
from __future__ import annotations

import math

import pytest
import torch

from vthcl_lib.detection import average_precision, box_iou, frame_ap, roi_align_3d


def _bilinear(fmap, y, x):
    """One sample, written plainly: 0 beyond one cell outside, border-clamped within it."""
    h, w = fmap.shape[-2:]
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return torch.zeros(fmap.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = min(int(math.floor(y)), h - 1), min(int(math.floor(x)), w - 1)
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    if y0 >= h - 1:
        y = float(y0)
    if x0 >= w - 1:
        x = float(x0)
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * fmap[:, y0, x0] + (1 - ly) * lx * fmap[:, y0, x1]
            + ly * (1 - lx) * fmap[:, y1, x0] + ly * lx * fmap[:, y1, x1])


def _reference(features, rois, out, scale, ratio):
    fmap = features.mean(dim=2)
    result = torch.zeros(len(rois), fmap.shape[1], out, out, dtype=fmap.dtype)
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        x1, y1, x2, y2 = (v * scale - 0.5 for v in (x1, y1, x2, y2))
        bh, bw = (y2 - y1) / out, (x2 - x1) / out
        for i in range(out):
            for j in range(out):
                acc = 0
                for si in range(ratio):
                    for sj in range(ratio):
                        y = y1 + i * bh + (si + 0.5) * bh / ratio
                        x = x1 + j * bw + (sj + 0.5) * bw / ratio
                        acc = acc + _bilinear(fmap[int(b)], y, x)
                result[k, :, i, j] = acc / ratio ** 2
    return result


def test_roi_align_matches_the_naive_reference():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 4, 9, 11, generator=g, dtype=torch.float64)
    rois = torch.tensor([[0, 10.0, 8.0, 90.0, 70.0], [1, -20.0, -10.0, 40.0, 30.0],  # partly outside
                         [1, 150.0, 120.0, 200.0, 180.0], [0, 33.0, 33.0, 34.0, 34.0]],  # beyond the map; tiny
                        dtype=torch.float64)
    out = roi_align_3d(features, rois, 4, spatial_scale=1 / 8, sampling_ratio=2)
    assert out.shape == (4, 3, 4, 4)
    torch.testing.assert_close(out, _reference(features, rois, 4, 1 / 8, 2))
    assert out[2].abs().max() == 0  # a box entirely off the map pools nothing


def test_roi_align_reads_a_linear_ramp_exactly_and_pools_time():
    h, w = 12, 16
    ramp = torch.arange(w, dtype=torch.float64).expand(h, w)  # value = column index
    time_varying = torch.stack([ramp + t for t in (-1.0, 1.0)])  # mean over time is the ramp
    features = time_varying[None, None]  # [1, 1, 2, H, W]
    rois = torch.tensor([[0, 2.0, 2.0, 10.0, 6.0]], dtype=torch.float64)
    out = roi_align_3d(features, rois, (1, 4), spatial_scale=1.0, sampling_ratio=3)
    centres = torch.tensor([3.0, 5.0, 7.0, 9.0]) - 0.5  # bin centres in the half-pixel convention
    torch.testing.assert_close(out[0, 0, 0], centres.double())
    with pytest.raises(ValueError, match="batch indices"):
        roi_align_3d(features, torch.tensor([[1, 0.0, 0.0, 4.0, 4.0]]))
    with pytest.raises(ValueError, match=r"\[B, C, T, H, W\]"):
        roi_align_3d(features[0], rois)


def test_box_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 1.0, 0.0]]))


def test_frame_ap_on_hand_made_detections():
    gt = [("f1", (0, 0, 10, 10), 0), ("f2", (0, 0, 10, 10), 0), ("f1", (20, 20, 30, 30), 1)]
    dets = [("f1", (0, 0, 10, 10), 0, 0.9),    # hit
            ("f1", (0, 0, 10, 10), 0, 0.85),   # the same box again: its GT is taken, a false positive
            ("f2", (1, 1, 10, 10), 0, 0.7),    # IoU 0.81: hit
            ("f2", (50, 50, 60, 60), 0, 0.95),  # highest score, wrong place: false positive
            ("f1", (20, 20, 30, 30), 1, 0.5),  # class 1: one hit
            ("f3", (0, 0, 1, 1), 2, 0.9)]      # a class without ground truth: ignored
    # class 0 in score order: FP, hit, FP, hit -> precision 0, 1/2, 1/3, 1/2 at recall 0, .5, .5, 1
    # monotone precision: 1/2 on (0, .5] and 1/2 on (.5, 1] -> AP = 0.5
    out = frame_ap(dets, gt)
    assert out["per_class"] == pytest.approx({0: 0.5, 1: 1.0})
    assert out["mAP"] == pytest.approx(0.75)
    # at IoU 0.9 the shifted box misses: FP, hit, FP, FP -> best precision 1/2 up to recall 1/2 -> AP = 0.25
    assert frame_ap(dets, gt, iou_threshold=0.9)["per_class"][0] == pytest.approx(0.25)


def test_average_precision_voc_rule():
    # hit, miss, hit over 2 ground truths: precision 1, 1/2, 2/3 -> monotone 1, 2/3, 2/3 -> AP = .5 * 1 + .5 * 2/3
    assert average_precision([0.9, 0.8, 0.7], [True, False, True], 2) == pytest.approx(0.5 + 1 / 3)
    assert average_precision([], [], 3) == 0.0
    with pytest.raises(ValueError, match="num_ground_truth"):
        average_precision([0.5], [True], 0)


def test_crowded_frame_official_rule_differs_from_best_unmatched():
    # One keyframe, one class, two true boxes side by side: A = (0, 0, 10, 10), B = (4, 0, 14, 10).
    # d1 = A exactly (0.9): IoU 1 with A -> hit, A taken.
    # d2 = (1, 0, 11, 10) (0.8): IoU with A = 90 / 110 = 0.818, with B = 70 / 130 = 0.538.
    #   Official: its best box is A (taken) -> false positive, although B would overlap >= 0.5.
    #   Best-unmatched (the old rule): takes B -> hit.
    # d3 = B exactly (0.7): official: best box B, free -> hit. Old rule: A and B taken -> false positive.
    gt = [("f", (0, 0, 10, 10), 3), ("f", (4, 0, 14, 10), 3)]
    dets = [("f", (1, 0, 11, 10), 3, 0.8), ("f", (4, 0, 14, 10), 3, 0.7), ("f", (0, 0, 10, 10), 3, 0.9)]
    # official, in score order: hit, FP, hit -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    # -> AP = 1/2 * 1 + 1/2 * 2/3 = 0.8333 (the old rule: hit, hit, FP -> AP = 1.0)
    out = frame_ap(dets, gt)
    assert out["per_class"][3] == pytest.approx(0.5 + 1 / 3) and out["mAP"] == pytest.approx(0.5 + 1 / 3)
    from vthcl_lib.bench import frame_ap_before
    assert frame_ap_before(dets, gt)["per_class"][3] == pytest.approx(1.0)


def test_frame_ap_official_details_by_hand():
    gt = [("a", (0, 0, 10, 10), 1), ("a", (20, 0, 30, 10), 1), ("b", (0, 0, 10, 10), 1), ("b", (0, 0, 10, 10), 2)]
    dets = [("a", (20, 0, 30, 10), 1, 0.6),  # listed first but scored lower: matching goes by score
            ("a", (21, 0, 30, 10), 1, 0.8),  # IoU 0.9 with the second box: the hit, 0.6 then finds it taken
            ("a", (5, 5, 5, 9), 1, 0.99),    # no width: dropped before matching, not a false positive
            ("c", (0, 0, 10, 10), 1, 0.7),   # a keyframe without ground truth: false positive
            ("b", (0, 0, 10, 10), 7, 0.9)]   # a class without ground truth: ignored
    # class 1 by score: 0.8 hit, 0.7 FP, 0.6 FP over 3 true boxes -> precision 1 at recall 1/3 -> AP = 1/3;
    # class 2: no detection -> AP 0; mAP = (1/3 + 0) / 2
    out = frame_ap(dets, gt)
    assert out["per_class"] == pytest.approx({1: 1 / 3, 2: 0.0}) and out["mAP"] == pytest.approx(1 / 6)


def _iou64(a, b):
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _official_reference(detections, ground_truth, iou_threshold=0.5):
    """The AVA evaluator written plainly: per keyframe sort by score, per class match to argmax IoU."""
    frames = list(dict.fromkeys(d[0] for d in detections))  # keyframes in order of first detection
    classes = sorted({g[2] for g in ground_truth})
    scores = {c: [] for c in classes}
    labels = {c: [] for c in classes}
    for frame in frames:
        mine = sorted([d for d in detections if d[0] == frame], key=lambda d: -d[3])
        for c in classes:
            boxes = [d[1] for d in mine if d[2] == c and d[1][0] < d[1][2] and d[1][1] < d[1][3]]
            gts = [g[1] for g in ground_truth if g[0] == frame and g[2] == c]
            taken = [False] * len(gts)
            for box, score in zip(boxes, [d[3] for d in mine if d[2] == c and d[1][0] < d[1][2] and d[1][1] < d[1][3]]):
                hit = False
                if gts:
                    ious = [_iou64(box, g) for g in gts]
                    best = int(np.argmax(ious))
                    if ious[best] >= iou_threshold and not taken[best]:
                        taken[best] = hit = True
                scores[c].append(score)
                labels[c].append(hit)
    num_gt = {c: sum(g[2] == c for g in ground_truth) for c in classes}
    return {c: average_precision(scores[c], labels[c], num_gt[c]) for c in classes}


@pytest.mark.parametrize("tied", [True, False])
def test_frame_ap_equals_the_plain_official_rule_on_random_crowded_frames(tied):
    rng = np.random.default_rng(0)
    gt, dets = [], []
    for f in range(40):
        people = rng.uniform(0, 60, size=(rng.integers(1, 7), 2))
        boxes = [(x, y, x + 20 + rng.uniform(0, 10), y + 30 + rng.uniform(0, 10)) for x, y in people]
        for box in boxes:
            for c in rng.choice(5, size=rng.integers(1, 3), replace=False):
                gt.append((f"k{f}", box, int(c)))
        for box in boxes + [tuple(b + rng.normal(0, 4, 4)) for b in np.asarray(boxes)]:
            for c in range(6):
                score = rng.choice([rng.random(), 0.5]) if tied else rng.random()  # 0.5: ties across keyframes
                dets.append((f"k{f}", tuple(float(v) for v in box), c, float(score)))
    rng.shuffle(dets)
    dets = [tuple(d) for d in dets]
    out = frame_ap(dets, gt)
    reference = _official_reference(dets, gt)
    assert out["per_class"] == pytest.approx(reference, abs=1e-12)
    assert out["mAP"] == pytest.approx(np.mean(list(reference.values())))
    assert out["mAP"] != pytest.approx(frame_ap(dets, gt, iou_threshold=0.7)["mAP"])


def test_sort_and_keyframe_numbering_helpers_agree_with_their_plain_definitions():
    from vthcl_lib.detection import _frame_codes, _group_then_score_order

    rng = np.random.default_rng(1)
    scores = rng.choice([0.1, 0.5, 0.7, 0.9], size=500)  # many ties: input order must survive
    for keys in (rng.integers(0, 40, 500), rng.integers(0, 1 << 40, 500)):  # radix path and the general one
        assert np.array_equal(_group_then_score_order(keys, scores), np.lexsort((-scores, keys)))
    det, gt = np.array([0, 0, 1, 0, 2]), np.array([2, 7, 1, 7, -3])  # 7 and -3: keyframes without detections
    assert [c.tolist() for c in _frame_codes(det, gt)] == [[0, 0, 1, 0, 2], [2, 3, 1, 3, 4]]
    det, gt = np.array([3, 3, 5, 9, 9]), np.array([9, 4, 3, 4, 1])  # sorted ids with gaps (the fast path)
    assert [c.tolist() for c in _frame_codes(det, gt)] == [[0, 0, 1, 2, 2], [2, 3, 0, 3, 4]]
    det, gt = np.array(["b", "a", "b"]), np.array(["c", "a"])
    assert [c.tolist() for c in _frame_codes(det, gt)] == [[0, 1, 0], [2, 1]]


def test_frame_ap_names_bad_input():
    with pytest.raises(ValueError, match="detection 0: box"):
        frame_ap([("f", (0, 0, 1), 0, 0.5)], [("f", (0, 0, 1, 1), 0)])
    with pytest.raises(ValueError, match=r"detection 0 is .*expected 4 fields"):
        frame_ap([("f", (0, 0, 1, 1), 0)], [])
    with pytest.raises(ValueError, match="ground-truth box 0 of keyframe"):
        frame_ap([], [("f", (2, 0, 1, 1), 0)])
    with pytest.raises(ValueError, match="detection scores holds NaN"):
        frame_ap([("f", (0, 0, 1, 1), 0, float("nan"))], [("f", (0, 0, 1, 1), 0)])
    with pytest.raises(ValueError, match="iou_threshold"):
        frame_ap([], [], iou_threshold=0.0)


# ------------------------------------------------------------------ the detector on the synthetic AVA-style set

import numpy as np  # noqa: E402

from vthcl_lib.config import resolve_config  # noqa: E402
from vthcl_lib.datasets import AvaKeyframe, build_ava_datasets, collate_keyframes  # noqa: E402
from vthcl_lib.detection import (  # noqa: E402
    ActionDetector,
    detection_encoder_overrides,
    evaluate_detector,
    train_detector,
)
from vthcl_lib.finetune import init_slow_encoder  # noqa: E402
from vthcl_lib.synthetic_transfer import ensure_transfer_sets  # noqa: E402


@pytest.fixture(scope="module")
def ava_cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("ava_ci")
    cfg = resolve_config("ci", data_root=str(root), run_dir=str(root / "runs"))
    ensure_transfer_sets(root, cfg.synthetic, sets=("ava",), progress=False)
    return cfg


def test_detection_encoder_keeps_res5_at_stride_16_with_the_same_weights(ava_cfg):
    detector_encoder, _ = init_slow_encoder(ava_cfg, "random", seed=0, **detection_encoder_overrides(ava_cfg))
    plain, _ = init_slow_encoder(ava_cfg, "random", seed=0)
    x = torch.randn(1, 3, 4, 48, 48)
    assert detector_encoder(x)["res5"].shape[-2:] == (3, 3) and plain(x)["res5"].shape[-2:] == (2, 2)
    assert {k: v.shape for k, v in detector_encoder.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    assert [block.conv_b.dilation for block in detector_encoder.res5] == [(1, 2, 2)] * 2  # pySlowFast's place for it


def test_detector_scores_every_box_from_its_region(ava_cfg):
    encoder, _ = init_slow_encoder(ava_cfg, "random", seed=0, **detection_encoder_overrides(ava_cfg))
    model = ActionDetector(encoder, 5, roi_size=3, dropout=0.0).eval()
    clips = torch.randn(2, 3, 4, 48, 48)
    rois = torch.tensor([[0, 0.0, 0.0, 0.5, 0.5], [1, 0.5, 0.5, 1.0, 1.0], [1, 0.0, 0.0, 0.5, 0.5]])
    logits = model(clips, rois)
    assert logits.shape == (3, 5)
    alone = model(clips[1:], torch.tensor([[0, 0.5, 0.5, 1.0, 1.0]]))
    torch.testing.assert_close(alone[0], logits[1], atol=1e-5, rtol=1e-5)  # a box sees only its own clip


def test_ava_dataset_flips_boxes_with_the_clip_and_collates_rois(ava_cfg):
    data = build_ava_datasets(ava_cfg, progress=False)
    train = data["train"]
    assert data["val_boxes"] == "detected" and len(data["class_ids"]) == 8
    clip, boxes, targets, key = train[0]
    keyframe = train.by_key[key]
    assert clip.shape == (3, ava_cfg.data.window // ava_cfg.data.tau, 48, 48)
    assert torch.equal(targets.sum(dim=1), torch.ones(len(boxes)))  # one action per synthetic actor
    plain = torch.from_numpy(keyframe.boxes)
    mirrored = torch.stack([1 - plain[:, 2], plain[:, 1], 1 - plain[:, 0], plain[:, 3]], dim=1)
    flips = set()
    for epoch in range(6):
        train.set_epoch(epoch)
        _, b, _, _ = train[0]
        flips.add(bool(torch.allclose(b, mirrored)) and not torch.allclose(b, plain))
        assert torch.allclose(b, plain) or torch.allclose(b, mirrored)
    assert flips == {True, False}  # both seen over a few epochs
    clips, rois, stacked, keys = collate_keyframes([train[0], train[1]])
    assert rois.shape == (len(train[0][1]) + len(train[1][1]), 5) and set(rois[:, 0].tolist()) == {0.0, 1.0}
    assert stacked.shape[0] == rois.shape[0] and len(keys) == 2


def test_evaluate_detector_gives_map_1_for_perfect_scores_and_lower_when_swapped():
    gt = [AvaKeyframe("v", 1, np.array([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]], np.float32),
                      (frozenset({1}), frozenset({2})), np.ones(2, np.float32))]
    boxes = gt[0].boxes
    perfect = [("v,0001", boxes, np.array([[0.9, 0.1], [0.2, 0.8]]))]
    assert evaluate_detector(perfect, gt, [1, 2])["mAP"] == pytest.approx(1.0)
    swapped = [("v,0001", boxes, np.array([[0.1, 0.9], [0.8, 0.2]]))]
    # each class's true box ranks second of two: precision 1/2 at full recall
    assert evaluate_detector(swapped, gt, [1, 2])["mAP"] == pytest.approx(0.5)


def test_evaluate_detector_equals_frame_ap_on_the_same_rows():
    rng = np.random.default_rng(2)
    truth, predictions = [], []
    for t in range(1, 6):
        boxes = np.sort(rng.uniform(0, 1, (3, 2, 2)), axis=1).transpose(0, 2, 1).reshape(3, 4)[:, [0, 2, 1, 3]]
        actions = tuple(frozenset(rng.choice([1, 2, 5, 9], size=2, replace=False).tolist()) for _ in range(3))
        truth.append(AvaKeyframe("v", t, boxes.astype(np.float32), actions, np.ones(3, np.float32)))
        noisy = np.clip(boxes + rng.normal(0, 0.05, boxes.shape), 0, 1)
        predictions.append((f"v,{t:04d}", noisy, rng.random((3, 3))))
    class_ids = [1, 2, 5]  # 9 is not scored: its true rows are left out
    rows = [(key, box, class_ids[c], float(score[c])) for key, boxes, scores in predictions
            for box, score in zip(boxes, scores) for c in range(3)]
    gt = [(f"v,{k.timestamp:04d}", box, a) for k in truth for box, acts in zip(k.boxes, k.actions) for a in acts
          if a in class_ids]
    assert evaluate_detector(predictions, truth, class_ids) == frame_ap(rows, gt)


def test_train_detector_runs_the_schedule_and_reports_map(ava_cfg):
    encoder, _ = init_slow_encoder(ava_cfg, "random", seed=0, **detection_encoder_overrides(ava_cfg))
    record = train_detector(ava_cfg, encoder, seed=0, progress=False)
    assert [h["lr"] for h in record["history"]] == pytest.approx([0.05, 0.005])  # /10 at epoch 1
    assert 0.0 <= record["mAP"] <= 1.0 and set(record["per_class"]) <= {m.replace("_", " ") for m in
                                                                         ("diagonal_slide", "flicker", "horizontal_slide",
                                                                          "orbit", "spin", "vertical_slide", "zigzag",
                                                                          "zoom_pulse")}
    assert record["mAP"] == pytest.approx(np.mean(list(record["per_class"].values())))
    assert record["num_train"] > 0 and record["num_val"] > 0 and np.isfinite(record["history"][-1]["loss"])


def test_ava_builder_scores_only_annotated_keyframes_with_confident_person_boxes(ava_cfg, tmp_path):
    from dataclasses import replace

    from vthcl_lib.datasets import DatasetLayoutError, read_ava_excluded_timestamps

    data = build_ava_datasets(ava_cfg, progress=False)
    root = ava_cfg.data.data_root
    excluded = read_ava_excluded_timestamps(f"{root}/ava/annotations/ava_val_excluded_timestamps_v2.2.csv")
    val_keys = {(k.video_id, k.timestamp) for k in data["val"].keyframes}
    assert val_keys == {(k.video_id, k.timestamp) for k in data["val_ground_truth"]}
    assert not val_keys & excluded and excluded
    assert all((k.scores >= ava_cfg.detection.proposal_score_threshold).all() for k in data["val"].keyframes)
    assert all(not any(k.actions) for k in data["val"].keyframes)  # person boxes carry no actions
    with pytest.raises(DatasetLayoutError, match="prepare_ava"):
        build_ava_datasets(replace(ava_cfg, data=replace(ava_cfg.data, data_root=str(tmp_path))), progress=False)
