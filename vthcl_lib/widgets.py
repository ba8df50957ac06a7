"""Widgets that survive headless runs: a thin ``interact`` over a pure plotting function.

Taught in notebook ``01_tempo_sampling``. With ``interactive=False`` (CI, papermill) the function
runs once with the widgets' default values and its figure is shown: readers and CI see the same plot.
"""
from __future__ import annotations

from typing import Any, Callable


def default_value(control: Any) -> Any:
    """The value a widget (or a plain value, or an ``interact`` tuple/list abbreviation) starts at."""
    if hasattr(control, "value"):
        return control.value
    if isinstance(control, tuple) and len(control) in (2, 3) and all(isinstance(v, (int, float)) for v in control):
        return control[0]
    if isinstance(control, (list, tuple)) and control:
        return control[0]
    return control


def show(plot: Callable[..., Any], interactive: bool, **controls: Any) -> None:
    """Display ``interact(plot, **controls)`` when ``interactive``, else ``plot`` once at the defaults.

    It displays and returns nothing, so the cell shows the widget or the figure exactly once,
    whether or not the call is the cell's last line. Sliders that decode or run a model should be
    built with ``continuous_update=False``.
    """
    from IPython.display import display

    def draw(**values: Any) -> None:
        display(plot(**values))  # a pyplot-free Figure: no backend shows it a second time

    if interactive:
        from ipywidgets import interactive as make_interactive

        display(make_interactive(draw, **controls))
    else:
        draw(**{name: default_value(control) for name, control in controls.items()})


def note(preset) -> None:
    """Display ``plots.preset_note(preset)`` as a Markdown block quote, or nothing when there is none.

    Called after the result tables and plots of notebooks 01-12, so that at ``ci`` a reader never
    takes a code-path check for a result.
    """
    from IPython.display import Markdown, display

    from vthcl_lib.plots import preset_note

    text = preset_note(preset)
    if text:
        display(Markdown("> " + text))
