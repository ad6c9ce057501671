"""Pixel objectives: ``mse`` and ``l1`` against a reference image."""

from __future__ import annotations

import torch

from rendergrad import Objective, hookimpl
from rendergrad.errors import ConfigError, RendererOutputError


def check_target(name: str, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    if target is None:
        raise ConfigError(f"objective {name!r} compares against a reference: give one ([target] params or image "
                          "in a run file, --target or --target-multipliers for `rendergrad olat optimize`, "
                          "target= or target_params= in rendergrad.optimize)")
    if tuple(target.shape) != tuple(images.shape[1:]):
        raise RendererOutputError(
            f"objective {name!r}: rendered images are {tuple(images.shape[1:])} but the target is "
            f"{tuple(target.shape)}; render the target at the same resolution and channel count")
    return target


class MSE(Objective):
    """Mean squared error over all pixels and channels; unbiased under render noise by default.

    On a noisy renderer the plain ``mean((X − T)²)`` adds the render's variance to the error,
    and that variance depends on the parameters, so its minimum is not at the true parameters
    (measured: ``python -m benchmarks loss_bias``). With ``unbiased = "auto"`` (the default) and
    a renderer that declares ``noisy`` and ``adjustable_samples`` (Mitsuba), every point is
    rendered twice at half the samples and scored ``mean((X₁ − T)(X₂ − T))``: the same cost,
    no bias. ``True`` pairs on any noisy renderer (two full renders per point); ``False``
    keeps the plain value. ``splits = k`` renders each point ``k`` times at ``1/k`` of the
    samples instead (still one render's cost) and averages the pair loss over every pair: nearer
    the plain MSE's precision (per-pixel variance ``2k/(k − 1)·σ⁴`` near the optimum, against
    ``4σ⁴`` for a pair and ``2σ⁴`` for the plain value), at ``k`` render calls per point.
    ``samples = "adaptive"`` lets the samples per pixel follow the run (few while the estimator's
    spread of losses dwarfs render noise, all of them near the optimum; see
    :mod:`rendergrad.samples`); ``"full"`` renders every point at the renderer's samples.
    """

    name = "mse"
    unbiased = "auto"
    splits = 2
    samples = "full"

    def __init__(self, unbiased: bool | str = "auto", splits: int = 2, samples: str = "full"):
        if unbiased not in (True, False, "auto"):
            raise ConfigError(f"objective 'mse': unbiased must be true, false or \"auto\", got {unbiased!r}")
        if isinstance(splits, bool) or not isinstance(splits, int) or splits < 2:
            raise ConfigError(f"objective 'mse': splits must be an integer >= 2, got {splits!r}")
        if samples not in ("full", "adaptive"):
            raise ConfigError(f"objective 'mse': samples must be \"full\" or \"adaptive\", got {samples!r}")
        self.unbiased, self.splits, self.samples = unbiased, splits, samples

    def loss(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        t = check_target(self.name, images, target)
        return ((images - t) ** 2).flatten(1).mean(1)

    def pair_loss(self, first: torch.Tensor, second: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        t = check_target(self.name, first, target)
        return ((first - t) * (second - t)).flatten(1).mean(1)


class L1(Objective):
    """Mean absolute error over all pixels and channels (robust to fireflies)."""

    name = "l1"

    def loss(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        t = check_target(self.name, images, target)
        return (images - t).abs().flatten(1).mean(1)


@hookimpl
def rendergrad_objectives():
    return [MSE, L1]
