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


def show(plot: Callable[..., Any], interactive: bool, **controls: Any):
    """``interact(plot, **controls)`` when ``interactive``, else ``plot`` once at the defaults.

    Returns the interact widget or the static figure. Sliders that decode or run a model should
    be built with ``continuous_update=False``.
    """
    from IPython.display import display

    def draw(**values: Any):
        figure = plot(**values)  # a pyplot-free Figure: shown here once, never again by a backend
        display(figure)
        return figure

    if interactive:
        from ipywidgets import interact

        return interact(draw, **controls)
    return draw(**{name: default_value(control) for name, control in controls.items()})
