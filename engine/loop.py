"""``optimize``: one call that runs an :class:`~rendergrad.optimization.Optimization` to the end.

The loop itself lives in :mod:`rendergrad.optimization` (the object every driver uses: this
function, ``rendergrad run``, ``rendergrad ask``/``tell``, the baselines). Here: the keyword
interface, resuming from a checkpoint, and closing what the run created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .callbacks import Callback, CallbackList
from .checkpoint import DEFAULT_CHECKPOINT_SECONDS
from .errors import ConfigError
from .interfaces import GradientEstimator, Objective, Renderer
from .optimization import Optimization
from .registry import Registry
from .result import HISTORY_PARAM_MAX_ELEMENTS, Result
from .setup import OPTIMIZERS, make_optimizer

__all__ = ["optimize", "Result", "Optimization", "make_optimizer", "OPTIMIZERS", "HISTORY_PARAM_MAX_ELEMENTS"]


def optimize(
    renderer: Renderer | str, objective: Objective | str = "mse", estimator: GradientEstimator | str = "analytic",
    *, target: torch.Tensor | None = None, target_params: Mapping[str, Any] | None = None,
    renderer_options: Mapping[str, Any] | None = None, objective_options: Mapping[str, Any] | None = None,
    estimator_options: Mapping[str, Any] | None = None, init: Mapping[str, Any] | None = None,
    optimizer: str = "adam", lr: float = 0.01, optimizer_options: Mapping[str, Any] | None = None,
    lr_decay: float | None = None, steps: int = 100, seed: int = 0, max_renders: int | None = None,
    target_loss: float | None = None, patience: int | None = None, min_delta: float = 0.0,
    callbacks: Sequence[Callback | str] | CallbackList = (), progress: bool = False,
    checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
    checkpoint_seconds: float | None = DEFAULT_CHECKPOINT_SECONDS, resume: bool = False,
    max_batch: int | None = None, executor: Any = "local", executor_options: Mapping[str, Any] | None = None,
    final_render: bool = True, close: bool = False, registry: Registry | None = None, meta: Any = None,
    population: Any = None, lr_schedule: str = "geometric", lr_units: str = "unit",
) -> Result:
    """Optimize a renderer's parameters so its image minimises the objective.

    ``renderer``, ``objective`` and ``estimator`` are plugin names (with ``*_options``) or
    instances. The target is an image ``[H, W, C]`` or the renderer's own image at
    ``target_params``. The optimizer steps the normalised parameters ``u ∈ [0,1]^n`` (so ``lr``
    is in fractions of each parameter's range) and clamps them to the bounds after each step.
    ``lr_decay`` shrinks the learning rate geometrically to ``lr · lr_decay`` by the end of the
    run, which smoothing estimators need to settle once σ is small.

    Stops after ``steps`` steps, or earlier when ``max_renders`` renders are spent, the loss
    reaches ``target_loss``, or it has not improved by ``min_delta`` for ``patience`` steps.
    With ``checkpoint_dir`` the full state is saved every ``checkpoint_every`` steps, every
    ``checkpoint_seconds`` of wall time, at the end, and when the run fails or is interrupted;
    ``resume=True`` continues from it bit-identically.

    A renderer created here by name is closed when the run ends (its workers do not wait for a
    finalizer); ``close=True`` closes a renderer given as an instance too. The same run can be
    driven step by step with :class:`~rendergrad.optimization.Optimization` (``ask``/``tell``).

    ``meta`` (a ``meta-train`` folder, a ``meta.json`` path or :class:`rendergrad.meta.MetaParams`)
    starts from the learned point instead of ``init`` and takes plain gradient steps with the
    learned per-coordinate step sizes instead of ``optimizer``/``lr``.

    ``executor`` (a plugin name with ``executor_options``, or an instance) decides where renders
    run: ``"local"`` (this process), ``"processes"``, ``"ray"``; results are the same with any.
    One made from a name is stopped when the run ends, however it ends.

    ``population`` (``[B, n]`` starting parameters) optimizes B candidates side by side, B
    renders a step, the best one's parameters as the result (see :mod:`rendergrad.population`).
    ``lr_schedule="cosine"`` anneals to ``lr · lr_decay`` on a cosine instead of geometrically;
    ``lr_units="parameter"`` takes ``lr`` in parameter units (see :mod:`rendergrad.lrschedule`).
    """
    # Every argument but these three is an Optimization setting: passed on as given.
    settings = {k: v for k, v in locals().items() if k not in ("resume", "final_render", "close")}
    if resume and checkpoint_dir is None:
        raise ConfigError("resume=True needs checkpoint_dir")
    run = Optimization(**settings)
    try:
        if resume:
            run.resume(checkpoint_dir)
        return run.run(final_render=final_render)
    finally:
        run.owns_renderer = run.owns_renderer or close
        run.close()
