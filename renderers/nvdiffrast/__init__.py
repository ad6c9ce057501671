"""nvdiffrast renderer plugin (``name = "nvdiffrast"``, extra ``rendergrad[nvdiffrast]``).

Importing this package does not import nvdiffrast or touch CUDA: ``rendergrad plugins`` lists
the renderer, and why it is unavailable (no GPU, package missing), on any machine.
"""

from __future__ import annotations

from rendergrad import hookimpl

from .renderer import NvdiffrastRenderer

__all__ = ["NvdiffrastRenderer"]


@hookimpl
def rendergrad_renderers():
    return [NvdiffrastRenderer]
