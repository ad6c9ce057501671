"""``processes``: K local worker processes, each holding its own renderer.

Workers are fresh processes (``forkserver`` by default, or ``spawn``): nothing of the optimizer's
state is copied into them, each builds its renderer from the recipe.

Workers talk to the optimizer over a pipe each (:func:`multiprocessing.Pipe`): only this
process and the children it spawned are on either end, nothing listens on a socket.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mpc
import pickle
import signal
import weakref
from typing import Any

from ..errors import ConfigError
from .base import RenderTask
from .pool import DEAD, Pool
from .worker import process_main


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _reap(procs: list) -> None:
    """Kill whatever is left; a finalizer, so no worker outlives an executor nobody closed."""
    for p in procs:
        if p is not None and p.is_alive():
            p.kill()
    for p in procs:
        if p is not None:
            p.join(timeout=2.0)


class ProcessExecutor(Pool):
    """K fresh worker processes on this machine, each building its renderer once and keeping it."""

    name = "processes"

    def __init__(self, workers: int = 2, *, max_restarts: int = 5, max_task_retries: int = 3,
                 timeout: float | None = None, startup_timeout: float = 300.0,
                 chunk_size: int | None = None, threads: int | None = None, start_method: str = "forkserver"):
        super().__init__(workers, max_restarts=max_restarts, max_task_retries=max_task_retries,
                         timeout=timeout, startup_timeout=startup_timeout, chunk_size=chunk_size,
                         threads=threads)
        if start_method not in ("forkserver", "spawn"):
            raise ConfigError(f"executor 'processes': start_method must be \"forkserver\" or \"spawn\", "
                              f"got {start_method!r}")
        self.start_method = start_method
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            # Fresh processes like spawn (no state copied from this one), forked from a server that
            # has imported torch once: a worker (or a restart) starts in milliseconds, not seconds.
            self._ctx.set_forkserver_preload(["torch", "rendergrad.executors.worker"])
        self._procs: list[Any] = [None] * self.k
        self._conns: list[Any] = [None] * self.k
        self._all: list[Any] = []          # every process ever started, for the finalizer
        self._finalizer = weakref.finalize(self, _reap, self._all)

    def _open(self) -> None:
        pickle.dumps(self.recipe)  # options a worker cannot receive fail here, once, not per spawn

    def _spawn(self, w: int) -> None:
        self._drop(w)
        parent, child = self._ctx.Pipe()
        p = self._ctx.Process(target=process_main, args=(child, self.recipe, self.threads),
                              name=f"rendergrad-{self.name}-{w}", daemon=True)
        p.start()
        child.close()
        self._procs[w], self._conns[w] = p, parent
        self._all.append(p)

    def _submit(self, w: int, key: int, task: RenderTask) -> None:
        theta = task.theta.detach().cpu().numpy()
        try:
            self._conns[w].send(("render", key, theta, task.index, task.batch, task.fraction))
        except (OSError, BrokenPipeError):
            pass  # the worker is gone: its sentinel reports it on the next _wait

    def _wait(self, timeout: float) -> list[tuple[int, str, Any]]:
        handles: dict[Any, tuple[int, str]] = {}
        for w in range(self.k):
            if self._procs[w] is not None and self.state[w] != DEAD:
                handles[self._conns[w]] = (w, "conn")
                handles[self._procs[w].sentinel] = (w, "exit")
        if not handles:
            return []
        events: list[tuple[int, str, Any]] = []
        exited: set[int] = set()
        for h in mpc.wait(list(handles), timeout=timeout):
            w, what = handles[h]
            if what == "exit":
                exited.add(w)
                continue
            events.extend(self._read(w))
        for w in sorted(exited):
            events.extend(self._read(w))  # what it said before it went
            p = self._procs[w]
            p.join(timeout=1.0)
            events.append((w, "died", f"worker process {_exit_reason(p.exitcode)}"))
            self._drop(w)
        # a worker told "error" has nothing more to say; make sure it is gone
        return events

    def _read(self, w: int) -> list[tuple[int, str, Any]]:
        out = []
        conn = self._conns[w]
        if conn is None:
            return out
        try:
            while conn.poll():
                msg = conn.recv()
                if msg[0] == "ready":
                    out.append((w, "ready", msg[1]))
                elif msg[0] == "error":
                    out.append((w, "error", msg[1]))
                elif msg[0] == "ok":
                    out.append((w, "ok", (msg[1], msg[2])))
                elif msg[0] == "fail":
                    out.append((w, "fail", (msg[1], msg[2])))
        except (EOFError, OSError):
            pass
        return out

    def _drop(self, w: int) -> None:
        p, conn = self._procs[w], self._conns[w]
        if conn is not None:
            conn.close()
        if p is not None:
            if p.is_alive():
                p.kill()
            p.join(timeout=2.0)
        self._procs[w] = self._conns[w] = None

    def _kill(self, w: int) -> None:
        self._drop(w)

    def _shutdown(self) -> None:
        for w in range(self.k):
            conn = self._conns[w]
            if conn is not None:
                try:
                    conn.send(("close",))
                except (OSError, BrokenPipeError):
                    pass
        for w in range(self.k):
            p = self._procs[w]
            if p is not None:
                p.join(timeout=3.0)
            self._drop(w)
        self._finalizer()

    def worker_pids(self) -> list[int]:
        """Process ids of the running workers (for monitoring, and for tests that kill one)."""
        return [p.pid for p in self._procs if p is not None and p.is_alive()]
