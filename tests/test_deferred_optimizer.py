"""The run's torch optimizer is built at its first step, not before (``DeferredOptimizer``)."""

from __future__ import annotations

import pytest
import torch

import rendergrad as rg
from rendergrad.errors import ConfigError
from rendergrad.renderers.toy import ToyRenderer
from rendergrad.setup import DeferredOptimizer, make_optimizer


def _run(estimator: str, **kw) -> rg.Optimization:
    opt = rg.Optimization("toy", "mse", estimator, target_params={"x": 0.6, "y": 0.4}, steps=8, seed=0, **kw)
    opt.run(final_render=False)
    return opt


def test_an_estimator_that_sizes_its_own_steps_never_builds_the_optimizer(tmp_path):
    run = _run("prdpt", checkpoint_dir=tmp_path)
    assert not run.opt.built
    assert run.state_dict()["optimizer"] == {"deferred": True, "lr": run.settings["lr"]}
    assert _run("analytic", lr=0.05, renderer_options={"mode": "soft"}).opt.built   # a gradient step needs it


def test_the_learning_rate_set_before_the_first_step_carries_over():
    u = torch.nn.Parameter(torch.zeros(2))
    deferred = DeferredOptimizer(lambda: make_optimizer("adam", [u], 0.1, None), 0.1)
    deferred.param_groups[0]["lr"] = 0.02                            # the lr decay writes here
    u.grad = torch.ones(2)
    deferred.step()
    assert deferred.built and deferred.param_groups[0]["lr"] == 0.02
    assert torch.allclose(u.detach(), torch.full((2,), -0.02))       # Adam's first step is lr·sign


def test_a_deferred_checkpoint_resumes_into_a_run_that_then_builds_it():
    u = torch.nn.Parameter(torch.zeros(2))
    fresh = DeferredOptimizer(lambda: make_optimizer("sgd", [u], 0.5, None), 0.5)
    fresh.load_state_dict({"deferred": True, "lr": 0.25})
    assert not fresh.built and fresh.param_groups[0]["lr"] == 0.25
    u.grad = torch.ones(2)
    fresh.step()
    assert torch.allclose(u.detach(), torch.full((2,), -0.25))
    again = DeferredOptimizer(lambda: make_optimizer("sgd", [u], 0.5, None), 0.5)
    again.load_state_dict(fresh.state_dict())                        # a built one's state builds it
    assert again.built and again.param_groups[0]["lr"] == 0.25


def test_wrong_optimizer_options_still_fail_before_the_first_render():
    class Counting(ToyRenderer):
        renders = 0

        def render(self, theta):
            Counting.renders += theta.shape[0]
            return super().render(theta)

    with pytest.raises(ConfigError, match="refused its options"):
        rg.optimize(Counting(), "mse", "prdpt", target_params={"x": 0.6, "y": 0.4}, steps=3,
                    optimizer_options={"betas": (2.0, 0.9)})
    assert Counting.renders == 0
