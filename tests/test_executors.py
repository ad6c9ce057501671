"""Executors with real worker processes: same results as in-process, whatever fails.

Every run here uses ``noisy_disc`` (tests/executor_plugins.py): a toy disc plus per-image noise
seeded from the image's place in the run, with options that make it crash, hang or raise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import rendergrad as rg
from rendergrad.callbacks import Callback
from rendergrad.errors import ConfigError, IncompatiblePluginsError, RendererFailure
from rendergrad.executors.base import RendererRecipe, RenderTask
from rendergrad.executors.processes import ProcessExecutor

sys.path.insert(0, str(Path(__file__).parent))
import executor_plugins as ep  # noqa: E402

REG = rg.discover(extra_plugins=[ep])
TARGET = {"x": 0.7, "y": 0.3}


def run(executor="local", options=None, steps=3, callbacks=(), **renderer_options):
    return rg.optimize("noisy_disc", "mse", "prdpt", renderer_options=renderer_options,
                       estimator_options={"samples": 6}, target_params=TARGET, steps=steps, seed=5,
                       registry=REG, executor=executor, executor_options=options, callbacks=callbacks)


@pytest.fixture(scope="module")
def reference():
    return run()


def same(a, b):
    assert torch.equal(a.u, b.u)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert a.evaluations == b.evaluations and a.extra_renders == b.extra_renders


def test_processes_give_the_same_run_as_local_with_any_worker_count(reference, tmp_path):
    assert reference.executor["name"] == "local"
    assert reference.executor["renders_per_worker"] == [reference.evaluations + reference.extra_renders]
    for k in (1, 3):
        r = run("processes", {"workers": k}, pid_dir=str(tmp_path))
        same(reference, r)
        ex = r.executor
        assert ex["name"] == "processes" and ex["workers"] == k and ex["restarts"] == 0
        assert sum(ex["renders_per_worker"]) == r.evaluations + r.extra_renders
        if k == 3:
            assert all(n > 0 for n in ex["renders_per_worker"])
        assert ep.wait_gone(str(tmp_path)) == []


def test_workers_that_exit_every_few_renders_are_restarted_and_nothing_changes(reference, tmp_path):
    """Run file → result.json and run.log: restarts recorded with reasons; results identical."""
    from rendergrad.runner import run_config
    cfg = {"renderer": {"name": "noisy_disc", "options": {"exit_every": 4, "pid_dir": str(tmp_path / "pids")}},
           "target": {"params": TARGET}, "estimator": {"name": "prdpt", "options": {"samples": 6}},
           "optimizer": {"steps": 3, "seed": 5},
           "executor": {"name": "processes", "options": {"workers": 2, "max_restarts": 30}}}
    (tmp_path / "pids").mkdir()
    r = run_config(cfg, tmp_path / "out", progress=False, registry=REG)
    # The same run file rendered in-process (a run folder also renders its start image).
    local = {**cfg, "renderer": {"name": "noisy_disc", "options": {}}, "executor": {"name": "local"}}
    same(run_config(local, tmp_path / "local", progress=False, registry=REG), r)
    ex = json.loads((tmp_path / "out" / "result.json").read_text())["executor"]
    assert ex["restarts"] >= 2 and ex["retried_renders"] >= 2
    assert sum(ex["renders_per_worker"]) == r.evaluations + r.extra_renders  # retries never charged
    log = (tmp_path / "out" / "run.log").read_text()
    assert log.count("restarted") == ex["restarts"] and "exited with code 3" in log
    assert ep.wait_gone(str(tmp_path / "pids")) == []


def test_a_worker_killed_mid_render_is_replaced(reference, tmp_path):
    killed = []

    class KillOne(Callback):
        def on_step(self, *, record, evaluator, **kw):
            if record["step"] == 1:  # during the next step's renders, not between steps
                pid = evaluator.executor.worker_pids()[0]
                threading.Timer(0.08, lambda: (os.kill(pid, signal.SIGKILL), killed.append(pid))).start()

    r = run("processes", {"workers": 2}, callbacks=[KillOne()], sleep=0.04, pid_dir=str(tmp_path))
    same(reference, r)
    assert killed and r.executor["restarts"] == 1
    assert "SIGKILL" in r.executor["events"][0]["reason"]
    assert ep.wait_gone(str(tmp_path)) == []


def test_load_continues_on_the_saved_executor(reference, tmp_path):
    """A saved run comes back on its own executor (real worker processes) and ends as the local run."""
    kw = dict(estimator_options={"samples": 6}, target_params=TARGET, steps=3, seed=5, registry=REG)
    with rg.Optimization("noisy_disc", "mse", "prdpt", executor="processes", executor_options={"workers": 2},
                         **kw) as opt:
        opt.render_pending()
        opt.render_pending()
        opt.save(tmp_path)
    with rg.Optimization.load(tmp_path, registry=REG) as back:
        assert back.executor.name == "processes" and back.executor.workers == 2
        assert os.getpid() not in back.executor.worker_pids()
        res = back.run()
    same(reference, res)
    assert res.executor["name"] == "processes" and sum(res.executor["renders_per_worker"]) > 0
    with rg.Optimization.load(tmp_path, registry=REG, executor="local") as here:  # the caller may choose
        assert here.executor.name == "local"
        same(reference, here.run())


@pytest.mark.parametrize("told", [1, 3])
def test_a_save_between_two_calls_of_a_step_resumes_with_the_next_images_noise(tmp_path, told):
    """A step that asks twice (PRDPT's samples, then its centre) and is saved in between: the
    second call's images must get the noise of their own place in the run after the resume, not
    that of the images already told in the step."""
    kw = dict(estimator_options={"samples": 2, "center": True, "elite": 0}, target_params=TARGET, steps=3,
              seed=5, registry=REG)
    reference = rg.optimize("noisy_disc", "mse", "prdpt", **kw)
    with rg.Optimization("noisy_disc", "mse", "prdpt", **kw) as opt:
        for _ in range(told):               # 1: step 0's samples told, its centre pending; 3: step 1's
            opt.render_pending()
        opt.save(tmp_path)
    with rg.Optimization.load(tmp_path, registry=REG) as back:
        same(reference, back.run())


def test_a_constructor_that_fails_in_the_workers_is_one_clear_error(tmp_path):
    ex = ProcessExecutor(2)
    recipe = RendererRecipe("noisy_disc", ep.NoisyDisc, {"fail_init": True})
    with pytest.raises(RendererFailure, match=r"could not be built .* worker \d: ValueError: noisy_disc: fail_init"):
        ex.start(None, recipe)
    assert ex.worker_pids() == []
    with pytest.raises(ConfigError, match="unknown option 'sped'"):
        run("processes", {"workers": 1}, sped=1)
    with pytest.raises(ConfigError, match="workers must be an integer > 0"):
        run("processes", {"workers": 0})
    with pytest.raises(IncompatiblePluginsError, match="executor 'processes'"):
        rg.optimize("toy", "mse", "analytic", renderer_options={"mode": "soft"}, target_params=TARGET,
                    steps=1, executor="processes")


def test_a_hanging_render_times_out_and_goes_to_another_worker(reference, tmp_path):
    (tmp_path / "marks").mkdir()
    r = run("processes", {"workers": 2, "timeout": 1.0}, hang_at=9, hang_once_dir=str(tmp_path / "marks"),
            pid_dir=str(tmp_path))
    same(reference, r)
    assert r.executor["restarts"] == 1 and "timeout" in r.executor["events"][0]["reason"]
    assert ep.wait_gone(str(tmp_path)) == []


def test_a_renderer_exception_is_not_retried_and_names_the_render(tmp_path):
    with pytest.raises(RendererFailure, match=r"worker \d on .* render index .*render 7 fails on purpose"):
        run("processes", {"workers": 2}, raise_at=7, pid_dir=str(tmp_path))
    assert ep.wait_gone(str(tmp_path)) == []


def test_executor_kept_by_the_caller_serves_several_batches_in_order(tmp_path):
    with ProcessExecutor(2, chunk_size=1) as ex:
        renderer = ep.NoisyDisc()
        ex.start(renderer, RendererRecipe("noisy_disc", ep.NoisyDisc, {}))
        theta = torch.rand(5, 2) * 0.5 + 0.2
        got = ex.render([RenderTask(theta[:2], 10, 3), RenderTask(theta[2:], 12, 3)])
        renderer.seek(10, 3)
        want = renderer.render(theta).numpy()
        assert (got[0] == want[:2]).all() and (got[1] == want[2:]).all()
        pids = ex.worker_pids()
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{p}").exists() for p in pids)


CTRL_C_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import rendergrad as rg, executor_plugins as ep
if __name__ == "__main__":
    reg = rg.discover(extra_plugins=[ep])
    rg.optimize("noisy_disc", "mse", "prdpt", renderer_options={{"sleep": 0.2, "pid_dir": {pids!r}}},
                estimator_options={{"samples": 4}}, target_params={{"x": 0.7, "y": 0.3}}, steps=1000,
                registry=reg, executor={executor!r}, executor_options={options!r})
"""


def interrupt_run(tmp_path, executor, options, workers, env=None, wait=120.0):
    """Start a run in a child process, Ctrl-C it while it renders; return (returncode, stderr)."""
    pids = tmp_path / "pids"
    pids.mkdir()
    script = tmp_path / "run.py"
    script.write_text(CTRL_C_SCRIPT.format(tests=str(Path(__file__).parent), pids=str(pids),
                                           executor=executor, options=options))
    proc = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + wait
        while len(list(pids.iterdir())) < workers + 1 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.5)  # inside a step's renders
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        stopped_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err, stopped_in, pids


