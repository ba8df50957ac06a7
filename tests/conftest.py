"""Shared fixtures: small real video files whose frames carry their own frame number."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vthcl_lib.video import write_video

BLOCK = 8  # each bit of the frame number is a BLOCK x BLOCK square in the top row


def coded_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frames whose top row of blocks spells the frame number in binary (robust to lossy codecs)."""
    frames = np.full((num_frames, height, width, 3), 60, np.uint8)
    bits = width // BLOCK
    for k in range(num_frames):
        for b in range(bits):
            if (k >> b) & 1:
                frames[k, :BLOCK, b * BLOCK : (b + 1) * BLOCK] = 230
        frames[k, BLOCK * 2 :, :, 1] = (k * 11) % 200  # some content that changes every frame
    return frames


def decode_number(frame) -> int:
    """Read back the frame number written by :func:`coded_frames` (any resize keeps the layout)."""
    img = np.asarray(frame, dtype=np.float32)
    height, width = img.shape[:2]
    bits = 64 // BLOCK
    bw, bh = width / bits, height * BLOCK / 48
    value = 0
    for b in range(bits):
        patch = img[int(bh * 0.2) : int(bh * 0.8), int(b * bw + bw * 0.25) : int((b + 1) * bw - bw * 0.25)]
        if patch.mean() > 145:
            value |= 1 << b
    return value


CODECS = {  # name -> (file name, codec): the four the project must read frame-accurately
    "h264": ("clip.mp4", None),
    "mpeg4": ("clip.avi", None),
    "mjpeg": ("clip_mjpeg.avi", "mjpeg"),
    "vp9": ("clip.webm", None),
}
NUM_FRAMES = 130  # past the PyAV seek threshold, so both of its paths are exercised


@pytest.fixture(scope="session")
def coded_videos(tmp_path_factory) -> dict[str, Path]:
    """One coded video per codec (short GOP so seeking lands on real keyframes)."""
    root = tmp_path_factory.mktemp("coded")
    frames = coded_frames(NUM_FRAMES)
    return {
        name: write_video(root / fname, frames, codec=codec, gop=12, quality=None)
        for name, (fname, codec) in CODECS.items()
    }


# --------------------------------------------------------------------------- prepare scripts (test_prepare*.py)

REPO = Path(__file__).resolve().parents[1]


def run_prepare_script(script: str, *args: str):
    """Run ``data_scripts/<script>`` as its own process, quietly."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(REPO / "data_scripts" / script), "--no-progress", *args],
                          capture_output=True, text=True, timeout=120)


def prepare_main(capsys, dataset: str, *args: str) -> tuple[int, str, str]:
    """The scripts' entry point in this process (cheaper than a subprocess, which each script gets once)."""
    from vthcl_lib.prepare import main

    code = main(dataset, ["--no-progress", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_manifest(out: Path) -> dict:
    import json

    return json.loads((out / "manifest.json").read_text())


def read_quarantine(out: Path) -> set[tuple[str, str]]:
    from vthcl_lib.scan import QUARANTINE_HEADER

    lines = (out / "quarantine.tsv").read_text().splitlines()
    assert lines[0] == QUARANTINE_HEADER
    return {tuple(line.split("\t")[:2]) for line in lines[1:]}
