"""OLAT-AD run by ``rg.Optimization`` (population mode): same answers as the paper's plain
loop, renders counted by the evaluator, stop rules, exact resume, ask/tell, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("OpenEXR")

import rendergrad as rg
from rendergrad.callbacks import Callback, Snapshots
from rendergrad.errors import ConfigError
from rendergrad.lrschedule import rate
from rendergrad.plugins.objectives import MSE
from rendergrad.plugins.tonemap import tonemap as apply_tonemap
from rendergrad.renderers.olat import OlatRenderer
from rendergrad.renderers.olat_tools import olat_ad, random_resized_crop

from test_olat import make_basis

TRUTH = torch.tensor([[1.4, 0.6, 1.0], [0.3, 1.2, 0.9], [2.0, 1.7, 0.5]])


def _setup():
    r = OlatRenderer(make_basis(lights=3))
    return r, r.relight(TRUTH.unsqueeze(0))[0].detach()


def reference_olat_ad(r, target, *, steps, seed, batch=4, sigma=0.1, lr=0.06, cosine=False, crop=False,
                      tonemap=None):
    """The paper's loop written out plainly: float32 multipliers, Adam, clamp, optional cosine
    decay to 1 % and per-candidate crops of image and target from one generator."""
    post = (lambda x: x) if tonemap is None else (lambda x: apply_tonemap(x, tonemap, 0.0))
    space = r.parameter_space()
    gen = torch.Generator().manual_seed(seed)
    lo, hi = space.low.float(), space.high.float()
    noise = torch.randn(batch, space.size, generator=gen) * sigma
    theta = torch.nn.Parameter(torch.minimum(torch.maximum(space.initial_theta().float() + noise, lo), hi))
    opt = torch.optim.Adam([theta], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.01) if cosine else None
    tgt = post(target.unsqueeze(0))[0]
    mse = MSE()
    for _ in range(steps):
        opt.zero_grad()
        img = r.render(theta)
        if crop:
            x, per = random_resized_crop(img, gen, (0.5, 1.0), tgt)
            loss = torch.cat([mse.loss(post(x[i:i + 1]), per[i]) for i in range(batch)])
        else:
            loss = mse.loss(post(img), tgt)
        loss.sum().backward()
        opt.step()
        if sched is not None:
            sched.step()
        with torch.no_grad():
            theta.copy_(torch.minimum(torch.maximum(theta, lo), hi))
    with torch.no_grad():
        return theta.detach().reshape(batch, -1, 3), mse.loss(post(r.render(theta)), tgt)


@pytest.mark.parametrize("kw", [{}, {"cosine": True}, {"crop": True, "tonemap": "srgb"}],
                         ids=["constant", "cosine", "crop+srgb"])
def test_olat_ad_through_the_object_matches_the_plain_loop(kw):
    r, target = _setup()
    want_m, want_loss = reference_olat_ad(r, target, steps=30, seed=1, **kw)
    got = olat_ad(r, MSE(), target, steps=30, seed=1, lr_decay="cosine" if kw.get("cosine") else "none",
                  augment="crop" if kw.get("crop") else None, tonemap=kw.get("tonemap"))
    # float64 parameters in the engine against float32 in the plain loop: rounding only
    torch.testing.assert_close(got.multipliers, want_m, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.losses.float(), want_loss.float(), rtol=1e-3, atol=1e-9)
    assert got.best == int(torch.argmin(want_loss))
    assert got.result.stopped == "steps" and got.result.evaluations == got.renders == 4 * 30


def test_renders_are_counted_by_the_evaluator_and_stop_rules_apply():
    class Counting(OlatRenderer):
        rows = 0

        def render(self, theta):
            Counting.rows += theta.shape[0]
            return super().render(theta)

    r, target = _setup()
    res = olat_ad(Counting(make_basis(lights=3)), MSE(), target, batch=3, steps=50, max_renders=3 * 7,
                  max_batch=2)
    assert res.result.stopped == "max_renders" and len(res.history) == 7
    assert res.renders == 21 and res.extra_renders == 3 and Counting.rows == 24
    assert [h["evaluations"] for h in res.history] == [3 * (i + 1) for i in range(7)]
    assert all(len(h["losses"]) == 3 and h["loss"] == min(h["losses"]) for h in res.history)
    best = olat_ad(r, MSE(), target, batch=2, steps=200, target_loss=1e-2)
    assert best.result.stopped == "target_loss" and best.history[-1]["loss"] <= 1e-2 < best.history[-2]["loss"]


class _Interrupt(Callback):
    def on_step(self, *, step: int) -> None:
        if step == 4:
            raise RuntimeError("interrupted")


def test_interrupted_run_resumes_bit_identically(tmp_path):
    """Cosine decay and crops (the objective's random state is checkpointed) included."""
    r, target = _setup()
    kw = dict(steps=10, seed=2, lr_decay="cosine", augment="crop", tonemap="srgb")
    whole = olat_ad(r, MSE(), target, **kw)
    with pytest.raises(RuntimeError, match="interrupted"):
        olat_ad(r, MSE(), target, checkpoint_dir=tmp_path / "run", callbacks=[_Interrupt()], **kw)
    resumed = olat_ad(r, MSE(), target, checkpoint_dir=tmp_path / "run", resume=True, **kw)
    assert torch.equal(resumed.multipliers, whole.multipliers)
    assert [h["losses"] for h in resumed.history] == [h["losses"] for h in whole.history]
    assert resumed.renders == whole.renders == 4 * 10
    with pytest.raises(rg.CheckpointError, match="population: checkpoint has 4, this run has 3"):
        olat_ad(r, MSE(), target, checkpoint_dir=tmp_path / "run", resume=True, **{**kw, "batch": 3})


def test_population_ask_tell_with_save_load_equals_run(tmp_path):
    r, target = _setup()
    start = r.parameter_space().initial_theta()
    pop = (start + 0.2 * torch.randn(3, start.numel(), generator=torch.Generator().manual_seed(0))).clamp(0, 8)
    kw = dict(target=target, population=pop, lr=0.05, lr_units="parameter", steps=8, lr_decay=0.01,
              lr_schedule="cosine")
    snaps = Snapshots(tmp_path / "snaps", every=4)   # callbacks see the best candidate's u
    ran = rg.Optimization(r, "mse", "analytic", callbacks=[snaps], **kw).run()
    assert sorted(p.name for p in (tmp_path / "snaps").glob("step_*.png")) == ["step_00004.png", "step_00008.png"]
    opt = rg.Optimization(r, "mse", "analytic", **kw)
    while not opt.done:
        batch = opt.ask()
        assert len(batch) == 3 and batch.differentiable
        opt.tell(batch, r.render(batch.theta))
        opt.save(tmp_path)
        opt = rg.Optimization.load(tmp_path, renderer=r)
    told = opt.result()
    assert torch.equal(told.info["population_theta"], ran.info["population_theta"])
    assert told.params == ran.params and told.evaluations == ran.evaluations == 24
    assert told.info["best_candidate"] == int(torch.argmin(ran.info["population_losses"]))


def test_population_refusals():
    r, target = _setup()
    n = r.parameter_space().size
    with pytest.raises(ConfigError, match="cannot optimize a population"):
        rg.Optimization(r, "mse", "spsa", target=target, population=torch.ones(2, n))
    with pytest.raises(ConfigError, match=rf"give \[B, {n}\]"):
        rg.Optimization(r, "mse", "analytic", target=target, population=torch.ones(2, n + 1))
    with pytest.raises(ConfigError, match="population and meta cannot be combined"):
        from rendergrad.meta import MetaParams
        meta = MetaParams(u0=torch.full((n,), 0.2, dtype=torch.float64),
                          step_sizes=torch.full((n,), 0.01, dtype=torch.float64), fingerprint={})
        rg.Optimization(r, "mse", "analytic", target=target, population=torch.ones(2, n), meta=meta)
    with pytest.raises(ConfigError, match="lr_schedule"):
        rg.Optimization(r, "mse", "analytic", target=target, lr_schedule="step")
    with pytest.raises(ConfigError, match="resume=True needs checkpoint_dir"):
        olat_ad(r, MSE(), target, steps=2, resume=True)


def test_cosine_rate_matches_torch_scheduler():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.06)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 40, eta_min=0.0006)
    for k in range(40):
        assert math.isclose(opt.param_groups[0]["lr"], rate(0.06, 0.01, "cosine", k / 40), rel_tol=1e-9)
        opt.step()
        sched.step()


