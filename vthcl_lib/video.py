"""Frame-accurate video reading through decord (default) or PyAV, optionally on a CUDA GPU, and of
JPEG frame folders.

Taught in notebook ``00_setup_and_data`` (reading frames) and ``01_tempo_sampling`` (decode once).

The CPU backends (:data:`BACKENDS`) are decord and PyAV. :data:`GPU_BACKENDS` adds ``"torchcodec"``:
TorchCodec decoding on the current CUDA device (NVDEC), for servers where the CPUs cannot keep up.
It needs a CUDA build of torch and ``pip install torchcodec`` (not part of the CPU install: its
wheels link CUDA torch's libraries). It is imported only when asked for; where it cannot be used,
:func:`check_backend` (run by the config's validation too) raises :class:`BackendUnavailableError`
naming the backend and why. Its frames come back on the CPU like the others', resized on the GPU
first when ``size`` is given. CUDA does not survive a fork: use it in the main process or in
DataLoader workers started with ``multiprocessing_context="spawn"``.

A folder of numbered JPEG frames (Something-Something V1 ships ``<id>/00001.jpg ...``) is a video
too: :func:`read_frames`, :func:`probe` and :func:`count_decodable_frames` accept its path, whatever
the backend (the frames are decoded with Pillow), so every dataset, the cache and the scan read it
like a file. A folder carries no frame rate: :data:`FRAME_FOLDER_FPS` is Something-Something's.

Two rules shape this module:

* nothing here keeps a reader open between calls, so no decord or PyAV object is ever carried
  into a forked DataLoader worker (a decord reader created before the fork deadlocks the workers);
* every failure, whatever the backend raises (decord's ``DECORDError`` is not a ``RuntimeError``),
  becomes a :class:`VideoDecodeError` that names the file.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

BACKENDS = ("decord", "pyav")  # the CPU backends, always installed
GPU_BACKENDS = ("torchcodec",)  # optional, imported lazily (module docstring)
ALL_BACKENDS = BACKENDS + GPU_BACKENDS

# PyAV seeks (instead of decoding from frame 0) when the first wanted frame lies this far in.
_SEEK_AFTER_FRAMES = 96

FRAME_FOLDER_FPS = 12.0  # Something-Something V1's frames were extracted at 12 fps
FRAME_FOLDER_EXTENSIONS = (".jpg", ".jpeg")


class VideoDecodeError(Exception):
    """A video could not be read; ``path`` names the file and ``reason`` says why.

    Taught in notebook ``00_setup_and_data``.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode video '{self.path}': {reason}")


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` reports about one file (notebook ``00_setup_and_data``)."""

    num_frames: int
    fps: float
    height: int
    width: int


class BackendUnavailableError(ValueError):
    """A known decode backend cannot be used on this machine; the message names it and says why.

    A configuration error, not a bad video: the loader's failure budget never counts it.
    Notebook ``00_setup_and_data``.
    """


@functools.lru_cache(maxsize=None)
def backend_unavailable_reason(backend: str) -> str | None:
    """Why ``backend`` cannot decode here, or None when it can (CPU backends always can).

    Imports the GPU backend's package on the first call only. Notebook ``00_setup_and_data``.
    """
    if backend not in GPU_BACKENDS:
        return None
    try:
        import torchcodec.decoders  # noqa: F401 - only whether it imports matters here
    except Exception as err:  # noqa: BLE001 - ImportError, OSError (its CUDA libraries), RuntimeError
        why = " ".join(str(err).split())[:300]
        return (f"torchcodec does not import ({type(err).__name__}: {why}); it needs a CUDA build of torch "
                f"(this one is {torch.__version__}) and `pip install torchcodec`")
    if not torch.cuda.is_available():
        return f"torchcodec imports, but torch {torch.__version__} sees no CUDA device to decode on"
    return None


def check_backend(backend: str) -> None:
    """Raise ``ValueError`` unless ``backend`` is one of :data:`ALL_BACKENDS` and usable here.

    A GPU backend that cannot be used raises :class:`BackendUnavailableError` with the reason.
    Notebook ``00_setup_and_data``.
    """
    if backend not in ALL_BACKENDS:
        raise ValueError(f"backend={backend!r} is not known; expected one of {ALL_BACKENDS} "
                         f"(CPU: {BACKENDS}, CUDA: {GPU_BACKENDS})")
    reason = backend_unavailable_reason(backend)
    if reason is not None:
        raise BackendUnavailableError(f"backend={backend!r} cannot be used here: {reason}; "
                                      f"the CPU backends {BACKENDS} always can")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoDecodeError(path, "file does not exist")
    if not path.is_file():
        raise VideoDecodeError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "file is empty (0 bytes)")


def check_size(size: tuple[int, int] | None, name: str = "size") -> tuple[int, int] | None:
    """``(height, width)`` as ints, or None; ``ValueError`` naming ``name`` otherwise."""
    if size is None:
        return None
    if len(size) != 2 or int(size[0]) < 1 or int(size[1]) < 1:
        raise ValueError(f"{name}={size!r} must be (height, width) with both >= 1, or None")
    return int(size[0]), int(size[1])


def _as_indices(indices: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError(f"indices must be a non-empty 1-D sequence of frame numbers, got shape {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
    if idx.min() < 0:
        raise ValueError(f"indices must be >= 0, got {int(idx.min())}")
    return idx.astype(np.int64)


def _decord():
    import decord

    decord.logging.set_level(decord.logging.QUIET)  # its FFmpeg chatter says nothing we act on
    return decord


# Exceptions the backends raise for bad input. decord's DECORDError derives from Exception only.
def _backend_errors() -> tuple[type[BaseException], ...]:
    import av

    errors: list[type[BaseException]] = [RuntimeError, OSError, ValueError, IndexError, av.FFmpegError]
    try:
        from decord._ffi.base import DECORDError

        errors.append(DECORDError)
    except ImportError:  # pragma: no cover - decord always ships it
        pass
    return tuple(errors)


def _is_decord_width_bug(err: BaseException) -> bool:
    # decord 0.6.0 cannot copy out frames of some widths (16, 24, 48, 72, ...): "The size must exactly match".
    return "size must exactly match" in str(err)


def _read_decord(path: Path, wanted: np.ndarray) -> np.ndarray:
    decord = _decord()
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    try:
        n = len(reader)
        if wanted[-1] >= n:
            raise VideoDecodeError(path, f"frame {int(wanted[-1])} requested but the file has {n} frames")
        try:
            return reader.get_batch(wanted.tolist()).asnumpy()
        except _backend_errors() as err:
            if _is_decord_width_bug(err):
                return _read_pyav(path, wanted)
            raise
    finally:
        del reader


def _frame_number(frame, stream, fps: float) -> int | None:
    if frame.pts is None or stream.time_base is None:
        return None
    start = stream.start_time or 0
    return int(round(float((frame.pts - start) * stream.time_base) * fps))


def _read_pyav(path: Path, wanted: np.ndarray, *, seek: bool = True) -> np.ndarray:
    import av

    out: list[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream in the file")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        by_pts = seek and fps > 0 and wanted[0] >= _SEEK_AFTER_FRAMES
        if by_pts:
            # Seek to the keyframe before the first wanted frame; frame numbers then come from pts.
            target = (stream.start_time or 0) + int((wanted[0] - 1) / fps / stream.time_base)
            container.seek(max(target, 0), backward=True, any_frame=False, stream=stream)
        pos, k, fallback = 0, -1, False
        for frame in container.decode(stream):
            if by_pts:
                k = _frame_number(frame, stream, fps)
                if k is None or (k > wanted[0] and not out):
                    fallback = True  # pts missing or the seek overshot: decode from the start instead
                    break
            else:
                k += 1
            while pos < len(wanted) and wanted[pos] == k:
                out.append(frame.to_ndarray(format="rgb24"))
                pos += 1
            if pos == len(wanted):
                break
    if fallback:
        return _read_pyav(path, wanted, seek=False)
    if pos < len(wanted):
        raise VideoDecodeError(
            path, f"frame {int(wanted[pos])} requested but decoding stopped after frame {k} (truncated?)"
        )
    return np.stack(out)


def frame_folder_files(path: str | os.PathLike) -> list[Path]:
    """The JPEG frames of a frame folder in frame order (by the number in the name: ``00001.jpg`` is frame 0).

    Raises :class:`VideoDecodeError` when the folder holds no JPEG or a name carries no number.
    Notebook ``10_instance_correspondence_map`` (Something-Something V1).
    """
    path = Path(path)
    files = [p for p in path.iterdir() if p.suffix.lower() in FRAME_FOLDER_EXTENSIONS and not p.name.startswith(".")]
    if not files:
        raise VideoDecodeError(path, "the folder holds no JPEG frames (expected 00001.jpg, 00002.jpg, ...)")
    bad = [p.name for p in files if not p.stem.isdigit()]
    if bad:
        raise VideoDecodeError(path, f"frame names must be numbers like 00001.jpg; found {bad[0]!r}")
    return sorted(files, key=lambda p: int(p.stem))


def _decode_jpeg(file: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(file) as image:
        return np.asarray(image.convert("RGB"))


def _read_folder(path: Path, wanted: np.ndarray) -> np.ndarray:
    files = frame_folder_files(path)
    if wanted.size and int(wanted[-1]) >= len(files):
        raise VideoDecodeError(path, f"frame {int(wanted[-1])} requested; the folder holds {len(files)} frames")
    try:
        frames = [_decode_jpeg(files[int(i)]) for i in wanted]
    except (OSError, ValueError) as err:  # Pillow raises these for truncated or garbage JPEGs
        raise VideoDecodeError(path, f"jpeg: {type(err).__name__}: {str(err).strip()[:300]}") from err
    if len({f.shape for f in frames}) > 1:
        raise VideoDecodeError(path, f"frames of different sizes: {sorted({f.shape[:2] for f in frames})}")
    return np.stack(frames)


def _probe_folder(path: Path) -> VideoInfo:
    files = frame_folder_files(path)
    try:
        height, width = _decode_jpeg(files[0]).shape[:2]
    except (OSError, ValueError) as err:
        raise VideoDecodeError(path, f"jpeg: first frame: {type(err).__name__}: {err}") from err
    return VideoInfo(num_frames=len(files), fps=FRAME_FOLDER_FPS, height=int(height), width=int(width))


def _torchcodec_decoder(path: Path):
    from torchcodec.decoders import VideoDecoder

    if getattr(torch.cuda, "_is_in_bad_fork", lambda: False)():  # torch's own test (private, so guarded)
        raise BackendUnavailableError(
            f"backend='torchcodec' cannot decode '{path}' in a process forked after CUDA started in its parent; "
            "start DataLoader workers with multiprocessing_context='spawn' or read in the main process")
    # "exact" scans the file once, so index k is frame k (what frame-accurate sampling needs).
    return VideoDecoder(str(path), device=f"cuda:{torch.cuda.current_device()}", seek_mode="exact",
                        dimension_order="NHWC")


def _read_torchcodec(path: Path, wanted: np.ndarray) -> torch.Tensor:
    decoder = _torchcodec_decoder(path)
    try:
        n = int(decoder.metadata.num_frames)
        if wanted[-1] >= n:
            raise VideoDecodeError(path, f"frame {int(wanted[-1])} requested but the file has {n} frames")
        return decoder.get_frames_at(indices=wanted.tolist()).data  # uint8 [N, H, W, 3] on the GPU
    finally:
        del decoder


def _probe_torchcodec(path: Path) -> VideoInfo:
    decoder = _torchcodec_decoder(path)
    try:
        meta = decoder.metadata
        n = int(meta.num_frames or 0)
        if n == 0:
            raise VideoDecodeError(path, "the file holds no frames")
        return VideoInfo(num_frames=n, fps=float(meta.average_fps or 0), height=int(meta.height),
                         width=int(meta.width))
    finally:
        del decoder


def read_frames(
    path: str | os.PathLike,
    indices: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    backend: str = "decord",
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Decode frames ``indices`` of ``path`` as a uint8 RGB tensor ``[T, H, W, 3]``.

    The frame returned at position ``j`` is frame number ``indices[j]`` (0-based), for sorted,
    unsorted and repeated indices alike: each distinct frame is decoded once. ``size=(h, w)``
    resizes right after decoding (:func:`resize_frames`). Any failure raises :class:`VideoDecodeError` naming the file.
    ``backend="torchcodec"`` decodes (and resizes) on the GPU and returns the frames on the CPU.
    Taught in notebook ``00_setup_and_data``.
    """
    check_backend(backend)
    size = check_size(size)
    idx = _as_indices(indices)
    path = Path(path)
    if path.is_dir():
        wanted, inverse = np.unique(idx, return_inverse=True)
        clip = torch.from_numpy(np.ascontiguousarray(_read_folder(path, wanted)[inverse.reshape(-1)]))
        return clip if size is None else resize_frames(clip, size)
    _check_file(path)
    wanted, inverse = np.unique(idx, return_inverse=True)
    reader = {"decord": _read_decord, "pyav": _read_pyav, "torchcodec": _read_torchcodec}[backend]
    try:
        frames = reader(path, wanted)
    except (VideoDecodeError, BackendUnavailableError):
        raise
    except _backend_errors() as err:
        raise VideoDecodeError(path, f"{backend}: {type(err).__name__}: {str(err).strip()[:300]}") from err
    if frames.ndim != 4 or frames.shape[0] != len(wanted) or frames.shape[-1] != 3:
        raise VideoDecodeError(path, f"{backend} returned frames of shape {tuple(frames.shape)}")
    if isinstance(frames, torch.Tensor):  # a GPU backend: index and resize there, hand back CPU frames
        clip = frames[torch.from_numpy(inverse.reshape(-1)).to(frames.device)]
        return (clip if size is None else resize_frames(clip, size)).cpu()
    clip = torch.from_numpy(np.ascontiguousarray(frames[inverse.reshape(-1)]))
    return clip if size is None else resize_frames(clip, size)


def read_chosen_frames(
    path: str | os.PathLike,
    choose: Callable[[int], np.ndarray],
    *,
    backend: str = "decord",
    size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Open ``path`` once: ``indices = choose(frame count)``, then decode them; returns ``(frames, indices)``.

    ``frames`` is uint8 ``[indices.size, H, W, 3]`` in the order of ``indices.reshape(-1)`` (each
    distinct frame decoded once), as :func:`read_frames` gives. With decord the frame count comes
    from the same reader that decodes, so a video's 10 test clips cost one open of the file, not a
    probe and then a read; PyAV learns the count from a :func:`probe` first. Failures raise
    :class:`VideoDecodeError` naming the file. Notebook ``06_action_recognition``.
    """
    check_backend(backend)
    size = check_size(size)
    path = Path(path)
    if path.is_dir():  # a frame folder: its count is a directory listing, no decode
        indices = np.asarray(choose(len(frame_folder_files(path))))
        return read_frames(path, indices.reshape(-1), backend=backend, size=size), indices
    _check_file(path)
    if backend != "decord":
        indices = np.asarray(choose(probe(path, backend=backend).num_frames))
        return read_frames(path, indices.reshape(-1), backend=backend, size=size), indices

    def failed(err: BaseException) -> VideoDecodeError:
        return VideoDecodeError(path, f"decord: {type(err).__name__}: {str(err).strip()[:300]}")

    decord = _decord()
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        n = len(reader)
    except _backend_errors() as err:
        raise failed(err) from err
    try:
        if n < 1:
            raise VideoDecodeError(path, "the file holds no frames")
        indices = np.asarray(choose(n))
        wanted, inverse = np.unique(_as_indices(indices.reshape(-1)), return_inverse=True)
        if wanted[-1] >= n:
            raise VideoDecodeError(path, f"frame {int(wanted[-1])} requested but the file has {n} frames")
        try:
            frames = reader.get_batch(wanted.tolist()).asnumpy()
        except _backend_errors() as err:
            if not _is_decord_width_bug(err):
                raise failed(err) from err
            try:
                frames = _read_pyav(path, wanted)
            except _backend_errors() as pyav_err:
                raise VideoDecodeError(path, f"pyav: {type(pyav_err).__name__}: {pyav_err}") from pyav_err
    finally:
        del reader
    if frames.ndim != 4 or frames.shape[0] != len(wanted) or frames.shape[-1] != 3:
        raise VideoDecodeError(path, f"decord returned frames of shape {frames.shape}")
    clip = torch.from_numpy(np.ascontiguousarray(frames[inverse.reshape(-1)]))
    return (clip if size is None else resize_frames(clip, size)), indices


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize uint8 ``[T, H, W, 3]`` frames to ``size=(h, w)`` (bilinear, antialiased).

    Done in torch rather than inside a backend so both backends give the same pixels
    (decord's own resize fails for widths it cannot align). Notebook ``00_setup_and_data``.
    """
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    x = frames.permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def declared_frames(path: str | os.PathLike) -> int | None:
    """The frame count written in the container's header, or None where there is none (WebM) or it cannot be read.

    A second opinion on truncation: decord counts only what its index reaches, so a cut AVI looks
    like a shorter, valid video to it. Notebook ``00_setup_and_data``.
    """
    import av

    if Path(path).is_dir():  # a frame folder has no header; its file count is what probe reports
        return None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            declared = int(container.streams.video[0].frames or 0)
    except _backend_errors():
        return None
    return declared if declared > 0 else None


def _probe_decord(path: Path) -> VideoInfo:
    decord = _decord()
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    try:
        n = len(reader)
        if n == 0:
            raise VideoDecodeError(path, "the file holds no frames")
        declared = declared_frames(path)
        if declared is not None and n < declared - max(1, declared // 100):  # headers may be off by one
            raise VideoDecodeError(path, f"truncated: the container declares {declared} frames, decord finds {n}")
        try:
            height, width = reader[0].shape[:2]
        except _backend_errors() as err:
            if not _is_decord_width_bug(err):
                raise
            info = _probe_pyav(path)
            height, width = info.height, info.width
        return VideoInfo(num_frames=n, fps=float(reader.get_avg_fps()), height=int(height), width=int(width))
    finally:
        del reader


def _probe_pyav(path: Path) -> VideoInfo:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream in the file")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        height, width = stream.codec_context.height, stream.codec_context.width
        n = stream.frames
        if n <= 0:  # WebM and some AVIs carry no frame count: count by decoding
            n = sum(1 for _ in container.decode(stream))
    if n == 0:
        raise VideoDecodeError(path, "the file holds no frames")
    return VideoInfo(num_frames=int(n), fps=fps, height=int(height), width=int(width))


def probe(path: str | os.PathLike, *, backend: str = "decord") -> VideoInfo:
    """Frame count, fps, height and width of a video (notebook ``00_setup_and_data``).

    The count is what the backend reports from the container; :func:`count_decodable_frames`
    decodes the whole file, which is what a scan for truncated files needs.
    """
    check_backend(backend)
    path = Path(path)
    if path.is_dir():
        return _probe_folder(path)
    _check_file(path)
    prober = {"decord": _probe_decord, "pyav": _probe_pyav, "torchcodec": _probe_torchcodec}[backend]
    try:
        return prober(path)
    except (VideoDecodeError, BackendUnavailableError):
        raise
    except _backend_errors() as err:
        raise VideoDecodeError(path, f"{backend}: {type(err).__name__}: {str(err).strip()[:300]}") from err


def count_decodable_frames(path: str | os.PathLike) -> int:
    """Decode every frame with PyAV and count them; stops quietly at the first corrupt packet.

    A file whose decodable count falls short of :func:`probe`'s is truncated or damaged
    (notebook ``00_setup_and_data``, the ``scan`` step).
    """
    import av

    path = Path(path)
    if path.is_dir():  # a frame folder: count the JPEGs that decode, up to the first that does not
        n = 0
        for file in frame_folder_files(path):
            try:
                _decode_jpeg(file)
            except (OSError, ValueError):
                break
            n += 1
        return n
    _check_file(path)
    n = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "no video stream in the file")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                n += 1
    except VideoDecodeError:
        raise
    except _backend_errors() as err:
        if n == 0:
            raise VideoDecodeError(path, f"pyav: {type(err).__name__}: {str(err).strip()[:300]}") from err
    return n


# Container extension -> default encoder; MJPEG AVIs ask for codec="mjpeg" explicitly.
DEFAULT_CODECS = {".mp4": "libx264", ".avi": "mpeg4", ".webm": "libvpx-vp9", ".mkv": "libx264"}
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
X264_DEFAULT_CRF, X264_DEFAULT_PRESET = 23, "medium"  # x264's own defaults, named so a manifest can record them
# MPEG-4/MJPEG's default rate control starves small noisy frames into flat 8x8 blocks: a fixed quantiser instead.
QUANTISER_DEFAULT = 4


class VideoWriter:
    """Encode uint8 RGB frames into a video file with PyAV, a few at a time, atomically.

    ``with VideoWriter(path, fps=...) as writer: writer.write(chunk)`` for each chunk ``[T, H, W, 3]``
    (or single frame ``[H, W, 3]``); nothing but the encoder's own look-ahead is held between calls,
    so memory does not grow with the video. The file appears under its name only when the block
    ends without an error; on an error the partial file is removed. The codec follows the extension
    (H.264 ``.mp4``, MPEG-4 ``.avi``, VP9 ``.webm``) unless ``codec`` is given (``"mjpeg"`` for MJPEG
    ``.avi``). ``quality`` is a constant-quality level (lower is better): x264/VP9 CRF (their
    defaults when None), the MPEG-4/MJPEG quantiser (:data:`QUANTISER_DEFAULT` when None); ``gop``
    the keyframe interval (short GOPs make seeking cheap); ``preset`` an x264 speed preset;
    ``scene_cuts=False`` (x264) stops the extra keyframes x264 puts at scene changes, so keyframes come
    exactly every ``gop`` frames, as in a single-shot clip; ``comment`` a text tag stored in the
    container. Notebook ``00_setup_and_data``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fps: int | float | Fraction = 25,
        codec: str | None = None,
        quality: int | None = None,
        gop: int | None = None,
        preset: str | None = None,
        scene_cuts: bool = True,
        comment: str | None = None,
    ):
        self.path = Path(path)
        self.codec = codec or DEFAULT_CODECS.get(self.path.suffix.lower())
        if self.codec is None:
            raise ValueError(f"no default codec for '{self.path.suffix}' ({self.path}); pass codec= or use "
                             f"{sorted(DEFAULT_CODECS)}")
        if preset is not None and self.codec != "libx264":
            raise ValueError(f"preset={preset!r} applies to H.264 (libx264) only, not {self.codec} ('{self.path}')")
        if preset is not None and preset not in X264_PRESETS:
            raise ValueError(f"preset={preset!r} is not an x264 preset; expected one of {X264_PRESETS}")
        if not scene_cuts and self.codec != "libx264":
            raise ValueError(f"scene_cuts=False applies to H.264 (libx264) only, not {self.codec} ('{self.path}')")
        if gop is not None and (int(gop) != gop or gop < 1):
            raise ValueError(f"gop={gop!r} must be a whole number >= 1 (frames between keyframes)")
        if quality is None and self.codec in ("mpeg4", "mjpeg"):
            quality = QUANTISER_DEFAULT
        self.fps, self.quality, self.gop, self.preset, self.comment = fps, quality, gop, preset, comment
        self.scene_cuts = scene_cuts
        self.frames_written = 0
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None

    @property
    def settings(self) -> dict:
        """What the encode uses: ``codec``, ``crf`` (x264, VP9) or ``quantiser``, ``preset``, ``gop``.

        Defaults are spelled out (x264: CRF 23, preset medium); ``None`` means the codec's own.
        ``scene_cuts: False`` is added when x264's scene-cut keyframes are off.
        """
        x264 = self.codec == "libx264"
        rate = "crf" if self.codec in ("libx264", "libvpx-vp9") else "quantiser"
        quality = self.quality if self.quality is not None or not x264 else X264_DEFAULT_CRF
        preset = self.preset or (X264_DEFAULT_PRESET if x264 else None)
        return {"codec": self.codec, rate: quality, "preset": preset, "gop": self.gop,
                **({} if self.scene_cuts else {"scene_cuts": False})}

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def _open(self, height: int, width: int) -> None:
        import av

        if self.codec == "libx264" and (height % 2 or width % 2):
            raise ValueError(f"H.264 needs even frame sizes, got {height}x{width} for '{self.path}'")
        # x264's macroblock tree makes its output differ from run to run on identical frames; without it
        # the same frames give the same bytes (the synthetic corpus is reproducible bit for bit).
        options = {}
        if self.codec == "libx264":
            options["x264-params"] = "mbtree=0" + ("" if self.scene_cuts else ":scenecut=0")
        if self.quality is not None:
            q = str(self.quality)  # x264/VP9: constant rate factor; MPEG-4/MJPEG: a fixed quantiser
            by_codec = {"libx264": {"crf": q}, "libvpx-vp9": {"crf": q, "b": "0"}}
            options |= by_codec.get(self.codec, {"qmin": q, "qmax": q})
        if self.preset is not None:
            options["preset"] = self.preset
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self._tmp), "w")
        if self.comment:
            self._container.metadata["comment"] = self.comment
        stream = self._container.add_stream(self.codec, rate=self.fps, options=options)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if self.codec == "mjpeg" else "yuv420p"
        if self.gop is not None:
            stream.codec_context.gop_size = int(self.gop)
        self._stream, self._size = stream, (height, width)

    def write(self, frames: np.ndarray | torch.Tensor) -> None:
        """Encode uint8 RGB frames ``[T, H, W, 3]`` (or one ``[H, W, 3]``), all of one size."""
        import av

        frames = np.asarray(frames.cpu() if isinstance(frames, torch.Tensor) else frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
        size = (int(frames.shape[1]), int(frames.shape[2]))
        if self._container is None:
            self._open(*size)
        elif size != self._size:
            raise ValueError(f"frames of {size[0]}x{size[1]} after {self._size[0]}x{self._size[1]} ones "
                             f"in '{self.path}'; expected one size")
        for image in frames:
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                self._container.mux(packet)
        self.frames_written += len(frames)

    def close(self) -> Path:
        """Flush the encoder and move the finished file under its name; returns the path."""
        if self._container is None:
            raise ValueError(f"no frames were written to '{self.path}'")
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop what was written: close the encoder and remove the partial file."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the partial file goes anyway
                pass
            self._container = None
        self._tmp.unlink(missing_ok=True)


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | torch.Tensor,
    *,
    fps: int | float | Fraction = 25,
    codec: str | None = None,
    quality: int | None = None,
    gop: int | None = None,
) -> Path:
    """Encode uint8 RGB frames ``[T, H, W, 3]`` into a real video file with PyAV, atomically.

    One :class:`VideoWriter` call (codec, ``quality`` and ``gop`` as there). H.264 needs even frame
    sizes. The file appears under its name only once complete. Used by the synthetic generator
    (notebook ``00_setup_and_data``).
    """
    frames = np.asarray(frames.cpu() if isinstance(frames, torch.Tensor) else frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    with VideoWriter(path, fps=fps, codec=codec, quality=quality, gop=gop) as writer:
        writer.write(frames)
    return writer.path
