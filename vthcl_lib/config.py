"""Configuration dataclasses and the presets ``ci``, ``demo``, ``paper_small``, ``paper_r18`` and ``paper_r50``.

Taught in notebook ``00_setup_and_data``. Presets live here and only here; notebooks and the
command line override single fields by name (``resolve_config("ci", alpha=4)``, or
``alpha=4`` on the command line). ``None`` always means "the preset's value".
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

PRESETS = ("ci", "demo", "paper_small", "paper_r18", "paper_r50")


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and content of the synthetic corpus written by ``data_scripts/make_synthetic.py``."""

    frame_size: int = 64  # frames are frame_size x frame_size (even: H.264 needs it)
    min_frames: int = 80  # each video's length is drawn from [min_frames, max_frames]
    max_frames: int = 128
    fps: int = 25
    num_pretrain: int = 2000  # Kinetics-style unlabeled pool
    ucf_groups: int = 25  # UCF-101-style groups (the real set has 25)
    ucf_clips_per_group: int = 3
    hmdb_per_class: int = 60
    background: str = "texture"  # "texture": a shared pool of textures | "plain": one uniform grey
    num_backgrounds: int = 4  # a small shared pool: a unique background per video is a shortcut
    distractor: bool = True  # a second, smaller sprite with its own unrelated motion
    tempo_range: tuple[float, float] = (0.5, 2.0)  # per-video speed factor, log-uniform
    noise_sigma: float = 0.03
    seed: int = 0
    # AVA-style detection set (notebook 08): several actors per video, keyframes at 1 fps
    ava_train_videos: int = 32
    ava_val_videos: int = 12
    ava_seconds: int = 6  # video length; keyframes at seconds 1 .. ava_seconds - 1
    ava_frame_size: int = 112  # larger than frame_size: RoIAlign needs a few res5 cells per actor
    ava_actors: tuple[int, int] = (2, 3)  # actors per video, drawn in this range
    # Epic-Kitchens-style anticipation set (notebook 09): long videos of consecutive segments
    epic_train_videos: int = 24
    epic_val_videos: int = 8
    epic_segments: int = 10  # segments per video
    epic_segment_seconds: tuple[float, float] = (2.2, 3.2)
    epic_follow_prob: float = 0.8  # chance that the next verb is the current verb's successor (else random)
    # Something-Something-V1-style set (notebook 10's ICM model at the paper presets): JPEG frame folders
    sthv1_train_videos: int = 240
    sthv1_val_videos: int = 80
    sthv1_test_videos: int = 16  # released without labels, like V1's test list


@dataclass(frozen=True)
class DataConfig:
    """Where the videos are and how clips are cut from them (VTHCL_SPEC a.1)."""

    data_root: str = "data/synthetic/demo"
    pretrain_dataset: str = "kinetics400"  # folder under data_root with train.csv + train/
    window: int = 64  # raw clip: consecutive frames both views cover
    tau: int = 8  # slow stride; the slow clip has window/tau frames
    alpha: int = 2  # relative tempo; the fast stride is tau/alpha
    short_video: str = "clamp"  # "clamp" | "loop": rule for videos shorter than the window
    backend: str = "decord"  # "decord" | "pyav" (CPU) | "torchcodec" (CUDA, optional: vthcl_lib.video)
    decode_size: tuple[int, int] | None = (64, 64)  # (h, w) at decode time; None keeps the file's size
    crop_size: int = 56  # output of the random resized crop
    crop_scale: tuple[float, float] = (0.3, 1.0)
    color_jitter: float = 0.4  # brightness/contrast/saturation strength; 0 turns it off
    hue_jitter: float = 0.1
    grayscale_prob: float = 0.2
    channel_shuffle_prob: float = 0.0  # chance of a random RGB permutation per colour draw
    color_per_view: bool = False  # pre-training: the slow and fast clip get separate colour draws (same crop)
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    num_test_clips: int = 10  # uniformly spaced clips per test video
    use_cache: bool = True  # decode each video once into a uint8 cache (CPU presets)
    cache_dir: str | None = None  # None: <data_root>/.frame_cache
    num_workers: int = 0
    failure_budget: int = 20  # bad videos tolerated before a run stops with an error
    # Pre-training: "device" hands uint8 clips from the workers and runs colour + normalisation batched in
    # the step; "worker" does all of it per clip in the workers; "auto": "device" when training on CUDA,
    # else "worker" (faster on CPUs: the placement figures of `python -m vthcl_lib.bench data`)
    augment_on: str = "auto"


