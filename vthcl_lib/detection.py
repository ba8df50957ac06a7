"""AVA-style action detection pieces: 3D RoIAlign and frame-level mAP (VTHCL_SPEC c.4).

Taught in notebook ``08_action_detection``. Pure torch, no compiled ops:

* :func:`roi_align_3d` pools a clip's feature map over time, then bilinearly samples a fixed grid
  inside every person box (Mask R-CNN's RoIAlign with ``aligned=True`` half-pixel coordinates);
* :func:`box_iou` and :func:`frame_ap` score detections as the AVA protocol does: per class,
  detections sorted by score are matched greedily to unmatched ground-truth boxes of the same
  keyframe at IoU >= 0.5, and the average precision is the area under the precision-recall curve
  with precision made monotone (the PASCAL VOC 2010+ rule of the AVA evaluation code); the mAP is the
  mean over classes that have ground truth;
* :class:`ActionDetector` is the paper's detector: the slow encoder with res5 at spatial stride 1
  and dilation 2, RoIAlign on its temporally pooled res5 map, max pooling over the RoI grid,
  dropout and a per-class linear layer whose sigmoid scores each action (binary cross-entropy);
* :func:`train_detector` trains it on the ground-truth boxes with the paper's schedule (SGD, lr
  divided by 10 at fixed epochs, weight decay 1e-7, BatchNorm in train mode, not frozen) and
  :func:`evaluate_detector` scores the validation person boxes and computes the frame mAP.
"""
from __future__ import annotations

from typing import Any, Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vthcl_lib.config import Config
from vthcl_lib.datasets import AvaKeyframe, build_ava_datasets, collate_keyframes, keyframe_key
from vthcl_lib.environment import resolve_device
from vthcl_lib.evaluate import autocast_context, downstream_loader
from vthcl_lib.finetune import StepSchedule, train_with_schedule
from vthcl_lib.models import ResNet3D
from vthcl_lib.progress import progress_bar


def _check_boxes(boxes: torch.Tensor, name: str, columns: int) -> torch.Tensor:
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != columns:
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"{name} has shape {shape}; expected [K, {columns}]")
    return boxes


