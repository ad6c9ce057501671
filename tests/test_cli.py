"""The command line, run as a user runs it: a real subprocess of the installed entry point."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rendergrad as rg
from rendergrad.config import apply_overrides, load_config, validate
from rendergrad.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXE = shutil.which("rendergrad", path=os.path.dirname(sys.executable)) or "rendergrad"


def cli(*args, check=True, env=None, cwd=None):
    p = subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env={**os.environ, **(env or {})},
                       cwd=cwd, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"rendergrad {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def test_version_and_help():
    assert cli("--version").stdout.strip() == f"rendergrad {rg.__version__}"
    out = cli("run", "--help").stdout
    assert "--resume" in out and "--set" in out and "examples:" in out


def test_plugins_json_lists_builtins_with_distribution_and_version():
    rows = json.loads(cli("plugins", "--json").stdout)
    by = {(r["kind"], r["name"]): r for r in rows}
    for key in [("renderer", "toy"), ("objective", "mse"), ("objective", "l1"), ("estimator", "analytic"),
                ("estimator", "fd"), ("estimator", "spsa")]:
        assert by[key]["distribution"] == "rendergrad" and by[key]["version"] == rg.__version__
        assert by[key]["available"] is True
    assert by[("estimator", "analytic")]["requires_differentiable"] is True
    assert by[("renderer", "toy")]["differentiable"] is False  # mode = "hard" by default
    assert by[("renderer", "toy")]["differentiable_when"] == {"mode": "soft"}
    table = cli("plugins").stdout
    assert "toy" in table and "distribution" in table


def test_output_into_a_closed_pipe_is_not_a_traceback():
    """`rendergrad plugins | head -1`: the reader goes away before the table is written."""
    p = subprocess.Popen([EXE, "plugins"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=600) == 141 and "Traceback" not in err and "BrokenPipeError" not in err, err


def test_run_writes_the_documented_outputs(tmp_path):
    out = tmp_path / "run"
    cli("run", ROOT / "examples/toy/colors.toml", "--out", out, "--set", "optimizer.steps=60")
    result = json.loads((out / "result.json").read_text())
    for key in ("params", "loss", "evaluations", "wall_time_s", "renderer", "estimator", "history"):
        assert key in result
    assert result["evaluations"] == 60 and len(result["history"]) == 60
    assert set(result["history"][0]) >= {"step", "loss", "evaluations", "params"}
    assert result["loss"] < result["history"][0]["loss"] / 10
    for f in ("final.png", "target.png", "convergence.png", "run.log", "config.json"):
        assert (out / f).stat().st_size > 0, f


def test_interrupted_run_resumes_from_its_folder(tmp_path):
    out = tmp_path / "run"
    cfg = ROOT / "examples/toy/plateau.toml"
    # A constant smoothing scale: PRDPT's default schedule anneals over the run's length, so a
    # 10-step run extended to 20 is not the same run as 20 steps from the start.
    const = "estimator.options={schedule='constant'}"
    cli("run", cfg, "--out", out, "--set", "optimizer.steps=20", "--set", "optimizer.checkpoint_every=5",
        "--set", const)
    full = json.loads((out / "result.json").read_text())
    # A second folder runs 10 steps, then is resumed with the full step count.
    out2 = tmp_path / "run2"
    cli("run", cfg, "--out", out2, "--set", "optimizer.steps=10", "--set", "optimizer.checkpoint_every=5",
        "--set", const)
    cli("run", "--resume", out2, "--set", "optimizer.steps=20")
    resumed = json.loads((out2 / "result.json").read_text())
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert resumed["params"] == full["params"] and resumed["evaluations"] == full["evaluations"]


@pytest.mark.parametrize("override, msg", [
    ("optimizer.setps=10", "unknown key 'setps' in [optimizer] (did you mean 'steps'?)"),
    ("estimator.name=prdtp", "unknown estimator 'prdtp'"),
    ("target.params={z=0.5}", "target.params: unknown parameter 'z'; valid names are: x, y"),
    ("params.init={x=2.0}", "init: x = 2 lies outside its bounds [0.12, 0.88]"),
    ("optimizer.lr=-1", "lr must be > 0"),
    ("estimator.options={sigam=0.1}", "unknown option 'sigam'"),
])
def test_bad_input_is_a_clear_error_and_exit_2(tmp_path, override, msg):
    p = cli("run", ROOT / "examples/toy/plateau.toml", "--out", tmp_path / "x", "--set", override, check=False)
    assert p.returncode == 2, p.stderr
    assert msg in p.stderr and "Traceback" not in p.stderr


def test_config_validation_messages(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown section \[optimiser\] \(did you mean 'optimizer'\?\)"):
        validate({"renderer": {"name": "toy"}, "optimiser": {}})
    with pytest.raises(ConfigError, match="steps must be int"):
        validate({"renderer": {"name": "toy"}, "optimizer": {"steps": "many"}})
    with pytest.raises(ConfigError, match=r"\[renderer\] name is required"):
        validate({})
    with pytest.raises(ConfigError, match="not valid TOML"):
        bad = tmp_path / "bad.toml"
        bad.write_text("[renderer\nname=")
        load_config(bad)
    cfg = apply_overrides({"optimizer": {}}, ["optimizer.betas=[0.8, 0.9]", "renderer.name=toy"])
    assert cfg["optimizer"]["betas"] == [0.8, 0.9] and cfg["renderer"]["name"] == "toy"


def test_target_image_file_is_loaded_relative_to_the_config(tmp_path):
    import numpy as np
    np.save(tmp_path / "target.npy", np.full((16, 16, 3), 0.5, np.float32))
    (tmp_path / "run.toml").write_text(
        '[renderer]\nname = "toy"\noptions = { resolution = 16, mode = "soft", shapes = '
        '[{ type = "box", x = 0.5, y = 0.5, width = 1.2, height = 1.2, color = "c" }], '
        'params = [{ name = "c", shape = [3], init = 0.2 }] }\n'
        '[target]\nimage = "target.npy"\n[estimator]\nname = "analytic"\n[optimizer]\nlr = 0.05\nsteps = 80\n')
    cli("run", tmp_path / "run.toml", "--out", tmp_path / "out")
    result = json.loads((tmp_path / "out/result.json").read_text())
    assert result["params"]["c"] == pytest.approx([0.5, 0.5, 0.5], abs=0.02)


def test_demo_runs_every_estimator(tmp_path):
    p = cli("demo", "--out", tmp_path / "demo", "--budget", "40", "--no-progress")
    table = (tmp_path / "demo/results.md").read_text()
    for name in ("analytic", "fd", "spsa", "prdpt", "zerograds"):
        assert f"| {name} |" in table
    assert (tmp_path / "demo/comparison.png").stat().st_size > 1000
    assert "parameter error" in p.stdout
    # The demo's point, first half: on the plateau analytic and finite-difference gradients read
    # zero (to round-off), so those runs stay at the start (parameter error 0.636 there).
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ") and "---" not in line}
    for name in ("analytic", "fd"):
        assert float(rows[name][2]) > 0.62 and rows[name][3] == "no", rows[name]


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["prdpt", "zerograds"])
def test_the_demo_task_is_solved_by_smoothing_estimators(estimator):
    """The demo's point, second half: at the demo's own budget, scene and settings, PRDPT and
    ZeroGrads cross the plateau and land on the target (what `rendergrad demo` shows)."""
    import math

    from rendergrad import demo
    res = rg.optimize("toy", "mse", estimator, renderer_options=demo.SCENE, target_params=demo.TARGET, lr=0.02,
                      steps=400, max_renders=400, seed=0)
    err = math.dist([res.params["x"], res.params["y"]], [demo.TARGET["x"], demo.TARGET["y"]])
    assert err < demo.SOLVED, err


def test_demo_task_stays_stuck_for_gradients_and_is_solved_by_smoothing():
    """The demo's claim: on its plateau, analytic and finite-difference gradients never move the
    disc, while PRDPT and ZeroGrads at their defaults cross the plateau (the demo's seed 0)."""
    import math

    from rendergrad.demo import SCENE, SOLVED, START, TARGET

    def error(name: str, budget: int) -> float:
        res = rg.optimize("toy", "mse", name, renderer_options=SCENE, target_params=TARGET, lr=0.02,
                          steps=budget, max_renders=budget, seed=0, final_render=False)
        return math.dist([res.params["x"], res.params["y"]], [TARGET["x"], TARGET["y"]])

    start = math.dist([START["x"], START["y"]], [TARGET["x"], TARGET["y"]])
    for name in ("analytic", "fd"):
        assert abs(error(name, 100) - start) < 0.01, name
    for name in ("prdpt", "zerograds"):
        assert error(name, 200) < SOLVED, name


def test_snapshots_and_contact_sheet(tmp_path):
    out = tmp_path / "run"
    cli("run", ROOT / "examples/toy/colors.toml", "--out", out, "--set", "optimizer.steps=20",
        "--set", "optimizer.snapshot_every=5")
    shots = sorted(p.name for p in (out / "snapshots").glob("step_*.png"))
    assert shots == ["step_00005.png", "step_00010.png", "step_00015.png", "step_00020.png"]
    assert (out / "snapshots/sheet.png").stat().st_size > 1000
    result = json.loads((out / "result.json").read_text())
    assert result["evaluations"] == 20 and result["extra_renders"] == 3 + 4  # target, start, final, 4 snapshots


def test_unknown_option_shows_the_subcommands_usage(tmp_path):
    p = cli("run", ROOT / "examples/toy/plateau.toml", "--oot", tmp_path, check=False)
    assert p.returncode == 2
    assert "usage: rendergrad run" in p.stderr and "unrecognized arguments: --oot" in p.stderr
