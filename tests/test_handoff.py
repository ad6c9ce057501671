"""``handoff``: PRDPT until the basin is found, then CMA-ES (:mod:`rendergrad.plugins.handoff`)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch

import rendergrad as rg
from rendergrad.errors import ConfigError
from rendergrad.registry import registry

pytest.importorskip("cma")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:          # the benchmark's scenes, as test_benchmark_tasks reads them
    sys.path.insert(0, str(ROOT))
from benchmarks.tasks import get_task  # noqa: E402

TARGET = {"x": 0.7, "y": 0.3}


def _run(task_name: str, estimator: str, seed: int, renders: int = 600, **options):
    task = get_task(task_name)
    res = rg.optimize(task.make_renderer(), "mse", estimator, estimator_options=options or None,
                      target=task.target_image() if task.target_image else None,
                      target_params=task.target_params, init=task.init, steps=renders, max_renders=renders,
                      seed=seed, final_render=False)
    space = task.make_renderer().parameter_space()
    return res, task.error(space.flatten(res.params).to(torch.float64))


def test_the_search_hands_over_once_its_sigma_has_narrowed(plateau_scene, caplog):
    with caplog.at_level(logging.INFO, logger="rendergrad.handoff"):
        res = rg.optimize("toy", "mse", "handoff", renderer_options=plateau_scene, target_params=TARGET,
                          steps=300, max_renders=300, seed=0, final_render=False)
    phases = [h["phase"] for h in res.history]
    at = next(i for i, h in enumerate(res.history) if h.get("handoff") is True)
    end = len(phases)
    assert set(phases[:at]) == {"search"} and set(phases[at:]) == {"refine"}, phases
    # the run keeps to its budget: it ends where one more generation (6 renders) would overrun it
    assert res.stopped == "max_renders" and 300 - 6 < res.evaluations <= 300
    # the search's σ (after each step) had just narrowed to 0.3 of its start (0.1) when it handed over
    assert res.history[at - 2]["sigma"] > 0.03 >= res.history[at - 1]["sigma"]
    assert "CMA-ES refines from here" in caplog.text
    # CMA-ES's population per step (pycma's 4 + 3 ln 2 = 6 for two parameters), each render counted
    spent = [b["evaluations"] - a["evaluations"] for a, b in zip(res.history[at:end], res.history[at + 1:end])]
    assert set(spent) == {6}
    # within a fifth of a pixel of the hard-edged disc's target (one pixel: 0.04 of the range)
    assert abs(res.params["x"] - 0.7) < 0.008 and abs(res.params["y"] - 0.3) < 0.008


def test_zerograds_can_be_the_search(plateau_scene):
    res = rg.optimize("toy", "mse", "handoff", estimator_options={"search": "zerograds"},
                      renderer_options=plateau_scene, target_params=TARGET, steps=300, max_renders=300, seed=0,
                      final_render=False)
    assert any(h.get("handoff") for h in res.history)
    assert abs(res.params["x"] - 0.7) < 0.008 and abs(res.params["y"] - 0.3) < 0.008


def test_a_valley_across_kinds_of_parameter_is_followed_where_prdpt_crosses_it():
    """The blurred disc: its radius and brightness trade off along a narrow valley. Seed 1: PRDPT
    ends 0.018 from the target after 600 renders; CMA-ES, handed the run at the basin, solves it."""
    _, prdpt = _run("one_glow", "prdpt", 1)
    res, handoff = _run("one_glow", "handoff", 1)
    assert prdpt > 0.01 and handoff < 0.005, (prdpt, handoff)
    assert any(h.get("handoff") for h in res.history)


def test_a_settled_cma_es_restarts_the_search_and_the_end_returns_to_the_best_basin():
    """The toy's spline has a second dip; seed 2 settles there (elite jumps off, so that the
    restart is what leaves it, as in test_restarts)."""
    res, error = _run("toy", "handoff", 2, search_options={"elite": 0})
    stuck = _run("toy", "handoff", 2, search_options={"elite": 0}, restarts=False)[1]
    assert stuck > 1.0 and error < 0.01, (stuck, error)
    restarts = [h for h in res.history if isinstance(h.get("restart"), int)]
    assert restarts and all(h["phase"] == "refine" for h in restarts)
    after = res.history.index(restarts[0]) + 1
    assert res.history[after]["phase"] == "search"


def test_resume_in_either_phase_is_bit_identical(plateau_scene, tmp_path):
    kw = dict(renderer_options=plateau_scene, target_params=TARGET, steps=300, max_renders=300, seed=0,
              final_render=False)
    full = rg.optimize("toy", "mse", "handoff", **kw)
    at = next(h["evaluations"] for h in full.history if h.get("handoff"))
    last = full.history[-2]["evaluations"]
    for stop in (at - 6, at + 30, last):      # in the search, in CMA-ES's refinement, before its last generation
        folder = tmp_path / str(stop)
        opt = rg.Optimization("toy", "mse", "handoff", checkpoint_dir=folder,
                              **{k: v for k, v in kw.items() if k != "final_render"})
        assert stop < 300
        while opt.evaluator.renders < stop:
            opt.render_pending()
        opt.save(folder)
        resumed = rg.optimize("toy", "mse", "handoff", checkpoint_dir=folder, resume=True, **kw)
        assert torch.equal(resumed.u, full.u), stop
        assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]


def test_the_probe_widens_the_spread_of_a_parameter_the_loss_barely_moves():
    """Two shapes, seed 3: at the hand-off the disc's and the box's positions are close, the box's
    colour far off and flat in the loss. Without the probe CMA-ES starts the colour at the
    positions' spread and ends 0.0105 from the target; the probe widens it (the clamp, 4) and
    the run solves the scene. The probe's renders (the point thrice, a pair per parameter) count."""
    _, plain = _run("two_shapes", "handoff", 3, probe=0)
    res, probed = _run("two_shapes", "handoff", 3, probe=4)
    assert probed < 0.01 < plain, (probed, plain)
    at = next(i for i, h in enumerate(res.history) if h.get("handoff"))
    factors = res.history[at]["probe"]
    assert set(factors) == {"ax", "ay", "ra", "bx", "by", "bc"}
    assert factors["bc"] == max(factors.values()) == 4.0 and min(factors.values()) >= 0.25
    generation = res.history[at + 1]["evaluations"] - res.history[at]["evaluations"]
    assert res.history[at]["evaluations"] - res.history[at - 1]["evaluations"] == 3 + 2 * 6 + generation
    assert res.evaluations <= 600


