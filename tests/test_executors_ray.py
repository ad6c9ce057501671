"""The ``ray`` executor on a real local Ray cluster, kept off the network.

Ray listens on every interface and registers the machine's address even when told 127.0.0.1,
so these tests never run on the host network: the one outer test re-runs this file under
``unshare -n`` (a private network namespace with only loopback), where the inner tests share
one cluster for the session. Without ``unshare`` (not root) the outer test is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
IN_NETNS = os.environ.get("RENDERGRAD_TEST_NETNS") == "1"
inner = pytest.mark.skipif(not IN_NETNS, reason="runs inside a private network namespace, started by "
                           "test_ray_executor_in_a_private_network_namespace")


def _unshare_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    try:
        subprocess.run(["unshare", "-n", "true"], check=True, capture_output=True, timeout=20)
        return True
    except (subprocess.SubprocessError, OSError):
        return False


@pytest.mark.skipif(IN_NETNS, reason="the outer run")
def test_ray_executor_in_a_private_network_namespace():
    pytest.importorskip("ray", reason="needs the [ray] extra")
    if not _unshare_works():
        pytest.skip("unshare -n is unavailable (needs root): Ray tests are not run on the host network")
    env = {**os.environ, "RENDERGRAD_TEST_NETNS": "1", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join([str(HERE)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, "-m", "pytest",
           "-q", "-x", "-p", "no:cacheprovider", "--durations=0", "-W", "ignore::DeprecationWarning", str(Path(__file__))]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=HERE.parent)
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-3000:]
    summary = p.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 4 and "failed" not in summary and "error" not in summary, summary


if IN_NETNS:
    import rendergrad as rg
    from rendergrad.callbacks import Callback
    from rendergrad.errors import RendererFailure
    from rendergrad.executors.base import RendererRecipe
    from rendergrad.executors.ray_actors import RayExecutor

    sys.path.insert(0, str(HERE))
    import executor_plugins as ep
    from test_executors import CTRL_C_SCRIPT, TARGET, interrupt_run, run, same  # noqa: F401

    @pytest.fixture(scope="session", autouse=True)
    def cluster():
        """One loopback cluster for every test here; executors join it and leave it running."""
        import ray
        ray.init(num_cpus=4, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 configure_logging=False)
        assert all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes())
        yield
        ray.shutdown()

    @pytest.fixture(scope="module")
    def reference():
        return run()


@inner
def test_same_run_as_local_with_any_actor_count_and_crashing_actors(reference, tmp_path):
    # Every actor process exits on its 7th render: Ray restarts it, the pool retries elsewhere.
    r = run("ray", {"workers": 3, "max_restarts": 10}, exit_every=7, pid_dir=str(tmp_path))
    same(reference, r)
    ex = r.executor
    assert ex["workers"] == 3 and all(n > 0 for n in ex["renders_per_worker"])
    assert ex["restarts"] >= 1 and ex["retried_renders"] >= 1
    assert sum(ex["renders_per_worker"]) == r.evaluations + r.extra_renders
    assert ep.wait_gone(str(tmp_path)) == []


@inner
def test_an_actor_killed_mid_render_is_restarted(reference, tmp_path):
    killed = []

    class KillOne(Callback):
        def on_step(self, *, record, evaluator, **kw):
            if record["step"] == 1:
                pid = evaluator.executor.worker_pids()[0]
                threading.Timer(0.08, lambda: (os.kill(pid, signal.SIGKILL), killed.append(pid))).start()

    r = run("ray", {"workers": 2}, callbacks=[KillOne()], sleep=0.04, pid_dir=str(tmp_path))
    same(reference, r)
    assert killed and r.executor["restarts"] == 1, r.executor
    assert ep.wait_gone(str(tmp_path)) == []


@inner
def test_a_hanging_render_times_out_and_a_failing_constructor_is_clear(reference, tmp_path):
    (tmp_path / "marks").mkdir()
    r = run("ray", {"workers": 2, "timeout": 1.0}, hang_at=9, hang_once_dir=str(tmp_path / "marks"),
            pid_dir=str(tmp_path))
    same(reference, r)
    assert r.executor["restarts"] == 1 and "timeout" in r.executor["events"][0]["reason"]
    ex = RayExecutor(1)
    with pytest.raises(RendererFailure, match=r"could not be built .*ValueError: noisy_disc: fail_init"):
        ex.start(None, RendererRecipe("noisy_disc", ep.NoisyDisc, {"fail_init": True}))
    assert ep.wait_gone(str(tmp_path)) == []


@inner
def test_ctrl_c_stops_the_private_cluster_and_its_actors(tmp_path):
    """A run that starts its own cluster: Ctrl-C leaves no actor, raylet or GCS process behind."""
    temp = Path("/tmp") / f"rgray{os.getpid()}"
    rc, err, stopped_in, pids = interrupt_run(
        tmp_path, "ray", {"workers": 2, "init_options": {"_temp_dir": str(temp)}}, workers=2, wait=240)
    assert rc != 0 and "KeyboardInterrupt" in err, err[-2000:]
    assert ep.wait_gone(str(pids), 20) == []
    deadline = time.monotonic() + 20
    while True:
        left = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if str(temp).encode() in (proc / "cmdline").read_bytes():
                        left.append(proc.name)
                except OSError:
                    pass
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert left == [], "Ray processes outlived the run"
    shutil.rmtree(temp, ignore_errors=True)
