"""PRDPT: the estimate is the gradient of the Gaussian-smoothed objective, and it optimizes."""

from __future__ import annotations

import math

import pytest
import torch

import rendergrad as rg
from rendergrad import Param, ParamSpace, Renderer, StepContext
from rendergrad.errors import ConfigError, IncompatiblePluginsError
from rendergrad.evaluation import BatchEvaluator
from rendergrad.plugins.objectives import MSE
from rendergrad.plugins.prdpt import PRDPT, kernel_gradient_offsets
from rendergrad.plugins.schedules import SigmaSchedule, progress


class Poly(Renderer):
    """A [B,1,1,1] "image" whose value is a polynomial of u (bounds [0, 1], so u = theta)."""

    name = "poly"
    differentiable = True

    def __init__(self, n: int = 3, power: int = 2, center: float = 0.5, scale=None):
        self.n, self.power, self.center = n, power, center
        self.scale = torch.ones(n, dtype=torch.float64) if scale is None else torch.as_tensor(scale, dtype=torch.float64)

    def parameter_space(self) -> ParamSpace:
        return ParamSpace([Param("x", shape=(self.n,), init=0.5)])

    def render(self, theta):
        v = (self.scale.to(theta.dtype) * (theta - self.center) ** self.power).sum(-1)
        return v.reshape(-1, 1, 1, 1)


class Identity(rg.Objective):
    name = "identity"

    def loss(self, images, target):
        return images.flatten(1).mean(1)


def evaluator(renderer):
    return BatchEvaluator(renderer, Identity(), renderer.parameter_space(), None)


def estimates(est, renderer, u, reps, seed=0, step=0, total=100):
    ev = evaluator(renderer)
    est.setup(renderer.parameter_space(), total)
    gen = torch.Generator().manual_seed(seed)
    out = [est.estimate(ev, u.clone(), StepContext(step, total, gen)).grad for _ in range(reps)]
    return torch.stack(out), ev


def assert_matches(samples: torch.Tensor, expected: torch.Tensor, k: float = 4.5):
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    assert torch.all((mean - expected).abs() <= k * se + 1e-9), (mean, expected, se)


def test_score_estimate_matches_smoothed_quadratic_gradient():
    # f(u) = Σ a_i (u_i − c)²; g = κ_σ * f = f + Σ a_i σ²  →  ∇g = 2 a (u − c)
    a = torch.tensor([1.0, 3.0, -2.0], dtype=torch.float64)
    r = Poly(3, 2, scale=a)
    u = torch.tensor([0.45, 0.6, 0.52], dtype=torch.float64)
    grads, ev = estimates(PRDPT(sigma=0.05, schedule="constant", samples=8), r, u, 600)
    assert ev.renders == 600 * 8
    assert_matches(grads, 2 * a * (u - 0.5))


def test_score_estimate_matches_smoothed_quartic_gradient():
    # f = Σ (u−c)^4: smoothing changes the gradient: ∇g = 4 d³ + 12 σ² d. The σ² term is ~3x the
    # plain gradient here, so an estimator of ∇f (not ∇g) would fail this test.
    r = Poly(2, 4)
    u = torch.tensor([0.55, 0.42], dtype=torch.float64)
    sigma = 0.1
    grads, _ = estimates(PRDPT(sigma=sigma, schedule="constant", samples=16), r, u, 800)
    d = u - 0.5
    expected = 4 * d**3 + 12 * sigma**2 * d
    assert_matches(grads, expected)
    assert (expected - 4 * d**3).abs().min() > 6 * (grads.std(0) / math.sqrt(800)).max()


def test_per_parameter_sigma_scale_is_applied():
    # sigma_scale 3 on one coordinate: its smoothed quartic gradient uses σ_i = 3σ.
    class Scaled(Poly):
        def parameter_space(self):
            return ParamSpace([Param("a", init=0.5), Param("b", init=0.5, sigma_scale=3.0)])
    r = Scaled(2, 4)
    u = torch.tensor([0.56, 0.56], dtype=torch.float64)
    sigma = 0.05
    grads, _ = estimates(PRDPT(sigma=sigma, schedule="constant", samples=16), r, u, 800)
    d = u - 0.5
    sig = torch.tensor([sigma, 3 * sigma], dtype=torch.float64)
    assert_matches(grads, 4 * d**3 + 12 * sig**2 * d)


