"""The state of an :class:`~rendergrad.optimization.Optimization`: save, load, resume.

A saved state is the state at the start of the open step plus the batches told in it, so a
load continues exactly: the step is replayed and asks for the same pending batch. Files are
read with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .asktell import Answer
from .callbacks import Callback, CallbackList
from .checkpoint import deferred_interrupts, load_checkpoint, save_checkpoint
from .errors import ConfigError
from .registry import Registry


class RunState:
    """Mixed into :class:`~rendergrad.optimization.Optimization`: everything about its state."""

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` needs to continue exactly (torch-loadable with
        ``weights_only=True``): the state at the start of the open step, plus its told batches."""
        snap = self._snap or {}
        est = snap.get("estimator")
        ev = self.evaluator
        return {
            "fingerprint": self.fingerprint, "names": self.names, "settings": self._saved_settings(),
            "run_id": self.run_id, "step": self.step, "u": self.u.detach().clone(),
            "optimizer": self.opt.state_dict(),
            "estimator": est if est is not None else self.estimator.state_dict(),
            "renderer": snap.get("renderer") or self.renderer.state_dict(),
            "generator": snap.get("generator", self.gen.get_state()),
            "torch_rng": snap.get("torch_rng", torch.get_rng_state()),
            "history": self.history, "renders": ev.renders, "cost": ev.cost, "render_seconds": ev.render_seconds,
            "extra_renders": ev.extra_renders, "elapsed": self.elapsed(),
            "evaluator": self._evaluator_state(snap),
            "best_loss": self.best["loss"], "best_u": self.best["u"], "best_step": self.best["step"],
            "since_best": self.since_best, "patience_ref": self.patience_ref, "answers": [a.to_state() for a in self._answers],
            "target": self.target, "objective": self._objective_state(snap),
        }

    def _evaluator_state(self, snap: Mapping[str, Any]) -> dict[str, Any]:
        """Where the run is in its sequence of images: at the open step's start unless batches were
        rendered in it, since a step that asks again (a second call, as PRDPT's elite check does)
        must get the next images' noise after a resume, not the first call's again."""
        if snap.get("evaluator") is not None and not self._answers:
            return snap["evaluator"]
        return self.evaluator.state_dict()

    def _objective_state(self, snap: Mapping[str, Any]) -> dict[str, Any]:
        """The objective's random state: at the open step's start unless batches were told in it
        (their losses are saved, so the objective has already drawn for them)."""
        if snap.get("objective") is not None and not self._answers:
            return snap["objective"]
        return objective_state(self.objective)

    def _saved_settings(self) -> dict[str, Any] | None:
        """The settings, if a checkpoint can hold them (plain values only); else None."""
        settings = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self.settings.items()}
        if settings.get("meta") is not None:
            settings["meta"] = settings["meta"].to_json()
        return settings if _plain(settings) else None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the same step, the same pending batch."""
        with torch.no_grad():
            self.u.copy_(state["u"])
        self.opt.load_state_dict(state["optimizer"])
        self.estimator.load_state_dict(state["estimator"])
        self.renderer.load_state_dict(state["renderer"])
        if state.get("objective") and hasattr(self.objective, "load_state_dict"):
            self.objective.load_state_dict(state["objective"])
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        ev = self.evaluator
        self.step, self.history = state["step"], state["history"]
        ev.renders, ev.render_seconds = state["renders"], state["render_seconds"]
        ev.cost = float(state.get("cost", ev.renders))
        ev.extra_renders = state.get("extra_renders", ev.extra_renders)
        ev.load_state_dict(state.get("evaluator", {}))
        self._elapsed_before, self._t0 = state["elapsed"], time.perf_counter()
        self.best = {"loss": state["best_loss"], "u": state["best_u"], "step": state["best_step"]}
        self.since_best = state.get("since_best", 0)
        self.patience_ref = state.get("patience_ref", state["best_loss"])
        self.run_id = state.get("run_id", self.run_id)
        self._answers = [Answer.from_state(a) for a in state.get("answers", [])]
        self._pending, self._snap, self.stopped, self._result = None, None, None, None
        if self._answers:
            self._snap = self._snapshot(deep=True)

    def checkpoint(self) -> None:
        """Save to ``checkpoint_dir`` if the run has one."""
        if self.checkpoint_dir is not None:
            with deferred_interrupts():  # a second Ctrl-C cannot cut the save short
                self.save(self.checkpoint_dir)

    def save(self, directory: str | Path) -> Path:
        """Write the state to ``directory/checkpoint.pt`` (atomically)."""
        return save_checkpoint(directory, self.state_dict())

    def resume(self, directory: str | Path) -> None:
        """Load the state saved in ``directory``, checking that it belongs to this run."""
        self.load_state_dict(load_checkpoint(directory, self.fingerprint))

    @classmethod
    def load(cls, directory: str | Path, *, registry: Registry | None = None,
             callbacks: Sequence[Callback | str] | CallbackList = (),
             progress: bool = False, **instances: Any) -> "Optimization":
        """Re-create a saved run: plugins by name from the saved settings (or pass ``renderer=``,
        ``objective=``, ``estimator=`` instances for plugins that were given as instances).

        The executor is the saved one (``processes`` stays ``processes``, with its options);
        ``executor=`` (a name or an instance, with ``executor_options=``) chooses another, e.g.
        on a machine with more cores. Every executor renders the same images, so the run
        continues the same. A run saved with an executor instance continues on ``local``
        unless one is passed.
        """
        state = load_checkpoint(directory)
        if state.get("settings") is None:
            raise ConfigError(f"{directory} holds a checkpoint without its settings (options that are not "
                              "plain numbers, strings, lists or tables cannot be saved); resume it with "
                              "rg.optimize(..., resume=True) and the same arguments")
        kw = dict(state["settings"])
        for kind in ("renderer", "objective", "estimator"):
            if kind in instances:
                kw[kind] = instances[kind]
                kw[f"{kind}_options"] = None
            elif state["names"].get(kind) is None:
                raise ConfigError(f"the saved run's {kind} was an instance; pass it again: "
                                  f"Optimization.load({str(directory)!r}, {kind}=...)")
            else:
                kw[kind] = state["names"][kind]
        kw.update(_executor(state, instances))
        opt = cls(kw.pop("renderer"), kw.pop("objective"), kw.pop("estimator"), target=state.get("target"),
                  registry=registry, callbacks=callbacks, progress=progress, **kw)
        opt.resume(directory)
        return opt


def objective_state(objective: Any) -> dict[str, Any]:
    """``objective.state_dict()``, or nothing for objectives without one."""
    fn = getattr(objective, "state_dict", None)
    return fn() if callable(fn) else {}


def _executor(state: dict[str, Any], instances: Mapping[str, Any]) -> dict[str, Any]:
    """The executor to continue on: the caller's, else the saved name (checkpoints from before
    executors were saved, and runs given an executor instance, continue on ``local``)."""
    name = state["names"].get("executor")
    if "executor" in instances or "executor_options" in instances:
        return {"executor": instances.get("executor", name or "local"),
                "executor_options": instances.get("executor_options")}
    if name is None:
        return {"executor": "local", "executor_options": None}
    return {"executor": name, "executor_options": state["settings"].get("executor_options")}


def _plain(value: Any) -> bool:
    """True for what ``torch.load(weights_only=True)`` reads back: numbers, strings, lists, dicts, tensors."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False
