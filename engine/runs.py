"""Run folders as records: their status, their history, and a table of many of them.

A run folder (what ``rendergrad run --out DIR`` writes) records its state in ``status.json``:
``running`` when it starts, then ``finished``, ``interrupted`` (Ctrl-C) or ``failed`` (with the
error). A process killed outright cannot write anything, so a ``running`` folder whose process
is gone (same machine, pid no longer alive) reads as ``interrupted``.

``rendergrad runs DIR`` and ``rendergrad compare RUN...`` read folders only through this
module: finished runs from ``result.json``, unfinished ones from their checkpoint's history.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import ConfigError

STATUS_NAME = "status.json"
STATUSES = ("running", "finished", "interrupted", "failed")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def write_status(run_dir: str | Path, status: str, **extra: Any) -> Path:
    """Record a run's state; keeps when it started across sessions (resumes)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    path = Path(run_dir) / STATUS_NAME
    old = _read_json(path) or {}
    now = _now()
    sessions = int(old.get("sessions", 0)) + (1 if status == "running" else 0)
    data = {"status": status, "started": old.get("started") or now, "updated": now, "pid": os.getpid(),
            "host": socket.gethostname(), "sessions": max(sessions, 1), **extra}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
    return path


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """``{"status": ..., ...}`` of a run folder, inferred for folders older than ``status.json``."""
    run_dir = Path(run_dir)
    st = _read_json(run_dir / STATUS_NAME)
    if st is None:
        if (run_dir / "result.json").exists():
            return {"status": "finished"}
        return {"status": "interrupted", "note": "no status.json and no result.json"}
    if st.get("status") == "running" and not st.get("external") and st.get("host") == socket.gethostname() \
            and isinstance(st.get("pid"), int) and not _alive(st["pid"]):
        st = {**st, "status": "interrupted", "note": "its process ended without recording why (killed?)"}
    return st


def is_run_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "result.json").is_file()


def find_runs(root: str | Path) -> list[Path]:
    """Every run folder at or under ``root`` (a folder with ``config.json`` or ``result.json``)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder; give a folder that holds run folders "
                          "(what `rendergrad run --out DIR` writes)")
    return sorted({p.parent for name in ("config.json", "result.json") for p in root.rglob(name)})


def load_checkpoint_summary(run_dir: Path) -> dict[str, Any] | None:
    """History and counts from an unfinished run's checkpoint (tensors-only load: never runs code)."""
    path = run_dir / "checkpoint" / "checkpoint.pt"
    if not path.exists():
        return None
    try:
        import torch
        st = torch.load(path, weights_only=True)
    except Exception:
        return None
    best = st.get("best_loss")
    return {"history": list(st.get("history") or []), "evaluations": st.get("renders"),
            "wall_time_s": st.get("elapsed"), "best_loss": float(best) if best is not None else None,
            "extra_renders": st.get("extra_renders"), "render_seconds": st.get("render_seconds")}


@dataclass
class RunRecord:
    """What one run folder says about its run: the row of ``rendergrad runs``."""

    run: str
    status: str
    renderer: str | None = None
    objective: str | None = None
    estimator: str | None = None
    renders: int | None = None
    steps: int | None = None
    final_loss: float | None = None
    best_loss: float | None = None
    param_error: float | None = None
    wall_time_s: float | None = None
    stopped: str | None = None
    error: str | None = None
    path: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def param_error(params: dict[str, Any] | None, target: dict[str, Any] | None) -> float | None:
    """Euclidean distance between parameters and target parameters, in parameter units.

    Over the parameters the target names (vectors flattened); ``None`` when either is unknown.
    """
    if not params or not target:
        return None
    a: list[float] = []
    b: list[float] = []
    for k, t in target.items():
        if k not in params:
            return None
        pv, tv = _flat(params[k]), _flat(t)
        if pv is None or tv is None or len(pv) != len(tv):
            return None
        a += pv
        b += tv
    return math.dist(a, b) if a else None


def target_params(cfg: dict[str, Any], result: dict[str, Any]) -> dict[str, Any] | None:
    """The target parameters of a run: ``[target] params``, plus the values of the parameters it
    left at their defaults when the result records them (``target_defaults``)."""
    given = (cfg.get("target") or {}).get("params")
    if not given:
        return None
    defaults = {k: v for k, v in (result.get("target_defaults") or {}).items() if _flat(v) is not None}
    return {**defaults, **given}


