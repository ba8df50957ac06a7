"""Load a slow encoder g_s from our checkpoints or from other code bases' weights, and export it to them.

Taught in notebook ``06_action_recognition``: downstream tasks use only the slow encoder
(VTHCL_SPEC g.13), and the released VTHCL weights target the mmaction ``ResNet_SlowFast`` naming of
the authors' TPN code base (VTHCL_SPEC e, g.11), so they need their keys renamed before they fit our
:class:`~vthcl_lib.models.ResNet3D`. The same holds for weights trained with mmaction2, pySlowFast or
pytorchvideo, and for sending our weights to those code bases (:func:`export_slow_encoder`).

Loading never fails silently: every load returns a :class:`LoadReport` that lists what was loaded,
missing, unexpected, adapted or of the wrong shape, and a file that fills only part of the encoder is
refused unless the caller says ``allow_partial=True``. Files are read with
``torch.load(weights_only=True)`` only: a file that needs arbitrary Python objects (which could run
code while unpickling) is refused, naming the object.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from vthcl_lib.config import ModelConfig
from vthcl_lib.models import ResNet3D, build_encoder, encoder_from_config
from vthcl_lib.models.resnet3d import STAGES

LOGGER = logging.getLogger("vthcl_lib.checkpoints")

# Source formats a LoadReport names.
FORMAT_SLOW_ENCODER = "vthcl slow_encoder.pt"
FORMAT_TRAINING = "vthcl last.pt (training checkpoint, slow.* keys)"
FORMAT_MMACTION = "mmaction/TPN backbone (conv1, bn1, layer1..layer4)"
FORMAT_MMACTION2 = "mmaction2 ResNet3d/SlowOnly backbone (conv1.conv, layerL.b.convN.conv/bn, downsample.conv/bn)"
FORMAT_PYSLOWFAST = "pySlowFast ResNet (s1.pathway0_stem, sN.pathway0_resB.branch1/branch2.a..c)"
FORMAT_PYTORCHVIDEO = "pytorchvideo create_resnet (blocks.0.conv/norm, blocks.N.res_blocks.B.branch2.conv_a..c)"
FORMAT_STATE_DICT = "state dict with vthcl names"
SLOWFAST_SUFFIX = " - slow pathway of a SlowFast model, lateral connections ignored"
EXPORT_FORMATS = ("mmaction2", "pyslowfast")

# mmaction block attribute -> ours (BasicBlock3D / Bottleneck3D); conv3/bn3 exist in Bottlenecks only.
_BLOCK_NAMES = {"conv1": "conv_a", "bn1": "bn_a", "conv2": "conv_b", "bn2": "bn_b", "conv3": "conv_c", "bn3": "bn_c"}
# The tail is one attribute (weight, running_mean, ...), so mmaction2's conv1.conv.weight never matches.
_STEM_RE = re.compile(r"^(conv1|bn1)\.(\w+)$")
_BLOCK_RE = re.compile(r"^layer([1-4])\.(\d+)\.(conv[123]|bn[123])\.(\w+)$")
_DOWNSAMPLE_RE = re.compile(r"^layer([1-4])\.(\d+)\.downsample\.([01])\.(\w+)$")
# mmaction2 wraps conv + BN in one ConvModule: conv1.conv / conv1.bn (VTHCL keys: conv_a / bn_a).
_MM2_STEM_RE = re.compile(r"^conv1\.(conv|bn)\.(.+)$")
_MM2_BLOCK_RE = re.compile(r"^layer([1-4])\.(\d+)\.conv([123])\.(conv|bn)\.(.+)$")
_MM2_DOWNSAMPLE_RE = re.compile(r"^layer([1-4])\.(\d+)\.downsample\.(conv|bn)\.(.+)$")
# pySlowFast: s1 = stem, s2..s5 = res2..res5 (same numbering as ours); branch1 = projection shortcut.
_PSF_STEM_RE = re.compile(r"^s1\.pathway0_stem\.(conv|bn)\.(.+)$")
_PSF_BRANCH2_RE = re.compile(r"^s([2-5])\.pathway0_res(\d+)\.branch2\.([abc])(_bn)?\.(.+)$")
_PSF_BRANCH1_RE = re.compile(r"^s([2-5])\.pathway0_res(\d+)\.branch1(_bn)?\.(.+)$")
_PSF_SIDE_RE = re.compile(r"(^s\d\.pathway[1-9]_|^s\d_fuse\.|^pathway\d_pool)")
# pytorchvideo: Net.blocks[0] = stem, blocks[1..4] = res2..res5, blocks[5] = head.
_PTV_STEM_RE = re.compile(r"^blocks\.0\.(conv|norm)\.(.+)$")
_PTV_BRANCH2_RE = re.compile(r"^blocks\.([1-4])\.res_blocks\.(\d+)\.branch2\.(conv|norm)_([abc])\.(.+)$")
_PTV_BRANCH1_RE = re.compile(r"^blocks\.([1-4])\.res_blocks\.(\d+)\.branch1_(conv|norm)\.(.+)$")
_ABC = {"a": "_a", "b": "_b", "c": "_c", "1": "_a", "2": "_b", "3": "_c"}

# What our own checkpoints hold besides tensors and containers: the engine's last.pt stores numpy's RNG
# state, an ndarray of uint32 (torch.serialization.get_unsafe_globals_in_checkpoint lists its globals).
# Nothing else is allowed to unpickle.
def _numpy_globals() -> list[Any]:
    found: list[Any] = [np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    for name in ("numpy._core.multiarray", "numpy.core.multiarray"):  # numpy 2.x, then 1.x
        try:
            return found + [importlib.import_module(name)._reconstruct]
        except (ImportError, AttributeError):
            continue
    return found


_SAFE_GLOBALS = _numpy_globals()


@dataclass
class LoadReport:
    """What :func:`load_slow_encoder` did; ``print(report)`` gives a loud multi-line summary.

    Notebook ``06_action_recognition``.

    ``loaded`` counts the model tensors that received checkpoint values (of ``total``);
    ``missing`` are model keys the checkpoint lacks (kept at their initial values;
    ``num_batches_tracked`` counters are not listed, they do not affect evaluation);
    ``unexpected`` are checkpoint keys the model has no place for (e.g. a classifier head);
    ``mismatched`` are ``(name, checkpoint shape, model shape)`` and were skipped;
    ``bn_stats_present`` says whether every BatchNorm running mean/variance came from the
    checkpoint (if not, recalibrate with :func:`vthcl_lib.evaluate.recalibrate_batchnorm`);
    ``ignored`` are keys deliberately left out (the fast encoder and heads of a training checkpoint,
    the fast pathway and lateral connections of a SlowFast model); ``adapted`` says which tensors
    were loaded after a change of shape (a SlowFast slow pathway's lateral input channels cut off,
    or a temporal kernel whose outer taps are all zero reduced to its centre).
    """

    path: str
    source_format: str
    depth: int
    loaded: int
    total: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    bn_stats_present: bool = True
    ignored: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when nothing was missing, unexpected or mismatched."""
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def complete(self) -> bool:
        """True when every encoder tensor came from the file (``num_batches_tracked`` aside)."""
        return not (self.missing or self.mismatched)

    def __str__(self) -> str:
        bar = "=" * 72
        status = "OK" if self.clean and self.bn_stats_present else "!! ATTENTION: the load was NOT clean !!"
        lines = [bar, f"checkpoint load report: {self.path}", f"  format:  {self.source_format}",
                 f"  model:   slow 3D-ResNet{self.depth}",
                 f"  loaded:  {self.loaded} of {self.total} model tensors", f"  status:  {status}"]

        def section(title: str, items: list[str]) -> None:
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines.extend(f"    - {item}" for item in items[:20])
                if len(items) > 20:
                    lines.append(f"    ... and {len(items) - 20} more")

        section("MISSING from the checkpoint, left at their initial values", self.missing)
        section("UNEXPECTED in the checkpoint, not loaded", self.unexpected)
        section("SHAPE MISMATCH, not loaded (name: checkpoint -> model)",
                [f"{name}: {tuple(ck)} -> {tuple(mo)}" for name, ck, mo in self.mismatched])
        section("ADAPTED on loading", self.adapted)
        if not self.bn_stats_present:
            lines.append("  !! BatchNorm running statistics are NOT all in the checkpoint:")
            lines.append("     run evaluate.recalibrate_batchnorm before evaluating")
        if self.ignored:
            lines.append(f"  ignored on purpose: {len(self.ignored)} keys (fast encoder or pathway, lateral "
                         "connections, heads: not part of the slow encoder)")
        lines.append(bar)
        return "\n".join(lines)