@dataclass(frozen=True)
class ModelConfig:
    """The two encoders and their projection heads (VTHCL_SPEC (b), a.4)."""

    depth: int = 18  # 18 (BasicBlock 2-2-2-2) or 50 (Bottleneck 3-4-6-3)
    base_width: int = 16  # slow stem width; the paper's is 64 (res2..res5 widths follow it)
    fast_ratio: float = 0.5  # fast width / slow width; the paper's (SlowFast's beta) is 1/8
    head: str = "mlp"  # "mlp" (Linear-ReLU-Linear) | "linear" (one 1x1x1 conv, for the ICM)
    head_hidden: int | None = None  # MLP hidden width; None: the level's input width
    embed_dim: int = 128  # d, the embedding and memory-bank width
    levels: int = 3  # D: 1 {res5}, 2 {res4, res5}, 3 {res3, res4, res5}


@dataclass(frozen=True)
class ContrastConfig:
    """The objective: memory banks, negatives, InfoNCE per level (VTHCL_SPEC a.3-a.7, f.1)."""

    temperature: float = 0.07
    num_negatives: int = 16384  # N; capped at the bank size minus one
    bank_momentum: float = 0.5  # m in B <- normalize(m B + (1 - m) z) (CMC convention)
    negatives: str = "shared"  # "shared" (one set per step) | "per_query" (CMC's gather)
    positives: str = "bank"  # "bank" (CMC: the other view's bank entry) | "live" (the other view's feature)
    loss: str = "softmax"  # "softmax" (InfoNCE, softmax cross-entropy) | "nce" (NCE with a constant Z)
    level_weights: tuple[float, ...] = (1.0, 1.0, 1.0)  # lambda^k for res3, res4, res5 (used: the last D)
    mask_own_index: bool = True  # a query never meets its own bank entry among the negatives
    in_batch_negatives: bool = False  # also contrast with the other view's live features of the rest of the batch


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and the run's mechanics (VTHCL_SPEC c.1; DESIGN sections 5 and 6)."""

    epochs: int = 20
    batch_size: int = 32  # global batch; split across ranks under torchrun
    optimizer: str = "sgd"  # "sgd" (the paper's) | "adamw"
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0  # linear warm-up before the half-period cosine
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16" (autocast; CUDA only)
    channels_last: bool = False  # channels_last_3d on CUDA
    sync_bn: bool = False  # SyncBatchNorm under torchrun
    max_steps_per_epoch: int | None = None  # cap for quick checks and benchmarks; None or 0: no cap
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch always saves)
    progress: bool = True
    # gradient accumulation: each rank's share of the batch runs in pieces of this size (None: at once);
    # the global batch, the step's negatives and the once-per-step bank update stay those of batch_size
    micro_batch_size: int | None = None


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning the slow encoder on UCF-101 / HMDB-51 (VTHCL_SPEC c.2; notebook ``06_action_recognition``).

    Paper: SGD, batch 64, lr 0.1 divided by 10 at epochs 40 and 80 of 100; momentum 0.9, weight
    decay 1e-4 and dropout 0.5 before the classifier are TPN's defaults (the paper does not say).
    """

    finetune_epochs: int = 100
    finetune_batch_size: int = 64
    finetune_lr: float = 0.1
    finetune_milestones: tuple[int, ...] = (40, 80)  # epochs at which the lr is divided by 10
    finetune_momentum: float = 0.9
    finetune_weight_decay: float = 1e-4
    finetune_warmup_epochs: float = 0.0  # linear warm-up (0 in the paper's schedule)
    dropout: float = 0.5
    finetune_dataset: str = "ucf101"  # "ucf101" | "hmdb51"
    splits: tuple[int, ...] = (1, 2, 3)  # the official splits to run; their mean is reported


@dataclass(frozen=True)
class ProbeConfig:
    """Frozen-feature protocols from one feature extraction (VTHCL_SPEC c.3, d; notebook ``07_linear_probe_and_retrieval``)."""

    probe_level: str = "res5"  # which stage's global-average-pooled map is the feature
    recalibrate_bn: bool = True  # re-estimate BN statistics on clean training clips first (SYNTHETIC_NOTES)
    probe_epochs: int = 100  # linear classifier on standardised features
    probe_lr: float = 1e-2
    probe_weight_decay: float = 1e-4
    knn_k: int = 20
    knn_temperature: float = 0.07  # InsDis weighting exp(cos / T)
    retrieval_ks: tuple[int, ...] = (1, 5, 10, 20, 50)


@dataclass(frozen=True)
class DetectionConfig:
    """AVA-style action detection (VTHCL_SPEC c.4; notebook ``08_action_detection``).

    Paper: the slow encoder with res5 at spatial stride 1 and dilation 2, 3D RoIAlign on res5, a
    per-class sigmoid classifier trained with binary cross-entropy, 24 epochs of SGD at lr 0.1
    divided by 10 at 16 and 22, weight decay 1e-7, BatchNorm not frozen. Batch, momentum, dropout
    and the proposal threshold follow pySlowFast's AVA configs [R].
    """

    detection_dataset: str = "ava"  # folder under data_root
    action_list: str = "ava_action_list_v2.2.pbtxt"  # under annotations/: the classes trained and scored
    detection_epochs: int = 24
    detection_batch_size: int = 16  # clips per step (each brings all its boxes)
    detection_lr: float = 0.1
    detection_milestones: tuple[int, ...] = (16, 22)
    detection_momentum: float = 0.9
    detection_weight_decay: float = 1e-7
    detection_warmup_epochs: float = 0.0
    detection_dropout: float = 0.5
    detection_res5_stride: int = 1
    detection_res5_dilation: int = 2
    roi_size: int = 7  # RoIAlign output (roi_size x roi_size), then max-pooled to one vector
    detection_decode_size: tuple[int, int] | None = None  # frames at decode; None: the file's own size
    proposal_score_threshold: float = 0.9  # person boxes kept for testing
    iou_threshold: float = 0.5  # frame-level AP match threshold (the AVA protocol)


@dataclass(frozen=True)
class AnticipationConfig:
    """Epic-Kitchens-style action anticipation (VTHCL_SPEC c.5; notebook ``09_action_anticipation``).

    Paper: observe tau_o = 1 s ending tau_a = 1 s before the segment; the slow encoder, a shared MLP,
    separate verb and noun heads; 80 epochs of lr 0.1 divided by 10 at 40 and 60. The MLP width,
    momentum, weight decay and dropout are not stated [R].
    """

    anticipation_dataset: str = "epic_kitchens"  # folder under data_root
    tau_o: float = 1.0  # seconds observed
    tau_a: float = 1.0  # seconds between the observation's end and the segment's start
    anticipation_epochs: int = 80
    anticipation_batch_size: int = 32
    anticipation_lr: float = 0.1
    anticipation_milestones: tuple[int, ...] = (40, 60)
    anticipation_momentum: float = 0.9
    anticipation_weight_decay: float = 1e-4
    anticipation_warmup_epochs: float = 0.0
    anticipation_dropout: float = 0.5
    mlp_hidden: int = 512  # the shared MLP's width [R]
    anticipation_decode_size: tuple[int, int] | None = None  # None: data.decode_size


@dataclass(frozen=True)
class Config:
    """Everything a notebook or a run needs; print it to record the effective settings."""

    preset: str = "demo"
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    run_dir: str = "runs/demo"
    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    contrast: ContrastConfig = field(default_factory=ContrastConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    anticipation: AnticipationConfig = field(default_factory=AnticipationConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:  # the notebooks print the config as their record
        return json.dumps(self.to_dict(), indent=2)


def _preset(name: str) -> Config:
    if name == "ci":
        return Config(
            preset="ci",
            run_dir="runs/ci",
            data=DataConfig(
                data_root="data/synthetic/ci", window=16, tau=4, alpha=2, decode_size=(32, 32),
                crop_size=32, num_test_clips=3, failure_budget=5,
            ),
            synthetic=SyntheticConfig(
                frame_size=32, min_frames=24, max_frames=40, num_pretrain=24, ucf_groups=6,
                ucf_clips_per_group=1, hmdb_per_class=6, ava_train_videos=3, ava_val_videos=2, ava_seconds=3,
                ava_frame_size=48, epic_train_videos=3, epic_val_videos=2, epic_segments=5,
                epic_segment_seconds=(1.2, 1.6),
                sthv1_train_videos=12, sthv1_val_videos=4, sthv1_test_videos=2,
            ),
            model=ModelConfig(depth=18, base_width=8, fast_ratio=0.5, embed_dim=32),
            contrast=ContrastConfig(temperature=0.1, num_negatives=16),
            train=TrainConfig(epochs=2, batch_size=8, lr=0.01),
            finetune=FinetuneConfig(finetune_epochs=2, finetune_batch_size=8, finetune_lr=0.05, finetune_milestones=(1,)),
            probe=ProbeConfig(probe_epochs=20, knn_k=5),
            detection=DetectionConfig(detection_epochs=2, detection_batch_size=4, detection_lr=0.05,
                                      detection_milestones=(1,), roi_size=3, detection_decode_size=(48, 48)),
            anticipation=AnticipationConfig(tau_o=0.5, tau_a=0.25, anticipation_epochs=2, anticipation_batch_size=4,
                                            anticipation_lr=0.05, anticipation_milestones=(1,), mlp_hidden=32),
        )
    if name == "demo":
        # CPU-sized: a narrow R18 layout on 56-pixel crops, on a synthetic task where the label is the
        # motion alone. Notebook 07 explains the choices: uncluttered videos (clutter made the motion
        # unlearnable in a CPU budget, while random features stay weak anyway), one crop but separate
        # colour draws per view (colour must not identify a video), live positives plus in-batch
        # negatives beside the bank's, AdamW.
        return Config(
            preset="demo",
            run_dir="runs/demo",
            data=DataConfig(color_per_view=True, channel_shuffle_prob=1.0, grayscale_prob=0.3),
            synthetic=SyntheticConfig(background="plain", distractor=False, noise_sigma=0.0),
            model=ModelConfig(depth=18, base_width=16, fast_ratio=0.5, embed_dim=128),
            contrast=ContrastConfig(temperature=0.1, num_negatives=32, positives="live", in_batch_negatives=True),
            train=TrainConfig(epochs=10, batch_size=32, optimizer="adamw", lr=2e-3, weight_decay=1e-4, warmup_epochs=1.0),
            finetune=FinetuneConfig(finetune_epochs=10, finetune_batch_size=32, finetune_lr=0.05,
                                    finetune_milestones=(7, 9), splits=(1,)),
            detection=DetectionConfig(detection_epochs=12, detection_batch_size=16, detection_lr=0.05,
                                      detection_milestones=(8, 11), detection_decode_size=(112, 112)),
            anticipation=AnticipationConfig(anticipation_epochs=20, anticipation_batch_size=32, anticipation_lr=0.05,
                                            anticipation_milestones=(14, 18), mlp_hidden=256),
        )
    if name == "paper_small":
        # The paper's own objective at a CPU scale on the demo corpus (issue 14): bank positives, one
        # shared set of negatives per step (all 1,999 other videos: N = 16384 is capped at the bank),
        # T = 0.07, m = 0.5, D = 3 MLP heads to d = 128, SGD lr 0.03 with momentum 0.9 and weight decay
        # 1e-4, half-period cosine, one augmentation draw shared by both views. Only sizes differ from
        # paper_r18, each sized by a measurement (4-epoch runs, seed 0, notebooks 04 and 07):
        # - narrow encoders (stem 8) and short clips (window 32: 4 slow and 8 fast frames at 48 pixels)
        #   make an epoch of the 2,000-video pool about 20 s with one torch thread on 2 shared cores,
        #   so 20 epochs for each of 3 seeds and the evaluation took 22 min (make demo-paper-small);
        # - lr stays the paper's 0.03 at batch 32: 0.00375 (linearly scaled from batch 256) and 0.12
        #   (0.5 warm-up epochs) gave the same collapse (spread > 0.95) and no better probe;
        # - batch 32: batch 8 (4x the steps per bank refresh) collapsed as well (spread 0.998);
        # - colour: the demo's strengths (channel shuffle, grayscale 0.3) in ONE draw for both views;
        #   with the paper's milder jitter the embeddings collapsed the same way (spread 0.993).
        # The bank is not the bottleneck: bank_cos reaches 0.9 by epoch 4 (rows track the encoder);
        # the embeddings collapse onto one direction, so the bank positives carry no instance signal.
        # Why (tools/bank_probe.py, notebook 07): a bank positive comes from another augmentation draw; with
        # one fixed clip per video the same objective leaves chance within 7 updates per row, with fresh
        # draws it stays at chance after 300.
        return Config(
            preset="paper_small",
            run_dir="runs/paper_small",
            data=DataConfig(window=32, tau=8, alpha=2, crop_size=48, channel_shuffle_prob=1.0, grayscale_prob=0.3),
            synthetic=SyntheticConfig(background="plain", distractor=False, noise_sigma=0.0),  # the demo corpus
            model=ModelConfig(depth=18, base_width=8, fast_ratio=0.5, embed_dim=128),
            contrast=ContrastConfig(),
            train=TrainConfig(epochs=20, batch_size=32, optimizer="sgd", lr=0.03, momentum=0.9, weight_decay=1e-4),
            finetune=FinetuneConfig(finetune_epochs=10, finetune_batch_size=32, finetune_lr=0.05,
                                    finetune_milestones=(7, 9), splits=(1,)),
        )
    if name in ("paper_r18", "paper_r50"):
        # The paper's data settings (VTHCL_SPEC c.1): 64-frame window, tau 8, alpha 2, 224 crops
        # of the native frames; real datasets prepared by data_scripts/prepare_*.py under data/.
        return Config(
            preset=name,
            run_dir=f"runs/{name}",
            data=DataConfig(
                data_root="data", window=64, tau=8, alpha=2, decode_size=None, crop_size=224,
                crop_scale=(0.2, 1.0), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                use_cache=False, num_workers=8, failure_budget=200,
                # PyAV seeks to the keyframe before the window; decord indexes the whole file on every
                # open, so its item cost grows with the file (`python -m vthcl_lib.bench data --paper`)
                backend="pyav",
            ),
            # AVA: the 60 classes of the standard evaluation; frames resized to 256 x 320 at decode (the
            # boxes are normalised, so any size keeps them right) [R] (VTHCL_SPEC c.4)
            detection=DetectionConfig(action_list="ava_action_list_v2.2_for_activitynet_2019.pbtxt",
                                      detection_decode_size=(256, 320)),
            # The paper's pre-training (VTHCL_SPEC b, c.1): full widths, fast path 1/8, MLP heads to 128,
            # N = 16384, T = 0.07, m = 0.5, D = 3; SGD lr 0.03, momentum 0.9, wd 1e-4, batch 256,
            # 200 epochs of half-period cosine; bf16 and channels_last_3d on GPUs.
            model=ModelConfig(depth=18 if name == "paper_r18" else 50, base_width=64, fast_ratio=1 / 8),
            contrast=ContrastConfig(),
            train=TrainConfig(epochs=200, batch_size=256, lr=0.03, precision="bf16", channels_last=True, sync_bn=True),
        )
    raise ValueError(f"unknown preset {name!r}; expected one of {PRESETS}")


def _sections(cfg: Config) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))}


def field_owner(cfg: Config, name: str) -> str | None:
    """The section (``"data"``, ``"synthetic"``, ...) that holds field ``name``; None for top level."""
    if name in {f.name for f in fields(cfg)} and name not in _sections(cfg):
        return None
    owners = [sec for sec, obj in _sections(cfg).items() if name in {f.name for f in fields(obj)}]
    if not owners:
        known = sorted({f.name for obj in [cfg, *_sections(cfg).values()] for f in fields(obj)} - set(_sections(cfg)))
        raise ValueError(f"unknown config field {name!r}; known fields: {', '.join(known)}")
    if len(owners) > 1:
        raise ValueError(f"config field {name!r} is ambiguous: it is in {owners}; write section.name")
    return owners[0]


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Turn command-line strings and YAML lists into the field's type."""
    ann = annotation
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, str) and value.lower() in ("none", "null"):
            return None
        inner = [a for a in args if a is not type(None)]
        for candidate in inner:
            try:
                return _coerce(value, candidate, name)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"{name}={value!r} does not fit {annotation}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        items = list(value)
        kinds = [args[0]] * len(items) if args[-1] is Ellipsis else list(args)
        if len(kinds) != len(items):
            raise ValueError(f"{name}={value!r} needs {len(kinds)} values")
        return tuple(_coerce(v, k, name) for v, k in zip(items, kinds))
    if ann is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{name}={value!r} is not a boolean (true/false)")
        return bool(value)
    if ann in (int, float, str):
        try:
            out = ann(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name}={value!r} is not a valid {ann.__name__}") from err
        if ann is int and isinstance(value, float) and value != out:
            raise ValueError(f"{name}={value!r} must be a whole number")
        return out
    return value


