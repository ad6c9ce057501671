"""A forward-only renderer plugin for rendergrad, written against the public contract only.

It draws a white disc on a black background with numpy, with no gradients at all: exactly
the situation of a proprietary renderer. The black-box estimators optimize it anyway.
"""

import numpy as np

import rendergrad as rg


class DiskRenderer(rg.Renderer):
    """A white disc on black; parameters x, y (centre). Forward-only, numpy."""

    name = "disk"
    differentiable = False

    def __init__(self, resolution: int = 64, radius: float = 0.15):
        if resolution < 4:
            raise ValueError("resolution must be at least 4")
        self.resolution = resolution
        self.radius = radius
        c = (np.arange(resolution) + 0.5) / resolution
        self.gy, self.gx = np.meshgrid(c, c, indexing="ij")

    def parameter_space(self) -> rg.ParamSpace:
        # Bounds keep the disc inside the frame (a disc pushed out of view also lowers the loss).
        lo, hi = self.radius, 1.0 - self.radius
        return rg.ParamSpace([rg.Param("x", low=lo, high=hi, init=0.25),
                              rg.Param("y", low=lo, high=hi, init=0.75)])

    def render(self, theta):
        theta = np.asarray(theta, dtype=np.float32)  # [B, 2], parameter units
        x, y = theta[:, 0, None, None], theta[:, 1, None, None]
        inside = (self.gx - x) ** 2 + (self.gy - y) ** 2 <= self.radius ** 2
        return inside.astype(np.float32)[..., None].repeat(3, axis=-1)  # [B, H, W, 3]


@rg.hookimpl
def rendergrad_renderers():
    return [DiskRenderer]
