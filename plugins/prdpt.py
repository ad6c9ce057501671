"""``prdpt``: plateau-reduced gradients by Gaussian smoothing of the objective.

The estimator descends ``g = κ_σ * f``, the objective convolved with a Gaussian in parameter
space. Where ``f`` is flat (an object that does not overlap its target), ``g`` still slopes
towards the optimum, because the kernel reaches across the plateau.

Three ways to estimate ``∇g`` (option ``sampler``):

* ``"gaussian"`` (default) — the multivariate score-function estimator
  ``∇g(u) = E[(f(u+ε) − f(u−ε)) ε / (2σ²)]``, ``ε ~ N(0, diag σ²)``, with antithetic pairs.
  Exact (unbiased for ``∇g``) in any number of dimensions.
* ``"importance"`` — the per-dimension importance sampling of the original PRDPT code: each
  coordinate of the offset is drawn from ``|∂κ/∂x|`` (``τ = sqrt(−2σ² log ξ)``, random sign),
  weight ``sign(τ_i) · sqrt(2/π) / σ_i``. Zero variance in 1-D; in n-D the other coordinates are
  not Gaussian, so the components are gradients of differently-smoothed objectives. Kept so the
  two can be compared.
* ``mode="reparam"`` — the reparameterised estimator ``E[∇f(u+ε)]`` ("κ∂P") for differentiable
  renderers: lower variance, one backward pass per sample.

``sigma_step=True`` (default) scales the gradient by ``σ/σ₀``, so with Adam the steps shrink
as the kernel narrows and the parameters settle even at a constant learning rate.

``qmc=True`` draws the offsets from a scrambled Sobol sequence (fresh scramble each step, seeded
from the run's generator) instead of pseudo-random numbers.

``transform="log"`` smooths ``log f`` instead of ``f`` (losses divided by the first step's mean
first, so the offset ``1e-12`` is relative). Its gradient is ``≈ ∇f / f``: its size no longer
follows the loss's, which matters when the loss falls by many orders of magnitude (Rosenbrock²:
10¹⁰ from the start to the valley floor). There, Adam's second moment (β₂ = 0.999, a memory of
~1,000 steps) still holds the huge early gradients long after the loss has dropped, so its
steps shrink to nothing; and the few large values on the valley walls dominate the Monte Carlo
estimate of ``∇(κ * f)``.

``bounds="shift"`` moves the sampling centre inward, to at least ``2σ`` from each bound,
before drawing the offsets. By default the evaluator clamps samples that leave the domain to
its bounds, and the clamped loss is flat beyond the bound: where the loss rises outward (a
valley that runs into the bound) the smoothed *clamped* loss then slopes towards the bound, and
the estimator pushes the parameters into it and holds them there (measured on Rosenbrock² at
x = −1.5: ∂/∂x of the smoothed log-loss is +8.3 with clamping, −23 without). Shifting estimates
the gradient up to 2σ away from ``u``, which is harmless when σ is small against the range.

``covariance="adaptive"`` (the default with the adaptive σ) learns the kernel's shape from the
steps taken (CMA-ES's rank-one update; :mod:`.kernel_shape`) and steps along the smoothed
gradient in that metric: a curved valley (Rosenbrock²: 9 of 10 seeds solved in 600 renders,
against 2 of 10 with the round kernel, ``covariance="isotropic"``) is followed instead of crossed
back and forth. Options of the shape go in ``shape = {learning_rate, max_condition, gate}``.

``restarts`` (on by default with the adaptive σ; :mod:`.restarts`): when σ has collapsed to 3 %
of its start with at least a fifth of the run left, the estimator has settled, in the optimum or
in a false minimum it cannot tell apart; it starts again from a random point with σ₀, remembers
the best basin, and for the last fifth returns there (if the current basin is worse) to refine it.
Measured at the defaults, 10 seeds: the toy's local minimum 10/10 seeds solved (9/10 without),
plateau 6/10 (4/10), box 6/10 (same), Rosenbrock² 8/10 (9/10). ``restarts = false`` turns them
off; ``restarts = { sigma_fraction = 0.03, min_left = 0.2, window = 10, progress = 0.1 }`` tunes them.

``elite`` (0.1 by default; 0 turns it off): when a step's best sample beats every loss the
estimator has seen in this basin by more than that fraction, the step jumps to it instead of taking
the smoothed-gradient step. Why: the smoothed gradient moves half a kernel width towards a sample
that landed in the basin, and with σ still wide the next steps carry it across and out again (the
box task: a run crossing the target three times in its first 60 steps); an evolution strategy
keeps the better point. On a Monte Carlo renderer the lowest sample is often the luckiest noise
(the sharp caustic's fireflies move its loss by a third from render to render: jumping on it made
that scene 1.8× slower), so the candidate is rendered once more and the jump is taken only if that
render beats the bar too; a renderer that returns the very same loss twice is noise-free and is
not asked again (one extra render per run). Measured at 600 renders (``benchmarks/results/defaults.md``):
on seeds 10–59 box 36/50 in a median of 156 renders (without: 36/50 in 224; CMA-ES 26/50 in 132),
toy 43 (76), Rosenbrock² 44/50 in 307 (43/50 in 368), plateau 34/50 in 249 (265); on seeds 0–9
the 5-parameter Mitsuba lamp scene 10/10 in 244 (9/10 in 316).

``rough`` (0.05 by default; 0 turns it off): a *rough plateau* widens σ. Until a sample beats the
basin's first loss by 10 %, two steps in a row whose losses lie within 5 % of each other count as
a plateau whose differences are ripple (a soft edge aliased on a coarse image), not slope: the
step is taken, and σ grows by ``plateau_growth`` instead of following the path length, which
reads the ripple's random directions as "σ too wide". Measured at 600 renders: the aliased
plateau disc 50/50 seeds (10–59) in a median of 192 renders, against 34/50 in 249 without it;
box 39/50 (36/50), the toy and Rosenbrock² unchanged (``benchmarks/results/defaults.md``).

``groups`` (``"auto"`` by default with the learnt shape; :mod:`.groups`): once σ has narrowed to
``group_after`` (0.3) of its start, the estimator refines one group of parameters at a time, each
with its own σ and kernel shape: a colour no longer waits while its pair differences drown in the
jitter of a position that moves the loss 90× more. ``"auto"`` makes each vector parameter a group
and the scalar parameters one more; a space of one group is unchanged. Measured at 600 renders,
seeds 10–39: one disc with its colour 22/30 solved (10/30 with ``groups = "none"``), one box 25/30
(8/30), two shapes 6/30 (0/30).

Restarts, elite jumps and rough plateaus live in :mod:`.basin`, shared with ``zerograds``.

The ``loss`` reported per step is the mean of the losses actually rendered, i.e. a Monte Carlo
estimate of the smoothed loss ``g(u)``; with ``center=True`` one extra render at ``u`` itself
reports ``f(u)`` exactly.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from rendergrad import Estimate, GradientEstimator, StepContext, hookimpl
from rendergrad.errors import ConfigError
from rendergrad.params import ParamSpace

from .basin import BasinRules
from .groups import Group, ParameterGroups, embed, group_names, group_options
from .kernel_shape import KernelShape
from .schedules import AdaptiveSigma, progress, sigma_control

SAMPLERS = ("gaussian", "importance")
MODES = ("score", "reparam")
TRANSFORMS = ("none", "log")
BOUNDS = ("clamp", "shift", "reflect")
COVARIANCES = ("adaptive", "isotropic")


def reflect_into_unit(x: torch.Tensor) -> torch.Tensor:
    """Mirror values at 0 and 1 until they lie in ``[0, 1]`` (period 2, even about each bound).

    Samples reflected this way smooth the loss's mirror-image extension beyond the bounds, whose
    slope at a bound is zero: the estimate never pulls parameters *into* a bound the way
    clamping (a flat extension) does where the loss rises outward.
    """
    y = torch.remainder(x, 2.0)
    return torch.where(y > 1.0, 2.0 - y, y)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def inset(u: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """``u`` moved inward to at least ``margin`` from each bound of ``[0, 1]`` (a sampling centre)."""
    return torch.minimum(torch.maximum(u, margin), 1.0 - margin)


def without_outward(u: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``direction`` with the components zeroed that push a parameter at a bound further out:
    such steps cannot be taken, so they are left out of the step and of the path length."""
    pinned = ((u <= 0.0) & (direction > 0)) | ((u >= 1.0) & (direction < 0))
    return torch.where(pinned, torch.zeros_like(direction), direction)


