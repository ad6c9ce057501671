"""What a sampling estimator remembers about the basin it is in: shared by ``prdpt`` and ``zerograds``.

Both estimators step through a loss from a few renders per step, with σ adapted from what the
samples show (:class:`.schedules.AdaptiveSigma`). Three rules keep such a run from wasting its
budget, and they do not depend on how the gradient is estimated, so they live here once:

* **rough plateau** (``rough``): before any sample has found a slope, losses that differ by a few
  percent, step after step, are ripple (a soft edge aliased on a coarse image), not slope; σ
  grows instead of following the path length (:meth:`BasinRules._flat`).
* **elite jumps** (``elite``): a sample that beats every loss seen in the basin by a margin,
  confirmed by a second render on a noisy renderer, replaces the gradient step
  (:meth:`BasinRules._elite_jump`).
* **restarts** (:mod:`.restarts`): a collapsed σ restarts from a random point; the last fifth of
  the run returns to the best basin (:meth:`BasinRules._restart`).

A host class sets ``self.adaptive`` (an :class:`AdaptiveSigma`), ``self.elite``, ``self.rough``
and ``self.restarts`` (a :class:`.restarts.Restarts` or None), calls :meth:`_reset_basin` in its
``setup`` and merges :meth:`_basin_state` into its checkpoint.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rendergrad import StepContext
from rendergrad.errors import ConfigError

from .restarts import Restarts

SLOPE_FOUND = 0.1   # a sample this far below a basin's first loss ends its rough plateau
ELITE_MEANING = "how much a sample must beat the best loss seen, as a fraction, for the step to jump to it"
ROUGH_MEANING = "the relative spread of a step's losses that still counts as a plateau before any slope was found"


def check_fraction(who: str, name: str, value: Any, meaning: str) -> float:
    """``value`` as a float in ``[0, 1)``, or a :class:`ConfigError` that says what it means."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= float(value) < 1.0):
        raise ConfigError(f"{who}: {name} ({meaning}) must be in [0, 1), got {value!r}; 0 turns it off")
    return float(value)


