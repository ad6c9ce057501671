"""The one batched evaluation path: ``u[B, n] -> loss[B]``.

Every loss any estimator asks for goes through :class:`BatchEvaluator`, so renders are
counted in one place, renderer output is validated in one place (a NaN image is an error that
names the parameters that produced it, not a silent NaN gradient), and large batches are split
into chunks a renderer (or its workers) can take.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch

from .errors import RendererFailure, RendererOutputError, RendergradError
from .executors import Executor, LocalExecutor, RenderTask
from .interfaces import Objective, Renderer
from .params import ParamSpace
from .samples import SampleSchedule

log = logging.getLogger("rendergrad.evaluation")


def noise_pairs(objective: Objective, renderer: Renderer) -> tuple[int, float]:
    """How many independent renders score each point, and the sample fraction of each.

    ``(1, 1.0)``: one render, the plain loss. Several when the objective asks for them
    (``unbiased``) and has a ``pair_loss``, and the renderer's images carry noise: ``"auto"``
    only when the renderer can lower its samples, so the ``k = objective.splits`` renders at
    ``1/k`` of the samples cost one render; ``True`` otherwise renders two at full samples.
    """
    mode = getattr(objective, "unbiased", False)
    has_pair_loss = type(objective).pair_loss is not Objective.pair_loss
    if mode is False or not has_pair_loss or not getattr(renderer, "noisy", False):
        return 1, 1.0
    if getattr(renderer, "adjustable_samples", False):
        k = int(getattr(objective, "splits", 2))
        return k, 1.0 / k
    return (1, 1.0) if mode == "auto" else (2, 1.0)


def sample_schedule(objective: Objective, renderer: Renderer, copies: int,
                    pair_fraction: float) -> SampleSchedule | None:
    """A :class:`SampleSchedule` when the objective asks for one (``samples = "adaptive"``) and can
    have it: split renders (their spread is the noise measure) on a renderer that lowers samples."""
    if getattr(objective, "samples", "full") != "adaptive" or copies < 2 or pair_fraction >= 1.0:
        return None
    floor = copies * float(getattr(renderer, "min_sample_fraction", 1.0 / 16))
    return SampleSchedule(min(1.0, floor))


def as_image_batch(images: Any, *, batch: int | None = None, who: str = "renderer") -> torch.Tensor:
    """Accept torch or numpy ``[B,H,W,C]`` (or ``[H,W,C]`` for B=1); check the shape."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise RendererOutputError(
            f"{who} returned {type(images).__name__}; render() must return a torch.Tensor or numpy "
            "array of shape [B, H, W, C]")
    if images.ndim == 3 and batch == 1:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise RendererOutputError(
            f"{who} returned an array of shape {tuple(images.shape)}; render() must return [B, H, W, C]")
    if batch is not None and images.shape[0] != batch:
        raise RendererOutputError(
            f"{who} returned {images.shape[0]} images for a batch of {batch} parameter vectors; "
            "render() must return one image per row of theta")
    if not images.is_floating_point():
        images = images.float()
    return images


