"""Samples per pixel that follow the run: few while the search is wide, all of them at the end.

While a smoothing estimator's σ is large, the losses of its perturbed points differ far more
than render noise moves them, and a render with a fraction of the samples tells the estimator
as much as a full one at a fraction of the time. Near the optimum it is the other way round.
:class:`SampleSchedule` measures both spreads from the renders the run makes anyway and sets the
next fraction:

* **render noise**: each point is rendered ``k ≥ 2`` times (the noise-paired objective), so the
  spread of the per-copy losses of one point is render noise alone; the variance of the
  paired score is that spread over ``k`` (far from the optimum and near it);
* **signal**: the spread of the paired scores across a batch's points, which is what an
  estimator's gradient, ranking or surrogate is built from, less the noise in it (the spread of
  noisy scores is the spread of the true ones plus the noise variance).

Both are pooled over batches until :data:`WINDOW` points were seen (an antithetic pair is a
batch of two: one batch alone says little). When the noise is below ``low`` × the signal the
fraction halves; above ``high`` × it doubles (render-noise variance goes as ``1 / fraction``,
so a band of a factor four cannot oscillate). The rule knows no estimator: σ shrinking shows
up as the signal shrinking.
"""

from __future__ import annotations

import math
from typing import Any

import torch

#: Halve the samples below this noise-to-signal variance ratio, double them above ``HIGH``.
#: Low, because PRDPT's σ control reads noisy directions as "σ too wide": on ``shadow`` the
#: ratio was 0.01–0.07 at full samples, and at 0.3–0.45 (an eighth of them) σ shrank and the
#: search stalled.
LOW, HIGH = 0.03, 0.12
#: Points pooled before each decision.
WINDOW = 16


class SampleSchedule:
    """The sample fraction of the next forward batch, adapted from the last one's losses.

    ``floor`` is the smallest fraction the renderer renders honestly for all ``k`` copies (one
    sample per pixel each). The schedule starts at full samples and comes down only once the
    noise measured is small: a smoothing estimator adapts σ from its first gradients, and
    noisy first gradients (measured: a start at the floor) shrink σ before the search begins.
    """

    def __init__(self, floor: float, *, low: float = LOW, high: float = HIGH):
        if not 0.0 < floor <= 1.0:
            raise ValueError(f"sample fraction floor must lie in (0, 1], got {floor!r}")
        self.floor, self.low, self.high = float(floor), float(low), float(high)
        self.fraction = 1.0
        self.last_ratio: float | None = None
        self._pool = [0.0, 0.0, 0]  # noise and spread, each weighted by its batch's B − 1; points

    def update(self, copy_losses: torch.Tensor, scores: torch.Tensor) -> None:
        """``copy_losses`` ``[k, B]``: each copy's own loss; ``scores`` ``[B]``: the paired scores.

        Single points carry no spread and are skipped; the fraction changes once per window.
        """
        k, b = copy_losses.shape
        if b < 2 or k < 2:
            return
        noise = float(copy_losses.double().var(dim=0).mean()) / k
        spread = float(scores.double().var())
        if not (math.isfinite(noise) and math.isfinite(spread)):  # leave the fraction alone
            return
        pool = self._pool
        pool[0] += noise * (b - 1)
        pool[1] += spread * (b - 1)
        pool[2] += b
        if pool[2] < WINDOW:
            return
        noise, signal = pool[0], pool[1] - pool[0]
        self._pool = [0.0, 0.0, 0]
        ratio = noise / signal if signal > 0 else math.inf
        self.last_ratio = ratio
        if ratio < self.low:
            self.fraction = max(self.floor, self.fraction / 2)
        elif ratio > self.high:
            self.fraction = min(1.0, self.fraction * 2)

    def state_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "pool": list(self._pool)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fraction = float(state.get("fraction", 1.0))
        pool = state.get("pool", [0.0, 0.0, 0])
        self._pool = [float(pool[0]), float(pool[1]), int(pool[2])]