def _check_depth(depth: Any) -> int:
    if depth not in (18, 50) or isinstance(depth, bool):
        raise ValueError(f"depth={depth!r}; expected 18 or 50")
    return int(depth)


def _strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def _bare(key: str, prefixes: tuple[str, ...] = ("module.", "backbone.")) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def map_mmaction_keys(state_dict: Mapping[str, Any], depth: int) -> tuple[dict[str, Any], list[str]]:
    """Rename mmaction/TPN ``ResNet_SlowFast`` keys to our ResNet3D names: ``(mapped, unmapped)``.

    Notebook ``06_action_recognition``. Leading ``module.`` (DataParallel) and ``backbone.``
    (mmaction recognizer) prefixes are dropped first. The table (``L`` = 1..4, ``b`` = block,
    ``*`` = weight / bias / running_mean / running_var / num_batches_tracked):

    ==========================================  =====================================
    mmaction / TPN                              vthcl ResNet3D
    ==========================================  =====================================
    ``conv1.*``                                 ``stem.conv.*``
    ``bn1.*``                                   ``stem.bn.*``
    ``layerL.b.conv1.*`` / ``bn1.*``            ``res{L+1}.b.conv_a.*`` / ``bn_a.*``
    ``layerL.b.conv2.*`` / ``bn2.*``            ``res{L+1}.b.conv_b.*`` / ``bn_b.*``
    ``layerL.b.conv3.*`` / ``bn3.*`` (R50)      ``res{L+1}.b.conv_c.*`` / ``bn_c.*``
    ``layerL.b.downsample.0.*``                 ``res{L+1}.b.shortcut.conv.*``
    ``layerL.b.downsample.1.*``                 ``res{L+1}.b.shortcut.bn.*``
    ==========================================  =====================================

    Anything else (``cls_head.*``, ``necks.*``, non-local blocks, ``conv3``/``bn3`` with depth 18)
    is returned unchanged, by its original name, in ``unmapped``. Tensors are not copied.
    """
    depth = _check_depth(depth)
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict is a {type(state_dict).__name__}; expected a mapping of name -> tensor")
    mapped: dict[str, Any] = {}
    unmapped: list[str] = []
    for original, value in state_dict.items():
        key = _bare(original)
        new = _mmaction_to_ours(key)
        if new is not None and depth == 18 and (".conv_c." in new or ".bn_c." in new):
            new = None  # an R18 has no third conv: keep the key, by its own name, among the unmapped
        if new is None:
            unmapped.append(original)
        else:
            mapped[new] = value
    return mapped, unmapped


