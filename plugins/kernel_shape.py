"""The smoothing kernel's shape (its covariance), learnt from the steps the estimator takes.

Why: an isotropic kernel of one σ treats every direction alike. On a curved or elongated valley
(Rosenbrock², a light whose x and z trade off against its intensity) the smoothed gradient points
mostly *across* the valley once σ is narrower than the valley is long, so normalised steps zigzag
between its walls and progress along it is slow; CMA-ES solves the same problem by adapting the
covariance of its search distribution. This class does that for the kernel, with CMA-ES's
*rank-one* update on the evolution path of the steps (Hansen, "The CMA Evolution Strategy: A
Tutorial", eqs. 24 and 28): consecutive steps that agree along a direction add up in the path,
back-and-forth components across the valley cancel, and the covariance grows along the path. The
estimator keeps stepping along the smoothed gradient, now measured in the kernel's own metric:
offsets are ``σ·A z`` (``C = A Aᵀ``), the gradient is estimated in ``z`` and the step is
``A`` times its direction, a natural-gradient step in the metric ``C``.

The rank-μ update of CMA-ES is left out on purpose: with antithetic pairs ``(ε, −ε)`` the outer
product ``εεᵀ`` of the better sample is the same whichever of the two wins, so it carries no
information about the landscape.

``C`` lives in the estimator's scaled unit coordinates and is kept at determinant 1, so σ keeps
its meaning (a fraction of each parameter's range) and the path-length rule that adapts σ sees
the same numbers as without shape; its condition number is capped at ``max_condition``.
"""

from __future__ import annotations

import math
from typing import Any

import torch


class KernelShape:
    """Covariance ``C`` (determinant 1) of the smoothing kernel, adapted from the steps taken."""

    def __init__(self, n: int, max_condition: float = 1e4, learning_rate: float = 1.0, gate: float = 0.3):
        self.n = int(n)
        # learn only once σ ≤ gate·σ₀ (read by the estimator): see PRDPT's shaped step
        self.gate = float(gate)
        self.max_condition = float(max_condition)
        # CMA-ES's defaults for one selected direction per generation (μ_eff = 1)
        self.cc = 4.0 / (self.n + 4.0)
        self.c1 = min(1.0, learning_rate * 2.0 / ((self.n + 1.3) ** 2 + 1.0))
        self.reset()

    def reset(self) -> None:
        self.C = torch.eye(self.n, dtype=torch.float64)
        self.path = torch.zeros(self.n, dtype=torch.float64)
        self._factor()

    def _factor(self) -> None:
        """``A`` with ``A Aᵀ = C`` and its inverse, from the eigen-decomposition of ``C``."""
        values, vectors = torch.linalg.eigh((self.C + self.C.T) / 2.0)
        values = values.clamp_min(float(values.max()) / self.max_condition)
        values = values / torch.exp(torch.log(values).mean())            # determinant 1
        self.C = (vectors * values) @ vectors.T
        root = values.sqrt()
        self.A = vectors * root
        self.A_inv = (vectors / root).T

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """Offsets ``A z`` (rows of ``z`` are standard normal draws)."""
        return z @ self.A.T

    def whiten(self, y: torch.Tensor) -> torch.Tensor:
        """``A⁻¹ y``: a move in scaled units expressed in the kernel's whitened coordinates."""
        return y @ self.A_inv.T

    def update(self, direction: torch.Tensor) -> None:
        """Learn from one step whose whitened direction was ``direction`` (any length).

        The step enters the path as ``A d √n`` with ``|d| = 1``: directions drawn at random keep
        ``E[path pathᵀ] = C`` and leave ``C`` unchanged on average, as in CMA-ES.
        """
        d = torch.as_tensor(direction, dtype=torch.float64).reshape(-1)
        norm = float(torch.linalg.vector_norm(d))
        if not (norm > 0 and math.isfinite(norm)):
            return
        y = self.A @ (d / norm) * math.sqrt(self.n)
        self.path = (1.0 - self.cc) * self.path + math.sqrt(self.cc * (2.0 - self.cc)) * y
        self.C = (1.0 - self.c1) * self.C + self.c1 * torch.outer(self.path, self.path)
        self._factor()

    @property
    def axis_scales(self) -> torch.Tensor:
        """Per-coordinate standard deviation of the unit-σ kernel, ``sqrt(diag C)``."""
        return torch.diagonal(self.C).sqrt()

    def state_dict(self) -> dict[str, Any]:
        # the factors too: recomputing them from C on load could differ in the last bits
        return {"C": self.C.clone(), "path": self.path.clone(), "A": self.A.clone(), "A_inv": self.A_inv.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.C, self.path = state["C"].clone(), state["path"].clone()
            self.A, self.A_inv = state["A"].clone(), state["A_inv"].clone()
