"""Bridge workers that die, hang or are attacked leave a record, and are noticed promptly.

Real server processes and real ZeroMQ sockets throughout.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

zmq = pytest.importorskip("zmq")

import rendergrad as rg  # noqa: E402
from rendergrad.cli import main  # noqa: E402
from rendergrad.renderers.bridge import BridgeRenderer, RendererServer  # noqa: E402
from rendergrad.renderers.bridge import protocol as P  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = ROOT / "examples" / "bridge" / "minimal_server.py"

# A server that crashes on its first render, hangs on the render of its second life, then
# serves normally: one of each failure the client must survive, in a fixed order.
TROUBLED = """
import json, runpy, sys, time
import zmq
from pathlib import Path
minimal = runpy.run_path(sys.argv[1])
endpoint, lives = sys.argv[2], Path(sys.argv[3])
life = len(lives.read_text()) if lives.exists() else 0
lives.write_text("x" * (life + 1))
ctx = zmq.Context(); sock = ctx.socket(zmq.REP); sock.bind(endpoint)
while True:
    frames = sock.recv_multipart()
    op = json.loads(frames[0]).get("op")
    if op == "render" and life == 0:
        print("render crashed: out of GPU memory", file=sys.stderr, flush=True); sys.exit(3)
    if op == "render" and life == 1:
        time.sleep(120)
    sock.send_multipart(minimal["handle"](frames, 16, 0.0))
    if op == "shutdown":
        break