def _mmaction_to_ours(key: str) -> str | None:
    if m := _STEM_RE.match(key):
        return f"stem.{'conv' if m[1] == 'conv1' else 'bn'}.{m[2]}"
    if m := _BLOCK_RE.match(key):
        return f"res{int(m[1]) + 1}.{m[2]}.{_BLOCK_NAMES[m[3]]}.{m[4]}"
    if m := _DOWNSAMPLE_RE.match(key):
        return f"res{int(m[1]) + 1}.{m[2]}.shortcut.{'conv' if m[3] == '0' else 'bn'}.{m[4]}"
    return None


def _mmaction2_to_ours(key: str) -> str | None:
    if m := _MM2_STEM_RE.match(key):
        return f"stem.{m[1]}.{m[2]}"
    if m := _MM2_BLOCK_RE.match(key):
        return f"res{int(m[1]) + 1}.{m[2]}.{m[4]}{_ABC[m[3]]}.{m[5]}"
    if m := _MM2_DOWNSAMPLE_RE.match(key):
        return f"res{int(m[1]) + 1}.{m[2]}.shortcut.{m[3]}.{m[4]}"
    return None


def _pyslowfast_to_ours(key: str) -> str | None:
    if m := _PSF_STEM_RE.match(key):
        return f"stem.{m[1]}.{m[2]}"
    if m := _PSF_BRANCH2_RE.match(key):
        return f"res{m[1]}.{m[2]}.{'bn' if m[4] else 'conv'}{_ABC[m[3]]}.{m[5]}"
    if m := _PSF_BRANCH1_RE.match(key):
        return f"res{m[1]}.{m[2]}.shortcut.{'bn' if m[3] else 'conv'}.{m[4]}"
    return None


def _pytorchvideo_to_ours(key: str) -> str | None:
    if m := _PTV_STEM_RE.match(key):
        return f"stem.{'conv' if m[1] == 'conv' else 'bn'}.{m[2]}"
    if m := _PTV_BRANCH2_RE.match(key):
        return f"res{int(m[1]) + 1}.{m[2]}.{'conv' if m[3] == 'conv' else 'bn'}{_ABC[m[4]]}.{m[5]}"
    if m := _PTV_BRANCH1_RE.match(key):
        return f"res{int(m[1]) + 1}.{m[2]}.shortcut.{'conv' if m[3] == 'conv' else 'bn'}.{m[4]}"
    return None


def _mmaction2_side(key: str) -> str | None:
    """mmaction2 ResNet3dSlowFast: slow_path.* is the slow encoder, the rest is fast path and laterals."""
    if key.startswith("slow_path.") and "_lateral." not in key:
        return key[len("slow_path."):]
    return None


