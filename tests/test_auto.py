"""The ``auto`` estimator's choices, and the adaptive σ behind the PRDPT/ZeroGrads defaults."""

from __future__ import annotations

import logging

import torch

import rendergrad as rg
from rendergrad.plugins.schedules import AdaptiveSigma

TARGET = {"x": 0.7, "y": 0.3}


def test_auto_picks_prdpt_handing_over_to_cma_es_for_few_parameters_and_says_why(plateau_scene, caplog):
    with caplog.at_level(logging.INFO, logger="rendergrad.auto"):
        res = rg.optimize("toy", "mse", "auto", renderer_options=plateau_scene, target_params=TARGET,
                          steps=20, seed=0, final_render=False)
    first = res.history[0]
    assert first["auto"] == "handoff" and "then CMA-ES" in first["auto_reason"]
    assert "auto estimator: handoff" in caplog.text
    # the first 20 steps are PRDPT's: one pair each, one elite check on a noise-free renderer
    assert res.evaluations in (40, 41) and {h["phase"] for h in res.history} == {"search"}


def test_auto_keeps_to_the_render_budget_once_cma_es_refines(plateau_scene):
    """``auto`` passes on its choice's renders per step: a run of handoff through ``auto`` ends
    where the next CMA-ES generation would overrun ``max_renders``, as ``handoff`` itself does,
    render for render."""
    runs = [rg.optimize("toy", "mse", name, renderer_options=plateau_scene, target_params=TARGET,
                        steps=1000, max_renders=297, seed=0, final_render=False) for name in ("auto", "handoff")]
    assert any(h["phase"] == "refine" for h in runs[0].history)
    assert runs[0].stopped == "max_renders" and 297 - 6 < runs[0].evaluations <= 297
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]


def test_without_pycma_auto_runs_prdpt_alone_and_says_how_to_get_the_refinement(plateau_scene, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cma" else real(name, *a))
    res = rg.optimize("toy", "mse", "auto", renderer_options=plateau_scene, target_params=TARGET,
                      steps=5, seed=0, final_render=False)
    assert res.history[0]["auto"] == "prdpt" and "pip install cma" in res.history[0]["auto_reason"]


def test_auto_takes_analytic_for_many_differentiable_parameters_and_leaves_a_plateau(plateau_scene):
    soft = dict(plateau_scene, mode="soft", softness=0.02)
    res = rg.optimize("toy", "mse", "auto", estimator_options={"max_adaptive": 1}, renderer_options=soft,
                      target_params=TARGET, steps=8, seed=0, final_render=False)
    assert res.history[0]["auto"] == "analytic"
    switched = [h for h in res.history if h.get("auto") == "prdpt"]
    assert switched and "zero" in switched[0]["auto_reason"], res.history[:5]
    assert res.evaluations > res.steps          # PRDPT steps cost two renders each


def test_adaptive_sigma_grows_on_agreement_and_plateaus_and_shrinks_on_flips():
    a = AdaptiveSigma(sigma=0.1)
    for _ in range(10):
        a.update(torch.tensor([1.0, 0.0]))
    assert a.sigma > 0.2                         # directions agree: the smoothed slope goes on
    b = AdaptiveSigma(sigma=0.1)
    for i in range(30):
        b.update(torch.tensor([(-1.0) ** i, 0.0]))
    assert b.sigma < 0.05                        # back and forth across a minimum
    c = AdaptiveSigma(sigma=0.1)
    c.update(torch.zeros(2), flat=True)
    assert abs(c.sigma - 0.12) < 1e-12           # a plateau: look further
    # a plateau is flat up to a tiny residual slope (a soft edge's blur): still a plateau
    assert c.is_flat(torch.tensor([0.0168, 0.0168 * (1 + 6e-5)]))
    assert not c.is_flat(torch.tensor([0.0168, 0.0168 * 1.01]))   # a real slope
    assert not AdaptiveSigma(sigma=0.1, flat_tol=0.0).is_flat(torch.tensor([1.0, 1.0 + 1e-9], dtype=torch.float64))  # exact test
    state = b.state_dict()
    d = AdaptiveSigma(sigma=0.1)
    d.load_state_dict(state)
    assert d.sigma == b.sigma and torch.equal(d.path, b.path)


def test_prdpt_default_sizes_its_own_step_and_ignores_lr(plateau_scene):
    runs = [rg.optimize("toy", "mse", "prdpt", renderer_options=plateau_scene, target_params=TARGET,
                        lr=lr, steps=15, seed=2, final_render=False) for lr in (1e-4, 0.5)]
    assert torch.equal(runs[0].u, runs[1].u)
    old = rg.optimize("toy", "mse", "prdpt", estimator_options={"schedule": "paper"},
                      renderer_options=plateau_scene, target_params=TARGET, lr=1e-4, steps=15, seed=2,
                      final_render=False)
    assert not torch.equal(old.u, runs[0].u)     # the annealed schedule still uses the optimizer
