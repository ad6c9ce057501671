"""OLAT-AD's view of an objective: the tone map applied once, and per-candidate random crops.

:class:`CandidateObjective` wraps any objective so that an :class:`rendergrad.Optimization`
scores OLAT-AD's candidates exactly as the paper does: the (tone-mapped) target, the tone map
before the objective when the objective has none of its own, and, with ``crop``, a random
resized crop per candidate and step applied to the candidate's image and to the target alike,
so each candidate is scored against its own crop of the target. Crops apply only to images
the gradient flows through (the optimization's renders); the final scoring and images told
for the record see whole images.

The crops draw from a generator whose state the run saves with every checkpoint
(``state_dict``), so a resumed run draws the same crops an uninterrupted one does.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from rendergrad import Objective


def random_resized_crop(images: torch.Tensor, generator: torch.Generator,
                        scale: tuple[float, float] = (0.5, 1.0),
                        extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-image random square-ratio crop of ``[B,H,W,C]`` resized back to ``H×W`` (differentiable).

    ``extra`` (``[H,W,C]``, e.g. the target) gets each image's crop too → ``[B,H,W,C]``.
    """
    b = images.shape[0]
    lo, hi = scale
    s = lo + (hi - lo) * torch.rand(b, generator=generator, dtype=torch.float64)
    side = s.sqrt()  # scale is the crop's area fraction
    tx = (2 * torch.rand(b, generator=generator, dtype=torch.float64) - 1) * (1 - side)
    ty = (2 * torch.rand(b, generator=generator, dtype=torch.float64) - 1) * (1 - side)
    aff = torch.zeros(b, 2, 3, dtype=images.dtype, device=images.device)
    aff[:, 0, 0] = side.to(aff)
    aff[:, 1, 1] = side.to(aff)
    aff[:, 0, 2] = tx.to(aff)
    aff[:, 1, 2] = ty.to(aff)
    x = images.permute(0, 3, 1, 2)
    grid = F.affine_grid(aff, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).permute(0, 2, 3, 1)
    ex = None
    if extra is not None:
        e = extra.permute(2, 0, 1).unsqueeze(0).expand(b, -1, -1, -1).to(images.dtype)
        ex = F.grid_sample(e, grid, mode="bilinear", padding_mode="border", align_corners=False).permute(0, 2, 3, 1)
    return out, ex


class CandidateObjective(Objective):
    """``inner`` scored on ``post(images)`` against ``post(target)``, optionally per-candidate crops.

    ``post`` is the tone map the loop applies (identity when ``inner`` tone-maps itself).
    ``last_images`` holds the images of the latest optimization batch (for snapshots).
    """

    def __init__(self, inner: Objective, post: Callable[[torch.Tensor], torch.Tensor], *,
                 crop: bool = False, crop_scale: tuple[float, float] = (0.5, 1.0),
                 generator: torch.Generator | None = None):
        self.inner, self.post, self.crop, self.crop_scale = inner, post, bool(crop), tuple(crop_scale)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.name = inner.name
        self.target: torch.Tensor | None = None
        self.last_images: torch.Tensor | None = None

    def prepare(self, target: torch.Tensor | None) -> None:
        self.target = None if target is None else self.post(torch.as_tensor(target).float().unsqueeze(0))[0]
        self.inner.prepare(self.target)

    def loss(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        train = images.requires_grad
        if train:
            self.last_images = images.detach()
        target = self.target
        if target is not None and target.device != images.device:  # a basis on the GPU, a target here
            target = target.to(images.device)
        if not (train and self.crop):
            return self.inner.loss(self.post(images), target)
        x, per_target = random_resized_crop(images, self.generator, self.crop_scale, target)
        x = self.post(x)
        if per_target is None:
            return self.inner.loss(x, None)
        parts = []
        try:
            for i in range(x.shape[0]):
                self.inner.prepare(per_target[i])
                parts.append(self.inner.loss(x[i:i + 1], per_target[i]))
        finally:
            self.inner.prepare(self.target)
        return torch.cat(parts)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])
