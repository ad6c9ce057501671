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
    """Mean squared error over all pixels and channels."""

    name = "mse"

    def loss(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        t = check_target(self.name, images, target)
        return ((images - t) ** 2).flatten(1).mean(1)


class L1(Objective):
    """Mean absolute error over all pixels and channels (robust to fireflies)."""

    name = "l1"

    def loss(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        t = check_target(self.name, images, target)
        return (images - t).abs().flatten(1).mean(1)


@hookimpl
def rendergrad_objectives():
    return [MSE, L1]
