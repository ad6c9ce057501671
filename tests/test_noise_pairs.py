"""MSE on a noisy renderer: two half-sample renders per point, scored ``mean((X₁ − T)(X₂ − T))``.

``noisy_gain`` (tests/executor_plugins.py) is a flat image whose noise grows with its brightness,
so the plain MSE is minimised at a darker level than the target's; the pair loss is not.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import rendergrad as rg
from rendergrad.errors import ConfigError
from rendergrad.evaluation import BatchEvaluator, noise_pairs

sys.path.insert(0, str(Path(__file__).parent))
import executor_plugins as ep  # noqa: E402

REG = rg.discover(extra_plugins=[ep])
TARGET = torch.full((16, 16, 3), 0.6)   # exact: the noise-free image at level 0.6


def objective(**options):
    return REG.create("objective", "mse", options)


@pytest.mark.parametrize("estimator, settings", [
    # CMA-ES at its defaults: the plain MSE ends near 0.6 / (1 + 1) = 0.3.
    ("cma", {"steps": 1000, "max_renders": 400, "seed": 1}),
    # Gradients too: d/dθ of (X₁ − T)(X₂ − T) averages to 2(E X − T)·dE X/dθ; of (X − T)², to
    # that plus d Var X/dθ.
    ("analytic", {"lr": 0.01, "steps": 300, "seed": 2}),
])
def test_the_plain_mse_is_minimised_away_from_the_target_and_the_pair_loss_is_not(estimator, settings):
    ends = {}
    for unbiased in (False, "auto"):
        res = rg.optimize("noisy_gain", "mse", estimator, target=TARGET, renderer_options={"size": 16},
                          objective_options={"unbiased": unbiased}, registry=REG, final_render=False, **settings)
        ends[unbiased] = res.params["level"]
    assert abs(ends[False] - 0.3) < 0.05, ends
    assert abs(ends["auto"] - 0.6) < 0.03, ends


def test_a_pair_costs_one_render_and_its_halves_have_their_own_seeds():
    r = ep.NoisyGain(size=4)
    ev = BatchEvaluator(r, objective(), r.parameter_space(), TARGET[:4, :4])
    assert ev.pairs and ev.pair_fraction == 0.5
    u = torch.tensor([[0.2], [0.5], [0.9]], dtype=torch.float64)
    loss = ev(u)
    assert ev.renders == 3                       # three points, two half-sample images each
    assert ev.render_index == 6 and ev.render_batches == 2
    assert r.fractions == [0.5] * 6 and r.fraction == 1.0   # left at its configured quality
    # The same images by hand: the first copy from render index 0, the second from 3.
    again = ep.NoisyGain(size=4)
    theta = r.parameter_space().to_theta(u)
    again.set_sample_fraction(0.5)
    again.seek(0, 0)
    first = again.render(theta)
    again.seek(3, 1)
    second = again.render(theta)
    t = TARGET[:4, :4]
    assert torch.allclose(loss, ((first - t) * (second - t)).flatten(1).mean(1).to(loss.dtype))
    assert not torch.allclose(first, second)
    # The record's image is the mean of a pair (a full-sample image), charged as one extra render.
    img, value = ev.preview_scored(theta[1])
    assert ev.renders == 3 and ev.extra_renders == 1 and img.shape == (4, 4, 3)
    assert r.fractions[-2:] == [0.5, 0.5]


def test_who_gets_pairs():
    gain = ep.NoisyGain()
    assert noise_pairs(objective(), gain) == (2, 0.5)
    assert noise_pairs(objective(splits=4), gain) == (4, 0.25)
    assert noise_pairs(objective(unbiased=False), gain) == (1, 1.0)
    assert noise_pairs(REG.create("objective", "l1", {}), gain) == (1, 1.0)   # no pair loss
    fixed = ep.NoisyGain(samples=False)           # noisy, but its samples are not adjustable
    assert noise_pairs(objective(), fixed) == (1, 1.0)
    assert noise_pairs(objective(unbiased=True), fixed) == (2, 1.0)
    toy = REG.create("renderer", "toy", {})       # deterministic: nothing to pair
    assert noise_pairs(objective(unbiased=True), toy) == (1, 1.0)
    with pytest.raises(ConfigError, match="unbiased must be"):
        objective(unbiased="yes")
    with pytest.raises(ConfigError, match="splits must be an integer >= 2"):
        objective(splits=1)


def test_four_splits_cost_one_render_and_average_every_pair():
    r = ep.NoisyGain(size=4)
    ev = BatchEvaluator(r, objective(splits=4), r.parameter_space(), TARGET[:4, :4])
    u = torch.tensor([[0.3], [0.8]], dtype=torch.float64)
    loss = ev(u)
    assert ev.renders == 2 and ev.render_index == 8 and ev.render_batches == 4
    assert r.fractions == [0.25] * 8
    again = ep.NoisyGain(size=4)
    again.set_sample_fraction(0.25)
    theta, t = r.parameter_space().to_theta(u), TARGET[:4, :4]
    a = []
    for copy in range(4):
        again.seek(2 * copy, copy)
        a.append(again.render(theta) - t)
    a = torch.stack(a)
    by_hand = ((a.sum(0) ** 2 - (a ** 2).sum(0)) / 12).flatten(1).mean(1)
    assert torch.allclose(loss, by_hand.to(loss.dtype), atol=1e-6)
    img, _ = ev.preview_scored(theta[0])
    assert ev.extra_renders == 1 and img.shape == (4, 4, 3)


def test_full_sample_pairs_are_charged_two_renders():
    r = ep.NoisyGain(size=4, samples=False)
    ev = BatchEvaluator(r, objective(unbiased=True), r.parameter_space(), TARGET[:4, :4])
    ev(torch.tensor([[0.5], [0.7]], dtype=torch.float64))
    assert ev.renders == 4 and r.fractions == [1.0] * 4 and r.fraction == 1.0


def test_worker_processes_render_the_same_pairs():
    """The sample fraction travels with each chunk to the worker that renders it."""
    def run(executor, options=None):
        return rg.optimize("noisy_gain", "mse", "prdpt", target=TARGET, renderer_options={"size": 16}, steps=4,
                           seed=3, registry=REG, executor=executor, executor_options=options, final_render=False)
    local, pool = run("local"), run("processes", {"workers": 2})
    assert [h["loss"] for h in local.history] == [h["loss"] for h in pool.history]
    assert local.evaluations == pool.evaluations > 0


def test_mitsuba_renders_a_fraction_of_its_samples():
    pytest.importorskip("mitsuba")
    from rendergrad.renderers.mitsuba import MitsubaRenderer
    sys.path.insert(0, str(Path(__file__).parent.parent / "examples" / "mitsuba"))
    import scenes
    t = scenes.task("shadow")
    opts = dict(scene=scenes.shadow(max_depth=2), params=t["params"], resolution=[12, 16])
    theta = MitsubaRenderer(spp=4, **opts).parameter_space().flatten(t["init"]).reshape(1, -1)
    full, half = MitsubaRenderer(spp=8, **opts), MitsubaRenderer(spp=4, **opts)
    assert full.noisy and full.adjustable_samples
    assert not MitsubaRenderer(spp=4, seed_mode="fixed", **opts).noisy
    full.set_sample_fraction(0.5)
    full.seek(5, 0)
    half.seek(5, 0)
    assert torch.equal(full.render(theta), half.render(theta))
    full.set_sample_fraction(1.0)
    full.seek(5, 0)
    assert not torch.equal(full.render(theta), half.render(theta))
    with pytest.raises(ConfigError, match="fraction"):
        full.set_sample_fraction(0.0)


def test_a_pair_loss_of_the_wrong_shape_is_a_clear_error():
    class Scalar(rg.Objective):
        name = "scalar-pairs"
        unbiased = "auto"

        def loss(self, images, target):
            return ((images - target) ** 2).flatten(1).mean(1)

        def pair_loss(self, first, second, target):
            return ((first - target) * (second - target)).mean()   # one number, not one per point

    r = ep.NoisyGain(size=4)
    ev = BatchEvaluator(r, Scalar(), r.parameter_space(), TARGET[:4, :4])
    with pytest.raises(rg.RendergradError, match=r"'scalar-pairs' returned \(\); pair_loss\(\) must return one value"):
        ev(torch.tensor([[0.5], [0.7]], dtype=torch.float64))


def test_a_resumed_run_with_noise_pairs_is_bit_identical(tmp_path):
    """Each half's place in the run (render index, batch) is restored, so the halves after a
    resume get the same noise as in the uninterrupted run."""
    from rendergrad.callbacks import Callback

    class StopAt(Callback):
        def on_step(self, *, record, **kw):
            if record["step"] == 3:
                raise KeyboardInterrupt

    kw = dict(target=TARGET, renderer_options={"size": 16}, steps=8, seed=5, registry=REG, final_render=False)
    full = rg.optimize("noisy_gain", "mse", "prdpt", checkpoint_dir=tmp_path / "a", **kw)
    with pytest.raises(KeyboardInterrupt):
        rg.optimize("noisy_gain", "mse", "prdpt", checkpoint_dir=tmp_path / "b", callbacks=[StopAt()], **kw)
    resumed = rg.optimize("noisy_gain", "mse", "prdpt", checkpoint_dir=tmp_path / "b", resume=True, **kw)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert resumed.params == full.params
