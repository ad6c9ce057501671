"""Derivative-free baselines at equal render budget: CMA-ES (pycma) and any nevergrad optimizer.

In a few dimensions a good derivative-free optimizer is the bar a gradient estimator must
clear. They are estimators like any other (``cma``, ``nevergrad``, ``ngopt`` in
:mod:`rendergrad.plugins.dfo`) that propose the step themselves, so they run through the same
:class:`rendergrad.Optimization` and :class:`BatchEvaluator` as every method: same normalised
space, same clamping, same render counting, same checkpoints, callbacks and stop rules. In a run
file, ``[estimator] name = "cma"``. :func:`minimize` is the render-budget interface kept for
benchmarks and scripts::

    from rendergrad.plugins.baselines import minimize
    res = minimize("toy", "mse", "cma", target_params={"x": 0.7, "y": 0.3}, budget=400, seed=0)
    res = minimize("toy", "mse", "NGOpt", ...)   # any name in nevergrad's optimizer registry

or from the command line: ``rendergrad baseline RUN.toml --method cma --budget 400 --out DIR``.
The reported parameters are the optimizer's recommendation (CMA-ES: its mean; nevergrad:
``provide_recommendation()``), evaluated like every other run's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from rendergrad import hookimpl
from rendergrad.callbacks import Callback
from rendergrad.errors import ConfigError
from rendergrad.interfaces import Objective, Renderer
from rendergrad.loop import Result
from rendergrad.optimization import Optimization
from rendergrad.registry import registry as default_registry

from .dfo import nevergrad_names  # noqa: F401  (kept importable from here)

CMA_NAMES = ("cma", "cma-es", "cmaes")
CMA_KEYS = ("sigma0", "popsize", "diagonal_above", "seed")
NEVERGRAD_KEYS = ("batch", "sigma", "budget", "seed")


def estimator_for(method: str, options: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The estimator name and options for ``method`` ("cma" or a nevergrad registry name) with
    :func:`minimize`'s flat ``options`` (the estimator's own keys; the rest go to the library)."""
    flat = dict(options or {})
    cma = method.lower() in CMA_NAMES
    keys = CMA_KEYS if cma else NEVERGRAD_KEYS
    est = {k: flat.pop(k) for k in keys if k in flat}
    if flat:
        est["options"] = flat
    if cma:
        return "cma", est
    return "nevergrad", {"optimizer": method, **est}


class _OnStep(Callback):
    """Hands every step to a ``on_step(record, u)`` function, ``u`` after the step (normalised)."""

    def __init__(self, fn: Callable[[dict[str, Any], torch.Tensor], None]):
        self.fn = fn

    def on_step(self, *, record: dict[str, Any], u: torch.Tensor | None = None, **kw: Any) -> None:
        self.fn(record, u.detach().clone())


def minimize(renderer: Renderer | str, objective: Objective | str = "mse", method: str = "cma", *,
             target: torch.Tensor | None = None, target_params: Mapping[str, Any] | None = None,
             renderer_options: Mapping[str, Any] | None = None,
             objective_options: Mapping[str, Any] | None = None,
             init: Mapping[str, Any] | None = None, budget: int = 1000, seed: int = 0,
             options: Mapping[str, Any] | None = None, max_batch: int | None = None,
             on_step: Callable[[dict[str, Any], torch.Tensor], None] | None = None,
             final_render: bool = True, close: bool = False) -> Result:
    """Minimise the objective with CMA-ES (``method="cma"``) or a nevergrad optimizer by name.

    Spends at most ``budget`` renders, whole generations only: an :class:`rendergrad.Optimization`
    with the ``cma`` or ``nevergrad`` estimator and ``max_renders = budget``, which never starts a
    generation that would end past it. ``options`` go to the estimator (CMA: ``sigma0``, ``popsize``,
    ``diagonal_above``, ``seed``; nevergrad: ``batch``, ``sigma``, ``budget``, ``seed``) and
    the rest to the library (any pycma option; the nevergrad optimizer's keyword arguments).
    ``on_step(record, u)`` sees every generation with the recommendation ``u`` (normalised)
    after it. Stops early with ``stopped = "converged"`` when CMA-ES terminates itself.
    ``best_loss`` is the lowest step loss (a population's mean loss) or the final render's.
    A renderer given by name is closed at the end; ``close=True`` closes one given as an instance.
    """
    if not (isinstance(budget, int) and not isinstance(budget, bool) and budget > 0):
        raise ConfigError(f"budget (renders) must be a positive integer, got {budget!r}")
    name, est_options = estimator_for(method, options)
    if name == "nevergrad":
        est_options.setdefault("budget", budget)
    reg = default_registry()
    owned = isinstance(renderer, str)
    if owned:
        renderer = reg.create("renderer", renderer, dict(renderer_options or {}))
    try:
        run = Optimization(renderer, objective, name, estimator_options=est_options,
                           objective_options=objective_options, target=target, target_params=target_params,
                           init=init, steps=budget, max_renders=budget, seed=seed,
                           max_batch=max_batch, callbacks=[_OnStep(on_step)] if on_step else (),
                           registry=reg)
        res = run.run(final_render=final_render)
    finally:
        if owned or close:
            renderer.close()
    return dataclasses.replace(res, estimator="cma" if name == "cma" else method)


# -- command line -----------------------------------------------------------------------------
def _json_options(text: str) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        options = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--options is not JSON ({e.msg} at character {e.pos}): give a JSON object, "
                          "e.g. --options '{\"sigma0\": 0.1}'") from None
    if not isinstance(options, dict):
        raise ConfigError(f"--options must be a JSON object (name: value), got {text!r}")
    return options


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
                   options=_json_options(args.options), close=True)
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
                                          "derivative-free optimizer at a fixed render budget (whole "
                                          "generations only) and write result.json. For a run folder with "
                                          "checkpoints, progress and a report, use `rendergrad run` with "
                                          "[estimator] name = \"cma\" (or \"nevergrad\").")
    p.add_argument("config", help="run file (TOML); its [estimator] and [optimizer] tables are ignored")
    p.add_argument("--method", default="cma", help="'cma' or a nevergrad registry name (e.g. NGOpt, DE)")
    p.add_argument("--budget", type=int, default=1000, help="renders to spend")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--options", default="", help='optimizer options as JSON, e.g. \'{"sigma0": 0.1}\'')
    p.add_argument("--out", default="baseline-out", help="output directory for result.json")
    p.set_defaults(func=_cmd_baseline)
