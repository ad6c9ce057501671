"""Plain gradient steps with a learned step size per coordinate (Meta-SGD at inference time).

Meta-learning learns the step sizes for the update ``u ← u − α ⊙ ∇L``; a run that uses them
must take exactly that step, not Adam's, or the learned sizes mean nothing. The optimizer's
``lr`` is a plain multiplier on top (1 by default), so a learning-rate decay still applies.
"""

from __future__ import annotations

from typing import Iterable

import torch


class PerCoordinateSGD(torch.optim.Optimizer):
    """``p ← p − lr · α ⊙ grad`` with a fixed positive step size ``α`` per coordinate."""

    def __init__(self, params: Iterable[torch.Tensor], step_sizes: torch.Tensor, lr: float = 1.0):
        params = list(params)
        if len(params) != 1:
            raise ValueError("PerCoordinateSGD steps one flat parameter vector")
        step_sizes = torch.as_tensor(step_sizes).detach()
        if step_sizes.shape != params[0].shape:
            raise ValueError(f"step sizes have shape {tuple(step_sizes.shape)}, "
                             f"the parameters {tuple(params[0].shape)}")
        if not bool((step_sizes > 0).all()):
            raise ValueError("step sizes must be positive")
        super().__init__(params, {"lr": float(lr)})
        self.step_sizes = step_sizes.to(params[0].dtype).clone()

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.sub_(group["lr"] * self.step_sizes.to(p.device) * p.grad)
        return None
