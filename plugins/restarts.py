"""Restarts for a trust-region estimator whose σ has collapsed with budget left.

Why: when the adaptive σ has narrowed to a small fraction of its start, the estimator has
converged: to the optimum, or to a false minimum (a box half out of the frame, the toy spline's
second dip). It cannot tell which, and neither can the loop: the loss at the optimum is not
known. What it can do with the renders left is what IPOP-CMA-ES does: start again elsewhere,
remember the best basin it settled in with its loss, and for the last part of the run
(``min_left``) go back to the best basin seen and refine it. The final parameters are therefore
never worse than the first basin's (up to the render noise in the losses compared), and a run
that settled in a false minimum gets further chances.

A basin's loss is the mean of the step losses over its last ``window`` steps (each a Monte Carlo
estimate of the smoothed loss at σ small, i.e. close to ``f(u)``). The estimator has settled when
σ is below ``sigma_fraction`` of its start *and* that mean is no longer falling (by ``progress``,
10 %, against the ``window`` steps before): a narrow σ alone also marks a run that is still
closing in on the optimum, which a restart would throw away.
"""

from __future__ import annotations

from typing import Any

import torch

from rendergrad import StepContext


class Restarts:
    """Decides when to restart, where to, and when to go back to the best basin."""

    def __init__(self, sigma_fraction: float = 0.03, min_left: float = 0.2, window: int = 10, progress: float = 0.1):
        self.sigma_fraction, self.min_left, self.window = float(sigma_fraction), float(min_left), int(window)
        self.progress = float(progress)
        self.reset()

    def reset(self) -> None:
        self.recent: list[float] = []
        self.best_u: torch.Tensor | None = None
        self.best_loss = float("inf")
        self.count = 0
        self.returned = False

    def _left(self, ctx: StepContext, renders_after: int) -> float:
        """The fraction of the run still to come after this step (steps or renders, the tighter)."""
        left = 1.0 - (ctx.step + 1) / ctx.total_steps if ctx.total_steps else 1.0
        if ctx.max_renders:
            left = min(left, 1.0 - renders_after / ctx.max_renders)
        return left

    def after_step(self, u: torch.Tensor, loss: float, sigma: float, sigma0: float, ctx: StepContext,
                   renders_after: int) -> tuple[torch.Tensor, float] | None:
        """``(move, σ to go on with)`` replacing the step (a restart, or the way back to the best
        basin), or None to keep it. ``renders_after``: the run's renders with this step's counted.

        Restarts happen while at least ``min_left`` of the run is still to come; when less is
        left, the run goes back once to the best basin seen (if the current one is worse) and
        spends the rest refining it, from the σ at which it was left.
        """
        self.recent = (self.recent + [float(loss)])[-2 * self.window:]
        basin = sum(self.recent[-self.window:]) / len(self.recent[-self.window:])
        if self._left(ctx, renders_after) < self.min_left:
            if self.returned or self.best_u is None:
                return None
            self.returned = True
            if self.best_loss >= basin:
                return None
            self.recent = []
            return self.best_u - u, self.sigma_fraction * sigma0
        if sigma > self.sigma_fraction * sigma0 or len(self.recent) < 2 * self.window:
            return None
        before = sum(self.recent[:self.window]) / self.window
        if basin < (1.0 - self.progress) * before:
            return None          # still descending: converging on something, leave it be
        if basin < self.best_loss:
            self.best_loss, self.best_u = basin, u.detach().clone()
        self.count += 1
        self.recent = []
        return torch.rand(u.shape, generator=ctx.generator, dtype=u.dtype) - u, sigma0

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent), "best_u": self.best_u, "best_loss": self.best_loss, "count": self.count,
                "returned": self.returned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.recent, self.best_u = list(state["recent"]), state["best_u"]
            self.best_loss, self.count = float(state["best_loss"]), int(state["count"])
            self.returned = bool(state["returned"])
