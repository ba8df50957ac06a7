"""AVA-style action detection pieces: 3D RoIAlign and frame-level mAP (VTHCL_SPEC c.4).

Taught in notebook ``08_action_detection`` (in progress, issue 5). Pure torch, no compiled ops:

* :func:`roi_align_3d` pools a clip's feature map over time, then bilinearly samples a fixed grid
  inside every person box (Mask R-CNN's RoIAlign with ``aligned=True`` half-pixel coordinates);
* :func:`box_iou` and :func:`frame_ap` score detections as the AVA protocol does: per class,
  detections sorted by score are matched greedily to unmatched ground-truth boxes of the same
  keyframe at IoU >= 0.5, and the average precision is the area under the precision-recall curve
  with precision made monotone (the PASCAL VOC 2010+ rule of the AVA evaluation code); the mAP is the
  mean over classes that have ground truth.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Hashable, Sequence

import numpy as np
import torch


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


def average_precision(scores: Sequence[float], is_hit: Sequence[bool], num_ground_truth: int) -> float:
    """Area under the precision-recall curve with monotone precision (VOC 2010+; notebook ``08_action_detection``)."""
    if num_ground_truth < 1:
        raise ValueError(f"num_ground_truth={num_ground_truth}; expected >= 1")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = np.asarray(is_hit, dtype=bool)[order]
    if hits.size == 0:
        return 0.0
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / num_ground_truth
    precision = np.concatenate([[0.0], precision, [0.0]])
    recall = np.concatenate([[0.0], recall, [recall[-1]]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # each precision: the best at any higher recall
    changes = np.nonzero(recall[1:] != recall[:-1])[0] + 1
    return float(np.sum((recall[changes] - recall[changes - 1]) * precision[changes]))


def frame_ap(detections: Sequence[tuple[Hashable, Any, int, float]], ground_truth: Sequence[tuple[Hashable, Any, int]],
             *, iou_threshold: float = 0.5) -> dict[str, Any]:
    """Frame-level AP per class and their mean, as the AVA protocol computes them.

    Notebook ``08_action_detection``. ``detections``: ``(frame_id, box, class_id, score)``;
    ``ground_truth``: ``(frame_id, box, class_id)``; boxes ``(x1, y1, x2, y2)``. Per class, the
    detections in descending score each take the unmatched ground-truth box of their frame with the
    highest IoU if it reaches ``iou_threshold`` (a hit), else count as false positives. Returns
    ``{"mAP", "per_class": {class_id: AP}}`` over classes with ground truth (detections of other
    classes are ignored, as in the AVA code).
    """
    gt_by_class: dict[int, dict[Hashable, list]] = defaultdict(lambda: defaultdict(list))
    for frame, box, cls in ground_truth:
        gt_by_class[int(cls)][frame].append(box)
    per_class = {}
    for cls, frames in sorted(gt_by_class.items()):
        gt_boxes = {f: torch.as_tensor(np.asarray(b, dtype=np.float32)).reshape(-1, 4) for f, b in frames.items()}
        used = {f: np.zeros(len(b), dtype=bool) for f, b in gt_boxes.items()}
        dets = sorted((d for d in detections if int(d[2]) == cls), key=lambda d: -float(d[3]))
        scores, hits = [], []
        for frame, box, _, score in dets:
            hit = False
            if frame in gt_boxes:
                iou = box_iou(torch.as_tensor(np.asarray(box, dtype=np.float32)).reshape(1, 4), gt_boxes[frame])[0].numpy()
                iou = np.where(used[frame], -1.0, iou)
                best = int(iou.argmax())
                if iou[best] >= iou_threshold:
                    used[frame][best], hit = True, True
            scores.append(float(score))
            hits.append(hit)
        per_class[cls] = average_precision(scores, hits, sum(len(b) for b in gt_boxes.values()))
    mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return {"mAP": mean, "per_class": per_class}
