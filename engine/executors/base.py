"""The executor contract: chunks of a batch ``θ[B, n]`` in, their images out, in order.

An executor only renders. The :class:`~rendergrad.evaluation.BatchEvaluator` stays the one
place that counts, validates and scores, so whichever executor runs a batch the optimizer is
charged for the same images and sees the same checks.

Identical results whatever the executor rest on one rule: every image has a place in the run,
its *render index* (how many images the run asked for before it) and its *batch index* (how
many batches). The evaluator hands both with every chunk, and the executor calls
``renderer.seek(index, batch)`` before ``renderer.render(theta)`` in whichever process renders
it. A renderer with noise derives each image's seed from its own seed and these numbers, never
from a counter of its own, so an image is the same on any worker, after any retry.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import torch

from ..errors import ConfigError
from ..interfaces import Plugin, Renderer

log = logging.getLogger("rendergrad.executor")


@dataclass(frozen=True)
class RenderTask:
    """One chunk to render: ``theta`` ``[b, n]``, the render index of its first row, its batch,
    and the fraction of the renderer's samples per pixel to use (see ``Renderer.set_sample_fraction``)."""

    theta: torch.Tensor
    index: int
    batch: int
    fraction: float = 1.0

    def __len__(self) -> int:
        return int(self.theta.shape[0])


@dataclass(frozen=True)
class RendererRecipe:
    """How a worker builds its own renderer: the plugin's class (pickled by reference) and options.

    Workers build the renderer once and keep it (scenes are expensive to load), so the options
    must pickle: plain numbers, strings, lists and tables, as in a run file.
    """

    name: str
    cls: type
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Renderer:
        return self.cls(**self.options)


def seek_and_render(renderer: Renderer, theta: torch.Tensor, index: int, batch: int,
                    fraction: float = 1.0) -> Any:
    """What every executor does with a chunk, in whichever process holds the renderer."""
    seek = getattr(renderer, "seek", None)
    if callable(seek):
        seek(int(index), int(batch))
    if not getattr(renderer, "adjustable_samples", False) or fraction == 1.0:
        return renderer.render(theta)
    renderer.set_sample_fraction(float(fraction))
    try:
        return renderer.render(theta)
    finally:  # the renderer is left at its configured quality, for whoever renders with it next
        renderer.set_sample_fraction(1.0)


def split_tasks(tasks: Sequence[RenderTask], size: int) -> list[tuple[int, int, RenderTask]]:
    """``(task number, row offset, piece)`` for every piece of at most ``size`` rows, in order."""
    out = []
    for t, task in enumerate(tasks):
        n = len(task)
        for s in range(0, n, size):
            e = min(n, s + size)
            out.append((t, s, RenderTask(task.theta[s:e], task.index + s, task.batch, task.fraction)))
    return out


class Executor(Plugin):
    """Runs a renderer's chunks somewhere: in this process, in worker processes, on a cluster.

    Subclasses set ``name`` and implement :meth:`render`; pools also :meth:`start` and
    :meth:`close`. ``forward_only`` executors return plain images (no autograd), so they refuse
    estimators that need gradients through the renderer. Constructor keyword arguments are the
    run's ``[executor] options``.
    """

    forward_only: ClassVar[bool] = True

    def __init__(self) -> None:
        self.renders_per_worker: list[int] = [0]
        self.retried_renders = 0
        self.restarts = 0
        self.events: list[dict[str, Any]] = []
        self.renderer_name = "?"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, renderer: Renderer, recipe: RendererRecipe | None) -> None:
        """Called once before the first render. ``renderer`` is the optimizer's own instance;
        ``recipe`` says how to build more (``None`` when the renderer was given as an instance)."""
        self.renderer_name = getattr(renderer, "name", "?")

    def render(self, tasks: Sequence[RenderTask]) -> list[Any]:
        """Images for each task, in the order of ``tasks`` (each ``[b, H, W, C]``)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop every worker. Safe to call twice, and after a failed :meth:`start`."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the record -----------------------------------------------------------------------------
    @property
    def workers(self) -> int:
        return len(self.renders_per_worker)

    def record(self, worker: int, what: str, reason: str) -> None:
        """A restart, a retry or a worker given up: counted, logged (run.log) and kept for result.json."""
        event = {"time": round(time.time(), 3), "worker": worker, "event": what, "reason": reason}
        if len(self.events) < 200:
            self.events.append(event)
        log.warning("executor %s: worker %d %s: %s", self.name, worker, what, reason)

    def summary(self) -> dict[str, Any]:
        """The ``"executor"`` block of ``result.json``."""
        return {"name": self.name, "workers": self.workers,
                "renders_per_worker": list(self.renders_per_worker),
                "retried_renders": self.retried_renders, "restarts": self.restarts,
                "events": list(self.events)}


def check_positive(what: str, value: Any, *, allow_none: bool = False, integer: bool = True) -> None:
    if value is None and allow_none:
        return
    ok = (isinstance(value, int) if integer else isinstance(value, (int, float))) and not isinstance(value, bool)
    if not ok or not value > 0 or (not integer and not math.isfinite(value)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{what} must be {kind} > 0, got {value!r}")
