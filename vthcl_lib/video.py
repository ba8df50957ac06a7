"""Frame-accurate video reading through decord (default) or PyAV, and of JPEG frame folders.

Taught in notebook ``00_setup_and_data`` (reading frames) and ``01_tempo_sampling`` (decode once).

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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

BACKENDS = ("decord", "pyav")

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


def check_backend(backend: str) -> None:
    """Raise ``ValueError`` unless ``backend`` is one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not known; expected one of {BACKENDS}")


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
    reader = _read_decord if backend == "decord" else _read_pyav
    try:
        frames = reader(path, wanted)
    except VideoDecodeError:
        raise
    except _backend_errors() as err:
        raise VideoDecodeError(path, f"{backend}: {type(err).__name__}: {str(err).strip()[:300]}") from err
    if frames.ndim != 4 or frames.shape[0] != len(wanted) or frames.shape[-1] != 3:
        raise VideoDecodeError(path, f"{backend} returned frames of shape {frames.shape}")
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
    try:
        return _probe_decord(path) if backend == "decord" else _probe_pyav(path)
    except VideoDecodeError:
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


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | torch.Tensor,
    *,
    fps: int = 25,
    codec: str | None = None,
    quality: int | None = None,
    gop: int | None = None,
) -> Path:
    """Encode uint8 RGB frames ``[T, H, W, 3]`` into a real video file with PyAV, atomically.

    The codec follows the extension (H.264 ``.mp4``, MPEG-4 ``.avi``, VP9 ``.webm``) unless
    ``codec`` is given (``"mjpeg"`` for MJPEG ``.avi``). H.264 needs even frame sizes. ``quality``
    is a constant-quality level (lower is better): x264/VP9 CRF (their defaults when None), the
    MPEG-4/MJPEG quantiser (4 when None); ``gop`` the keyframe
    interval (short GOPs make seeking cheap). The file appears under
    its name only once complete. Used by the synthetic generator (notebook ``00_setup_and_data``).
    """
    import av

    path = Path(path)
    frames = np.asarray(frames.cpu() if isinstance(frames, torch.Tensor) else frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    codec = codec or DEFAULT_CODECS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"no default codec for '{path.suffix}' ({path}); pass codec= or use {sorted(DEFAULT_CODECS)}")
    height, width = frames.shape[1:3]
    if codec == "libx264" and (height % 2 or width % 2):
        raise ValueError(f"H.264 needs even frame sizes, got {height}x{width} for '{path}'")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    # x264's macroblock tree makes its output differ from run to run on identical frames; without it
    # the same frames give the same bytes (the synthetic corpus is reproducible bit for bit).
    options = {"x264-params": "mbtree=0"} if codec == "libx264" else {}
    if quality is None and codec in ("mpeg4", "mjpeg"):
        quality = 4  # their default rate control starves small noisy frames into flat 8x8 blocks
    if quality is not None:
        q = str(quality)  # x264/VP9: constant rate factor; MPEG-4/MJPEG: a fixed quantiser
        options |= {"libx264": {"crf": q}, "libvpx-vp9": {"crf": q, "b": "0"}}.get(codec, {"qmin": q, "qmax": q})
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = int(gop)
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path
