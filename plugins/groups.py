"""Parameter groups: a sampling estimator's refinement, one kind of parameter at a time.

Why: parameters of different kinds move the loss by very different amounts. In a scene of one
soft disc (position, radius, RGB colour), moving the disc by 1 % of its range changes the loss
about 90 times more than changing its colour by 1 % of the colour's range. One kernel width σ
serves the most sensitive parameter: once the disc is found, σ narrows to the position's scale,
and the loss difference of each antithetic pair is then dominated by the position's jitter, so
the colour's moves are a random walk with a small drift. Measured at the defaults, 600 renders,
seeds 10–39: colour errors of 0.03–0.06 (of its range) were left on most runs, 10 of 30 solved.
A learnt kernel covariance (:mod:`.kernel_shape`) could undo the imbalance in principle, but its
rank-one update only learns from the steps' path, which the jitter dominates just the same.

So, once σ has narrowed to ``after`` of its start (the run has found its basin), the estimator
perturbs one group at a time, in turn: a pair's loss difference then carries that group's slope
alone, and each group has its own σ (starting at the σ reached so far, adapted by its own path
length) and, in PRDPT, its own kernel shape. Until then every parameter moves together: a plateau is left
by moving all of them at once (a disc that overlaps nothing cannot be found by moving its x alone:
one group per parameter from the start solved 0 of 10 runs of that scene).

Which parameters form a group (option ``groups``):

* ``"auto"`` (the default): each vector parameter (an RGB colour, a light's position) is a group
  of its own, and the scalar parameters together form one more. A vector's components are one
  quantity in one unit; scalars declared one by one are kept together because they are often
  coupled (a light's x and z, a box's width and height, the two coordinates of a curved valley,
  where stepping one at a time zigzags: measured on Rosenbrock², 3 of 10 runs solved in place of 7).
* ``"none"``: one group; the estimator never splits.
* ``"parameters"``: each declared parameter is a group.
* a list of lists of parameter names: those groups; parameters left out form one more group.

A space that yields a single group is left unchanged: the estimator behaves exactly as without.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Sequence

import torch

from rendergrad.errors import ConfigError
from rendergrad.params import ParamSpace

from .kernel_shape import KernelShape
from .schedules import AdaptiveSigma

GROUPINGS = ("auto", "none", "parameters")


def check_groups(who: str, groups: Any) -> str | list[list[str]]:
    """The ``groups`` option validated for its form (names are checked against the space later)."""
    if isinstance(groups, str):
        if groups not in GROUPINGS:
            raise ConfigError(f"{who}: groups {groups!r} is not one of {GROUPINGS} or a list of lists of "
                              "parameter names, e.g. groups = [['x', 'y'], ['colour']]")
        return groups
    if isinstance(groups, Sequence) and groups and all(
            isinstance(g, Sequence) and not isinstance(g, str) and g and all(isinstance(p, str) for p in g)
            for g in groups):
        return [list(g) for g in groups]
    raise ConfigError(f"{who}: groups must be one of {GROUPINGS} or a non-empty list of non-empty lists of "
                      f"parameter names, e.g. groups = [['x', 'y'], ['colour']]; got {groups!r}")


def group_options(who: str, groups: Any, group_after: Any, possible: bool, needs: str
                  ) -> tuple[str | list[list[str]], float]:
    """``(groups, group_after)`` validated. ``groups=None`` means ``"auto"`` where the estimator's
    settings allow groups (``possible``) and ``"none"`` where not; asking for groups where they are
    not possible is refused, saying what they ``need``."""
    option = check_groups(who, groups if groups is not None else "auto" if possible else "none")
    if option != "none" and not possible:
        raise ConfigError(f"{who}: parameter groups {needs} (or set groups = 'none')")
    if not (isinstance(group_after, (int, float)) and 0 < group_after <= 1):
        raise ConfigError(f"{who}: group_after (the fraction of σ₀ at which the run starts refining "
                          f"one group at a time) must be in (0, 1], got {group_after!r}")
    return option, float(group_after)


def group_names(space: ParamSpace, groups: str | list[list[str]], who: str = "estimator") -> list[list[str]]:
    """The parameter names of each group, in the order the groups take turns."""
    names = [p.name for p in space.params]
    if groups == "none":
        return [names]
    if groups == "parameters":
        return [[name] for name in names]
    if groups == "auto":
        scalars = [p.name for p in space.params if p.size == 1]
        return ([scalars] if scalars else []) + [[p.name] for p in space.params if p.size > 1]
    seen: set[str] = set()
    for group in groups:
        for name in group:
            if name not in names:
                raise ConfigError(f"{who}: groups names {name!r}, which is not a parameter of this scene; "
                                  f"its parameters are {names}")
            if name in seen:
                raise ConfigError(f"{who}: parameter {name!r} is in two groups; give each parameter one group")
            seen.add(name)
    rest = [name for name in names if name not in seen]
    return [list(g) for g in groups] + ([rest] if rest else [])


def group_indices(space: ParamSpace, names: list[list[str]]) -> list[list[int]]:
    """The flat coordinates of each group of :func:`group_names`."""
    spans: dict[str, list[int]] = {}
    start = 0
    for p in space.params:
        spans[p.name] = list(range(start, start + p.size))
        start += p.size
    return [[i for name in group for i in spans[name]] for group in names]


def embed(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """``values`` (last axis over a group's coordinates) placed in a zero tensor over all ``n``."""
    out = values.new_zeros(values.shape[:-1] + (n,))
    out[..., index] = values
    return out


class Group:
    """One group's coordinates, σ and (for PRDPT) kernel shape."""

    def __init__(self, names: list[str], index: list[int], adaptive: AdaptiveSigma, shape: KernelShape | None):
        self.names = names
        self.index = torch.tensor(index, dtype=torch.long)
        self.adaptive, self.shape = adaptive, shape


class ParameterGroups:
    """The groups of a space and whose turn it is; inactive (joint steps) until :meth:`split`."""

    def __init__(self, space: ParamSpace, names: list[list[str]], adaptive: AdaptiveSigma,
                 shape_options: dict[str, Any] | None, after: float):
        """``shape_options=None``: the groups carry no kernel shape (an estimator without one)."""
        self.names, self.indices, self.after = names, group_indices(space, names), float(after)
        self._template = adaptive
        self._shape_options = None if shape_options is None else dict(shape_options)
        self.groups: list[Group] = []
        self.turn = 0

    @property
    def active(self) -> bool:
        return bool(self.groups)

    def due(self, sigma: float, sigma0: float) -> bool:
        """Whether the joint phase ends now: σ has narrowed to ``after`` of its start."""
        return not self.groups and sigma <= self.after * sigma0

    def start_if_due(self, adaptive: AdaptiveSigma, step: int, who: str) -> None:
        """Split when :meth:`due`, and say so in the estimator's log (when, at what σ, which groups)."""
        if not self.due(adaptive.sigma, adaptive.sigma0):
            return
        self.split(adaptive.sigma)
        logging.getLogger(f"rendergrad.{who}").info(
            "%s: σ is down to %.3g of each range (%g σ₀) at step %d: refining the parameter groups in turn: %s",
            who, adaptive.sigma, self.after, step, " | ".join(", ".join(g) for g in self.names))

    def split(self, sigma: float) -> None:
        """Start the grouped phase: every group at the σ reached, with a fresh path and shape."""
        self.groups = []
        for names, index in zip(self.names, self.indices):
            adaptive = copy.deepcopy(self._template)
            adaptive.load_state_dict({"sigma": sigma, "path": None})
            shape = None if self._shape_options is None else KernelShape(len(index), **self._shape_options)
            self.groups.append(Group(names, index, adaptive, shape))
        self.turn = 0

    def join(self) -> None:
        """Back to joint steps (a restart)."""
        self.groups, self.turn = [], 0

    def next(self) -> Group:
        group = self.groups[self.turn % len(self.groups)]
        self.turn += 1
        return group

    @property
    def sigma(self) -> float:
        """The widest group's σ: the run has settled only when every group has."""
        return max(g.adaptive.sigma for g in self.groups)

    def state_dict(self) -> dict[str, Any]:
        return {"turn": self.turn,
                "groups": [{"adaptive": g.adaptive.state_dict(),
                            "shape": g.shape.state_dict() if g.shape is not None else None} for g in self.groups]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.join()
        if not state or not state.get("groups"):
            return
        self.split(self._template.sigma0)
        for g, s in zip(self.groups, state["groups"]):
            g.adaptive.load_state_dict(s["adaptive"])
            if g.shape is not None:
                g.shape.load_state_dict(s["shape"])
        self.turn = int(state["turn"])
