"""The two encoders g_s (slow) and g_f (fast): 3D-ResNets shaped like the pathways of SlowFast.

Taught in notebook ``02_slow_fast_encoders``. VTHCL_SPEC (b): the slow and the fast encoder are the
two pathways of SlowFast *without* lateral connections, i.e. two independent networks that differ
only in width (the fast one is ``fast_ratio`` = 1/8 as wide) and in which blocks have a temporal
kernel. Neither strides in time, so a stage's output keeps the input's T.

The builders mirror pySlowFast so the code reads like the spec's tables:

* :func:`build_stem` - conv ``k x 7 x 7`` stride (1, 2, 2) + BN + ReLU, then max-pool 1x3x3 stride (1, 2, 2);
* :class:`BasicBlock3D` (R18) and :class:`Bottleneck3D` (R50) - one residual block each;
* :func:`build_stage` - ``num_blocks`` blocks, the first one strides and changes width;
* :class:`ResNet3D` - stem + res2..res5; ``forward`` returns every stage's feature map, because the
  hierarchical objective contrasts res3, res4 and res5 (VTHCL_SPEC a.7).
"""
from __future__ import annotations

from collections import OrderedDict
from numbers import Integral, Real
from typing import Any, Sequence

import torch
from torch import nn

STAGES = ("res2", "res3", "res4", "res5")
PATHWAYS = ("slow", "fast")
# Blocks per stage and the block type for each depth (standard ResNets; R18 keeps the standard
# 64..512 widths, not SlowFast's wide R18, VTHCL_SPEC f.3).
BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}
# Temporal kernel size of (stem conv, res2, res3, res4, res5), every block of a stage (SlowFast's
# _TEMPORAL_KERNEL_BASIS): the slow path only looks across frames in res4/res5, the fast path everywhere.
TEMPORAL_KERNEL_BASIS = {"slow": (1, 1, 1, 3, 3), "fast": (5, 3, 3, 3, 3)}
STAGE_WIDTH_MULTIPLIERS = (1, 2, 4, 8)  # res2..res5 inner width = stem width x this
STAGE_STRIDES = (1, 2, 2, 2)  # spatial only; res5's is an override (1 for the detection variant)
OVERRIDES = ("base_width", "fast_ratio", "res5_stride", "res5_dilation", "temporal_kernels", "zero_init_residual")  # build_encoder's keywords


def _conv_bn(in_channels: int, out_channels: int, kernel, *, stride=1, padding=0,
             dilation=1) -> tuple[nn.Conv3d, nn.BatchNorm3d]:
    # No conv bias: the BatchNorm right after it has its own shift.
    conv = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=padding, dilation=dilation, bias=False)
    return conv, nn.BatchNorm3d(out_channels)


