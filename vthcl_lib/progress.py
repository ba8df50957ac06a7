"""Progress that every way of running shows: widget bars in JupyterLab, plain log lines elsewhere.

Taught in notebook ``05_hierarchical_pretraining`` (its epoch lines). ``tqdm.auto`` draws notebook
widgets whenever it runs inside a kernel, and a kernel driven by papermill (or nbval) has no
frontend to render them: ``papermill --log-output`` printed each bar once at 0% and never again, so
a 200-epoch run looked hung. :func:`progress_bar` therefore picks:

- ``"widgets"``: a kernel whose parent process is a Jupyter server (JupyterLab, Notebook, Voila,
  VS Code): ``tqdm.auto``'s widget bar;
- ``"terminal"``: no kernel, and stderr is a terminal: tqdm's text bar;
- ``"lines"``: anything else (papermill, nbval, a command line whose log goes to a file, torchrun
  writing to a pipe): one plain line at the first step, then at most one per ``interval_s``
  seconds, and one at the end, each with the step, the rate, the elapsed time, the ETA and the
  postfix (the loss).

Where the lines go: in a kernel (papermill, nbval) to stdout, since progress is information and a
notebook paints stderr red; on a command line to stderr, the convention for progress (a program's
stdout stays its result).

The library reads no environment variables: the frontend is told apart by the kernel's parent
process command line. :func:`set_progress_mode` forces a mode (a notebook or a test may call it).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator

MODES = ("auto", "widgets", "terminal", "lines")
# the parent of a kernel that a browser or editor is looking at (substrings of its command line)
WIDGET_FRONTENDS = ("jupyter-lab", "jupyter-notebook", "jupyter-server", "jupyter_server", "jupyterlab",
                    "jupyter lab", "jupyter notebook", "jupyter server", "nbclassic", "voila",
                    "jupyterhub-singleuser", "vscode", "jupyter-labhub")
HEADLESS_RUNNERS = ("papermill", "nbclient", "nbconvert", "pytest", "nbval")
DEFAULT_INTERVAL_S = 30.0

_forced_mode = "auto"


def set_progress_mode(mode: str = "auto") -> None:
    """Force ``"widgets"``, ``"terminal"`` or ``"lines"`` for every later bar (``"auto"``: detect again).

    Notebook ``05_hierarchical_pretraining``.
    """
    global _forced_mode
    if mode not in MODES:
        raise ValueError(f"progress mode={mode!r}; expected one of {MODES}")
    _forced_mode = mode


def _in_kernel() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def _parent_cmdline() -> str:
    """The parent process's command line ('' when the platform does not tell)."""
    try:
        raw = open(f"/proc/{os.getppid()}/cmdline", "rb").read()  # Linux
        return raw.replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        pass
    try:
        import psutil  # macOS / Windows, when installed

        return " ".join(psutil.Process(os.getppid()).cmdline())
    except Exception:  # no psutil, or the parent is gone: treat as headless
        return ""


def choose_mode(*, in_kernel: bool, parent_cmdline: str, stderr_is_tty: bool) -> str:
    """The display for these circumstances (see the module docstring); a pure function, for the tests.

    Notebook ``05_hierarchical_pretraining``.
    """
    if in_kernel:
        cmd = parent_cmdline.lower()
        if any(name in cmd for name in HEADLESS_RUNNERS):
            return "lines"
        return "widgets" if any(name in cmd for name in WIDGET_FRONTENDS) else "lines"
    return "terminal" if stderr_is_tty else "lines"


def current_mode() -> str:
    """The mode :func:`progress_bar` uses now (notebook ``05_hierarchical_pretraining``)."""
    if _forced_mode != "auto":
        return _forced_mode
    in_kernel = _in_kernel()
    tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
    return choose_mode(in_kernel=in_kernel, parent_cmdline=_parent_cmdline() if in_kernel else "",
                       stderr_is_tty=tty)


def default_stream():
    """Where :class:`LineProgress` writes by default: stdout inside a kernel, else stderr.

    Notebook ``05_hierarchical_pretraining`` (its epoch lines under papermill are plain output, not
    the red of stderr).
    """
    return sys.stdout if _in_kernel() else sys.stderr


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class LineProgress:
    """A tqdm-like bar that writes plain lines: ``desc: n/total (p%) rate unit/s, elapsed, ETA, postfix``.

    Notebook ``05_hierarchical_pretraining`` (its log under papermill).
    """

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", disable: bool = False, interval_s: float = DEFAULT_INTERVAL_S,
                 stream=None, clock=time.monotonic, **_ignored: Any):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self.desc, self.unit, self.disable = desc, unit, disable
        self.interval_s = interval_s
        self.stream = stream
        self.clock = clock
        self.n = 0
        self.postfix = ""
        self.start = clock()
        self._last_print: float | None = None
        self._printed_n = -1
        self._closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.total or 0

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        due = self._last_print is None or now - self._last_print >= self.interval_s
        if not self.disable and due:
            self._emit(now)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.disable and self.n != self._printed_n and self.n > 0:
            self._emit(self.clock())

    def line(self, now: float | None = None) -> str:
        """The text of one progress line at time ``now``."""
        now = self.clock() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            count = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)"
            left = (self.total - self.n) / rate if rate > 0 else float("inf")
            eta = _clock(left) if left != float("inf") else "?"
        else:
            count, eta = f"{self.n}", "?"
        text = f"{head}{count} {rate:.2f} {self.unit}/s, elapsed {_clock(elapsed)}, ETA {eta}"
        return f"{text}, {self.postfix}" if self.postfix else text

    def _emit(self, now: float) -> None:
        stream = self.stream or default_stream()
        print(self.line(now), file=stream, flush=True)
        self._last_print, self._printed_n = now, self.n


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, leave: bool = True, interval_s: float = DEFAULT_INTERVAL_S, **kwargs: Any):
    """A progress bar for ``iterable`` (or ``total`` manual ``update`` calls) fit for where the code runs.

    Notebook ``05_hierarchical_pretraining``. Used by every long loop of the library (pre-training
    epochs, frame caching, feature extraction, fine-tuning, scanning, data preparation). Nothing to
    do (``total == 0`` or an empty sized iterable) draws no bar at all.
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if total == 0:
        disable = True
    mode = current_mode()
    if mode == "lines":
        return LineProgress(iterable, total=total, desc=desc, unit=unit, disable=disable, interval_s=interval_s)
    if mode == "widgets":
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, **kwargs)