@dataclass(frozen=True)
class _Format:
    name: str
    to_ours: Callable[[str], str | None]
    prefixes: tuple[str, ...]


_FORMATS = (
    _Format(FORMAT_MMACTION2, _mmaction2_to_ours, ("module.", "backbone.")),
    _Format(FORMAT_MMACTION, _mmaction_to_ours, ("module.", "backbone.")),
    _Format(FORMAT_PYSLOWFAST, _pyslowfast_to_ours, ("module.",)),
    _Format(FORMAT_PYTORCHVIDEO, _pytorchvideo_to_ours, ("module.", "model.")),
)


def _map_external(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str, list[str],
                                                                  list[str], bool] | None:
    """Rename another code base's keys: ``(state, format, unexpected, ignored, slowfast)`` or None."""
    best = None
    for fmt in _FORMATS:
        bare = {k: _bare(k, fmt.prefixes) for k in tensors}
        slowfast = fmt.name == FORMAT_MMACTION2 and any(b.startswith("slow_path.") for b in bare.values())
        slowfast |= fmt.name == FORMAT_PYSLOWFAST and any(_PSF_SIDE_RE.match(b) for b in bare.values())
        state, unexpected, ignored = {}, [], []
        for original, key in bare.items():
            if slowfast and fmt.name == FORMAT_MMACTION2:
                slow_key = _mmaction2_side(key)
                if slow_key is None and (key.startswith("fast_path.") or "_lateral." in key):
                    ignored.append(original)
                    continue
                key = slow_key if slow_key is not None else key
            if slowfast and fmt.name == FORMAT_PYSLOWFAST and _PSF_SIDE_RE.match(key):
                ignored.append(original)
                continue
            new = fmt.to_ours(key)
            if new is None:
                unexpected.append(original)
            else:
                state[new] = tensors[original]
        if state and (best is None or len(state) > len(best[0])):
            best = (state, fmt.name + (SLOWFAST_SUFFIX if slowfast else ""), unexpected, ignored, slowfast)
    return best


def _offending_global(err: Exception) -> str:
    """The global the safe unpickler refused, as its message names it (``GLOBAL module.name``)."""
    text = str(err)
    m = (re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: ([\w.]+)", text)
         or re.search(r"got <class '([\w.]+)'>", text))
    return m[1] if m else text.splitlines()[0] if text else type(err).__name__


def _read(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with the numpy types our own checkpoints need allow-listed."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5; older ones allow less
    try:
        with allow(_SAFE_GLOBALS) if allow else contextlib.nullcontext():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if re.search(r"GLOBAL [\w.]+|Unsupported global|got <class ", str(err)):
            raise ValueError(
                f"'{path}' was refused: unpickling it needs the Python object '{_offending_global(err)}', and "
                "loading arbitrary objects can run code. Only tensors, containers of them and plain values are "
                "read (torch.load weights_only=True). If you trust the file, re-save just its weights, e.g. "
                "torch.save(obj['state_dict'], 'weights.pt'), and load that") from err
        raise ValueError(f"'{path}' is not a PyTorch checkpoint that torch.load can read "
                         f"({type(err).__name__}: {err})") from err
    except Exception as err:  # noqa: BLE001 - any other failure here means "not a checkpoint"
        raise ValueError(f"'{path}' is not a PyTorch checkpoint that torch.load can read "
                         f"({type(err).__name__}: {err})") from err


def _model_cfg_from(stored: Any) -> ModelConfig | None:
    if not isinstance(stored, Mapping):
        return None
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in stored.items() if k in names})


def _split_tensors(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], list[str]]:
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    return tensors, [k for k in state if k not in tensors]


@dataclass
class _Unpacked:
    state: dict[str, torch.Tensor]
    source_format: str
    stored_cfg: ModelConfig | None = None
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    external: bool = True
    slowfast: bool = False


