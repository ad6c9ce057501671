"""OLAT-AD (Savage et al.): a batch of multiplier candidates θ ~ N(1, σ²) optimized by Adam.

Adam on the multipliers (lr 0.06, ~230 steps), clamp to ``[θ_min, θ_max]`` after each step,
optional random resized crops, a differentiable tone map, any objective.

The loop is :class:`rendergrad.Optimization` in population mode: the B candidates are one
``[B, n]`` parameter tensor, each step renders them as one batch through
:class:`rendergrad.evaluation.BatchEvaluator` (counted there, NaN images refused with the
multipliers that produced them, ``max_batch`` chunks), the ``analytic`` estimator gives each
candidate the gradient of its own loss, and Adam (per coordinate) makes them independent runs.
Checkpoints, resume, callbacks, progress and stop rules are the engine's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from rendergrad import Objective
from rendergrad.callbacks import Callback
from rendergrad.errors import ConfigError
from rendergrad.optimization import Optimization
from rendergrad.result import Result

from ..olat import OlatRenderer
from .objective import CandidateObjective, random_resized_crop  # noqa: F401 - re-exported


@dataclass
class OlatADResult:
    """Candidates' final multipliers ``[B, L, 3]`` and losses, the best index, history, snapshots."""

    names: list[str]
    multipliers: torch.Tensor
    losses: torch.Tensor
    best: int
    history: list[dict[str, Any]]
    snapshots: list[tuple[int, torch.Tensor]]
    renders: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    images: torch.Tensor | None = None
    extra_renders: int = 0
    result: Result | None = field(default=None, repr=False)  # the engine's result of the run (best candidate, history, stop reason)

    def candidate(self, i: int | None = None) -> dict[str, list[float]]:
        m = self.multipliers[self.best if i is None else i]
        return {n: [float(v) for v in m[j]] for j, n in enumerate(self.names)}

    def to_json(self) -> dict[str, Any]:
        return {"lights": self.names, "best": self.best, "multipliers": self.candidate(),
                "candidates": [{"loss": float(self.losses[i]), "multipliers": self.candidate(i)}
                               for i in range(self.multipliers.shape[0])],
                "renders": self.renders, "extra_renders": self.extra_renders, "seconds": self.seconds,
                "settings": self.settings}


