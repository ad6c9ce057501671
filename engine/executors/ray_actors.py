"""``ray``: K Ray actors, each holding its renderer; a local cluster on loopback, or a running one.

Without ``address`` a private cluster is started for the run, its node registered under
127.0.0.1 and without the dashboard, and shut down at the end. ``address = "auto"`` or
``"ray://head:10001"`` joins a cluster someone started (``ray start --head``); it is left
running, only this run's actors are stopped. When this process is already connected to Ray
(``ray.init`` was called before), that connection is used and left as it was.

Restarts are Ray's: an actor that crashes is restarted up to ``max_restarts`` times. Retries are
the pool's (Ray's own task retries are off): a piece lost with its actor is sent to the next idle
actor, counted, and logged with the reason Ray gives.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError, RendererFailure
from .base import RenderTask
from .pool import Pool
from .worker import RenderWorker

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


_BOILERPLATE = re.compile(r"The actor \w+ is unavailable: |The actor is temporarily unavailable: |"
                         r"\s*The task may or may not have been executed on the actor\.")


def _first_line(e: BaseException) -> str:
    text = _ANSI.sub("", str(e)).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return _BOILERPLATE.sub("", line).strip() or type(e).__name__


def _creation_error(e: BaseException) -> str | None:
    """The constructor's own error (``ValueError: ...``) when an actor died in its creation task."""
    text = _ANSI.sub("", str(e))
    if "creation task" not in text:
        return None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else text


class RayExecutor(Pool):
    """K Ray actors (a local loopback cluster, or ``address="auto"`` to join one), restarted on crashes."""

    name = "ray"

    def __init__(self, workers: int = 2, *, address: str | None = None, max_restarts: int = 5,
                 max_task_retries: int = 3, timeout: float | None = None, startup_timeout: float = 300.0,
                 chunk_size: int | None = None, threads: int | None = None, cpus_per_worker: float = 1.0,
                 init_options: Mapping[str, Any] | None = None):
        super().__init__(workers, max_restarts=max_restarts, max_task_retries=max_task_retries,
                         timeout=timeout, startup_timeout=startup_timeout, chunk_size=chunk_size,
                         threads=threads)
        if address is not None and not (address == "auto" or ":" in str(address)):
            raise ConfigError(f"executor 'ray': address must be \"auto\", \"ray://host:port\" or \"host:port\", "
                              f"got {address!r}")
        if not (isinstance(cpus_per_worker, (int, float)) and cpus_per_worker > 0):
            raise ConfigError(f"executor 'ray': cpus_per_worker must be > 0, got {cpus_per_worker!r}")
        self.address = address
        self.cpus_per_worker = float(cpus_per_worker)
        self.init_options = dict(init_options or {})
        self._ray: Any = None
        self._owns_connection = False
        self._actors: list[Any] = [None] * self.k
        self._refs: dict[Any, tuple[int, str, int | None]] = {}
        self._again: dict[int, float] = {}   # worker -> when to ask a restarting actor again

    @classmethod
    def available(cls) -> tuple[bool, str]:
        import importlib.util
        if importlib.util.find_spec("ray") is None:  # not imported here: Ray takes a second to import
            return False, "needs Ray: pip install 'rendergrad[ray]'"
        return True, ""

    # -- transport ------------------------------------------------------------------------------
    def _open(self) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("executor 'ray' needs Ray: pip install 'rendergrad[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            opts: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
            if self.address is None:
                # A private cluster for this run: registered on loopback, no dashboard, no usage report.
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                opts.update(num_cpus=max(int(os.cpu_count() or 1), int(self.k * self.cpus_per_worker + 0.999)),
                            include_dashboard=False, _node_ip_address="127.0.0.1")
            else:
                opts["address"] = self.address
            opts.update(self.init_options)
            try:
                ray.init(**opts)
            except Exception as e:
                where = f"join the Ray cluster at {self.address!r}" if self.address else "start a local Ray cluster"
                raise RendererFailure(f"executor 'ray': could not {where}: {type(e).__name__}: {e}") from None
            self._owns_connection = True
        self._Actor = ray.remote(num_cpus=self.cpus_per_worker, max_restarts=self.max_restarts,
                                 max_task_retries=0)(RenderWorker)

    def _spawn(self, w: int) -> None:
        if self._actors[w] is None:
            self._actors[w] = self._Actor.remote(self.recipe, self.threads)
        # A crashed actor is being restarted by Ray: this call waits for the new one.
        self._refs[self._actors[w].ready.remote()] = (w, "ready", None)

    def _submit(self, w: int, key: int, task: RenderTask) -> None:
        theta = task.theta.detach().cpu().numpy()
        self._refs[self._actors[w].render.remote(theta, task.index, task.batch, task.fraction)] = (w, "render", key)

    def _wait(self, timeout: float) -> list[tuple[int, str, Any]]:
        ray = self._ray
        now = time.monotonic()
        for w, due in list(self._again.items()):
            if due <= now and self._actors[w] is not None:
                del self._again[w]
                self._refs[self._actors[w].ready.remote()] = (w, "ready", None)
        if self._again:
            timeout = max(0.0, min(timeout, min(self._again.values()) - now))
        if not self._refs:
            time.sleep(timeout)
            return []
        done, _ = ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if done:
            more, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
            done = list(dict.fromkeys(done + more))
        events: list[tuple[int, str, Any]] = []
        for ref in done:
            w, what, key = self._refs.pop(ref)
            try:
                value = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                ctor = _creation_error(e)
                if ctor is not None:
                    events.append((w, "error", ctor))
                elif what == "ready" and isinstance(e, ray.exceptions.ActorUnavailableError):
                    self._again[w] = time.monotonic() + 0.05  # still restarting: ask again shortly
                elif what == "ready":
                    events.append((w, "error", f"Ray gave the actor up: {_first_line(e)}"))
                else:
                    events.append((w, "died", f"actor lost: {_first_line(e)}"))
                continue
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                message = f"{type(cause).__name__}: {cause}" if cause is not None else _first_line(e)
                events.append((w, "fail", (key, message)) if what == "render" else (w, "error", message))
                continue
            if what == "ready":
                events.append((w, "ready", value))
            else:
                images, _seconds, _pid = value
                if isinstance(images, np.ndarray) and not images.flags.writeable:
                    images = images.copy()  # Ray hands out read-only views of its object store
                events.append((w, "ok", (key, images)))
        return events

    def _kill(self, w: int) -> None:
        """Stop a hung actor; Ray restarts it (within max_restarts) and its calls fail at once."""
        actor = self._actors[w]
        if actor is not None:
            for ref, (rw, _, _) in list(self._refs.items()):
                if rw == w:
                    del self._refs[ref]
            self._again.pop(w, None)
            self._ray.kill(actor, no_restart=self.restarts_of[w] >= self.max_restarts)

    def _shutdown(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for w, actor in enumerate(self._actors):
            if actor is not None:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:
                    pass
            self._actors[w] = None
        self._refs.clear()
        self._again.clear()
        if self._owns_connection:
            ray.shutdown()  # a private cluster stops; a joined one only loses this driver
            self._owns_connection = False

    def worker_pids(self) -> list[int]:
        """Process ids of the actors as last seen (on this machine for a local cluster)."""
        return [p for p in self.pids if p is not None]
