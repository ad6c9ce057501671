"""The ``tensorboard`` callback: a live view of a run in TensorBoard, the PyTorch convention.

Writes through :class:`torch.utils.tensorboard.SummaryWriter` (needs the ``tensorboard``
package: ``pip install 'rendergrad[tensorboard]'``) into ``tensorboard/`` in the run folder:

* scalars every step: ``loss/current``, ``loss/best``, ``renders``, ``lr``, ``wall_time_s`` and
  every numeric diagnostic the estimator reports (``estimator/sigma``, ``estimator/surrogate_loss``...);
* every scalar parameter as ``params/NAME``; vector parameters as histograms;
* every ``every`` steps one image: the current render, the target and their difference side by
  side (one extra render each time, counted apart from the optimization's);
* the run's settings as hparams, with the final and best loss as their metrics.

A resumed run reopens the same folder with ``purge_step`` at the step it continues from, so
TensorBoard drops whatever the interrupted session logged past its last checkpoint: the curves
continue without duplicate steps.
"""

from __future__ import annotations

import math
import numbers
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import rendergrad as rg
from rendergrad.callbacks import Callback


def _scalar(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, numbers.Real):
        return float(v)
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return float(v)
    return None


def _hparam(v: Any) -> Any:
    """TensorBoard hparams take numbers, strings and booleans only."""
    if isinstance(v, (bool, str)) or (isinstance(v, numbers.Real) and math.isfinite(float(v))):
        return v
    return None if v is None else str(v)


def _wait_for_a_later_second(logdir: Path) -> None:
    """TensorBoard reads a folder's event files in name order, and a name starts with the second
    its file was created. A session started within the same second as an earlier file could sort
    before it, so its purge of the earlier session's orphaned steps would be read first and lost:
    wait (at most a second) until the new file's name sorts last."""
    newest = None
    for p in logdir.glob("events.out.tfevents.*"):
        part = p.name.split(".")[3] if p.name.count(".") >= 4 else ""
        if part.isdigit():
            newest = max(newest or 0, int(part))
    while newest is not None and int(time.time()) <= newest:
        time.sleep(0.05)


class TensorBoard(Callback):
    """TensorBoard event files: losses, estimator diagnostics, parameters, images, hparams."""

    name = "tensorboard"

    def __init__(self, every: int = 25, logdir: str | None = None, images: bool = True,
                 histograms: bool = True, flush_secs: int = 10):
        if not isinstance(every, int) or every < 0:
            raise rg.ConfigError(f"tensorboard: every must be an integer >= 0 (0: no images), got {every!r}")
        self.every = every
        self.logdir = Path(logdir) if logdir else None
        self.images = images
        self.histograms = histograms
        self.flush_secs = flush_secs
        self.writer: Any = None
        self.target: torch.Tensor | None = None
        self.space: Any = None
        self.settings: dict[str, Any] = {}

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            return False, "needs the tensorboard package: pip install 'rendergrad[tensorboard]'"
        return True, ""

    def _dir(self, run_dir: str | Path | None) -> Path | None:
        if self.logdir is not None:
            return self.logdir
        return Path(run_dir) / "tensorboard" if run_dir is not None else None

    def announce(self, run_dir: str | Path | None = None) -> str | None:
        d = self._dir(run_dir)
        return f"watch it live: tensorboard --logdir {d}" if d is not None else None

    # -- hooks --------------------------------------------------------------------------------
    def on_start(self, *, space: Any = None, target: torch.Tensor | None = None, start_step: int = 0,
                 settings: dict[str, Any] | None = None, run_dir: str | Path | None = None, **kw: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter
        d = self._dir(run_dir)
        if d is not None and d.is_dir():
            _wait_for_a_later_second(d)
        # purge_step: whatever an interrupted session logged at or after the step this session
        # continues from is dropped, so a resumed run's curves have no duplicate steps.
        self.writer = SummaryWriter(log_dir=str(d) if d is not None else None,
                                    purge_step=start_step if start_step > 0 else None,
                                    flush_secs=self.flush_secs)
        self.logdir = Path(self.writer.log_dir)
        self.space = space
        self.target = target
        self.settings = dict(settings or {})
        if start_step == 0 and self.settings:
            self._write_hparams()

    def _write_hparams(self) -> None:
        from torch.utils.tensorboard.summary import hparams
        hp = {k: _hparam(v) for k, v in self.settings.items()}
        hp = {k: v for k, v in hp.items() if v is not None}
        # Written into this run's own file (add_hparams would start a separate run folder); the
        # metrics name scalar tags logged below, so the hparams table shows their last values.
        exp, ssi, sei = hparams(hp, {"loss/current": 0.0, "loss/best": 0.0})
        fw = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            fw.add_summary(summary)

    def on_step(self, *, record: dict[str, Any], step: int, u: torch.Tensor | None = None,
                evaluator: Any = None, elapsed_s: float | None = None, lr: float | None = None,
                best_loss: float | None = None, **kw: Any) -> None:
        w = self.writer
        if w is None:
            return
        w.add_scalar("loss/current", record["loss"], step)
        if best_loss is not None and math.isfinite(best_loss):
            w.add_scalar("loss/best", best_loss, step)
        w.add_scalar("renders", record["evaluations"], step)
        if lr is not None:
            w.add_scalar("lr", lr, step)
        if elapsed_s is not None:
            w.add_scalar("wall_time_s", elapsed_s, step)
        for key, value in record.items():
            if key in ("step", "loss", "evaluations", "params"):
                continue
            v = _scalar(value)
            if v is not None and math.isfinite(v):
                w.add_scalar(f"estimator/{key}", v, step)
        params = dict(record.get("params") or {})
        if self.histograms and self.space is not None and u is not None and len(params) < len(self.space.names):
            # vectors too large for the history record: decode them from the current parameters
            params.update({k: v for k, v in self.space.decode(self.space.to_theta(u)).items() if k not in params})
        for key, value in params.items():
            v = _scalar(value)
            if v is not None:
                w.add_scalar(f"params/{key}", v, step)
            elif self.histograms:
                arr = np.asarray(value, dtype=np.float64).reshape(-1)
                if arr.size and np.isfinite(arr).all():
                    w.add_histogram(f"params/{key}", arr, step)
        if self.images and self.every and (step + 1) % self.every == 0 and u is not None and evaluator is not None:
            self._write_image(evaluator, u, step)

    def _write_image(self, evaluator: Any, u: torch.Tensor, step: int) -> None:
        from rendergrad.imageio import to_display
        img = to_display(evaluator.preview(evaluator.space.to_theta(u.unsqueeze(0)))[0])
        panels = [img]
        if self.target is not None and self.target.ndim == 3 and tuple(self.target.shape[:2]) == img.shape[:2]:
            tgt = to_display(self.target)
            diff = np.abs(img.astype(np.int16) - tgt.astype(np.int16)).astype(np.uint8)
            sep = np.full((img.shape[0], 2, 3), 255, np.uint8)
            panels = [img, sep, tgt, sep, diff]
        self.writer.add_image("render | target | difference", np.concatenate(panels, axis=1), step,
                              dataformats="HWC")

    def on_end(self, *, result: Any = None, **kw: Any) -> None:
        if self.writer is None:
            return
        if result is not None and result.evaluations and math.isfinite(result.loss):
            self.writer.add_scalar("loss/final", result.loss, max(result.steps - 1, 0))
        self.writer.flush()
        self.writer.close()
        self.writer = None

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()


@rg.hookimpl
def rendergrad_callbacks():
    return [TensorBoard]
