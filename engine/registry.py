"""Plugin discovery: entry points → pluggy → a name-indexed registry per kind.

Built-in plugins are found exactly like third-party ones (entry-point group ``rendergrad``),
so the path a third party takes is exercised on every run. Loading is defensive: an import
error or a raising hook is recorded against the plugin and shown by ``rendergrad plugins``.
"""

from __future__ import annotations

import difflib
import importlib.metadata as md
import inspect
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .callbacks import Callback
from .errors import ConfigError, PluginNotFoundError, PluginUnavailableError, RendergradError
from .executors.base import Executor
from .interfaces import GradientEstimator, Objective, Plugin, Renderer

ENTRY_POINT_GROUP = "rendergrad"
KINDS: dict[str, tuple[str, type]] = {
    "renderer": ("rendergrad_renderers", Renderer),
    "objective": ("rendergrad_objectives", Objective),
    "estimator": ("rendergrad_estimators", GradientEstimator),
    "executor": ("rendergrad_executors", Executor),
    "callback": ("rendergrad_callbacks", Callback),
}


@dataclass
class PluginInfo:
    kind: str
    name: str
    cls: type | None
    distribution: str
    version: str
    entry_point: str
    available: bool
    reason: str = ""
    summary: str = ""
    differentiable: bool | None = None

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("kind", "name", "distribution", "version", "entry_point",
                                              "available", "reason", "summary")}
        if self.kind == "renderer":
            # With default options; `differentiable_when` names the options that make an
            # instance differentiable (null: it does not depend on options).
            d["differentiable"] = self.differentiable
            when = getattr(self.cls, "differentiable_when", None)
            d["differentiable_when"] = dict(when) if when else None
            # Can render with a fraction of its samples (noise pairs at the cost of one render).
            d["adjustable_samples"] = bool(getattr(self.cls, "adjustable_samples", False))
        if self.kind == "objective" and self.cls is not None:
            # Scores two independent renders of a point without the noise's bias (see Objective.pair_loss).
            d["pair_loss"] = getattr(self.cls, "pair_loss", None) is not getattr(Objective, "pair_loss")
        if self.kind == "estimator" and self.cls is not None:
            d["requires_differentiable"] = bool(getattr(self.cls, "requires_differentiable", False))
        return d


@dataclass
class Registry:
    plugins: dict[str, dict[str, PluginInfo]] = field(default_factory=lambda: {k: {} for k in KINDS})
    broken: list[PluginInfo] = field(default_factory=list)
    command_hooks: list[tuple[Any, str]] = field(default_factory=list)  # (function, plugin label)

    # -- lookup ---------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self.plugins[kind])

    def info(self, kind: str, name: str) -> PluginInfo:
        table = self.plugins[kind]
        if name not in table:
            names = self.names(kind)
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            broken = [b for b in self.broken if b.kind in (kind, "?")]
            extra = ("" if not broken else " Some plugins failed to load: " +
                     "; ".join(f"{b.entry_point} ({b.reason})" for b in broken) + ".")
            raise PluginNotFoundError(
                f"unknown {kind} {name!r}. Available {kind}s: {', '.join(names) or '(none)'}.{hint}{extra} "
                f"Run `rendergrad plugins` to see every plugin and why any is unavailable.")
        return table[name]

    def get(self, kind: str, name: str) -> type:
        info = self.info(kind, name)
        if not info.available:
            raise PluginUnavailableError(f"{kind} {name!r} is installed but unavailable here: {info.reason}")
        assert info.cls is not None
        return info.cls

    def create(self, kind: str, name: str, options: dict[str, Any] | None = None) -> Any:
        """Instantiate a plugin, turning a bad option into an error that lists the valid ones."""
        cls = self.get(kind, name)
        options = dict(options or {})
        check_options(cls, options, f"{kind} {name!r}")
        try:
            return cls(**options)
        except RendergradError:
            raise
        except (ValueError, TypeError) as e:
            # Plugins may validate their options with ordinary exceptions: one line, naming them.
            given = ", ".join(f"{k} = {v!r}" for k, v in options.items()) or "no options"
            raise ConfigError(f"{kind} {name!r} refused its options ({given}): {e}; fix the "
                              f"[{kind}] options (see `rendergrad plugins`)") from None

    def all(self) -> list[PluginInfo]:
        out = [i for k in KINDS for i in self.plugins[k].values()]
        return sorted(out, key=lambda i: (list(KINDS).index(i.kind), i.name)) + self.broken


def check_options(cls: type, options: dict[str, Any], what: str) -> None:
    """Reject option names the constructor does not take, listing the ones it does."""
    if cls.__init__ is object.__init__:
        params = []  # no constructor of its own (e.g. mse): it takes no options at all
    else:
        try:
            sig = inspect.signature(cls.__init__)
        except (TypeError, ValueError):  # pragma: no cover - builtins
            return
        params = [p for p in list(sig.parameters.values())[1:]]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    valid = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in options if k not in valid]
    if unknown:
        from .config import suggest
        from .errors import ConfigError
        raise ConfigError(f"{what}: unknown option {unknown[0]!r}{suggest(unknown[0], valid)}. "
                          f"Valid options: {', '.join(valid) or '(none)'}")


