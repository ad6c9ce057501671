"""Executors: where a batch's renders run (this process, worker processes, a Ray cluster).

See ``docs/executors.md``. The evaluator hands an executor :class:`RenderTask` chunks and gets
images back in order; pools keep one renderer per worker, built from a :class:`RendererRecipe`.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import ConfigError
from .base import Executor, RendererRecipe, RenderTask, seek_and_render
from .local import LocalExecutor


def resolve_executor(executor: Any, options: Mapping[str, Any] | None, registry: Any) -> tuple[Executor, bool]:
    """``(executor, owned)``: built from a plugin name (owned: closed by the run) or given as an instance."""
    if executor is None:
        executor = "local"
    if isinstance(executor, str):
        return registry.create("executor", executor, dict(options or {})), True
    if options:
        raise ConfigError("executor options were given but the executor is already an instance")
    if not isinstance(executor, Executor):
        raise ConfigError(f"executor must be a plugin name or an Executor, got {type(executor).__name__}")
    return executor, False


def check_executor(executor: Executor, estimator: Any) -> None:
    """An executor that returns plain images cannot serve an estimator that needs their gradients."""
    from ..errors import IncompatiblePluginsError
    if executor.forward_only and getattr(estimator, "requires_differentiable", False):
        raise IncompatiblePluginsError(
            f"estimator {estimator.name!r} needs gradients through the renderer, which executor "
            f"{executor.name!r} cannot carry back; use executor \"local\" or a black-box estimator")


__all__ = ["check_executor", "Executor", "RenderTask", "RendererRecipe", "LocalExecutor", "seek_and_render", "resolve_executor"]
