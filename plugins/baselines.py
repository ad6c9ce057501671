"""Derivative-free baselines at equal render budget: CMA-ES (pycma) and any nevergrad optimizer.

In a few dimensions a good derivative-free optimizer is the bar a gradient estimator must
clear, so these run through exactly the same batched evaluation path (:class:`BatchEvaluator`)
as every estimator: same normalised space, same clamping, same render counting, and a
:class:`rendergrad.Result` shaped like :func:`rendergrad.optimize`'s.

They are optimizers, not gradient estimators (they choose the next parameters themselves), so
they are driven by :func:`minimize` rather than plugged into the gradient loop::

    from rendergrad.plugins.baselines import minimize
    res = minimize("toy", "mse", "cma", target_params={"x": 0.7, "y": 0.3}, budget=400, seed=0)
    res = minimize("toy", "mse", "NGOpt", ...)   # any name in nevergrad's optimizer registry

or from the command line: ``rendergrad baseline RUN.toml --method cma --budget 400 --out DIR``.
The reported parameters are the optimizer's recommendation (CMA-ES: its mean; nevergrad:
``provide_recommendation()``), evaluated like every other run's.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from rendergrad import hookimpl
from rendergrad.errors import ConfigError
from rendergrad.evaluation import BatchEvaluator
from rendergrad.interfaces import Objective, Renderer
from rendergrad.loop import HISTORY_PARAM_MAX_ELEMENTS, Result
from rendergrad.registry import registry as default_registry
from rendergrad.seeding import generator_seed


def nevergrad_names() -> list[str]:
    import nevergrad as ng
    return sorted(ng.optimizers.registry.keys())


class _CMA:
    """pycma ask/tell in ``[0, 1]^n``; diagonal covariance above ``diagonal_above`` dims."""

    def __init__(self, u0: np.ndarray, seed: int, sigma0: float = 0.2, popsize: int | None = None,
                 diagonal_above: int = 200, **options: Any):
        import cma
        self.n = u0.shape[0]
        self.pad = self.n == 1  # pycma needs >= 2 dimensions: carry one ignored coordinate
        x0 = np.concatenate([u0, [0.5]]) if self.pad else u0
        opts = {"bounds": [0.0, 1.0], "seed": generator_seed(seed) + 1, "verbose": -9, "verb_log": 0,
                "verb_disp": 0, "CMA_diagonal": x0.shape[0] > diagonal_above}
        if popsize:
            opts["popsize"] = int(popsize)
        opts.update(options)
        try:
            self.es = cma.CMAEvolutionStrategy(x0.tolist(), float(sigma0), opts)
        except Exception as e:  # pycma raises plain errors for bad option names/values
            raise ConfigError(f"cma: {e}") from e
        self.batch = self.es.popsize

    def ask(self) -> np.ndarray:
        self._x = self.es.ask()
        x = np.asarray(self._x)
        return x[:, : self.n]

    def tell(self, losses: np.ndarray) -> None:
        self.es.tell(self._x, [float(v) for v in losses])

    def recommendation(self) -> np.ndarray:
        # xfavorite: the mean mapped through pycma's boundary transform (the point it
        # actually believes in); the raw mean may lie outside the bounds
        return np.clip(np.asarray(self.es.result.xfavorite)[: self.n], 0.0, 1.0)

    def done(self) -> bool:
        """pycma's own termination (step size or spread below tolerance): asking on after it
        lets the degenerate covariance carry the mean away."""
        return bool(self.es.stop())


class _Nevergrad:
    """Any optimizer from ``nevergrad.optimizers.registry``, asked ``batch`` points at a time."""

    def __init__(self, name: str, u0: np.ndarray, seed: int, budget: int, batch: int = 1,
                 sigma: float = 0.2, **options: Any):
        import nevergrad as ng
        if name not in ng.optimizers.registry:
            import difflib
            close = difflib.get_close_matches(name, list(ng.optimizers.registry), n=3)
            raise ConfigError(f"unknown optimizer {name!r}: not 'cma' nor a nevergrad registry name"
                              + (f"; did you mean {', '.join(close)}?" if close else "")
                              + " (list them with rendergrad.plugins.baselines.nevergrad_names())")
        # σ in fractions of the [0, 1] range, like every other method here
        param = ng.p.Array(init=u0.copy()).set_bounds(0.0, 1.0).set_mutation(sigma=float(sigma))
        param.random_state = np.random.RandomState(generator_seed(seed))
        self.batch = int(batch)
        self.opt = ng.optimizers.registry[name](parametrization=param, budget=int(budget),
                                                num_workers=self.batch, **options)

    def ask(self) -> np.ndarray:
        self._cands = [self.opt.ask() for _ in range(self.batch)]
        return np.stack([np.asarray(c.value, dtype=np.float64) for c in self._cands])

    def tell(self, losses: np.ndarray) -> None:
        for c, v in zip(self._cands, losses):
            self.opt.tell(c, float(v))

    def recommendation(self) -> np.ndarray:
        return np.clip(np.asarray(self.opt.provide_recommendation().value, dtype=np.float64), 0.0, 1.0)


def minimize(renderer: Renderer | str, objective: Objective | str = "mse", method: str = "cma", *,
             target: torch.Tensor | None = None, target_params: Mapping[str, Any] | None = None,
             renderer_options: Mapping[str, Any] | None = None,
             objective_options: Mapping[str, Any] | None = None,
             init: Mapping[str, Any] | None = None, budget: int = 1000, seed: int = 0,
             options: Mapping[str, Any] | None = None, max_batch: int | None = None,
             on_step: Callable[[dict[str, Any], torch.Tensor], None] | None = None,
             final_render: bool = True, close: bool = False) -> Result:
    """Minimise the objective with CMA-ES (``method="cma"``) or a nevergrad optimizer by name.

    Spends at most ``budget`` renders (whole batches only). ``options`` go to the optimizer
    (CMA: ``sigma0``, ``popsize`` and any pycma option; nevergrad: ``batch`` and the
    optimizer's own keyword arguments). ``on_step(record, u)`` sees every batch with the
    current recommendation ``u`` (normalised). History records match :func:`rendergrad.optimize`.
    """
    reg = default_registry()
    if isinstance(renderer, str):
        renderer = reg.create("renderer", renderer, dict(renderer_options or {}))
    if isinstance(objective, str):
        objective = reg.create("objective", objective, dict(objective_options or {}))
    if not (isinstance(budget, int) and budget > 0):
        raise ConfigError(f"budget (renders) must be a positive integer, got {budget!r}")
    space = renderer.parameter_space()
    u0 = space.to_unit(space.flatten(init or {}, what="init")).numpy()
    evaluator = BatchEvaluator(renderer, objective, space, None, max_batch=max_batch)
    if target is None and target_params is not None:
        target = evaluator.preview(space.flatten(target_params, what="target.params").unsqueeze(0))[0].detach()
    if target is not None:
        target = torch.as_tensor(target).float()
    objective.prepare(target)
    evaluator.target = target

    opts = dict(options or {})
    if method.lower() in ("cma", "cma-es", "cmaes"):
        opt: Any = _CMA(u0, seed, **opts)
        name = "cma"
    else:
        opt = _Nevergrad(method, u0, seed, budget, **opts)
        name = method

    history: list[dict[str, Any]] = []
    best = {"loss": math.inf, "u": torch.as_tensor(u0)}
    quiet = warnings.catch_warnings()  # pycma/nevergrad warn per iteration about their internals
    quiet.__enter__()
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    step = 0
    try:
        stopped = "max_renders"
        while evaluator.renders + opt.batch <= budget:
            if getattr(opt, "done", lambda: False)():
                stopped = "converged"
                break
            x = opt.ask()
            losses = evaluator(torch.as_tensor(x, dtype=torch.float64)).double().numpy()
            opt.tell(losses)
            i = int(np.argmin(losses))
            if losses[i] < best["loss"]:
                best = {"loss": float(losses[i]), "u": torch.as_tensor(x[i])}
            u_rec = torch.as_tensor(opt.recommendation())
            record = {"step": step, "loss": float(np.mean(losses)), "evaluations": evaluator.renders,
                      "params": space.decode(space.to_theta(u_rec), HISTORY_PARAM_MAX_ELEMENTS)}
            history.append(record)
            if on_step is not None:
                on_step(record, u_rec)
            step += 1
    finally:
        quiet.__exit__(None, None, None)
        if close and not final_render:
            renderer.close()
    wall = time.perf_counter() - t0
    u_final = torch.as_tensor(opt.recommendation())
    theta = space.to_theta(u_final)
    final_image, final_loss = None, math.nan
    try:
        if final_render:
            final_image, final_loss = evaluator.preview_scored(theta)
    finally:
        if close and final_render:
            renderer.close()
    return Result(params=space.decode(theta), best_params=space.decode(space.to_theta(best["u"])),
                  loss=final_loss, best_loss=best["loss"], evaluations=evaluator.renders, wall_time_s=wall,
                  renderer=renderer.name, estimator=name, history=history, theta=theta, u=u_final,
                  steps=len(history), stopped=stopped, render_seconds=evaluator.render_seconds,
                  extra_renders=evaluator.extra_renders, final_image=final_image, target_image=target)


# -- command line -----------------------------------------------------------------------------
def _cmd_baseline(args: argparse.Namespace) -> int:
    from rendergrad.config import load_config
    cfg = load_config(args.config)
    from rendergrad.imageio import load_image
    target = load_image(cfg["target"]["image"]) if "image" in cfg["target"] else None
    target_params = cfg["target"].get("params")
    res = minimize(cfg["renderer"]["name"], cfg["objective"]["name"], args.method,
                   renderer_options=cfg["renderer"].get("options"),
                   objective_options=cfg["objective"].get("options"), init=cfg["params"]["init"],
                   target=target, target_params=target_params, budget=args.budget, seed=args.seed,
                   options=json.loads(args.options) if args.options else None, close=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(res.to_json(), indent=2))
    print(f"{args.method}: loss {res.loss:.4g} after {res.evaluations} renders; params {res.params}")
    print(f"wrote {out / 'result.json'}")
    return 0


@hookimpl
def rendergrad_add_commands(subparsers):
    p = subparsers.add_parser("baseline", help="minimise a run's objective with CMA-ES or a nevergrad optimizer",
                              description="Run the scene, target and objective of RUN.toml through a "
                                          "derivative-free optimizer at a fixed render budget.")
    p.add_argument("config", help="run file (TOML); its [estimator] and [optimizer] tables are ignored")
    p.add_argument("--method", default="cma", help="'cma' or a nevergrad registry name (e.g. NGOpt, DE)")
    p.add_argument("--budget", type=int, default=1000, help="renders to spend")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--options", default="", help='optimizer options as JSON, e.g. \'{"sigma0": 0.1}\'')
    p.add_argument("--out", default="baseline-out", help="output directory for result.json")
    p.set_defaults(func=_cmd_baseline)