def test_antithetic_pairs_cancel_for_an_even_function():
    r = Poly(4, 2)
    u = torch.full((4,), 0.5, dtype=torch.float64)
    grads, _ = estimates(PRDPT(sigma=0.2, schedule="constant", samples=2), r, u, 20)
    assert grads.abs().max() < 1e-6  # zero up to float32 rendering round-off
    grads_plain, _ = estimates(PRDPT(sigma=0.2, schedule="constant", samples=2, antithetic=False), r, u, 20)
    assert grads_plain.abs().max() > 1e-3


def test_importance_variant_is_unbiased_in_one_dimension():
    r = Poly(1, 4)
    u = torch.tensor([0.6], dtype=torch.float64)
    sigma = 0.1
    grads, _ = estimates(PRDPT(sigma=sigma, schedule="constant", sampler="importance", samples=8), r, u, 800)
    d = u - 0.5
    assert_matches(grads, 4 * d**3 + 12 * sigma**2 * d)


def test_importance_offsets_follow_the_kernel_derivative_density():
    z = kernel_gradient_offsets(200_000, 1, torch.Generator().manual_seed(0), qmc=False)
    # |z| is Rayleigh(1): E|z| = sqrt(π/2), E z² = 2; signs balanced
    assert abs(z.abs().mean().item() - math.sqrt(math.pi / 2)) < 0.01
    assert abs((z**2).mean().item() - 2.0) < 0.03
    assert abs((z > 0).double().mean().item() - 0.5) < 0.01


def test_sobol_offsets_reduce_variance():
    r = Poly(2, 2, scale=[1.0, 2.0])
    u = torch.tensor([0.55, 0.45], dtype=torch.float64)
    plain, _ = estimates(PRDPT(sigma=0.05, schedule="constant", samples=32), r, u, 200)
    sobol, _ = estimates(PRDPT(sigma=0.05, schedule="constant", samples=32, qmc=True), r, u, 200)
    expected = 2 * torch.tensor([1.0, 2.0], dtype=torch.float64) * (u - 0.5)
    assert_matches(sobol, expected)
    assert (sobol.var(0).sum() < plain.var(0).sum())


def test_reparameterised_mode_matches_and_needs_gradients():
    r = Poly(2, 4)
    u = torch.tensor([0.58, 0.47], dtype=torch.float64)
    sigma = 0.1
    grads, _ = estimates(PRDPT(sigma=sigma, schedule="constant", samples=8, mode="reparam"), r, u, 300)
    d = u - 0.5
    assert_matches(grads, 4 * d**3 + 12 * sigma**2 * d)

    class Forward(Poly):
        differentiable = False
    with pytest.raises(IncompatiblePluginsError):
        rg.optimize(Forward(2, 2), Identity(), PRDPT(mode="reparam"), steps=2)


def test_reported_loss_is_a_loss_not_a_gradient():
    r = Poly(2, 2)
    ev = evaluator(r)
    est = PRDPT(sigma=0.01, schedule="constant", center=True)
    est.setup(r.parameter_space(), 10)
    u = torch.tensor([0.8, 0.3], dtype=torch.float64)
    e = est.estimate(ev, u, StepContext(0, 10, torch.Generator().manual_seed(0)))
    assert e.loss == pytest.approx(0.3**2 + 0.2**2, rel=1e-5)
    assert e.renders == 3 and ev.renders == 3
    e2 = PRDPT(sigma=0.01, schedule="constant")
    e2.setup(r.parameter_space(), 10)
    e2 = e2.estimate(ev, u, StepContext(0, 10, torch.Generator().manual_seed(0)))
    assert e2.loss == pytest.approx(0.13, rel=0.01)  # mean of the rendered losses: ≈ g(u)
    assert e2.info == {"sigma": 0.01}