def build_stem(in_channels: int, width: int, temporal_kernel: int) -> nn.Sequential:
    """conv ``temporal_kernel x 7 x 7`` stride (1, 2, 2) + BN + ReLU + max-pool 1x3x3 stride (1, 2, 2).

    Notebook ``02_slow_fast_encoders``. Spatial size / 4, T unchanged (no temporal stride or pool).
    """
    conv, bn = _conv_bn(in_channels, width, (temporal_kernel, 7, 7), stride=(1, 2, 2),
                        padding=(temporal_kernel // 2, 3, 3))
    return nn.Sequential(OrderedDict(
        conv=conv, bn=bn, relu=nn.ReLU(inplace=True),
        pool=nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
    ))


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity, or a 1x1x1 conv + BN projection where the block changes width or spatial size."""
    if in_channels == out_channels and stride == 1:
        return nn.Identity()
    conv, bn = _conv_bn(in_channels, out_channels, 1, stride=(1, stride, stride))
    return nn.Sequential(OrderedDict(conv=conv, bn=bn))


class BasicBlock3D(nn.Module):
    """R18 block: ``[kt x 3 x 3, w; 1 x 3 x 3, w]`` plus shortcut (notebook ``02_slow_fast_encoders``).

    The temporal kernel sits on the first 3x3 conv, which also carries the spatial stride; the
    dilation (detection variant) sits on the second, as in pySlowFast's ``BasicTransform``.
    """

    expansion = 1

    def __init__(self, in_channels: int, width: int, *, temporal_kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        out_channels = width * self.expansion
        self.conv_a, self.bn_a = _conv_bn(in_channels, width, (temporal_kernel, 3, 3), stride=(1, stride, stride),
                                          padding=(temporal_kernel // 2, 1, 1))
        self.conv_b, self.bn_b = _conv_bn(width, out_channels, (1, 3, 3), padding=(0, dilation, dilation),
                                          dilation=(1, dilation, dilation))
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    @property
    def last_bn(self) -> nn.BatchNorm3d:
        """The BN that ends the residual branch (zero-initialised)."""
        return self.bn_b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn_a(self.conv_a(x)))
        out = self.bn_b(self.conv_b(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck3D(nn.Module):
    """R50 block: ``[kt x 1 x 1, w; 1 x 3 x 3, w; 1 x 1 x 1, 4w]`` plus shortcut (notebook ``02_slow_fast_encoders``).

    The temporal kernel sits on the first 1x1 conv ("3x1x1" inflation); the spatial stride and the
    dilation on the 1x3x3 conv (pySlowFast ``STRIDE_1X1: False``).
    """

    expansion = 4

    def __init__(self, in_channels: int, width: int, *, temporal_kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        out_channels = width * self.expansion
        self.conv_a, self.bn_a = _conv_bn(in_channels, width, (temporal_kernel, 1, 1),
                                          padding=(temporal_kernel // 2, 0, 0))
        self.conv_b, self.bn_b = _conv_bn(width, width, (1, 3, 3), stride=(1, stride, stride),
                                          padding=(0, dilation, dilation), dilation=(1, dilation, dilation))
        self.conv_c, self.bn_c = _conv_bn(width, out_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    @property
    def last_bn(self) -> nn.BatchNorm3d:
        """The BN that ends the residual branch (zero-initialised)."""
        return self.bn_c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn_a(self.conv_a(x)))
        out = self.relu(self.bn_b(self.conv_b(out)))
        out = self.bn_c(self.conv_c(out))
        return self.relu(out + self.shortcut(x))


def build_stage(block: type[nn.Module], in_channels: int, width: int, num_blocks: int, *,
                temporal_kernel: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """``num_blocks`` residual blocks; only the first strides and changes width (notebook ``02_slow_fast_encoders``)."""
    blocks = []
    for i in range(num_blocks):
        blocks.append(block(in_channels, width, temporal_kernel=temporal_kernel, stride=stride if i == 0 else 1,
                            dilation=dilation))
        in_channels = width * block.expansion
    return nn.Sequential(*blocks)


def _check_int(name: str, value: Any, allowed: str, ok) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or not ok(value):
        raise ValueError(f"{name}={value!r}; expected {allowed}")
    return int(value)


class ResNet3D(nn.Module):
    """A slow or fast 3D-ResNet (18 or 50); ``forward(x)`` -> ``{"res2": ..., "res5": ...}``.

    Notebook ``02_slow_fast_encoders``.

    ``x`` is ``[B, 3, T, H, W]``; every stage keeps T; H and W are /4 after the stem, then /1, /2,
    /2, /2 (224 -> 56, 28, 14, 7). Usually built with :func:`build_encoder`.

    Attributes: ``depth``, ``pathway``, ``width`` (stem width), ``temporal_kernels`` (stem, res2..res5)
    and ``stage_channels`` (``{"res2": C2, ..., "res5": C5}``, the inputs of the projection heads).
    """

    def __init__(self, depth: int, pathway: str, *, base_width: int = 64, fast_ratio: float = 1 / 8,
                 res5_stride: int = 2, res5_dilation: int = 1, temporal_kernels: Sequence[int] | None = None,
                 zero_init_residual: bool = True):
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"depth={depth!r}; expected one of {tuple(BLOCKS_PER_STAGE)}")
        if pathway not in PATHWAYS:
            raise ValueError(f"pathway={pathway!r}; expected one of {PATHWAYS}")
        base_width = _check_int("base_width", base_width, "a whole number >= 1", lambda v: v >= 1)
        if isinstance(fast_ratio, bool) or not isinstance(fast_ratio, Real) or not 0 < fast_ratio <= 1:
            raise ValueError(f"fast_ratio={fast_ratio!r}; expected a number with 0 < fast_ratio <= 1")
        res5_stride = _check_int("res5_stride", res5_stride, "1 or 2", lambda v: v in (1, 2))
        res5_dilation = _check_int("res5_dilation", res5_dilation, "a whole number >= 1", lambda v: v >= 1)
        if temporal_kernels is None:
            temporal_kernels = TEMPORAL_KERNEL_BASIS[pathway]
        temporal_kernels = tuple(temporal_kernels)
        # Odd kernels with padding k // 2 keep T, which the tempo pair relies on.
        if len(temporal_kernels) != 5 or not all(
                isinstance(k, Integral) and not isinstance(k, bool) and k >= 1 and k % 2 for k in temporal_kernels):
            raise ValueError(f"temporal_kernels={temporal_kernels!r}; expected 5 odd whole numbers >= 1 "
                             "(stem conv, res2, res3, res4, res5)")
        temporal_kernels = tuple(int(k) for k in temporal_kernels)

        self.depth, self.pathway, self.temporal_kernels = depth, pathway, temporal_kernels
        # The fast path is the slow one at fast_ratio of its width; every stage scales with the stem.
        self.width = base_width if pathway == "slow" else max(1, round(base_width * fast_ratio))
        block = BasicBlock3D if depth == 18 else Bottleneck3D

        self.stem = build_stem(3, self.width, temporal_kernels[0])
        strides = (*STAGE_STRIDES[:3], res5_stride)
        dilations = (1, 1, 1, res5_dilation)
        in_channels, self.stage_channels = self.width, {}
        for i, name in enumerate(STAGES):
            stage_width = self.width * STAGE_WIDTH_MULTIPLIERS[i]
            self.add_module(name, build_stage(block, in_channels, stage_width, BLOCKS_PER_STAGE[depth][i],
                                              temporal_kernel=temporal_kernels[i + 1], stride=strides[i],
                                              dilation=dilations[i]))
            in_channels = self.stage_channels[name] = stage_width * block.expansion
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of every residual block (the standard trick of Goyal et al. 2017,
        # also in torchvision and pySlowFast): each block starts as the identity, which helps early training.
        # Off, every block adds its random residual: the stronger *frozen* random baseline (notebook 07).
        for m in self.modules() if zero_init_residual else ():
            if isinstance(m, (BasicBlock3D, Bottleneck3D)):
                nn.init.zeros_(m.last_bn.weight)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"x has shape {tuple(x.shape)}; expected [B, 3, T, H, W]")
        x = self.stem(x)
        features = {}
        for name in STAGES:
            x = features[name] = getattr(self, name)(x)
        return features

    def extra_repr(self) -> str:
        return f"depth={self.depth}, pathway={self.pathway!r}, stage_channels={self.stage_channels}"


def build_encoder(depth: int, pathway: str, **overrides: Any) -> ResNet3D:
    """The paper's slow or fast encoder (VTHCL_SPEC (b)); notebook ``02_slow_fast_encoders``.

    ``depth`` is 18 or 50, ``pathway`` "slow" or "fast". ``overrides`` (defaults in brackets):
    ``base_width`` (64) the slow stem width, all stage widths scale with it; ``fast_ratio`` (1/8)
    fast width / slow width, used by the fast pathway only; ``res5_stride`` (2) and ``res5_dilation``
    (1), 1 and 2 for the detection variant; ``temporal_kernels`` (None: the pathway's basis) five odd
    temporal kernel sizes for the stem conv and res2..res5.
    """
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise ValueError(f"unknown encoder override(s) {unknown}; known: {', '.join(OVERRIDES)}")
    return ResNet3D(depth, pathway, **overrides)


def encoder_from_config(model_cfg: Any, pathway: str, **overrides: Any) -> ResNet3D:
    """``build_encoder`` with a ``ModelConfig``'s depth, base_width and fast_ratio (plus ``overrides``).

    Notebook ``02_slow_fast_encoders``.
    """
    return build_encoder(model_cfg.depth, pathway, base_width=model_cfg.base_width, fast_ratio=model_cfg.fast_ratio,
                         **overrides)