def _dist_of(ep: md.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"], dist.version


def discover(extra_plugins: list[Any] | None = None) -> Registry:
    """Load every plugin from the ``rendergrad`` entry-point group (plus ``extra_plugins``)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    reg = Registry()
    sources: list[tuple[Any, str, str, str]] = []  # (module, dist, version, entry point)
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        dist, ver = _dist_of(ep)
        label = f"{ep.name} = {ep.value}"
        try:
            module = ep.load()
            pm.register(module, name=f"{dist}:{ep.name}")
        except Exception as e:  # a broken plugin must never crash the host
            reg.broken.append(PluginInfo("?", ep.name, None, dist, ver, label, False,
                                         f"failed to load: {type(e).__name__}: {e}"))
            continue
        sources.append((module, dist, ver, label))
    for obj in extra_plugins or []:
        pm.register(obj)
        sources.append((obj, getattr(obj, "__name__", "(in-process)"), "", "(registered in-process)"))

    labels = {id(module): (dist, ver, label) for module, dist, ver, label in sources}
    for impl in pm.hook.rendergrad_add_commands.get_hookimpls():
        reg.command_hooks.append((impl.function, labels.get(id(impl.plugin), ("", "", impl.plugin_name))[2]))
    for kind, (hook, base) in KINDS.items():
        for impl in getattr(pm.hook, hook).get_hookimpls():  # in registration order
            dist, ver, label = labels.get(id(impl.plugin), ("?", "?", impl.plugin_name))
            try:  # one plugin's failure is its own: call each implementation separately
                classes = list(impl.function() or [])
            except Exception as e:
                reg.broken.append(PluginInfo(kind, label, None, dist, ver, label, False,
                                             f"{hook}() raised {type(e).__name__}: {e}"))
                continue
            for cls in classes:
                _add(reg, kind, base, cls, dist, ver, label)
    reg.broken.extend(check_pending(pm, labels))
    return reg


def check_pending(pm: pluggy.PluginManager, labels: dict[int, tuple[str, str, str]]) -> list[PluginInfo]:
    """Hook implementations no hook specification matches (a misspelled hook), with the closest name.

    The rest of the plugin keeps working; ``rendergrad plugins`` shows the entry. Functions named
    like a hook but missing the ``@rendergrad.hookimpl`` marker are reported too: pluggy would
    silently skip them.
    """
    specs = [n for n in dir(hookspecs) if n.startswith("rendergrad_")]
    found: list[PluginInfo] = []

    def report(plugin: Any, name: str, why: str) -> None:
        dist, ver, label = labels.get(id(plugin), ("?", "?", str(pm.get_name(plugin))))
        close = difflib.get_close_matches(name, specs, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f"; hooks are: {', '.join(specs)}"
        found.append(PluginInfo("?", name, None, dist, ver, label, False, f"{why}{hint}"))

    for plugin in pm.get_plugins():
        for attr in dir(plugin):
            fn = getattr(plugin, attr, None)
            if not attr.startswith("rendergrad_") or not callable(fn) or attr in specs:
                if attr in specs and callable(fn) and not hasattr(fn, f"{hookspecs.PROJECT}_impl"):
                    report(plugin, attr, f"hook {attr!r} is not marked with @rendergrad.hookimpl and is ignored")
                continue
            report(plugin, attr, f"{attr!r} is not a rendergrad hook")
    return found


def _add(reg: Registry, kind: str, base: type, cls: Any, dist: str, ver: str, label: str) -> None:
    name = getattr(cls, "name", "") or ""
    if not (inspect.isclass(cls) and issubclass(cls, base)) or not name:
        reg.broken.append(PluginInfo(kind, str(name or cls), None, dist, ver, label, False,
                                     f"not a {base.__name__} subclass with a `name`"))
        return
    if inspect.isabstract(cls):
        missing = ", ".join(f"{m}()" for m in sorted(cls.__abstractmethods__))
        reg.broken.append(PluginInfo(kind, name, None, dist, ver, label, False,
                                     f"invalid {kind}: {cls.__name__} does not implement {missing}"))
        return
    if name in reg.plugins[kind]:
        prev = reg.plugins[kind][name]
        reg.broken.append(PluginInfo(kind, name, cls, dist, ver, label, False,
                                     f"duplicate {kind} name, already provided by {prev.distribution}"))
        return
    try:
        ok, reason = cls.available()
    except Exception as e:
        ok, reason = False, f"available() raised {type(e).__name__}: {e}"
    reg.plugins[kind][name] = PluginInfo(
        kind, name, cls, dist, ver, label, bool(ok), str(reason or ""), Plugin.summary.__func__(cls),
        bool(getattr(cls, "differentiable", False)) if kind == "renderer" else None)


_default: Registry | None = None


def registry(refresh: bool = False) -> Registry:
    """The process-wide registry, discovered once."""
    global _default
    if _default is None or refresh:
        _default = discover()
    return _default
