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

from collections import defaultdict
from typing import Any, Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from vthcl_lib.config import Config
from vthcl_lib.datasets import AvaKeyframe, build_ava_datasets, collate_keyframes, keyframe_key
from vthcl_lib.environment import resolve_device
from vthcl_lib.evaluate import autocast_context, downstream_loader
from vthcl_lib.finetune import StepSchedule, train_with_schedule
from vthcl_lib.models import ResNet3D


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
    for clips, rois, _, keys in tqdm(loader, desc="score boxes", disable=not progress, leave=False):
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

    Every box scores every class (column c is ``class_ids[c]``); :func:`frame_ap` matches them. True
    actions outside ``class_ids`` are left out (the 60-class protocol ignores the other 20).
    """
    detections = [(key, box, class_ids[c], float(score[c]))
                  for key, boxes, scores in predictions for box, score in zip(boxes, scores) for c in range(len(class_ids))]
    scored = set(class_ids)  # true actions outside the scored classes are ignored, as in the AVA code
    truth = [(keyframe_key(k.video_id, k.timestamp), box, action)
             for k in ground_truth for box, actions in zip(k.boxes, k.actions) for action in actions if action in scored]
    return frame_ap(detections, truth, iou_threshold=iou_threshold)


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