def _unpack(obj: Any, path: Path) -> _Unpacked:
    """The weights in our names, whatever code base wrote them."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"'{path}' holds a {type(obj).__name__}; expected a checkpoint dict (state dict or "
                         "{'slow_encoder': ...} / {'model': ...} / {'state_dict': ...} / {'model_state': ...})")
    if isinstance(obj.get("slow_encoder"), Mapping):
        state, other = _split_tensors(obj["slow_encoder"])
        return _Unpacked(state, FORMAT_SLOW_ENCODER, _model_cfg_from(obj.get("model")), [], other, external=False)
    model = obj.get("model")
    if isinstance(model, Mapping) and any(str(k).startswith("slow.") for k in model):
        tensors, other = _split_tensors(_strip_prefix(model, "module."))
        state = {k[len("slow."):]: v for k, v in tensors.items() if k.startswith("slow.")}
        ignored = [k for k in tensors if not k.startswith("slow.")] + other
        config = obj.get("config")
        stored = config.get("model") if isinstance(config, Mapping) else None
        return _Unpacked(state, FORMAT_TRAINING, _model_cfg_from(stored), [], ignored, external=False)
    # mmcv/mmengine write {'state_dict'}, pySlowFast and pytorchvideo {'model_state'}, others {'model'}.
    for wrapper in ("state_dict", "model_state", "model", "state"):
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    tensors, other = _split_tensors(obj)
    if not tensors:
        raise ValueError(f"'{path}' holds no tensors (keys: {sorted(map(str, obj))[:8]}); expected model weights")
    tensors = _strip_prefix({str(k): v for k, v in tensors.items()}, "module.")
    if any(k.startswith(("stem.", "res2.")) for k in tensors):  # our own names, saved as a plain state dict
        return _Unpacked(tensors, FORMAT_STATE_DICT, None, [], other)
    if any(k.startswith("slow.stem.") for k in tensors):  # a VTHCLNet state dict saved on its own
        state = {k[len("slow."):]: v for k, v in tensors.items() if k.startswith("slow.")}
        return _Unpacked(state, FORMAT_TRAINING, None, [], [k for k in tensors if not k.startswith("slow.")] + other)
    mapped = _map_external(tensors)
    if mapped is None:
        return _Unpacked({}, FORMAT_STATE_DICT, None, list(tensors), other)
    state, source_format, unexpected, ignored, slowfast = mapped
    return _Unpacked(state, source_format, None, unexpected, ignored + other, slowfast=slowfast)


def _infer_encoder(state: Mapping[str, torch.Tensor], path: Path) -> ResNet3D:
    """Depth (Bottlenecks have conv_c), stem width and temporal kernels from the weights' shapes."""
    stem = state.get("stem.conv.weight")
    if stem is None or stem.dim() != 5:
        raise ValueError(f"'{path}': cannot infer the architecture (no 5-D stem conv weight among "
                         f"{len(state)} recognised tensors); pass model_cfg")
    depth = 50 if any(".conv_c." in k for k in state) else 18
    kernels = [int(stem.shape[2])]
    for stage in STAGES:
        w = state.get(f"{stage}.0.conv_a.weight")
        kernels.append(int(w.shape[2]) if w is not None and w.dim() == 5 else -1)
    overrides: dict[str, Any] = {"base_width": int(stem.shape[0])}
    if all(k >= 1 and k % 2 for k in kernels):
        overrides["temporal_kernels"] = tuple(kernels)
    return build_encoder(depth, "slow", **overrides)


def _adapt(name: str, value: torch.Tensor, target: torch.Size, slowfast: bool) -> tuple[torch.Tensor | None, str]:
    """A tensor reshaped to fit ``target`` without changing what the encoder computes, or (None, "")."""
    shape = tuple(value.shape)
    if value.dim() != 5 or len(target) != 5:
        return None, ""
    if (slowfast and shape[0] == target[0] and shape[1] > target[1] and shape[2:] == tuple(target[2:])
            and (name.endswith(".0.conv_a.weight") or name.endswith(".0.shortcut.conv.weight"))):
        # SlowFast concatenates [slow | fast lateral] channels (slow first, in mmaction2 and pySlowFast):
        # the slow part is the first target[1] input channels; the lateral's part is dropped.
        return value[:, : target[1]].clone(), (f"{name}: {shape} -> {tuple(target)} (lateral input channels "
                                                f"{target[1]}..{shape[1] - 1} dropped)")
    extra = shape[2] - target[2]
    if shape[:2] == tuple(target[:2]) and shape[3:] == tuple(target[3:]) and extra > 0 and extra % 2 == 0:
        half = extra // 2
        outer = torch.cat([value[:, :, :half], value[:, :, shape[2] - half:]], dim=2)
        if not torch.any(outer):  # zero outer taps: the kernel is the centre one, padded (same outputs)
            return value[:, :, half: half + target[2]].clone(), (
                f"{name}: {shape} -> {tuple(target)} (temporal taps outside the centre are all zero)")
    return None, ""


