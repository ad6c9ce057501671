"""What a run produced: :class:`Result`, the ``result.json`` format."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

HISTORY_PARAM_MAX_ELEMENTS = 16  # vector params larger than this stay out of the per-step history


@dataclass
class Result:
    """What a run produced. ``to_json()`` is the ``result.json`` format."""

    params: dict[str, Any]
    best_params: dict[str, Any]
    loss: float
    best_loss: float
    evaluations: int
    wall_time_s: float
    renderer: str
    estimator: str
    history: list[dict[str, Any]]
    theta: torch.Tensor
    u: torch.Tensor
    steps: int
    stopped: str
    render_seconds: float = 0.0
    extra_renders: int = 0
    final_image: torch.Tensor | None = None
    target_image: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    executor: dict[str, Any] = field(default_factory=dict)   # where the renders ran (see executors)

    def to_json(self) -> dict[str, Any]:
        return {
            "params": self.params, "loss": self.loss, "evaluations": self.evaluations,
            "wall_time_s": self.wall_time_s, "renderer": self.renderer, "estimator": self.estimator,
            "history": self.history, "best_params": self.best_params, "best_loss": self.best_loss,
            "steps": self.steps, "stopped": self.stopped, "render_seconds": self.render_seconds,
            "extra_renders": self.extra_renders, "executor": self.executor,
        }


def json_safe(x: Any) -> Any:
    """``x`` with non-finite floats as ``None``: JSON has no NaN, and a run's loss may be one."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x