class BasinRules:
    """Rough plateaus, elite jumps and restarts for an estimator with an adaptive σ (a mixin)."""

    adaptive: Any
    elite: float
    rough: float
    restarts: Any

    def _configure_basin(self, who: str, adaptive: bool, elite: Any, rough: Any,
                         restarts: bool | dict[str, float] | None) -> None:
        """Validate and keep the rules' options (``restarts=None``: on exactly with the adaptive σ)."""
        self.elite = check_fraction(who, "elite", elite, ELITE_MEANING)
        self.rough = check_fraction(who, "rough", rough, ROUGH_MEANING)
        if restarts is None:
            restarts = adaptive
        if restarts and not adaptive:
            raise ConfigError(f"{who}: restarts follow the adaptive σ (they start when it has collapsed); "
                              "they need schedule = 'adaptive'")
        self.restart_options = dict(restarts) if isinstance(restarts, dict) else {}
        self.use_restarts = bool(restarts)
        self.restarts = None
        self._reset_basin()

    def _start_basin(self) -> None:
        """A run starts: fresh restart bookkeeping and an empty basin memory (call from ``setup``)."""
        self.restarts = Restarts(**self.restart_options) if self.use_restarts else None
        self._reset_basin()

    def _reset_basin(self) -> None:
        self.best_seen = math.inf   # the lowest sampled loss in this basin (elite jumps)
        self.repeatable = False     # whether the renderer has returned the same loss twice (no noise)
        self.basin_start: float | None = None   # the first step's mean loss in this basin (rough plateau)
        self.rough_streak = 0                    # consecutive steps that looked like a rough plateau

    def _basin_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"best_seen": self.best_seen, "repeatable": self.repeatable,
                               "basin_start": self.basin_start, "rough_streak": self.rough_streak}
        if self.restarts is not None:
            out["restarts"] = self.restarts.state_dict()
        return out

    def _load_basin_state(self, state: dict[str, Any] | None) -> None:
        state = state or {}
        self.best_seen = float(state.get("best_seen", math.inf))
        self.repeatable = bool(state.get("repeatable", False))
        self.basin_start = state.get("basin_start")
        self.rough_streak = int(state.get("rough_streak", 0))
        if self.restarts is not None and "restarts" in state:
            self.restarts.load_state_dict(state["restarts"])

    def _flat(self, losses: torch.Tensor) -> tuple[bool, bool]:
        """``(flat, rough)`` for a step's sampled losses.

        ``flat``: the losses are equal up to the adaptive σ's ``flat_tol``; the samples saw no
        slope, so the step is skipped and σ grows.

        ``rough``: the run is on a *rough plateau*. No sample of this basin has beaten its first
        step's loss by 10 %, and this step's losses differ by at most ``rough`` (5 %) of their
        size, as did the step before. The step is taken, but σ grows as on a flat step instead
        of following the path length.

        Why: a plateau is rarely smooth. A disc that does not overlap its target on a 64² image
        changes the loss by ±1.5 % from one pixel offset to the next (aliasing of its soft
        edge). A pair of samples reads that deterministic ripple as a slope. The directions it
        gives are random, and the path length, seeing them, lets σ drift down until the kernel
        can no longer reach the target (16 runs of 50 failed there). A real slope at
        the start differs from the ripple in size: at σ₀ it moves the loss by tens of percent.
        Once a sample has found one (10 % below the start), the run is past its plateau and only
        the exact test applies, so a loss floor near the optimum (render noise of a few percent)
        never widens σ. Two such steps in a row, not one: on a real slope a pair of samples
        nearly square to the gradient also differs by little (Rosenbrock²'s first step, by
        0.15 %), and one wider σ sends a chaotic run elsewhere.
        """
        assert self.adaptive is not None
        y = losses.detach().to(torch.float64).reshape(-1)
        if self.basin_start is None:
            self.basin_start = float(y.mean())
        flat, looks_rough = self.adaptive.is_flat(y), False
        if not flat and self.rough and math.isfinite(self.basin_start) and \
                min(self.best_seen, float(y.min())) >= self.basin_start - SLOPE_FOUND * abs(self.basin_start):
            looks_rough = float(y.max() - y.min()) <= self.rough * max(float(y.abs().max()), 1e-300)
        self.rough_streak = self.rough_streak + 1 if looks_rough else 0
        return flat, self.rough_streak >= 2

    def _elite_jump(self, loss_fn, losses: torch.Tensor, points: torch.Tensor, u: torch.Tensor,
                    flat: bool, ctx: StepContext) -> tuple[torch.Tensor | None, int]:
        """``(move, renders)``: the move to this step's best sample when it beats the best loss seen
        by ``elite`` (and the step's losses are not ``flat``), else None, and the renders spent.

        A Monte Carlo renderer's lowest sample is often the luckiest noise, not the best point
        (a caustic's fireflies change the loss by a third from one render to the next), so a
        candidate is rendered once more and the step jumps only if the new render beats the bar
        too. A renderer that returns the very same loss again is noise-free: later candidates are
        taken without the extra render.
        """
        if not self.elite or not ctx.takes_step:   # nobody would take the jump: no render for it
            return None, 0
        i = int(torch.argmin(losses))
        low = float(losses[i])
        bar = self.best_seen - self.elite * abs(self.best_seen)
        jump, renders = None, 0
        spent, budget = int(getattr(loss_fn, "renders", 0)), ctx.max_renders
        if math.isfinite(self.best_seen) and low < bar and not flat:
            if self.repeatable:
                again = low
            elif budget is not None and spent >= budget:
                again = math.inf          # no render left to check it: the gradient step instead
            else:
                again = float(loss_fn(points[i:i + 1])[0])
                renders = 1
                self.repeatable = abs(again - low) <= 1e-12 * max(abs(low), 1e-300)
            if again < bar:
                jump = (points[i] - u).to(u.dtype)
        self.best_seen = min(self.best_seen, low)
        return jump, renders

    def _restart(self, u: torch.Tensor, loss: float, sigma: float, ctx: StepContext, renders_after: int,
                 info: dict[str, Any]) -> torch.Tensor | None:
        """The move that replaces this step when the run restarts or goes back to its best basin,
        else None; σ, its path and the basin's memory then start afresh (``info`` says which)."""
        if self.restarts is None or self.adaptive is None:
            return None
        jump = self.restarts.after_step(u, loss, sigma, self.adaptive.sigma0, ctx, renders_after)
        if jump is None:
            return None
        step, new_sigma = jump
        info["restart"] = "back to the best basin" if self.restarts.returned else self.restarts.count
        self.adaptive.load_state_dict({"sigma": new_sigma, "path": None})
        self.best_seen = math.inf
        # a restart starts on unknown ground; the way back goes to a basin whose slope was
        # already found, where a loss floor must not pass for a rough plateau
        self.basin_start = -math.inf if self.restarts.returned else None
        self.rough_streak = 0
        return step
