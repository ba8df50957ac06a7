"""Load a slow encoder g_s from our checkpoints or from external (mmaction/TPN-named) weights.

Taught in notebook ``06_action_recognition``: downstream tasks use only the slow encoder
(VTHCL_SPEC g.13), and the released VTHCL weights target the mmaction ``ResNet_SlowFast`` naming of
the authors' TPN code base (VTHCL_SPEC e, g.11), so they need their keys renamed before they fit our
:class:`~vthcl_lib.models.ResNet3D`. Loading never fails silently: every load returns a
:class:`LoadReport` that lists what was loaded, missing, unexpected or of the wrong shape.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from vthcl_lib.config import ModelConfig
from vthcl_lib.models import ResNet3D, build_encoder, encoder_from_config

LOGGER = logging.getLogger("vthcl_lib.checkpoints")

# Source formats a LoadReport names.
FORMAT_SLOW_ENCODER = "vthcl slow_encoder.pt"
FORMAT_TRAINING = "vthcl last.pt (training checkpoint, slow.* keys)"
FORMAT_MMACTION = "mmaction/TPN backbone (conv1, bn1, layer1..layer4)"
FORMAT_STATE_DICT = "state dict with vthcl names"

# mmaction block attribute -> ours (BasicBlock3D / Bottleneck3D); conv3/bn3 exist in Bottlenecks only.
_BLOCK_NAMES = {"conv1": "conv_a", "bn1": "bn_a", "conv2": "conv_b", "bn2": "bn_b", "conv3": "conv_c", "bn3": "bn_c"}
_STEM_RE = re.compile(r"^(conv1|bn1)\.(.+)$")
_BLOCK_RE = re.compile(r"^layer([1-4])\.(\d+)\.(conv[123]|bn[123])\.(.+)$")
_DOWNSAMPLE_RE = re.compile(r"^layer([1-4])\.(\d+)\.downsample\.([01])\.(.+)$")


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
    ``ignored`` are keys deliberately left out (the fast encoder and heads of a training checkpoint).
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

    @property
    def clean(self) -> bool:
        """True when nothing was missing, unexpected or mismatched."""
        return not (self.missing or self.unexpected or self.mismatched)

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
        if not self.bn_stats_present:
            lines.append("  !! BatchNorm running statistics are NOT all in the checkpoint:")
            lines.append("     run evaluate.recalibrate_batchnorm before evaluating")
        if self.ignored:
            lines.append(f"  ignored on purpose: {len(self.ignored)} keys (fast encoder, heads: not used downstream)")
        lines.append(bar)
        return "\n".join(lines)


def _check_depth(depth: Any) -> int:
    if depth not in (18, 50) or isinstance(depth, bool):
        raise ValueError(f"depth={depth!r}; expected 18 or 50")
    return int(depth)


def _strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


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
        key = original
        for prefix in ("module.", "backbone."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        new = None
        if m := _STEM_RE.match(key):
            new = f"stem.{'conv' if m[1] == 'conv1' else 'bn'}.{m[2]}"
        elif m := _BLOCK_RE.match(key):
            if depth == 50 or m[3] not in ("conv3", "bn3"):
                new = f"res{int(m[1]) + 1}.{m[2]}.{_BLOCK_NAMES[m[3]]}.{m[4]}"
        elif m := _DOWNSAMPLE_RE.match(key):
            new = f"res{int(m[1]) + 1}.{m[2]}.shortcut.{'conv' if m[3] == '0' else 'bn'}.{m[4]}"
        if new is None:
            unmapped.append(original)
        else:
            mapped[new] = value
    return mapped, unmapped


def _read(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - our last.pt holds numpy RNG state, which the safe loader refuses
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any failure here means "not a checkpoint"
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


def _unpack(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], str, ModelConfig | None, list[str], list[str]]:
    """-> (state in our names, format, stored ModelConfig or None, unexpected, ignored)."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"'{path}' holds a {type(obj).__name__}; expected a checkpoint dict (state dict or "
                         "{'slow_encoder': ...} / {'model': ...} / {'state_dict': ...})")
    if isinstance(obj.get("slow_encoder"), Mapping):
        state, other = _split_tensors(obj["slow_encoder"])
        return state, FORMAT_SLOW_ENCODER, _model_cfg_from(obj.get("model")), [], other
    model = obj.get("model")
    if isinstance(model, Mapping) and any(str(k).startswith("slow.") for k in model):
        tensors, other = _split_tensors(_strip_prefix(model, "module."))
        state = {k[len("slow."):]: v for k, v in tensors.items() if k.startswith("slow.")}
        ignored = [k for k in tensors if not k.startswith("slow.")] + other
        config = obj.get("config")
        stored = config.get("model") if isinstance(config, Mapping) else None
        return state, FORMAT_TRAINING, _model_cfg_from(stored), [], ignored
    for wrapper in ("state_dict", "model"):  # mmcv / generic trainers wrap the weights once
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    tensors, other = _split_tensors(obj)
    if not tensors:
        raise ValueError(f"'{path}' holds no tensors (keys: {sorted(map(str, obj))[:8]}); expected model weights")
    tensors = {str(k): v for k, v in tensors.items()}
    tensors = _strip_prefix(tensors, "module.")
    bare = [k[len("backbone."):] if k.startswith("backbone.") else k for k in tensors]
    if any(_STEM_RE.match(k) or _BLOCK_RE.match(k) or _DOWNSAMPLE_RE.match(k) for k in bare):
        depth = 50 if any(_BLOCK_RE.match(k) and ".conv3." in k for k in bare) else 18
        mapped, unmapped = map_mmaction_keys(tensors, depth)
        return mapped, FORMAT_MMACTION, None, unmapped, other
    if any(k.startswith("slow.stem.") for k in tensors):  # a VTHCLNet state dict saved on its own
        state = {k[len("slow."):]: v for k, v in tensors.items() if k.startswith("slow.")}
        return state, FORMAT_TRAINING, None, [], [k for k in tensors if not k.startswith("slow.")] + other
    return tensors, FORMAT_STATE_DICT, None, [], other


