"""Baseline gradient estimators: ``analytic``, ``fd`` (central differences), ``spsa``.

All work on the normalised parameters ``u ∈ [0,1]^n`` and evaluate through the one batched
loss function, so their renders are counted exactly like every other estimator's.
"""

from __future__ import annotations

import torch

from rendergrad import Estimate, GradientEstimator, StepContext, hookimpl
from rendergrad.errors import ConfigError, IncompatiblePluginsError


class Analytic(GradientEstimator):
    """Backpropagate through a differentiable renderer: one render per step, exact gradient."""

    name = "analytic"
    requires_differentiable = True
    population = True   # u [B, n]: one render per candidate, each gradient from its own loss

    def __init__(self, allow_nondifferentiable: bool = False):
        # Off by default: a parameter whose derivative the renderer drops gets an exactly zero
        # gradient, so it would silently never move.
        self.allow_nondifferentiable = bool(allow_nondifferentiable)

    def estimate(self, loss_fn, u: torch.Tensor, ctx: StepContext) -> Estimate:
        if ctx is not None and ctx.nondifferentiable and not self.allow_nondifferentiable:
            raise IncompatiblePluginsError(
                f"analytic: the renderer does not differentiate parameter(s) "
                f"{', '.join(repr(n) for n in ctx.nondifferentiable)}, so their gradient would be exactly zero "
                "and they would never move. Use a forward-only estimator (prdpt, zerograds, spsa, cma), "
                "or set allow_nondifferentiable = true to optimise the other parameters only.")
        if u.ndim == 2:
            return self._population(loss_fn, u)
        x = u.detach().clone().requires_grad_(True)
        loss = loss_fn(x.unsqueeze(0), differentiable=True)[0]
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
        if grad is None:  # the renderer ignored theta entirely: a plateau everywhere
            grad = torch.zeros_like(x)
        return Estimate(grad=grad.detach(), loss=float(loss.detach()), renders=1)

    @staticmethod
    def _population(loss_fn, u: torch.Tensor) -> Estimate:
        """B candidates in one batch: the gradient of the summed losses is each candidate's own."""
        x = u.detach().clone().requires_grad_(True)
        losses = loss_fn(x, differentiable=True)
        (grad,) = torch.autograd.grad(losses.sum(), x, allow_unused=True)
        grad = torch.zeros_like(x) if grad is None else grad
        losses = losses.detach()
        return Estimate(grad=grad.detach(), loss=float(losses.min()), renders=x.shape[0], losses=losses)


class FiniteDifferences(GradientEstimator):
    """Central differences: 2n renders per step, step ``h`` in fractions of each range.

    Exact on smooth objectives, but on a plateau (or any change smaller than ``h`` can reach)
    it reads zero, like analytic gradients.
    """

    name = "fd"

    def __init__(self, h: float = 0.01):
        if not h > 0:
            raise ConfigError("fd: h must be > 0")
        self.h = float(h)

    def estimate(self, loss_fn, u: torch.Tensor, ctx: StepContext) -> Estimate:
        n = u.shape[0]
        eye = torch.eye(n, dtype=u.dtype) * self.h
        batch = torch.cat([u + eye, u - eye])
        losses = loss_fn(batch).to(u.dtype)
        grad = (losses[:n] - losses[n:]) / (2 * self.h)
        return Estimate(grad=grad, loss=float(losses.mean()), renders=2 * n)


class SPSA(GradientEstimator):
    """Simultaneous perturbation (Spall 1992): 2 renders per pair, whatever n.

    Perturbation size ``c_k = c / (k + 1)^gamma``; Rademacher directions; ``pairs`` directions
    averaged per step.
    """

    name = "spsa"

    def __init__(self, c: float = 0.05, gamma: float = 0.101, pairs: int = 1):
        if not c > 0 or pairs < 1:
            raise ConfigError("spsa: c must be > 0 and pairs >= 1")
        self.c, self.gamma, self.pairs = float(c), float(gamma), int(pairs)

    def estimate(self, loss_fn, u: torch.Tensor, ctx: StepContext) -> Estimate:
        n = u.shape[0]
        ck = self.c / (ctx.step + 1) ** self.gamma
        delta = torch.randint(0, 2, (self.pairs, n), generator=ctx.generator).to(u.dtype) * 2 - 1
        losses = loss_fn(torch.cat([u + ck * delta, u - ck * delta])).to(u.dtype)
        diff = losses[: self.pairs] - losses[self.pairs:]
        grad = (diff[:, None] * delta).mean(0) / (2 * ck)
        return Estimate(grad=grad, loss=float(losses.mean()), renders=2 * self.pairs, info={"c": ck})


@hookimpl
def rendergrad_estimators():
    return [Analytic, FiniteDifferences, SPSA]