def apply_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """Return ``cfg`` with fields replaced by name (``"alpha"`` or ``"data.alpha"``); ``None`` values are skipped."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        section = section or field_owner(cfg, name)
        target = cfg if section is None else _sections(cfg).get(section)
        if target is None:
            raise ValueError(f"unknown config section {section!r} in {key!r}")
        types_by_name = typing.get_type_hints(type(target))
        if name not in types_by_name:
            raise ValueError(f"unknown config field {key!r}")
        coerced = _coerce(value, types_by_name[name], key)
        if section is None:
            top[name] = coerced
        else:
            nested.setdefault(section, {})[name] = coerced
    for section, values in nested.items():
        top[section] = replace(getattr(cfg, section), **values)
    out = replace(cfg, **top)
    validate(out)
    return out


def validate(cfg: Config) -> None:
    """Fail at once, naming the parameter, on settings that cannot work (DESIGN section 6)."""
    from vthcl_lib.synthetic import check_synthetic_config
    from vthcl_lib.tempo import SHORT_VIDEO_RULES, check_tempo
    from vthcl_lib.video import check_backend, check_size

    _check_finite(cfg)
    d = cfg.data
    check_tempo(d.window, d.tau, d.alpha)
    if d.short_video not in SHORT_VIDEO_RULES:
        raise ValueError(f"short_video={d.short_video!r}; expected one of {SHORT_VIDEO_RULES}")
    check_backend(d.backend)
    check_size(d.decode_size, "decode_size")
    if d.crop_size < 8:
        raise ValueError(f"crop_size={d.crop_size} is too small; expected >= 8")
    if d.decode_size is not None and d.crop_size > min(d.decode_size):
        raise ValueError(f"crop_size={d.crop_size} is larger than decode_size={tuple(d.decode_size)}; "
                         "expected crop_size <= the smaller decoded side")
    if d.color_jitter < 0 or not 0 <= d.hue_jitter <= 0.5:
        raise ValueError(f"color_jitter={d.color_jitter}, hue_jitter={d.hue_jitter}: "
                         "expected color_jitter >= 0 and 0 <= hue_jitter <= 0.5")
    for name in ("grayscale_prob", "channel_shuffle_prob"):
        if not 0 <= getattr(d, name) <= 1:
            raise ValueError(f"{name}={getattr(d, name)}; expected a probability in [0, 1]")
    if any(s <= 0 for s in d.std):
        raise ValueError(f"std={d.std}; expected values > 0 (frames are divided by it)")
    for name in ("num_workers", "failure_budget"):
        if getattr(d, name) < 0:
            raise ValueError(f"{name}={getattr(d, name)}; expected a whole number >= 0")
    if d.num_test_clips < 1:
        raise ValueError(f"num_test_clips={d.num_test_clips}; expected >= 1")
    if not 0 < d.crop_scale[0] <= d.crop_scale[1] <= 1:
        raise ValueError(f"crop_scale={d.crop_scale}; expected 0 < low <= high <= 1")
    if d.augment_on not in ("auto", "worker", "device"):
        raise ValueError(f"augment_on={d.augment_on!r}; expected 'auto', 'worker' or 'device'")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ValueError(f"device={cfg.device!r}; expected 'auto', 'cpu' or 'cuda[:N]'")
    m, c, t = cfg.model, cfg.contrast, cfg.train
    if m.depth not in (18, 50):
        raise ValueError(f"depth={m.depth}; expected 18 or 50")
    if m.head not in ("mlp", "linear"):
        raise ValueError(f"head={m.head!r}; expected 'mlp' or 'linear'")
    if m.levels not in (1, 2, 3):
        raise ValueError(f"levels={m.levels}; expected 1 ({{res5}}), 2 ({{res4, res5}}) or 3 ({{res3, res4, res5}})")
    if cfg.seed < 0:
        raise ValueError(f"seed={cfg.seed}; expected a whole number >= 0")
    if m.head_hidden is not None and m.head_hidden < 1:
        raise ValueError(f"head_hidden={m.head_hidden}; expected None (the level's width) or >= 1")
    if m.base_width < 1 or not 0 < m.fast_ratio <= 1 or m.embed_dim < 1:
        raise ValueError(f"base_width={m.base_width}, fast_ratio={m.fast_ratio}, embed_dim={m.embed_dim}: "
                         "expected base_width >= 1, 0 < fast_ratio <= 1, embed_dim >= 1")
    if c.temperature <= 0 or not 0 <= c.bank_momentum < 1 or c.num_negatives < 1:
        raise ValueError(f"temperature={c.temperature}, bank_momentum={c.bank_momentum}, num_negatives={c.num_negatives}: "
                         "expected temperature > 0, 0 <= bank_momentum < 1, num_negatives >= 1")
    for name, value, allowed in (("negatives", c.negatives, ("shared", "per_query")),
                                 ("positives", c.positives, ("bank", "live")), ("loss", c.loss, ("softmax", "nce")),
                                 ("optimizer", t.optimizer, ("sgd", "adamw")),
                                 ("precision", t.precision, ("fp32", "bf16", "fp16"))):
        if value not in allowed:
            raise ValueError(f"{name}={value!r}; expected one of {allowed}")
    if len(c.level_weights) != 3:
        raise ValueError(f"level_weights={c.level_weights} needs 3 values (res3, res4, res5)")
    used = c.level_weights[3 - m.levels:]  # the last D weights are the ones trained with
    if any(w < 0 for w in c.level_weights) or not any(w > 0 for w in used):
        raise ValueError(f"level_weights={c.level_weights} with levels={m.levels}: expected weights >= 0 and "
                         f"at least one > 0 among the {m.levels} used")
    if t.epochs < 1 or t.batch_size < 1 or t.lr <= 0:
        raise ValueError(f"epochs={t.epochs}, batch_size={t.batch_size}, lr={t.lr}: expected positive values")
    if not 0 <= t.momentum < 1 or t.weight_decay < 0 or t.warmup_epochs < 0:
        raise ValueError(f"momentum={t.momentum}, weight_decay={t.weight_decay}, warmup_epochs={t.warmup_epochs}: "
                         "expected 0 <= momentum < 1, weight_decay >= 0, warmup_epochs >= 0")
    if t.checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={t.checkpoint_every}; expected a whole number of epochs >= 1 "
                         "(the last epoch always saves)")
    if t.max_steps_per_epoch is not None and t.max_steps_per_epoch < 0:
        raise ValueError(f"max_steps_per_epoch={t.max_steps_per_epoch}; expected >= 0 (None or 0: no cap)")
    if t.micro_batch_size is not None:
        if not 1 <= t.micro_batch_size <= t.batch_size:
            raise ValueError(f"micro_batch_size={t.micro_batch_size}; expected None or 1..batch_size={t.batch_size}")
        if c.in_batch_negatives or c.negatives != "shared":
            # both read the whole batch at once: a micro-batch would see other negatives
            raise ValueError(f"micro_batch_size={t.micro_batch_size} needs negatives='shared' and "
                             f"in_batch_negatives=false (got {c.negatives!r}, {c.in_batch_negatives})")
    f, p = cfg.finetune, cfg.probe
    for prefix, momentum, decay, warmup in (
            ("finetune", f.finetune_momentum, f.finetune_weight_decay, f.finetune_warmup_epochs),
            ("detection", cfg.detection.detection_momentum, cfg.detection.detection_weight_decay,
             cfg.detection.detection_warmup_epochs),
            ("anticipation", cfg.anticipation.anticipation_momentum, cfg.anticipation.anticipation_weight_decay,
             cfg.anticipation.anticipation_warmup_epochs)):
        if not 0 <= momentum < 1 or decay < 0 or warmup < 0:
            raise ValueError(f"{prefix}_momentum={momentum}, {prefix}_weight_decay={decay}, "
                             f"{prefix}_warmup_epochs={warmup}: expected 0 <= momentum < 1, weight decay >= 0, "
                             "warm-up >= 0")
    if p.probe_weight_decay < 0:
        raise ValueError(f"probe_weight_decay={p.probe_weight_decay}; expected >= 0")
    if f.finetune_epochs < 1 or f.finetune_batch_size < 1 or f.finetune_lr <= 0:
        raise ValueError(f"finetune_epochs={f.finetune_epochs}, finetune_batch_size={f.finetune_batch_size}, "
                         f"finetune_lr={f.finetune_lr}: expected positive values")
    if list(f.finetune_milestones) != sorted(set(f.finetune_milestones)) or any(m < 1 for m in f.finetune_milestones):
        raise ValueError(f"finetune_milestones={f.finetune_milestones}; expected increasing epochs >= 1")
    if not 0 <= f.dropout < 1:
        raise ValueError(f"dropout={f.dropout}; expected 0 <= dropout < 1")
    if f.finetune_dataset not in ("ucf101", "hmdb51"):
        raise ValueError(f"finetune_dataset={f.finetune_dataset!r}; expected 'ucf101' or 'hmdb51'")
    if not f.splits or any(s not in (1, 2, 3) for s in f.splits):
        raise ValueError(f"splits={f.splits}; expected one or more of 1, 2, 3")
    if p.probe_level not in ("res2", "res3", "res4", "res5"):
        raise ValueError(f"probe_level={p.probe_level!r}; expected one of res2, res3, res4, res5")
    if p.probe_epochs < 1 or p.probe_lr <= 0 or p.knn_k < 1 or p.knn_temperature <= 0:
        raise ValueError(f"probe_epochs={p.probe_epochs}, probe_lr={p.probe_lr}, knn_k={p.knn_k}, "
                         f"knn_temperature={p.knn_temperature}: expected positive values")
    if not p.retrieval_ks or any(k < 1 for k in p.retrieval_ks):
        raise ValueError(f"retrieval_ks={p.retrieval_ks}; expected whole numbers >= 1")
    dt, an = cfg.detection, cfg.anticipation
    for prefix, epochs, batch, lr, milestones in (
            ("detection", dt.detection_epochs, dt.detection_batch_size, dt.detection_lr, dt.detection_milestones),
            ("anticipation", an.anticipation_epochs, an.anticipation_batch_size, an.anticipation_lr,
             an.anticipation_milestones)):
        if epochs < 1 or batch < 1 or lr <= 0:
            raise ValueError(f"{prefix}_epochs={epochs}, {prefix}_batch_size={batch}, {prefix}_lr={lr}: "
                             "expected positive values")
        if list(milestones) != sorted(set(milestones)) or any(m < 1 for m in milestones):
            raise ValueError(f"{prefix}_milestones={milestones}; expected increasing epochs >= 1")
    if dt.detection_res5_stride not in (1, 2) or dt.detection_res5_dilation < 1 or dt.roi_size < 1:
        raise ValueError(f"detection_res5_stride={dt.detection_res5_stride}, detection_res5_dilation="
                         f"{dt.detection_res5_dilation}, roi_size={dt.roi_size}: expected stride 1 or 2, "
                         "dilation >= 1, roi_size >= 1")
    if not 0 <= dt.detection_dropout < 1 or not 0 <= an.anticipation_dropout < 1:
        raise ValueError(f"detection_dropout={dt.detection_dropout}, anticipation_dropout={an.anticipation_dropout}; "
                         "expected 0 <= dropout < 1")
    if not 0 <= dt.proposal_score_threshold <= 1 or not 0 < dt.iou_threshold <= 1:
        raise ValueError(f"proposal_score_threshold={dt.proposal_score_threshold}, iou_threshold={dt.iou_threshold}: "
                         "expected both in [0, 1] (iou_threshold > 0)")
    check_size(dt.detection_decode_size, "detection_decode_size")
    check_size(an.anticipation_decode_size, "anticipation_decode_size")
    if an.tau_o <= 0 or an.tau_a < 0 or an.mlp_hidden < 1:
        raise ValueError(f"tau_o={an.tau_o}, tau_a={an.tau_a}, mlp_hidden={an.mlp_hidden}: "
                         "expected tau_o > 0, tau_a >= 0, mlp_hidden >= 1")
    check_synthetic_config(cfg.synthetic)


def _check_finite(cfg: Config) -> None:
    """Every float setting (alone or in a tuple) must be a finite number: ``lr=inf`` or ``nan`` never runs."""
    for section in [cfg, *_sections(cfg).values()]:
        for f in fields(section):
            value = getattr(section, f.name)
            items = value if isinstance(value, tuple) else (value,)
            for item in items:
                if isinstance(item, float) and not math.isfinite(item):
                    raise ValueError(f"{f.name}={value!r}; expected a finite number")


def resolve_config(
    preset: str | None = None,
    *,
    base_dir: str | os.PathLike | None = None,
    run_name: str | None = None,
    **overrides: Any,
) -> Config:
    """The preset's config with ``overrides`` applied (notebook ``00_setup_and_data``).

    Notebooks call ``resolve_config(PRESET, base_dir="..", data_root=DATA_ROOT, ...)`` in their
    third cell. The presets' own relative paths (``data/...``, ``runs/...``) are relative to the
    project root, so they resolve against ``base_dir``; a path passed in as an override is the
    caller's, so it resolves against the current directory, as a user typing it would expect.
    ``run_name`` (a notebook's name) makes the default run folder ``runs/<preset>/<run_name>``.
    """
    cfg = apply_overrides(_preset(preset or "demo"), overrides)
    if run_name and overrides.get("run_dir") is None:
        cfg = replace(cfg, run_dir=str(Path(cfg.run_dir) / run_name))
    if base_dir is None:
        return cfg
    given = {key.rpartition(".")[2] for key, value in overrides.items() if value is not None}

    def rel(name: str, path: str | None) -> str | None:
        if path is None or Path(path).is_absolute():
            return path
        return str((Path(path) if name in given else Path(base_dir) / path).resolve())

    return replace(
        cfg,
        run_dir=rel("run_dir", cfg.run_dir),
        data=replace(cfg.data, data_root=rel("data_root", cfg.data.data_root), cache_dir=rel("cache_dir", cfg.data.cache_dir)),
    )


def load_params_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a papermill parameters YAML (``PRESET: ci``, ``EPOCHS: 2``, ...) as lower-case overrides."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file '{path}' does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"config file '{path}' is not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"config file '{path}' must hold a mapping of NAME: value, got {type(raw).__name__}")
    return {str(k).lower(): v for k, v in raw.items()}


def config_from_params(params: Mapping[str, Any], *, base_dir: str | os.PathLike | None = None) -> Config:
    """Config from notebook-style parameters (the YAML files, plus ``key=value`` overrides)."""
    params = dict(params)
    preset = params.pop("preset", None) or "demo"
    notebook_only = {"interactive"}  # notebook display knobs, not config fields
    return resolve_config(preset, base_dir=base_dir, **{k: v for k, v in params.items() if k not in notebook_only})


def config_table(cfg: Config, sections: typing.Sequence[str] = ()) -> Any:
    """A compact view of ``cfg``: the run-level settings, then only the named ``sections``.

    Every notebook shows this in its third cell instead of the whole configuration (about 190
    lines); :func:`vthcl_lib.runs.save_config` keeps the whole of it in ``<run_dir>/config.json``.
    A pandas DataFrame, one row per setting, indexed by (section, name); notebook ``00_setup_and_data``.
    """
    import pandas as pd

    known = _sections(cfg)
    unknown = [name for name in sections if name not in known]
    if isinstance(sections, str) or unknown:
        raise ValueError(f"config_table sections={sections!r}; expected a list of sections among "
                         f"{', '.join(known)}")
    rows = [("run", f.name, getattr(cfg, f.name)) for f in fields(cfg) if f.name not in known]
    rows += [(name, f.name, getattr(known[name], f.name)) for name in sections for f in fields(known[name])]
    table = pd.DataFrame(rows, columns=["section", "name", "value"])
    # str, so that tuples, None and paths print the same in a log and in JupyterLab
    table["value"] = table["value"].map(lambda v: v if isinstance(v, str) else repr(v))
    return table.set_index(["section", "name"])
