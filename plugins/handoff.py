"""``handoff``: PRDPT finds the basin, CMA-ES refines it.

Why: the two halves of an optimization through a renderer ask for different things. Far from
the target the loss is flat or rippled (an object that does not overlap its target); PRDPT's
smoothed gradient crosses such plateaus, an evolution strategy started there wanders (CMA-ES
solves the plateau disc 6/10 times in 600 renders, PRDPT 10/10). Near the target the loss is a
narrow, tilted valley (a blurred disc whose radius and brightness trade off, Rosenbrock²); there
one antithetic pair per step reveals one directional derivative, and PRDPT's kernel shape,
learnt from its own steps, follows the valley slowly, while CMA-ES learns the valley's
covariance from a population of about ten renders per step. So this estimator runs the search
estimator (``prdpt`` by default, or ``zerograds``) until its adaptive σ has narrowed to ``at``
(0.3) of its start, the point at which its parameter groups would start refining, i.e. the basin
is found, and hands the run to CMA-ES started there: at the search's point, with its σ per
coordinate as the initial spread. CMA-ES runs with diagonal decoding (dd-CMA, Akimoto and Hansen,
GECCO 2019: ``CMA_diagonal_decoding = 1``), which learns a per-parameter scale much faster than
the full covariance; a scene whose colour moves the loss ninety times less than its position
needs that (the one-disc scene, seeds 0–29: 26/30 solved with it, 17/30 without).

At the hand-off a probe (``probe``, on by default) rescales each declared parameter's spread by
how much the loss rises over it (:meth:`Handoff._probed`): the search's σ per coordinate follows
the parameters that moved the loss the most, and a parameter that barely moves it there (the
second object of the two-shapes scene, a colour far off) would start at the others' spread and
shrink with them. It costs 3 + 2 × (declared parameters) renders once, none for a scene of one
declared parameter.

Measured at 600 renders (``benchmarks/results/defaults.md``, *Hand-off*; seeds 0–9, then 10–39):
the blurred disc 10/10 and 30/30 seeds solved (PRDPT alone 6/10, 24/30), one box 10/10 and 29/30
(5/10, 25/30), one disc 9/10 and 25/30 (7/10, 22/30), Rosenbrock² 9/10 and 29/30 (7/10, 26/30),
the two-shapes scene 2/10 and 7/30 (3/10, 6/30; 0/10 and 1/30 without the probe). What it gives
up: speed on the firefly caustic (8/10 against PRDPT's 9/10, 335 renders per success against
211), where CMA-ES's ranking of single noisy renders does not shrink its spread.

Restarts (:mod:`.restarts`) span both phases: when CMA-ES has settled (its widest spread below
``sigma_fraction`` of the search's σ₀ and the loss no longer falling) with at least a fifth of the
run left, the search starts again from a random point; for the last fifth the run returns to
the best basin seen and refines it with a fresh CMA-ES. When pycma stops by its own tests, a
fresh CMA-ES continues from its mean, at a spread of ``sigma_fraction`` of σ₀ (the old one's
covariance had degenerated). When the budget has fewer renders left than one CMA-ES generation,
the run ends there (:meth:`next_step_renders`): a generation would end it past ``max_renders``,
and the search's steps at CMA-ES's widest spread, which an earlier version took those renders
with, moved the well-placed parameters as far as the loosest one (two shapes, seed 3: 0.017 from
the target before them, 0.040 after).

Resuming is exact: the state holds the phase, the search estimator's state or CMA-ES's told
history (rebuilt by replay, :mod:`.dfo`) with the spread it started from, and the restarts'
bookkeeping.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from rendergrad import Estimate, GradientEstimator, StepContext, hookimpl
from rendergrad.errors import ConfigError
from rendergrad.params import ParamSpace

from .restarts import Restarts

log = logging.getLogger("rendergrad.handoff")

SEARCHES = ("prdpt", "zerograds")
# dd-CMA: a fast per-coordinate scale on top of the full covariance (see the module docstring)
REFINE_DEFAULTS = {"CMA_diagonal_decoding": 1}
CENTRE_RENDERS = 3          # the probe's renders of the hand-off point: their spread is the render noise


class Handoff(GradientEstimator):
    """A search estimator with an adaptive σ until the basin is found, then CMA-ES."""

    name = "handoff"

    def __init__(self, search: str = "prdpt", search_options: dict[str, Any] | None = None, at: float = 0.3,
                 cma: dict[str, Any] | None = None, restarts: bool | dict[str, float] = True,
                 probe: float = 4.0):
        if search not in SEARCHES:
            raise ConfigError(f"handoff: search {search!r} is not one of {SEARCHES} (the search needs an "
                              "adaptive σ, whose narrowing says when the basin is found)")
        if not (isinstance(at, (int, float)) and not isinstance(at, bool) and 0.0 < float(at) <= 1.0):
            raise ConfigError(f"handoff: at (the fraction of the search's starting σ at which CMA-ES takes "
                              f"over) must be in (0, 1], got {at!r}")
        self.search, self.at = search, float(at)
        # the hand-off owns the restarts: the search's own would never fire before it hands over
        self.search_options = {"restarts": False, **dict(search_options or {})}
        self.cma_options = dict(cma or {})
        if not isinstance(self.cma_options.get("options", {}), dict):
            raise ConfigError("handoff: cma.options must be a table of pycma options")
        if isinstance(probe, bool) or not isinstance(probe, (int, float)) or not (probe == 0 or probe >= 1):
            raise ConfigError(f"handoff: probe (the most the hand-off's probe may widen or narrow a parameter's "
                              f"spread) must be 0 (no probe) or a factor >= 1, got {probe!r}")
        self.probe = float(probe)
        self.restart_options = dict(restarts) if isinstance(restarts, dict) else {}
        self.use_restarts = bool(restarts)
        Restarts(**self.restart_options)         # a misspelt setting fails here
        self._check()
        self.space: ParamSpace | None = None
        self.total_steps = 0

    def _check(self) -> None:
        """Build both parts once, so a bad option fails now, not at the hand-off."""
        from rendergrad.registry import registry
        found = registry().create("estimator", self.search, self.search_options)
        if getattr(found, "adaptive", None) is None:
            raise ConfigError(f"handoff: the search needs schedule = 'adaptive' (its σ says when the basin is "
                              f"found); remove schedule from search_options")
        self._cma(0.1, seed=1)

    def _cma(self, sigma: float, seed: int, stds: torch.Tensor | None = None) -> GradientEstimator:
        from rendergrad.registry import registry
        options = {**self.cma_options, "sigma0": float(sigma), "seed": int(seed)}
        pycma = {**REFINE_DEFAULTS, **dict(self.cma_options.get("options", {}))}
        if stds is not None:
            pycma["CMA_stds"] = [float(s) for s in stds]
        options["options"] = pycma
        return registry().create("estimator", "cma", options)

    # -- phases ---------------------------------------------------------------------------
    def setup(self, space: ParamSpace, total_steps: int) -> None:
        super().setup(space, total_steps)
        self.space, self.total_steps = space, total_steps
        self.restarts = Restarts(**self.restart_options) if self.use_restarts else None
        self.generation = self._cma(0.1, seed=1).renders_per_step(space.size)   # renders per CMA-ES step
        self._search()

    def _search(self) -> None:
        """Start (or restart) the search phase, at its σ₀."""
        from rendergrad.registry import registry
        assert self.space is not None
        self.phase = "search"
        self.inner: Any = registry().create("estimator", self.search, self.search_options)
        self.inner.setup(self.space, self.total_steps)
        self.sigma0 = float(self.inner.adaptive.sigma0)
        self.refine_from: dict[str, Any] = {}

    def _refine(self, sigma: float, stds: torch.Tensor | None, ctx: StepContext) -> None:
        """Start CMA-ES at spread ``sigma`` (per coordinate ``sigma · stds``), from the next step's point."""
        seed = int(torch.randint(1, 2**31 - 2, (1,), generator=ctx.generator))
        self.phase = "refine"
        self.refine_from = {"sigma": float(sigma), "seed": seed, "stds": None if stds is None else stds.clone()}
        self.inner = self._cma(sigma, seed, stds)
        self.inner.setup(self.space, self.total_steps)

    def _search_sigma(self) -> float:
        """The search's σ: the widest group's, once its groups refine in turn."""
        groups = getattr(self.inner, "groups", None)
        return float(groups.sigma if groups is not None and groups.active else self.inner.adaptive.sigma)

    def _search_spread(self) -> torch.Tensor:
        """The search's spread per coordinate, in units of each parameter's range (read once, at
        the hand-off)."""
        assert self.space is not None
        p, n = self.inner, self.space.size
        groups = getattr(p, "groups", None)
        if groups is not None and groups.active:
            spread = torch.zeros(n, dtype=torch.float64)
            for g in groups.groups:
                axis = g.shape.axis_scales if g.shape is not None else torch.ones(len(g.index), dtype=torch.float64)
                spread[g.index] = g.adaptive.sigma * axis
        else:
            shape = getattr(p, "shape", None)
            axis = shape.axis_scales if shape is not None and shape.n == n else torch.ones(n, dtype=torch.float64)
            spread = p.adaptive.sigma * axis
        return spread * self.space.sigma_scales()

    def _probe_renders(self) -> int:
        """Renders the probe takes at the hand-off: the point three times, a pair per declared
        parameter; none for a scene of one declared parameter, whose only factor is 1."""
        assert self.space is not None
        return CENTRE_RENDERS + 2 * len(self.space.names) if self.probe and len(self.space.names) > 1 else 0

    def _probed(self, loss_fn, u: torch.Tensor, spread: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The search's spread, each declared parameter's rescaled by how much the loss moves over it.

        Why: the search's σ per coordinate comes from its learnt kernel shape, which follows the
        parameters that moved the loss the most. Where one parameter barely moves it at the
        hand-off (a colour far off while the position converged, an object the other one
        outweighs), CMA-ES starts that parameter at the others' spread, and its one global step
        size shrinks with the parameters that converge: the loose one stays where it was (two
        shapes: most runs solve one object and keep the other's colour). So the probe renders the
        point and a pair at ± the spread along each parameter, takes the symmetric difference
        ``|L₊ + L₋ − 2 L₀|`` as the loss's rise over that spread, and multiplies the parameter's
        spread by ``sqrt(geometric mean of the rises / its rise)`` (a quadratic loss rises with
        the square of the spread), clamped to ``[1/probe, probe]`` so one noisy render cannot
        throw a parameter across its range. A rise smaller than the render noise is not measured:
        the point is rendered three times, and each rise counts as at least four of the centre's
        standard deviations (about twice the noise of the symmetric difference), so on a Monte
        Carlo renderer a parameter whose rise is lost in noise is left near the others' spread
        rather than widened as if the loss were flat."""
        assert self.space is not None
        center = u.detach().to(torch.float64)
        spread = spread.to(center.device)
        rows = [center] * CENTRE_RENDERS
        for name in self.space.names:
            step = torch.zeros_like(center)
            where = self.space.slice(name)
            step[where] = spread[where]
            rows += [center + step, center - step]
        losses = loss_fn(torch.stack(rows).clamp(0, 1).to(u.dtype)).detach().to("cpu", torch.float64).reshape(-1)
        centre, pairs = losses[:CENTRE_RENDERS], losses[CENTRE_RENDERS:]
        noise = float(centre.std())                      # 0 on a deterministic renderer
        rise = (pairs[0::2] + pairs[1::2] - 2 * centre.mean()).abs()
        rise = rise.clamp_min(max(4 * noise, 1e-3 * float(rise.max())) + 1e-30)   # below that: not measured
        factors = (rise.log().mean().exp() / rise).sqrt().clamp(1.0 / self.probe, self.probe)
        out = spread.clone()
        for name, factor in zip(self.space.names, factors):
            out[self.space.slice(name)] *= factor
        found = {name: round(float(f), 4) for name, f in zip(self.space.names, factors)}
        log.info("handoff: the probe widens (>1) or narrows (<1) each parameter's spread (render noise %.3g): %s",
                 noise, " ".join(f"{n}={f:.2f}" for n, f in found.items()))
        return out.cpu(), found

    def _spread(self) -> float:
        """The current phase's σ: the search's, or the widest spread of CMA-ES's distribution."""
        if self.phase != "refine":
            return self._search_sigma()
        spread = self.inner.spread()
        return self.refine_from["sigma"] if spread is None else spread

    def _no_room(self, loss_fn, ctx: StepContext) -> bool:
        """Whether the render budget has less left than the probe and one CMA-ES generation."""
        need = self.generation + self._probe_renders()
        return bool(ctx.max_renders) and ctx.max_renders - int(getattr(loss_fn, "renders", 0)) < need

    def next_step_renders(self) -> int | None:
        """One CMA-ES generation while it refines, the search's renders per step before (the loop
        ends the run rather than overrun the budget)."""
        return self.generation if self.phase == "refine" else self.inner.next_step_renders()

    # -- the estimator ----------------------------------------------------------------------
    def estimate(self, loss_fn, u: torch.Tensor, ctx: StepContext) -> Estimate:
        info: dict[str, Any] = {}
        if self.phase == "search":
            sigma = self._search_sigma()
            if sigma <= self.at * self.sigma0 and not self._no_room(loss_fn, ctx):
                spread = self._search_spread()
                if self._probe_renders():
                    spread, info["probe"] = self._probed(loss_fn, u, spread)
                self._refine(sigma, spread / sigma, ctx)
                info["handoff"] = True
                log.info("handoff: σ is down to %.3g of each range (%g σ₀) at step %d: CMA-ES refines from here",
                         sigma, self.at, ctx.step)
        elif self.phase == "refine" and self.inner.converged():
            # pycma's own tests stopped it (its covariance has degenerated): a fresh one goes on
            self._refine(self.restarts.sigma_fraction * self.sigma0 if self.restarts is not None
                         else self._spread(), None, ctx)
            info["handoff"] = "renewed"
        est = self.inner.estimate(loss_fn, u, ctx)
        sigma = self._spread()
        info.update(phase=self.phase, sigma=sigma)
        if self.restarts is not None:
            move = self.restarts.after_step(u, est.loss, sigma, self.sigma0, ctx, int(getattr(loss_fn, "renders", 0)))
            if move is not None:
                est.step, new_sigma = move
                if self.restarts.returned:
                    info["restart"] = "back to the best basin"
                    self._refine(new_sigma, None, ctx)
                else:
                    info["restart"] = self.restarts.count
                    self._search()
        est.info = {**est.info, **info}
        return est

    def state_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "refine_from": dict(self.refine_from), "inner": self.inner.state_dict(),
                "restarts": self.restarts.state_dict() if self.restarts is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if state["phase"] == "search":
            self._search()
        else:
            start = state["refine_from"]
            self.phase, self.refine_from = "refine", dict(start)
            self.inner = self._cma(start["sigma"], start["seed"], start["stds"])
            self.inner.setup(self.space, self.total_steps)
        self.inner.load_state_dict(state["inner"])
        if self.restarts is not None and state.get("restarts"):
            self.restarts.load_state_dict(state["restarts"])


@hookimpl
def rendergrad_estimators():
    return [Handoff]