def _seed_from(gen: torch.Generator) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=gen))


def uniform_samples(m: int, n: int, gen: torch.Generator, qmc: bool, dtype=torch.float64) -> torch.Tensor:
    """``[m, n]`` uniforms in (0, 1): pseudo-random, or a freshly scrambled Sobol set."""
    if qmc:
        if n > torch.quasirandom.SobolEngine.MAXDIM:
            raise ConfigError(f"qmc=True supports at most {torch.quasirandom.SobolEngine.MAXDIM} parameters "
                              f"(Sobol); this space has {n}. Set qmc = false.")
        eng = torch.quasirandom.SobolEngine(n, scramble=True, seed=_seed_from(gen))
        xi = eng.draw(m, dtype=dtype)
    else:
        xi = torch.rand(m, n, generator=gen, dtype=dtype)
    return xi.clamp(1e-12, 1.0 - 1e-12)


def gaussian_offsets(m: int, n: int, gen: torch.Generator, qmc: bool) -> torch.Tensor:
    """``[m, n]`` standard normal offsets (inverse CDF of the uniforms, so QMC carries over)."""
    if not qmc:
        return torch.randn(m, n, generator=gen, dtype=torch.float64)
    xi = uniform_samples(m, n, gen, qmc)
    return math.sqrt(2.0) * torch.erfinv(2.0 * xi - 1.0)


