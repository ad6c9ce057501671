"""Parameters and the normalised space every optimizer works in.

Why a normalised space: estimators such as PRDPT and ZeroGrads have one smoothing scale
(σ ≈ 0.5 "of the domain"); that only means something when every parameter spans [0, 1].
The optimizer therefore steps ``u ∈ [0, 1]^n`` and :class:`ParamSpace` maps ``u`` to the
parameter units a renderer expects (affine, or logarithmic for scales such as light power),
rounding integer and categorical parameters at render time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch

from .errors import ConfigError, ParameterError

KINDS = ("continuous", "integer", "categorical")


@dataclass
class Param:
    """One named scene parameter, scalar or vector.

    ``shape`` makes a vector parameter (an RGB colour ``(3,)``, a texture ``(64, 64, 3)``)
    without one ``Param`` per scalar; ``low``/``high``/``init`` are then scalars broadcast to
    every element, or sequences of the full size.

    ``kind="categorical"`` takes ``choices``; the renderer receives the index (0..k-1) as a
    float, and :meth:`ParamSpace.decode` turns it back into the choice.

    ``sigma_scale`` multiplies an estimator's smoothing scale for this parameter only, e.g.
    to smooth a position more than a colour.
    """

    name: str
    low: float | Sequence[float] = 0.0
    high: float | Sequence[float] = 1.0
    init: float | Sequence[float] | None = None
    kind: str = "continuous"
    log: bool = False
    shape: tuple[int, ...] = ()
    choices: Sequence[Any] | None = None
    sigma_scale: float = 1.0
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ParameterError("a Param needs a non-empty string name")
        if self.kind not in KINDS:
            raise ParameterError(f"Param {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        self.shape = tuple(int(s) for s in self.shape)
        if self.kind == "categorical":
            if not self.choices:
                raise ParameterError(f"categorical Param {self.name!r} needs a non-empty `choices` list")
            k = len(self.choices)
            # low/high of a categorical are its index range, 0..k-1, set from `choices`; a
            # different range (other than the dataclass defaults) is a mistake, not a request.
            given = (self.low, self.high)
            if given != (0.0, 1.0) and given != (0, k - 1):
                raise ParameterError(
                    f"categorical Param {self.name!r}: low/high are the choice indices 0..{k - 1}, set from its "
                    f"{k} choices; got low={self.low}, high={self.high}: leave them out")
            self.low, self.high = 0.0, float(k - 1)
            if self.init is None:
                self.init = 0.0
            elif not isinstance(self.init, (int, float)) or isinstance(self.init, bool):
                if self.init not in list(self.choices):
                    raise ParameterError(
                        f"Param {self.name!r}: init {self.init!r} is not one of its choices {list(self.choices)}")
                self.init = float(list(self.choices).index(self.init))
            elif not (float(self.init).is_integer() and 0 <= self.init <= k - 1):
                raise ParameterError(
                    f"categorical Param {self.name!r}: init {self.init!r} is neither one of its choices "
                    f"{list(self.choices)} nor a choice index 0..{k - 1}")
        lo, hi = self._full(self.low), self._full(self.high)
        if not (torch.all(torch.isfinite(lo)) and torch.all(torch.isfinite(hi))):
            raise ParameterError(f"Param {self.name!r}: bounds must be finite numbers")
        if torch.any(hi <= lo) and not (self.kind == "categorical" and len(self.choices or ()) == 1):
            raise ParameterError(
                f"Param {self.name!r}: bounds reversed or empty (low={self.low}, high={self.high}); "
                "`low` must be smaller than `high`")
        if self.log and torch.any(lo <= 0):
            raise ParameterError(f"Param {self.name!r}: log scale needs low > 0 (got low={self.low})")
        init = self._full(self.init) if self.init is not None else self._default_init(lo, hi)
        if torch.any(init < lo - 1e-9) or torch.any(init > hi + 1e-9):
            raise ParameterError(
                f"Param {self.name!r}: init {self.init} lies outside its bounds [{self.low}, {self.high}]")
        if not self.sigma_scale > 0:
            raise ParameterError(f"Param {self.name!r}: sigma_scale must be > 0")

    # -- helpers -----------------------------------------------------------------------
    @property
    def size(self) -> int:
        return math.prod(self.shape) if self.shape else 1

    @property
    def discrete(self) -> bool:
        return self.kind in ("integer", "categorical")

    def _full(self, value: Any) -> torch.Tensor:
        t = torch.as_tensor(value, dtype=torch.float64).flatten()
        if t.numel() == 1:
            return t.expand(self.size).clone()
        if t.numel() != self.size:
            raise ParameterError(
                f"Param {self.name!r}: expected 1 or {self.size} values for shape {self.shape}, got {t.numel()}")
        return t

    def _default_init(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        if self.log:
            return torch.sqrt(lo * hi)
        return (lo + hi) / 2

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._full(self.low), self._full(self.high)

    def initial(self) -> torch.Tensor:
        lo, hi = self.bounds()
        return self._full(self.init) if self.init is not None else self._default_init(lo, hi)


@dataclass
class _Slot:
    param: Param
    start: int
    stop: int


class ParamSpace:
    """An ordered collection of :class:`Param` with the maps between three views.

    * ``u``: normalised, ``[B, n]`` in ``[0, 1]`` — what optimizers and estimators see;
    * ``theta``: parameter units, ``[B, n]`` — what :meth:`Renderer.render` receives;
    * a dict ``{name: value}`` — what people read and write (configs, ``result.json``).
    """

    def __init__(self, params: Iterable[Param]):
        self.params: list[Param] = list(params)
        names = [p.name for p in self.params]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ParameterError(f"duplicate parameter names: {dupes}")
        self._slots: dict[str, _Slot] = {}
        i = 0
        for p in self.params:
            self._slots[p.name] = _Slot(p, i, i + p.size)
            i += p.size
        self.size = i
        lows, highs = zip(*(p.bounds() for p in self.params)) if self.params else ((), ())
        self.low = torch.cat(lows) if lows else torch.zeros(0, dtype=torch.float64)
        self.high = torch.cat(highs) if highs else torch.zeros(0, dtype=torch.float64)
        self._log = torch.cat([torch.full((p.size,), p.log) for p in self.params]) if self.params \
            else torch.zeros(0, dtype=torch.bool)
        self._discrete = torch.cat([torch.full((p.size,), p.discrete) for p in self.params]) if self.params \
            else torch.zeros(0, dtype=torch.bool)
        self._has_log, self._has_discrete = bool(self._log.any()), bool(self._discrete.any())

    # -- introspection -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.params)

    def __iter__(self):
        return iter(self.params)

    def __contains__(self, name: str) -> bool:
        return name in self._slots

    def __getitem__(self, name: str) -> Param:
        return self._slot(name).param

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def _slot(self, name: str) -> _Slot:
        try:
            return self._slots[name]
        except KeyError:
            raise ParameterError(
                f"unknown parameter {name!r}; this scene's parameters are: {', '.join(self.names) or '(none)'}"
            ) from None

    def slice(self, name: str) -> slice:
        s = self._slot(name)
        return slice(s.start, s.stop)

    def sigma_scales(self) -> torch.Tensor:
        """Per-coordinate smoothing multipliers, ``[n]`` (float64)."""
        return torch.cat([torch.full((p.size,), float(p.sigma_scale), dtype=torch.float64)
                          for p in self.params]) if self.params else torch.zeros(0, dtype=torch.float64)

    def discrete_mask(self) -> torch.Tensor:
        return self._discrete.clone()

    def describe(self) -> list[dict[str, Any]]:
        """A JSON-able schema (used by ``rendergrad plugins`` and the bridge's ``describe``)."""
        out = []
        for p in self.params:
            lo, hi = p.bounds()
            out.append({
                "name": p.name, "kind": p.kind, "shape": list(p.shape),
                "low": lo.tolist() if p.shape else float(lo[0]),
                "high": hi.tolist() if p.shape else float(hi[0]),
                "init": p.initial().tolist() if p.shape else float(p.initial()[0]),
                "log": p.log, "choices": list(p.choices) if p.choices is not None else None,
            })
        return out

    # -- maps -----------------------------------------------------------------------------
    # These run several times per optimization step, so the bounds are cached per device and
    # dtype and the "any log / any discrete" questions are answered once.
    def _bounds_like(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (x.device, x.dtype)
        cache = self.__dict__.setdefault("_bounds_cache", {})
        if key not in cache:
            cache[key] = (self.low.to(device=x.device, dtype=x.dtype),
                          self.high.to(device=x.device, dtype=x.dtype), self._log.to(x.device))
        return cache[key]

    def _span_like(self, x: torch.Tensor) -> torch.Tensor:
        """``high - low`` for ``x``'s device and dtype, computed once (the same values every time)."""
        key = (x.device, x.dtype)
        cache = self.__dict__.setdefault("_span_cache", {})
        if key not in cache:
            lo, hi, _ = self._bounds_like(x)
            cache[key] = hi - lo
        return cache[key]

    def to_theta(self, u: torch.Tensor, round_discrete: bool = True) -> torch.Tensor:
        """Normalised ``u`` → parameter units, float64. Differentiable (straight-through rounding).

        The result lies inside ``[low, high]`` exactly: the affine (or log) map is evaluated in
        float64 and clamped there, so ``u = 1`` gives ``high`` itself and not a value one
        rounding step above it, which a server checking its bounds exactly would refuse. The
        clamp passes gradients straight through.
        """
        u = u.to(torch.float64)
        lo, hi, log = self._bounds_like(u)
        lin = lo + u * self._span_like(u)
        if self._has_log:
            safe_lo = torch.where(log, lo, torch.ones_like(lo))
            safe_hi = torch.where(log, hi, torch.ones_like(hi))
            logv = torch.exp(torch.log(safe_lo) + u * (torch.log(safe_hi) - torch.log(safe_lo)))
            # exp(log(low)) need not give low back: the ends of the range map onto the bounds
            logv = logv + (torch.where(u <= 0, lo, torch.where(u >= 1, hi, logv)) - logv).detach()
            lin = torch.where(log, logv, lin)
        lin = self.clamp_theta(lin)
        if round_discrete and self._has_discrete:
            disc = self._discrete.to(u.device)
            rounded = lin + (torch.round(lin) - lin).detach()  # straight-through
            lin = torch.where(disc, rounded, lin)
        return lin

    def clamp_theta(self, theta: torch.Tensor) -> torch.Tensor:
        """``theta`` as float64 inside ``[low, high]`` exactly; gradients pass straight through."""
        theta = theta.to(torch.float64)
        lo, hi, _ = self._bounds_like(theta)
        clamped = torch.minimum(torch.maximum(theta, lo), hi)
        if not (theta.requires_grad and torch.is_grad_enabled()):
            # No gradient to pass: the clamped values themselves. (For values within rounding of
            # a bound, as the maps give, the straight-through sum below yields the same bits.)
            return clamped
        return theta + (clamped - theta).detach()

    def to_unit(self, theta: torch.Tensor) -> torch.Tensor:
        """Parameter units → normalised ``u``."""
        lo, hi, log = self._bounds_like(theta)
        u = (theta - lo) / (hi - lo)
        if self._has_log:
            safe = lambda t: torch.where(log, t, torch.ones_like(t))  # noqa: E731
            ul = (torch.log(safe(theta.clamp_min(1e-300))) - torch.log(safe(lo))) / (
                torch.log(safe(hi)) - torch.log(safe(lo)) + (~log).to(theta.dtype))
            u = torch.where(log, ul, u)
        return u

    def initial_theta(self) -> torch.Tensor:
        return torch.cat([p.initial() for p in self.params]) if self.params \
            else torch.zeros(0, dtype=torch.float64)

    def initial_unit(self) -> torch.Tensor:
        return self.to_unit(self.initial_theta())

    def check_theta(self, theta: torch.Tensor, *, what: str = "theta", tol: float = 1e-6) -> None:
        """Raise :class:`ParameterError` naming each coordinate outside its bounds."""
        t = theta.detach().to(torch.float64).reshape(-1, self.size)
        lo, hi = self.low, self.high
        span = (hi - lo).clamp_min(1e-12)
        bad = (t < lo - tol * span) | (t > hi + tol * span) | ~torch.isfinite(t)
        if bool(bad.any()):
            row, col = (int(i) for i in bad.nonzero()[0])
            name = self.coordinate_name(col)
            raise ParameterError(
                f"{what}: {name} = {float(t[row, col]):g} lies outside its bounds "
                f"[{float(lo[col]):g}, {float(hi[col]):g}]; choose a value inside them or widen the bounds")

    def coordinate_name(self, index: int) -> str:
        for s in self._slots.values():
            if s.start <= index < s.stop:
                if not s.param.shape:
                    return s.param.name
                idx = torch.unravel_index(torch.tensor(index - s.start), s.param.shape)
                return f"{s.param.name}[{','.join(str(int(i)) for i in idx)}]"
        raise IndexError(index)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[B, n]`` → ``{name: [B, *shape]}`` (views, keeps autograd)."""
        b = theta.shape[0]
        return {s.param.name: theta[:, s.start:s.stop].reshape(b, *s.param.shape)
                for s in self._slots.values()}

    def flatten(self, values: Mapping[str, Any], *, base: torch.Tensor | None = None,
                what: str = "parameters") -> torch.Tensor:
        """``{name: value}`` → ``[n]`` in parameter units; missing names keep ``base``.

        Categorical values may be given as the choice itself or as its index.
        """
        out = (self.initial_theta() if base is None else base.detach().to(torch.float64)).clone()
        for name, value in values.items():
            if name not in self._slots:
                raise ParameterError(
                    f"{what}: unknown parameter {name!r}; valid names are: {', '.join(self.names) or '(none)'}")
            s = self._slots[name]
            p = s.param
            if p.kind == "categorical" and not p.shape:
                choices = list(p.choices or ())
                if value in choices and not isinstance(value, (int, float)):
                    value = choices.index(value)
                elif isinstance(value, bool) or not isinstance(value, (int, float)) \
                        or not float(value).is_integer() or not 0 <= value < len(choices):
                    raise ParameterError(f"{what}: {name} = {value!r} is not one of {choices} "
                                         f"(nor a choice index 0..{len(choices) - 1})")
            elif p.kind == "categorical" and not isinstance(value, (int, float)):
                if value not in list(p.choices or ()):
                    raise ParameterError(f"{what}: {name} = {value!r} is not one of {list(p.choices or ())}")
                value = list(p.choices).index(value)
            try:
                out[s.start:s.stop] = p._full(value)
            except (TypeError, ValueError, RuntimeError) as e:
                raise ParameterError(f"{what}: bad value for {name!r}: {e}") from None
        self.check_theta(out, what=what)
        return out

    def decode(self, theta: torch.Tensor, max_elements: int | None = None) -> dict[str, Any]:
        """``[n]`` parameter units → ``{name: python value}`` for JSON and people.

        Vector parameters with more than ``max_elements`` elements are left out (they go to
        files, not logs).
        """
        t = theta.detach().to(torch.float64).reshape(-1)
        flat = t.tolist() if self.size <= 256 else None  # one conversion instead of one per scalar
        out: dict[str, Any] = {}
        for s in self._slots.values():
            p = s.param
            if max_elements is not None and p.size > max_elements:
                continue
            if not p.shape:  # the common case, one float per scalar: no tensor ops
                x = flat[s.start] if flat is not None else float(t[s.start])
                out[p.name] = (list(p.choices)[int(round(x))] if p.kind == "categorical"
                               else int(round(x)) if p.kind == "integer" else x)
                continue
            if flat is not None and p.kind == "continuous" and len(p.shape) == 1:
                out[p.name] = flat[s.start:s.stop]  # what v.reshape(p.shape).tolist() gives, without tensors
                continue
            v = t[s.start:s.stop]
            if p.discrete:
                v = torch.round(v)
            if p.kind == "categorical":
                out[p.name] = [list(p.choices)[int(i)] for i in v.tolist()]
            elif p.kind == "integer":
                out[p.name] = [int(i) for i in v.tolist()]
            else:
                out[p.name] = v.reshape(p.shape).tolist()
        return out

    @classmethod
    def from_config(cls, entries: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]]) -> "ParamSpace":
        """Build from config: a list of tables with a ``name`` key, or a table of tables."""
        items = [dict(v, name=k) for k, v in entries.items()] if isinstance(entries, Mapping) \
            else [dict(e) for e in entries]
        valid = {f for f in Param.__dataclass_fields__}
        params = []
        for e in items:
            unknown = sorted(set(e) - valid)
            if unknown:
                from .config import suggest
                raise ConfigError(f"parameter {e.get('name', '?')!r}: unknown key(s) {unknown}{suggest(unknown[0], valid)}; "
                                  f"valid keys: {', '.join(sorted(valid))}")
            if "shape" in e:
                e["shape"] = tuple(e["shape"])
            params.append(Param(**e))
        return cls(params)

