"""Setting a run up: plugins from names, the torch optimizer, and the checks that come first.

Everything here runs before the first render, so a mistake in a run file costs nothing.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch

from .errors import ConfigError, IncompatiblePluginsError
from .registry import Registry

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}


def resolve(reg: Registry, kind: str, obj: Any, options: Mapping[str, Any] | None) -> Any:
    """A plugin instance from a name (created with ``options``) or the instance itself."""
    if isinstance(obj, str):
        return reg.create(kind, obj, dict(options or {}))
    if options:
        raise ConfigError(f"{kind} options were given but the {kind} is already an instance")
    return obj


def make_optimizer(name: str, params: list[torch.Tensor], lr: float, options: Mapping[str, Any] | None):
    """The torch optimizer ``name`` over ``params``; fused Adam where the caller did not choose."""
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


class DeferredOptimizer:
    """A torch optimizer built at its first step, standing in for it until then.

    Why: building any torch optimizer imports torch's compiler (``add_param_group`` is wrapped to
    keep it out of compiled graphs), about 2.5 s on the machines here, and an estimator that sizes
    its own steps (PRDPT and ZeroGrads at their defaults return ``Estimate.step``) never uses the
    run's optimizer. Until the first step the learning rate lives in :attr:`param_groups` (the lr
    decay writes it there), and a checkpoint records ``{"deferred": True, "lr": ...}``.
    """

    def __init__(self, build: Callable[[], torch.optim.Optimizer], lr: float):
        self._build = build
        self._optimizer: torch.optim.Optimizer | None = None
        self._groups: list[dict[str, Any]] = [{"lr": lr}]

    @property
    def built(self) -> bool:
        return self._optimizer is not None

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self._optimizer.param_groups if self._optimizer is not None else self._groups

    def _real(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            self._optimizer = self._build()
            for group, lazy in zip(self._optimizer.param_groups, self._groups):
                group["lr"] = lazy["lr"]
        return self._optimizer

    def step(self) -> None:
        self._real().step()

    def state_dict(self) -> dict[str, Any]:
        if self._optimizer is None:
            return {"deferred": True, "lr": self._groups[0]["lr"]}
        return self._optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("deferred"):
            self._optimizer, self._groups = None, [{"lr": state["lr"]}]
        else:
            self._real().load_state_dict(state)


def run_optimizer(name: str, params: list[torch.Tensor], lr: float,
                  options: Mapping[str, Any] | None) -> torch.optim.Optimizer | DeferredOptimizer:
    """The run's optimizer: built now when options were given (so a wrong one fails before the
    first render), else deferred to its first step (:class:`DeferredOptimizer`)."""
    if options or name not in OPTIMIZERS:
        return make_optimizer(name, params, lr, options)
    return DeferredOptimizer(lambda: make_optimizer(name, params, lr, options), lr)


def check_compatible(renderer: Any, estimator: Any, *, external: bool = False) -> None:
    """Refuse an estimator that needs gradients the renderer (or a render farm) cannot give."""
    if not getattr(estimator, "requires_differentiable", False):
        return
    if external:
        raise IncompatiblePluginsError(
            f"estimator {estimator.name!r} needs images differentiable with respect to the parameters, "
            "which renders made outside this process cannot carry. Use a black-box estimator "
            "(prdpt, zerograds, spsa, fd) for external renders.")
    if not getattr(renderer, "differentiable", False):
        # The instance decides: the same renderer class may be differentiable in one mode only.
        when = getattr(renderer, "differentiable_when", None)
        how = (", ".join(f"{k} = {v!r}" for k, v in when.items()) if when
               else "a differentiable mode of the renderer")
        raise IncompatiblePluginsError(
            f"estimator {estimator.name!r} needs gradients from the renderer, but renderer "
            f"{renderer.name!r} is forward-only as configured. Use a black-box estimator (e.g. prdpt, "
            f"zerograds, spsa, fd) or set [renderer] {how}.")


def check_settings(steps: int, lr: float, lr_decay: float | None) -> None:
    """Refuse step counts and learning rates that cannot mean anything."""
    if steps < 0:
        raise ConfigError("steps must be >= 0")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"lr must be a positive number, got {lr!r}")
    if lr_decay is not None and not (isinstance(lr_decay, (int, float)) and 0 < lr_decay <= 1):
        raise ConfigError(f"lr_decay is the final learning rate as a fraction of lr, in (0, 1]; got {lr_decay!r}")