def load_slow_encoder(path: str | os.PathLike, *, model_cfg: ModelConfig | None = None,
                      strict: bool = False, allow_partial: bool = False,
                      overrides: dict[str, Any] | None = None) -> tuple[ResNet3D, LoadReport]:
    """Build the slow encoder and load weights into it: ``(encoder, report)``.

    Notebook ``06_action_recognition``. Accepted files (the format is recognised from the key names;
    leading ``module.`` is dropped everywhere):

    * our ``run_dir/checkpoints/slow_encoder.pt`` (``{"slow_encoder", "model", "config"}``);
    * our full training checkpoint ``last.pt`` (``"model"`` holds ``slow.*`` keys; the fast encoder
      and the heads are ignored on purpose), or a state dict with our names;
    * mmaction 0.x / TPN (``backbone.conv1``, ``backbone.layer1..4.b.conv1``, ``downsample.0/1``; the
      official VTHCL weights), renamed by :func:`map_mmaction_keys`;
    * mmaction2 ``ResNet3d`` / ``ResNet3dSlowOnly`` in a recognizer (``backbone.conv1.conv``,
      ``backbone.layerL.b.conv1.conv/bn``, ``downsample.conv/bn``, in ``{"state_dict": ...}``), and
      ``ResNet3dSlowFast``'s ``backbone.slow_path``;
    * pySlowFast ``ResNet`` (``s1.pathway0_stem``, ``s2.pathway0_res0.branch2.a``, ``branch1``, in
      ``{"model_state": ...}``), and the ``pathway0`` of its ``SlowFast``;
    * pytorchvideo ``create_resnet`` / hub ``slow_r50`` (``blocks.0.conv``,
      ``blocks.1.res_blocks.0.branch2.conv_a``, ``branch1_conv``).

    SlowFast slow pathways: the fast pathway and the lateral/fusion convolutions are listed in
    ``report.ignored``; the first block of each stage reads [slow | lateral] channels, and only the
    slow channels are loaded (``report.adapted``), so the encoder computes the slow pathway as if
    the lateral input were zero. A temporal kernel whose taps outside the centre are all zero (the
    form :func:`export_slow_encoder` gives mmaction2's inflated R18) is reduced to its centre.

    The architecture comes from ``model_cfg`` if given, else from the config stored in our
    checkpoints, else from the weights (depth 50 when blocks have a third conv; stem width and
    temporal kernels from the conv shapes). ``overrides`` (with ``model_cfg``) change the
    architecture in ways that keep every weight's shape, e.g. ``{"res5_stride": 1, "res5_dilation": 2}``
    for detection. A file that fills fewer than all encoder tensors (missing, or of another shape:
    listed by name with both shapes) or brings encoder tensors the model has no place for raises
    ValueError unless ``allow_partial=True``; with ``strict=True`` anything missing, unexpected or
    mismatched raises. Otherwise a load that is not clean is logged as a WARNING. A file that needs
    arbitrary Python objects to unpickle is refused (safe loading only). The encoder comes back on the
    CPU, in train mode.
    """
    path = Path(path)
    for name, flag in (("strict", strict), ("allow_partial", allow_partial)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name}={flag!r}; expected True or False")
    if model_cfg is not None and not all(hasattr(model_cfg, a) for a in ("depth", "base_width", "fast_ratio")):
        raise ValueError(f"model_cfg is a {type(model_cfg).__name__}; expected a ModelConfig")
    if overrides and model_cfg is None:
        raise ValueError("overrides need model_cfg: the architecture they change must be given, not inferred")
    unpacked = _unpack(_read(path), path)
    cfg = model_cfg if model_cfg is not None else unpacked.stored_cfg
    if cfg is not None:
        encoder = encoder_from_config(cfg, "slow", **(overrides or {}))
    else:
        encoder = _infer_encoder(unpacked.state, path)

    model_state = encoder.state_dict()
    loadable, mismatched, adapted = {}, [], []
    unexpected, surplus = list(unpacked.unexpected), []
    for name, value in unpacked.state.items():
        if name not in model_state:
            unexpected.append(name)
            if re.match(r"(stem|res[2-5])\.", name):
                surplus.append(name)  # an encoder tensor (our name space) the model has no place for
        elif tuple(value.shape) != tuple(model_state[name].shape):
            fitted, note = _adapt(name, value, model_state[name].shape, unpacked.slowfast)
            if fitted is None:
                mismatched.append((name, tuple(value.shape), tuple(model_state[name].shape)))
            else:
                loadable[name] = fitted
                adapted.append(note)
        else:
            loadable[name] = value
    encoder.load_state_dict(loadable, strict=False)
    missing = [k for k in model_state if k not in loadable and not k.endswith("num_batches_tracked")]
    bn_keys = [k for k in model_state if k.endswith(("running_mean", "running_var"))]
    report = LoadReport(
        path=str(path), source_format=unpacked.source_format, depth=encoder.depth,
        loaded=len(loadable), total=len(model_state), missing=missing, unexpected=unexpected,
        mismatched=mismatched, bn_stats_present=all(k in loadable for k in bn_keys), ignored=unpacked.ignored,
        adapted=adapted,
    )
    if strict and not report.clean:
        raise ValueError(f"strict load of '{path}' failed:\n{report}")
    if not allow_partial and (not report.complete or surplus):
        problems, other_shape = [], {name for name, _, _ in report.mismatched}
        absent = [k for k in report.missing if k not in other_shape]
        if absent:
            problems.append(f"{len(absent)} encoder tensors missing (e.g. {absent[:4]})")
        if report.mismatched:
            shapes = "; ".join(f"{n}: file {tuple(a)} vs model {tuple(b)}" for n, a, b in report.mismatched[:6])
            problems.append(f"{len(report.mismatched)} of another shape ({shapes})")
        if surplus:
            problems.append(f"{len(surplus)} encoder tensors with no place in the model (e.g. {surplus[:4]}: a "
                            "deeper or different network)")
        raise ValueError(f"'{path}' ({report.source_format}) fills {report.loaded} of {report.total} tensors of "
                         f"the slow 3D-ResNet{encoder.depth}: " + "; ".join(problems) + ". Pass allow_partial=True "
                         f"to load it anyway (the rest keeps its initial values).\n{report}")
    if report.clean:  # a clean load of our own file is routine: say it only when debugging
        level = logging.DEBUG if report.source_format.startswith("vthcl") else logging.INFO
        LOGGER.log(level, "loaded %d tensors from '%s' (%s)", report.loaded, path, report.source_format)
    else:
        LOGGER.warning("%s", report)
    return encoder, report


