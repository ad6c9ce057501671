"""``local``: render in the optimizer's own process, with its own renderer (the default)."""

from __future__ import annotations

from typing import Any, Sequence

from ..interfaces import Renderer
from .base import Executor, RendererRecipe, RenderTask, seek_and_render


class LocalExecutor(Executor):
    """In-process, one chunk after the other; the only executor that keeps autograd."""

    name = "local"
    forward_only = False

    def __init__(self) -> None:
        super().__init__()
        self.renderer: Renderer | None = None

    def start(self, renderer: Renderer, recipe: RendererRecipe | None) -> None:
        super().start(renderer, recipe)
        self.renderer = renderer

    def render(self, tasks: Sequence[RenderTask]) -> list[Any]:
        assert self.renderer is not None, "start() first"
        out = []
        for task in tasks:
            out.append(seek_and_render(self.renderer, task.theta, task.index, task.batch, task.fraction))
            self.renders_per_worker[0] += len(task)
        return out
