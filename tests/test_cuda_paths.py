"""The toy renderer, OLAT and the estimators on CUDA tensors (marked ``gpu``; skipped elsewhere).

CPU tests cover the same code; these catch device mix-ups (a CPU tensor meeting a CUDA one)
that only show where a GPU exists.
"""

from __future__ import annotations

import pytest
import torch

import rendergrad as rg

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch sees none)")]

DISC = {"resolution": 48, "device": "cuda",
        "shapes": [{"type": "disc", "x": "x", "y": "y", "radius": 0.15, "color": [1.0, 0.5, 0.2]}],
        "params": [{"name": "x", "init": 0.4, "low": 0.15, "high": 0.85},
                   {"name": "y", "init": 0.6, "low": 0.15, "high": 0.85}]}


def test_toy_renderer_renders_on_cuda():
    from rendergrad.renderers.toy import ToyRenderer
    r = ToyRenderer(**DISC, mode="soft")
    img = r.render(torch.tensor([[0.5, 0.5]]))
    assert img.is_cuda and img.shape == (1, 48, 48, 3)


@pytest.mark.parametrize("estimator, mode, steps", [("analytic", "soft", 60), ("prdpt", "hard", 80),
                                                    ("zerograds", "hard", 80), ("spsa", "hard", 80),
                                                    ("fd", "soft", 20)])
def test_estimators_with_a_cuda_renderer(estimator, mode, steps):
    res = rg.optimize("toy", "mse", estimator, renderer_options=dict(DISC, mode=mode),
                      target_params={"x": 0.5, "y": 0.5}, lr=0.02, steps=steps, seed=0)
    assert res.loss < res.history[0]["loss"]


def test_cma_baseline_with_a_cuda_renderer():
    pytest.importorskip("cma")
    from rendergrad.plugins.baselines import minimize
    res = minimize("toy", "mse", "cma", renderer_options=dict(DISC, mode="hard"),
                   target_params={"x": 0.5, "y": 0.5}, budget=120, seed=0)
    assert res.evaluations <= 120 and res.loss < res.history[0]["loss"]


def _olat():
    from rendergrad.renderers.olat import OlatBasis, OlatRenderer
    g = torch.Generator().manual_seed(0)
    basis = OlatBasis(["a", "b"], torch.rand(2, 16, 16, 3, generator=g) ** 3, None)
    return OlatRenderer, basis


def test_olat_on_cuda_recovers_multipliers():
    OlatRenderer, basis = _olat()
    r = OlatRenderer(basis, theta_max=4.0, device="cuda")
    truth = {"a": [1.5, 0.5, 2.0], "b": [0.25, 1.0, 3.0]}
    assert r.render(torch.ones(1, 6)).is_cuda
    res = rg.optimize(r, "mse", "analytic", target_params=truth, lr=0.05, steps=300)
    got = torch.tensor(res.params["a"] + res.params["b"])
    assert (got - torch.tensor(truth["a"] + truth["b"])).abs().max() < 1e-2


def test_olat_ad_on_cuda():
    try:
        from rendergrad.renderers.olat_tools import olat_ad
    except ImportError:  # the tools may live in the olat package
        from rendergrad.renderers.olat import olat_ad  # type: ignore[no-redef]
    from rendergrad.plugins.objectives import MSE
    OlatRenderer, basis = _olat()
    r = OlatRenderer(basis, device="cuda")
    truth = torch.tensor([[1.4, 0.6, 1.0], [0.3, 1.2, 0.9]], device="cuda")
    target = r.relight(truth.unsqueeze(0))[0].detach()
    res = olat_ad(r, MSE(), target, steps=150, seed=0)
    assert (res.multipliers.to(truth.device) - truth).abs().max() < 1e-2