def test_schedules():
    paper = SigmaSchedule("paper", sigma=0.5, sigma_min=0.01)
    assert paper(0.0) == paper(0.5) == 0.5
    assert paper(0.75) == pytest.approx(0.255)
    assert paper(1.0) == pytest.approx(0.01)
    expo = SigmaSchedule("exponential", sigma=0.5, sigma_min=0.005)
    assert expo(0.75) == pytest.approx(0.05)
    pts = SigmaSchedule(points=[[0, 0.4], [0.5, 0.2], [1.0, 0.1]])
    assert pts(0.25) == pytest.approx(0.3) and pts(0.9) == pytest.approx(0.12)
    assert SigmaSchedule(lambda p: 0.3 - 0.2 * p)(0.5) == pytest.approx(0.2)
    # progress follows whichever budget runs out first
    assert progress(10, 100, renders=50, max_renders=100) == 0.5
    assert progress(60, 100, renders=50, max_renders=100) == 0.6
    with pytest.raises(ConfigError, match="schedule"):
        SigmaSchedule("cosine")
    with pytest.raises(ConfigError, match="sigma_min"):
        SigmaSchedule(sigma=0.1, sigma_min=0.2)


def test_log_transform_ignores_the_loss_scale_and_matches_the_smoothed_log_gradient():
    # f = a (u − c)²: log f = log a + 2 log|u − c|, so the estimate cannot depend on a; where
    # |u − c| ≫ σ it is ≈ ∇ log f = 2 / (u − c).
    u = torch.tensor([0.8], dtype=torch.float64)
    small, _ = estimates(PRDPT(sigma=0.01, schedule="constant", samples=8, transform="log"), Poly(1, 2), u, 200)
    big, _ = estimates(PRDPT(sigma=0.01, schedule="constant", samples=8, transform="log"),
                       Poly(1, 2, scale=[1e6]), u, 200)
    assert torch.allclose(small, big, rtol=1e-4)
    assert_matches(small, torch.tensor([2 / 0.3], dtype=torch.float64))
    plain, _ = estimates(PRDPT(sigma=0.01, schedule="constant", samples=8), Poly(1, 2, scale=[1e6]), u, 200)
    assert_matches(plain, torch.tensor([2e6 * 0.3], dtype=torch.float64))  # without: ∝ the scale


def test_shifted_samples_undo_the_pull_of_a_clamped_bound():
    # f = (u − 0.3)² at u = 0 with σ = 0.1: the true gradient is −0.6 (go inward). Clamped
    # samples see f flat below 0 and the estimate points outward; "shift" estimates it at
    # u = 2σ = 0.2 instead: 2 (0.2 − 0.3) = −0.2, inward.
    u = torch.tensor([0.0], dtype=torch.float64)
    clamped, _ = estimates(PRDPT(sigma=0.1, schedule="constant", samples=8), Poly(1, 2, center=0.3), u, 400)
    shifted, _ = estimates(PRDPT(sigma=0.1, schedule="constant", samples=8, bounds="shift"),
                           Poly(1, 2, center=0.3), u, 400)
    assert clamped.mean().item() > -0.6 + 0.1  # the clamp biases it towards the bound
    assert_matches(shifted, torch.tensor([-0.2], dtype=torch.float64))


def test_bad_options_are_refused_with_a_hint():
    with pytest.raises(ConfigError, match="even"):
        PRDPT(samples=3)
    with pytest.raises(ConfigError, match="sampler"):
        PRDPT(sampler="uniform")
    with pytest.raises(ConfigError, match="mode"):
        PRDPT(mode="adjoint")
    with pytest.raises(ConfigError, match="transform"):
        PRDPT(transform="sqrt")
    with pytest.raises(ConfigError, match="bounds"):
        PRDPT(bounds="wrap")




