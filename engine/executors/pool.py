"""The scheduling every pool shares: pieces to idle workers, losses retried elsewhere, results by index.

A pool knows nothing about how its workers run (local processes, Ray actors); subclasses supply
the transport (:meth:`Pool._spawn`, :meth:`Pool._submit`, :meth:`Pool._wait`, :meth:`Pool._kill`)
and this class decides. The rules:

* every piece of a batch has a key (its position); images go back in that order, whichever
  worker finished first;
* a worker that dies or does not answer within ``timeout`` loses its piece: the piece goes back
  to the front of the queue for the next idle worker and its images are counted in
  ``retried_renders`` (the optimizer is charged once, by the evaluator, for the images it
  receives). A piece lost more than ``max_task_retries`` times stops the run;
* the lost worker is restarted in the background (up to ``max_restarts`` times each) while
  the others keep rendering; one that cannot be restarted is given up, and the run goes on
  with the rest (a dead worker never jams the pool). Every restart is logged with its reason;
* a renderer that raises a Python exception is not retried: the same parameters would raise
  again. The error names the worker and the render index.
"""

from __future__ import annotations

import collections
import math
import os
import time
from typing import Any, Sequence

from ..errors import ConfigError, RendererFailure
from ..interfaces import Renderer
from .base import Executor, RendererRecipe, RenderTask, check_positive, split_tasks

STARTING, READY, DEAD = "starting", "ready", "dead"


