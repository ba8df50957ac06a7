"""What a student must not see in an executed notebook cell (issue 15.4): the checks on outputs.

Used twice: ``notebooks/conftest.py`` applies them to every cell nbval executes in ``make test``
(all 13 notebooks at ``ci``, at no extra run time), and ``tests/test_notebook_outputs.py`` tests
them on hand-made outputs.
"""
from __future__ import annotations

import re

MAX_LINES = 60  # about one screen: a longer output is a dump nobody reads
EMPTY_BAR = re.compile(r"(?<![\d/])0/0(?![\d/])")  # a progress bar over nothing: "caching frames: 0/0"
LONG_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d{7,}(?![\d])")  # -0.21516993641853333: not rounded
# a return value nobody asked for: a path, a logger, a list of matplotlib artists (ax.set(...))
STRAY = re.compile(r"^(PosixPath\(|WindowsPath\(|PurePosixPath\(|<Logger |\[(Text|None|<matplotlib))")
MARKDOWN_TABLE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*\|", re.M)  # "|---|---|": a table printed as text
PROGRESS_LINE = re.compile(r"^[^:\n]{1,80}: \d+/\d+")  # headless progress lines (vthcl_lib.progress)
TEXT_BAR = re.compile(r"\d+%\|")  # tqdm's text bar: "caching frames:  50%|#####     | 5/10"
TROUBLE = re.compile(r"warn|error|fail|refus|cannot|invalid|bad |skipp|quarantin|attention|not clean", re.I)


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def output_problems(outputs: list[dict]) -> list[str]:
    """Problems in one cell's outputs (nbformat dicts: ``stream``, ``execute_result``, ``display_data``).

    Empty list: the cell is clean. Checks: no empty ``0/0`` progress bar, no output over
    ``MAX_LINES`` lines, no unrounded floats in text, no bare ``PosixPath(...)`` result, no
    Markdown table printed as raw text, and nothing informational on stderr: a stderr block must
    name a warning or an error, and progress (the library's lines, tqdm's text bars) belongs on
    stdout wherever it appears.
    """
    problems = []
    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream":
            texts = [_text(out.get("text", ""))]
        elif kind in ("execute_result", "display_data"):
            data = out.get("data", {})
            texts = [_text(data["text/plain"])] if "text/plain" in data else []
            if kind == "execute_result" and texts and STRAY.match(texts[0]):
                problems.append(f"a stray return value: {texts[0][:60]}")
        else:
            continue
        for text in texts:
            lines = text.splitlines()
            if len(lines) > MAX_LINES:
                problems.append(f"{len(lines)} lines of output (at most {MAX_LINES}): {lines[0][:60]}")
            if EMPTY_BAR.search(text):
                problems.append(f"an empty progress bar: {EMPTY_BAR.search(text).string.strip()[:60]}")
            match = LONG_FLOAT.search(text)
            if match:
                problems.append(f"an unrounded number {match.group(0)} in: {text.strip()[:60]}")
            if kind == "stream" and MARKDOWN_TABLE.search(text):
                problems.append(f"a Markdown table printed as text: {text.strip()[:60]}")
            # stderr (painted red) is for trouble: a warning or error block, named so; never progress
            if kind == "stream" and out.get("name") == "stderr":
                rows = [row for ln in lines for row in ln.split("\r") if row.strip()]
                progress = [row for row in rows if (PROGRESS_LINE.match(row) or TEXT_BAR.search(row))
                            and not TROUBLE.search(row)]
                if progress:
                    problems.append(f"progress on stderr (red in Jupyter): {progress[0].strip()[:60]}")
                elif rows and not TROUBLE.search(text):
                    problems.append(f"information on stderr (red in Jupyter): {rows[0].strip()[:60]}")
    return problems