def test_crosses_the_plateau_where_analytic_cannot(plateau_scene):
    target = {"x": 0.7, "y": 0.3}
    res = rg.optimize("toy", "mse", "prdpt", renderer_options=plateau_scene, target_params=target,
                      lr=0.02, steps=300, max_renders=600, seed=1)
    err = math.dist([res.params["x"], res.params["y"]], [0.7, 0.3])
    assert err < 0.03, res.params
    # 300 steps of a pair each, or the budget first: the elite check's renders count, and the run
    # ends before a pair that would pass 600 (an elite check in the last step may add one)
    assert 600 - 2 < res.evaluations <= 601 and res.evaluations == res.history[-1]["evaluations"]
    soft = dict(plateau_scene, mode="soft", softness=0.02)
    stuck = rg.optimize("toy", "mse", "analytic", renderer_options=soft, target_params=target,
                        lr=0.02, steps=50, seed=1)
    assert stuck.params == pytest.approx({"x": 0.25, "y": 0.75})


def test_resume_continues_bit_identically(tmp_path, plateau_scene):
    target = {"x": 0.7, "y": 0.3}
    kw = dict(renderer_options=plateau_scene, target_params=target, lr=0.02, seed=3,
              estimator_options={"samples": 4, "qmc": True, "schedule": "constant", "sigma": 0.3})
    full = rg.optimize("toy", "mse", "prdpt", steps=30, **kw)
    rg.optimize("toy", "mse", "prdpt", steps=30, max_renders=60, checkpoint_dir=tmp_path, **kw)
    resumed = rg.optimize("toy", "mse", "prdpt", steps=30, checkpoint_dir=tmp_path, resume=True, **kw)
    assert torch.equal(full.u, resumed.u)
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]


def test_elite_jumps_to_a_sample_that_beats_every_loss_seen():
    """With ``elite`` the step moves onto a sample far better than anything seen in the basin;
    without, or when the sample is only a little better, it is the smoothed-gradient step."""
    renderer = Poly(n=2, center=0.8)
    space = renderer.parameter_space()
    u = torch.tensor([0.3, 0.3], dtype=torch.float64)

    def first_step(elite, best_seen=None):
        est = PRDPT(elite=elite)
        est.setup(space, 50)
        if best_seen is not None:
            est.best_seen = best_seen
        return est.estimate(evaluator(renderer), u.clone(), StepContext(0, 50, torch.Generator().manual_seed(4))).step

    def f(x):
        return float(renderer.render(x.unsqueeze(0)).flatten())

    plain = first_step(0.0)
    assert torch.allclose(first_step(0.1), plain)          # nothing seen yet: no jump
    jumped = first_step(0.1, best_seen=10.0)
    # the step lands exactly on the better of the two samples rendered
    assert not torch.allclose(plain, jumped)
    assert f(u + jumped) < f(u - jumped)                       # the better of the antithetic pair
    # half a kernel width is 0.5·σ·√n ≈ 0.07 here; the jump is the sample's full offset
    assert float(torch.linalg.vector_norm(plain)) == pytest.approx(0.5 * 0.1 * math.sqrt(2))
    # a sample that does not beat the best loss seen by 10 % is no reason to jump
    again = first_step(0.1, best_seen=1e-9)
    assert torch.allclose(again, plain)


class Unlucky:
    """A loss whose every call after the first adds ``extra``: the first batch's best sample was
    the noise's luck, and rendering it again shows so."""

    def __init__(self, renderer, extra: float):
        self.inner, self.extra, self.calls, self.renders = evaluator(renderer), extra, 0, 0

    def __call__(self, x, differentiable=False):
        self.calls += 1
        self.renders += x.shape[0]
        return self.inner(x) + (self.extra if self.calls > 1 else 0.0)