# --------------------------------------------------------------------------------------------- export
def _ours_to_mmaction2(key: str) -> str:
    parts = key.split(".")
    if parts[0] == "stem":
        return "backbone.conv1." + ".".join(parts[1:])
    stage, block, module, rest = parts[0], parts[1], parts[2], parts[3:]
    layer = f"backbone.layer{int(stage[3]) - 1}.{block}"
    if module == "shortcut":
        return f"{layer}.downsample.{'.'.join(rest)}"
    kind, letter = module.split("_")
    return f"{layer}.conv{'abc'.index(letter) + 1}.{kind}.{'.'.join(rest)}"


def _ours_to_pyslowfast(key: str) -> str:
    parts = key.split(".")
    if parts[0] == "stem":
        return "s1.pathway0_stem." + ".".join(parts[1:])
    stage, block, module, rest = parts[0], parts[1], parts[2], parts[3:]
    prefix = f"s{stage[3]}.pathway0_res{block}"
    if module == "shortcut":
        return f"{prefix}.branch1{'_bn' if rest[0] == 'bn' else ''}.{'.'.join(rest[1:])}"
    kind, letter = module.split("_")
    return f"{prefix}.branch2.{letter}{'_bn' if kind == 'bn' else ''}.{'.'.join(rest)}"


def _export_source(source: Path) -> Path:
    if source.is_dir():
        for name in ("slow_encoder.pt", "last.pt"):
            candidate = source / "checkpoints" / name
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"run directory '{source}' has no checkpoints/slow_encoder.pt or "
                                "checkpoints/last.pt; expected a finished pre-training run or a checkpoint file")
    if not source.is_file():
        raise FileNotFoundError(f"'{source}' does not exist; expected a run directory or a checkpoint file")
    return source


