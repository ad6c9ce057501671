"""The loop as an object: :class:`Optimization`, driven by ``ask``/``tell`` or by :meth:`run`.

``rg.optimize`` is ``Optimization(...).run()``: ask, render with its renderer, tell. A render
farm, Optuna-style code or a process days later drives the very same object::

    opt = rg.Optimization("toy", "mse", "prdpt", target_params={"x": 0.7, "y": 0.3}, steps=200)
    while not opt.done:
        batch = opt.ask()                       # batch.theta [B, n] float64, batch.params
        opt.tell(batch, farm.render(batch.params))
        opt.save("run")                         # optional: continue in another process
    result = opt.result()

The object owns what must be identical across a save and a load: the normalised parameters, the
torch optimizer, the estimator's state, the random generators, the render count and the batches
told so far in the current step. A step is replayed from its saved start for every told batch
(see :mod:`rendergrad.asktell`), so ``save``/``load`` between any two calls continues exactly,
and ``run()`` (which answers inline, without replays) gives bit-identical results.

The parts, in order: set-up (``__init__``), start (callbacks), a step (``_fast_step`` or
``_replay``), the step's bookkeeping (``_complete_step``), the stop rules (``_may_start_step``,
``_stop_after``), the finish (``result``); and state (``save``/``load``).
"""

from __future__ import annotations

import copy
import math
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .asktell import Answer, Batch, BatchError, ReplayLoss, _Pending, batch_id, refuse_id
from .callbacks import Callback, CallbackList, ProgressBar, resolve_callbacks
from .checkpoint import DEFAULT_CHECKPOINT_SECONDS, CheckpointSchedule, deferred_interrupts, load_checkpoint, \
    save_checkpoint
from . import lrschedule, population as pop
from .imageio import check_target_image
from .seeding import generator_seed
from .errors import ConfigError, RendergradError
from .evaluation import BatchEvaluator
from .executors import RendererRecipe, check_executor, resolve_executor
from .interfaces import Estimate, StepContext
from .registry import Registry, registry as default_registry
from .result import HISTORY_PARAM_MAX_ELEMENTS, Result
from .runstate import RunState, objective_state
from .setup import check_compatible, check_settings, resolve, run_optimizer

# Settings saved with the state, so ``load`` re-creates the run by name.
SETTINGS = ("renderer_options", "objective_options", "estimator_options", "init", "optimizer", "lr",
            "optimizer_options", "lr_decay", "steps", "seed", "max_renders", "target_loss", "patience",
            "min_delta", "max_batch", "external", "checkpoint_every", "checkpoint_seconds", "meta",
            "population", "lr_schedule", "lr_units", "executor_options")