def test_elite_renders_a_candidate_again_and_trusts_only_a_repeatable_gain():
    """A Monte Carlo renderer's best sample is often lucky noise: the jump is taken only when a
    second render of the candidate beats the bar too; a renderer seen to repeat a loss exactly is
    noise-free and is not asked again."""
    renderer = Poly(n=2, center=0.8)
    space = renderer.parameter_space()
    u = torch.tensor([0.3, 0.3], dtype=torch.float64)

    def step(est, loss_fn, seed=4):
        return est.estimate(loss_fn, u.clone(), StepContext(0, 50, torch.Generator().manual_seed(seed)))

    plain = PRDPT(elite=0)
    plain.setup(space, 50)
    plain_step = step(plain, evaluator(renderer)).step

    noisy = PRDPT(elite=0.1)
    noisy.setup(space, 50)
    noisy.best_seen = 10.0
    loss_fn = Unlucky(renderer, extra=100.0)
    out = step(noisy, loss_fn)
    assert (loss_fn.calls, out.renders) == (2, 3)          # the pair, then the candidate again
    assert torch.allclose(out.step, plain_step)            # the second render was no better: no jump
    assert "elite" not in out.info
    assert not noisy.repeatable

    exact = PRDPT(elite=0.1)
    exact.setup(space, 50)
    exact.best_seen = 10.0
    out = step(exact, evaluator(renderer))
    assert out.renders == 3 and exact.repeatable           # the same loss twice: noise-free
    assert not torch.allclose(out.step, plain_step)        # and the jump is taken,
    assert out.info["elite"] is True                       # marked in the history record
    exact.best_seen = 10.0
    assert step(exact, evaluator(renderer), seed=5).renders == 2   # no second render any more
    assert exact.state_dict()["repeatable"] is True

    spent = PRDPT(elite=0.1)                               # the budget is spent by the pair itself:
    spent.setup(space, 50)                                 # nothing is rendered beyond it, no jump
    spent.best_seen = 10.0
    out = spent.estimate(evaluator(renderer), u.clone(),
                         StepContext(0, 50, torch.Generator().manual_seed(4), max_renders=2))
    assert out.renders == 2 and torch.allclose(out.step, plain_step)

    inner = PRDPT(elite=0.1)                               # a caller that steps along the gradient
    inner.setup(space, 50)                                 # itself (meta-learning's inner loops):
    inner.best_seen = 10.0                                 # no render for a jump nobody takes
    out = inner.estimate(evaluator(renderer), u.clone(),
                         StepContext(0, 50, torch.Generator().manual_seed(4), takes_step=False))
    assert out.renders == 2 and torch.allclose(out.step, plain_step)


def test_elite_state_survives_a_checkpoint(tmp_path, plateau_scene):
    target = {"x": 0.7, "y": 0.3}
    kw = dict(renderer_options=plateau_scene, target_params=target, seed=5, estimator_options={"elite": 0.1})
    full = rg.optimize("toy", "mse", "prdpt", steps=40, **kw)
    rg.optimize("toy", "mse", "prdpt", steps=40, max_renders=30, checkpoint_dir=tmp_path, **kw)
    resumed = rg.optimize("toy", "mse", "prdpt", steps=40, checkpoint_dir=tmp_path, resume=True, **kw)
    assert torch.equal(full.u, resumed.u)
    with pytest.raises(ConfigError, match="elite"):
        PRDPT(elite=1.5)


class Ripple(Renderer):
    """A plateau with a deterministic ripple: ``1 + 0.01·sin(200·x)·cos(170·y)`` (the aliasing of a
    soft edge on a coarse image, ±1 %), except a well ``−0.9·exp(−|u − (0.85, 0.15)|²/0.02)`` far
    from the start (0.2, 0.8)."""

    name = "ripple"

    def parameter_space(self) -> ParamSpace:
        return ParamSpace([Param("x", init=0.2), Param("y", init=0.8)])

    def render(self, theta):
        x, y = theta[:, 0], theta[:, 1]
        well = 0.9 * torch.exp(-((x - 0.85) ** 2 + (y - 0.15) ** 2) / 0.02)
        return (1.0 + 0.01 * torch.sin(200 * x) * torch.cos(170 * y) - well).reshape(-1, 1, 1, 1)


def test_a_rough_plateau_widens_sigma_until_the_kernel_finds_a_slope():
    """Before any sample beats the basin's first loss by 10 %, steps whose losses lie within ``rough``
    (5 %) of each other, twice in a row, are a rough plateau: σ grows instead of following the
    ripple's random directions."""
    renderer, space = Ripple(), Ripple().parameter_space()

    def sigmas(rough, steps=12):
        est = PRDPT(rough=rough)
        est.setup(space, 100)
        ev, gen, u = evaluator(renderer), torch.Generator().manual_seed(0), space.initial_unit()
        out = []
        for k in range(steps):
            e = est.estimate(ev, u, StepContext(k, 100, gen))
            u = (u + e.step).clamp(0, 1)
            out.append(est.adaptive.sigma)
        return out, u

    grown, u = sigmas(0.05)
    assert grown[-1] == pytest.approx(0.3)        # σ_max: 1.2× per rough step (from the 2nd) from 0.1
    assert not torch.equal(u, space.initial_unit())  # rough steps are still taken
    kept, _ = sigmas(0.0)
    assert max(kept) < 0.2                         # without the rule, the ripple sets σ


