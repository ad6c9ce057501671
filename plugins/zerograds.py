"""``zerograds``: gradients from a small neural surrogate of the loss, fitted online.

Each step renders a few samples around the current parameters, fits a surrogate ``h_φ`` to
them, and returns ``∂h/∂u`` as the gradient. Because the surrogate remembers what it has
learned about the landscape (its weights carry over from step to step), each gradient costs
far fewer renders than rebuilding an estimate from scratch, which is where it earns its place
in many dimensions.

Sampling (ZeroGrads, TOG 2024): ``ρ = u + ε``, ``ε ~ N(0, σ_o²)`` (locality, antithetic pairs
``±ε``), rendered at ``ρ − τ`` with ``τ ~ N(0, σ_i²)``, ``σ_i = smoothing · σ_o`` (0.15 by
default), so the surrogate fits the Gaussian-smoothed loss; surrogate loss
``mean (h(ρ) − f(ρ − τ))²``, ``updates`` Adam steps on φ per step on the same samples.

Three changes from the reference implementation, each behind a switch so their effect can be
measured:

* ``fit_first`` (default on): fit the surrogate to the new samples *before* taking its gradient.
  The reference code steps θ on the surrogate first (at step 0 on a randomly initialised
  network), so every gradient is one step stale.
* ``buffer`` (default 64 samples): keep recent samples and fit on all of them, each weighted by
  how likely it is under the *current* locality kernel relative to the kernel it was drawn
  from (``min(1, λ(ρ; u_now) / λ(ρ; u_then))``): old samples near the current parameters keep
  informing the fit, old samples far away fade out. ``buffer = 0``: only the new samples.
* ``nonnegative`` (default on): the surrogate predicts ``softplus(·)``, so it can never promise
  a loss below zero (a negative prediction makes it pull the parameters towards an imaginary
  minimum).

With the adaptive σ (``schedule = "adaptive"``, the default) four more rules keep a run from
wasting its budget on a scene nobody tuned for; the paper's annealed schedule runs without them:

* ``bounds = "reflect"``: samples that leave the domain are mirrored back in, and the sampling
  centre keeps ``min(σ, reflect_margin)`` from each bound (``"clamp"``, the paper's, makes the
  loss look flat beyond a bound, and the surrogate then pulls parameters into it).
* ``elite``, ``rough``, ``restarts``: the basin rules shared with ``prdpt`` (:mod:`.basin`):
  jumps to a sample that beats every loss seen, σ widened on a rough plateau, restarts when σ
  has collapsed and a return to the best basin for the last fifth of the run.
* ``cross_check`` (on): when the step's own renders (the antithetic pairs' score estimate)
  point more than 90° away from the surrogate's gradient, the step follows the renders. A
  network fitted a few Adam steps at a time cannot resolve a minimum narrower than a few
  hundredths of the range; without the check its stale slope walks runs back out of the
  optimum they had found (:meth:`ZeroGrads._cross_checked`).

Measured at the defaults (600 renders, 10 seeds, ``benchmarks/results/defaults.md``), before →
after these rules: box 2/10 → 9/10 seeds solved, the toy 6/10 → 10/10, Rosenbrock² 0/10 → 3/10.

``groups`` (``"auto"``; :mod:`.groups`, as in ``prdpt``): once σ has narrowed to ``group_after``
(0.3) of its start, each step perturbs and moves one group of parameters (each vector parameter,
and the scalars together), with the group's own σ. The surrogate is still fitted over every
parameter; a grouped step's samples lose their weight once another group has moved (they lie on
another slice of the loss). A space of one group is unchanged. Measured at 600 renders, seeds
0–9: one disc with its colour 7/10 solved (0/10 without), the Mitsuba lamp + colour scene 8/10
(0/10); one box 1/10 (0/10).

``surrogate = "quadratic"`` replaces the MLP with a quadratic bowl (the paper's NoNN
ablation). Loss values are divided by a scale fixed at the first step (the first batch's
mean), so the default learning rates work whatever the loss's units; ``transform = "log"``
fits ``log`` losses instead, for objectives that span many orders of magnitude.

All state — surrogate weights, its optimizer, the buffer, the scale — is in
:meth:`state_dict`, so a checkpointed run resumes bit-identically.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from rendergrad import Estimate, GradientEstimator, StepContext, hookimpl
from rendergrad.errors import ConfigError
from rendergrad.params import ParamSpace

from .basin import BasinRules
from .groups import Group, ParameterGroups, embed, group_names, group_options
from .prdpt import inset, reflect_into_unit, without_outward
from .schedules import AdaptiveSigma, progress, sigma_control

SURROGATES = ("mlp", "quadratic")
TRANSFORMS = ("none", "log")
BOUNDS = ("clamp", "reflect")
SMALL_MODEL = 200_000  # parameters; below this, one thread is fastest


@contextlib.contextmanager
def single_thread(enabled: bool) -> Iterator[None]:
    """Run a tiny network on one thread.

    A surrogate of a few thousand weights is pure per-op overhead; on a busy machine torch's
    intra-op thread pool makes each update 10-25x slower (measured: 440 ms vs 18 ms per fit
    with 2 threads on 2 loaded cores), which would dwarf the render it is meant to save.
    """
    before = torch.get_num_threads()
    if not enabled or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class MLPSurrogate(nn.Module):
    """Leaky-ReLU MLP on ``u`` (optionally positionally encoded) → one loss value."""

    def __init__(self, n: int, hidden: int = 64, layers: int = 3, encoding: int = 0, nonnegative: bool = True):
        super().__init__()
        self.encoding = int(encoding)
        self.nonnegative = nonnegative
        width_in = n * (1 + 2 * self.encoding)
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Linear(width_in if i == 0 else hidden, hidden), nn.LeakyReLU(0.01)]
        mods.append(nn.Linear(hidden if layers else width_in, 1))
        self.net = nn.Sequential(*mods)
        if self.encoding:
            self.register_buffer("freqs", (2.0 ** torch.arange(self.encoding, dtype=torch.float32)) * math.pi,
                                 persistent=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        x = 2.0 * u - 1.0
        if self.encoding:
            ang = x.unsqueeze(-1) * self.freqs                     # [B, n, L]
            x = torch.cat([x, torch.sin(ang).flatten(1), torch.cos(ang).flatten(1)], dim=1)
        out = self.net(x).squeeze(-1)
        return nn.functional.softplus(out) if self.nonnegative else out


class QuadraticSurrogate(nn.Module):
    """``h(u) = |L (u − c)|² + b``: a bowl (full ``L`` up to 64 dims, diagonal above).

    Starts as the identity bowl centred in the domain, as in the paper's NoNN ablation.
    """

    def __init__(self, n: int, nonnegative: bool = True):
        super().__init__()
        self.full = n <= 64
        self.c = nn.Parameter(torch.full((n,), 0.5))
        self.L = nn.Parameter(torch.eye(n) if self.full else torch.ones(n))
        self.b = nn.Parameter(torch.zeros(()))
        self.nonnegative = nonnegative

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        d = u - self.c
        q = (d @ self.L.T) if self.full else d * self.L
        b = nn.functional.softplus(self.b) if self.nonnegative else self.b
        return (q * q).sum(-1) + b


class ZeroGrads(BasinRules, GradientEstimator):
    """Neural-surrogate gradients (ZeroGrads): a small MLP fitted online to the smoothed loss."""

    name = "zerograds"

    def __init__(self, sigma: float | None = None, sigma_min: float | None = None,
                 schedule: str | Callable = "adaptive",
                 anneal_start: float = 0.5, points: Sequence[Sequence[float]] | None = None,
                 smoothing: float = 0.15, samples: int = 2, antithetic: bool = True,
                 surrogate: str = "mlp", hidden: int | None = None, layers: int | None = None,
                 encoding: int | None = None, lr: float = 1e-3, updates: int = 3,
                 fit_first: bool = True, buffer: int = 64, locality_weights: bool = True,
                 nonnegative: bool = True, transform: str = "none", sigma_max: float = 0.3,
                 step: float = 0.5, adapt: dict[str, float] | None = None, sigma_signal: str = "surrogate",
                 bounds: str | None = None, reflect_margin: float = 0.05, elite: float = 0.1, rough: float = 0.05,
                 restarts: bool | dict[str, float] | None = None, cross_check: bool = True,
                 groups: str | list[list[str]] | None = None, group_after: float = 0.3):
        if sigma_signal not in ("surrogate", "samples"):
            raise ConfigError(f"zerograds: sigma_signal {sigma_signal!r} is not 'surrogate' or 'samples'")
        self.sigma_signal = sigma_signal
        if surrogate not in SURROGATES:
            raise ConfigError(f"zerograds: surrogate {surrogate!r} is not one of {SURROGATES}")
        if transform not in TRANSFORMS:
            raise ConfigError(f"zerograds: transform {transform!r} is not one of {TRANSFORMS}")
        if not isinstance(samples, int) or samples < 1 or (antithetic and samples % 2):
            raise ConfigError(f"zerograds: samples (renders per step) must be a positive integer, even with "
                              f"antithetic pairs; got {samples!r}")
        if not smoothing >= 0:
            raise ConfigError("zerograds: smoothing (σ_i / σ_o) must be >= 0")
        if not (isinstance(updates, int) and updates >= 1):
            raise ConfigError("zerograds: updates (surrogate steps per iteration) must be an integer >= 1")
        if not lr > 0:
            raise ConfigError("zerograds: lr (the surrogate's learning rate) must be > 0")
        if not (isinstance(buffer, int) and buffer >= 0):
            raise ConfigError("zerograds: buffer (samples kept) must be an integer >= 0")
        self.adaptive: AdaptiveSigma | None
        self.adaptive, self.schedule = sigma_control(schedule, points, sigma, sigma_min, sigma_max, anneal_start,
                                                     adapt, paper_sigma=0.33, who="zerograds")
        if not step > 0:
            raise ConfigError(f"zerograds: step (the step length as a fraction of σ_o) must be > 0, got {step!r}")
        self.step = float(step)
        self.smoothing, self.samples, self.antithetic = float(smoothing), samples, bool(antithetic)
        adaptive = self.adaptive is not None
        if bounds is None:
            bounds = "reflect" if adaptive else "clamp"
        if bounds not in BOUNDS:
            raise ConfigError(f"zerograds: bounds {bounds!r} is not one of {BOUNDS}")
        self.bounds, self.reflect_margin = bounds, float(reflect_margin)
        self.cross_check = bool(cross_check)
        self._configure_basin("zerograds", adaptive, elite, rough, restarts)
        self.groups_option, self.group_after = group_options(
            "zerograds", groups, group_after, possible=adaptive,
            needs="follow the adaptive σ; they need schedule = 'adaptive'")
        self.groups: ParameterGroups | None = None
        self.kind, self.hidden, self.layers, self.encoding = surrogate, hidden, layers, encoding
        self.lr, self.updates, self.fit_first = float(lr), updates, bool(fit_first)
        self.buffer_size, self.locality_weights = buffer, bool(locality_weights)
        self.nonnegative = bool(nonnegative) and transform == "none"
        self.transform = transform
        self.model: nn.Module | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.scale: float | None = None
        self._reset_buffer(0)

    # -- set-up ----------------------------------------------------------------------------
    def _reset_buffer(self, n: int) -> None:
        self.buf_rho = torch.zeros(0, n)
        self.buf_y = torch.zeros(0)
        self.buf_center = torch.zeros(0, n)
        self.buf_sigma = torch.zeros(0, n)

    def _new_surrogate(self, n: int) -> None:
        """A freshly initialised network and its optimizer."""
        if self.kind == "quadratic":
            self.model = QuadraticSurrogate(n, self.nonnegative)
        else:
            big = n >= 50  # the paper's split: 3×64 below 50 dims, 8×128 with encoding above
            self.model = MLPSurrogate(n, hidden=self.hidden or (128 if big else 64),
                                      layers=self.layers if self.layers is not None else (8 if big else 3),
                                      encoding=self.encoding if self.encoding is not None else (4 if big else 0),
                                      nonnegative=self.nonnegative)
        try:  # the fused kernel saves ~30 % of a surrogate update (per-op overhead dominates)
            self.opt = torch.optim.Adam(self.model.parameters(), lr=self.lr, fused=True)
        except (RuntimeError, TypeError, ValueError):
            self.opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)

    def setup(self, space: ParamSpace, total_steps: int) -> None:
        super().setup(space, total_steps)
        n = space.size
        self.scales = space.sigma_scales().float()
        self._new_surrogate(n)
        self._small = sum(p.numel() for p in self.model.parameters()) < SMALL_MODEL
        self.scale = None
        self._reset_buffer(n)
        self.groups = None
        if self.adaptive is not None:
            self.adaptive.load_state_dict({"sigma": self.adaptive.sigma0, "path": None})
            names = group_names(space, self.groups_option, "zerograds")
            if len(names) > 1:
                self.groups = ParameterGroups(space, names, self.adaptive, None, self.group_after)
        self._start_basin()

    # -- surrogate -------------------------------------------------------------------------
    def _targets(self, y: torch.Tensor) -> torch.Tensor:
        if self.transform == "log":
            return torch.log((y / self.scale).clamp_min(1e-6))
        return y / self.scale

    def fit(self, rho: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> float:
        """``updates`` Adam steps of the surrogate on ``(ρ, loss)`` pairs; returns the last fit loss."""
        assert self.model is not None and self.opt is not None
        t = self._targets(y)
        w = torch.ones_like(t) if weights is None else weights
        w = w / w.sum().clamp_min(1e-12)
        last = math.nan
        with single_thread(self._small):
            for _ in range(self.updates):
                self.opt.zero_grad(set_to_none=True)
                err = (w * (self.model(rho) - t) ** 2).sum()
                err.backward()
                self.opt.step()
                last = float(err.detach())
        return last

    def surrogate_gradient(self, u: torch.Tensor) -> torch.Tensor:
        assert self.model is not None
        x = u.detach().float().unsqueeze(0).requires_grad_(True)
        with single_thread(self._small):
            (g,) = torch.autograd.grad(self.model(x).sum(), x)
        return g[0].to(u.dtype)

    def predict(self, u: torch.Tensor) -> torch.Tensor:
        """The surrogate's loss prediction (in loss units) at ``u`` ``[B, n]``."""
        assert self.model is not None and self.scale is not None
        with torch.no_grad():
            h = self.model(u.float())
        return (torch.exp(h) if self.transform == "log" else h) * self.scale

    # -- the estimator ---------------------------------------------------------------------
    def estimate(self, loss_fn, u: torch.Tensor, ctx: StepContext) -> Estimate:
        if self.model is None:
            raise ConfigError("zerograds: setup() was not called")
        n = u.shape[0]
        sigma_o = self.adaptive.sigma if self.adaptive is not None else \
            self.schedule(progress(ctx.step, ctx.total_steps, getattr(loss_fn, "renders", 0), ctx.max_renders))
        group = self._next_group(ctx)
        adaptive = self.adaptive if group is None else group.adaptive
        if group is not None:
            sigma_o = group.adaptive.sigma
        sig = (sigma_o * self.scales).to(torch.float32)
        stale_grad = None
        if not self.fit_first:  # the reference order: step on the surrogate fitted last time
            stale_grad = self.surrogate_gradient(u)

        # with a group, only its coordinates are perturbed (``kernel`` is zero elsewhere)
        idx = None if group is None else group.index
        k = n if idx is None else int(idx.shape[0])
        sig_k = sig if idx is None else sig[idx]
        m = self.samples // 2 if self.antithetic else self.samples
        z = torch.randn(m, k, generator=ctx.generator, dtype=torch.float32)
        eps, kernel = z * sig_k, sig
        if idx is not None:
            eps, kernel = embed(eps, idx, n), embed(sig_k, idx, n)
        offsets = torch.cat([eps, -eps]) if self.antithetic else eps
        rho = self._locality_points(u.float(), offsets, kernel)
        tau = torch.randn(rho.shape, generator=ctx.generator, dtype=torch.float32) * (kernel * self.smoothing)
        rendered = reflect_into_unit(rho - tau) if self.bounds == "reflect" else rho - tau
        rendered_losses = loss_fn(rendered.to(u.dtype)).detach()
        y = rendered_losses.float()
        if self.scale is None:
            self.scale = max(float(y.abs().mean()), 1e-30)

        centre = u.float().unsqueeze(0).expand_as(rho)
        sigmas = kernel.unsqueeze(0).expand_as(rho)
        if self.buffer_size:
            self.buf_rho = torch.cat([self.buf_rho, rho])[-self.buffer_size:]
            self.buf_y = torch.cat([self.buf_y, y])[-self.buffer_size:]
            self.buf_center = torch.cat([self.buf_center, centre])[-self.buffer_size:]
            self.buf_sigma = torch.cat([self.buf_sigma, sigmas])[-self.buffer_size:]
            fit_rho, fit_y = self.buf_rho, self.buf_y
            weights = None
            if self.locality_weights:
                # A grouped step's sample has width 0 outside its group: once another group has
                # moved, it lies on a different slice of the loss and its weight goes to 0.
                widths = self.buf_sigma.clamp_min(1e-12)
                now = (((fit_rho - u.float()) / widths) ** 2).sum(1)
                then = (((fit_rho - self.buf_center) / widths) ** 2).sum(1)
                weights = torch.exp(-0.5 * (now - then)).clamp(max=1.0)
        else:
            fit_rho, fit_y, weights = rho, y, None
        fit_loss = self.fit(fit_rho, fit_y, weights)
        grad = self.surrogate_gradient(u) if stale_grad is None else stale_grad
        info: dict[str, Any] = {"sigma": sigma_o, "surrogate_loss": fit_loss}
        step, extra = None, 0
        if self.adaptive is not None:
            # at the renderer's own precision: the elite check compares a second render with it
            losses = rendered_losses.to(u.dtype)
            flat, rough = self._flat(losses)
            jump, extra = self._elite_jump(loss_fn, losses, rendered.to(u.dtype), u, flat, ctx)
            here, grad_k = (u, grad) if idx is None else (u[idx], grad[idx])
            direction = without_outward(here, self._cross_checked(grad_k, y, z, sig_k, m))
            norm = float(torch.linalg.vector_norm(direction))
            step = torch.zeros_like(grad_k) if flat or not (norm > 0 and math.isfinite(norm)) else \
                -self.step * sig_k.to(grad.dtype) * direction * (math.sqrt(k) / norm)
            signal = direction
            if self.sigma_signal == "samples" and self.antithetic:
                # σ follows what the renders say, not the surrogate: a fitted network keeps its
                # slope from step to step even where noisy samples flip back and forth
                signal = without_outward(here, self._pair_slope(y, z, m).to(grad.dtype))
            adaptive.update(signal, flat=flat or rough)
            if idx is not None:
                step = embed(step, idx, n)
                info["group"] = list(group.names)       # the history shows which group each step refined
            if jump is not None:
                step = jump
                info["elite"] = True
            settled = sigma_o if self.groups is None or not self.groups.active else self.groups.sigma
            restart = self._restart(u, float(y.mean()), settled, ctx, int(getattr(loss_fn, "renders", 0)), info)
            if restart is not None:
                step = restart
                info.pop("elite", None)
                info.pop("group", None)
                if self.groups is not None:   # all parameters move together again
                    self.groups.join()
        return Estimate(grad=grad, loss=float(y.mean()), renders=int(rho.shape[0]) + extra, info=info, step=step)

    def _next_group(self, ctx: StepContext) -> Group | None:
        """The group this step refines, or None while every parameter moves together (see
        :mod:`.groups`: the grouped refinement starts once σ has narrowed to ``group_after`` σ₀)."""
        groups = self.groups
        if groups is None or self.adaptive is None:
            return None
        groups.start_if_due(self.adaptive, ctx.step, "zerograds")
        return groups.next() if groups.active else None

    @staticmethod
    def _pair_slope(y: torch.Tensor, z: torch.Tensor, m: int) -> torch.Tensor:
        """The antithetic pairs' score estimate of the smoothed gradient, in units of σ
        (``mean((f(u+ε) − f(u−ε))/2 · z)``; divide by σ for the gradient in ``u``)."""
        return (((y[:m] - y[m:]) / 2.0)[:, None] * z).mean(0)

    def _cross_checked(self, grad: torch.Tensor, y: torch.Tensor, z: torch.Tensor, sig: torch.Tensor,
                       m: int) -> torch.Tensor:
        """The direction to step along: the surrogate's gradient, unless this step's renders
        contradict it (``cross_check``), in which case their own estimate.

        The antithetic pairs just rendered give the score estimate of the smoothed gradient
        (``prdpt``'s). When it points more than 90° away from the surrogate's, the renders say
        the surrogate is wrong here, and the step follows them. Why: a small network fitted by a
        few Adam steps per iteration cannot resolve a minimum narrower than a few hundredths of
        the range, so once σ is that small its gradient is a remnant of the wider landscape. It
        keeps pointing the same way, the path length reads that as "σ too narrow", and the run
        walks out of the optimum it found (the toy: the target reached in all 10 seeds, the
        final error above the threshold in 8). With the check, 10/10 and a median final error of
        3e-5 (600 renders, ``benchmarks/results/defaults.md``).
        """
        if not (self.cross_check and self.antithetic):
            return grad
        pairs = (self._pair_slope(y, z, m) / sig).to(grad.dtype)
        return pairs if float(pairs @ grad) < 0 else grad

    def _locality_points(self, u: torch.Tensor, offsets: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
        """The locality samples ``u + ε`` inside the domain.

        ``clamp`` (the paper's) puts samples that leave the domain on its bound, where the
        clamped loss is flat: where the loss rises outward, the fitted surrogate then slopes
        towards the bound and holds the parameters there (Rosenbrock²'s valley runs into
        x = −1.5: every run at σ adapted ended pinned there). ``reflect`` (the default with the
        adaptive σ) keeps the centre at least ``min(σ, reflect_margin)`` from each bound and
        mirrors samples back in, as :mod:`.prdpt` does.
        """
        if self.bounds == "clamp":
            return (u.unsqueeze(0) + offsets).clamp(0.0, 1.0)
        margin = sig.clamp(max=self.reflect_margin)
        return reflect_into_unit(inset(u, margin).unsqueeze(0) + offsets)

    # -- checkpointing ---------------------------------------------------------------------
    def next_step_renders(self) -> int:
        """The renders every step takes: its samples (an antithetic run an even number). An
        elite check may add one; the loop ends the run before a step that would overrun its
        budget anyway, so a run passes ``max_renders`` by that one render at most."""
        return 2 * (self.samples // 2) if self.antithetic else self.samples

    def state_dict(self) -> dict[str, Any]:
        if self.model is None:
            return {}
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "scale": self.scale,
                "buf_rho": self.buf_rho, "buf_y": self.buf_y, "buf_center": self.buf_center,
                "buf_sigma": self.buf_sigma,
                "adaptive": self.adaptive.state_dict() if self.adaptive is not None else None,
                "groups": self.groups.state_dict() if self.groups is not None else None,
                **self._basin_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if self.model is None:
            raise ConfigError("zerograds: load_state_dict() before setup()")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.scale = state["scale"]
        self.buf_rho, self.buf_y = state["buf_rho"], state["buf_y"]
        self.buf_center, self.buf_sigma = state["buf_center"], state["buf_sigma"]
        if self.adaptive is not None and state.get("adaptive"):
            self.adaptive.load_state_dict(state["adaptive"])
        if self.groups is not None and state.get("groups"):
            self.groups.load_state_dict(state["groups"])
        self._load_basin_state(state)


@hookimpl
def rendergrad_estimators():
    return [ZeroGrads]
