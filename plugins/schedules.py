"""Smoothing-scale (σ) schedules shared by the ``prdpt`` and ``zerograds`` estimators.

Why a schedule at all: a wide kernel sees past plateaus and local minima but blurs the
optimum (the smoothed objective's minimum is not sharp, and Monte Carlo noise grows with σ);
a narrow kernel is precise but blind. Starting wide and ending narrow gets both.

Progress is measured as the larger of ``step / total_steps`` and ``renders / max_renders``
(when the run has a render budget), so an anneal planned for "the second half of the run"
really happens in the second half whichever limit ends the run.

Schedules return σ itself, in normalised units (fractions of each parameter's range);
per-parameter ``sigma_scale`` factors are applied by the estimator.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from rendergrad.errors import ConfigError

SCHEDULES = ("paper", "constant", "exponential", "points")


def progress(step: int, total_steps: int, renders: int = 0, max_renders: int | None = None) -> float:
    """Fraction of the run done, in ``[0, 1]``: the further along of steps and renders."""
    p = step / total_steps if total_steps and total_steps > 0 else 0.0
    if max_renders:
        p = max(p, renders / max_renders)
    return min(max(p, 0.0), 1.0)


class SigmaSchedule:
    """σ as a function of run progress ``p ∈ [0, 1]``.

    * ``paper``: constant ``sigma`` until ``anneal_start`` (default half the run), then linear
      down to ``sigma_min`` at the end (PRDPT's schedule);
    * ``constant``: ``sigma`` throughout;
    * ``exponential``: constant until ``anneal_start``, then geometric from ``sigma`` to
      ``sigma_min`` (equal *ratios* per step: spends more of the run at small σ than linear);
    * ``points``: piecewise-linear through user-given ``(progress, sigma)`` pairs, e.g.
      ``[[0, 0.5], [0.3, 0.5], [1, 0.02]]``; or any Python callable ``p -> sigma``.
    """

    def __init__(self, kind: str | Callable[[float], float] = "paper", sigma: float = 0.5,
                 sigma_min: float = 0.01, anneal_start: float = 0.5,
                 points: Sequence[Sequence[float]] | None = None, who: str = "estimator"):
        self.fn: Callable[[float], float] | None = None
        if callable(kind):
            self.fn, kind = kind, "callable"
        elif points is not None and kind == "paper":
            kind = "points"
        if kind not in SCHEDULES + ("callable",):
            raise ConfigError(f"{who}: schedule {kind!r} is not one of {', '.join(SCHEDULES)} "
                              "(or pass `points = [[progress, sigma], ...]`)")
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ConfigError(f"{who}: sigma must be a positive number, got {sigma!r}")
        if not (0 < sigma_min <= sigma):
            raise ConfigError(f"{who}: sigma_min must be in (0, sigma]; got sigma_min={sigma_min}, sigma={sigma}")
        if not (0.0 <= anneal_start < 1.0):
            raise ConfigError(f"{who}: anneal_start is a fraction of the run in [0, 1), got {anneal_start}")
        self.kind, self.sigma, self.sigma_min, self.anneal_start = kind, float(sigma), float(sigma_min), \
            float(anneal_start)
        self.points: list[tuple[float, float]] = []
        if kind == "points":
            if not points or any(len(p) != 2 for p in points):
                raise ConfigError(f"{who}: schedule 'points' needs points = [[progress, sigma], ...] "
                                  "with at least one pair")
            pts = sorted((float(a), float(b)) for a, b in points)
            if any(not (0 <= a <= 1) or not b > 0 for a, b in pts):
                raise ConfigError(f"{who}: schedule points need progress in [0, 1] and sigma > 0, got {pts}")
            self.points = pts

    def __call__(self, p: float) -> float:
        if self.fn is not None:
            s = float(self.fn(p))
            if not (s > 0 and math.isfinite(s)):
                raise ConfigError(f"the sigma schedule returned {s!r} at progress {p:.3f}; it must be > 0")
            return s
        if self.kind == "constant":
            return self.sigma
        if self.kind == "points":
            pts = self.points
            if p <= pts[0][0]:
                return pts[0][1]
            for (a0, s0), (a1, s1) in zip(pts, pts[1:]):
                if p <= a1:
                    return s0 + (s1 - s0) * (p - a0) / max(a1 - a0, 1e-12)
            return pts[-1][1]
        if p <= self.anneal_start:
            return self.sigma
        t = (p - self.anneal_start) / (1.0 - self.anneal_start)
        if self.kind == "exponential":
            return self.sigma * (self.sigma_min / self.sigma) ** t
        return self.sigma + (self.sigma_min - self.sigma) * t  # paper: linear

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "sigma": self.sigma, "sigma_min": self.sigma_min,
                "anneal_start": self.anneal_start, "points": self.points}


class AdaptiveSigma:
    """σ adapted during the run from the estimator's own samples, not from the budget.

    Why: a schedule over the run's budget only works when the budget and σ₀ suit the scene; on a
    user's unseen scene a too-wide σ pushes parameters around for half the budget and a too-narrow
    one never sees past the plateau. CMA-ES avoids both by adapting its step size from what the
    samples show, and so does this controller:

    * **path length** (CMA-ES's cumulative step-size adaptation, on gradient directions): an
      exponentially fading sum ``p ← (1−c)p + √(c(2−c))·ĝ`` of the unit gradient estimates.
      Independent directions (noise) keep ``E|p|² = 1`` and σ unchanged; directions that agree
      (the smoothed loss still slopes the same way at the scale of the steps) make ``|p|² > 1`` and
      widen σ; directions that flip (stepping back and forth across a minimum narrower than σ)
      make ``|p|² < 1`` and narrow it. ``log σ += (c / damping) · (|p|² − 1) / 2``.
    * **plateau**: when the sampled losses of a step differ by at most ``flat_tol`` of the loss
      (relative), the samples saw no slope worth following, so the step is skipped and σ grows by
      ``plateau_growth`` (the kernel must reach further to find one). Not an exact-equality test:
      a plateau is rarely exactly flat (a soft edge's blur, a sliver of the frame's border give
      differences of ~1e-5 of the loss), and a normalised step follows such a residual slope at
      full speed, away from the target. On a smooth slope the relative spread is about
      σ·|∇f|/f (≈ 4σ/distance on a quadratic), far above ``flat_tol`` until σ is tiny; near an
      optimum with a loss floor ``F`` the test bounds σ below by about ``sqrt(flat_tol·F/f'')``.

    σ stays in ``[sigma_min, sigma_max]`` (fractions of each parameter's range). Estimators
    scale their gradients by ``σ/σ₀`` so that, under Adam, the step length follows σ: the
    parameters settle as σ narrows and travel faster when it widens.
    """

    def __init__(self, sigma: float = 0.1, sigma_min: float = 1e-5, sigma_max: float = 0.5,
                 c: float = 0.2, damping: float = 1.0, plateau_growth: float = 1.2, flat_tol: float = 1e-4,
                 who: str = "estimator"):
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ConfigError(f"{who}: sigma must be a positive number, got {sigma!r}")
        if not (0 < sigma_min <= sigma <= sigma_max):
            raise ConfigError(f"{who}: the adaptive schedule needs 0 < sigma_min <= sigma <= sigma_max; got "
                              f"sigma_min={sigma_min}, sigma={sigma}, sigma_max={sigma_max}")
        if not (0 < c <= 1) or not damping > 0 or not plateau_growth >= 1:
            raise ConfigError(f"{who}: adaptive schedule needs 0 < c <= 1, damping > 0, plateau_growth >= 1; got "
                              f"c={c}, damping={damping}, plateau_growth={plateau_growth}")
        if not (0 <= flat_tol < 1):
            raise ConfigError(f"{who}: adaptive schedule needs 0 <= flat_tol < 1 (relative spread of a step's "
                              f"losses below which it counts as flat); got flat_tol={flat_tol}")
        self.flat_tol = float(flat_tol)
        self.sigma0, self.sigma_min, self.sigma_max = float(sigma), float(sigma_min), float(sigma_max)
        self.c, self.damping, self.plateau_growth = float(c), float(damping), float(plateau_growth)
        self.sigma = self.sigma0
        self.path: Any = None

    def is_flat(self, losses: Any) -> bool:
        """Whether a step's sampled losses differ by at most ``flat_tol`` of their size."""
        import torch
        y = torch.as_tensor(losses, dtype=torch.float64).reshape(-1)
        spread, size = float(y.max() - y.min()), float(y.abs().max())
        return bool(spread <= max(self.flat_tol, 1e-12) * max(size, 1e-300))

    def update(self, grad: Any, flat: bool = False) -> float:
        """Adapt σ after a step whose raw gradient estimate was ``grad``; returns the new σ."""
        import torch
        if flat:
            self.sigma = min(self.sigma * self.plateau_growth, self.sigma_max)
            return self.sigma
        g = torch.as_tensor(grad, dtype=torch.float64).reshape(-1)
        norm = float(torch.linalg.vector_norm(g))
        if not (norm > 0 and math.isfinite(norm)):
            return self.sigma
        if self.path is None:
            self.path = torch.zeros_like(g)
        self.path = (1 - self.c) * self.path + math.sqrt(self.c * (2 - self.c)) * g / norm
        length2 = float(self.path @ self.path)
        self.sigma *= math.exp(min(self.c / self.damping * (length2 - 1.0) / 2.0, 1.0))
        self.sigma = min(max(self.sigma, self.sigma_min), self.sigma_max)
        return self.sigma

    def state_dict(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "path": None if self.path is None else self.path.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.sigma, self.path = state["sigma"], state["path"]

    def describe(self) -> dict[str, Any]:
        return {"kind": "adaptive", "sigma": self.sigma0, "sigma_min": self.sigma_min,
                "sigma_max": self.sigma_max, "c": self.c, "damping": self.damping, "flat_tol": self.flat_tol}


def sigma_control(schedule: str | Callable[[float], float], points: Sequence[Sequence[float]] | None,
                  sigma: float | None, sigma_min: float | None, sigma_max: float, anneal_start: float,
                  adapt: dict[str, float] | None, paper_sigma: float, who: str
                  ) -> tuple[AdaptiveSigma | None, SigmaSchedule]:
    """An estimator's σ: ``(AdaptiveSigma, constant schedule at σ₀)`` for ``schedule="adaptive"``
    (σ₀ 0.1, σ_min 1e-5), else ``(None, the annealed schedule)`` (σ₀ ``paper_sigma``, σ_min 0.01)."""
    if schedule == "adaptive" and points is None:
        adaptive = AdaptiveSigma(sigma=0.1 if sigma is None else sigma, sigma_min=1e-5 if sigma_min is None else sigma_min,
                                 sigma_max=sigma_max, who=who, **dict(adapt or {}))
        return adaptive, SigmaSchedule("constant", sigma=adaptive.sigma0, sigma_min=adaptive.sigma0, who=who)
    return None, SigmaSchedule(schedule, sigma=paper_sigma if sigma is None else sigma,
                               sigma_min=0.01 if sigma_min is None else sigma_min,
                               anneal_start=anneal_start, points=points, who=who)
