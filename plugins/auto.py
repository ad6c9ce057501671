"""``auto``: picks an estimator from what the run is — the renderer's capabilities, the number
and kinds of parameters — and says why in the log.

The rules come from the estimator benchmark (``benchmarks/results/estimators.md``,
``docs/estimators.md`` "Which estimator"):

* up to ``max_adaptive`` parameters → ``handoff`` at its defaults (:mod:`.handoff`: PRDPT with
  adaptive σ until the basin is found, then CMA-ES), whether or not the renderer is
  differentiable: it needs no learning rate or σ schedule for the scene, PRDPT crosses plateaus
  where analytic gradients are zero or vanishingly small (box, plateau) — analytic at a default
  learning rate failed on box and Rosenbrock² in the benchmark — and CMA-ES follows the narrow
  valleys near the target that PRDPT's steps cross. Without pycma installed: ``prdpt`` alone;
* more parameters, and the renderer differentiates all of them → ``analytic`` (one render per
  step; on the 12,288-parameter texture it reached the target in 62 renders where no
  forward-only method got within 12 % of it), falling back to ``prdpt`` when the gradient is
  exactly zero for ``patience`` steps in a row (a plateau);
* more parameters, forward-only → ``prdpt`` with the annealed schedule and the run's optimizer
  (a trust region of one scalar σ learns too little per render in thousands of dimensions).

The choice is made at the first step (that is when the renderer's capabilities are known,
through the step context) and recorded in the history (``auto``) and the ``rendergrad`` log.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch

from rendergrad import Estimate, GradientEstimator, StepContext, hookimpl
from rendergrad.errors import ConfigError
from rendergrad.params import ParamSpace

log = logging.getLogger("rendergrad.auto")


class Auto(GradientEstimator):
    """Chooses PRDPT handing over to CMA-ES, annealed PRDPT or analytic from the parameters and the renderer."""

    name = "auto"

    def __init__(self, max_adaptive: int = 50, patience: int = 3, allow_analytic: bool = True):
        if not (isinstance(max_adaptive, int) and max_adaptive >= 1):
            raise ConfigError(f"auto: max_adaptive must be a positive integer, got {max_adaptive!r}")
        if not (isinstance(patience, int) and patience >= 1):
            raise ConfigError(f"auto: patience must be a positive integer, got {patience!r}")
        self.max_adaptive, self.patience, self.allow_analytic = max_adaptive, patience, bool(allow_analytic)
        self.inner: GradientEstimator | None = None
        self.choice = ""
        self.reason = ""
        self.zero_steps = 0
        self.space: ParamSpace | None = None
        self.total_steps = 0

    def setup(self, space: ParamSpace, total_steps: int) -> None:
        super().setup(space, total_steps)
        self.inner, self.choice, self.reason, self.zero_steps = None, "", "", 0

    def _create(self, name: str, options: dict[str, Any]) -> GradientEstimator:
        from rendergrad.registry import registry
        est = registry().create("estimator", name, options)
        est.setup(self.space, self.total_steps)
        return est

    def choose(self, ctx: StepContext) -> tuple[str, dict[str, Any], str]:
        """``(estimator, options, reason)`` for this run."""
        assert self.space is not None
        n = self.space.size
        discrete = int(self.space.discrete_mask().sum())
        kinds = f"{n} parameter(s)" + (f", {discrete} discrete" if discrete else "")
        if n <= self.max_adaptive:
            if importlib.util.find_spec("cma") is None:
                return "prdpt", {}, (f"{kinds} (≤ {self.max_adaptive}): PRDPT with adaptive σ (pycma is not "
                                     "installed, so no CMA-ES refinement: pip install cma)")
            return "handoff", {}, (f"{kinds} (≤ {self.max_adaptive}): PRDPT with adaptive σ until the basin "
                                   "is found, then CMA-ES")
        if self.allow_analytic and ctx.differentiable and not ctx.nondifferentiable and not discrete:
            return "analytic", {}, (f"{kinds} (> {self.max_adaptive}) and the renderer differentiates all of "
                                    f"them: analytic, falling back to prdpt if the gradient is zero for "
                                    f"{self.patience} steps")
        why = ("the renderer is forward-only" if not ctx.differentiable else
               f"the renderer drops the derivative of {', '.join(ctx.nondifferentiable)}" if ctx.nondifferentiable
               else "some parameters are discrete")
        return "prdpt", {"schedule": "paper"}, (f"{kinds} (> {self.max_adaptive}) and {why}: PRDPT with the "
                                                "annealed σ schedule and the run's optimizer")

    def _switch(self, name: str, options: dict[str, Any], reason: str) -> None:
        self.inner, self.choice, self.reason = self._create(name, options), name, reason
        log.info("auto estimator: %s (%s)", name, reason)

    def estimate(self, loss_fn, u: torch.Tensor, ctx: StepContext) -> Estimate:
        info: dict[str, Any] = {}
        if self.inner is None:
            self._switch(*self.choose(ctx))
            info = {"auto": self.choice, "auto_reason": self.reason}
        assert self.inner is not None
        est = self.inner.estimate(loss_fn, u, ctx)
        if self.choice == "analytic":
            # "zero" up to rounding: with float64 parameters a soft edge's far tail leaves gradients
            # like 1e-231 where float32 gave exact zeros. A slope that changes the loss by less than
            # 1e-12 of itself across a parameter's whole (normalised) range is no slope to descend.
            g = float(torch.as_tensor(est.grad).abs().max())
            flat = not g > 1e-12 * max(abs(float(est.loss)), 1e-300)
            self.zero_steps = self.zero_steps + 1 if flat else 0
            if self.zero_steps >= self.patience:
                self._switch("prdpt", {}, f"the analytic gradient was exactly zero for {self.patience} steps "
                                          "(a plateau): PRDPT with adaptive σ")
                info = {"auto": self.choice, "auto_reason": self.reason}
        est.info = {**est.info, **info}
        return est

    def next_step_renders(self) -> int | None:
        """The chosen estimator's: a hand-off's CMA-ES phase renders one population per step, and
        the loop ends the run rather than let that step overrun ``max_renders``."""
        return self.inner.next_step_renders() if self.inner is not None else None

    def converged(self) -> bool:
        """The chosen estimator's: ``auto`` adds no stopping rule of its own."""
        return self.inner.converged() if self.inner is not None else False

    def state_dict(self) -> dict[str, Any]:
        return {"choice": self.choice, "reason": self.reason, "zero_steps": self.zero_steps,
                "inner": self.inner.state_dict() if self.inner is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state or not state.get("choice"):
            return
        options = {"schedule": "paper"} if "annealed" in state["reason"] else {}
        self.inner = self._create(state["choice"], options)
        self.choice, self.reason, self.zero_steps = state["choice"], state["reason"], state["zero_steps"]
        if state.get("inner"):
            self.inner.load_state_dict(state["inner"])


@hookimpl
def rendergrad_estimators():
    return [Auto]
