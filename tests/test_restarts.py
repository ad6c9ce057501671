"""PRDPT's restarts: a collapsed σ with budget left starts again elsewhere, and the run ends in
the best basin it found."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import rendergrad as rg
from rendergrad import StepContext
from rendergrad.plugins.prdpt import PRDPT
from rendergrad.plugins.restarts import Restarts

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.tasks import get_task  # noqa: E402


def _ctx(step: int, total: int = 100) -> StepContext:
    return StepContext(step=step, total_steps=total, generator=torch.Generator().manual_seed(step))


def test_a_collapsed_sigma_restarts_and_the_end_returns_to_the_best_basin():
    r = Restarts(sigma_fraction=0.03, min_left=0.2, window=3)
    good, bad = torch.tensor([0.2, 0.2], dtype=torch.float64), torch.tensor([0.9, 0.9], dtype=torch.float64)
    assert r.after_step(good, 1.0, 0.1, 0.1, _ctx(0), 2) is None            # σ still wide
    for k in range(1, 5):                                                    # fewer than two windows
        assert r.after_step(good, 1.0, 0.001, 0.1, _ctx(k), 2 * k + 2) is None
    move, sigma = r.after_step(good, 1.0, 0.001, 0.1, _ctx(5), 12)          # collapsed and flat: restart
    assert sigma == 0.1 and r.count == 1 and torch.equal(r.best_u, good)
    assert not torch.allclose(good + move, good) and bool(((good + move) >= 0).all() & ((good + move) <= 1).all())
    k, jump = 6, None
    while jump is None and k < 100:                                          # a worse basin after it
        jump = r.after_step(bad, 5.0, 0.05, 0.1, _ctx(k), 2 * k)
        k += 1
    move, sigma = jump
    assert (k - 1 + 1) / 100 >= 0.8 - 1e-9                                  # once less than 20 % is left
    assert torch.allclose(bad + move, good) and abs(sigma - 0.003) < 1e-12
    assert r.after_step(good, 1.0, 0.003, 0.1, _ctx(k), 2 * k) is None        # back once, then refine


def test_a_narrow_sigma_on_a_falling_loss_is_not_a_restart():
    r = Restarts(window=3)
    for k in range(20):                      # σ tiny, but the loss keeps falling by half a window
        assert r.after_step(torch.tensor([0.5]), 0.8 ** k, 1e-4, 0.1, _ctx(k), 2 * k + 2) is None
    assert r.count == 0


def test_no_return_when_the_current_basin_is_the_best():
    r = Restarts(window=1)
    r.after_step(torch.tensor([0.5]), 2.0, 1e-4, 0.1, _ctx(0), 2)
    assert r.after_step(torch.tensor([0.5]), 2.0, 1e-4, 0.1, _ctx(1), 4) is not None   # restart from a loss of 2
    for k in range(2, 100):
        assert r.after_step(torch.tensor([0.3]), 0.5, 0.05, 0.1, _ctx(k), 2 * k) is None
    assert r.returned


def _toy(seed: int, **options):
    task = get_task("toy")
    res = rg.optimize(task.make_renderer(), "mse", PRDPT(**options), target=task.target_image(), steps=300,
                      max_renders=600, seed=seed, final_render=False)
    return res, task.error(torch.tensor([res.params["x"]], dtype=torch.float64))


def test_restarts_leave_the_toys_local_minimum():
    """Seed 2 settles in the spline's second dip (x ≈ 5.85) without restarts; with them it ends at a
    zero (elite jumps off, so that the restart is what moves it)."""
    _, stuck = _toy(2, restarts=False, elite=0)
    res, error = _toy(2, elite=0)
    assert stuck > 1.0 and error < 0.01, (stuck, error)
    assert any(isinstance(h.get("restart"), int) for h in res.history)


def test_resume_across_a_restart_is_bit_identical(tmp_path):
    task = get_task("toy")
    kw = dict(target=task.target_image(), steps=300, max_renders=600, seed=2, final_render=False)
    full = rg.optimize(task.make_renderer(), "mse", "prdpt", **kw)
    first = next(h["evaluations"] for h in full.history if h.get("restart"))
    opt = rg.Optimization(task.make_renderer(), "mse", "prdpt", checkpoint_dir=tmp_path,
                          **{k: v for k, v in kw.items() if k != "final_render"})
    while opt.evaluator.renders < first + 40:      # past the restart, then stopped and saved
        opt.render_pending()
    opt.save(tmp_path)
    resumed = rg.optimize(task.make_renderer(), "mse", "prdpt", checkpoint_dir=tmp_path, resume=True, **kw)
    assert resumed.params == full.params
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