def kernel_gradient_offsets(m: int, n: int, gen: torch.Generator, qmc: bool) -> torch.Tensor:
    """``[m, n]`` offsets for σ = 1 with density ∝ |x| exp(−x²/2) per coordinate (random sign).

    Inverse CDF of the PRDPT importance density: a Rayleigh magnitude ``sqrt(−2 log ξ)`` with
    the sign taken from which half of (0, 1) the uniform fell in.
    """
    xi = uniform_samples(m, n, gen, qmc)
    sign = torch.where(xi < 0.5, -1.0, 1.0).to(xi.dtype)
    half = torch.where(xi < 0.5, 2.0 * xi, 2.0 * (1.0 - xi)).clamp(1e-12, 1.0)
    return sign * torch.sqrt(-2.0 * torch.log(half))


class PRDPT(BasinRules, GradientEstimator):
    """Gaussian-smoothed gradients (PRDPT): crosses plateaus with forward renders only."""

    name = "prdpt"

    def __init__(self, sigma: float | None = None, sigma_min: float | None = None,
                 schedule: str | Callable = "adaptive",
                 anneal_start: float = 0.5, points: Sequence[Sequence[float]] | None = None,
                 samples: int = 2, antithetic: bool = True, sampler: str = "gaussian",
                 mode: str = "score", qmc: bool = False, center: bool = False, sigma_step: bool = True,
                 transform: str = "none", bounds: str | None = None, sigma_max: float = 0.3,
                 normalize: bool | None = None, step: float = 0.5, adapt: dict[str, float] | None = None,
                 reflect_margin: float = 0.05, covariance: str | None = None,
                 shape: dict[str, float] | None = None, restarts: bool | dict[str, float] | None = None,
                 elite: float = 0.1, rough: float = 0.05, groups: str | list[list[str]] | None = None,
                 group_after: float = 0.3):
        if sampler not in SAMPLERS:
            raise ConfigError(f"prdpt: sampler {sampler!r} is not one of {SAMPLERS}")
        if mode not in MODES:
            raise ConfigError(f"prdpt: mode {mode!r} is not one of {MODES}")
        if transform not in TRANSFORMS:
            raise ConfigError(f"prdpt: transform {transform!r} is not one of {TRANSFORMS}")
        adaptive = schedule == "adaptive" and points is None
        if bounds is None:
            bounds = "reflect" if adaptive else "clamp"
        if bounds not in BOUNDS:
            raise ConfigError(f"prdpt: bounds {bounds!r} is not one of {BOUNDS}")
        if mode == "reparam" and sampler != "gaussian":
            raise ConfigError("prdpt: mode='reparam' samples the Gaussian itself; use sampler='gaussian'")
        if not isinstance(samples, int) or samples < 1:
            raise ConfigError(f"prdpt: samples (renders per step) must be a positive integer, got {samples!r}")
        if antithetic and samples % 2:
            raise ConfigError(f"prdpt: with antithetic pairs, samples must be even (got {samples}); "
                              "use an even number or antithetic = false")
        if mode == "score" and not antithetic and samples < 2:
            raise ConfigError("prdpt: the score estimator without antithetic pairs needs samples >= 2 "
                              "(it subtracts the batch mean as a baseline)")
        self.adaptive: AdaptiveSigma | None
        self.adaptive, self.schedule = sigma_control(schedule, points, sigma, sigma_min, sigma_max, anneal_start,
                                                     adapt, paper_sigma=0.5, who="prdpt")
        # Normalised steps (the gradient's direction, at length σ/σ₀ per coordinate on average):
        # the step no longer follows the loss's scale, which can span orders of magnitude.
        self.normalize = adaptive if normalize is None else bool(normalize)
        if not step > 0:
            raise ConfigError(f"prdpt: step (the step length as a fraction of σ) must be > 0, got {step!r}")
        self.step = float(step)
        self.reflect_margin = float(reflect_margin)
        if covariance is None:
            covariance = "adaptive" if adaptive and mode == "score" and sampler == "gaussian" else "isotropic"
        if covariance not in COVARIANCES:
            raise ConfigError(f"prdpt: covariance {covariance!r} is not one of {COVARIANCES}")
        if covariance == "adaptive" and not (adaptive and mode == "score" and sampler == "gaussian"):
            raise ConfigError("prdpt: covariance = 'adaptive' learns the kernel's shape from the adaptive "
                              "schedule's steps; it needs schedule = 'adaptive', mode = 'score' and "
                              "sampler = 'gaussian' (or set covariance = 'isotropic')")
        self.covariance, self.shape_options = covariance, dict(shape or {})
        self.shape: KernelShape | None = None
        self.groups_option, self.group_after = group_options(
            "prdpt", groups, group_after, possible=covariance == "adaptive",
            needs="refine with the learnt kernel shape; they need covariance = 'adaptive'")
        self.groups: ParameterGroups | None = None
        self.samples, self.antithetic, self.sampler, self.mode = samples, bool(antithetic), sampler, mode
        self.qmc, self.center, self.sigma_step = bool(qmc), bool(center), bool(sigma_step)
        # An instance attribute: the loop checks it, so the reparameterised mode refuses
        # forward-only renderers up front.
        self.requires_differentiable = mode == "reparam"
        self.transform, self.bounds = transform, bounds
        self._configure_basin("prdpt", adaptive, elite, rough, restarts)
        self.loss_scale: float | None = None     # the log transform's unit, fixed at the first step
        self.scales: torch.Tensor | None = None

    def setup(self, space: ParamSpace, total_steps: int) -> None:
        super().setup(space, total_steps)
        self.scales = space.sigma_scales()
        self.loss_scale = None
        if self.adaptive is not None:
            self.adaptive.load_state_dict({"sigma": self.adaptive.sigma0, "path": None})
        self.shape = KernelShape(space.size, **self.shape_options) if self.covariance == "adaptive" else None
        self.groups = None
        if self.shape is not None and self.adaptive is not None:
            names = group_names(space, self.groups_option, "prdpt")
            if len(names) > 1:
                self.groups = ParameterGroups(space, names, self.adaptive, self.shape_options, self.group_after)
        self._start_basin()

    def _transformed(self, losses: torch.Tensor) -> torch.Tensor:
        if self.transform == "none":
            return losses
        if self.loss_scale is None:
            self.loss_scale = max(float(losses.detach().abs().mean()), 1e-30)
        return torch.log(losses.clamp_min(0.0) / self.loss_scale + 1e-12)

    def next_step_renders(self) -> int:
        """The renders every step takes: its samples (and the centre's, with ``center``). An elite
        check may add one; the loop ends the run before a step that would overrun its budget
        anyway, so a run passes ``max_renders`` by that one render at most."""
        return self.samples + int(self.center)

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"loss_scale": self.loss_scale, **self._basin_state()}
        if self.adaptive is not None:
            out["adaptive"] = self.adaptive.state_dict()
        if self.shape is not None:
            out["shape"] = self.shape.state_dict()
        if self.groups is not None:
            out["groups"] = self.groups.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss_scale = state.get("loss_scale") if state else None
        self._load_basin_state(state)
        if self.adaptive is not None and state and "adaptive" in state:
            self.adaptive.load_state_dict(state["adaptive"])
        if self.shape is not None and state and "shape" in state:
            self.shape.load_state_dict(state["shape"])
        if self.groups is not None and state and "groups" in state:
            self.groups.load_state_dict(state["groups"])

    def sigma_at(self, ctx: StepContext, renders: int = 0) -> float:
        if self.adaptive is not None:
            return self.adaptive.sigma
        return self.schedule(progress(ctx.step, ctx.total_steps, renders, ctx.max_renders))

    def _answer(self, loss_fn, u: torch.Tensor, losses: torch.Tensor, grad: torch.Tensor, sigma: float,
                step: torch.Tensor | None, ctx: StepContext, u_now: torch.Tensor, extra: int = 0,
                jumped: bool = False) -> Estimate:
        """The step's :class:`Estimate`; with ``center`` one more render reports ``f(u)`` itself.

        ``extra`` renders were spent on an elite check; ``jumped`` marks the history record
        (``elite = true``) when the step is an elite jump.

        With ``restarts`` a collapsed σ may replace the step by a restart (σ, path and kernel shape
        start afresh), and the last step may go back to the best basin: see :mod:`.restarts`.
        """
        renders, loss = int(losses.shape[0]) + extra, float(losses.mean())
        if self.center:
            loss = float(loss_fn(u.unsqueeze(0))[0])
            renders += 1
        info: dict[str, Any] = {"sigma": sigma}
        restart = self._restart(u_now, loss, sigma, ctx, int(getattr(loss_fn, "renders", 0)), info)
        if restart is not None:   # the kernel's shape starts afresh too, all parameters together
            step = restart
            if self.shape is not None:
                self.shape.reset()
            if self.groups is not None:
                self.groups.join()
        if jumped and "restart" not in info:   # a restart replaces the jump
            info["elite"] = True
        return Estimate(grad=grad, loss=loss, renders=renders, info=info, step=step)

    # -- the estimator ---------------------------------------------------------------------
    def _sigmas(self, n: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
        """Per-coordinate σ: the scalar σ times each parameter's ``sigma_scale``."""
        scales = self.scales if self.scales is not None and self.scales.shape[0] == n \
            else torch.ones(n, dtype=torch.float64)
        return (sigma * scales).to(dtype)

    def _points(self, u: torch.Tensor, eps: torch.Tensor, axis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(centre, points)``: the offsets ``±eps`` around ``u``, kept inside by ``bounds``.

        ``axis`` is the kernel's standard deviation per coordinate (the margin the centre keeps
        from each bound with ``shift``/``reflect``); see the module docstring.
        """
        offsets = torch.cat([eps, -eps]) if self.antithetic else eps
        if self.bounds in ("shift", "reflect"):
            margin = (2.0 * axis).clamp(max=0.5) if self.bounds == "shift" else axis.clamp(max=self.reflect_margin)
            u = inset(u, margin)
        points = u.unsqueeze(0) + offsets
        return u, reflect_into_unit(points) if self.bounds == "reflect" else points

    def _differences(self, values: torch.Tensor, m: int) -> torch.Tensor:
        """Per draw, the centred loss difference the score estimator weights: ``(f(u+ε) − f(u−ε))/2``
        with antithetic pairs, else the loss minus the batch mean (unbiased up to 1/N)."""
        if self.antithetic:
            return (values[:m] - values[m:]) / 2.0
        return (values - values.mean()) * (m / (m - 1))

    def estimate(self, loss_fn, u: torch.Tensor, ctx: StepContext) -> Estimate:
        if self.shape is not None and self.shape.n == u.shape[0]:
            groups = self.groups
            if groups is not None and self.adaptive is not None:
                groups.start_if_due(self.adaptive, ctx.step, "prdpt")
            return self._estimate_shaped(loss_fn, u, ctx, groups.next() if groups is not None and groups.active else None)
        n = u.shape[0]
        u0 = u
        sigma = self.sigma_at(ctx, getattr(loss_fn, "renders", 0))
        sig = self._sigmas(n, sigma, u.dtype)                            # per-coordinate σ
        m = self.samples // 2 if self.antithetic else self.samples       # independent draws
        if self.sampler == "importance":
            z = kernel_gradient_offsets(m, n, ctx.generator, self.qmc).to(u.dtype)
        else:
            z = gaussian_offsets(m, n, ctx.generator, self.qmc).to(u.dtype)
        u, points_at = self._points(u, z * sig, sig)

        if self.mode == "reparam":
            x = points_at.detach().requires_grad_(True)
            losses = loss_fn(x, differentiable=True)
            (g,) = torch.autograd.grad(self._transformed(losses).sum(), x, allow_unused=True)
            grad = torch.zeros_like(u) if g is None else g.detach().mean(0)
            losses = losses.detach()
        else:
            losses = loss_fn(points_at).detach().to(u.dtype)
            diff = self._differences(self._transformed(losses), m)
            if self.sampler == "importance":
                weights = torch.sign(z) * SQRT_2_OVER_PI / sig             # ∂κ/p per coordinate
            else:
                weights = z / sig                                          # score: ε/σ² = z/σ
            grad = (diff[:, None] * weights).mean(0)
        flat, rough = self._flat(losses) if self.adaptive is not None else (False, False)
        jump, extra = self._elite_jump(loss_fn, losses, points_at, u0, flat, ctx) \
            if self.adaptive is not None and self.mode == "score" else (None, 0)
        if self.normalize:
            norm = float(torch.linalg.vector_norm(grad))
            grad = grad * (math.sqrt(n) / norm) if norm > 0 and math.isfinite(norm) else torch.zeros_like(grad)
        step = None
        if self.adaptive is not None:
            direction = without_outward(u0, grad)
            norm = float(torch.linalg.vector_norm(direction))
            # a trust region that follows σ: a step of `step`·σ per coordinate (on average)
            # down the smoothed gradient; σ then adapts from the directions seen
            step = torch.zeros_like(grad) if flat or not norm > 0 else \
                -self.step * sig * direction * (math.sqrt(n) / norm)
            self.adaptive.update(direction, flat=flat or rough)
            if jump is not None:
                step = jump
        elif self.sigma_step:
            # Scale by σ/σ₀: Adam's step is lr · m/√v with v remembering past magnitudes, so the
            # steps shrink as the kernel narrows — the parameters settle to the resolution the
            # smoothing currently has instead of jittering at lr around the optimum.
            grad = grad * (sigma / (self.adaptive.sigma0 if self.adaptive is not None else self.schedule(0.0)))
        return self._answer(loss_fn, u, losses, grad, sigma, step, ctx, u0, extra, jumped=jump is not None)

    def _estimate_shaped(self, loss_fn, u: torch.Tensor, ctx: StepContext, group: Group | None = None) -> Estimate:
        """The adaptive trust-region step with a learnt kernel covariance (``covariance='adaptive'``).

        Offsets ``σ·s ⊙ A z`` (``s`` the per-parameter scales, ``A Aᵀ = C``); the score estimate
        of the smoothed loss's gradient is taken in ``z`` and the step follows ``A`` times its
        direction: the natural gradient in the kernel's metric. See :mod:`.kernel_shape`.

        With a ``group`` (:mod:`.groups`) only that group's coordinates are perturbed and moved,
        with the group's own σ and shape; the others stay where they are.
        """
        assert self.adaptive is not None and self.shape is not None
        adaptive, shape = self.adaptive, self.shape
        if group is not None:
            assert group.shape is not None          # PRDPT's groups each learn their own shape
            adaptive, shape = group.adaptive, group.shape
        n = u.shape[0]
        sigma = adaptive.sigma
        sig = self._sigmas(n, sigma, u.dtype)
        if group is not None:
            sig = sig[group.index]
        k = sig.shape[0]
        m = self.samples // 2 if self.antithetic else self.samples
        z = gaussian_offsets(m, k, ctx.generator, self.qmc).to(u.dtype)
        eps, axis = shape.apply(z) * sig, sig * shape.axis_scales
        if group is not None:
            eps, axis = embed(eps, group.index, n), embed(axis, group.index, n)
        _, points_at = self._points(u, eps, axis)
        losses = loss_fn(points_at).detach().to(u.dtype)
        diff = self._differences(self._transformed(losses), m)
        g_z = (diff[:, None] * z).mean(0) / sigma                 # ∂/∂z of the smoothed loss, z whitened
        grad = (g_z @ shape.A_inv) / sig                          # the same gradient in u
        flat, rough = self._flat(losses)
        jump, extra = self._elite_jump(loss_fn, losses, points_at, u, flat, ctx)
        here = u if group is None else u[group.index]
        step = torch.zeros_like(here)
        norm = float(torch.linalg.vector_norm(g_z))
        if not flat and norm > 0 and math.isfinite(norm):
            v = shape.apply(g_z / norm)                           # ascent direction, scaled units
            # parameters at a bound that the step would push further out stay where they are
            pinned = ((here <= 0.0) & (v > 0)) | ((here >= 1.0) & (v < 0))
            d = shape.whiten(torch.where(pinned, torch.zeros_like(v), v))
            d_norm = float(torch.linalg.vector_norm(d))
            if d_norm > 0:
                d = d / d_norm
                step = -self.step * sig * shape.apply(d) * math.sqrt(k)
                if not bool(pinned.any()) and sigma <= shape.gate * adaptive.sigma0:
                    # a walk along a bound shows the bound, not the loss's shape
                    shape.update(d)
                adaptive.update(d, flat=rough)
        elif flat:
            adaptive.update(g_z, flat=True)
        if group is not None and self.groups is not None:
            grad, step = embed(grad, group.index, n), embed(step, group.index, n)
            sigma = self.groups.sigma                             # settled only when every group is
        if jump is not None:
            step = jump
        answer = self._answer(loss_fn, u, losses, grad, sigma, step, ctx, u, extra, jumped=jump is not None)
        if group is not None and "restart" not in answer.info:
            answer.info["group"] = list(group.names)   # the history shows which group each step refined
        return answer


@hookimpl
def rendergrad_estimators():
    return [PRDPT]