class BatchEvaluator:
    """Renders, validates, scores and counts. Callable as an estimator's ``loss_fn``.

    ``max_batch`` splits a large batch into chunks (bounded memory, or one chunk per worker);
    ``executor`` (started) renders them, in this process by default.
    ``check_finite`` makes a NaN/inf image a :class:`RendererOutputError` naming the offending
    parameter values. ``clamp`` keeps perturbed samples inside the declared bounds (estimators
    such as PRDPT perturb with σ ≈ half the domain; a renderer must never see an IOR below 1
    because of it). The clamp passes gradients straight through.
    """

    def __init__(self, renderer: Renderer, objective: Objective, space: ParamSpace,
                 target: torch.Tensor | None, *, max_batch: int | None = None,
                 check_finite: bool = True, clamp: bool = True, executor: Executor | None = None):
        self.renderer = renderer
        self.objective = objective
        self.space = space
        self.size = space.size
        self.target = target
        self.max_batch = max_batch
        self.check_finite = check_finite
        self.clamp = clamp
        self.renders = 0          # renders spent by the optimization (what budgets count)
        self.cost = 0.0           # the same in full-sample renders (less under a sample schedule)
        self.extra_renders = 0    # target, snapshots, final image: reported, not optimization cost
        self.render_seconds = 0.0
        self.image_shape: tuple[int, ...] | None = None
        self.render_index = 0     # images asked for so far (counted or not): each image's place
        self.render_batches = 0   # render_theta calls so far
        if executor is None:      # in-process, with this renderer (started here)
            executor = LocalExecutor()
            executor.start(renderer, None)
        self.executor = executor  # a started executor: where the chunks are rendered
        # What render() receives: float64, so a value at a bound is the bound itself (a trip
        # through float32 turns 0.85 into 0.8500000238418579, outside [0.15, 0.85]).
        self.render_dtype = torch.float64
        # Noisy renderer, objective biased by noise (MSE): k renders at 1/k of the samples per point.
        self.copies, self.pair_fraction = noise_pairs(objective, renderer)
        self.pairs = self.copies > 1
        if self.pairs:
            how = (f"at 1/{self.copies} of the samples each (the cost of one)" if self.pair_fraction < 1
                   else "at full samples (two renders)")
            log.info("objective %r scores %d independent renders per point %s: unbiased under render noise "
                     "(set the objective's unbiased = false for the plain value)", objective.name, self.copies, how)
        self.schedule = sample_schedule(objective, renderer, self.copies, self.pair_fraction)
        if self.schedule is not None:
            log.info("samples per pixel adapt to the run: from %.3g of the renderer's samples, doubled while render "
                     "noise rivals the spread of the losses, halved while it is small", self.schedule.floor)
        objective.prepare(target)

    # -- rendering ---------------------------------------------------------------------------
    def render_theta(self, theta: torch.Tensor) -> torch.Tensor:
        """Render ``theta`` ``[B, n]`` (parameter units); counted and validated."""
        if theta.ndim == 1:
            theta = theta.unsqueeze(0)
        if theta.shape[-1] != self.size:
            raise RendergradError(f"theta has {theta.shape[-1]} columns but the parameter space has {self.size}")
        # The contract with every renderer: float64, inside the declared bounds exactly.
        return self._render_in_bounds(self.space.clamp_theta(theta))

    def _render_in_bounds(self, theta: torch.Tensor, *, copies: int = 1, fraction: float = 1.0,
                          quality: float = 1.0) -> torch.Tensor:
        """:meth:`render_theta` for ``[B, n]`` float64 already inside the bounds (from :meth:`theta_of`,
        whose map clamps): the clamp is not done twice on the per-step path.

        ``copies`` renders every row that many times, each copy its own batch (so its own seeds
        even under common random numbers), at ``fraction`` of the samples: ``[copies·B, H, W, C]``.
        A render is charged at its fraction, so two half-sample copies cost one render.
        ``quality`` (from a :class:`SampleSchedule`) lowers the samples further; it is not a
        render count: :attr:`renders` still counts the points, :attr:`cost` the samples spent.
        """
        chunks = [theta] if not self.max_batch or theta.shape[0] <= self.max_batch \
            else list(torch.split(theta, self.max_batch))
        # Every image has a place in the run (render index, batch index) whichever worker renders
        # it: the executor hands both to the renderer, so results do not depend on the executor.
        tasks, index = [], self.render_index
        for _ in range(copies):
            for chunk in chunks:
                tasks.append(RenderTask(chunk, index, self.render_batches, fraction * quality))
                index += chunk.shape[0]
            self.render_batches += 1
        self.render_index = index
        chunks = chunks * copies
        t0 = time.perf_counter()
        try:
            raws = self.executor.render(tasks)
        except RendergradError:
            raise
        except Exception as e:
            raise RendererFailure(
                f"renderer {self.renderer.name!r} failed on a batch of {theta.shape[0]}: "
                f"{type(e).__name__}: {e}") from e
        self.render_seconds += time.perf_counter() - t0
        out = [self.validate(raw, chunk, who=f"renderer {self.renderer.name!r}") for chunk, raw in zip(chunks, raws)]
        charged = theta.shape[0] * copies if fraction == 1.0 else int(round(theta.shape[0] * copies * fraction))
        self.renders += charged
        self.cost += charged * quality
        return out[0] if len(out) == 1 else torch.cat(out)

    def state_dict(self) -> dict[str, Any]:
        """Where the run is in its sequence of images: what a resumed run must continue from."""
        state: dict[str, Any] = {"render_index": self.render_index, "render_batches": self.render_batches}
        if self.schedule is not None:
            state["samples"] = self.schedule.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.render_index = int(state.get("render_index", self.renders + self.extra_renders))
        self.render_batches = int(state.get("render_batches", 0))
        if self.schedule is not None and "samples" in state:
            self.schedule.load_state_dict(state["samples"])

    def validate(self, raw: Any, theta: torch.Tensor, *, who: str) -> torch.Tensor:
        """Check images for ``theta`` (count, shape, same size as before, finite); return ``[B,H,W,C]``.

        Used for the renderer's output and for images told from outside, so both are held to
        the same rules. Nothing is changed when the images are refused.
        """
        img = as_image_batch(raw, batch=theta.shape[0], who=who)
        if self.image_shape is not None and tuple(img.shape[1:]) != self.image_shape:
            raise RendererOutputError(
                f"{who} changed its image size from {self.image_shape} to {tuple(img.shape[1:])} between calls")
        if self.check_finite:
            self._check_finite(img, theta, who)
        self.image_shape = tuple(img.shape[1:])
        return img

    def _check_finite(self, img: torch.Tensor, theta: torch.Tensor, who: str) -> None:
        # Fast path: a sum is finite unless some element is NaN/inf (or values near the float
        # limit overflow it, which the exact check below then clears). One reduction per batch,
        # tested as a Python float (torch.isfinite on a tensor is four more operations).
        if math.isfinite(float(img.detach().sum())):
            return
        finite = torch.isfinite(img.detach()).flatten(1).all(dim=1)
        if bool(finite.all()):
            return
        row = int((~finite).nonzero()[0])
        params = self.space.decode(theta[row], max_elements=8)
        bad = int((~torch.isfinite(img[row].detach())).sum())
        raise RendererOutputError(
            f"{who} produced {bad} NaN/inf pixel values at parameters {params}. "
            "Check the renderer for a division by zero or an invalid parameter combination, or narrow "
            "the parameter bounds.")

    def preview(self, theta: torch.Tensor) -> torch.Tensor:
        """Render ``theta`` (parameter units) for people, not for the optimizer.

        Counted in ``extra_renders`` so budgets and render-count comparisons stay honest.
        """
        before, cost, seconds = self.renders, self.cost, self.render_seconds
        with torch.no_grad():
            img = self.render_theta(theta)
        self.extra_renders += self.renders - before
        self.renders, self.cost, self.render_seconds = before, cost, seconds
        return img

    def preview_scored(self, theta: torch.Tensor) -> tuple[torch.Tensor, float]:
        """One parameter vector's image ``[H,W,C]`` and loss, for the record (an extra render).

        Scored as the optimization scores (a pair of half-sample renders when :attr:`pairs`);
        the image is then the mean of the pair, a full-sample image.
        """
        if not self.pairs:
            img = self.preview(theta.reshape(1, -1))
            with torch.no_grad():
                return img[0], float(self.score(img)[0])
        before, cost, seconds = self.renders, self.cost, self.render_seconds
        with torch.no_grad():
            images = self._render_in_bounds(self.space.clamp_theta(theta.reshape(1, -1)), copies=self.copies,
                                            fraction=self.pair_fraction)
            loss, img = self._score_copies(images, 1), images.mean(dim=0)
        self.extra_renders += self.renders - before
        self.renders, self.cost, self.render_seconds = before, cost, seconds
        return img, float(loss[0])

    def theta_of(self, u: torch.Tensor, *, differentiable: bool = False) -> torch.Tensor:
        """The ``theta`` a renderer gets for normalised ``u``: clamped, in parameter units.

        One place for it, so a batch handed to a render farm holds exactly the values the
        renderer would have received in the loop.
        """
        if differentiable:
            if self.clamp:  # straight-through: clamp the value, keep the gradient
                u = u + (u.clamp(0.0, 1.0) - u).detach()
            return self.space.to_theta(u).to(self.render_dtype)
        with torch.no_grad():
            return self._theta_no_grad(u)

    def _theta_no_grad(self, u: torch.Tensor) -> torch.Tensor:
        if self.clamp:
            u = u.clamp(0.0, 1.0)
        return self.space.to_theta(u).to(self.render_dtype)

    def render(self, u: torch.Tensor, *, differentiable: bool = False) -> torch.Tensor:
        """Render from normalised ``u``."""
        if differentiable:
            theta = self.theta_of(u, differentiable=True)
        else:
            with torch.no_grad():
                theta = self._theta_no_grad(u)
        if theta.ndim == 1:
            theta = theta.unsqueeze(0)
        if differentiable:
            return self._render_in_bounds(theta)
        with torch.no_grad():
            return self._render_in_bounds(theta)

    # -- scoring ------------------------------------------------------------------------------
    def score(self, images: torch.Tensor) -> torch.Tensor:
        return self._checked(self.objective.loss(images, self._target_on(images.device)), images.shape[0], "loss()")

    def score_pairs(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """The objective's ``pair_loss`` of two independent renders of the same points, ``[B]``."""
        loss = self.objective.pair_loss(first, second, self._target_on(first.device))
        return self._checked(loss, first.shape[0], "pair_loss()")

    def _target_on(self, device: torch.device) -> torch.Tensor | None:
        target = self.target
        return target.to(device) if target is not None and target.device != device else target

    def _checked(self, loss: Any, b: int, what: str) -> torch.Tensor:
        if not isinstance(loss, torch.Tensor) or loss.ndim != 1 or loss.shape[0] != b:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise RendergradError(
                f"objective {self.objective.name!r} returned {shape}; {what} must return one value per image, [B]")
        return loss

    def _score_rendered(self, theta: torch.Tensor, *, differentiable: bool = False) -> torch.Tensor:
        """Render ``theta`` (inside the bounds) and score it: one render, or a pair (:attr:`pairs`).

        Forward batches follow the :attr:`schedule` when there is one, and feed it their spreads;
        gradients through the renderer always use every sample."""
        if not self.pairs:
            return self.score(self._render_in_bounds(theta))
        adapt = self.schedule is not None and not differentiable
        images = self._render_in_bounds(theta, copies=self.copies, fraction=self.pair_fraction,
                                        quality=self.schedule.fraction if adapt else 1.0)
        b = theta.shape[0]
        scores = self._score_copies(images, b)
        if adapt:
            self.schedule.update(self.score(images).detach().reshape(self.copies, b), scores.detach())
        return scores

    def _score_copies(self, images: torch.Tensor, b: int) -> torch.Tensor:
        """The mean ``pair_loss`` over every pair of the copies in ``images`` ``[copies·b, ...]``:
        for the MSE, the unbiased ``((Σ aᵢ)² − Σ aᵢ²) / (k(k − 1))`` with ``aᵢ = Xᵢ − T``."""
        copies = [images[i * b:(i + 1) * b] for i in range(self.copies)]
        losses = [self.score_pairs(copies[i], copies[j]) for i in range(len(copies)) for j in range(i + 1, len(copies))]
        return losses[0] if len(losses) == 1 else torch.stack(losses).mean(dim=0)

    def __call__(self, u: torch.Tensor, *, differentiable: bool = False) -> torch.Tensor:
        if u.ndim == 1:
            u = u.unsqueeze(0)
        if differentiable:
            return self._score_rendered(self.theta_of(u, differentiable=True), differentiable=True)
        with torch.no_grad():  # one context for the whole forward path, not one per layer
            return self._score_rendered(self._theta_no_grad(u)).detach()
