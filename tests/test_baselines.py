"""Derivative-free baselines run through the same evaluation path and count renders alike."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from rendergrad import Param, ParamSpace, Renderer
from rendergrad.errors import ConfigError
from rendergrad.plugins.baselines import minimize

pytest.importorskip("cma")
pytest.importorskip("nevergrad")



class Parabola(Renderer):
    """1-D: a [B,1,1,1] image whose value is (x − 0.3)²."""

    name = "parabola"

    def parameter_space(self):
        return ParamSpace([Param("x", init=0.9)])

    def render(self, theta):
        return ((theta - 0.3) ** 2).reshape(-1, 1, 1, 1)


def test_cma_solves_the_plateau_task_and_counts_renders(plateau_scene, plateau_target):
    seen = []
    res = minimize("toy", "mse", "cma", renderer_options=plateau_scene, target_params=plateau_target,
                   budget=300, seed=0,
                   options={"sigma0": 0.3, "popsize": 6}, on_step=lambda rec, u: seen.append(rec["evaluations"]))
    # whole populations only, counted as they go; pycma may stop early once converged
    assert res.evaluations <= 300 and seen == list(range(6, res.evaluations + 1, 6))
    assert res.stopped in ("max_renders", "converged")
    assert math.dist([res.params["x"], res.params["y"]], [0.7, 0.3]) < 0.01
    assert res.history[-1]["params"].keys() == {"x", "y"}


def test_cma_handles_one_dimension():
    res = minimize(Parabola(), "mse", "cma", target=torch.zeros(1, 1, 1), budget=200, seed=1,
                   options={"sigma0": 0.3})
    assert abs(res.params["x"] - 0.3) < 1e-3


def test_budget_is_spent_in_whole_generations_and_library_options_pass_through():
    # 1-D: pycma carries a padding coordinate, population 6; 20 renders allow 3 generations
    res = minimize(Parabola(), "mse", "cma", target=torch.zeros(1, 1, 1), budget=20, seed=0,
                   options={"sigma0": 0.3, "CMA_diagonal": True})
    assert res.evaluations == 18 and res.steps == 3 and res.stopped == "max_renders"
    assert res.history[-1]["params"].keys() == {"x"}


def test_nevergrad_by_name_and_batches():
    res = minimize(Parabola(), "mse", "DE", target=torch.zeros(1, 1, 1), budget=200, seed=0,
                   options={"batch": 5})
    assert res.evaluations == 200 and res.steps == 40
    assert abs(res.params["x"] - 0.3) < 0.05


def test_unknown_method_suggests_names():
    with pytest.raises(ConfigError, match="NGOpt"):
        minimize(Parabola(), "mse", "NGOp", target=torch.zeros(1, 1, 1), budget=10)


def test_baseline_command(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        '[renderer]\nname = "toy"\noptions = { resolution = 24, mode = "hard", shapes = '
        '[{ type = "disc", x = "x", y = "y", radius = 0.15 }], params = [{ name = "x", init = 0.3 }, '
        '{ name = "y", init = 0.6 }] }\n[target]\nparams = { x = 0.5, y = 0.5 }\n[objective]\nname = "mse"\n')
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "rendergrad.cli", "baseline", str(cfg), "--method", "cma",
                           "--budget", "120", "--options", '{"sigma0": 0.2}', "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["evaluations"] <= 120 and result["estimator"] == "cma"
    assert abs(result["params"]["x"] - 0.5) < 0.05