def _probe_factors(noise: float) -> dict[str, float]:
    """The probe on a loss a position moves 10⁴ times more than a colour, with render noise."""
    from rendergrad.params import ParamSpace
    from rendergrad.plugins.handoff import Handoff
    space = ParamSpace.from_config([{"name": "pos", "init": 0.5}, {"name": "colour", "init": 0.5}])
    handoff = Handoff(probe=4)
    handoff.setup(space, 100)
    gen = torch.Generator().manual_seed(0)

    def loss_fn(u: torch.Tensor) -> torch.Tensor:
        clean = (u[:, 0] - 0.5) ** 2 + 1e-4 * (u[:, 1] - 0.5) ** 2
        return clean + noise * torch.randn(len(u), generator=gen, dtype=u.dtype)

    _, factors = handoff._probed(loss_fn, torch.full((2,), 0.5), torch.full((2,), 0.1))
    return factors


def test_the_probe_does_not_widen_a_parameter_whose_rise_is_lost_in_render_noise():
    """Noise-free, the colour's rise (2e-6 against the position's 0.02) widens it to the clamp; with
    render noise of 1e-3 that rise is not measured, so it widens far less."""
    clean, noisy = _probe_factors(0.0), _probe_factors(1e-3)
    assert clean["colour"] == 4.0 and clean["pos"] == 0.25
    assert 1.0 <= noisy["colour"] < 2.5 and noisy["pos"] > 0.4, noisy


def test_the_probe_spends_nothing_on_a_scene_of_one_declared_parameter():
    """Its one factor would be 1: the run is the probe-less run, render for render."""
    scene = {"resolution": 16, "mode": "soft", "params": [{"name": "x", "init": 0.3}],
             "shapes": [{"type": "disc", "x": "x", "y": 0.5, "radius": 0.2, "color": [1.0, 1.0, 1.0]}]}
    runs = [rg.optimize("toy", "mse", "handoff", estimator_options={"probe": probe}, renderer_options=scene,
                        target_params={"x": 0.6}, steps=200, max_renders=200, seed=0, final_render=False)
            for probe in (0, 4)]
    assert any(h.get("handoff") for h in runs[1].history)
    assert not any("probe" in h for h in runs[1].history)
    assert [h["loss"] for h in runs[1].history] == [h["loss"] for h in runs[0].history]
    assert runs[1].evaluations == runs[0].evaluations


def test_cma_es_takes_a_spread_per_parameter_even_for_one_parameter():
    """pycma needs two dimensions; one parameter carries a second, ignored one, and its spread too."""
    scene = {"resolution": 16, "mode": "soft", "params": [{"name": "x", "init": 0.3}],
             "shapes": [{"type": "disc", "x": "x", "y": 0.5, "radius": 0.2, "color": [1.0, 1.0, 1.0]}]}
    cma = registry().create("estimator", "cma", {"sigma0": 0.1, "options": {"CMA_stds": [2.0]}})
    opt = rg.Optimization("toy", "mse", cma, renderer_options=scene, target_params={"x": 0.6}, steps=20)
    assert len(opt.ask()) == 6 and cma.spread() == pytest.approx(0.2)     # σ₀ times the spread asked for
    res = rg.optimize("toy", "mse", "handoff", renderer_options=scene, target_params={"x": 0.6}, steps=200,
                      max_renders=200, seed=0, final_render=False)
    assert any(h.get("handoff") for h in res.history) and abs(res.params["x"] - 0.6) < 1e-3


@pytest.mark.parametrize("options, words", [
    ({"search": "cma"}, "search"),
    ({"at": 0}, "at (the fraction"),
    ({"search_options": {"schedule": "paper"}}, "schedule = 'adaptive'"),
    ({"search_options": {"sigmaa": 0.1}}, "sigmaa"),
    ({"cma": {"options": {"CMA_stdz": [1.0]}}}, "CMA_stdz"),
    ({"restarts": {"window": 10, "sigma_frac": 0.1}}, "sigma_frac"),
    ({"probe": 0.5}, "probe (the most"),
    ({"probe": True}, "probe (the most"),
])
def test_bad_options_fail_when_the_run_is_set_up_and_say_what_to_fix(options, words):
    with pytest.raises(ConfigError) as err:
        registry().create("estimator", "handoff", options)
    assert words in str(err.value)
