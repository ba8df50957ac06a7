"""Output shape, parameters and FLOPs of each stage of an encoder, for "slow against fast" tables.

Taught in notebook ``02_slow_fast_encoders``. FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``
on one forward of a zero input; it counts the convolutions (2 x multiply-adds) and matmuls, not
BatchNorm, ReLU, pooling or the residual additions, which are a small share of a ResNet's cost.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vthcl_lib.models.resnet3d import STAGES


def stage_costs(encoder: nn.Module, input_shape: Sequence[int]) -> list[dict]:
    """Per stage (stem, res2..res5): ``{"stage", "output_shape", "params", "flops"}``.

    Notebook ``02_slow_fast_encoders``.

    ``input_shape`` is ``[B, 3, T, H, W]``, or ``[3, T, H, W]`` for one clip (B = 1). The stages run
    one after another on the previous stage's output, in eval mode and without gradients, so the
    encoder's BatchNorm statistics are left as they were; ``flops`` are forward FLOPs for the whole
    batch. ``pandas.DataFrame(stage_costs(...))`` gives the table.
    """
    shape = tuple(input_shape)
    if len(shape) == 4:
        shape = (1, *shape)
    if len(shape) != 5 or shape[1] != 3 or not all(isinstance(n, int) and n >= 1 for n in shape):
        raise ValueError(f"input_shape={tuple(input_shape)!r}; "
                         "expected [B, 3, T, H, W] or [3, T, H, W] of positive ints")
    names = ("stem", *STAGES)
    missing = [name for name in names if not hasattr(encoder, name)]
    if missing:
        raise ValueError(f"encoder lacks stage module(s) {missing}; expected a ResNet3D (stem, res2..res5)")
    first = next(encoder.parameters())
    x = torch.zeros(shape, device=first.device, dtype=first.dtype)
    was_training = encoder.training
    encoder.eval()  # a forward in train mode would move the BN running statistics
    rows = []
    try:
        with torch.no_grad():
            for name in names:
                stage = getattr(encoder, name)
                with FlopCounterMode(display=False) as counter:
                    x = stage(x)
                rows.append({
                    "stage": name,
                    "output_shape": tuple(x.shape),
                    "params": sum(p.numel() for p in stage.parameters()),
                    "flops": int(counter.get_total_flops()),
                })
    finally:
        encoder.train(was_training)
    return rows
