"""Population runs: B candidates optimized side by side by one :class:`Optimization`.

``Optimization(..., population=theta0)`` with ``theta0`` ``[B, n]`` (parameter units) makes
the normalised parameters ``u`` a ``[B, n]`` tensor. Every step the estimator renders all B
candidates as one batch (B renders, counted by the one evaluator) and returns one loss per
candidate; each candidate's gradient depends only on its own loss, and the optimizer acts per
coordinate (Adam), so the run is B independent runs (random restarts) that share the renderer
calls, the checkpoints, the callbacks and the stop rules. Stop rules and ``best_loss`` follow
the best candidate of each step; the result holds every candidate's final parameters and loss.

Only estimators that declare ``population = True`` take part: a smoothing estimator would
need per-candidate perturbations, which is a different algorithm.
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import ConfigError, RendergradError
from .evaluation import BatchEvaluator
from .interfaces import Estimate
from .params import ParamSpace
from .result import HISTORY_PARAM_MAX_ELEMENTS


def start_units(space: ParamSpace, population: Any) -> torch.Tensor:
    """The starting candidates ``[B, n]`` in parameter units → normalised ``u`` ``[B, n]``."""
    try:
        theta = torch.as_tensor(population, dtype=torch.float64)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"population must be a [B, n] array of starting parameters: {e}") from None
    if theta.ndim != 2 or theta.shape[0] < 1 or theta.shape[1] != space.size:
        raise ConfigError(f"population has shape {tuple(theta.shape)}; give [B, {space.size}] starting parameters "
                          f"(one row per candidate, {space.size} values in the order of {space.names})")
    if not bool(torch.isfinite(theta).all()):
        raise ConfigError("population holds NaN/inf starting parameters; give finite values inside the bounds")
    space.check_theta(theta.reshape(-1, space.size), what="population")
    return space.to_unit(space.clamp_theta(theta))


def check_estimator(estimator: Any, meta: Any = None) -> None:
    """Refuse an estimator that cannot optimize candidates independently (and a learned start)."""
    if meta is not None:
        raise ConfigError("population and meta cannot be combined: meta gives one learned start; "
                          "give the candidates' starting parameters as population, or drop it")
    if not getattr(estimator, "population", False):
        raise ConfigError(f"estimator {estimator.name!r} cannot optimize a population (it takes one parameter "
                          "vector per step); use an estimator that declares population = True (one gradient "
                          "per candidate)")


def candidate_losses(est: Estimate, size: int) -> torch.Tensor:
    """The estimate's per-candidate losses, checked: ``[B]`` float64."""
    if est.losses is None:
        raise RendergradError("the estimator returned no per-candidate losses for a population step")
    losses = torch.as_tensor(est.losses).detach().reshape(-1).to(torch.float64)
    if losses.shape[0] != size:
        raise RendergradError(f"the estimator returned {losses.shape[0]} losses for {size} candidates")
    return losses


def observed(u: torch.Tensor, history: list[dict[str, Any]]) -> torch.Tensor:
    """What callbacks see as ``u``: the parameters, or a population's candidate that was best at
    the latest step, so every callback (image previews, TensorBoard) works on populations too."""
    if u.ndim == 1:
        return u.detach()
    row = int(history[-1].get("candidate", 0)) if history else 0
    return u.detach()[row]


def record(space: ParamSpace, u_now: torch.Tensor, losses: torch.Tensor) -> tuple[dict[str, Any], int]:
    """History entries of a population step (best candidate's parameters, every loss), and the best row."""
    best = int(torch.argmin(losses))
    params = space.decode(space.to_theta(u_now[best]), HISTORY_PARAM_MAX_ELEMENTS)
    return {"params": params, "candidate": best, "mean_loss": float(losses.mean()),
            "losses": [float(v) for v in losses]}, best


def final(evaluator: BatchEvaluator, space: ParamSpace, u: torch.Tensor) -> dict[str, Any]:
    """Render and score every candidate once more (extra renders): images, losses, the best row."""
    theta = space.to_theta(u)
    images = evaluator.preview(theta)
    with torch.no_grad():
        losses = evaluator.score(images).detach()
    best = int(torch.argmin(losses))
    return {"population_theta": theta, "population_losses": losses, "population_images": images,
            "best_candidate": best}
