"""The optimization loop: one function, :func:`optimize`, for every renderer and estimator.

The loop owns what must be identical across a crash and a resume: the normalised parameters,
the torch optimizer, the estimator's state, the random generators and the render count. A
checkpoint holds all of them, so ``rendergrad run --resume`` continues bit-identically.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from .callbacks import Callback, ProgressBar
from .checkpoint import DEFAULT_CHECKPOINT_SECONDS, CheckpointSchedule, deferred_interrupts, load_checkpoint, \
    save_checkpoint
from .errors import ConfigError, IncompatiblePluginsError, RendergradError
from .evaluation import BatchEvaluator
from .imageio import check_target_image
from .interfaces import GradientEstimator, Objective, Renderer, StepContext
from .registry import Registry, registry as default_registry
from .seeding import generator_seed

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}

HISTORY_PARAM_MAX_ELEMENTS = 16  # vector params larger than this stay out of the per-step history


@dataclass
class Result:
    """What a run produced. ``to_json()`` is the ``result.json`` format."""

    params: dict[str, Any]
    best_params: dict[str, Any]
    loss: float
    best_loss: float
    evaluations: int
    wall_time_s: float
    renderer: str
    estimator: str
    history: list[dict[str, Any]]
    theta: torch.Tensor
    u: torch.Tensor
    steps: int
    stopped: str
    render_seconds: float = 0.0
    extra_renders: int = 0
    final_image: torch.Tensor | None = None
    target_image: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "params": self.params, "loss": self.loss, "evaluations": self.evaluations,
            "wall_time_s": self.wall_time_s, "renderer": self.renderer, "estimator": self.estimator,
            "history": self.history, "best_params": self.best_params, "best_loss": self.best_loss,
            "steps": self.steps, "stopped": self.stopped, "render_seconds": self.render_seconds,
            "extra_renders": self.extra_renders,
        }


def _resolve(reg: Registry, kind: str, obj: Any, options: Mapping[str, Any] | None) -> Any:
    if isinstance(obj, str):
        return reg.create(kind, obj, dict(options or {}))
    if options:
        raise ConfigError(f"{kind} options were given but the {kind} is already an instance")
    return obj


def make_optimizer(name: str, params: list[torch.Tensor], lr: float, options: Mapping[str, Any] | None):
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    options = dict(options or {})
    given = dict(options)
    if name in ("adam", "adamw") and not {"fused", "foreach", "capturable", "differentiable"} & set(options):
        options["fused"] = True  # one kernel per step: a third of the per-step optimizer overhead
    try:
        return OPTIMIZERS[name](params, lr=lr, **options)
    except Exception as e:  # torch's own checks raise TypeError, ValueError, IndexError...
        raise ConfigError(f"optimizer {name!r} refused its options {given}: {type(e).__name__}: {e}; "
                          "fix [optimizer] options") from None


def optimize(
    renderer: Renderer | str,
    objective: Objective | str = "mse",
    estimator: GradientEstimator | str = "analytic",
    *,
    target: torch.Tensor | None = None,
    target_params: Mapping[str, Any] | None = None,
    renderer_options: Mapping[str, Any] | None = None,
    objective_options: Mapping[str, Any] | None = None,
    estimator_options: Mapping[str, Any] | None = None,
    init: Mapping[str, Any] | None = None,
    optimizer: str = "adam",
    lr: float = 0.01,
    optimizer_options: Mapping[str, Any] | None = None,
    lr_decay: float | None = None,
    steps: int = 100,
    seed: int = 0,
    max_renders: int | None = None,
    target_loss: float | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    callbacks: Sequence[Callback] = (),
    progress: bool = False,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    checkpoint_seconds: float | None = DEFAULT_CHECKPOINT_SECONDS,
    resume: bool = False,
    max_batch: int | None = None,
    final_render: bool = True,
    close: bool = False,
    registry: Registry | None = None,
) -> Result:
    """Optimize a renderer's parameters so its image minimises the objective.

    ``renderer``, ``objective`` and ``estimator`` are plugin names (with ``*_options``) or
    instances. The target is an image ``[H, W, C]`` or the renderer's own image at
    ``target_params``. The optimizer steps the normalised parameters ``u ∈ [0,1]^n`` (so ``lr``
    is in fractions of each parameter's range) and clamps them to the bounds after each step.
    ``lr_decay`` shrinks the learning rate geometrically to ``lr · lr_decay`` by the end of the
    run, which smoothing estimators need to settle once σ is small.

    Stops after ``steps`` steps, or earlier when ``max_renders`` renders are spent, the loss
    reaches ``target_loss``, or it has not improved by ``min_delta`` for ``patience`` steps.
    With ``checkpoint_dir`` the full state is saved every ``checkpoint_every`` steps, every
    ``checkpoint_seconds`` of wall time, at the end, and when the run fails or is interrupted;
    ``resume=True`` continues from it bit-identically.
    """
    reg = registry or default_registry()
    renderer = _resolve(reg, "renderer", renderer, renderer_options)
    objective = _resolve(reg, "objective", objective, objective_options)
    estimator = _resolve(reg, "estimator", estimator, estimator_options)
    if getattr(estimator, "requires_differentiable", False) and not getattr(renderer, "differentiable", False):
        raise IncompatiblePluginsError(
            f"estimator {estimator.name!r} needs gradients from the renderer, but renderer "
            f"{renderer.name!r} is forward-only. Use a black-box estimator (e.g. prdpt, zerograds, spsa, fd) "
            "or a differentiable mode of the renderer.")
    if steps < 0:
        raise ConfigError("steps must be >= 0")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"lr must be a positive number, got {lr!r}")
    if lr_decay is not None and not (isinstance(lr_decay, (int, float)) and 0 < lr_decay <= 1):
        raise ConfigError(f"lr_decay is the final learning rate as a fraction of lr, in (0, 1]; got {lr_decay!r}")

    space = renderer.parameter_space()
    u0 = space.to_unit(space.flatten(init or {}, what="init"))
    torch.manual_seed(generator_seed(seed))
    gen = torch.Generator().manual_seed(generator_seed(seed))

    evaluator = BatchEvaluator(renderer, objective, space, None, max_batch=max_batch)
    if target is None and target_params is not None:
        theta_t = space.flatten(target_params, what="target.params")
        target = evaluator.preview(theta_t.unsqueeze(0))[0].detach()
    if target is not None:
        target = torch.as_tensor(target)
        if not target.is_floating_point():
            target = target.float()
        check_target_image(target)
    objective.prepare(target)
    evaluator.target = target

    u = torch.nn.Parameter(u0.clone())
    opt = make_optimizer(optimizer, [u], lr, optimizer_options)
    estimator.setup(space, steps)

    history: list[dict[str, Any]] = []
    start_step = 0
    elapsed_before = 0.0
    best = {"loss": math.inf, "u": u0.clone(), "step": -1}
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else None
    fingerprint = {"renderer": renderer.name, "estimator": estimator.name, "objective": objective.name,
                   "params": space.names, "n": space.size, "seed": seed, "optimizer": optimizer}
    if resume:
        if ckpt_dir is None:
            raise ConfigError("resume=True needs checkpoint_dir")
        st = load_checkpoint(ckpt_dir, fingerprint)
        with torch.no_grad():
            u.copy_(st["u"])
        opt.load_state_dict(st["optimizer"])
        estimator.load_state_dict(st["estimator"])
        renderer.load_state_dict(st["renderer"])
        gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        start_step, history = st["step"], st["history"]
        evaluator.renders, evaluator.render_seconds = st["renders"], st["render_seconds"]
        # The target was rendered again above; count what the interrupted run spent instead.
        evaluator.extra_renders = st.get("extra_renders", evaluator.extra_renders)
        elapsed_before = st["elapsed"]
        best = {"loss": st["best_loss"], "u": st["best_u"], "step": st["best_step"]}

    def checkpoint(step: int, t0: float, rng: tuple | None = None) -> None:
        if ckpt_dir is None:
            return
        with deferred_interrupts():  # a second Ctrl-C cannot cut the save short
            _checkpoint(step, t0, rng)

    def _checkpoint(step: int, t0: float, rng: tuple | None) -> None:
        gen_state, torch_state, renderer_state = rng or (gen.get_state(), torch.get_rng_state(),
                                                         renderer.state_dict())
        save_checkpoint(ckpt_dir, {
            "fingerprint": fingerprint, "step": step, "u": u.detach().clone(),
            "optimizer": opt.state_dict(), "estimator": estimator.state_dict(),
            "renderer": renderer_state, "generator": gen_state,
            "torch_rng": torch_state, "history": history, "renders": evaluator.renders,
            "render_seconds": evaluator.render_seconds, "extra_renders": evaluator.extra_renders, "elapsed": elapsed_before + time.perf_counter() - t0,
            "best_loss": best["loss"], "best_u": best["u"], "best_step": best["step"],
        })

    cbs = list(callbacks)
    if progress:
        cbs.append(ProgressBar(total=steps, initial=start_step))
    for cb in cbs:
        cb.on_start(space=space, target=target, evaluator=evaluator)

    t0 = time.perf_counter()
    schedule = CheckpointSchedule(checkpoint_every, checkpoint_seconds)
    stopped = "steps"
    step = start_step
    since_best = 0
    patience_ref = best["loss"]  # the loss an improvement of min_delta is measured against
    step_start_rng: tuple | None = None
    try:
        for step in range(start_step, steps):
            if max_renders is not None and evaluator.renders >= max_renders:
                stopped = "max_renders"
                break
            if ckpt_dir is not None:  # only needed to re-run this step exactly after a failure
                step_start_rng = (gen.get_state(), torch.get_rng_state(), renderer.state_dict())
            ctx = StepContext(step=step, total_steps=steps, generator=gen, max_renders=max_renders)
            u_now = u.detach().clone()
            est = estimator.estimate(evaluator, u_now, ctx)
            grad = torch.as_tensor(est.grad).detach().reshape(-1).to(u.dtype)
            if grad.shape[0] != space.size:
                raise RendergradError(
                    f"estimator {estimator.name!r} returned a gradient of size {grad.shape[0]} for {space.size} parameters")
            if not math.isfinite(float(grad.sum())) and not bool(torch.isfinite(grad).all()):
                raise RendergradError(
                    f"estimator {estimator.name!r} returned a non-finite gradient at step {step} "
                    f"(parameters {space.decode(space.to_theta(u_now), HISTORY_PARAM_MAX_ELEMENTS)}); "
                    "lower the learning rate or the smoothing scale, or check the objective")
            u.grad = grad  # replaces the previous step's gradient; no zero_grad needed
            if lr_decay is not None:
                # Geometric decay to lr·lr_decay over the run (steps or render budget, whichever
                # ends it): recomputed from progress each step, so a resumed run matches exactly.
                done = step / steps if steps else 0.0
                if max_renders:
                    done = max(done, evaluator.renders / max_renders)
                for group in opt.param_groups:
                    group["lr"] = lr * float(lr_decay) ** min(done, 1.0)
            with deferred_interrupts():  # the step is taken and recorded, or not at all
                opt.step()
                with torch.no_grad():
                    u.clamp_(0.0, 1.0)
                loss = float(est.loss)
                record = {"step": step, "loss": loss, "evaluations": evaluator.renders,
                          "params": space.decode(space.to_theta(u_now), HISTORY_PARAM_MAX_ELEMENTS)}
                for k, v in est.info.items():
                    record[k] = v
                history.append(record)
                if loss < best["loss"]:  # best_loss is the lowest loss seen, whatever min_delta is
                    best = {"loss": loss, "u": u_now, "step": step}
                if loss < patience_ref - min_delta:
                    patience_ref = loss
                    since_best = 0
                else:
                    since_best += 1
            for cb in cbs:
                cb.on_step(record=record, u=u.detach(), evaluator=evaluator)
            if ckpt_dir is not None and schedule.due(step + 1):
                checkpoint(step + 1, t0)
            if target_loss is not None and loss <= target_loss:
                stopped, step = "target_loss", step + 1
                break
            if patience is not None and since_best >= patience:
                stopped, step = "patience", step + 1
                break
        else:
            step = steps
    except BaseException:
        # Keep the progress of every completed step; the failing step is re-run on resume with
        # the random state it started with. Renders it spent stay counted.
        done = history[-1]["step"] + 1 if history else start_step
        checkpoint(done, t0, step_start_rng if done == step else None)
        for cb in cbs:
            cb.on_end(result=None)
        if close:
            renderer.close()
        raise
    wall = elapsed_before + time.perf_counter() - t0
    checkpoint(step, t0)

    u_final = u.detach().clone()
    theta_final = space.to_theta(u_final)
    final_image = None
    final_loss = history[-1]["loss"] if history else math.nan
    try:
        if final_render:
            final_image, final_loss = evaluator.preview_scored(theta_final)
    finally:
        if close:
            renderer.close()

    # `loss` is the final parameters' loss (from the final render); `best_loss` the lowest loss
    # seen over the step losses and that final render, so best_loss <= loss always.
    if final_loss < best["loss"]:
        best = {"loss": final_loss, "u": u_final, "step": len(history)}
    result = Result(
        params=space.decode(theta_final), best_params=space.decode(space.to_theta(best["u"])),
        loss=final_loss, best_loss=float(best["loss"]), evaluations=evaluator.renders, wall_time_s=wall,
        renderer=renderer.name, estimator=estimator.name, history=history, theta=theta_final,
        u=u_final, steps=len(history), stopped=stopped, render_seconds=evaluator.render_seconds,
        extra_renders=evaluator.extra_renders, final_image=final_image, target_image=target,
    )
    for cb in cbs:
        cb.on_end(result=result)
    return result
