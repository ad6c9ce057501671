"""The learnt covariance of PRDPT's kernel (``covariance = "adaptive"``)."""

from __future__ import annotations

import math

import torch

import rendergrad as rg
from rendergrad.plugins.kernel_shape import KernelShape
from rendergrad.plugins.prdpt import PRDPT
from rendergrad.params import Param, ParamSpace


def test_consistent_steps_elongate_the_kernel_along_them_and_random_ones_do_not():
    along = KernelShape(2)
    for _ in range(40):                     # the estimator passes the step's whitened direction
        along.update(along.whiten(torch.tensor([1.0, 1.0], dtype=torch.float64)))
    values, vectors = torch.linalg.eigh(along.C)
    assert float(values[1] / values[0]) > 20                     # long along (1, 1)
    assert abs(abs(float(vectors[0, 1] + vectors[1, 1])) / math.sqrt(2) - 1) < 1e-6
    assert abs(float(torch.linalg.det(along.C)) - 1) < 1e-9      # σ keeps its meaning
    zigzag = KernelShape(2)
    for i in range(40):                                          # back and forth across x
        zigzag.update(torch.tensor([(-1.0) ** i, 0.0]))
    values = torch.linalg.eigvalsh(zigzag.C)
    assert float(values[1] / values[0]) < 3                      # nothing consistent to learn
    capped = KernelShape(2, max_condition=100.0)
    for _ in range(500):
        capped.update(capped.whiten(torch.tensor([0.0, 1.0], dtype=torch.float64)))
    values = torch.linalg.eigvalsh(capped.C)
    assert float(values[1] / values[0]) <= 100.0 * (1 + 1e-9)


def test_factors_and_whitening_are_consistent():
    shape = KernelShape(3)
    for d in ([1.0, 2.0, 0.5], [1.0, 1.5, 0.0], [0.8, 2.0, 0.2]) * 5:
        shape.update(torch.tensor(d))
    assert torch.allclose(shape.A @ shape.A.T, shape.C, atol=1e-10)
    y = torch.randn(4, 3, dtype=torch.float64)
    assert torch.allclose(shape.whiten(shape.apply(y)), y, atol=1e-10)


def rosenbrock2(theta: torch.Tensor) -> torch.Tensor:
    x, y = theta[:, 0], theta[:, 1]
    return ((1 - x) ** 2 + 100 * (y - x * x) ** 2) ** 2


class Rosenbrock(rg.Renderer):
    name = "rosenbrock-test"

    def parameter_space(self) -> ParamSpace:
        return ParamSpace([Param("x", low=-1.5, high=2.0, init=-0.19), Param("y", low=-0.5, high=3.0, init=2.83)])

    def render(self, theta: torch.Tensor) -> torch.Tensor:
        return rosenbrock2(theta).reshape(-1, 1, 1, 1).expand(-1, 1, 1, 1).to(torch.float32)


def _final(covariance: str, seed: int) -> float:
    # elite jumps off: the comparison is of the two kernels' gradient steps alone
    res = rg.optimize(Rosenbrock(), "mse", PRDPT(covariance=covariance, elite=0), target=torch.zeros(1, 1, 1),
                      steps=300, seed=seed, final_render=False)
    theta = torch.tensor([[res.params["x"], res.params["y"]]], dtype=torch.float64)
    return float(rosenbrock2(theta)[0])


def test_the_learnt_shape_follows_a_curved_valley_an_isotropic_kernel_does_not():
    """Rosenbrock² at the defaults (elite jumps off), 600 renders: the valley bends, a round kernel zigzags."""
    shaped = sorted(_final("adaptive", s) for s in range(3))
    round_ = sorted(_final("isotropic", s) for s in range(3))
    assert shaped[1] < 1e-3, shaped                              # the median seed is solved
    assert shaped[1] < round_[1] / 10, (shaped, round_)


def test_resume_with_a_learnt_shape_is_bit_identical(tmp_path):
    kw = dict(target=torch.zeros(1, 1, 1), seed=3, final_render=False)
    full = rg.optimize(Rosenbrock(), "mse", "prdpt", steps=120, **kw)
    rg.optimize(Rosenbrock(), "mse", "prdpt", steps=120, max_renders=150, checkpoint_dir=tmp_path, **kw)
    resumed = rg.optimize(Rosenbrock(), "mse", "prdpt", steps=120, checkpoint_dir=tmp_path, resume=True, **kw)
    assert resumed.params == full.params
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