class Pool(Executor):
    """K workers, each holding one renderer built from the run's recipe."""

    def __init__(self, workers: int = 2, *, max_restarts: int = 5, max_task_retries: int = 3,
                 timeout: float | None = None, startup_timeout: float = 300.0,
                 chunk_size: int | None = None, threads: int | None = None):
        super().__init__()
        check_positive(f"executor {self.name!r}: workers", workers)
        check_positive(f"executor {self.name!r}: timeout (seconds per image)", timeout, allow_none=True, integer=False)
        check_positive(f"executor {self.name!r}: startup_timeout (seconds)", startup_timeout, integer=False)
        check_positive(f"executor {self.name!r}: chunk_size", chunk_size, allow_none=True)
        check_positive(f"executor {self.name!r}: threads", threads, allow_none=True)
        for key, value in (("max_restarts", max_restarts), ("max_task_retries", max_task_retries)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"executor {self.name!r}: {key} must be an integer >= 0, got {value!r}")
        self.k = int(workers)
        self.max_restarts, self.max_task_retries = int(max_restarts), int(max_task_retries)
        self.timeout = None if timeout is None else float(timeout)
        self.startup_timeout = float(startup_timeout)
        self.chunk_size = chunk_size
        self.threads = threads or max(1, (os.cpu_count() or 1) // self.k)
        self.renders_per_worker = [0] * self.k
        self.state = [STARTING] * self.k
        self.restarts_of = [0] * self.k
        self.pids: list[int | None] = [None] * self.k
        self._starting_since = [0.0] * self.k
        self.recipe: RendererRecipe | None = None
        self._started = False

    # -- transport (subclasses) -------------------------------------------------------------------
    def _spawn(self, w: int) -> None:
        """Begin starting worker ``w`` (or its replacement); its ``ready`` arrives through _wait."""
        raise NotImplementedError

    def _submit(self, w: int, key: int, task: RenderTask) -> None:
        raise NotImplementedError

    def _wait(self, timeout: float) -> list[tuple[int, str, Any]]:
        """Events ``(worker, kind, payload)``: ready (pid), error (message), ok ((key, images)),
        fail ((key, message)), died (reason)."""
        raise NotImplementedError

    def _kill(self, w: int) -> None:
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, renderer: Renderer, recipe: RendererRecipe | None) -> None:
        if self._started:
            return  # one pool serves several runs of the same renderer
        super().start(renderer, recipe)
        if recipe is None:
            raise ConfigError(
                f"executor {self.name!r} builds the renderer in each worker from its plugin name and options: "
                f"pass the renderer by name (renderer=\"{self.renderer_name}\", renderer_options={{...}}), "
                "not as an instance, or use executor \"local\"")
        self.recipe = recipe
        try:
            self._open()
            for w in range(self.k):
                self._spawn(w)
            deadline = time.monotonic() + self.startup_timeout
            while any(s == STARTING for s in self.state):
                left = deadline - time.monotonic()
                if left <= 0:
                    slow = [w for w in range(self.k) if self.state[w] == STARTING]
                    raise RendererFailure(
                        f"executor {self.name!r}: worker(s) {slow} did not build renderer {recipe.name!r} within "
                        f"startup_timeout={self.startup_timeout:g} s; raise startup_timeout for a slow scene")
                for w, kind, payload in self._wait(min(left, 0.5)):
                    if kind == "ready":
                        self.state[w], self.pids[w] = READY, payload
                    elif kind in ("error", "died"):
                        raise RendererFailure(
                            f"renderer {recipe.name!r} could not be built in executor {self.name!r} worker {w}: "
                            f"{payload}. Check the renderer options; a renderer whose constructor fails is not restarted")
            self._started = True
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        """Anything the transport needs before the first worker (a cluster connection)."""

    def close(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        self._shutdown()

    # -- rendering ------------------------------------------------------------------------------
    def render(self, tasks: Sequence[RenderTask]) -> list[Any]:
        if getattr(self, "_closed", False) or not self._started:
            raise RendererFailure(f"executor {self.name!r} is not running (closed, or start() failed)")
        self._refuse_autograd(tasks)
        total = sum(len(t) for t in tasks)
        size = self.chunk_size or max(1, math.ceil(total / max(1, self._live())))
        pieces = split_tasks(tasks, size)
        results: list[Any] = [None] * len(pieces)
        queue = collections.deque(range(len(pieces)))
        attempts = [0] * len(pieces)
        busy: dict[int, tuple[int, float]] = {}   # worker -> (piece, started)
        while queue or busy:
            for w in range(self.k):
                if queue and self.state[w] == READY and w not in busy:
                    key = queue.popleft()
                    self._submit(w, key, pieces[key][2])
                    busy[w] = (key, time.monotonic())
            if not busy and queue:
                if self._live() == 0:
                    raise RendererFailure(
                        f"executor {self.name!r}: every worker is dead (each exhausted max_restarts="
                        f"{self.max_restarts}); see run.log for the reasons")
            for w, kind, payload in self._wait(self._wait_time(busy, pieces)):
                self._on_event(w, kind, payload, busy, results, pieces, attempts, queue)
            self._check_overdue(busy, pieces, attempts, queue)
        return _assemble(tasks, pieces, results)

    def _refuse_autograd(self, tasks: Sequence[RenderTask]) -> None:
        for task in tasks:
            if task.theta.requires_grad and task.theta.grad_fn is not None:
                raise RendererFailure(
                    f"executor {self.name!r} returns images without autograd; a differentiable render "
                    "(analytic gradients, PRDPT mode='reparam') needs executor 'local'")

    def _wait_time(self, busy: dict[int, tuple[int, float]], pieces: list) -> float:
        """How long to wait for events: at most 0.5 s, and not past the first timeout."""
        now = time.monotonic()
        wait = 0.5
        if self.timeout is not None:
            for w, (key, t0) in busy.items():
                wait = min(wait, max(0.0, t0 + self.timeout * len(pieces[key][2]) - now))
        return wait

    def _on_event(self, w: int, kind: str, payload: Any, busy: dict[int, tuple[int, float]], results: list,
                  pieces: list, attempts: list[int], queue: collections.deque) -> None:
        """One message from worker ``w``: ready again, images, a render failure, or its death."""
        if kind == "ready":
            self.state[w], self.pids[w] = READY, payload
        elif kind == "error":
            self._give_up(w, f"could not rebuild its renderer: {payload}")
        elif kind == "ok":
            key, images = payload
            if busy.get(w, (None,))[0] != key:
                return  # an answer from before a timeout: the piece went elsewhere
            busy.pop(w)
            results[key] = images
            self.renders_per_worker[w] += len(pieces[key][2])
        elif kind == "fail":
            key, message = payload
            piece = pieces[key][2]
            raise RendererFailure(
                f"renderer {self.renderer_name!r} failed in executor {self.name!r} worker {w} on "
                f"{len(piece)} image(s) from render index {piece.index}: {message}")
        elif kind == "died":
            if self.state[w] == DEAD:
                return  # already given up (a constructor that failed on restart)
            lost = busy.pop(w, None)
            self._lost(w, lost, str(payload), pieces, attempts, queue)

    def _check_overdue(self, busy: dict[int, tuple[int, float]], pieces: list, attempts: list[int],
                       queue: collections.deque) -> None:
        """Give up replacements that never start; kill workers past their timeout and requeue their piece."""
        now = time.monotonic()
        for w in range(self.k):  # a replacement that never finishes building is given up
            if self.state[w] == STARTING and now - self._starting_since[w] > self.startup_timeout:
                self._give_up(w, f"its replacement did not build the renderer within "
                                 f"startup_timeout={self.startup_timeout:g} s")
        if self.timeout is not None:
            for w, (key, t0) in list(busy.items()):
                limit = self.timeout * len(pieces[key][2])
                if now - t0 > limit:
                    busy.pop(w)
                    self._kill(w)
                    self._lost(w, (key, t0), f"no answer within timeout ({limit:g} s for "
                               f"{len(pieces[key][2])} image(s)); killed", pieces, attempts, queue)

    def _live(self) -> int:
        return sum(s != DEAD for s in self.state)

    def _lost(self, w: int, lost: tuple[int, float] | None, reason: str, pieces: list,
              attempts: list[int], queue: collections.deque) -> None:
        pid = self.pids[w]
        self.state[w] = DEAD
        if lost is not None:
            key = lost[0]
            piece = pieces[key][2]
            attempts[key] += 1
            self.retried_renders += len(piece)
            reason = f"{reason} while rendering {len(piece)} image(s) from render index {piece.index}"
            if attempts[key] > self.max_task_retries:
                self.record(w, "lost", f"(pid {pid}) {reason}")
                raise RendererFailure(
                    f"executor {self.name!r}: {len(piece)} image(s) from render index {piece.index} were lost "
                    f"{attempts[key]} times (max_task_retries={self.max_task_retries}); last: worker {w} {reason}")
            queue.appendleft(key)
        if self.restarts_of[w] >= self.max_restarts:
            self._give_up(w, f"(pid {pid}) {reason}; max_restarts={self.max_restarts} reached")
            return
        self.restarts_of[w] += 1
        self.restarts += 1
        self.record(w, "restarted", f"(pid {pid}) {reason}")
        self.state[w] = STARTING
        self._starting_since[w] = time.monotonic()
        self._spawn(w)

    def _give_up(self, w: int, reason: str) -> None:
        self.state[w] = DEAD
        self.record(w, "given up", reason)
        try:
            self._kill(w)
        except Exception:
            pass

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["given_up"] = [w for w in range(self.k) if self.state[w] == DEAD]
        return out


def _assemble(tasks: Sequence[RenderTask], pieces: list[tuple[int, int, RenderTask]], results: list[Any]) -> list[Any]:
    """Concatenate the pieces of each task, in order."""
    import numpy as np
    import torch
    per_task: list[list[Any]] = [[] for _ in tasks]
    for (t, _, _), images in zip(pieces, results):
        per_task[t].append(images)
    out = []
    for parts in per_task:
        if len(parts) == 1:
            out.append(parts[0])
        elif all(isinstance(p, np.ndarray) for p in parts):
            out.append(np.concatenate(parts))
        else:
            out.append(torch.cat([torch.as_tensor(p) for p in parts]))
    return out
