"""CMA-ES and nevergrad as estimators of rg.Optimization: one loop, one render count, exact resume."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import rendergrad as rg
from rendergrad import cli
from rendergrad.callbacks import Callback
from rendergrad.config import load_config
from rendergrad.errors import CheckpointError, ConfigError
from rendergrad.registry import registry

pytest.importorskip("cma")
pytest.importorskip("nevergrad")

ROOT = Path(__file__).resolve().parents[1]
TARGET = {"x": 0.7, "y": 0.3}
CMA6 = {"sigma0": 0.3, "popsize": 6}


class Seen(Callback):
    def __init__(self):
        self.records = []

    def on_step(self, *, record, u, **kw):
        self.records.append((record["evaluations"], u.clone()))


def test_cma_is_an_estimator_whose_renders_the_loop_counts(plateau_scene):
    seen = Seen()
    res = rg.optimize("toy", "mse", "cma", renderer_options=plateau_scene, estimator_options=CMA6,
                      target_params=TARGET, steps=100, max_renders=60, seed=0, callbacks=[seen])
    # one population per step, counted by the evaluator as it goes (how far CMA-ES gets on this
    # task: tests/test_baselines.py)
    assert res.stopped == "max_renders" and res.evaluations == 60 and res.steps == 10
    assert [h["evaluations"] for h in res.history] == list(range(6, 61, 6))
    assert [r for r, _ in seen.records] == [h["evaluations"] for h in res.history]
    assert all(h["min_loss"] <= h["loss"] and h["sigma"] > 0 for h in res.history)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    # the loop's parameters after each step are the mean CMA-ES reports
    assert torch.equal(seen.records[-1][1], res.u)
    # driven by ask/tell, every step is one batch: the whole population
    opt = rg.Optimization("toy", "mse", "cma", renderer_options=plateau_scene, estimator_options=CMA6,
                          target_params=TARGET, steps=3)
    assert len(opt.ask()) == 6


def test_a_run_ends_before_a_generation_that_would_overrun_its_budget(plateau_scene):
    """64 renders is ten generations of six and four left: the eleventh is never started."""
    res = rg.optimize("toy", "mse", "cma", renderer_options=plateau_scene, estimator_options=CMA6,
                      target_params=TARGET, steps=100, max_renders=64, seed=0, final_render=False)
    assert res.stopped == "max_renders" and res.evaluations == 60 and res.steps == 10


def test_a_population_run_is_refused_by_name():
    """CMA-ES takes one parameter vector per step: starting several side by side says so."""
    with pytest.raises(ConfigError, match="cannot optimize a population"):
        rg.optimize("toy", "mse", "cma", target_params=TARGET, population=[[0.2, 0.2], [0.8, 0.8]], steps=2)


@pytest.mark.parametrize("name, options", [
    ("cma", {"sigma0": 0.3, "popsize": 4}),
    ("nevergrad", {"optimizer": "NGOpt", "batch": 4, "budget": 48}),
])
def test_resume_from_a_checkpoint_is_bit_identical(name, options, plateau_scene, tmp_path):
    kw = dict(renderer_options=plateau_scene, estimator_options=options, target_params=TARGET, steps=12, seed=5)
    full = rg.optimize("toy", "mse", name, **kw)
    rg.optimize("toy", "mse", name, max_renders=20, checkpoint_dir=tmp_path, **kw)
    resumed = rg.optimize("toy", "mse", name, checkpoint_dir=tmp_path, resume=True, **kw)
    assert torch.equal(full.u, resumed.u) and full.evaluations == resumed.evaluations == 48
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]
    assert full.best_loss == resumed.best_loss


def test_cma_stops_itself_when_converged_and_stays_stopped(plateau_scene, tmp_path):
    kw = dict(renderer_options=plateau_scene, target_params=TARGET, steps=200, seed=1,
              estimator_options={**CMA6, "options": {"tolx": 1e-3}})
    res = rg.optimize("toy", "mse", "cma", checkpoint_dir=tmp_path, **kw)
    assert res.stopped == "converged" and 0 < res.steps < 200
    again = rg.optimize("toy", "mse", "cma", checkpoint_dir=tmp_path, resume=True, **kw)
    assert again.stopped == "converged" and again.steps == res.steps and torch.equal(again.u, res.u)
    # ask/tell: the last tell ends the run
    opt = rg.Optimization("toy", "mse", "cma", **kw)
    tells = 0
    while not opt.done:
        batch = opt.ask()
        opt.tell(batch, opt.renderer.render(batch.theta))
        tells += 1
    assert tells == res.steps and torch.equal(opt.result().u, res.u)


def test_other_users_of_numpys_generator_change_nothing(plateau_scene):
    class Draws(Callback):
        def on_step(self, **kw):
            np.random.rand(7)

    kw = dict(renderer_options=plateau_scene, estimator_options=CMA6, target_params=TARGET, steps=6, seed=3)
    quiet = rg.optimize("toy", "mse", "cma", **kw)
    noisy = rg.optimize("toy", "mse", "cma", callbacks=[Draws()], **kw)
    assert torch.equal(quiet.u, noisy.u) and quiet.history == noisy.history
    # and a run leaves numpy's global generator where it found it
    np.random.seed(123)
    rg.optimize("toy", "mse", "nevergrad", **dict(kw, estimator_options={"batch": 2}))
    assert np.array_equal(np.random.get_state()[1], np.random.RandomState(123).get_state()[1])


def test_ngopt_choices_that_run_in_a_thread_repeat_and_resume_exactly(tmp_path):
    """Eight parameters and a 600-render plan: NGOpt picks a meta-model over pycma's ``fmin``,
    which nevergrad runs in a thread (seeded from the clock by default, computing its next
    candidate while the caller goes on). The runs must still be functions of the seed."""
    from benchmarks.tasks import TWO_SHAPES_SCENE, TWO_SHAPES_TARGET
    kw = dict(renderer_options=TWO_SHAPES_SCENE, estimator_options={"budget": 600}, target_params=TWO_SHAPES_TARGET,
              steps=40, seed=2)
    np.random.seed(321)
    first = rg.optimize("toy", "mse", "ngopt", **kw)
    assert np.array_equal(np.random.get_state()[1], np.random.RandomState(321).get_state()[1])
    again = rg.optimize("toy", "mse", "ngopt", **kw)
    assert [h["loss"] for h in first.history] == [h["loss"] for h in again.history]
    assert len({h["loss"] for h in first.history}) > 10 and torch.equal(first.u, again.u)
    rg.optimize("toy", "mse", "ngopt", max_renders=20, checkpoint_dir=tmp_path, **kw)
    resumed = rg.optimize("toy", "mse", "ngopt", checkpoint_dir=tmp_path, resume=True, **kw)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in first.history]


def test_a_script_that_keeps_its_ngopt_run_still_exits():
    """nevergrad's threads wait for their next loss for ever and are not daemons: a script holding
    its run when it ends used to hang in Python's exit, which waits for every such thread."""
    import subprocess
    import sys
    script = (
        "import rendergrad as rg\n"
        "from benchmarks.tasks import TWO_SHAPES_SCENE, TWO_SHAPES_TARGET\n"
        "opt = rg.Optimization('toy', 'mse', 'ngopt', renderer_options=TWO_SHAPES_SCENE, steps=10,\n"
        "                      target_params=TWO_SHAPES_TARGET, estimator_options={'budget': 600})\n"
        "opt.run(final_render=False)\n"
        "import rendergrad.plugins.dfo as dfo\n"
        "print('threads', len(dfo.recast_threads(opt.estimator._lib)), flush=True)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "threads 1" in done.stdout          # the thread was there, and the script still ended


def test_a_saved_history_that_does_not_replay_is_refused(plateau_scene, tmp_path):
    rg.optimize("toy", "mse", "cma", renderer_options=plateau_scene, estimator_options=CMA6,
                target_params=TARGET, steps=3, checkpoint_dir=tmp_path)
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    assert state["estimator"]["losses"].shape == (3, 6)
    state["estimator"]["check"][1] += 1.0
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="different population at generation 1"):
        rg.Optimization.load(tmp_path)


