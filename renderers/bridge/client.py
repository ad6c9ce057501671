"""The ``bridge`` renderer: a client that drives one or more bridge servers.

It fans a batch out across its workers (one ZeroMQ DEALER socket each, polled from one
thread), keeps the images in order, and survives its workers: a worker that dies or does not
answer within ``timeout`` has its chunk re-sent to another worker, and a worker this client
launched is killed (its whole process group) and started again. Renders lost that way are
counted in :attr:`BridgeRenderer.stats`, never in the images the optimizer is charged for.
"""

from __future__ import annotations

import collections
import enum
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from rendergrad import ParamSpace, Renderer
from rendergrad.seeds import SEED_MODES, parse_seed_mode  # noqa: F401  (SEED_MODES re-exported)
from rendergrad.errors import ConfigError, RendererFailure

from . import protocol as P
from .endpoints import check_endpoint

log = logging.getLogger("rendergrad.bridge")

SEED_MODES = ("per_render", "per_batch", "fixed")
NON_RETRYABLE = {P.E_BAD_MESSAGE, P.E_BAD_VERSION, P.E_UNKNOWN_OP, P.E_BAD_REQUEST, P.E_TOO_LARGE,
                 P.E_UNKNOWN_PARAMETER, P.E_OUT_OF_BOUNDS}


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the worker gets SIGTERM when this process dies, even by SIGKILL."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def kill_group(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """Stop a worker and everything it started: SIGTERM to its process group, then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # the group may outlive its leader (a server that forked): kill what is left
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass


