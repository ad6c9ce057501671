"""Callbacks observe a run: progress bar, periodic image snapshots, TensorBoard, anything a user adds.

A callback implements any of ``on_start``, ``on_step``, ``on_end``. The loop passes keyword
arguments, and a callback receives only those its method names (all of them if it takes
``**kw``), so new arguments can be added without breaking existing callbacks.

Callbacks are a plugin kind: a class with a ``name``, returned by a plugin's
``rendergrad_callbacks()`` hook, is usable by name from a run file::

    [[callbacks]]
    name = "snapshots"
    options = { every = 25 }

and from Python, ``rg.optimize(..., callbacks=["progress", MyCallback()])``. The built-ins
(``progress``, ``snapshots``) are registered from this module through the same entry-point
group as third-party ones.

What the loop passes (every hook may also receive more in future versions):

``on_start``: ``space``, ``target``, ``evaluator``, ``u`` (normalised parameters at the start
of this session), ``start_step`` (0, or the step a resumed run continues from),
``total_steps``, ``history`` (the records so far: non-empty on resume), ``settings`` (the run's
plugin names and optimizer settings: what TensorBoard shows as hparams), ``run_dir`` (the run
folder when run by ``rendergrad run``, else ``None``).

``on_step``: ``record`` (what goes into the history: step, loss, evaluations, params and the
estimator's diagnostics), ``u`` (after the optimizer step), ``evaluator``, ``step``,
``elapsed_s`` (wall time of the run so far, resumed sessions included), ``lr`` (the learning
rate used for this step), ``best_loss``.

``on_end``: ``result`` (the :class:`rendergrad.Result`, or ``None`` when the run failed or was
interrupted), ``error`` (the exception in that case).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch

from .hookspecs import hookimpl
from .interfaces import Plugin


class Callback(Plugin):
    """Observes a run. Subclass it and override the hooks you need; all are optional.

    Constructor keyword arguments are a run file's ``[[callbacks]] options``.
    """

    def on_start(self, **kw: Any) -> None:
        pass

    def on_step(self, *, record: dict[str, Any], **kw: Any) -> None:
        pass

    def on_end(self, *, result: Any, **kw: Any) -> None:
        pass


def _accepted(method: Any) -> set[str] | None:
    """Keyword names a hook method takes; ``None`` means any (it has ``**kw``)."""
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


class CallbackList:
    """The callbacks of one run, called in order, each with the keyword arguments it takes.

    ``context`` is added to every ``on_start`` call: the runner puts the run folder there, so a
    callback created from a run file (TensorBoard, snapshots) knows where to write.
    """

    def __init__(self, callbacks: Iterable[Any] = (), context: Mapping[str, Any] | None = None):
        self.callbacks: list[Any] = list(callbacks)
        self.context: dict[str, Any] = dict(context or {})
        self._sigs: dict[tuple[int, str], set[str] | None] = {}

    def __iter__(self) -> Iterator[Any]:
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)

    def append(self, cb: Any) -> None:
        self.callbacks.append(cb)

    def _call(self, hook: str, kw: dict[str, Any]) -> None:
        for cb in self.callbacks:
            method = getattr(cb, hook, None)
            if method is None:
                continue
            key = (id(cb), hook)
            if key not in self._sigs:
                self._sigs[key] = _accepted(method)
            names = self._sigs[key]
            method(**(kw if names is None else {k: v for k, v in kw.items() if k in names}))

    def on_start(self, **kw: Any) -> None:
        self._call("on_start", {**self.context, **kw})

    def on_step(self, **kw: Any) -> None:
        self._call("on_step", kw)

    def on_end(self, **kw: Any) -> None:
        self._call("on_end", kw)

    def announcements(self) -> list[str]:
        """Lines callbacks want a person to see before the run starts (e.g. how to watch it)."""
        lines = []
        for cb in self.callbacks:
            fn = getattr(cb, "announce", None)
            if not callable(fn):
                continue
            names = _accepted(fn)
            line = fn(**(self.context if names is None else {k: v for k, v in self.context.items() if k in names}))
            if line:
                lines.append(str(line))
        return lines


def resolve_callbacks(specs: Iterable[Any] | CallbackList | None, registry: Any = None,
                      context: Mapping[str, Any] | None = None) -> CallbackList:
    """Turn names, ``{"name", "options"}`` tables and instances into a :class:`CallbackList`.

    A name or table is looked up in the registry (kind ``callback``) and constructed with its
    options, so a typo or a bad option fails here, before anything renders.
    """
    if isinstance(specs, CallbackList):
        if context:
            specs.context.update(context)
        return specs
    out = CallbackList(context=context)
    for spec in specs or ():
        if isinstance(spec, (str, Mapping)):
            if registry is None:
                from .registry import registry as default_registry
                registry = default_registry()
            name, options = (spec, {}) if isinstance(spec, str) else (spec.get("name"), spec.get("options") or {})
            if not isinstance(name, str) or not name:
                from .errors import ConfigError
                raise ConfigError(f"a callback needs a name, got {dict(spec)!r}; "
                                  "e.g. [[callbacks]] name = \"progress\"")
            out.append(registry.create("callback", name, dict(options)))
        elif any(callable(getattr(spec, h, None)) for h in ("on_start", "on_step", "on_end")):
            out.append(spec)
        else:
            from .errors import ConfigError
            raise ConfigError(f"callbacks must be names or objects with on_start/on_step/on_end; "
                              f"got {type(spec).__name__}")
    return out


class ProgressBar(Callback):
    """A progress bar (tqdm) showing the loss and the renders spent so far."""

    name = "progress"

    def __init__(self, total: int | None = None, initial: int = 0, desc: str = "optimizing"):
        self.desc = desc
        self.bar = None
        if total is not None:
            self._open(total, initial)

    def _open(self, total: int, initial: int) -> None:
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, initial=initial, desc=self.desc, unit="step", dynamic_ncols=True, leave=False)

    def on_start(self, *, total_steps: int = 0, start_step: int = 0, **kw: Any) -> None:
        if self.bar is None:
            self._open(total_steps, start_step)

    def on_step(self, *, record: dict[str, Any], **kw: Any) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{record['loss']:.4g}", renders=record["evaluations"], refresh=False)

    def on_end(self, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.close()


class Snapshots(Callback):
    """Save the current image every ``every`` steps as ``DIR/step_00042.png``, and a contact sheet.

    ``directory`` defaults to ``snapshots/`` in the run folder. Snapshot renders are counted as
    extra renders, apart from the optimization's.
    """

    name = "snapshots"

    def __init__(self, directory: str | Path | None = None, every: int = 10, sheet_columns: int = 8):
        self.dir = Path(directory) if directory is not None else None
        self.every = every
        self.sheet_columns = sheet_columns
        self.frames: list[tuple[int, torch.Tensor]] = []

    def on_start(self, *, run_dir: str | Path | None = None, **kw: Any) -> None:
        if self.dir is None:
            if run_dir is None:
                from .errors import ConfigError
                raise ConfigError("callback 'snapshots' needs options = { directory = \"...\" } "
                                  "outside a run folder")
            self.dir = Path(run_dir) / "snapshots"

    def on_step(self, *, record: dict[str, Any], u: torch.Tensor | None = None, evaluator: Any = None,
                **kw: Any) -> None:
        if not self.every or (record["step"] + 1) % self.every or u is None or evaluator is None:
            return
        from .imageio import save_png
        assert self.dir is not None
        img = evaluator.preview(evaluator.space.to_theta(u.unsqueeze(0)))[0]
        self.dir.mkdir(parents=True, exist_ok=True)
        save_png(self.dir / f"step_{record['step'] + 1:05d}.png", img)
        self.frames.append((record["step"] + 1, img.detach().cpu()))

    def on_end(self, **kw: Any) -> None:
        """A contact sheet of the snapshots: the run at a glance."""
        if not self.frames or self.dir is None:
            return
        from .plotting import image_grid
        frames = self.frames
        if len(frames) > 4 * self.sheet_columns:  # keep the sheet readable: an even subsample
            idx = torch.linspace(0, len(frames) - 1, 4 * self.sheet_columns).round().long().unique()
            frames = [frames[int(i)] for i in idx]
        cols = self.sheet_columns
        rows = [frames[i:i + cols] for i in range(0, len(frames), cols)]
        image_grid(self.dir / "sheet.png", [[img for _, img in r] for r in rows],
                   cell_labels=[[f"step {s}" for s, _ in r] for r in rows], title="snapshots")


class StartImage(Callback):
    """Save the image at the start parameters (an extra render) once, for the run's report."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_start(self, *, u: torch.Tensor | None = None, evaluator: Any = None, start_step: int = 0,
                 **kw: Any) -> None:
        if self.path.exists() or start_step > 0 or u is None or evaluator is None:
            return
        from .imageio import save_png
        save_png(self.path, evaluator.preview(evaluator.space.to_theta(u.unsqueeze(0)))[0])


class History(Callback):
    """Collects records in memory (the loop keeps its own; this is for user code)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def on_step(self, *, record: dict[str, Any], **kw: Any) -> None:
        self.records.append(record)


@hookimpl
def rendergrad_callbacks():
    return [ProgressBar, Snapshots]
