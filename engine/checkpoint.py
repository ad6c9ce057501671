"""Checkpoints: the complete state of a run, written atomically and never half-written.

Loaded with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts
only, so a checkpoint file can never execute code.

Why the care: a user presses Ctrl-C, the run saves its state, and an impatient second Ctrl-C
lands in the middle of that save. The state is written to ``checkpoint.tmp`` in the same
folder, flushed to disk, and renamed over ``checkpoint.pt`` (``os.replace`` is atomic), with
SIGINT deferred until the rename is done, so whatever the signals the last complete checkpoint
survives. A stray ``checkpoint.tmp`` (a SIGKILL mid-write) is deleted on load and never read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import CheckpointError

FILENAME = "checkpoint.pt"
TMPNAME = "checkpoint.tmp"
DEFAULT_CHECKPOINT_SECONDS = 60.0

log = logging.getLogger("rendergrad.checkpoint")


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT until the block is done.

    A SIGINT received inside is re-raised as :class:`KeyboardInterrupt` at the end, unless an
    exception is already being handled (the run is already stopping: the save at interrupt
    time must finish, and a second Ctrl-C has nothing left to stop). Off the main thread,
    where Python cannot install signal handlers, the block runs as is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def _hold(signum, frame):  # noqa: ARG001
        received.append(signum)

    try:
        previous = signal.signal(signal.SIGINT, _hold)
    except ValueError:  # pragma: no cover - an embedded interpreter without signals
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        if sys.exc_info()[0] is not None:
            log.warning("a second interrupt arrived while saving the checkpoint; the checkpoint is complete")
            return
        if callable(previous):
            previous(signal.SIGINT, None)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt


def save_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILENAME
    tmp = directory / TMPNAME
    with deferred_interrupts():
        try:
            with open(tmp, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic: the old checkpoint or the new one, never half of one
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    return path


def load_checkpoint(directory: str | Path, fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / FILENAME
    stray = directory / TMPNAME
    if stray.exists():  # an interrupted write: never read, never left behind
        with contextlib.suppress(OSError):
            stray.unlink()
        log.warning("deleted %s, a checkpoint write that did not finish", stray)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; was the run started with a checkpoint directory?")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes), so the run cannot continue from it; "
                              "start the run again without --resume")
    import zipfile
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint {path} is not a checkpoint file (truncated or foreign bytes); "
                              "start the run again without --resume")
    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {_reason(e)}; it is damaged or not a rendergrad "
                              "checkpoint, so start the run again without --resume") from None
    if not isinstance(state, dict) or "fingerprint" not in state:
        raise CheckpointError(f"checkpoint {path} is not a rendergrad checkpoint; start the run again without --resume")
    if fingerprint is not None:
        saved = state.get("fingerprint", {})
        diff = {k: (saved.get(k), v) for k, v in fingerprint.items() if saved.get(k) != v}
        if diff:
            what = ", ".join(f"{k}: checkpoint has {a!r}, this run has {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(f"checkpoint {path} belongs to a different run ({what})")
    return state


def _reason(e: Exception) -> str:
    """One line from torch's error, without its advice to turn off the safe loader."""
    text = str(e).strip()
    if "weights_only" in text.lower() or "global" in text.lower():
        import re
        m = re.search(r"GLOBAL ([\w.]+)", text, re.IGNORECASE)
        what = f"calls {m.group(1)}" if m else "holds objects other than tensors, numbers, strings, lists and dicts"
        return f"it {what} when loaded, and rendergrad's loader runs no code from a checkpoint"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first or type(e).__name__


class CheckpointSchedule:
    """When the loop saves: every ``every`` steps and every ``seconds`` of wall time.

    Time-based saves bound what a SIGKILL or a power cut can lose on long runs whatever
    ``every`` is; ``seconds = 0`` (or None) turns them off.
    """

    def __init__(self, every: int = 0, seconds: float | None = DEFAULT_CHECKPOINT_SECONDS,
                 clock=time.monotonic) -> None:
        self.every = int(every or 0)
        self.seconds = float(seconds or 0.0)
        self._clock = clock
        self._last = clock()

    def due(self, steps_done: int) -> bool:
        now = self._clock()
        if (self.every and steps_done % self.every == 0) or (self.seconds and now - self._last >= self.seconds):
            self._last = now
            return True
        return False
