"""The bridge client against real server processes: fan-out, order, crashes, hangs, cleanup.

The servers here are examples/bridge/minimal_server.py (plain pyzmq, written from the protocol
document, no rendergrad inside) and ``rendergrad bridge serve toy`` (the Server base class).
Every process a test starts runs in its own process group and is killed when the test ends.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

zmq = pytest.importorskip("zmq")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import rendergrad as rg  # noqa: E402
from rendergrad.callbacks import Callback  # noqa: E402
from rendergrad.errors import ConfigError, RendererFailure  # noqa: E402
from rendergrad.renderers.bridge import BridgeRenderer, RendererServer  # noqa: E402
from rendergrad.renderers.bridge import protocol as P  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = ROOT / "examples" / "bridge" / "minimal_server.py"
minimal = runpy.run_path(str(MINIMAL))


def minimal_command(*extra: str) -> list[str]:
    return [sys.executable, str(MINIMAL), "{endpoint}", *extra]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_dead(pids, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture()
def spawn(tmp_path):
    """Start a server process by hand (own process group); killed at the end of the test."""
    procs = []

    def start(argv, ready_file=None, timeout=60.0):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True, text=True)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


def start_minimal(spawn, *extra):
    p = spawn([sys.executable, str(MINIMAL), "tcp://127.0.0.1:0", *extra])
    line = p.stdout.readline()  # "listening on tcp://127.0.0.1:PORT"
    assert line.startswith("listening on"), line
    return p, line.split()[-1]


def test_the_minimal_server_uses_no_rendergrad_code():
    imports = [line for line in MINIMAL.read_text().splitlines() if line.startswith(("import ", "from "))]
    assert imports and not any("rendergrad" in line for line in imports), imports


# -- launched workers --------------------------------------------------------------------------
def test_fan_out_keeps_order_and_matches_the_server_exactly():
    r = BridgeRenderer(command=minimal_command("--size", "16"), workers=2, timeout=20)
    try:
        assert r.space.names == ["x", "y", "power"] and r.image_shape == (16, 16, 3)
        assert r.light_parameters() == ["power"]
        rng = np.random.default_rng(0)
        params = rng.uniform([0, 0, 0], [1, 1, 4], size=(7, 3))
        import torch
        images = r.render(torch.from_numpy(params)).numpy()
        assert images.dtype == np.float32 and images.shape == (7, 16, 16, 3)
        for i, (x, y, power) in enumerate(params):
            np.testing.assert_array_equal(images[i], minimal["render"](x, y, power, 16))
        assert r.stats["requests"] >= 2 and r.stats["images"] == 7 and r.stats["lost"] == 0
        pids = r.worker_pids()
        assert len(set(pids)) == 2 and all(alive(p) for p in pids)
        tmp = r._owned.tmpdir
    finally:
        r.close()
    assert wait_dead(pids, 5.0), "workers outlived close()"
    assert not os.path.exists(tmp)


def test_worker_killed_mid_run_loses_no_step_and_counts_honestly():
    r = BridgeRenderer(command=minimal_command("--size", "16", "--delay", "0.03"), workers=2, timeout=20)
    try:
        victim = r.worker_pids()[0]

        class KillDuringNextStep(Callback):
            """At step 4, kill a worker 10 ms later: inside the next step's 30 ms renders on a quiet
            machine, between renders on a loaded one; both must lose nothing. Tied to the run's
            progress, not to wall-clock time, so a fast machine cannot finish before the kill."""

            def on_step(self, *, record, **kw):
                if record["step"] == 4:
                    threading.Timer(0.01, os.killpg, (victim, signal.SIGKILL)).start()

        res = rg.optimize(r, "mse", "spsa", target_params={"x": 0.6, "y": 0.4, "power": 2.0},
                          steps=16, lr=0.05, seed=1, callbacks=[KillDuringNextStep()])
        assert res.steps == 16 and [h["step"] for h in res.history] == list(range(16))
        assert res.evaluations == 16 * 2          # spsa: one pair per step; nothing double-counted
        assert r.stats["restarts"] >= 1 and r.stats["lost"] >= 1 and r.stats["retries"] >= 1
        # every image the optimizer was charged for was delivered exactly once
        assert r.stats["images"] == res.evaluations + res.extra_renders
        assert not alive(victim)
        assert all(alive(p) for p in r.worker_pids())
        pids = r.worker_pids()
    finally:
        r.close()
    assert wait_dead(pids, 5.0)


def test_a_crashing_server_is_reported_with_its_log():
    cmd = [sys.executable, "-c", "import sys; print('cannot open scene.blend', file=sys.stderr); sys.exit(3)",
           "{endpoint}"]
    with pytest.raises(RendererFailure, match="cannot open scene.blend"):
        BridgeRenderer(command=cmd, startup_timeout=20)


def test_client_killed_takes_its_workers_down(tmp_path):
    script = tmp_path / "client.py"
    script.write_text(
        "import os, signal, sys\n"
        "from rendergrad.renderers.bridge import BridgeRenderer\n"
        f"r = BridgeRenderer(command={minimal_command()!r}, workers=2)\n"
        "print(' '.join(str(p) for p in r.worker_pids()), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2, out.stderr
    assert wait_dead(pids, 10.0), "workers survived their client being killed"


# -- attached servers ----------------------------------------------------------------------------
def test_hung_server_times_out_and_its_work_moves_to_another(spawn):
    _, hung = start_minimal(spawn, "--delay", "30")
    _, fine = start_minimal(spawn)
    import torch
    r = BridgeRenderer(endpoints=[hung, fine], timeout=1.0)
    try:
        t0 = time.monotonic()
        images = r.render(torch.tensor([[0.2, 0.3, 1.0], [0.4, 0.5, 2.0], [0.6, 0.7, 3.0]], dtype=torch.float64))
        assert time.monotonic() - t0 < 10
        np.testing.assert_array_equal(images[2].numpy(), minimal["render"](0.6, 0.7, 3.0, 32))
        assert r.stats["timeouts"] >= 1
    finally:
        r.close()
    _, hung2 = start_minimal(spawn, "--delay", "30")
    r = BridgeRenderer(endpoints=[hung2], timeout=1.0)  # hello answers: only rendering hangs
    try:
        with pytest.raises(RendererFailure, match="did not answer"):
            r.render(torch.tensor([[0.2, 0.3, 1.0]]))
    finally:
        r.close()


def test_endpoints_must_be_local_unless_allowed():
    with pytest.raises(ConfigError, match="not on this machine"):
        BridgeRenderer(endpoints="tcp://192.0.2.1:5555")
    with pytest.raises(ConfigError, match="not valid"):
        BridgeRenderer(endpoints="http://127.0.0.1:5555")
    from rendergrad.renderers.toy import ToyRenderer
    with pytest.raises(ConfigError, match="not on this machine"):
        RendererServer(ToyRenderer(resolution=8)).serve("tcp://0.0.0.0:5599")


def test_endpoint_in_use_is_a_clear_error():
    from rendergrad.renderers.toy import ToyRenderer
    ctx = zmq.Context()
    taken = ctx.socket(zmq.REP)
    taken.bind("tcp://127.0.0.1:*")
    try:
        endpoint = taken.getsockopt_string(zmq.LAST_ENDPOINT)
        with pytest.raises(ConfigError, match=r"cannot listen on tcp://127\.0\.0\.1:\d+: Address already in use"):
            RendererServer(ToyRenderer(resolution=8)).serve(endpoint)
    finally:
        taken.close(0)
        ctx.term()


# -- the Server base class as a process, through the CLI, under fuzzing --------------------------
@pytest.fixture(scope="module")
def toy_server(tmp_path_factory):
    ready = tmp_path_factory.mktemp("srv") / "ready"
    p = subprocess.Popen([sys.executable, "-m", "rendergrad.cli", "bridge", "serve", "toy", "--endpoint",
                          "tcp://127.0.0.1:*", "--ready-file", str(ready), "--max-message-bytes", "65536",
                          "--options", json.dumps({"resolution": 16})],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    deadline = time.monotonic() + 90
    while not ready.exists():
        assert p.poll() is None, p.stderr.read().decode()
        assert time.monotonic() < deadline, "toy server did not start"
        time.sleep(0.05)
    yield ready.read_text().strip(), p
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)


@pytest.fixture(scope="module")
def raw(toy_server):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(toy_server[0])

    def ask(frames, timeout=10.0):
        sock.send_multipart([b"", *frames])
        assert sock.poll(int(timeout * 1000)), "server did not reply"
        got = sock.recv_multipart()
        assert got[0] == b""
        return P.decode_reply(got[1:])

    yield ask
    sock.close()
    ctx.term()


def test_batches_are_split_to_the_server_limits(toy_server):
    import torch
    r = BridgeRenderer(endpoints=toy_server[0])   # that server accepts 64 KiB messages: 21 images of 16²×3
    try:
        theta = 0.12 + 0.76 * torch.rand(50, 2)   # inside the default toy scene's bounds
        images = r.render(theta)
        assert images.shape == (50, 16, 16, 3) and r.stats["requests"] >= 3
    finally:
        r.close()


def test_cli_server_renders_like_the_in_process_renderer(toy_server, capsys):
    from rendergrad.cli import main
    from rendergrad.renderers.toy import ToyRenderer
    import torch
    assert main(["bridge", "ping", toy_server[0]]) == 0
    assert "x, y" in capsys.readouterr().out
    r = BridgeRenderer(endpoints=toy_server[0])
    try:
        theta = torch.tensor([[0.15, 0.85], [0.5, 0.5], [0.8, 0.2]])
        np.testing.assert_allclose(r.render(theta).numpy(), ToyRenderer(resolution=16).render(theta).numpy(), atol=1e-6)
    finally:
        r.close()
    assert toy_server[1].poll() is None  # closing a client does not stop a server it did not launch


def test_oversized_message_gets_an_error_and_the_server_stays_up(raw):
    big = [json.dumps({"v": 1, "op": "render", "id": 1, "batch": 1, "n": 2}).encode(), b"\0" * 100_000]
    rep = raw(big)
    assert rep.code == P.E_TOO_LARGE and rep.id == 1
    assert raw(P.encode_request("ping", 2)).ok


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.text(max_size=6))
_fuzz = st.one_of(
    st.lists(st.binary(max_size=64), min_size=1, max_size=3),
    st.tuples(st.fixed_dictionaries({}, optional={
        "v": st.one_of(st.just(1), _scalars), "op": st.one_of(st.sampled_from(P.OPS[:3] + ("render",)), _scalars),
        "id": _scalars, "batch": st.integers(-1, 3), "n": st.integers(-1, 3)}),
        st.lists(st.binary(max_size=48), max_size=2)).map(lambda t: [json.dumps(t[0]).encode(), *t[1]]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=_fuzz)
def test_fuzzed_messages_over_the_wire_never_take_the_server_down(raw, toy_server, frames):
    if frames and b'"shutdown"' in frames[0]:
        frames = [frames[0].replace(b'"shutdown"', b'"ping"'), *frames[1:]]
    rep = raw(frames)
    assert rep.ok or (rep.code in P.ERROR_CODES and rep.message)
    assert toy_server[1].poll() is None


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def test_interrupted_run_stops_its_workers(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"""
[renderer]
name = "bridge"
options = {{ command = {json.dumps(minimal_command("--size", "16", "--delay", "0.05"))}, workers = 2 }}
[target]
params = {{ x = 0.6, y = 0.4, power = 2.0 }}
[estimator]
name = "spsa"
[optimizer]
lr = 0.05
steps = 400
""")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "rendergrad.cli", "run", str(cfg), "--out", str(out),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = _children(proc.pid)
            time.sleep(0.1)
        assert len(workers) == 2, proc.stderr.read() if proc.poll() is not None else "workers did not start"
        time.sleep(1.5)                       # some steps in
        os.kill(proc.pid, signal.SIGINT)      # Ctrl-C
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "resume" in err
    assert wait_dead(workers, 10.0), "workers outlived the interrupted run"


def test_curve_encrypted_server_needs_its_public_key(tmp_path):
    import torch
    from rendergrad.renderers.toy import ToyRenderer
    public, secret = zmq.curve_keypair()
    server = RendererServer(ToyRenderer(resolution=8))
    ready = tmp_path / "ready"
    t = threading.Thread(target=server.serve, args=("tcp://127.0.0.1:*",),
                         kwargs={"ready_file": ready, "curve_secret_key": secret}, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    endpoint = ready.read_text().strip()
    try:
        r = BridgeRenderer(endpoints=endpoint, server_key=public.decode(), timeout=10)
        try:
            assert r.render(torch.tensor([[0.3, 0.6]])).shape == (1, 8, 8, 3)
        finally:
            r.close()
        with pytest.raises(RendererFailure, match="did not answer hello"):
            BridgeRenderer(endpoints=endpoint, timeout=1.0)   # plaintext client: no handshake, no reply
    finally:
        server._stop = True
        t.join(10)
    assert not t.is_alive()
