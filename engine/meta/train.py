"""``rendergrad meta-train``: a family run file → ``META_DIR``.

``META_DIR`` holds ``meta.json`` (the learned starting point and step sizes with the
parameter-space fingerprint, the costs and the held-out evaluation), ``meta_curve.png``,
``history.json``, ``config.json`` and ``checkpoint/`` (``--resume`` continues bit-identically).

Costs are counted apart: renders of meta-training (inner loops and their meta-gradients),
renders of the targets, renders of the held-out evaluations, and the renders one new task
costs at inference (``inner_steps`` gradient estimates).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..callbacks import Callback, ProgressBar
from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import validate
from ..errors import ConfigError
from ..evaluation import BatchEvaluator
from ..registry import Registry, registry as default_registry
from ..setup import check_compatible
from .family import build_family
from .learner import MetaLearner, Task
from .store import MetaParams, load_meta, space_fingerprint

CONFIG_NAME = "config.json"


def resolve_meta(meta: Any, space) -> MetaParams:
    """``meta=`` of :func:`rendergrad.optimize`: a folder, a path or :class:`MetaParams`, checked."""
    params = load_meta(meta)
    params.check(space)
    return params


def evaluate(learner: MetaLearner, tasks: Sequence[Task], seed: int, *, u0: torch.Tensor | None = None,
             step_sizes: torch.Tensor | None = None, steps: int | None = None) -> dict[str, Any]:
    """Adapt to each task from ``(u0, α)``; mean loss before and after, and parameter error."""
    gen = torch.Generator().manual_seed(seed)
    ev = learner.evaluator
    before, after, err = [], [], []
    u0 = learner.u0.detach() if u0 is None else u0
    for task in tasks:
        learner.activate(task)
        before.append(float(ev(u0.unsqueeze(0))[0]))
        res = learner.adapt(task, gen, u0=u0, step_sizes=step_sizes, steps=steps)
        after.append(res.loss)
        if task.u_star is not None:
            err.append(float((res.u - task.u_star).pow(2).mean().sqrt()))
    n = max(len(tasks), 1)
    return {"tasks": len(tasks), "loss_before": sum(before) / n, "loss_after": sum(after) / n,
            "param_rmse_u": (sum(err) / len(err)) if err else None, "per_task_loss": after}


def _auto_step_size(learner: MetaLearner, tasks: Sequence[Task], gen: torch.Generator) -> float:
    """The best single step size along the gradient at the start, on up to four training tasks.

    The gradient at ``u0`` is estimated once per task, then the loss is rendered at
    ``u0 − t·g`` for a geometric grid of ``t`` (forward renders only, so it works with every
    estimator); the ``t`` with the lowest mean loss starts every coordinate's step size. An
    initial step size off by orders of magnitude would cost the outer loop most of its steps.
    """
    probes = tasks[:4]
    grads = []
    u = learner.u0.detach()
    for task in probes:
        learner.activate(task)
        if learner.order == "second":
            x = u.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(learner.evaluator(x.unsqueeze(0), differentiable=True)[0], x,
                                       allow_unused=True)
            g = torch.zeros_like(x) if g is None else g.detach()
        else:
            learner.estimator.setup(learner.space, learner.inner_steps)
            g, _ = learner._estimate(u, 0, gen)
        grads.append(g)
    rms = sum(float(g.pow(2).mean().sqrt()) for g in grads) / len(grads)
    if not rms > 0 or not math.isfinite(rms):
        raise ConfigError("[meta] step_size = 0 (automatic) found a zero gradient at the start on the first "
                          "tasks (a plateau?); set [meta] step_size, or use a smoothing estimator")
    grid = [0.05 / rms * 2.0 ** k for k in range(-6, 11)]  # first moves from ~0.1 % to ~50 % of the range
    mean = []
    for t in grid:
        total = 0.0
        for task, g in zip(probes, grads):
            learner.activate(task)
            total += float(learner.evaluator(((u - t * g).clamp(0.0, 1.0)).unsqueeze(0))[0])
        mean.append(total / len(probes))
    return grid[min(range(len(grid)), key=mean.__getitem__)]


def meta_curve_plot(path: Path, history: list[dict[str, Any]], evals: list[dict[str, Any]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    if history:
        ax.plot([h["step"] + 1 for h in history], [h["loss"] for h in history], lw=1, alpha=0.7,
                label="training tasks (batch mean, after the inner loop)")
    if evals:
        ax.plot([e["step"] for e in evals], [e["loss_after"] for e in evals], "o-", label="held-out tasks, after")
        ax.plot([e["step"] for e in evals], [e["loss_before"] for e in evals], "x--", label="held-out tasks, at u0")
    ax.set_yscale("log")
    ax.set_xlabel("outer step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.set_title("meta-training")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def meta_train(cfg: dict[str, Any], out: str | Path, *, resume: bool = False, progress: bool = False,
               callbacks: Sequence[Callback] = (), registry: Registry | None = None,
               renderer: Any = None, objective: Any = None, estimator: Any = None,
               tasks: tuple[list[Task], list[Task]] | None = None, return_tasks: bool = False) -> Any:
    """Meta-train on the family ``cfg`` describes; write everything into ``out``.

    ``renderer``/``objective``/``estimator`` instances replace the plugins the config names
    (the caller then owns the renderer; it is not closed). ``tasks=(train, test)`` replaces the
    family ``[target]`` describes (targets from elsewhere: photos, another renderer).
    ``return_tasks=True`` returns
    ``(MetaParams, train_tasks, test_tasks)``.
    """
    cfg = validate(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2))
    m = cfg["meta"]
    for key in ("tasks_per_batch", "outer_steps", "inner_steps"):
        if m[key] < 1:
            raise ConfigError(f"[meta] {key} must be >= 1, got {m[key]}")
    if not m["meta_lr"] > 0 or not 0 < m["meta_lr_decay"] <= 1 or m["step_size"] < 0:
        raise ConfigError("[meta] meta_lr must be > 0, meta_lr_decay in (0, 1], step_size >= 0 (0: automatic)")
    reg = registry or default_registry()
    owned = renderer is None
    if owned:
        renderer = reg.create("renderer", cfg["renderer"]["name"], dict(cfg["renderer"]["options"]))
    try:
        if objective is None:
            objective = reg.create("objective", cfg["objective"]["name"], dict(cfg["objective"]["options"]))
        if m["order"] == "second":
            estimator = None
        elif estimator is None:
            estimator = reg.create("estimator", cfg["estimator"]["name"], dict(cfg["estimator"]["options"]))
        if estimator is not None:
            check_compatible(renderer, estimator)  # the configured instance decides, not its class
        params, train, test = _train(cfg, out, renderer, objective, estimator, resume=resume, progress=progress,
                                     callbacks=callbacks, tasks=tasks)
        return (params, train, test) if return_tasks else params
    finally:
        if owned:
            renderer.close()


def _train(cfg, out: Path, renderer, objective, estimator, *, resume: bool, progress: bool,
           callbacks: Sequence[Callback], tasks: tuple[list[Task], list[Task]] | None = None
           ) -> tuple[MetaParams, list[Task], list[Task]]:
    run = _MetaRun(cfg, out, renderer, objective, estimator, tasks)
    if resume:
        run.restore()
    elif run.m["step_size"] == 0:
        run.auto_step_size()
    cbs = list(callbacks)
    if progress:
        cbs.append(ProgressBar(total=run.m["outer_steps"], initial=run.learner.step, desc="meta-training"))
    if not resume and not run.evals and run.test:
        run.run_eval(0)
    run.outer_loop(cbs)
    return run.finish(), run.train, run.test


class _MetaRun:
    """One meta-training: set-up, checkpoint, the outer loop and the saved result, one job each."""

    def __init__(self, cfg, out: Path, renderer, objective, estimator,
                 tasks: tuple[list[Task], list[Task]] | None) -> None:
        self.m = m = cfg["meta"]
        self.out, self.renderer, self.objective, self.estimator = out, renderer, objective, estimator
        self.space = space = renderer.parameter_space()
        self.ev = ev = BatchEvaluator(renderer, objective, space, None, max_batch=cfg["optimizer"].get("max_batch"))
        self.train, self.test = (build_family(cfg["target"], m, ev) if tasks is None
                                 else (list(tasks[0]), list(tasks[1])))
        if not self.train:
            raise ConfigError("meta-training needs at least one training task")
        u_init = space.to_unit(space.flatten(cfg["params"]["init"], what="params.init"))
        self.seed = seed = int(m["seed"])
        torch.manual_seed(seed)
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.learner = MetaLearner(ev, estimator=estimator, order=m["order"], inner_steps=m["inner_steps"],
                                   u0=u_init, step_size=float(m["step_size"]) or 1.0, meta_lr=float(m["meta_lr"]),
                                   meta_lr_decay=float(m["meta_lr_decay"]), outer_steps=m["outer_steps"])
        self.fingerprint = {"space": space_fingerprint(space)["hash"], "renderer": renderer.name,
                            "objective": objective.name, "estimator": self.estimator_name, "order": m["order"],
                            "inner_steps": m["inner_steps"], "seed": seed, "tasks": len(self.train),
                            "test_tasks": len(self.test)}
        self.ckpt = out / "checkpoint"
        self.history: list[dict[str, Any]] = []
        self.evals: list[dict[str, Any]] = []
        self.costs: dict[str, Any] = {"meta_renders": 0, "eval_renders": 0, "elapsed": 0.0,
                                      "initial_step_size": None}
        self.target_renders = ev.extra_renders
        self.eval_every = m["eval_every"] or max(1, m["outer_steps"] // 10)

    @property
    def estimator_name(self) -> str:
        return self.estimator.name if self.estimator else "analytic"

    def restore(self) -> None:
        st = load_checkpoint(self.ckpt, self.fingerprint)
        self.learner.load_state_dict(st["learner"])
        self.gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        self.renderer.load_state_dict(st["renderer"])
        self.history, self.evals, self.costs = st["history"], st["evals"], st["costs"]

    def auto_step_size(self) -> None:
        before = self.ev.renders
        alpha0 = _auto_step_size(self.learner, self.train, self.gen)
        with torch.no_grad():
            self.learner.log_alpha.fill_(math.log(alpha0))
        self.costs["meta_renders"] += self.ev.renders - before
        self.costs["initial_step_size"] = alpha0

    def run_eval(self, step: int) -> None:
        before = self.ev.renders
        e = evaluate(self.learner, self.test, self.seed + 2) if self.test else None
        self.costs["eval_renders"] += self.ev.renders - before
        if e:
            self.evals.append({"step": step, "loss_before": e["loss_before"], "loss_after": e["loss_after"],
                               "param_rmse_u": e["param_rmse_u"]})

    def rng_state(self) -> tuple:
        return self.gen.get_state(), torch.get_rng_state(), self.renderer.state_dict()

    def save(self, step_rng: tuple | None = None) -> None:
        gstate, tstate, rstate = step_rng or self.rng_state()
        save_checkpoint(self.ckpt, {"fingerprint": self.fingerprint, "learner": self.learner.state_dict(),
                                    "generator": gstate, "torch_rng": tstate, "renderer": rstate,
                                    "history": self.history, "evals": self.evals, "costs": self.costs})

    def outer_loop(self, cbs: list[Callback]) -> None:
        """Outer steps to the end; an interrupted step re-runs from its start on resume."""
        m, learner, ev = self.m, self.learner, self.ev
        t0, elapsed0 = time.perf_counter(), self.costs["elapsed"]
        step_rng, in_step = None, False
        try:
            while learner.step < m["outer_steps"]:
                step = learner.step
                step_rng = self.rng_state()
                before = ev.renders
                in_step = True
                idx = torch.randperm(len(self.train), generator=self.gen)[:m["tasks_per_batch"]].tolist()
                loss = learner.outer_step([self.train[i] for i in idx], self.gen)
                in_step = False
                self.costs["meta_renders"] += ev.renders - before
                self.costs["elapsed"] = elapsed0 + time.perf_counter() - t0
                record = {"step": step, "loss": loss, "evaluations": self.costs["meta_renders"]}
                self.history.append(record)
                if (step + 1) % self.eval_every == 0 or step + 1 == m["outer_steps"]:
                    self.run_eval(step + 1)
                for cb in cbs:
                    cb.on_step(record=record)
                if m["checkpoint_every"] and (step + 1) % m["checkpoint_every"] == 0:
                    self.save()
        except BaseException:
            # Keep every completed outer step; one interrupted inside re-runs on resume from its start.
            self.save(step_rng if in_step else None)
            for cb in cbs:
                cb.on_end(result=None)
            raise
        self.save()
        for cb in cbs:
            cb.on_end(result=None)

    def finish(self) -> MetaParams:
        """Evaluate, measure the inference cost, and write the learned start and step sizes."""
        learner, test, ev = self.learner, self.test, self.ev
        final = evaluate(learner, test, self.seed + 2) if test else None
        before = ev.renders
        evaluate(learner, test[:1] or self.train[:1], self.seed + 3)
        inference_renders = ev.renders - before - 1  # one render is the loss at u0, not part of inference
        params = MetaParams(u0=learner.u0.detach().clone(), step_sizes=learner.step_sizes.clone(),
                            fingerprint=space_fingerprint(self.space), inner_steps=self.m["inner_steps"],
                            info=self.info(final, inference_renders))
        params.save(self.out, self.space)
        (self.out / "history.json").write_text(json.dumps({"outer": self.history, "evaluations": self.evals},
                                                          indent=2))
        meta_curve_plot(self.out / "meta_curve.png", self.history, self.evals)
        return params

    def info(self, final: dict[str, Any] | None, inference_renders: int) -> dict[str, Any]:
        m, costs, learner = self.m, self.costs, self.learner
        return {
            "order": m["order"], "renderer": self.renderer.name, "objective": self.objective.name,
            "estimator": self.estimator_name,
            "meta_training": {"outer_steps": learner.step, "tasks": len(self.train), "test_tasks": len(self.test),
                              "tasks_per_batch": m["tasks_per_batch"], "renders": costs["meta_renders"],
                              "target_renders": self.target_renders, "eval_renders": costs["eval_renders"],
                              "seconds": costs["elapsed"], "initial_step_size": costs["initial_step_size"],
                              "final_batch_loss": self.history[-1]["loss"] if self.history else None},
            "inference": {"steps": m["inner_steps"], "renders_per_task": inference_renders},
            "evaluation": {k: v for k, v in (final or {}).items() if k != "per_task_loss"},
            "step_size_summary": {"min": float(learner.step_sizes.min()), "max": float(learner.step_sizes.max()),
                                  "median": float(learner.step_sizes.median())},
        }


def resume_meta(out: str | Path, *, progress: bool = False, callbacks: Sequence[Callback] = (),
                registry: Registry | None = None) -> MetaParams:
    """Continue the meta-training whose folder is ``out``."""
    path = Path(out) / CONFIG_NAME
    if not path.exists():
        raise ConfigError(f"{out} is not a meta-training folder (no {CONFIG_NAME}); "
                          "start one with `rendergrad meta-train FAMILY.toml --out DIR`")
    return meta_train(json.loads(path.read_text()), out, resume=True, progress=progress, callbacks=callbacks,
                      registry=registry)