def _atomic_save(payload: Any, path: Path) -> None:
    """``torch.save`` through a temp file and a rename: a failure never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def export_slow_encoder(run_dir_or_checkpoint: str | os.PathLike, path: str | os.PathLike, *,
                        format: str = "mmaction2") -> Path:  # noqa: A002 - the name the API contract uses
    """Write our slow encoder as an mmaction2 or pySlowFast checkpoint; returns ``path``.

    Notebook ``06_action_recognition``. ``run_dir_or_checkpoint`` is a pre-training run directory
    (its ``checkpoints/slow_encoder.pt``, else ``last.pt``) or any file :func:`load_slow_encoder`
    reads completely. The file written loads into the other code base unchanged:

    * ``"mmaction2"``: ``{"state_dict": {"backbone.conv1.conv.weight", ...}, "meta": {...}}`` for a
      ``Recognizer3D`` with ``ResNet3dSlowOnly`` (``load_from=`` or ``init_cfg``); ``meta["backbone_cfg"]``
      is the backbone dict to put in the mmaction2 config (depth, ``base_channels``, ``conv1_kernel``,
      ``inflate``). Stages with a 3-frame kernel become mmaction2's inflated stages; for R18,
      mmaction2's inflated ``BasicBlock3d`` has a 3x3x3 second conv, which gets our 1x3x3 kernel in
      its centre tap and zeros elsewhere (the same outputs).
    * ``"pyslowfast"``: ``{"model_state": {"s1.pathway0_stem.conv.weight", ...}, "cfg": "..."}`` for
      pySlowFast's ``ResNet`` model (``TRAIN.CHECKPOINT_FILE_PATH``); ``cfg`` names the settings
      (``RESNET.DEPTH: 50``, ``RESNET.WIDTH_PER_GROUP``, ``MODEL.ARCH``). R50 only: pySlowFast's R18
      is 4x wider after the stem (its stages are ``WIDTH_PER_GROUP * 4 * 2^i`` wide), not ours.

    No epoch or optimizer state is written, so both code bases start training from epoch 0.
    The file is written atomically; a head for the target dataset is the other code base's to add.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format={format!r}; expected one of {EXPORT_FORMATS}")
    source = _export_source(Path(run_dir_or_checkpoint))
    encoder, report = load_slow_encoder(source)
    if not report.bn_stats_present:
        raise ValueError(f"'{source}' lacks BatchNorm running statistics; export needs a complete encoder")
    kernels, depth, width = encoder.temporal_kernels, encoder.depth, encoder.width
    state = encoder.state_dict()
    if format == "mmaction2":
        if any(k not in (1, 3) for k in kernels[1:]):
            raise ValueError(f"temporal kernels {kernels[1:]} of res2..res5: mmaction2's ResNet3d inflates a "
                             "stage to 3 frames or not at all; expected 1 or 3 per stage")
        inflate = tuple(int(k == 3) for k in kernels[1:])
        out = OrderedDict()
        for key, value in state.items():
            if depth == 18 and ".conv_b." in key and inflate[int(key[3]) - 2]:
                value = torch.nn.functional.pad(value, (0, 0, 0, 0, 1, 1))  # 1x3x3 -> 3x3x3, zero outer taps
            out[_ours_to_mmaction2(key)] = value.detach().clone()
        backbone = (f"dict(type='ResNet3dSlowOnly', depth={depth}, pretrained=None, lateral=False, "
                    f"base_channels={width}, conv1_kernel=({kernels[0]}, 7, 7), conv1_stride_t=1, "
                    f"pool1_stride_t=1, inflate={inflate}, norm_eval=False)")
        payload = {"state_dict": out, "meta": {"exported_by": "vthcl export_slow_encoder",
                                               "source": str(source), "backbone_cfg": backbone}}
    else:
        if depth != 50:
            raise ValueError("pySlowFast's ResNet-18 has 4x the stage widths of its stem (WIDTH_PER_GROUP * 4 * 2^i);"
                             " ours keeps the stem width, so no pySlowFast config builds it: export an R50, or "
                             "use format='mmaction2'")
        arch = {(1, 1, 1, 3, 3): "slow", (1, 1, 1, 1, 1): "slow_c2d"}.get(tuple(kernels))
        if arch is None:
            raise ValueError(f"temporal kernels {kernels} match no pySlowFast MODEL.ARCH; expected (1, 1, 1, 3, 3) "
                             "('slow') or (1, 1, 1, 1, 1) ('slow_c2d')")
        out = OrderedDict((_ours_to_pyslowfast(k), v.detach().clone()) for k, v in state.items())
        cfg_text = (f"# exported by vthcl from {source}\nMODEL:\n  ARCH: {arch}\n  MODEL_NAME: ResNet\n"
                    f"RESNET:\n  DEPTH: 50\n  WIDTH_PER_GROUP: {width}\n  NUM_GROUPS: 1\n"
                    "  TRANS_FUNC: bottleneck_transform\n  STRIDE_1X1: False\n")
        payload = {"model_state": out, "cfg": cfg_text}
    path = Path(path)
    _atomic_save(payload, path)
    LOGGER.info("exported the slow 3D-ResNet%d of '%s' to '%s' (%s, %d tensors)", depth, source, path, format,
                len(out))
    return path


__all__ = ["EXPORT_FORMATS", "FORMAT_MMACTION", "FORMAT_MMACTION2", "FORMAT_PYSLOWFAST", "FORMAT_PYTORCHVIDEO",
           "FORMAT_SLOW_ENCODER", "FORMAT_STATE_DICT", "FORMAT_TRAINING", "LoadReport", "export_slow_encoder",
           "load_slow_encoder", "map_mmaction_keys"]