def test_the_rough_plateau_ends_when_a_sample_beats_the_start():
    est = PRDPT()
    est.setup(ParamSpace([Param("x"), Param("y")]), 10)
    loss = lambda *v: torch.tensor(v, dtype=torch.float64)   # noqa: E731
    assert est._flat(loss(1.0, 1.0)) == (True, False)         # exactly equal: flat
    assert est._flat(loss(1.0, 0.97)) == (False, False)       # 3 % apart at the start: once is chance
    resumed = PRDPT()
    resumed.setup(ParamSpace([Param("x"), Param("y")]), 10)
    resumed.load_state_dict(est.state_dict())                 # the streak is checkpointed
    assert resumed._flat(loss(0.98, 1.0)) == (False, True)
    assert est._flat(loss(0.98, 1.0)) == (False, True)        # twice in a row: a rough plateau
    assert est._flat(loss(1.0, 0.90)) == (False, False)       # 10 % apart is a slope
    assert est._flat(loss(1.0, 0.99)) == (False, False)       # and the streak starts again
    est.best_seen = 0.85                                      # a sample 15 % below the start
    assert est._flat(loss(0.5, 0.49)) == (False, False)       # near a noisy optimum: a slope
    assert est._flat(loss(0.5, 0.49)) == (False, False)
    state = est.state_dict()
    assert state["basin_start"] == pytest.approx(1.0)
    est2 = PRDPT()
    est2.setup(ParamSpace([Param("x"), Param("y")]), 10)
    est2.load_state_dict(state)
    assert est2.basin_start == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="rough"):
        PRDPT(rough=-0.1)


def test_the_way_back_to_the_best_basin_is_no_rough_plateau():
    """A restart starts the rough-plateau test afresh; the way back to the best basin does not (its
    slope was found, and the losses of a settled basin lie close together)."""
    space = ParamSpace([Param("x"), Param("y")])
    est = PRDPT()
    est.setup(space, 100)
    u = torch.full((2,), 0.5, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    losses = torch.tensor([1.0, 1.0], dtype=torch.float64)
    est.basin_start, est.rough_streak = 2.0, 1
    est.restarts.after_step = lambda *a, **k: (torch.zeros(2, dtype=torch.float64), 0.1)   # a restart
    est._answer(lambda x: None, u, losses, torch.zeros(2), 0.1, None, StepContext(5, 100, gen), u)
    assert est.basin_start is None and est.rough_streak == 0
    est.restarts.returned = True                                                           # the way back
    est._answer(lambda x: None, u, losses, torch.zeros(2), 0.1, None, StepContext(90, 100, gen), u)
    assert est.basin_start == -math.inf
    est._flat(torch.tensor([1.0, 0.99], dtype=torch.float64))
    assert est._flat(torch.tensor([1.0, 0.99], dtype=torch.float64)) == (False, False)


@pytest.mark.parametrize("seed", [4, 7])
def test_the_aliased_plateau_is_crossed_at_the_defaults(seed):
    """The benchmark's plateau (a disc on a 64² image; its loss ripples by ±1.5 % with the disc's
    sub-pixel position): seeds that never left it without the rough-plateau rule now solve it."""
    from benchmarks.tasks import PLATEAU_SCENE
    target = {"x": 0.7, "y": 0.3}

    def error(**options):
        res = rg.optimize("toy", "mse", "prdpt", renderer_options=PLATEAU_SCENE, target_params=target,
                          estimator_options=options, steps=300, max_renders=600, seed=seed, final_render=False)
        return math.dist([res.params["x"], res.params["y"]], [0.7, 0.3])

    assert error() < 1e-3
    assert error(rough=0.0) > 0.1
