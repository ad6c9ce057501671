"""ZeroGrads: the surrogate learns the loss, its gradient optimizes, and its state resumes."""

from __future__ import annotations

import math

import pytest
import torch

import rendergrad as rg
from rendergrad import Param, ParamSpace
from rendergrad.errors import ConfigError
from rendergrad.plugins.zerograds import ZeroGrads



def quadratic(u: torch.Tensor) -> torch.Tensor:
    c = torch.tensor([0.3, 0.6, 0.5])
    a = torch.tensor([2.0, 1.0, 4.0])
    return ((u - c) ** 2 * a).sum(-1)


@pytest.mark.parametrize("surrogate,lr", [("mlp", 2e-2), ("quadratic", 5e-2)])
def test_surrogate_fits_a_known_quadratic(surrogate, lr):
    torch.manual_seed(0)
    est = ZeroGrads(surrogate=surrogate, lr=lr, updates=1)
    est.setup(ParamSpace([Param("u", shape=(3,))]), 100)
    est.scale = 1.0
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        rho = torch.rand(64, 3, generator=gen)
        est.fit(rho, quadratic(rho))
    test = torch.rand(256, 3, generator=gen)
    pred = est.predict(test)
    truth = quadratic(test)
    assert (pred - truth).abs().mean() < 0.05 * truth.mean()
    # and its gradient points where the true gradient points
    u = torch.tensor([0.7, 0.2, 0.9])
    g = est.surrogate_gradient(u)
    true_g = 2 * torch.tensor([2.0, 1.0, 4.0]) * (u - torch.tensor([0.3, 0.6, 0.5]))
    assert torch.nn.functional.cosine_similarity(g, true_g, dim=0) > 0.95


def test_predictions_stay_non_negative():
    torch.manual_seed(0)
    est = ZeroGrads()
    est.setup(ParamSpace([Param("u", shape=(2,))]), 10)
    est.scale = 1.0
    rho = torch.rand(32, 2)
    est.opt.param_groups[0]["lr"] = 0.05
    for _ in range(30):
        est.fit(rho, torch.zeros(32))   # pulls predictions towards (and, unconstrained, past) zero
    assert bool((est.predict(torch.rand(500, 2) * 3 - 1) >= 0).all())


def test_crosses_the_plateau_in_a_short_run(plateau_scene, plateau_target):
    res = rg.optimize("toy", "mse", "zerograds", renderer_options=plateau_scene, target_params=plateau_target,
                      lr=0.02, steps=400, max_renders=400, seed=0)
    err = math.dist([res.params["x"], res.params["y"]], [0.7, 0.3])
    assert err < 0.03, res.params
    assert res.evaluations == 400
    rec = res.history[-1]
    assert set(rec) >= {"sigma", "surrogate_loss"} and len(rec) <= 7   # small history records


def test_resume_continues_bit_identically(tmp_path, plateau_scene, plateau_target):
    kw = dict(renderer_options=plateau_scene, target_params=plateau_target, lr=0.02, seed=5,
              estimator_options={"schedule": "constant", "buffer": 16})
    full = rg.optimize("toy", "mse", "zerograds", steps=24, **kw)
    part = rg.optimize("toy", "mse", "zerograds", steps=24, max_renders=20, checkpoint_dir=tmp_path, **kw)
    assert part.steps == 10
    resumed = rg.optimize("toy", "mse", "zerograds", steps=24, checkpoint_dir=tmp_path, resume=True, **kw)
    assert torch.equal(full.u, resumed.u)
    assert [h["surrogate_loss"] for h in full.history] == [h["surrogate_loss"] for h in resumed.history]


def test_options_are_validated():
    with pytest.raises(ConfigError, match="surrogate"):
        ZeroGrads(surrogate="gp")
    with pytest.raises(ConfigError, match="even"):
        ZeroGrads(samples=3)
    with pytest.raises(ConfigError, match="transform"):
        ZeroGrads(transform="sqrt")