class Optimization(RunState):
    """One optimization run, advanced by :meth:`ask`/:meth:`tell` or by :meth:`run`.

    Takes the same arguments as :func:`rendergrad.optimize` (``renderer``, ``objective``,
    ``estimator`` as plugin names with ``*_options``, or instances). ``external=True`` marks a
    run whose images come from outside: it refuses estimators that need gradients through the
    renderer and never renders except the target (from ``target_params``) once.
    ``population`` (``[B, n]`` starting parameters) optimizes B candidates side by side (see
    :mod:`rendergrad.population`); ``lr_schedule`` and ``lr_units`` shape the learning rate
    (see :mod:`rendergrad.lrschedule`).
    """

    def __init__(self, renderer: Any, objective: Any = "mse", estimator: Any = "analytic", *,
                 target: torch.Tensor | None = None, target_params: Mapping[str, Any] | None = None,
                 renderer_options: Mapping[str, Any] | None = None,
                 objective_options: Mapping[str, Any] | None = None,
                 estimator_options: Mapping[str, Any] | None = None, init: Mapping[str, Any] | None = None,
                 optimizer: str = "adam", lr: float = 0.01, optimizer_options: Mapping[str, Any] | None = None,
                 lr_decay: float | None = None, steps: int = 100, seed: int = 0, max_renders: int | None = None,
                 target_loss: float | None = None, patience: int | None = None, min_delta: float = 0.0,
                 callbacks: Sequence[Callback | str] | CallbackList = (), progress: bool = False,
                 checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
                 checkpoint_seconds: float | None = DEFAULT_CHECKPOINT_SECONDS,
                 max_batch: int | None = None, external: bool = False, registry: Registry | None = None,
                 executor: Any = "local", executor_options: Mapping[str, Any] | None = None,
                 meta: Any = None, population: Any = None, lr_schedule: str = "geometric",
                 lr_units: str = "unit"):
        if meta is not None:  # learned start and per-coordinate steps replace init and the optimizer
            from .meta import load_meta
            meta = load_meta(meta)
            optimizer, lr, optimizer_options = "meta-sgd", 1.0, None
        settings = dict(locals())
        self.settings = {k: settings[k] for k in SETTINGS}
        self.names = {k: settings[k] if isinstance(settings[k], str) else None
                      for k in ("renderer", "objective", "estimator", "executor")}
        self.owns_renderer = isinstance(renderer, str)
        reg = registry or default_registry()
        cbs = resolve_callbacks(callbacks, reg)  # names and options fail here, before anything starts
        self.executor, self.owns_executor = None, False
        self.renderer = resolve(reg, "renderer", renderer, renderer_options)
        try:
            self.objective = resolve(reg, "objective", objective, objective_options)
            self.estimator = resolve(reg, "estimator", estimator, estimator_options)
            check_compatible(self.renderer, self.estimator, external=external)
            check_settings(steps, lr, lr_decay)
            lrschedule.check(lr_schedule, lr_units)
            if population is not None:
                pop.check_estimator(self.estimator, meta)
            # Where renders run; pools build their own renderers from the plugin name and options.
            self.executor, self.owns_executor = resolve_executor(executor, executor_options, reg)
            check_executor(self.executor, self.estimator)
            recipe = (RendererRecipe(renderer, reg.get("renderer", renderer), dict(renderer_options or {}))
                      if isinstance(renderer, str) else None)
            self.executor.start(self.renderer, recipe)
            self._set_up(target, target_params, init)
        except BaseException:
            self.close()
            raise
        self.steps, self.seed, self.lr, self.lr_decay = steps, seed, lr, lr_decay
        self.max_renders, self.target_loss, self.patience = max_renders, target_loss, patience
        self.min_delta, self.external = float(min_delta), bool(external)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.checkpoint_every = int(checkpoint_every or 0)
        self._schedule = CheckpointSchedule(self.checkpoint_every, checkpoint_seconds)
        self.callbacks, self.progress = cbs, progress
        self._init_state()

    # -- set-up ----------------------------------------------------------------------------
    def _set_up(self, target: torch.Tensor | None, target_params: Mapping[str, Any] | None,
                init: Mapping[str, Any] | None) -> None:
        s = self.settings
        self.space = space = self.renderer.parameter_space()
        u0 = space.to_unit(space.flatten(init or {}, what="init"))
        if s["meta"] is not None:
            s["meta"].check(space)
            u0 = s["meta"].u0.clone()
        if s["population"] is not None:
            u0 = pop.start_units(space, s["population"])
        # the optimizer before the target's render: wrong optimizer options cost no render
        self.u = torch.nn.Parameter(u0.clone())
        if s["meta"] is not None:
            from .meta import PerCoordinateSGD
            self.opt = PerCoordinateSGD([self.u], s["meta"].step_sizes, lr=s["lr"])
        else:
            self.opt = run_optimizer(s["optimizer"], [self.u], s["lr"], s["optimizer_options"])
        torch.manual_seed(generator_seed(s["seed"]))
        self.gen = torch.Generator().manual_seed(generator_seed(s["seed"]))
        self.evaluator = BatchEvaluator(self.renderer, self.objective, space, None, max_batch=s["max_batch"],
                                        executor=self.executor)
        if target is None and target_params is not None:
            theta_t = space.flatten(target_params, what="target.params")
            target = self.evaluator.preview(theta_t.unsqueeze(0))[0].detach()
        if target is not None:
            target = torch.as_tensor(target)
            if not target.is_floating_point():
                target = target.float()
            check_target_image(target)
        self.objective.prepare(target)
        self.evaluator.target = self.target = target
        self.estimator.setup(space, s["steps"])
        self._step_scale = lrschedule.step_scale(space, s["lr_units"])

    def _init_state(self) -> None:
        self.step = 0                     # steps completed
        self.history: list[dict[str, Any]] = []
        self.best = {"loss": math.inf, "u": self.u.detach().reshape(-1, self.space.size)[0].clone(), "step": -1}
        self.since_best = 0
        self.patience_ref = math.inf       # the loss an improvement of min_delta is measured against
        self.stopped: str | None = None
        self.run_id = uuid.uuid4().hex[:12]
        self._elapsed_before, self._t0, self._wall = 0.0, time.perf_counter(), 0.0
        self._snap: dict[str, Any] | None = None   # the state at the start of an open step
        self._answers: list[Answer] = []           # batches told in the open step
        self._pending: Batch | None = None
        self._started = False
        self._result: Result | None = None

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What must match for a saved state to belong to this run."""
        return {"renderer": self.renderer.name, "estimator": self.estimator.name,
                "objective": self.objective.name, "params": self.space.names, "n": self.space.size,
                "seed": self.seed, "optimizer": self.settings["optimizer"],
                **({"population": int(self.u.shape[0])} if self.u.ndim == 2 else {})}

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        if self.progress:
            self.callbacks.append(ProgressBar(total=self.steps, initial=self.step))
        settings = {**self.fingerprint, "params": ", ".join(self.space.names), "lr": self.lr, "steps": self.steps,
                    "lr_decay": self.lr_decay, "max_renders": self.max_renders,
                    **{f"estimator.{k}": v for k, v in (self.settings.get("estimator_options") or {}).items()}}
        self.callbacks.on_start(space=self.space, target=self.target, evaluator=self.evaluator,
                                u=pop.observed(self.u, self.history).clone(), start_step=self.step, total_steps=self.steps,
                                history=self.history, settings=settings)

    # -- ask / tell ------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once a stop rule has ended the run; :meth:`result` is then available."""
        self._advance()
        return self.stopped is not None

    def ask(self) -> Batch | None:
        """The next batch the estimator needs rendered (the same one until it is told).

        Returns ``None`` only when the run has finished.
        """
        self._advance()
        return self._pending

    def tell(self, batch: Batch | str | Mapping[str, Any], images: Any = None, *, losses: Any = None) -> None:
        """Answer the pending batch with one image per candidate, or with their loss values.

        ``batch`` is the :class:`Batch` from :meth:`ask` (or its id). A batch that is not the
        pending one, or images of the wrong count, shape or with NaNs, are refused with
        :class:`BatchError`/:class:`RendererOutputError` and change nothing.
        """
        self._advance()
        told = batch.id if isinstance(batch, Batch) else batch.get("id") if isinstance(batch, Mapping) else batch
        refuse_id(str(told), self._pending, self.run_id)
        pending = self._pending
        theta = batch.theta if isinstance(batch, Batch) else pending.theta
        answer = self._answer(pending, theta, images, losses)
        self._answers.append(answer)
        self._pending = None
        self._advance(next_step=False)

    def _answer(self, pending: Batch, theta: torch.Tensor, images: Any, losses: Any) -> Answer:
        if (images is None) == (losses is None):
            raise BatchError(f"tell batch {pending.id!r} with images or with losses (exactly one of them)")
        if losses is not None:
            return self._answer_losses(pending, losses)
        shape_before = self.evaluator.image_shape
        try:
            img = self.evaluator.validate(images, pending.theta.detach(), who=f"the images told for batch {pending.id!r}")
            if not pending.differentiable:
                with torch.no_grad():
                    return Answer(self.evaluator.score(img).detach())
            if not (img.requires_grad and theta.requires_grad):
                raise BatchError(
                    f"batch {pending.id!r} needs images differentiable with respect to batch.theta "
                    f"(estimator {self.estimator.name!r}); render batch.theta with a differentiable "
                    "renderer in this process, or use a black-box estimator")
            values = self.evaluator.score(img)
            (grad,) = torch.autograd.grad(values.sum(), theta, allow_unused=True)
            grad = torch.zeros_like(theta) if grad is None else grad
            return Answer(values.detach(), grad.detach())
        except BaseException:
            self.evaluator.image_shape = shape_before
            raise

    def _answer_losses(self, pending: Batch, losses: Any) -> Answer:
        if pending.differentiable:
            raise BatchError(f"batch {pending.id!r} needs images (its estimator differentiates through "
                             "them); loss values alone cannot answer it")
        try:
            values = torch.as_tensor(losses, dtype=torch.float64).detach().reshape(-1)
        except (TypeError, ValueError) as e:
            raise BatchError(f"losses for batch {pending.id!r} are not numbers: {e}") from None
        if values.numel() != len(pending):
            raise BatchError(f"batch {pending.id!r} has {len(pending)} candidates but {values.numel()} "
                             "losses were told; give one loss per candidate, in order")
        bad = (~torch.isfinite(values)).nonzero()
        if bad.numel():
            row = int(bad[0])
            raise BatchError(f"loss {values[row].item()} told for candidate {row} of batch {pending.id!r} "
                             f"(parameters {pending.params[row]}) is not finite")
        return Answer(values)

    # -- a step ----------------------------------------------------------------------------
    def _ctx(self) -> StepContext:
        if not hasattr(self, "_caps"):  # what estimators may ask about the renderer, asked once
            self._caps = {"differentiable": bool(getattr(self.renderer, "differentiable", False)),
                          "nondifferentiable": tuple(getattr(self.renderer, "nondifferentiable_parameters", list)())}
        return StepContext(step=self.step, total_steps=self.steps, generator=self.gen,
                           max_renders=self.max_renders, **self._caps)

    def _snapshot(self, deep: bool) -> dict[str, Any]:
        """The state a step starts from. ``deep`` copies the estimator's state for replays."""
        return {"estimator": copy.deepcopy(self.estimator.state_dict()) if deep else None,
                "generator": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                "renderer": None if deep else self.renderer.state_dict(),
                "renders": self.evaluator.renders - sum(len(a.losses) for a in self._answers),
                "evaluator": self.evaluator.state_dict(), "objective": objective_state(self.objective),
                "replayed": False}

    def _advance(self, *, next_step: bool = True) -> None:
        """Run steps until a batch is pending or a stop rule ends the run.

        ``next_step=False`` finishes the open step (and applies the stop rules) without
        beginning another: ``tell`` leaves the next step to the next ``ask``.
        """
        self._start()
        while self.stopped is None and self._pending is None:
            if self._snap is None:
                if not self._may_start_step() or not next_step:
                    return
                self._snap = self._snapshot(deep=True)
            est, u_now = self._replay()
            if est is not None:
                self._complete_step(est, u_now)

    def _replay(self) -> tuple[Estimate | None, torch.Tensor]:
        """Run the open step from its start, answering calls from the told batches."""
        snap = self._snap
        if snap["replayed"]:
            self.estimator.load_state_dict(copy.deepcopy(snap["estimator"]))
            self.gen.set_state(snap["generator"])
            torch.set_rng_state(snap["torch_rng"])
        snap["replayed"] = True
        loss_fn = ReplayLoss(self.evaluator, self._answers, snap["renders"])
        u_now = self.u.detach().clone()
        try:
            est = self.estimator.estimate(loss_fn, u_now, self._ctx())
        except _Pending as p:
            theta = p.theta.to(torch.float64)
            self._pending = Batch(batch_id(self.run_id, self.step, loss_fn.calls),
                                  theta.requires_grad_(True) if p.differentiable else theta,
                                  self.space, self.step, loss_fn.calls, p.differentiable)
            est = None
        self.evaluator.renders = loss_fn.renders
        return est, u_now

    def _fast_step(self) -> None:
        """One step with the renderer answering inline: what :meth:`run` does, without replays."""
        if self.checkpoint_dir is not None:  # only needed to re-run this step exactly after a failure
            self._snap = self._snapshot(deep=False)
        u_now = self.u.detach().clone()
        est = self.estimator.estimate(self.evaluator, u_now, self._ctx())
        self._complete_step(est, u_now)

    def _gradient(self, est: Estimate, u_now: torch.Tensor) -> torch.Tensor:
        grad = torch.as_tensor(est.grad).detach().reshape(-1).to(self.u.dtype)
        if grad.shape[0] != self.u.numel():
            raise RendergradError(f"estimator {self.estimator.name!r} returned a gradient of size "
                                  f"{grad.shape[0]} for {self.u.numel()} parameters")
        grad = grad.reshape(self.u.shape)
        if not math.isfinite(float(grad.sum())) and not bool(torch.isfinite(grad).all()):
            raise RendergradError(
                f"estimator {self.estimator.name!r} returned a non-finite gradient at step {self.step} "
                f"(parameters {self.space.decode(self.space.to_theta(u_now), HISTORY_PARAM_MAX_ELEMENTS)}); "
                "lower the learning rate or the smoothing scale, or check the objective")
        return grad

    def _apply(self, grad: torch.Tensor, step: torch.Tensor | None = None) -> None:
        """The optimizer step on ``u``, with the learning-rate decay, clamped to the bounds; or the
        estimator's own ``step`` (an estimator that sized its step), clamped too."""
        self.u.grad = grad  # replaces the previous step's gradient; no zero_grad needed
        if self.lr_decay is not None:
            # Decay to lr·lr_decay over the run (steps or render budget, whichever ends it):
            # recomputed from progress each step, so a resumed run matches exactly.
            done = self.step / self.steps if self.steps else 0.0
            if self.max_renders:
                done = max(done, self.evaluator.renders / self.max_renders)
            for group in self.opt.param_groups:
                group["lr"] = lrschedule.rate(self.lr, self.lr_decay, self.settings["lr_schedule"], done)
        if step is None and self._step_scale is not None:  # lr in parameter units
            before = self.u.detach().clone()
            self.opt.step()
            with torch.no_grad():
                self.u.copy_(before + (self.u - before) * self._step_scale)
        elif step is None:
            self.opt.step()
        else:
            with torch.no_grad():
                self.u.add_(torch.as_tensor(step).detach().reshape(-1).to(self.u.dtype))
        with torch.no_grad():
            self.u.clamp_(0.0, 1.0)

    def _complete_step(self, est: Estimate, u_now: torch.Tensor) -> None:
        grad = self._gradient(est, u_now)
        with deferred_interrupts():  # a Ctrl-C here: the step is taken and recorded, or not at all
            # The step's start is forgotten only together with taking it: until then a checkpoint
            # (at a Ctrl-C, or a failure) saves the state the step began from, not the estimator's
            # and generator's state halfway through it.
            self._snap, self._answers = None, []
            self._apply(grad, est.step)
            loss, best_u = float(est.loss), u_now
            record = {"step": self.step, "loss": loss, "evaluations": self.evaluator.renders}
            if self.evaluator.schedule is not None:  # samples per pixel follow the run: what they cost
                record.update(cost=self.evaluator.cost, sample_fraction=self.evaluator.schedule.fraction)
            if u_now.ndim == 2:  # a population: the best candidate's parameters, every candidate's loss
                extra, row = pop.record(self.space, u_now, pop.candidate_losses(est, u_now.shape[0]))
                loss, best_u = extra["losses"][row], u_now[row]
                record.update(loss=loss, **extra)
            else:
                record["params"] = self.space.decode(self.space.to_theta(u_now), HISTORY_PARAM_MAX_ELEMENTS)
            record.update(est.info)
            self.history.append(record)
            if loss < self.best["loss"]:  # best_loss is the lowest loss seen, whatever min_delta is
                self.best = {"loss": loss, "u": best_u, "step": self.step}
            if loss < self.patience_ref - self.min_delta:
                self.patience_ref = loss
                self.since_best = 0
            else:
                self.since_best += 1
            step = self.step
            self.step += 1
        self.callbacks.on_step(record=record, u=pop.observed(self.u, self.history), evaluator=self.evaluator, step=step,
                               elapsed_s=self.elapsed(), lr=float(self.opt.param_groups[0]["lr"]),
                               best_loss=float(self.best["loss"]))
        if self.checkpoint_dir is not None and self._schedule.due(self.step):
            self.checkpoint()
        self._stop_after(loss)

    # -- stop rules ------------------------------------------------------------------------
    def _may_start_step(self) -> bool:
        if self.step >= self.steps:
            self._finish("steps")
        elif self.max_renders is not None and self.evaluator.renders + self._next_step_renders() > self.max_renders:
            self._finish("max_renders")   # spent, or the next step would end past the budget
        elif getattr(self.estimator, "converged", bool)():
            self._finish("converged")
        return self.stopped is None

    def _next_step_renders(self) -> int:
        """At least one: a step renders something, and what it takes is unknown unless the
        estimator says (:meth:`GradientEstimator.next_step_renders`)."""
        return max(1, int(getattr(self.estimator, "next_step_renders", lambda: None)() or 1))

    def _stop_after(self, loss: float) -> None:
        if self.target_loss is not None and loss <= self.target_loss:
            self._finish("target_loss")
        elif self.patience is not None and self.since_best >= self.patience:
            self._finish("patience")

    def _finish(self, reason: str) -> None:
        self.stopped = reason
        self._wall = self.elapsed()
        self.checkpoint()

    def elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._t0

    # -- driving it in-process -------------------------------------------------------------
    def run(self, *, final_render: bool = True) -> Result:
        """Run to the end with this object's renderer and return the :class:`Result`.

        A step left open by ``ask``/``tell`` (or a loaded state) is finished through them first;
        the rest answers inline, which gives the same numbers as ``ask``/``tell`` without replays.
        """
        if self.external:
            raise ConfigError("this run's images come from outside (external=True); drive it with ask/tell")
        self._start()
        try:
            while self._snap is not None and self.stopped is None:
                self.render_pending()
            while self._may_start_step():
                self._fast_step()
        except BaseException as exc:
            self.checkpoint()
            self.callbacks.on_end(result=None, error=exc)
            raise
        return self.result(final_render=final_render)

    def render_pending(self) -> None:
        """Render the pending batch with this object's renderer and tell it."""
        batch = self.ask()
        if batch is None:
            return
        theta = batch.theta.to(self.evaluator.render_dtype)
        if batch.differentiable:
            images = self.evaluator.render_theta(theta)
        else:
            with torch.no_grad():
                images = self.evaluator.render_theta(theta)
        self.tell(batch, images)

    # -- finish ----------------------------------------------------------------------------
    def result(self, *, final_render: bool = True) -> Result:
        """The run's :class:`Result`, once :attr:`done`; renders the final image once (an extra)."""
        if self._result is not None:
            return self._result
        if not self.done:
            raise RendergradError("the run has not finished: ask/tell until done, or call run()")
        u_final, info = self.u.detach().clone(), {}
        if u_final.ndim == 2:  # a population: its best final candidate is the result
            u_final, info = self._final_candidate(u_final, final_render and not self.external)
        theta_final = self.space.to_theta(u_final)
        final_image, final_loss = None, (self.history[-1]["loss"] if self.history else math.nan)
        if info.get("population_images") is not None:
            final_image = info["population_images"][info["best_candidate"]]
            final_loss = float(info["population_losses"][info["best_candidate"]])
        elif final_render and not self.external:
            final_image, final_loss = self.evaluator.preview_scored(theta_final)
        ev = self.evaluator
        # `loss` is the final parameters' loss (from the final render); `best_loss` the lowest
        # loss seen over the step losses and that final render, so best_loss <= loss always.
        best_loss, best_u = float(self.best["loss"]), self.best["u"]
        if final_loss < best_loss:
            best_loss, best_u = float(final_loss), u_final
        self._result = Result(
            params=self.space.decode(theta_final), best_params=self.space.decode(self.space.to_theta(best_u)),
            loss=final_loss, best_loss=best_loss, evaluations=ev.renders, wall_time_s=self._wall,
            renderer=self.renderer.name, estimator=self.estimator.name, history=self.history,
            theta=theta_final, u=u_final, steps=len(self.history), stopped=self.stopped,
            render_seconds=ev.render_seconds, extra_renders=ev.extra_renders, final_image=final_image,
            target_image=self.target, executor=self.executor.summary(), info=info)
        self.callbacks.on_end(result=self._result, error=None)
        return self._result

    def _final_candidate(self, u: torch.Tensor, render: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        """A population's best final candidate (every candidate rendered once more, as extras)."""
        if render:
            info = pop.final(self.evaluator, self.space, u)
        else:  # no final renders: the last step's losses pick the candidate
            losses = self.history[-1].get("losses") if self.history else None
            best = int(torch.tensor(losses).argmin()) if losses else 0
            info = {"population_theta": self.space.to_theta(u), "population_losses": None, "best_candidate": best}
        return u[info["best_candidate"]].clone(), info

    def close(self) -> None:
        """Close the renderer, and stop the executor's workers, if this object created them by name."""
        if self.owns_executor and getattr(self, "executor", None) is not None:
            self.owns_executor = False
            self.executor.close()
        if self.owns_renderer and getattr(self, "renderer", None) is not None:
            self.renderer.close()
            self.owns_renderer = False

    def __enter__(self) -> "Optimization":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
