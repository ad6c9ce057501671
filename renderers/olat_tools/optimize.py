"""OLAT-AD (Savage et al.): a batch of multiplier candidates θ ~ N(1, σ²) optimized by Adam.

Adam on the multipliers (lr 0.06, ~230 steps), clamp to ``[θ_min, θ_max]`` after each step,
optional random resized crops, a differentiable tone map, any objective.

Every relight goes through :class:`rendergrad.evaluation.BatchEvaluator`, the path every other
method renders through: renders are counted there (``renders`` for the method's cost,
``extra_renders`` for images only made for the record), NaN images are refused with the
multipliers that produced them, and ``max_batch`` splits the candidates into chunks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from rendergrad import Objective
from rendergrad.errors import ConfigError, RendergradError
from rendergrad.evaluation import BatchEvaluator

from ..olat import OlatRenderer


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


@dataclass
class OlatADResult:
    """Candidates' final multipliers ``[B, L, 3]`` and losses, the best index, history, snapshots."""

    names: list[str]
    multipliers: torch.Tensor
    losses: torch.Tensor
    best: int
    history: list[dict[str, Any]]
    snapshots: list[tuple[int, torch.Tensor]]
    renders: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    images: torch.Tensor | None = None
    extra_renders: int = 0

    def candidate(self, i: int | None = None) -> dict[str, list[float]]:
        m = self.multipliers[self.best if i is None else i]
        return {n: [float(v) for v in m[j]] for j, n in enumerate(self.names)}

    def to_json(self) -> dict[str, Any]:
        return {"lights": self.names, "best": self.best, "multipliers": self.candidate(),
                "candidates": [{"loss": float(self.losses[i]), "multipliers": self.candidate(i)}
                               for i in range(self.multipliers.shape[0])],
                "renders": self.renders, "extra_renders": self.extra_renders, "seconds": self.seconds,
                "settings": self.settings}