"""


def test_worker_restarts_retries_and_timeouts_are_in_run_log_and_result_json(tmp_path):
    script = tmp_path / "troubled.py"
    script.write_text(TROUBLED)
    cmd = [sys.executable, str(script), str(MINIMAL), "{endpoint}", str(tmp_path / "lives")]
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"""
[renderer]
name = "bridge"
options = {{ command = {json.dumps(cmd)}, timeout = 3, retries = 2 }}
[target]
params = {{ x = 0.6, y = 0.4, power = 2.0 }}
[estimator]
name = "spsa"
[optimizer]
steps = 3
""")
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["workers"] == {"restarts": 2, "retries": 2, "timeouts": 1}
    log = (out / "run.log").read_text()
    assert "exited with code 3" in log and "noticed through its process" in log
    assert "did not answer within 3 s (timeout)" in log
    assert log.count("restarting worker 0") == 2
    assert "workers: restarts=2, retries=2, timeouts=1" in log


def test_a_dead_worker_is_noticed_through_its_process_well_before_the_timeout(caplog):
    timeout = 30.0
    r = BridgeRenderer(command=[sys.executable, str(MINIMAL), "{endpoint}", "--size", "8", "--delay", "1.0"],
                       timeout=timeout)
    try:
        victim = r.worker_pids()[0]
        killed: list[float] = []

        def kill():
            time.sleep(0.3)   # the request is in flight: the server sleeps 1 s per image
            killed.append(time.time())
            os.killpg(victim, signal.SIGKILL)

        import torch
        threading.Thread(target=kill, daemon=True).start()
        with caplog.at_level(logging.WARNING, logger="rendergrad.bridge"):
            images = r.render(torch.tensor([[0.5, 0.5, 1.0]], dtype=torch.float64))
        assert images.shape == (1, 8, 8, 3) and r.stats["restarts"] == 1 and r.stats["timeouts"] == 0
        noticed = [rec for rec in caplog.records if "exited with code -9" in rec.getMessage()]
        assert noticed and "noticed through its process" in noticed[0].getMessage()
        assert noticed[0].created - killed[0] < 2.0 < timeout   # one poll, not the timeout
    finally:
        r.close()


@pytest.fixture()
def served(tmp_path):
    """A rendergrad Server (toy) on a real socket, with a small message limit."""
    from rendergrad.renderers.toy import ToyRenderer
    server = RendererServer(ToyRenderer(resolution=8))
    ready = tmp_path / "ready"
    t = threading.Thread(target=server.serve, args=("tcp://127.0.0.1:*",),
                         kwargs={"ready_file": ready, "max_message_bytes": 65536}, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    ctx = zmq.Context()
    socks = []

    def connect():
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(ready.read_text().strip())
        socks.append(s)
        return s

    yield connect
    for s in socks:
        s.close(0)
    ctx.term()
    server._stop = True
    t.join(10)


def ask(sock, frames, timeout=10.0):
    sock.send_multipart([b"", *frames])
    if not sock.poll(int(timeout * 1000)):
        return None
    got = sock.recv_multipart()
    return P.decode_reply(got[1:])


class _Payload:
    marker: Path

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_payload_over_the_wire_is_refused_and_never_run(served, tmp_path):
    _Payload.marker = tmp_path / "pwned"
    bomb = pickle.dumps(_Payload())
    sock = served()
    rep = ask(sock, [bomb])                                            # as the header
    assert not rep.ok and rep.code == P.E_BAD_MESSAGE
    head = json.dumps({"v": 1, "op": "render", "id": 5, "batch": 1, "n": 2}).encode()
    rep = ask(sock, [head, bomb])                                      # as the parameter frame
    assert not rep.ok and rep.code == P.E_BAD_REQUEST and rep.id == 5
    head = json.dumps({"v": 1, "op": "render", "id": 6, "batch": 1, "n": 2, "seeds": bomb.decode("latin-1")}).encode()
    rep = ask(sock, [head, np.array([[0.5, 0.5]]).tobytes()])          # inside a JSON field
    assert not rep.ok and rep.id == 6
    time.sleep(0.2)
    assert not _Payload.marker.exists()
    assert ask(sock, P.encode_request("ping", 7)).ok                   # and it keeps serving


def test_a_message_over_zmq_maxmsgsize_drops_only_that_peer(served):
    """Over twice max_message_bytes (+ header room), ZeroMQ drops the peer before buffering."""
    limit = 2 * 65536 + P.MAX_HEADER_BYTES
    sock = served()
    head = json.dumps({"v": 1, "op": "render", "id": 1, "batch": 1, "n": 2}).encode()
    assert ask(sock, [head, b"\0" * (limit + 4096)], timeout=1.5) is None   # no reply: disconnected
    other = served()
    assert ask(other, P.encode_request("ping", 2)).ok                      # the server is fine
    rep = ask(other, [head, b"\0" * 100_000])                              # under the hard cap: an error reply
    assert rep is not None and rep.code == P.E_TOO_LARGE


@pytest.mark.parametrize("header, code", [
    ({"v": 1.0, "op": "ping", "id": 1}, P.E_BAD_VERSION),     # the version is the integer 1
    ({"v": True, "op": "ping", "id": 1}, P.E_BAD_VERSION),
    ({"v": 1, "op": "ping"}, P.E_BAD_REQUEST),                # every request carries an id
])
def test_v_and_id_are_required_as_the_protocol_says(served, header, code):
    rep = ask(served(), [json.dumps(header).encode()])
    assert not rep.ok and rep.code == code, rep.message


def test_the_server_log_appears_once_in_the_error(tmp_path):
    """A worker that crashes on every render is restarted; the error quotes the log of its last
    life only, not the same lines once per restart."""
    script = tmp_path / "crash.py"
    script.write_text("import json, sys, runpy, zmq\n"
                      "m = runpy.run_path(sys.argv[1])\n"
                      "s = zmq.Context().socket(zmq.REP); s.bind(sys.argv[2])\n"
                      "while True:\n"
                      "    f = s.recv_multipart()\n"
                      "    if json.loads(f[0])['op'] == 'render':\n"
                      "        print('scene.blend: fatal render error', file=sys.stderr, flush=True); sys.exit(7)\n"
                      "    s.send_multipart(m['handle'](f, 8, 0.0))\n")
    import torch
    from rendergrad.errors import RendererFailure
    r = BridgeRenderer(command=[sys.executable, str(script), str(MINIMAL), "{endpoint}"], timeout=20, retries=2)
    try:
        with pytest.raises(RendererFailure) as e:
            r.render(torch.tensor([[0.5, 0.5, 1.0]], dtype=torch.float64))
    finally:
        r.close()
    assert str(e.value).count("scene.blend: fatal render error") == 1, str(e.value)
    assert "lost 3 times" in str(e.value) and r.stats["restarts"] == 2   # the third loss raises


def test_a_nan_target_is_blamed_on_the_target():
    import torch
    from rendergrad.errors import ConfigError
    target = torch.zeros(16, 16, 3)
    target[3, 4, 1] = float("nan")
    with pytest.raises(ConfigError, match="the target image has 1 NaN or infinite pixel values"):
        rg.optimize("toy", "mse", "prdpt", renderer_options={"resolution": 16}, target=target, steps=2)