def test_bad_options_say_what_to_fix():
    reg = registry()
    with pytest.raises(ConfigError, match="did you mean tolx"):
        reg.create("estimator", "cma", {"options": {"tolxx": 1e-6}})
    with pytest.raises(ConfigError, match="set by rendergrad"):
        reg.create("estimator", "cma", {"options": {"seed": 4}})
    with pytest.raises(ConfigError, match="popsize"):
        reg.create("estimator", "cma", {"popsize": 1})
    with pytest.raises(ConfigError, match="did you mean NGOpt"):
        reg.create("estimator", "nevergrad", {"optimizer": "NGOp"})
    with pytest.raises(ConfigError, match="refused options"):
        reg.create("estimator", "nevergrad", {"optimizer": "DE", "options": {"popsize": 4}})
    with pytest.raises(ConfigError, match="unknown option 'optimizer'"):
        reg.create("estimator", "ngopt", {"optimizer": "DE"})
    assert reg.create("estimator", "ngopt", {"batch": 2}).optimizer == "NGOpt"


def test_a_run_file_with_cma_runs_and_resumes_through_the_command_line(tmp_path, capsys):
    cfg = ROOT / "examples/toy/plateau.toml"
    sets = ["estimator.name=cma", "estimator.options={sigma0=0.3, popsize=6}", "renderer.options.resolution=32",
            "optimizer.checkpoint_every=2"]
    args = [a for s in sets for a in ("--set", s)]
    out = tmp_path / "run"
    assert cli.main(["run", str(cfg), "--out", str(out), *args, "--set", "optimizer.steps=4"]) == 0
    assert cli.main(["run", "--resume", str(out), "--set", "optimizer.steps=8"]) == 0
    resumed = json.loads((out / "result.json").read_text())
    c = load_config(cfg, sets)
    ref = rg.optimize("toy", "mse", "cma", renderer_options=c["renderer"]["options"], target_params=TARGET,
                      estimator_options=CMA6, steps=8, seed=c["optimizer"]["seed"])
    assert resumed["estimator"] == "cma" and resumed["evaluations"] == ref.evaluations == 48
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in ref.history]
    assert resumed["params"] == ref.params and resumed["stopped"] == "steps"