def test_cli_optimize_checkpoint_and_resume(tmp_path, capsys):
    from rendergrad.cli import main
    make_basis(lights=2).save(tmp_path / "basis")
    common = ["olat", "optimize", str(tmp_path / "basis"), "--target-multipliers", '{"l0": [1.5, 0.5, 2.0]}',
              "--steps", "6", "--batch", "2"]
    assert main(common + ["--out", str(tmp_path / "whole")]) == 0
    assert main(common + ["--out", str(tmp_path / "part"), "--max-renders", "6",
                          "--checkpoint-dir", str(tmp_path / "state")]) == 0
    assert main(common + ["--out", str(tmp_path / "resumed"), "--checkpoint-dir", str(tmp_path / "state"),
                          "--resume"]) == 0
    out = capsys.readouterr().out
    assert "after 3 steps (6 relights + 2 for the record" in out and "after 6 steps (12 relights" in out
    whole, resumed = (json.loads((tmp_path / d / "multipliers.json").read_text()) for d in ("whole", "resumed"))
    assert resumed["multipliers"] == whole["multipliers"] and resumed["renders"] == 12
    assert main(common + ["--out", str(tmp_path / "x"), "--resume"]) == 2
    assert "--resume needs --checkpoint-dir" in capsys.readouterr().err