def configure_tonemap(objective: Objective, tonemap: str | None, exposure: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Apply the tone map exactly once: inside objectives that tone-map, else before the objective.

    Returns the function the loop applies to images (identity when the objective does it).
    """
    from rendergrad.plugins.tonemap import check_tonemap, tonemap as apply_tonemap
    if tonemap is None and not exposure:
        return lambda x: x
    if hasattr(objective, "tonemap") and hasattr(objective, "exposure"):
        if tonemap is not None:
            objective.tonemap = check_tonemap(tonemap)
        objective.exposure = float(exposure)
        return lambda x: x
    key = check_tonemap(tonemap)
    return lambda x: apply_tonemap(x, key, exposure)


def olat_ad(renderer: OlatRenderer, objective: Objective, target: torch.Tensor | None = None, *,
            batch: int = 4, sigma: float = 0.1, lr: float = 0.06, steps: int = 230, seed: int = 0,
            augment: str | None = None, crop_scale: tuple[float, float] = (0.5, 1.0),
            tonemap: str | None = None, exposure: float = 0.0, lr_decay: str = "none",
            snapshot_every: int | None = None, snapshot_size: int = 96,
            init: torch.Tensor | None = None, callback: Callable[[int, torch.Tensor], None] | None = None,
            max_batch: int | None = None) -> OlatADResult:
    """OLAT-AD: optimize a batch of RGB-multiplier candidates by Adam on an objective.

    ``target``: the reference image ``[H, W, C]`` (linear) for image objectives, or ``None``.
    ``lr_decay="cosine"`` anneals the step to 1 % of ``lr`` (for precise recovery); ``"none"``
    is the paper's constant rate. Candidates start at ``init`` (default: the basis at unit
    multipliers) plus N(0, σ²) noise on every multiplier (HSV: on the value only).
    ``renders`` counts the relights of the candidates (every step and the final scoring);
    the start image an objective may need (``set_init``) is an extra render.
    """
    if batch < 1 or steps < 0 or not lr > 0 or sigma < 0:
        raise ConfigError("olat_ad: need batch >= 1, steps >= 0, lr > 0, sigma >= 0")
    if augment not in (None, "none", "crop"):
        raise ConfigError(f"olat_ad: augment must be None or 'crop', got {augment!r}")
    if lr_decay not in ("none", "cosine"):
        raise ConfigError(f"olat_ad: lr_decay must be 'none' or 'cosine', got {lr_decay!r}")
    if not (0 < crop_scale[0] <= crop_scale[1] <= 1):
        raise ConfigError(f"olat_ad: crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
    augment = None if augment == "none" else augment
    space = renderer.parameter_space()
    gen = torch.Generator().manual_seed(int(seed))
    lo, hi = space.low.float(), space.high.float()
    start = (space.initial_theta() if init is None else torch.as_tensor(init, dtype=torch.float64)).float()
    mask = torch.ones(space.size)
    if getattr(renderer, "color_model", "rgb") == "hsv":
        mask = torch.tensor([0.0, 0.0, 1.0]).repeat(space.size // 3)
    noise = torch.randn(batch, space.size, generator=gen) * sigma * mask
    theta = torch.nn.Parameter(torch.minimum(torch.maximum(start + noise, lo), hi))
    opt = torch.optim.Adam([theta], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), eta_min=lr * 0.01) \
        if lr_decay == "cosine" else None
    post = configure_tonemap(objective, tonemap, exposure)
    tgt = None if target is None else torch.as_tensor(target, dtype=torch.float32)
    if tgt is not None:
        tgt = post(tgt.unsqueeze(0))[0]
    # The evaluator prepares the objective with the (tone-mapped) target.
    ev = BatchEvaluator(renderer, objective, space, tgt, max_batch=max_batch)
    if hasattr(objective, "set_init"):
        objective.set_init(ev.preview(start.unsqueeze(0)))
    every = snapshot_every or max(1, steps // 6)
    snapshots: list[tuple[int, torch.Tensor]] = []
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def evaluate(th: torch.Tensor, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        img = ev.render_theta(th)
        x = img
        per_target = None
        if augment == "crop" and train:
            x, per_target = random_resized_crop(img, gen, crop_scale, tgt)
        x = post(x)
        if per_target is None:
            loss = ev.score(x)
        else:
            parts = []
            for i in range(x.shape[0]):
                objective.prepare(per_target[i])
                parts.append(objective.loss(x[i:i + 1], per_target[i]))
            objective.prepare(tgt)
            loss = torch.cat(parts)
        return loss, img

    def snap(step: int, img: torch.Tensor) -> None:
        from rendergrad.plugins.tonemap import to_linear_display
        with torch.no_grad():
            d = img.detach().float()
            h, w = d.shape[1:3]
            f = snapshot_size / max(h, w)
            if f < 1:
                d = F.interpolate(d.permute(0, 3, 1, 2), size=(max(1, round(h * f)), max(1, round(w * f))),
                                  mode="area").permute(0, 2, 3, 1)
            tm = getattr(objective, "tonemap", None) if tonemap is None else tonemap
            snapshots.append((step, to_linear_display(d, tm or "srgb", exposure)))

    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss, img = evaluate(theta, True)
        if not bool(torch.isfinite(loss).all()):
            raise RendergradError(f"olat_ad: the objective returned a non-finite loss at step {step}; "
                                  "lower lr or check the objective's inputs")
        loss.sum().backward()
        if step % every == 0:
            snap(step, img)
        opt.step()
        if sched is not None:
            sched.step()
        with torch.no_grad():
            theta.copy_(torch.minimum(torch.maximum(theta, lo), hi))
        history.append({"step": step, "loss": float(loss.detach().min()), "mean_loss": float(loss.detach().mean()),
                        "losses": [float(v) for v in loss.detach()], "evaluations": ev.renders})
        if callback is not None:
            callback(step, loss.detach())
    with torch.no_grad():
        final_loss, final_img = evaluate(theta.detach(), False)
    snap(steps, final_img)
    best = int(torch.argmin(final_loss))
    settings = {"batch": batch, "sigma": sigma, "lr": lr, "steps": steps, "seed": seed, "augment": augment,
                "crop_scale": list(crop_scale), "tonemap": tonemap, "exposure": exposure, "lr_decay": lr_decay,
                "objective": objective.name}
    return OlatADResult(list(renderer.names), renderer.multipliers(theta.detach()).clone(), final_loss.detach(),
                        best, history, snapshots, ev.renders, time.perf_counter() - t0, settings,
                        final_img.detach(), ev.extra_renders)