def configure_tonemap(objective: Objective, tonemap: str | None, exposure: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Apply the tone map exactly once: inside objectives that tone-map, else before the objective.

    Returns the function the loop applies to images (identity when the objective does it).
    """
    from rendergrad.plugins.tonemap import check_tonemap, tonemap as apply_tonemap
    if tonemap is None and not exposure:
        return lambda x: x
    if hasattr(objective, "tonemap") and hasattr(objective, "exposure"):
        if tonemap is not None:
            objective.tonemap = check_tonemap(tonemap)
        objective.exposure = float(exposure)
        return lambda x: x
    key = check_tonemap(tonemap)
    return lambda x: apply_tonemap(x, key, exposure)


def _check(batch: int, steps: int, lr: float, sigma: float, augment: str | None, lr_decay: str,
           crop_scale: tuple[float, float]) -> None:
    if batch < 1 or steps < 0 or not lr > 0 or sigma < 0:
        raise ConfigError("olat_ad: need batch >= 1, steps >= 0, lr > 0, sigma >= 0")
    if augment not in (None, "none", "crop"):
        raise ConfigError(f"olat_ad: augment must be None or 'crop', got {augment!r}")
    if lr_decay not in ("none", "cosine"):
        raise ConfigError(f"olat_ad: lr_decay must be 'none' or 'cosine', got {lr_decay!r}")
    if not (0 < crop_scale[0] <= crop_scale[1] <= 1):
        raise ConfigError(f"olat_ad: crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")


def start_candidates(renderer: OlatRenderer, batch: int, sigma: float, gen: torch.Generator,
                     init: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The start ``[n]`` and the B candidates ``[B, n]``: start + N(0, σ²) (HSV: on the value only),
    clamped to the bounds; drawn in float32 from ``gen``, as the paper's code does."""
    space = renderer.parameter_space()
    lo, hi = space.low.float(), space.high.float()
    start = (space.initial_theta() if init is None else torch.as_tensor(init, dtype=torch.float64)).float()
    mask = torch.ones(space.size)
    if getattr(renderer, "color_model", "rgb") == "hsv":
        mask = torch.tensor([0.0, 0.0, 1.0]).repeat(space.size // 3)
    noise = torch.randn(batch, space.size, generator=gen) * sigma * mask
    return start, torch.minimum(torch.maximum(start + noise, lo), hi)


class Snapshots(Callback):
    """Downsized display images of every candidate every ``every`` steps, from the images the
    step rendered anyway (no extra renders)."""

    name = "olat-snapshots"

    def __init__(self, objective: CandidateObjective, every: int, size: int, tonemap: str | None, exposure: float):
        self.objective, self.every, self.size = objective, every, size
        self.tonemap, self.exposure = tonemap, exposure
        self.snapshots: list[tuple[int, torch.Tensor]] = []

    def on_step(self, *, record: dict[str, Any], step: int) -> None:
        if step % self.every == 0 and self.objective.last_images is not None:
            self.add(step, self.objective.last_images)

    def add(self, step: int, img: torch.Tensor) -> None:
        from rendergrad.plugins.tonemap import to_linear_display
        with torch.no_grad():
            d = img.detach().float()
            h, w = d.shape[1:3]
            f = self.size / max(h, w)
            if f < 1:
                d = F.interpolate(d.permute(0, 3, 1, 2), size=(max(1, round(h * f)), max(1, round(w * f))),
                                  mode="area").permute(0, 2, 3, 1)
            tm = getattr(self.objective.inner, "tonemap", None) if self.tonemap is None else self.tonemap
            self.snapshots.append((step, to_linear_display(d, tm or "srgb", self.exposure)))


def olat_ad(renderer: OlatRenderer, objective: Objective, target: torch.Tensor | None = None, *,
            batch: int = 4, sigma: float = 0.1, lr: float = 0.06, steps: int = 230, seed: int = 0,
            augment: str | None = None, crop_scale: tuple[float, float] = (0.5, 1.0),
            tonemap: str | None = None, exposure: float = 0.0, lr_decay: str = "none",
            snapshot_every: int | None = None, snapshot_size: int = 96,
            init: torch.Tensor | None = None, callback: Callable[[int, torch.Tensor], None] | None = None,
            max_batch: int | None = None, **run: Any) -> OlatADResult:
    """OLAT-AD: optimize a batch of RGB-multiplier candidates by Adam on an objective.

    ``target``: the reference image ``[H, W, C]`` (linear) for image objectives, or ``None``.
    ``lr_decay="cosine"`` anneals the step to 1 % of ``lr`` (for precise recovery); ``"none"``
    is the paper's constant rate. Candidates start at ``init`` (default: the basis at unit
    multipliers) plus N(0, σ²) noise on every multiplier (HSV: on the value only).

    The loop is :class:`rendergrad.Optimization` with ``population`` = the candidates,
    ``lr_units="parameter"`` (``lr`` in multiplier units) and the ``analytic`` estimator, so
    ``run`` takes its options: ``callbacks``, ``progress``, ``checkpoint_dir`` (with
    ``resume=True`` to continue from it), ``max_renders``, ``target_loss``, ``patience``...
    ``renders`` counts the relights of the optimization steps (B per step); the final scoring
    of every candidate and the start image an objective may need (``set_init``) are extras.
    """
    _check(batch, steps, lr, sigma, augment, lr_decay, crop_scale)
    gen = torch.Generator().manual_seed(int(seed))
    start, theta0 = start_candidates(renderer, batch, sigma, gen, init)
    post = configure_tonemap(objective, tonemap, exposure)
    # The crops continue the generator that drew the start, as the paper's loop does.
    wrapped = CandidateObjective(objective, post, crop=augment == "crop", crop_scale=crop_scale, generator=gen)
    snaps = Snapshots(wrapped, snapshot_every or max(1, steps // 6), snapshot_size, tonemap, exposure)
    callbacks = [snaps, *run.pop("callbacks", ())]
    if callback is not None:
        callbacks.append(_StepCallback(callback))
    resume = bool(run.pop("resume", False))
    if resume and not run.get("checkpoint_dir"):
        raise ConfigError("olat_ad: resume=True needs checkpoint_dir (the folder the run saved to)")
    opt = Optimization(renderer, wrapped, "analytic", target=target, population=theta0, lr=lr,
                       lr_units="parameter", steps=steps, seed=seed, max_batch=max_batch,
                       lr_decay=0.01 if lr_decay == "cosine" else None, lr_schedule="cosine",
                       callbacks=callbacks, **run)
    if hasattr(objective, "set_init"):
        objective.set_init(opt.evaluator.preview(start.unsqueeze(0)))
    if resume:
        opt.resume(run["checkpoint_dir"])
    res = opt.run()
    settings = {"batch": batch, "sigma": sigma, "lr": lr, "steps": steps, "seed": seed,
                "augment": None if augment == "none" else augment, "crop_scale": list(crop_scale),
                "tonemap": tonemap, "exposure": exposure, "lr_decay": lr_decay, "objective": objective.name}
    return _result(renderer, res, snaps, settings)


class _StepCallback(Callback):
    """``callback(step, losses)`` of the candidates, after each step."""

    name = "olat-step"

    def __init__(self, fn: Callable[[int, torch.Tensor], None]):
        self.fn = fn

    def on_step(self, *, record: dict[str, Any], step: int) -> None:
        self.fn(step, torch.tensor(record["losses"]))


def _result(renderer: OlatRenderer, res: Result, snaps: Snapshots, settings: dict[str, Any]) -> OlatADResult:
    info = res.info
    images = info.get("population_images")
    if images is not None:
        snaps.add(res.steps, images)
    losses = info.get("population_losses")
    if losses is None:
        losses = torch.tensor(res.history[-1]["losses"]) if res.history else torch.full((1,), math.nan)
    multipliers = renderer.multipliers(info["population_theta"].float()).detach().clone()
    return OlatADResult(list(renderer.names), multipliers, losses.detach(), int(info["best_candidate"]),
                        res.history, snaps.snapshots, res.evaluations, res.wall_time_s, settings,
                        None if images is None else images.detach(), res.extra_renders, res)