class _Processes:
    """The processes and files a client owns; a finalizer so nothing outlives the client."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.tmpdir: str | None = None

    def __call__(self) -> None:
        for p in self.procs:
            kill_group(p, grace=2.0)
        self.procs.clear()
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


class WorkerState(enum.Enum):
    """Where a worker is: ``STARTING`` (hello sent) → ``READY``; ``DOWN`` when it cannot be used."""

    STARTING = "starting"
    READY = "ready"
    DOWN = "down"


USABLE = (WorkerState.STARTING, WorkerState.READY)


@dataclass
class _Worker:
    index: int
    endpoint: str
    launched: bool
    sock: Any = None
    proc: subprocess.Popen | None = None
    log: Path | None = None
    log_offset: int = 0            # where the current process's output starts in `log`
    state: WorkerState = WorkerState.STARTING
    since: float = 0.0             # when the current request / start began
    pending: tuple[int, int] | None = None   # (request id, chunk index)
    hello_id: int | None = None
    restarts: int = 0
    reason: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def idle(self) -> bool:
        """Ready and holding no request: the next chunk may go here."""
        return self.state is WorkerState.READY and self.pending is None


class _Batch:
    """One ``render_params`` call's bookkeeping: chunks queued, attempts per chunk, images received.

    It knows nothing of sockets, so dispatch, polling and retries can share it without passing
    four loose lists around.
    """

    def __init__(self, params: np.ndarray, seeds: list[int] | None, size: int) -> None:
        b = params.shape[0]
        self.params, self.seeds = params, seeds
        self.chunks = [(s, min(b, s + size)) for s in range(0, b, size)]
        self.queue = collections.deque(range(len(self.chunks)))
        self.attempts = [0] * len(self.chunks)
        self.done: list[np.ndarray | None] = [None] * len(self.chunks)
        self.remaining = len(self.chunks)

    def complete(self, c: int, images: np.ndarray) -> None:
        self.done[c] = images
        self.remaining -= 1

    def lose(self, c: int) -> int:
        """Count one more failed attempt at chunk ``c``; returns how many so far."""
        self.attempts[c] += 1
        return self.attempts[c]

    def images(self) -> np.ndarray:
        return np.concatenate(self.done) if len(self.done) > 1 else self.done[0]  # type: ignore[arg-type]


class BridgeRenderer(Renderer):
    """Renders through bridge servers over ZeroMQ: attach to ``endpoints`` or launch ``command``."""

    name = "bridge"
    differentiable = False

    def __init__(self, endpoints: str | Sequence[str] | None = None, command: Sequence[str] | None = None,
                 workers: int = 1, transport: str = "ipc", timeout: float = 120.0,
                 startup_timeout: float = 120.0, retries: int = 2, max_restarts: int = 5, seed: int = 0,
                 chunk_size: int | None = None, allow_remote: bool = False,
                 server_key: str | None = None, env: dict[str, str] | None = None, seed_mode: str = "per_render"):
        import zmq
        if (endpoints is None) == (command is None):
            raise ConfigError("bridge renderer: give either `endpoints` (servers already running, e.g. "
                              "\"tcp://127.0.0.1:5555\") or `command` (a server command line to launch, with "
                              "{endpoint} where the endpoint goes)")
        if int(workers) < 1:
            raise ConfigError("bridge renderer: workers must be >= 1")
        if transport not in ("ipc", "tcp"):
            raise ConfigError(f"bridge renderer: transport must be 'ipc' or 'tcp', got {transport!r}")
        if not timeout > 0 or not startup_timeout > 0:
            raise ConfigError("bridge renderer: timeout and startup_timeout must be > 0 seconds")
        if chunk_size is not None and int(chunk_size) < 1:
            raise ConfigError("bridge renderer: chunk_size must be >= 1")
        self.seed_mode = parse_seed_mode(seed_mode, "bridge renderer")
        self.timeout, self.startup_timeout = float(timeout), float(startup_timeout)
        self.retries, self.max_restarts = int(retries), int(max_restarts)
        self.seed, self.chunk_size = int(seed), (int(chunk_size) if chunk_size else None)
        self.allow_remote = allow_remote
        self.server_key = server_key
        self.env = dict(env or {})
        self.stats = {"images": 0, "lost": 0, "retries": 0, "restarts": 0, "timeouts": 0, "requests": 0}
        self._counter = 0          # renders requested so far: the per-image seed sequence
        self._batches = 0
        self._req = 0
        self._ctx = zmq.Context()
        self._zmq = zmq
        self._owned = _Processes()
        self._finalizer = weakref.finalize(self, self._owned)
        self.workers: list[_Worker] = []
        self._closed = False
        try:
            if command is not None:
                self.command = [str(c) for c in command]
                if not any("{endpoint}" in c for c in self.command):
                    raise ConfigError("bridge renderer: `command` must contain {endpoint} where the server's "
                                      "endpoint goes, e.g. [\"python\", \"my_server.py\", \"{endpoint}\"]")
                self._owned.tmpdir = tempfile.mkdtemp(prefix="rendergrad-bridge-")
                for i in range(int(workers)):
                    ep = (f"ipc://{self._owned.tmpdir}/w{i}.sock" if transport == "ipc"
                          else f"tcp://127.0.0.1:{_free_port()}")
                    w = _Worker(i, ep, launched=True, log=Path(self._owned.tmpdir) / f"w{i}.log")
                    self.workers.append(w)
                    self._spawn(w)
            else:
                self.command = None
                eps = [endpoints] if isinstance(endpoints, str) else list(endpoints)  # type: ignore[arg-type]
                if not eps:
                    raise ConfigError("bridge renderer: `endpoints` is empty")
                for i, ep in enumerate(eps):
                    check_endpoint(ep, allow_remote=allow_remote)
                    w = _Worker(i, ep, launched=False)
                    self.workers.append(w)
                    self._connect(w)
            self._wait_started()
            self._describe()
        except BaseException:
            self.close()
            raise

    # -- the plugin contract -------------------------------------------------------------------
    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import zmq  # noqa: F401
        except ImportError:
            return False, "needs pyzmq: pip install 'rendergrad[bridge]'"
        return True, ""

    def parameter_space(self) -> ParamSpace:
        return self.space

    def light_parameters(self) -> list[str]:
        return list(self.description.get("light_parameters", []))

    def state_dict(self) -> dict[str, Any]:
        return {"counter": self._counter, "batches": self._batches}

    def worker_stats(self) -> dict[str, int]:
        """Worker restarts, retried chunks and timeouts so far (``result.json``'s ``workers``)."""
        return {k: int(self.stats[k]) for k in ("restarts", "retries", "timeouts")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._counter = int(state.get("counter", 0))
        self._batches = int(state.get("batches", 0))

    def render(self, theta: torch.Tensor) -> torch.Tensor:
        theta = torch.as_tensor(theta)
        if theta.ndim == 1:
            theta = theta.unsqueeze(0)
        params = theta.detach().to(torch.float64).cpu().numpy()
        b = params.shape[0]
        base = self.seed * 1_000_003
        if self.seed_mode == "per_render":      # independent noise in every image
            seeds = [(base + self._counter + i) % (2 ** 31) for i in range(b)]
        elif self.seed_mode == "per_batch":     # common random numbers within a batch
            seeds = [(base + self._batches) % (2 ** 31)] * b
        else:                                   # "fixed": the same noise in every image
            seeds = [base % (2 ** 31)] * b
        self._counter += b
        self._batches += 1
        images = self.render_params(params, seeds)
        return torch.from_numpy(images)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for w in self.workers:
            if w.launched and w.sock is not None and w.proc is not None and w.proc.poll() is None:
                try:  # ask politely first: the server removes its temporary files
                    w.sock.send_multipart([b"", *P.encode_request("shutdown", -1)], flags=self._zmq.NOBLOCK)
                except Exception:
                    pass
        deadline = time.monotonic() + 2.0
        for w in self.workers:
            if w.proc is not None:
                try:
                    w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            if w.sock is not None:
                w.sock.close(linger=0)
                w.sock = None
        self._finalizer()
        self._ctx.term()

    # -- batches ---------------------------------------------------------------------------------
    def render_params(self, params: np.ndarray, seeds: list[int] | None = None) -> np.ndarray:
        """Render ``[batch, n]`` float64 on the workers; ``[batch, H, W, C]`` float32 in order."""
        if self._closed:
            raise RendererFailure("bridge renderer is closed")
        self._revive()
        batch = _Batch(params, seeds, self._chunk_size(params.shape[0]))
        while batch.remaining:
            self._dispatch(batch)
            if not any(w.state in USABLE for w in self.workers):
                raise RendererFailure("bridge renderer: no worker is left to render on: " + self._why())
            self._poll_replies(batch)
            self._check_workers(batch)
        self.stats["images"] += params.shape[0]
        return batch.images()

    def _chunk_size(self, b: int) -> int:
        """Images per request: the batch shared evenly by the usable workers, within server limits."""
        k = max(1, sum(w.state in USABLE for w in self.workers))
        return min(self.chunk_size or math.ceil(b / k), self._max_chunk())

    def _dispatch(self, batch: _Batch) -> None:
        """Send the next queued chunk to every idle ready worker."""
        for w in self.workers:
            if w.idle and batch.queue:
                c = batch.queue.popleft()
                s, e = batch.chunks[c]
                self._req += 1
                w.pending = (self._req, c)
                w.since = time.monotonic()
                self.stats["requests"] += 1
                w.sock.send_multipart([b"", *P.encode_request(
                    "render", self._req, params=batch.params[s:e],
                    seeds=None if batch.seeds is None else batch.seeds[s:e], names=self.space.names)], copy=False)

    def _poll_replies(self, batch: _Batch) -> None:
        """Wait up to 50 ms for replies and hand each one to the batch (or to the hello handshake)."""
        zmq = self._zmq
        poller = zmq.Poller()
        for w in self.workers:
            if w.sock is not None and w.state in USABLE:
                poller.register(w.sock, zmq.POLLIN)
        events = dict(poller.poll(50))
        for w in list(self.workers):
            if w.sock is not None and w.sock in events:
                # zero-copy receive: the image bytes are copied once, into the output array
                reply = self._decode(w, [f.buffer for f in w.sock.recv_multipart(copy=False)])
                if reply is None:
                    continue
                if w.state is WorkerState.STARTING:
                    self._on_hello(w, reply)
                elif w.pending is not None and reply.id == w.pending[0]:  # else: stale, given up on
                    self._on_render_reply(w, reply, batch)

    def _on_render_reply(self, w: _Worker, reply: P.Reply, batch: _Batch) -> None:
        """A worker answered its chunk: keep the images, retry an error, or fail the worker."""
        c = w.pending[1]  # type: ignore[index]
        s, e = batch.chunks[c]
        if not reply.ok:
            msg = f"worker {w.index} ({w.endpoint}) replied {reply.code}: {reply.message}"
            if reply.code in NON_RETRYABLE:
                raise RendererFailure(f"bridge renderer: {msg}")
            w.pending = None
            self._retry(batch, c, msg, lambda n: f"bridge renderer: rendering images {s}..{e - 1} failed "
                                                 f"{n} times; last: {msg}")
            return
        imgs = reply.images
        want = (e - s, *self.image_shape)
        if imgs is None or imgs.shape != want:
            got = None if imgs is None else imgs.shape
            self._fail(w, f"sent images of shape {got}, expected {want}", batch)
            return
        batch.complete(c, imgs)
        w.pending = None

    def _check_workers(self, batch: _Batch) -> None:
        """Notice dead and silent workers: a busy one that exited or timed out loses its chunk."""
        now = time.monotonic()
        for w in self.workers:
            if w.state is WorkerState.READY and w.pending is not None:
                if w.proc is not None and w.proc.poll() is not None:
                    # A launched worker's death is seen through its process within one poll
                    # (50 ms), not after `timeout`.
                    self._fail(w, f"exited with code {w.proc.returncode} after {now - w.since:.2f} s on "
                               "its request (noticed through its process)", batch)
                elif now - w.since > self.timeout:
                    self.stats["timeouts"] += 1
                    self._fail(w, f"did not answer within {self.timeout:g} s (timeout)", batch)
            elif w.state is WorkerState.STARTING:
                self._check_starting(w, now)

    def _retry(self, batch: _Batch, c: int, what: str, final: Callable[[int], str]) -> None:
        """Chunk ``c`` was lost: count it and queue it first, or raise ``final(attempts)`` past ``retries``."""
        s, e = batch.chunks[c]
        n = batch.lose(c)
        self.stats["lost"] += e - s
        if n > self.retries:
            raise RendererFailure(final(n))
        self.stats["retries"] += 1
        log.warning("bridge: %s; retrying images %d..%d (retry %d of %d)", what, s, e - 1, n, self.retries)
        batch.queue.appendleft(c)

    def _max_chunk(self) -> int:
        """The largest request every server accepts (hello's max_batch and max_message_bytes)."""
        per_image = 4 * math.prod(self.image_shape)
        limit = 1 << 30
        for w in self.workers:
            caps = w.info.get("capabilities") if isinstance(w.info.get("capabilities"), dict) else {}
            mb, mm = caps.get("max_batch"), caps.get("max_message_bytes")
            if isinstance(mb, int) and mb > 0:
                limit = min(limit, mb)
            if isinstance(mm, int) and mm > 0:
                limit = min(limit, max(1, (mm - 4096) // per_image))
        return limit

    def _fail(self, w: _Worker, why: str, batch: _Batch) -> None:
        """A worker lost its chunk: requeue it, then restart (launched) or set the worker aside."""
        if w.pending is not None:
            c = w.pending[1]
            s, e = batch.chunks[c]
            w.pending = None
            self._retry(batch, c, f"worker {w.index} ({w.endpoint}) {why}",
                        lambda n: f"bridge renderer: images {s}..{e - 1} were lost {n} times "
                                  f"(retries={self.retries}); last: worker {w.index} ({w.endpoint}) {why}"
                                  f"{self._log_tail(w)}")
        else:
            log.warning("bridge: worker %d (%s) %s", w.index, w.endpoint, why)
        w.reason = why
        self._restart(w)

    def _restart(self, w: _Worker) -> None:
        if w.sock is not None:
            w.sock.close(linger=0)
            w.sock = None
        if w.launched:
            if w.proc is not None:
                kill_group(w.proc, grace=1.0)
            if w.restarts >= self.max_restarts:
                w.state = WorkerState.DOWN
                w.reason += f" (restarted {w.restarts} times already; max_restarts={self.max_restarts})"
                log.warning("bridge: worker %d is not restarted again: %s", w.index, w.reason)
                return
            w.restarts += 1
            self.stats["restarts"] += 1
            log.warning("bridge: restarting worker %d (restart %d of at most %d): %s", w.index, w.restarts,
                        self.max_restarts, w.reason.split("\n")[0])
            self._spawn(w)
        else:
            # Somebody else's server: keep a fresh socket and let it prove itself with a hello.
            self._connect(w)

    # -- worker lifecycle --------------------------------------------------------------------------
    def _spawn(self, w: _Worker) -> None:
        assert self.command is not None
        if w.endpoint.startswith("ipc://"):
            try:
                os.unlink(w.endpoint[len("ipc://"):])
            except FileNotFoundError:
                pass
        argv = [c.replace("{endpoint}", w.endpoint) for c in self.command]
        env = dict(os.environ, **self.env)
        w.log_offset = w.log.stat().st_size if w.log.exists() else 0  # type: ignore[union-attr]
        with open(w.log, "ab") as out:  # type: ignore[arg-type]
            w.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True, env=env,
                                      preexec_fn=_set_pdeathsig if sys.platform.startswith("linux") else None)
        self._owned.procs = [x.proc for x in self.workers if x.proc is not None]
        self._connect(w)

    def _connect(self, w: _Worker) -> None:
        zmq = self._zmq
        w.sock = self._ctx.socket(zmq.DEALER)
        w.sock.setsockopt(zmq.LINGER, 0)
        if self.server_key:
            pub, sec = zmq.curve_keypair()
            w.sock.curve_serverkey = self.server_key.encode() if isinstance(self.server_key, str) else self.server_key
            w.sock.curve_publickey, w.sock.curve_secretkey = pub, sec
        w.sock.connect(w.endpoint)
        w.state, w.pending, w.since = WorkerState.STARTING, None, time.monotonic()
        self._req += 1
        w.hello_id = self._req
        w.sock.send_multipart([b"", *P.encode_request("hello", self._req, extra={"versions": [P.PROTOCOL_VERSION]})])

    def _decode(self, w: _Worker, frames: list[bytes]) -> P.Reply | None:
        if not frames or len(frames[0]) != 0:
            return None
        try:
            return P.decode_reply(frames[1:])
        except P.ProtocolError as e:
            w.reason = f"sent a malformed reply: {e.message}"
            w.state = WorkerState.DOWN
            return None

    def _on_hello(self, w: _Worker, reply: P.Reply) -> None:
        if reply.id != w.hello_id:
            return
        if not reply.ok:
            w.state, w.reason = WorkerState.DOWN, f"refused hello: {reply.code}: {reply.message}"
            if reply.code == P.E_BAD_VERSION:
                raise RendererFailure(f"bridge renderer: server {w.endpoint} {w.reason}")
            return
        w.state, w.info = WorkerState.READY, dict(reply.header)

    def _check_starting(self, w: _Worker, now: float) -> None:
        limit = self.startup_timeout if w.launched else self.timeout
        if w.proc is not None and w.proc.poll() is not None:
            w.reason = f"exited with code {w.proc.returncode} while starting{self._log_tail(w)}"
            if w.restarts >= self.max_restarts or not hasattr(self, "space"):
                w.state = WorkerState.DOWN
                if w.sock is not None:
                    w.sock.close(linger=0)
                    w.sock = None
            else:
                self._restart(w)
        elif now - w.since > limit:
            w.reason = f"did not answer hello within {limit:g} s{self._log_tail(w)}"
            w.state = WorkerState.DOWN

    def _wait_started(self) -> None:
        zmq = self._zmq
        while any(w.state is WorkerState.STARTING for w in self.workers):
            poller = zmq.Poller()
            for w in self.workers:
                if w.state is WorkerState.STARTING:
                    poller.register(w.sock, zmq.POLLIN)
            events = dict(poller.poll(50))
            now = time.monotonic()
            for w in self.workers:
                if w.state is not WorkerState.STARTING:
                    continue
                if w.sock in events:
                    reply = self._decode(w, w.sock.recv_multipart())
                    if reply is not None:
                        self._on_hello(w, reply)
                else:
                    self._check_starting(w, now)
        if not any(w.state is WorkerState.READY for w in self.workers):
            raise RendererFailure("bridge renderer: no server answered: " + self._why())

    def _revive(self) -> None:
        """Give servers set aside in an earlier batch another chance (they may be back)."""
        for w in self.workers:
            if w.state is WorkerState.DOWN and not w.launched and w.sock is None:
                self._connect(w)
            elif w.state is WorkerState.DOWN and not w.launched and time.monotonic() - w.since > self.timeout:
                w.sock.close(linger=0)
                self._connect(w)

    def _describe(self) -> None:
        descs = []
        for w in self.workers:
            if w.state is not WorkerState.READY:
                continue
            descs.append(self._call(w, "describe"))
        d = descs[0]
        for other in descs[1:]:
            if other.get("params") != d.get("params") or other.get("image") != d.get("image"):
                raise RendererFailure("bridge renderer: the servers describe different scenes; every endpoint "
                                      "must serve the same parameters and image size")
        self.description = {k: d.get(k) for k in ("name", "params", "image", "light_parameters")}
        self.space = P.schema_to_space(d.get("params"))
        img = d.get("image") or {}
        try:
            self.image_shape = (int(img["height"]), int(img["width"]), int(img["channels"]))
        except (KeyError, TypeError, ValueError):
            raise RendererFailure("bridge renderer: describe reply lacks image {height, width, channels}") from None

    def _call(self, w: _Worker, op: str) -> dict[str, Any]:
        """One blocking request to one ready worker (describe, ping)."""
        self._req += 1
        rid = self._req
        w.sock.send_multipart([b"", *P.encode_request(op, rid)])
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if w.sock.poll(50):
                reply = self._decode(w, w.sock.recv_multipart())
                if reply is None or reply.id != rid:
                    continue
                if not reply.ok:
                    raise RendererFailure(f"bridge renderer: {op} on {w.endpoint} failed: {reply.code}: "
                                          f"{reply.message}")
                return reply.header
            if w.proc is not None and w.proc.poll() is not None:
                break
        raise RendererFailure(f"bridge renderer: {w.endpoint} did not answer {op} within {self.timeout:g} s"
                              f"{self._log_tail(w)}")

    def ping(self) -> list[float]:
        """Round-trip time (seconds) of a ping to each ready worker."""
        out = []
        for w in self.workers:
            if w.state is WorkerState.READY:
                t0 = time.perf_counter()
                self._call(w, "ping")
                out.append(time.perf_counter() - t0)
        return out

    def worker_pids(self) -> list[int | None]:
        return [w.proc.pid if w.proc is not None else w.info.get("pid") for w in self.workers]

    def _why(self) -> str:
        return "; ".join(f"worker {w.index} ({w.endpoint}): {w.reason or w.state.value}" for w in self.workers)

    @staticmethod
    def _log_tail(w: _Worker, lines: int = 8) -> str:
        if w.log is None or not w.log.exists():
            return ""
        with open(w.log, "rb") as f:  # only the current process's output: earlier runs repeat it
            f.seek(w.log_offset)
            text = f.read().decode(errors="replace")
        tail = text.strip().splitlines()[-lines:]
        return ("\n  server log (last lines):\n    " + "\n    ".join(tail)) if tail else ""


def _free_port() -> int:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