def roi_align_3d(features: torch.Tensor, rois: torch.Tensor, output_size: int | tuple[int, int] = 7, *,
                 spatial_scale: float = 1.0, sampling_ratio: int = 2) -> torch.Tensor:
    """Temporally average-pool ``features`` ``[B, C, T, H, W]``, then RoIAlign every box: ``[K, C, oh, ow]``.

    Notebook ``08_action_detection``. ``rois`` is ``[K, 5]``: ``(batch_index, x1, y1, x2, y2)`` in
    input pixels; ``spatial_scale`` maps them onto the feature map (1/16 for res5 with spatial
    stride 1 and dilation 2, the detection encoder). Each of the ``oh x ow`` bins averages
    ``sampling_ratio^2`` bilinear samples; a sample more than one cell outside the map counts as 0,
    one within a cell of the border reads the border (torchvision's convention).
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 5:
        raise ValueError(f"features has shape {tuple(getattr(features, 'shape', ()))}; expected [B, C, T, H, W]")
    rois = _check_boxes(rois, "rois", 5)
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if out_h < 1 or out_w < 1 or sampling_ratio < 1 or spatial_scale <= 0:
        raise ValueError(f"output_size={output_size}, sampling_ratio={sampling_ratio}, spatial_scale={spatial_scale}: "
                         "expected positive values")
    fmap = features.mean(dim=2)  # [B, C, H, W]: the temporal pooling of the detection head
    batch, channels, height, width = fmap.shape
    idx = rois[:, 0].long()
    if rois.shape[0] and (int(idx.min()) < 0 or int(idx.max()) >= batch):
        raise ValueError(f"rois' batch indices must lie in [0, {batch}); got {idx.tolist()}")
    box = rois[:, 1:].to(fmap.dtype) * spatial_scale - 0.5  # aligned: pixel centres at +0.5
    x1, y1, x2, y2 = box.unbind(dim=1)
    bin_w, bin_h = (x2 - x1) / out_w, (y2 - y1) / out_h
    steps_w = (torch.arange(out_w * sampling_ratio, dtype=fmap.dtype, device=fmap.device) + 0.5) / sampling_ratio
    steps_h = (torch.arange(out_h * sampling_ratio, dtype=fmap.dtype, device=fmap.device) + 0.5) / sampling_ratio
    xs = x1[:, None] + steps_w[None, :] * bin_w[:, None]  # [K, ow*s]
    ys = y1[:, None] + steps_h[None, :] * bin_h[:, None]  # [K, oh*s]

    def corners(coord: torch.Tensor, size: int):
        outside = (coord < -1.0) | (coord > size)
        coord = coord.clamp(min=0.0)
        low = coord.floor().long().clamp(max=size - 1)
        high = (low + 1).clamp(max=size - 1)
        coord = torch.where(low >= size - 1, low.to(coord.dtype), coord)
        frac = coord - low.to(coord.dtype)
        return low, high, frac, outside

    y_lo, y_hi, fy, y_out = corners(ys, height)
    x_lo, x_hi, fx, x_out = corners(xs, width)
    flat = fmap[idx].flatten(2)  # [K, C, H*W]

    def gather(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        pos = (yi[:, :, None] * width + xi[:, None, :]).flatten(1)  # [K, Py*Px]
        return flat.gather(2, pos[:, None, :].expand(-1, channels, -1)).view(len(idx), channels, yi.shape[1], xi.shape[1])

    wy, wx = fy[:, None, :, None], fx[:, None, None, :]
    value = ((1 - wy) * (1 - wx) * gather(y_lo, x_lo) + (1 - wy) * wx * gather(y_lo, x_hi)
             + wy * (1 - wx) * gather(y_hi, x_lo) + wy * wx * gather(y_hi, x_hi))
    value = value.masked_fill((y_out[:, None, :, None] | x_out[:, None, None, :]), 0.0)
    value = value.view(len(idx), channels, out_h, sampling_ratio, out_w, sampling_ratio)
    return value.mean(dim=(3, 5))


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of ``[N, 4]`` and ``[M, 4]`` boxes ``(x1, y1, x2, y2)``: ``[N, M]`` (notebook ``08_action_detection``)."""
    a, b = _check_boxes(a, "a", 4).float(), _check_boxes(b, "b", 4).float()
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def _ap_from_ranked(hits: np.ndarray, num_ground_truth: int) -> float:
    """VOC area under the monotone precision-recall curve of hits listed best score first (all points)."""
    hits = hits.astype(np.int64)
    tp, fp = np.cumsum(hits), np.cumsum(1 - hits)
    precision = np.concatenate([[0.0], tp.astype(float) / (tp + fp), [0.0]])
    recall = np.concatenate([[0.0], tp.astype(float) / num_ground_truth, [1.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # each precision: the best at any higher recall
    changes = np.nonzero(recall[1:] != recall[:-1])[0] + 1
    return float(np.sum((recall[changes] - recall[changes - 1]) * precision[changes]))


def _voc_ap(scores: np.ndarray, is_hit: np.ndarray, num_ground_truth: int) -> float:
    """The AVA code's ``compute_precision_recall`` + ``compute_average_precision`` (VOC, all points)."""
    if scores.size == 0:
        return 0.0
    # np.argsort reversed, not a stable descending sort: the official order among tied scores
    return _ap_from_ranked(is_hit[np.argsort(scores)[::-1]], num_ground_truth)


def average_precision(scores: Sequence[float], is_hit: Sequence[bool], num_ground_truth: int) -> float:
    """Area under the precision-recall curve with monotone precision (VOC 2010+; notebook ``08_action_detection``).

    Every detection is a point of the curve (no 11-point sampling); tied scores are ordered as
    the AVA evaluation code orders them (``np.argsort`` reversed).
    """
    if num_ground_truth < 1:
        raise ValueError(f"num_ground_truth={num_ground_truth}; expected >= 1")
    scores_arr, hits = np.asarray(scores, dtype=np.float64).reshape(-1), np.asarray(is_hit, dtype=bool).reshape(-1)
    if scores_arr.shape != hits.shape:
        raise ValueError(f"scores has {scores_arr.size} entries and is_hit {hits.size}; expected the same number")
    if hits.sum() > num_ground_truth:
        raise ValueError(f"{int(hits.sum())} hits for num_ground_truth={num_ground_truth}; expected at most that many")
    return _voc_ap(scores_arr, hits, int(num_ground_truth))


def _first_appearance_codes(frames: np.ndarray) -> np.ndarray:
    _, first, inverse = np.unique(frames, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def _frame_codes(det_frames: np.ndarray, gt_frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keyframe ids as 0..F-1 numbered by first appearance, detections first (the AVA code's order)."""
    if (det_frames.dtype.kind in "iu" and gt_frames.dtype.kind in "iu" and len(det_frames)
            and np.all(det_frames[1:] >= det_frames[:-1])):
        # detections listed keyframe after keyframe with growing ids: first appearance = sorted order (no sort)
        new = np.concatenate([[True], det_frames[1:] != det_frames[:-1]])
        det_codes = np.cumsum(new) - 1
        ids = det_frames[new]
        pos = np.minimum(np.searchsorted(ids, gt_frames), len(ids) - 1)
        found = ids[pos] == gt_frames
        gt_codes = np.where(found, pos, 0).astype(np.int64)
        if not found.all():  # keyframes with ground truth only come after
            gt_codes[~found] = len(ids) + _first_appearance_codes(gt_frames[~found])
        return det_codes.astype(np.int64), gt_codes
    if not len(det_frames) + len(gt_frames):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    codes = _first_appearance_codes(np.concatenate([det_frames, gt_frames]))
    return codes[:len(det_frames)], codes[len(det_frames):]


def _as_array(value: Any, name: str, dtype: Any, shape_tail: tuple[int, ...], length: int | None) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected numbers ({err})") from None
    if arr.ndim != 1 + len(shape_tail) or arr.shape[1:] != shape_tail or (length is not None and len(arr) != length):
        want = f"[{length if length is not None else 'K'}{''.join(f', {t}' for t in shape_tail)}]"
        raise ValueError(f"{name} has shape {arr.shape}; expected {want}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return arr


def _pair_iou(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of row i of ``det`` with row i of ``gt``: float64, the AVA code's formula (no +1, no clamping)."""
    inter = (np.maximum(0.0, np.minimum(det[:, 3], gt[:, 3]) - np.maximum(det[:, 1], gt[:, 1]))
             * np.maximum(0.0, np.minimum(det[:, 2], gt[:, 2]) - np.maximum(det[:, 0], gt[:, 0])))
    area_det = (det[:, 3] - det[:, 1]) * (det[:, 2] - det[:, 0])
    area_gt = (gt[:, 3] - gt[:, 1]) * (gt[:, 2] - gt[:, 0])
    return inter / (area_det + area_gt - inter)


def _group_then_score_order(keys: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``np.lexsort((-scores, keys))``: by key, then descending score, ties in input order; faster.

    Two stable sorts, least significant first; keys below 2^32 go through two 16-bit radix passes.
    """
    order = np.argsort(-scores, kind="stable")
    keys = keys[order]
    if len(keys) and 0 <= keys.min() and keys.max() < 1 << 32:
        for shift in (0, 16):
            step = np.argsort(((keys >> shift) & 0xFFFF).astype(np.uint16), kind="stable")  # radix sort
            order, keys = order[step], keys[step]
        return order
    return order[np.argsort(keys, kind="stable")]


def match_detections(det_keys: np.ndarray, det_boxes: np.ndarray, gt_keys: np.ndarray, gt_boxes: np.ndarray, *,
                     iou_threshold: float = 0.5, max_pairs: int = 1 << 22) -> np.ndarray:
    """True-positive flags of detections under the AVA evaluator's matching rule (notebook ``08_action_detection``).

    ``det_keys`` / ``gt_keys`` are one integer per box naming its (class, keyframe) group; the
    detections must already be in processing order (within a group: descending score) and the
    ground truth sorted by key. A detection takes the ground-truth box of its group with the
    highest IoU among ALL of them (the first on ties); it is a hit if that IoU reaches
    ``iou_threshold`` and no earlier detection took the same box, otherwise a false positive -- even
    when another, free box would have overlapped enough (``per_image_evaluation.py``,
    ``_compute_tp_fp_for_single_class``). As the rule never looks at which boxes are free, a hit is
    exactly the first detection whose best box is that box: no sequential loop is needed. IoUs are
    computed for every (detection, box of its group) pair at once, ``max_pairs`` at a time.
    """
    start = np.searchsorted(gt_keys, det_keys, side="left")
    count = np.searchsorted(gt_keys, det_keys, side="right") - start
    best_iou = np.full(len(det_keys), -1.0)
    best_gt = np.full(len(det_keys), -1, dtype=np.int64)
    cum = np.cumsum(count)
    first = 0
    while first < len(det_keys):
        # the chunk ends where its pairs pass max_pairs (at least one detection, so it always advances)
        done = cum[first - 1] if first else 0
        last = max(first + 1, int(np.searchsorted(cum, done + max_pairs, side="right")))
        idx = np.arange(first, last)
        idx = idx[count[idx] > 0]
        first = last
        if not len(idx):
            continue
        n = count[idx]
        seg = np.concatenate([[0], np.cumsum(n)[:-1]])
        gt_idx = np.repeat(start[idx], n) + np.arange(int(n.sum())) - np.repeat(seg, n)
        iou = _pair_iou(np.repeat(det_boxes[idx], n, axis=0), gt_boxes[gt_idx])
        top = np.maximum.reduceat(iou, seg)
        position = np.where(iou == np.repeat(top, n), np.arange(len(iou)), len(iou))
        best_iou[idx] = top
        best_gt[idx] = gt_idx[np.minimum.reduceat(position, seg)]  # np.argmax's choice: the first maximum
    hit = np.zeros(len(det_keys), dtype=bool)
    candidates = np.nonzero(best_iou >= iou_threshold)[0]
    _, first_taker = np.unique(best_gt[candidates], return_index=True)
    hit[candidates[first_taker]] = True
    return hit


def frame_ap_arrays(det_frames: Any, det_boxes: Any, det_classes: Any, det_scores: Any, gt_frames: Any,
                    gt_boxes: Any, gt_classes: Any, *, iou_threshold: float = 0.5) -> dict[str, Any]:
    """:func:`frame_ap` on arrays: one row per detection / ground-truth (box, action) (notebook ``08_action_detection``).

    ``det_frames`` [D] and ``gt_frames`` [G] name keyframes (ints or strings), boxes are
    ``[., 4]`` ``(x1, y1, x2, y2)``, classes integer ids, ``det_scores`` [D]. The keyframes are
    taken in the order of their first detection, as the AVA code adds them; that order decides
    only ties of score across keyframes.
    """
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold={iou_threshold}; expected a value in (0, 1]")
    d_frames, g_frames = np.asarray(det_frames).reshape(-1), np.asarray(gt_frames).reshape(-1)
    d_boxes = _as_array(det_boxes, "detection boxes", np.float64, (4,), len(d_frames))
    d_classes = _as_array(det_classes, "detection classes", np.int64, (), len(d_frames))
    d_scores = _as_array(det_scores, "detection scores", np.float64, (), len(d_frames))
    g_boxes = _as_array(gt_boxes, "ground-truth boxes", np.float64, (4,), len(g_frames))
    g_classes = _as_array(gt_classes, "ground-truth classes", np.int64, (), len(g_frames))
    bad = np.nonzero((g_boxes[:, 2] < g_boxes[:, 0]) | (g_boxes[:, 3] < g_boxes[:, 1]))[0]
    if len(bad):
        raise ValueError(f"ground-truth box {bad[0]} of keyframe {g_frames[bad[0]]!r} is {g_boxes[bad[0]].tolist()}; "
                         "expected (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2")
    if len(d_frames) and len(g_frames) and d_frames.dtype.kind != g_frames.dtype.kind:
        raise ValueError(f"detection keyframes are {d_frames.dtype} and ground-truth keyframes {g_frames.dtype}; "
                         "expected the same kind of id")
    d_codes, g_codes = _frame_codes(d_frames, g_frames)
    num_frames = max(int(d_codes.max(initial=-1)), int(g_codes.max(initial=-1))) + 1
    classes, num_gt = np.unique(g_classes, return_counts=True)
    # Detections of classes without ground truth are ignored; boxes with x2 <= x1 or y2 <= y1 are
    # dropped before matching (``_remove_invalid_boxes``), not counted as false positives.
    d_rank = np.searchsorted(classes, d_classes)
    known = classes[np.minimum(d_rank, len(classes) - 1)] == d_classes if len(classes) else np.zeros(len(d_rank), bool)
    keep = np.flatnonzero(known & (d_boxes[:, 0] < d_boxes[:, 2]) & (d_boxes[:, 1] < d_boxes[:, 3]))
    d_rank, d_codes, scores = d_rank[keep], d_codes[keep], d_scores[keep]
    det_keys = d_rank * num_frames + d_codes
    g_rank = np.searchsorted(classes, g_classes)
    g_order = np.lexsort((g_codes, g_rank))
    gt_keys = (g_rank * num_frames + g_codes)[g_order]
    # Matching needs the detections of a (class, keyframe) in descending score, but only where that
    # group has ground truth; the others are false positives whatever their order.
    with_gt = np.flatnonzero(np.searchsorted(gt_keys, det_keys, side="right") > np.searchsorted(gt_keys, det_keys))
    with_gt = with_gt[_group_then_score_order(det_keys[with_gt], scores[with_gt])]
    hits = np.zeros(len(det_keys), dtype=bool)
    hits[with_gt] = match_detections(det_keys[with_gt], d_boxes[keep[with_gt]], gt_keys, g_boxes[g_order],
                                     iou_threshold=iou_threshold)
    by_class = np.argsort(d_rank.astype(np.uint16) if len(classes) <= 1 << 16 else d_rank, kind="stable")
    bounds = np.searchsorted(d_rank[by_class], np.arange(len(classes) + 1))
    per_class = {}
    for r, c in enumerate(classes):
        mine = by_class[bounds[r]:bounds[r + 1]]  # input order
        ranked = np.argsort(scores[mine])
        ranked_scores = scores[mine][ranked]
        if not np.any(ranked_scores[1:] == ranked_scores[:-1]):  # no ties: any listing order ranks alike
            per_class[int(c)] = _ap_from_ranked(hits[mine][ranked][::-1], int(num_gt[r])) if len(mine) else 0.0
            continue
        # ties: rank the list the AVA code builds (keyframes by first detection, each by descending
        # score, ties in input order), since np.argsort's order among ties depends on the listing
        official = mine[np.lexsort((-scores[mine], d_codes[mine]))]
        per_class[int(c)] = _voc_ap(scores[official], hits[official], int(num_gt[r]))
    mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return {"mAP": mean, "per_class": per_class}


def frame_ap(detections: Sequence[tuple[Hashable, Any, int, float]], ground_truth: Sequence[tuple[Hashable, Any, int]],
             *, iou_threshold: float = 0.5) -> dict[str, Any]:
    """Frame-level AP per class and their mean, as the official AVA evaluator computes them.

    Notebook ``08_action_detection``. ``detections``: ``(frame_id, box, class_id, score)``;
    ``ground_truth``: ``(frame_id, box, class_id)``, one row per (box, action); boxes ``(x1, y1,
    x2, y2)``. This is ``ava_eval`` of ActivityNet / mmaction2 / pySlowFast (the TF object-detection
    ``PascalDetectionEvaluator``): per keyframe and class, detections in descending score each take
    the ground-truth box of highest IoU among ALL the boxes of that class in the keyframe; a hit if
    the IoU is >= ``iou_threshold`` and the box is not taken yet, else a false positive (also when a
    free box would have overlapped enough; see :func:`match_detections`). Detections of keyframes
    without ground truth are false positives; boxes with no area are dropped; AVA marks no box
    difficult or group-of, so those branches of the TF code never apply. AP per class is the
    VOC area under the monotone precision-recall curve over all detections of the class
    (:func:`average_precision`); a class without detections scores 0. Returns ``{"mAP",
    "per_class": {class_id: AP}}`` over classes with ground truth (detections of other classes are
    ignored; the official mean skips them as NaN). Vectorised: :func:`frame_ap_arrays`.
    """
    for rows, name, width in ((detections, "detection", 4), (ground_truth, "ground truth", 3)):
        wrong = next((i for i, row in enumerate(rows) if len(row) != width), None)
        if wrong is not None:
            raise ValueError(f"{name} {wrong} is {rows[wrong]!r}; expected {width} fields "
                             + ("(frame_id, box, class_id, score)" if width == 4 else "(frame_id, box, class_id)"))
    frame_index: dict[Hashable, int] = {}
    d_frames = [frame_index.setdefault(d[0], len(frame_index)) for d in detections]
    g_frames = [frame_index.setdefault(g[0], len(frame_index)) for g in ground_truth]

    def boxes(items: Sequence[tuple], name: str) -> np.ndarray:
        out = np.zeros((len(items), 4), dtype=np.float64)
        for i, item in enumerate(items):
            try:
                out[i] = np.asarray(item[1], dtype=np.float64).reshape(4)
            except (TypeError, ValueError):
                raise ValueError(f"{name} {i}: box {item[1]!r}; expected 4 numbers (x1, y1, x2, y2)") from None
        return out

    return frame_ap_arrays(np.asarray(d_frames, dtype=np.int64), boxes(detections, "detection"),
                           [d[2] for d in detections], [d[3] for d in detections], np.asarray(g_frames, dtype=np.int64),
                           boxes(ground_truth, "ground truth"), [g[2] for g in ground_truth], iou_threshold=iou_threshold)


def detection_encoder_overrides(cfg: Config) -> dict[str, int]:
    """The encoder changes of the detection variant: ``{"res5_stride", "res5_dilation"}`` (notebook ``08_action_detection``)."""
    return {"res5_stride": cfg.detection.detection_res5_stride, "res5_dilation": cfg.detection.detection_res5_dilation}


class ActionDetector(nn.Module):
    """Slow encoder -> res5 -> temporal mean + RoIAlign -> max over the grid -> dropout -> linear (notebook ``08_action_detection``).

    ``forward(clips [B, 3, T, H, W], rois [K, 5])`` with rois ``(batch_index, x1, y1, x2, y2)``
    normalised to [0, 1] returns per-class logits ``[K, C]``; the sigmoid of each is that action's score.
    """

    def __init__(self, encoder: ResNet3D, num_classes: int, *, roi_size: int = 7, dropout: float = 0.5,
                 level: str = "res5"):
        super().__init__()
        if level not in encoder.stage_channels:
            raise ValueError(f"level={level!r}; expected one of {sorted(encoder.stage_channels)}")
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r}; expected a whole number >= 1")
        self.encoder, self.level, self.roi_size = encoder, level, int(roi_size)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(encoder.stage_channels[level], int(num_classes))
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def roi_features(self, clips: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """One ``[K, C]`` feature per box: RoIAlign on the res5 map, then the maximum over the grid."""
        # RoIAlign in float32 even under bf16 autocast: box coordinates and bilinear weights need the bits
        fmap = self.encoder(clips)[self.level].float()
        height, width = clips.shape[-2:]
        scale = rois.new_tensor([1.0, width, height, width, height])
        pooled = roi_align_3d(fmap, rois * scale, self.roi_size, spatial_scale=fmap.shape[-1] / width)
        return pooled.amax(dim=(2, 3))

    def forward(self, clips: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.roi_features(clips, rois)))


@torch.no_grad()
def predict_boxes(model: ActionDetector, dataset: Any, *, batch_size: int, device: torch.device,
                  num_workers: int = 0, precision: str = "fp32",
                  progress: bool = True) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(keyframe key, boxes [K, 4], sigmoid scores [K, C])`` for every keyframe of ``dataset`` (notebook ``08_action_detection``).

    ``num_workers`` loader workers read the keyframes (:func:`~vthcl_lib.evaluate.downstream_loader`);
    the model runs under :func:`~vthcl_lib.evaluate.autocast_context` (``precision``); scores are float32.
    """
    model.eval()
    out = []
    loader = downstream_loader(dataset, batch_size=batch_size, num_workers=num_workers, device=device,
                               collate_fn=collate_keyframes)
    for clips, rois, _, keys in progress_bar(loader, desc="score boxes", disable=not progress, leave=False):
        with autocast_context(device, precision):
            logits = model(clips.to(device, non_blocking=True), rois.to(device))
        scores = torch.sigmoid(logits.float()).cpu()
        for b, key in enumerate(keys):
            mine = rois[:, 0] == b
            out.append((key, rois[mine, 1:].numpy(), scores[mine].numpy()))
    return out


def evaluate_detector(predictions: Sequence[tuple[str, np.ndarray, np.ndarray]], ground_truth: Sequence[AvaKeyframe],
                      class_ids: Sequence[int], *, iou_threshold: float = 0.5) -> dict[str, Any]:
    """Frame mAP of :func:`predict_boxes` output against ground-truth keyframes (notebook ``08_action_detection``).

    Every box scores every class (column c is ``class_ids[c]``); :func:`frame_ap_arrays` matches them
    with the official rule. True actions outside ``class_ids`` are left out (the 60-class protocol
    ignores the other 20).
    """
    class_ids = [int(c) for c in class_ids]
    index: dict[str, int] = {}  # keyframe key -> id, numbered by first appearance
    frames, boxes, scores = [], [], []
    for key, box, score in predictions:
        box = np.asarray(box, dtype=np.float64).reshape(-1, 4)
        frames.append(np.full(len(box), index.setdefault(key, len(index))))
        boxes.append(box)
        scores.append(np.asarray(score, dtype=np.float64).reshape(len(box), len(class_ids)))
    boxes_arr = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    num = len(class_ids)
    # one detection per (box, class), in the order (keyframe, box, class) of the predictions
    det = (np.repeat(np.concatenate(frames) if frames else np.zeros(0, np.int64), num), np.repeat(boxes_arr, num, axis=0),
           np.tile(class_ids, len(boxes_arr)), np.concatenate(scores).reshape(-1) if scores else np.zeros(0))
    scored = set(class_ids)  # true actions outside the scored classes are ignored, as in the AVA code
    truth = [(index.setdefault(keyframe_key(k.video_id, k.timestamp), len(index)), box, action)
             for k in ground_truth for box, actions in zip(k.boxes, k.actions) for action in actions if action in scored]
    return frame_ap_arrays(*det, np.asarray([t[0] for t in truth], dtype=np.int64),
                           np.asarray([t[1] for t in truth], dtype=np.float64).reshape(-1, 4), [t[2] for t in truth],
                           iou_threshold=iou_threshold)


def train_detector(cfg: Config, encoder: ResNet3D, *, seed: int | None = None, progress: bool = True,
                   data: dict | None = None) -> dict[str, Any]:
    """Train :class:`ActionDetector` on the AVA-style training keyframes, then score the validation set.

    Notebook ``08_action_detection``. ``encoder`` should be built with
    :func:`detection_encoder_overrides` (res5 stride 1, dilation 2). ``data`` is
    :func:`~vthcl_lib.datasets.build_ava_datasets`'s output (built here when None). The order of the
    keyframes, the flips and the dropout masks follow ``seed`` (default ``cfg.seed``). Returns
    ``{"mAP", "per_class" (action name -> AP), "val_boxes", "num_train", "num_val", "history"}``.
    """
    det = cfg.detection
    seed = cfg.seed if seed is None else int(seed)
    data = build_ava_datasets(cfg, progress=progress) if data is None else data
    train_set = data["train"]
    device = resolve_device(cfg.device)
    torch.manual_seed(seed)
    model = ActionDetector(encoder, len(data["class_ids"]), roi_size=det.roi_size, dropout=det.detection_dropout).to(device)
    schedule = StepSchedule(det.detection_epochs, det.detection_batch_size, det.detection_lr, det.detection_milestones,
                            det.detection_warmup_epochs, det.detection_momentum, det.detection_weight_decay)

    def batch_loss(batch: tuple) -> tuple[torch.Tensor, int]:
        clips, rois, targets, _ = batch
        logits = model(clips.to(device), rois.to(device))
        return F.binary_cross_entropy_with_logits(logits, targets.to(device)), len(rois)

    # BatchNorm keeps learning (train mode throughout): the paper does not freeze it
    history = train_with_schedule(model, train_set, batch_loss, schedule, seed=seed, stream=8,
                                  num_workers=cfg.data.num_workers, collate_fn=collate_keyframes,
                                  desc=f"detection seed {seed}", progress=progress, device=device,
                                  precision=cfg.train.precision)
    predictions = predict_boxes(model, data["val"], batch_size=det.detection_batch_size, device=device,
                                num_workers=cfg.data.num_workers, precision=cfg.train.precision, progress=progress)
    result = evaluate_detector(predictions, data["val_ground_truth"], data["class_ids"], iou_threshold=det.iou_threshold)
    names = data["label_map"]
    return {"mAP": result["mAP"], "per_class": {names[c]: ap for c, ap in result["per_class"].items()},
            "val_boxes": data["val_boxes"], "num_train": len(train_set), "num_val": len(data["val"]),
            "seed": seed, "history": history}
