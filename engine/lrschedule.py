"""The learning rate over a run: its shape (``lr_schedule``) and its units (``lr_units``).

The rate is recomputed from the run's progress each step (a fraction of the steps or of the
render budget, whichever ends the run first), never accumulated, so a resumed run takes
exactly the steps an uninterrupted one takes.

* ``"geometric"``: ``lr · lr_decay ** progress`` (smoothing estimators settle once σ is small).
* ``"cosine"``: ``lr · (lr_decay + (1 - lr_decay) · (1 + cos(π · progress)) / 2)``, the
  cosine annealing of ``torch.optim.lr_scheduler.CosineAnnealingLR`` down to ``lr · lr_decay``.

``lr_units="parameter"`` makes ``lr`` a step in each parameter's own units instead of in
fractions of its range: the optimizer's step on the normalised ``u`` is divided by each
coordinate's range (exact for Adam and SGD, whose state depends on the gradients only), so
methods written in parameter units keep their published learning rates.
"""

from __future__ import annotations

import math

import torch

from .errors import ConfigError
from .params import ParamSpace

SCHEDULES = ("geometric", "cosine")
UNITS = ("unit", "parameter")


def check(schedule: str, units: str) -> None:
    if schedule not in SCHEDULES:
        raise ConfigError(f"lr_schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
    if units not in UNITS:
        raise ConfigError(f"lr_units must be one of {', '.join(UNITS)}; got {units!r}")


def rate(lr: float, decay: float | None, schedule: str, progress: float) -> float:
    """The learning rate at ``progress`` ∈ [0, 1] of the run."""
    if decay is None:
        return lr
    done = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        return lr * (decay + (1.0 - decay) * (1.0 + math.cos(math.pi * done)) / 2.0)
    return lr * float(decay) ** done


def step_scale(space: ParamSpace, units: str) -> torch.Tensor | None:
    """What each coordinate's step on ``u`` is multiplied by: ``None`` for ``lr_units="unit"``.

    Log-scaled parameters keep unit steps (a range in parameter units means nothing there).
    """
    if units == "unit":
        return None
    span = (space.high - space.low).to(torch.float64).clamp_min(1e-300)
    log = torch.cat([torch.full((p.size,), p.log) for p in space.params]) if len(space) \
        else torch.zeros(0, dtype=torch.bool)
    return torch.where(log, torch.ones_like(span), 1.0 / span)
