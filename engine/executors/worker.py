"""The worker side, shared by every pool: build the renderer once, then render chunks.

Nothing here knows a renderer: a worker gets a :class:`~.base.RendererRecipe` (plugin class and
options) and calls the same :func:`~.base.seek_and_render` the local executor calls, so an image
is computed the same way in every process.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from typing import Any

import numpy as np
import torch

from .base import RendererRecipe, seek_and_render


def to_numpy(images: Any) -> Any:
    """Images as a numpy array for the trip back (cheap to pickle, zero-copy in Ray)."""
    if isinstance(images, torch.Tensor):
        return images.detach().cpu().numpy()
    return images


def quiet_worker(threads: int | None) -> None:
    """Ctrl-C goes to the whole terminal group: the driver decides, workers ignore it.

    On Linux a worker also dies with its driver (even a SIGKILLed one), so none is orphaned.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - not Linux
        pass
    if threads:
        torch.set_num_threads(int(threads))


class RenderWorker:
    """One renderer, built once, rendering chunk after chunk (a Ray actor's body, or a process's)."""

    def __init__(self, recipe: RendererRecipe, threads: int | None = None):
        if threads:
            torch.set_num_threads(int(threads))
        self.pid = os.getpid()
        self.renderer = recipe.build()

    def ready(self) -> int:
        return self.pid

    def render(self, theta: np.ndarray, index: int, batch: int, fraction: float = 1.0) -> tuple[Any, float, int]:
        t0 = time.perf_counter()
        with torch.no_grad():
            images = seek_and_render(self.renderer, torch.from_numpy(theta), index, batch, fraction)
        return to_numpy(images), time.perf_counter() - t0, self.pid

    def close(self) -> None:
        self.renderer.close()


def process_main(conn: Any, recipe: RendererRecipe, threads: int | None) -> None:
    """Entry point of a ``processes`` worker; speaks over a pipe only to the process that spawned it.

    The pipe is an anonymous one multiprocessing creates between this process and its parent:
    nothing else can write to it, and nothing here reads from a socket or a file.

    Messages (tuples): ``("render", task, theta, index, batch, fraction)`` → ``("ok", task, images, seconds)``
    or ``("fail", task, message, traceback)``; ``("close",)`` ends the worker. The first message
    sent is ``("ready", pid)`` or ``("error", message, traceback)`` when the renderer cannot be built.
    """
    quiet_worker(threads)
    try:
        worker = RenderWorker(recipe)
    except BaseException as e:  # the constructor's error, told to the driver in one line
        conn.send(("error", f"{type(e).__name__}: {e}", traceback.format_exc()))
        return
    conn.send(("ready", os.getpid()))
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            if msg[0] == "close":
                break
            _, task, theta, index, batch, fraction = msg
            try:
                images, seconds, _ = worker.render(theta, index, batch, fraction)
                conn.send(("ok", task, images, seconds))
            except Exception as e:
                conn.send(("fail", task, f"{type(e).__name__}: {e}", traceback.format_exc()))
    finally:
        try:
            worker.close()
        except Exception:
            pass
