"""The meta-learner: an initialisation ``u0`` and per-coordinate step sizes ``α`` for a family.

Metappearance (MAML with Meta-SGD step sizes): each task of a family is solved by a short
inner loop of plain gradient steps ``u ← clamp(u − α ⊙ ∇L_task(u), 0, 1)`` in the normalised
space, and an outer loop changes ``u0`` and ``log α`` so that the loss *after* the inner loop
is low on average over the family.

Two ways to get the meta-gradient, both driven only through the public pieces (a
:class:`BatchEvaluator` that renders, scores and counts, and a gradient estimator):

* ``order="second"`` (MAML): the inner loop is built with ``create_graph=True`` through a
  differentiable renderer, and the final loss is backpropagated through all inner steps to
  ``u0`` and ``log α``. Exact, needs double backward through the renderer.
* ``order="first"`` (first-order MAML): the inner steps are taken on the estimator's gradients
  (any estimator: analytic, PRDPT, ZeroGrads...), and the Jacobian of the inner loop is taken as
  the identity: ``∂L/∂u0 ≈ g_K`` and ``∂L/∂α ≈ −g_K ⊙ Σ_k g_k`` (exact for one inner step), where
  ``g_k`` is the gradient at inner step ``k`` and ``g_K`` the gradient after the loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..errors import ConfigError, RendergradError
from ..evaluation import BatchEvaluator
from ..interfaces import GradientEstimator, StepContext

ORDERS = ("first", "second")


@dataclass
class Task:
    """One member of a family: a target image, and its known optimum when there is one."""

    target: torch.Tensor | None
    u_star: torch.Tensor | None = None
    name: str = ""


@dataclass
class InnerResult:
    u: torch.Tensor            # the parameters after the inner loop (detached)
    loss: float                # the loss there (exact: one counted render, or the estimator's)
    losses: list[float] = field(default_factory=list)  # the loss before each inner step


class MetaLearner:
    """Holds ``u0`` and ``log α`` and takes outer steps over batches of tasks.

    All tasks share one evaluator (one renderer, one objective); a task is activated by giving
    the objective its target, so every render of meta-training is counted in
    ``evaluator.renders``.
    """

    def __init__(self, evaluator: BatchEvaluator, *, estimator: GradientEstimator | None = None,
                 order: str = "first", inner_steps: int = 10, u0: torch.Tensor | None = None,
                 step_size: float | torch.Tensor = 0.1, meta_lr: float = 0.01, meta_lr_decay: float = 1.0,
                 outer_steps: int = 100, learn_init: bool = True, learn_step_sizes: bool = True):
        if order not in ORDERS:
            raise ConfigError(f"[meta] order must be one of {ORDERS}, got {order!r}")
        if order == "first" and estimator is None:
            raise ConfigError("first-order meta-learning needs a gradient estimator")
        if order == "second" and not getattr(evaluator.renderer, "differentiable", False):
            raise ConfigError(
                f"[meta] order = \"second\" differentiates through the inner loop and needs a differentiable "
                f"renderer; {evaluator.renderer.name!r} is forward-only here. Use order = \"first\" "
                "(works with every estimator, e.g. prdpt or zerograds)")
        if not (isinstance(inner_steps, int) and inner_steps >= 1):
            raise ConfigError(f"[meta] inner_steps must be a positive integer, got {inner_steps!r}")
        self.evaluator, self.estimator, self.order = evaluator, estimator, order
        self.space = evaluator.space
        self.inner_steps = inner_steps
        n = self.space.size
        u0 = self.space.initial_unit() if u0 is None else torch.as_tensor(u0, dtype=torch.float64)
        alpha = torch.as_tensor(step_size, dtype=torch.float64).expand(n).clone()
        if not bool((alpha > 0).all()):
            raise ConfigError("[meta] step_size must be > 0")
        self.u0 = torch.nn.Parameter(u0.detach().clone().to(torch.float64))
        self.log_alpha = torch.nn.Parameter(alpha.log())
        self.learn_init, self.learn_step_sizes = learn_init, learn_step_sizes
        self.meta_lr, self.meta_lr_decay, self.outer_steps = float(meta_lr), float(meta_lr_decay), outer_steps
        self.opt = torch.optim.Adam([self.u0, self.log_alpha], lr=self.meta_lr)
        self.step = 0

    # -- state --------------------------------------------------------------------------------
    @property
    def step_sizes(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    def state_dict(self) -> dict[str, Any]:
        return {"u0": self.u0.detach().clone(), "log_alpha": self.log_alpha.detach().clone(),
                "opt": self.opt.state_dict(), "step": self.step}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        with torch.no_grad():
            self.u0.copy_(st["u0"])
            self.log_alpha.copy_(st["log_alpha"])
        self.opt.load_state_dict(st["opt"])
        self.step = int(st["step"])

    # -- tasks --------------------------------------------------------------------------------
    def activate(self, task: Task) -> None:
        ev = self.evaluator
        target = task.target
        ev.objective.prepare(target)
        ev.target = target

    # -- inner loops ----------------------------------------------------------------------------
    def _estimate(self, u: torch.Tensor, k: int, gen: torch.Generator) -> tuple[torch.Tensor, float]:
        ctx = StepContext(step=min(k, self.inner_steps - 1), total_steps=self.inner_steps, generator=gen,
                          takes_step=False)   # the inner loop steps along the gradient, α per parameter
        est = self.estimator.estimate(self.evaluator, u.detach().clone(), ctx)
        g = torch.as_tensor(est.grad).detach().reshape(-1).to(torch.float64)
        if g.shape[0] != self.space.size or not bool(torch.isfinite(g).all()):
            raise RendergradError(f"estimator {self.estimator.name!r} returned an unusable gradient "
                                  f"(shape {tuple(g.shape)}, finite={bool(torch.isfinite(g).all())}) in an inner loop")
        return g, float(est.loss)

    def inner_first_order(self, u0: torch.Tensor, alpha: torch.Tensor, gen: torch.Generator,
                          steps: int | None = None, final_gradient: bool = True
                          ) -> tuple[InnerResult, torch.Tensor, torch.Tensor | None]:
        """Plain gradient steps on estimated gradients; returns the result, ``Σ_k g_k`` and ``g_K``
        (the gradient after the loop, one more estimate, only with ``final_gradient``)."""
        steps = self.inner_steps if steps is None else steps
        self.estimator.setup(self.space, self.inner_steps)
        u = u0.detach().clone().to(torch.float64)
        gsum = torch.zeros_like(u)
        losses = []
        for k in range(steps):
            g, loss = self._estimate(u, k, gen)
            losses.append(loss)
            gsum += g
            u = (u - alpha * g).clamp(0.0, 1.0)
        if not final_gradient:
            return InnerResult(u=u, loss=math.nan, losses=losses), gsum, None
        g_final, loss_final = self._estimate(u, steps, gen)
        return InnerResult(u=u, loss=loss_final, losses=losses), gsum, g_final

    def inner_second_order(self, u0: torch.Tensor, alpha: torch.Tensor, *, create_graph: bool = True
                           ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        """The inner loop as one differentiable graph from ``(u0, α)`` to the final loss."""
        u = u0
        losses = []
        for _ in range(self.inner_steps):
            x = u if u.requires_grad else u.detach().requires_grad_(True)
            loss = self.evaluator(x.unsqueeze(0), differentiable=True)[0]
            (g,) = torch.autograd.grad(loss, x, create_graph=create_graph, allow_unused=True)
            if g is None:
                g = torch.zeros_like(x)
            losses.append(float(loss.detach()))
            u = (x - alpha * g).clamp(0.0, 1.0)
            if not create_graph:
                u = u.detach()
        final = self.evaluator(u.unsqueeze(0), differentiable=True)[0]
        return final, u, losses

    def adapt(self, task: Task, gen: torch.Generator, *, u0: torch.Tensor | None = None,
              step_sizes: torch.Tensor | None = None, steps: int | None = None) -> InnerResult:
        """Run the inner loop on ``task`` (no meta-gradient); the final loss is rendered exactly."""
        self.activate(task)
        u0 = self.u0.detach() if u0 is None else u0
        alpha = self.step_sizes if step_sizes is None else step_sizes
        steps = self.inner_steps if steps is None else steps
        if self.order == "second" or self.estimator is None:
            u = u0.detach().clone()
            losses = []
            for _ in range(steps):
                x = u.detach().requires_grad_(True)
                loss = self.evaluator(x.unsqueeze(0), differentiable=True)[0]
                (g,) = torch.autograd.grad(loss, x, allow_unused=True)
                losses.append(float(loss.detach()))
                u = (x.detach() - alpha * (torch.zeros_like(x) if g is None else g)).clamp(0.0, 1.0)
        else:
            res, _, _ = self.inner_first_order(u0, alpha, gen, steps=steps, final_gradient=False)
            u, losses = res.u, res.losses
        final = float(self.evaluator(u.unsqueeze(0))[0])
        return InnerResult(u=u.detach(), loss=final, losses=losses)

    # -- the outer step -----------------------------------------------------------------------
    def meta_gradient(self, tasks: Sequence[Task], gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(∂/∂u0, ∂/∂log α, mean final loss)`` of the batch's mean post-adaptation loss."""
        b = len(tasks)
        gu = torch.zeros_like(self.u0)
        ga = torch.zeros_like(self.log_alpha)
        total = 0.0
        for task in tasks:
            self.activate(task)
            if self.order == "second":
                u0 = self.u0.detach().clone().requires_grad_(True)
                la = self.log_alpha.detach().clone().requires_grad_(True)
                final, _, _ = self.inner_second_order(u0, la.exp())
                du, dla = torch.autograd.grad(final, (u0, la), allow_unused=True)
                gu += torch.zeros_like(gu) if du is None else du.detach()
                ga += torch.zeros_like(ga) if dla is None else dla.detach()
                total += float(final.detach())
            else:
                alpha = self.step_sizes
                res, gsum, g_final = self.inner_first_order(self.u0.detach(), alpha, gen)
                gu += g_final
                ga += -g_final * gsum * alpha        # d/d log α = α · d/dα
                total += res.loss
        return gu / b, ga / b, total / b

    def outer_step(self, tasks: Sequence[Task], gen: torch.Generator) -> float:
        """One meta-gradient step on a batch of tasks; returns the batch's mean final loss."""
        gu, ga, loss = self.meta_gradient(tasks, gen)
        if not (bool(torch.isfinite(gu).all()) and bool(torch.isfinite(ga).all())):
            raise RendergradError(f"non-finite meta-gradient at outer step {self.step}; lower [meta] meta_lr "
                                  "or the initial step_size")
        self.u0.grad = gu if self.learn_init else torch.zeros_like(gu)
        self.log_alpha.grad = ga if self.learn_step_sizes else torch.zeros_like(ga)
        done = self.step / self.outer_steps if self.outer_steps else 0.0
        for group in self.opt.param_groups:  # geometric decay, recomputed from progress (resumable)
            group["lr"] = self.meta_lr * self.meta_lr_decay ** min(done, 1.0)
        self.opt.step()
        with torch.no_grad():
            self.u0.clamp_(0.0, 1.0)
            self.log_alpha.clamp_(math.log(1e-8), math.log(1e8))
        self.step += 1
        return loss
