"""Mitsuba 3 renderer plugin (``name = "mitsuba"``, extra ``rendergrad[mitsuba]``).

Importing this package does not import Mitsuba: ``rendergrad plugins`` lists the renderer (and
why it is unavailable, e.g. a missing libLLVM) without paying for, or crashing on, the import.
"""

from __future__ import annotations

from rendergrad import hookimpl

from .renderer import MitsubaRenderer

__all__ = ["MitsubaRenderer"]


@hookimpl
def rendergrad_renderers():
    return [MitsubaRenderer]
