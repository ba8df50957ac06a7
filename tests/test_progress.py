"""vthcl_lib.progress: widget bars only under a Jupyter frontend, plain lines (step, rate, ETA, loss) elsewhere."""
from __future__ import annotations

import io

import pytest

from vthcl_lib import progress as progress_mod
from vthcl_lib.progress import LineProgress, choose_mode, current_mode, progress_bar, set_progress_mode


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("parent, mode", [
    ("/usr/bin/python3 /usr/local/bin/jupyter-lab --port 8888", "widgets"),
    ("/opt/conda/bin/python -m jupyter_server", "widgets"),
    ("/usr/bin/python3 /usr/local/bin/jupyter-notebook", "widgets"),
    ("/home/u/.vscode-server/bin/abc/node --ms-enable-electron-run-as-node", "widgets"),
    ("/usr/bin/python3 /usr/local/bin/papermill 05.ipynb out.ipynb --log-output", "lines"),
    ("/usr/bin/python3 -m pytest --nbval-lax notebooks", "lines"),
    ("/usr/bin/python3 run_all.py", "lines"),  # papermill called from a script: no frontend known
])
def test_a_kernel_draws_widgets_only_for_a_jupyter_frontend(parent, mode):
    assert choose_mode(in_kernel=True, parent_cmdline=parent, stderr_is_tty=False) == mode


def test_outside_a_kernel_a_terminal_gets_a_bar_and_a_log_gets_lines():
    assert choose_mode(in_kernel=False, parent_cmdline="", stderr_is_tty=True) == "terminal"
    assert choose_mode(in_kernel=False, parent_cmdline="", stderr_is_tty=False) == "lines"


def test_lines_carry_epoch_step_rate_eta_and_loss():
    clock, out = FakeClock(), io.StringIO()
    bar = LineProgress(total=10, desc="epoch 3/200", unit="step", interval_s=30, stream=out, clock=clock)
    for step in range(10):
        clock.now += 2.0  # 2 s per step
        bar.set_postfix(loss=f"{5 - 0.1 * step:.3f}")
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    # the first step, then one line per 30 s (15 steps of 2 s would be needed: none here), then the end
    assert lines == [
        "epoch 3/200: 1/10 (10%) 0.50 step/s, elapsed 0:02, ETA 0:18, loss=5.000",
        "epoch 3/200: 10/10 (100%) 0.50 step/s, elapsed 0:20, ETA 0:00, loss=4.100",
    ]


def test_lines_come_at_the_interval_and_never_twice_for_the_same_step():
    clock, out = FakeClock(), io.StringIO()
    bar = LineProgress(range(7), desc="caching frames", unit="video", interval_s=10, stream=out, clock=clock)
    for _ in bar:
        clock.now += 4.0
    lines = out.getvalue().splitlines()
    assert [line.split(" ")[2] for line in lines] == ["1/7", "4/7", "7/7"]  # at 4 s, 16 s, 28 s
    assert lines[1].endswith("ETA 0:12")
    bar.close()  # a second close prints nothing more
    assert out.getvalue().splitlines() == lines


@pytest.mark.parametrize("in_kernel, stream", [(True, "out"), (False, "err")])
def test_lines_go_to_stdout_in_a_kernel_and_to_stderr_on_a_command_line(monkeypatch, capsys,
                                                                        in_kernel, stream):
    # papermill and nbval run a kernel: progress is information there, and stderr is painted red
    monkeypatch.setattr(progress_mod, "_in_kernel", lambda: in_kernel)
    for _ in LineProgress(range(2), desc="caching frames", unit="video", interval_s=0):
        pass
    captured = capsys.readouterr()
    lines, other = (captured.out, captured.err) if stream == "out" else (captured.err, captured.out)
    assert lines.splitlines()[-1].startswith("caching frames: 2/2 (100%)") and other == ""


def test_progress_bar_prints_lines_here_and_nothing_for_empty_work(capsys):
    assert current_mode() == "lines"  # pytest: no kernel, stderr captured
    for _ in progress_bar(range(3), desc="scan", unit="video", interval_s=0):
        pass
    assert capsys.readouterr().err.splitlines()[-1].startswith("scan: 3/3 (100%)")
    bar = progress_bar(total=0, desc="caching frames")  # nothing to do: no 0/0 bar
    bar.close()
    for _ in progress_bar([], desc="empty"):
        pass
    assert capsys.readouterr().err == ""
    for _ in progress_bar(range(3), desc="quiet", disable=True):
        pass
    assert capsys.readouterr().err == ""


def test_a_forced_mode_wins_and_bad_modes_are_named():
    try:
        set_progress_mode("widgets")
        assert current_mode() == "widgets"
        bar = progress_bar(total=2, desc="x", disable=True)
        assert not isinstance(bar, LineProgress)
        bar.close()
    finally:
        set_progress_mode("auto")
    with pytest.raises(ValueError, match="progress mode='bars'"):
        set_progress_mode("bars")
    assert progress_mod.current_mode() == "lines"


def test_papermill_log_shows_the_epochs_progressing(tmp_path):
    """The way a GPU-server run is watched: ``papermill --log-output``; no widget stuck at 0% any more."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "papermill", "--log-output", "--cwd", str(root / "notebooks"),
           str(root / "notebooks" / "05_hierarchical_pretraining.ipynb"), str(tmp_path / "05.ipynb"),
           "-p", "PRESET", "ci", "-p", "DEVICE", "cpu", "-p", "RUN_DIR", str(tmp_path / "run")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    epochs = re.findall(r"epoch (\d+)/2: (\d+)/(\d+) \(\d+%\) [\d.]+ step/s, elapsed [\d:]+, ETA [\d:?]+, loss=[\d.]+",
                        log)
    assert [e for e in epochs if e[1] == e[2]] == [("1", "3", "3"), ("2", "3", "3")]  # each epoch reaches its end
    assert "0/3 [" not in log and "HBox" not in log  # no widget bar frozen at its start