def _infer_encoder(state: Mapping[str, torch.Tensor], path: Path) -> ResNet3D:
    """Depth (Bottlenecks have conv_c), stem width and temporal kernels from the weights' shapes."""
    stem = state.get("stem.conv.weight")
    if stem is None or stem.dim() != 5:
        raise ValueError(f"'{path}': cannot infer the architecture (no 5-D 'stem.conv.weight'); pass model_cfg")
    depth = 50 if any(".conv_c." in k for k in state) else 18
    kernels = [int(stem.shape[2])]
    for stage in ("res2", "res3", "res4", "res5"):
        w = state.get(f"{stage}.0.conv_a.weight")
        kernels.append(int(w.shape[2]) if w is not None and w.dim() == 5 else -1)
    overrides: dict[str, Any] = {"base_width": int(stem.shape[0])}
    if all(k >= 1 and k % 2 for k in kernels):
        overrides["temporal_kernels"] = tuple(kernels)
    return build_encoder(depth, "slow", **overrides)


def load_slow_encoder(path: str | os.PathLike, *, model_cfg: ModelConfig | None = None,
                      strict: bool = False, overrides: dict[str, Any] | None = None) -> tuple[ResNet3D, LoadReport]:
    """Build the slow encoder and load weights into it: ``(encoder, report)``.

    Notebook ``06_action_recognition``. Accepted files:

    * our ``run_dir/checkpoints/slow_encoder.pt`` (``{"slow_encoder", "model", "config"}``);
    * our full training checkpoint ``last.pt`` (``"model"`` holds ``slow.*`` keys; the fast encoder
      and the heads are ignored on purpose);
    * an external state dict, optionally wrapped in ``{"state_dict": ...}`` and with ``module.``
      prefixes: our names, or the mmaction/TPN names of the official VTHCL weights
      (``backbone.conv1``, ``backbone.layer1..4``; renamed by :func:`map_mmaction_keys`).

    The architecture comes from ``model_cfg`` if given, else from the config stored in our
    checkpoints, else from the weights (depth 50 when blocks have a third conv; stem width and
    temporal kernels from the conv shapes). Tensors of the wrong shape are skipped and reported,
    never crash the load. ``overrides`` (with ``model_cfg``) change the architecture in ways that keep
    every weight's shape, e.g. ``{"res5_stride": 1, "res5_dilation": 2}`` for detection. With ``strict=True`` anything missing, unexpected or mismatched raises
    ValueError with the report; otherwise the report is logged as a WARNING when the load is not
    clean. The encoder comes back on the CPU, in train mode.
    """
    path = Path(path)
    if not isinstance(strict, bool):
        raise ValueError(f"strict={strict!r}; expected True or False")
    if model_cfg is not None and not all(hasattr(model_cfg, a) for a in ("depth", "base_width", "fast_ratio")):
        raise ValueError(f"model_cfg is a {type(model_cfg).__name__}; expected a ModelConfig")
    state, source_format, stored_cfg, unexpected, ignored = _unpack(_read(path), path)
    if overrides and model_cfg is None:
        raise ValueError("overrides need model_cfg: the architecture they change must be given, not inferred")
    cfg = model_cfg if model_cfg is not None else stored_cfg
    encoder = encoder_from_config(cfg, "slow", **(overrides or {})) if cfg is not None else _infer_encoder(state, path)

    model_state = encoder.state_dict()
    loadable, mismatched = {}, []
    for name, value in state.items():
        if name not in model_state:
            unexpected.append(name)
        elif tuple(value.shape) != tuple(model_state[name].shape):
            mismatched.append((name, tuple(value.shape), tuple(model_state[name].shape)))
        else:
            loadable[name] = value
    encoder.load_state_dict(loadable, strict=False)
    missing = [k for k in model_state if k not in loadable and not k.endswith("num_batches_tracked")]
    bn_keys = [k for k in model_state if k.endswith(("running_mean", "running_var"))]
    report = LoadReport(
        path=str(path), source_format=source_format, depth=encoder.depth,
        loaded=len(loadable), total=len(model_state), missing=missing, unexpected=unexpected,
        mismatched=mismatched, bn_stats_present=all(k in loadable for k in bn_keys), ignored=ignored,
    )
    if strict and not report.clean:
        raise ValueError(f"strict load of '{path}' failed:\n{report}")
    if report.clean:
        LOGGER.info("loaded %d tensors from '%s' (%s)", report.loaded, path, source_format)
    else:
        LOGGER.warning("%s", report)
    return encoder, report
