"""The pieces that let an estimator's step be answered from outside: batches and their replay.

An estimator asks its loss function for values one batch at a time, possibly several times per
step (PRDPT with ``center``, ZeroGrads). To hand those batches to a render farm, a step is run
as a *replay*: it starts from the state saved at the beginning of the step, and the loss
function answers every call from the batches already told. The first call nobody has answered
yet stops the step with :class:`_Pending`, carrying that batch; it is what ``ask()`` returns.
``tell()`` records the answer and replays again. Because a replay starts from the same saved
state every time, a step can be saved and reloaded between any two calls and continue exactly.

Differentiable calls (``analytic``, PRDPT ``mode="reparam"``) are answered with the told loss
values *and* their gradient with respect to the batch's ``theta``: :class:`_RecordedLoss`
returns the values and hands the recorded gradient to autograd, so the estimator's
``torch.autograd.grad`` sees exactly what it would have seen with the renderer in the loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import RendergradError
from .params import ParamSpace

ID_PATTERN = re.compile(r"^(?P<run>[0-9a-f]{12})-s(?P<step>\d+)-c(?P<call>\d+)$")


class BatchError(RendergradError):
    """A told batch was refused (unknown, stale, already told, or with the wrong images)."""


@dataclass
class Batch:
    """One batch an estimator needs rendered.

    ``theta`` ``[B, n]`` float64 in parameter units, exactly the values a renderer would get;
    ``params`` the same as one dict per candidate (parameter name → value). ``differentiable``
    batches must be told images that carry autograd back to ``theta``.
    """

    id: str
    theta: torch.Tensor
    space: ParamSpace = field(repr=False)
    step: int = 0
    call: int = 0
    differentiable: bool = False

    def __len__(self) -> int:
        return int(self.theta.shape[0])

    @property
    def params(self) -> list[dict[str, Any]]:
        return [self.space.decode(row.detach()) for row in self.theta]

    def to_json(self) -> dict[str, Any]:
        """What ``rendergrad ask`` writes: the id, and the parameters of every candidate."""
        return {"id": self.id, "step": self.step, "call": self.call, "size": len(self),
                "differentiable": self.differentiable, "params": self.params,
                "theta": self.theta.detach().tolist()}


def batch_id(run: str, step: int, call: int) -> str:
    return f"{run}-s{step}-c{call}"


def refuse_id(told: str, pending: Batch | None, run: str) -> None:
    """Raise :class:`BatchError` unless ``told`` is the pending batch's id, saying which case it is."""
    if pending is not None and told == pending.id:
        return
    m = ID_PATTERN.match(str(told))
    if pending is None:
        raise BatchError(f"batch {told!r} was refused: no batch is pending (the run has finished)")
    if m is None or m["run"] != run:
        raise BatchError(f"batch {told!r} is unknown to this run (pending: {pending.id!r}); "
                         "was it asked from another run folder?")
    step, call = int(m["step"]), int(m["call"])
    if step == pending.step and call < pending.call:
        raise BatchError(f"batch {told!r} was already told; the pending batch is {pending.id!r}")
    if (step, call) < (pending.step, pending.call):
        raise BatchError(f"batch {told!r} is stale (from step {step}; the run is at step {pending.step}); "
                         f"ask again and tell {pending.id!r}")
    raise BatchError(f"batch {told!r} was never asked; the pending batch is {pending.id!r}")


@dataclass
class Answer:
    """A told batch: its loss values and, for differentiable batches, ``d sum(loss) / d theta``."""

    losses: torch.Tensor
    grad: torch.Tensor | None = None

    def to_state(self) -> dict[str, Any]:
        return {"losses": self.losses, "grad": self.grad}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Answer":
        return cls(state["losses"], state.get("grad"))


class _Pending(BaseException):
    """Stops a replay at the first unanswered call. A BaseException, so an estimator's own
    ``except Exception`` never swallows it."""

    def __init__(self, theta: torch.Tensor, differentiable: bool):
        super().__init__("a batch is pending")
        self.theta, self.differentiable = theta, differentiable


class _RecordedLoss(torch.autograd.Function):
    """Told loss values, with the told gradient w.r.t. ``theta`` for the backward pass."""

    @staticmethod
    def forward(ctx, theta: torch.Tensor, losses: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grad)
        return losses.clone()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad_out.unsqueeze(-1) * grad, None, None


class ReplayLoss:
    """The loss function a replayed step sees: told answers in order, then :class:`_Pending`.

    Mirrors :class:`~rendergrad.evaluation.BatchEvaluator` (``size``, ``space``, ``renders``),
    so an estimator cannot tell the two apart.
    """

    def __init__(self, evaluator: Any, answers: list[Answer], renders: int):
        self.evaluator = evaluator
        self.space = evaluator.space
        self.size = evaluator.size
        self.answers = answers
        self.renders = renders
        self.calls = 0

    def __call__(self, u: torch.Tensor, *, differentiable: bool = False) -> torch.Tensor:
        if u.ndim == 1:
            u = u.unsqueeze(0)
        theta = self.evaluator.theta_of(u, differentiable=differentiable)
        if self.calls >= len(self.answers):
            raise _Pending(theta.detach(), differentiable)
        answer = self.answers[self.calls]
        self.calls += 1
        self.renders += int(theta.shape[0])
        if not differentiable:
            return answer.losses.clone()
        if answer.grad is None:
            raise BatchError("a differentiable batch was answered without a gradient")
        return _RecordedLoss.apply(theta, answer.losses, answer.grad.to(theta.dtype))