def _flat(v: Any) -> list[float] | None:
    if isinstance(v, bool):
        return [float(v)]
    if isinstance(v, (int, float)):
        return [float(v)]
    if isinstance(v, (list, tuple)):
        out: list[float] = []
        for x in v:
            f = _flat(x)
            if f is None:
                return None
            out += f
        return out
    return None


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """Everything a report or table needs from a folder: config, result (or checkpoint), status."""
    run_dir = Path(run_dir)
    cfg = _read_json(run_dir / "config.json") or {}
    result = _read_json(run_dir / "result.json")
    status = read_status(run_dir)
    partial = None
    if result is None or status.get("status") in ("running", "interrupted", "failed"):
        partial = load_checkpoint_summary(run_dir)
    data = dict(result or {})
    if partial is not None and (result is None or len(partial["history"]) > len(data.get("history", []))):
        # the checkpoint is newer than result.json (a resumed session stopped early)
        data.update({k: v for k, v in partial.items() if v is not None})
        hist = partial["history"]
        data["loss"] = hist[-1]["loss"] if hist else None
        data["params"] = hist[-1].get("params") if hist else None
        data["steps"] = len(hist)
        data.pop("best_params", None)
        data.pop("stopped", None)
    data.setdefault("renderer", cfg.get("renderer", {}).get("name"))
    data.setdefault("estimator", cfg.get("estimator", {}).get("name"))
    data.setdefault("history", [])
    return {"config": cfg, "result": data, "status": status, "finished": result is not None and partial is None}


def summarize(run_dir: str | Path, root: str | Path | None = None) -> RunRecord:
    run_dir = Path(run_dir)
    d = load_run(run_dir)
    cfg, res, st = d["config"], d["result"], d["status"]
    target = target_params(cfg, res)
    hist = res.get("history") or []
    best = res.get("best_loss")
    if best is None and hist:
        best = min(h["loss"] for h in hist if h.get("loss") is not None)
    name = str(run_dir.relative_to(root)) if root is not None and run_dir != Path(root) else run_dir.name
    return RunRecord(
        run=name or str(run_dir), status=st.get("status", "?"), renderer=res.get("renderer"),
        objective=cfg.get("objective", {}).get("name"), estimator=res.get("estimator"),
        renders=res.get("evaluations"), steps=res.get("steps", len(hist)),
        final_loss=res.get("loss"), best_loss=best, param_error=param_error(res.get("params"), target),
        wall_time_s=res.get("wall_time_s"), stopped=res.get("stopped"), error=st.get("error"),
        path=str(run_dir))


COLUMNS: dict[str, str] = {  # RunRecord field -> table heading
    "run": "run", "status": "status", "renderer": "renderer", "estimator": "estimator",
    "renders": "renders", "steps": "steps", "final_loss": "final loss", "best_loss": "best loss",
    "param_error": "param error", "wall_time_s": "wall s",
}


def sort_records(records: Sequence[RunRecord], by: str = "run", reverse: bool = False) -> list[RunRecord]:
    """Sort by a column; missing values go last whichever the direction."""
    key = by.replace("-", "_").replace(" ", "_")
    aliases = {"loss": "final_loss", "final": "final_loss", "best": "best_loss", "error": "param_error",
               "wall": "wall_time_s", "time": "wall_time_s", "wall_s": "wall_time_s"}
    key = aliases.get(key, key)
    if key not in COLUMNS:
        from .config import suggest
        raise ConfigError(f"cannot sort by {by!r}{suggest(key, COLUMNS)}; columns: {', '.join(COLUMNS)}")
    present = [r for r in records if getattr(r, key) is not None]
    missing = [r for r in records if getattr(r, key) is None]
    return sorted(present, key=lambda r: getattr(r, key), reverse=reverse) + missing


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.2f}" if abs(v) >= 100 else f"{v:.4g}"
    return str(v)


def format_table(records: Iterable[RunRecord]) -> str:
    rows = [[_fmt(getattr(r, k)) for k in COLUMNS] for r in records]
    head = list(COLUMNS.values())
    numeric = {"renders", "steps", "final_loss", "best_loss", "param_error", "wall_time_s"}
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if k in numeric else c.ljust(w)
                         for c, w, k in zip(cells, widths, COLUMNS)).rstrip()
    return "\n".join([line(head)] + [line(r) for r in rows])


def histories(runs: Sequence[str | Path]) -> dict[str, list[dict[str, Any]]]:
    """Each run's history, labelled by the shortest distinct tail of its path."""
    paths = [Path(r) for r in runs]
    labels = _labels(paths)
    return {label: load_run(p)["result"]["history"] for label, p in zip(labels, paths)}


def _labels(paths: Sequence[Path]) -> list[str]:
    parts = [p.resolve().parts for p in paths]
    for n in range(1, max((len(p) for p in parts), default=1) + 1):
        labels = ["/".join(p[-n:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]