def test_ctrl_c_stops_every_worker(tmp_path):
    rc, err, stopped_in, pids = interrupt_run(tmp_path, "processes", {"workers": 2}, workers=2)
    assert rc != 0 and "KeyboardInterrupt" in err
    assert stopped_in < 20
    assert ep.wait_gone(str(pids)) == []


def test_mitsuba_forward_renders_match_across_processes():
    """Real Mitsuba (llvm) seed modes: each image's seed follows its place in the run, not the worker."""
    pytest.importorskip("mitsuba")
    from rendergrad.renderers.mitsuba import MitsubaRenderer
    ok, why = MitsubaRenderer.available()
    if not ok:
        pytest.skip(why)
    scene = {"type": "scene",
             "sensor": {"type": "perspective", "fov": 45,
                        "to_world": {"look_at": {"origin": [0, 0, 3], "target": [0, 0, 0]}},
                        "film": {"type": "hdrfilm", "width": 8, "height": 8}},
             "wall": {"type": "rectangle", "bsdf": {"type": "diffuse",
                                                    "reflectance": {"type": "rgb", "value": [0.5, 0.5, 0.5]}}},
             "lamp": {"type": "point", "position": [0.3, 0.2, 2.5], "intensity": {"type": "rgb", "value": [8.0] * 3}}}
    theta = torch.linspace(0.2, 0.8, 5).reshape(5, 1).expand(5, 3).contiguous()
    opts = {"scene": scene, "params": [{"name": "albedo", "key": "wall.bsdf.reflectance.value"}],
            "spp": 2, "seed": 7}
    local = MitsubaRenderer(**opts)
    with ProcessExecutor(2, chunk_size=2) as ex:
        ex.start(local, RendererRecipe("mitsuba", MitsubaRenderer, opts))
        got = ex.render([RenderTask(theta, 20, 4)])[0]
    local.seek(20, 4)
    want = local.render(theta).numpy()
    # Equal up to Mitsuba's own float rounding (its threads add samples in varying order).
    assert abs(got - want).max() < 1e-5
    local.seek(21, 4)    # another index: other noise, far above the rounding
    assert abs(local.render(theta[:1]).numpy()[0] - want[0]).max() > 1e-3
    common = MitsubaRenderer(**opts, seed_mode="common")
    common.seek(20, 4)
    a = common.render(theta[:2]).numpy()
    common.seek(99, 4)   # same batch: the same noise, whatever the index
    assert abs(common.render(theta[1:2]).numpy()[0] - a[1]).max() < 1e-5


def test_a_worker_past_max_restarts_is_given_up_and_the_rest_carry_on():
    with ProcessExecutor(2, max_restarts=0) as ex:
        renderer = ep.NoisyDisc()
        ex.start(renderer, RendererRecipe("noisy_disc", ep.NoisyDisc, {}))
        os.kill(ex.worker_pids()[0], signal.SIGKILL)
        theta = torch.rand(6, 2) * 0.5 + 0.2
        got = ex.render([RenderTask(theta, 0, 0)])[0]
        renderer.seek(0, 0)
        assert (got == renderer.render(theta).numpy()).all()
        assert ex.summary()["given_up"] == [0] and ex.restarts == 0
        assert "max_restarts=0 reached" in ex.events[0]["reason"]
        got = ex.render([RenderTask(theta, 6, 1)])[0]   # later batches: the live worker only
        assert got.shape[0] == 6 and ex.renders_per_worker[0] == 0
