"""The three plugin interfaces: :class:`Renderer`, :class:`Objective`, :class:`GradientEstimator`.

These names are the public contract third-party plugins are written against (see
``docs/plugins.md``); keep them stable.

The data flow is one way::

    ParamSpace --θ[B,n]--> Renderer --images[B,H,W,C]--> Objective --loss[B]--> GradientEstimator --∇u--> optimizer

An estimator never sees a renderer: it receives a :class:`LossFunction` over the normalised
space, which renders, scores and counts. That is how one estimator drives every renderer and
how every render gets counted in one place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Protocol

import torch

from .params import ParamSpace


class Plugin(ABC):
    """Shared by every plugin kind: a ``name`` and an availability check.

    The methods a kind cannot work without are abstract: a class that lacks one cannot be
    instantiated, and discovery lists it as invalid (with the missing method) instead of
    registering it.

    ``available()`` is a classmethod so ``rendergrad plugins`` can report on a plugin without
    constructing it (which may need a GPU, a licence, a running server...).
    """

    name: ClassVar[str] = ""

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """``(True, "")`` when usable here, else ``(False, "why, and how to fix it")``."""
        return True, ""

    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


class Renderer(Plugin):
    """Turns a batch of parameter vectors into a batch of images.

    Subclasses set ``name`` and ``differentiable`` and implement :meth:`parameter_space` and
    :meth:`render`. ``differentiable = True`` promises that :meth:`render` is
    autograd-differentiable with respect to ``theta``; estimators that need gradients
    (``analytic``) refuse forward-only renderers before anything is rendered.

    ``differentiable`` is read from the *instance*: a renderer whose mode is an option sets
    ``self.differentiable`` in ``__init__`` and names the options that make it differentiable
    in ``differentiable_when`` (e.g. ``{"mode": "soft"}``), so ``rendergrad plugins`` can say
    how to get gradients. The class attribute is what an instance with default options is.
    """

    differentiable: bool = False
    differentiable_when: ClassVar[Mapping[str, Any] | None] = None
    # Monte Carlo renderers: ``noisy`` says two renders of the same parameters with different
    # seeds differ (read from the instance: a fixed seed makes a renderer deterministic), and
    # ``adjustable_samples`` that :meth:`set_sample_fraction` works. Objectives whose plain value
    # is biased by noise (MSE) then score two half-sample renders instead of one (see
    # :meth:`Objective.pair_loss`), at the cost of one.
    noisy: bool = False
    adjustable_samples: ClassVar[bool] = False
    # The smallest fraction set_sample_fraction renders honestly (one sample per pixel: 1/spp).
    # A sample schedule (the objective's ``samples = "adaptive"``) never goes below it.
    min_sample_fraction: float = 1.0 / 16

    @abstractmethod
    def parameter_space(self) -> ParamSpace:
        """The parameters this renderer takes, with bounds and initial values.

        Called once when a run is set up (and by tools such as ``rendergrad plugins``); returns
        a :class:`ParamSpace` whose ``size`` is the ``n`` of every ``theta`` :meth:`render` gets.
        """

    @abstractmethod
    def render(self, theta: torch.Tensor) -> Any:
        """``theta`` ``[B, n]`` float64 in parameter units → images ``[B, H, W, C]`` float32 linear.

        Called by the evaluator for every batch an estimator asks for (possibly split into
        chunks of ``max_batch``). May return a torch tensor or a numpy array. Discrete
        parameters arrive already rounded. With ``differentiable = True`` the images must carry
        autograd back to ``theta``.
        Every value lies inside its ``[low, high]`` exactly; discrete parameters arrive already
        rounded. A renderer that computes in float32 casts ``theta`` itself. May return a torch
        tensor or a numpy array.
        """

    def close(self) -> None:
        """Release processes, sockets, GPU memory. Called once when a run ends; a renderer a
        run created by name is closed by the run."""

    def light_parameters(self) -> list[str]:
        """Names of parameters that scale one light's emission linearly (an energy, a radiance).

        Declaring them lets tools such as OLAT capture render each light alone (that parameter
        at its unit value, every other light parameter at 0). Default: none.
        """
        return []

    def seek(self, index: int, batch: int) -> None:
        """Where the next :meth:`render` sits in the run; renderers with noise override it.

        ``index`` is the run's number of the first image (how many images were asked for
        before it), ``batch`` the number of the batch it belongs to. Executors call this before
        every ``render`` in whichever process renders the chunk, so a renderer that derives each
        image's seed from its own seed and these numbers (``index + row`` for independent noise,
        ``batch`` for noise shared within a batch) gives the same images on any worker, after
        any retry. Default: nothing (deterministic renderers need no seeds).
        """

    def set_sample_fraction(self, fraction: float) -> None:
        """Render the next images with ``fraction`` of the configured samples per pixel.

        Only called on renderers that set ``adjustable_samples = True``: before a :meth:`render`
        that should use fewer samples (after :meth:`seek`), in whichever process renders the
        chunk, and with ``1.0`` right after it, to restore the configured quality. The images
        must stay unbiased estimates of the same mean, only noisier. Default: nothing.
        """

    # Optional: renderers with internal randomness (per-render seeds) return it here so a
    # resumed run continues bit-identically.
    def state_dict(self) -> dict[str, Any]:
        """The renderer's internal random state (seed counters), saved with every checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, when a run is resumed."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Objective(Plugin):
    """Scores images: ``loss(images[B,H,W,C], target) -> [B]``, lower is better.

    ``target`` is the reference image ``[H, W, C]`` or ``None`` for objectives that need none
    (a text prompt). Override :meth:`prepare` to precompute target features once per run.
    """

    def prepare(self, target: torch.Tensor | None) -> None:
        """Called once with the target before the first :meth:`loss`: precompute its features."""

    # Optional: objectives that draw random numbers (augmentations) return their generator's
    # state here, saved with every checkpoint so a resumed run continues bit-identically.
    def state_dict(self) -> dict[str, Any]:
        """The objective's random state, if it has any."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, when a run is resumed."""

    @abstractmethod
    def loss(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """One loss per image: ``images`` ``[B, H, W, C]``, ``target`` ``[H, W, C]`` or None → ``[B]``.

        Called for every rendered batch (and for images told from outside). Must be
        differentiable in ``images`` for gradient estimators that backpropagate (``analytic``).
        """

    # Optional: objectives whose value is biased by render noise. ``E[(X − T)²]`` is the squared
    # error of the mean image *plus the variance of the render*, and that variance depends on the
    # parameters (a dimmer lamp is less noisy), so on a noisy renderer the plain loss has its
    # minimum away from the true parameters. Two independent renders X₁, X₂ of the same
    # parameters give ``E[(X₁ − T)(X₂ − T)] = (E X − T)²`` exactly.
    #: ``"auto"`` (pairs when the renderer is noisy and can halve its samples, so a pair costs
    #: one render), ``True`` (pairs on any noisy renderer, two full renders each) or ``False``.
    unbiased: ClassVar[bool | str] = False

    def pair_loss(self, first: torch.Tensor, second: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """One loss per parameter vector from two independent renders of it, ``[B, H, W, C]`` each → ``[B]``.

        Must be an unbiased estimate of the loss of the noise-free image. Called instead of
        :meth:`loss` when ``unbiased`` asks for it and the renderer is ``noisy``.
        """
        raise NotImplementedError(f"objective {self.name!r} has no pair_loss")


class LossFunction(Protocol):
    """What an estimator receives: the batched loss over the normalised space.

    ``loss_fn(u[B, n]) -> loss[B]``. With ``differentiable=True`` the result carries autograd
    back to ``u`` (only for differentiable renderers). Every call is counted.
    """

    size: int
    space: ParamSpace
    renders: int

    def __call__(self, u: torch.Tensor, *, differentiable: bool = False) -> torch.Tensor: ...


@dataclass
class StepContext:
    """What an estimator may know about the run at a step (for schedules)."""

    step: int
    total_steps: int
    generator: torch.Generator
    # The run's render budget, if any: schedules (σ annealing) measure progress against
    # whichever of steps or renders runs out first.
    max_renders: int | None = None
    # What the renderer can do, so an estimator can choose or refuse a route (e.g. analytic
    # gradients): whether it is differentiable, and the declared parameters whose derivative
    # it drops (``Renderer.nondifferentiable_parameters()``, when the renderer has one).
    differentiable: bool = False
    nondifferentiable: tuple[str, ...] = ()
    # Whether the caller applies ``Estimate.step`` (the loop does; meta-learning's inner loops
    # step along ``grad`` with their own step sizes): work that only serves the estimator's own
    # step, such as a render that checks where to jump, can be skipped when it is not.
    takes_step: bool = True


@dataclass
class Estimate:
    """An estimator's answer: the gradient w.r.t. ``u`` and what it spent.

    ``loss`` is a loss value (at or around ``u``), never a gradient statistic; ``renders`` is
    how many images the estimate cost; ``info`` carries estimator-specific diagnostics (σ,
    surrogate loss...) that end up in the history.
    """

    grad: torch.Tensor
    loss: float
    renders: int
    info: dict[str, Any] = field(default_factory=dict)
    # The update of ``u`` itself, for estimators that size their own steps from what they
    # measured (a trust region that follows the smoothing scale): the loop adds it to ``u``
    # (then clamps) instead of stepping the optimizer. None: the optimizer steps on ``grad``.
    step: torch.Tensor | None = None
    # Population runs (``u`` of shape ``[B, n]``, see :mod:`rendergrad.population`): the loss of
    # each candidate, ``[B]``; ``loss`` is then the best (lowest) of them.
    losses: torch.Tensor | None = None


class GradientEstimator(Plugin):
    """Decides where to evaluate the loss and turns the values into a gradient.

    Works in the normalised space ``u ∈ [0,1]^n``. Stateful estimators (surrogates, buffers)
    implement :meth:`state_dict`/:meth:`load_state_dict` so checkpoints resume exactly.
    """

    requires_differentiable: ClassVar[bool] = False
    # True for estimators that accept ``u`` of shape ``[B, n]`` (B candidates optimized side by
    # side) and give each candidate a gradient that depends only on its own loss.
    population: ClassVar[bool] = False

    def setup(self, space: ParamSpace, total_steps: int) -> None:
        """Called once before the first step with the run's parameter space and step count."""
        self.space = space
        self.total_steps = total_steps

    @abstractmethod
    def estimate(self, loss_fn: LossFunction, u: torch.Tensor, ctx: StepContext) -> Estimate:
        """The gradient at ``u`` ``[n]`` (normalised parameters), once per step.

        Evaluate the loss only through ``loss_fn(u_batch[B, n])`` (one or more calls); draw
        randomness only from ``ctx.generator``. The step may be replayed from its start (a
        render farm answering ``ask``/``tell``), so the result must depend only on the state
        from :meth:`state_dict`, ``u``, ``ctx`` and the values ``loss_fn`` returns.
        """

    def state_dict(self) -> dict[str, Any]:
        """Everything the estimator carries between steps (weights, buffers, scales)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (on resume, and before each replay)."""

    def next_step_renders(self) -> int | None:
        """The renders the next step will take, where the estimator knows it before the step (an
        evolution strategy renders one fixed population per step; PRDPT its samples, to which an
        elite check may add one: say the part that is certain); None where it does not.

        Why: a run keeps to ``max_renders``. A step is never cut short (a population ranked on
        part of its members is a different algorithm), so the loop ends the run with ``stopped =
        "max_renders"`` rather than start a step that would end past the budget. Must follow from
        :meth:`state_dict` alone, like :meth:`converged`."""
        return None

    def converged(self) -> bool:
        """True when the estimator has nothing left to do (an evolution strategy whose spread has
        collapsed): the run then stops before the next step, with ``stopped = "converged"``.
        Must follow from :meth:`state_dict` alone, so a resumed run stops at the same step."""
        return False
