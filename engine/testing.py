"""A conformance kit for plugin authors: run the contract against your plugin in your own tests.

    from rendergrad.testing import check_renderer, check_objective, check_estimator

    def test_my_renderer_keeps_the_contract():
        check_renderer(MyRenderer(scene="box.xml"))

Each check exercises what the engine relies on — shapes, dtypes, bounds, a batch of one and of
many, determinism given the saved state, the state_dict round trip, gradients where a plugin
declares them, close — and raises :class:`ContractError` with a reason you can act on. The
rendergrad test suite runs them over every registered plugin.
"""

from __future__ import annotations

import copy

import torch

from .evaluation import as_image_batch
from .interfaces import Estimate, GradientEstimator, Objective, Renderer, StepContext
from .params import Param, ParamSpace

__all__ = ["ContractError", "check_renderer", "check_objective", "check_estimator"]


class ContractError(AssertionError):
    """A plugin broke the contract; the message says which rule and how to fix it."""


def _fail(who: str, rule: str) -> None:
    raise ContractError(f"{who}: {rule}")


def _samples(space: ParamSpace, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` parameter vectors inside the bounds: the initial one first, then random ones."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(count, space.size, generator=g, dtype=torch.float64)
    u[0] = space.initial_unit()
    return space.to_theta(u).to(torch.float32)


def check_renderer(renderer: Renderer, *, batch: int = 3, deterministic: bool = True,
                   close: bool = True) -> None:
    """Check ``renderer``: its space, images for a batch of 1 and of ``batch``, determinism,
    the state round trip, gradients if ``differentiable``, and ``close()``."""
    who = f"renderer {getattr(renderer, 'name', type(renderer).__name__)!r}"
    space = renderer.parameter_space()
    if not isinstance(space, ParamSpace) or space.size < 1:
        _fail(who, "parameter_space() must return a ParamSpace with at least one parameter")
    theta = _samples(space, batch)
    state = copy.deepcopy(renderer.state_dict())
    with torch.no_grad():
        many = as_image_batch(renderer.render(theta), batch=batch, who=who)
        one = as_image_batch(renderer.render(theta[:1]), batch=1, who=who)
    if one.shape[1:] != many.shape[1:]:
        _fail(who, f"a batch of 1 gave images {tuple(one.shape[1:])}, a batch of {batch} gave "
                   f"{tuple(many.shape[1:])}; every image must have the same [H, W, C]")
    if not bool(torch.isfinite(many).all()):
        _fail(who, "render() returned NaN/inf pixels for parameters inside the bounds")
    if deterministic:
        renderer.load_state_dict(copy.deepcopy(state))
        with torch.no_grad():
            again = as_image_batch(renderer.render(theta), batch=batch, who=who)
        # Close, not equal: a renderer that accumulates samples on several threads (Mitsuba's
        # LLVM backend) sums in a varying order, which moves the last bits and nothing else.
        if not torch.allclose(again, many, rtol=1e-4, atol=1e-5):
            _fail(who, "the same theta after load_state_dict(state_dict()) gave different images; put "
                       "every random seed in state_dict(), or pass deterministic=False if the renderer "
                       "cannot be made deterministic")
    if getattr(renderer, "differentiable", False):
        x = theta[:1].clone().requires_grad_(True)
        img = as_image_batch(renderer.render(x), batch=1, who=who)
        if not img.requires_grad:
            _fail(who, "differentiable = True but the images carry no autograd graph back to theta")
        (g,) = torch.autograd.grad(img.sum(), x, allow_unused=True)
        if g is None or not bool(torch.isfinite(g).all()):
            _fail(who, "differentiable = True but d(image)/d(theta) is missing or not finite")
    if close:
        renderer.close()


def check_objective(objective: Objective, *, images: torch.Tensor | None = None,
                    target: torch.Tensor | None = None, needs_target: bool = True) -> None:
    """Check ``objective``: one finite float per image, batch of 1 ≡ a row of a batch, and
    gradients with respect to the images."""
    who = f"objective {getattr(objective, 'name', type(objective).__name__)!r}"
    g = torch.Generator().manual_seed(0)
    if images is None:
        images = torch.rand(3, 32, 32, 3, generator=g)
    if target is None and needs_target:
        target = torch.rand(images.shape[1:], generator=g)
    objective.prepare(target)
    loss = objective.loss(images, target)
    if not isinstance(loss, torch.Tensor) or loss.shape != (images.shape[0],) or not loss.is_floating_point():
        _fail(who, f"loss() returned {getattr(loss, 'shape', type(loss).__name__)}; it must return one "
                   f"float per image, shape [{images.shape[0]}]")
    if not bool(torch.isfinite(loss).all()):
        _fail(who, "loss() returned NaN/inf for ordinary images")
    one = objective.loss(images[1:2], target)
    if not torch.allclose(one[0], loss[1], rtol=1e-4, atol=1e-6):
        _fail(who, f"the loss of an image depends on the rest of its batch ({float(one[0])} alone, "
                   f"{float(loss[1])} in a batch); score each image on its own")
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective.loss(x, target).sum(), x, allow_unused=True)
    if grad is None or not bool(torch.isfinite(grad).all()):
        _fail(who, "loss() is not differentiable in the images (analytic gradients need it)")


class _Quadratic:
    """A cheap loss function over ``u`` with a known minimum, counting what it is asked."""

    def __init__(self, n: int):
        self.space = ParamSpace([Param("p", shape=(n,), init=0.2)])
        self.size, self.renders, self.centre = n, 0, torch.full((n,), 0.7, dtype=torch.float64)

    def __call__(self, u: torch.Tensor, *, differentiable: bool = False) -> torch.Tensor:
        if u.ndim == 1:
            u = u.unsqueeze(0)
        self.renders += u.shape[0]
        loss = ((u.to(torch.float64) - self.centre) ** 2).sum(-1)
        return loss if differentiable else loss.detach()


def _estimate(est: GradientEstimator, fn: _Quadratic, u: torch.Tensor, step: int, seed: int) -> Estimate:
    ctx = StepContext(step=step, total_steps=10, generator=torch.Generator().manual_seed(seed))
    return est.estimate(fn, u, ctx)


def check_estimator(estimator: GradientEstimator, *, n: int = 3) -> None:
    """Check ``estimator`` on a quadratic: a finite gradient of size ``n`` that points downhill on
    average, renders counted honestly, and an exact ``state_dict`` round trip."""
    who = f"estimator {getattr(estimator, 'name', type(estimator).__name__)!r}"
    fn = _Quadratic(n)
    estimator.setup(fn.space, 10)
    u = torch.full((n,), 0.2, dtype=torch.float64)
    est = _estimate(estimator, fn, u, 0, 1)
    if not isinstance(est, Estimate):
        _fail(who, f"estimate() returned {type(est).__name__}; return a rendergrad.Estimate")
    grad = torch.as_tensor(est.grad).reshape(-1)
    if grad.shape[0] != n or not bool(torch.isfinite(grad).all()):
        _fail(who, f"the gradient must be {n} finite numbers, got {tuple(grad.shape)}")
    if est.renders != fn.renders:
        _fail(who, f"Estimate.renders = {est.renders} but loss_fn evaluated {fn.renders} points; report "
                   "what the estimate cost")
    if not isinstance(est.loss, (int, float)) or est.loss != est.loss:
        _fail(who, "Estimate.loss must be a finite number (a loss value at or around u)")
    state = copy.deepcopy(estimator.state_dict())
    first = _estimate(estimator, fn, u, 1, 2)
    estimator.load_state_dict(copy.deepcopy(state))
    second = _estimate(estimator, fn, u, 1, 2)
    same_step = (first.step is None) == (second.step is None) and (
        first.step is None or torch.equal(torch.as_tensor(first.step), torch.as_tensor(second.step)))
    if not torch.equal(torch.as_tensor(first.grad), torch.as_tensor(second.grad)) or not same_step:
        _fail(who, "after load_state_dict(state_dict()) the same step gave a different gradient or step; every "
                   "piece of state that carries over between steps belongs in state_dict(), and all "
                   "randomness must come from ctx.generator")
