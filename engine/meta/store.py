"""``meta.json``: what meta-training learned, and the parameter space it is valid for.

A learned starting point and per-coordinate step sizes only mean something for the exact
parameter space they were learned in (same names, shapes, bounds, scales), so the file carries
a fingerprint of that space and :func:`check_space` refuses any other, saying what differs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..params import ParamSpace
from ..result import json_safe

FORMAT = "rendergrad-meta/1"
FILENAME = "meta.json"


def space_fingerprint(space: ParamSpace) -> dict[str, Any]:
    """Names, kinds, shapes, bounds and scales of every parameter, plus a short hash of them."""
    params = [{"name": p.name, "kind": p.kind, "shape": list(p.shape), "log": bool(p.log),
               "low": [round(float(v), 12) for v in p.bounds()[0].tolist()] if p.size <= 16
               else _digest(p.bounds()[0]),
               "high": [round(float(v), 12) for v in p.bounds()[1].tolist()] if p.size <= 16
               else _digest(p.bounds()[1])}
              for p in space.params]
    text = json.dumps(params, sort_keys=True)
    return {"size": space.size, "params": params, "hash": hashlib.sha256(text.encode()).hexdigest()[:16]}


def _digest(t: torch.Tensor) -> str:
    return "sha256:" + hashlib.sha256(json.dumps([round(float(v), 12) for v in t.tolist()]).encode()).hexdigest()[:16]


def space_mismatch(saved: dict[str, Any], space: ParamSpace) -> str | None:
    """Why ``saved`` (a fingerprint) does not describe ``space``, or ``None`` when it does."""
    now = space_fingerprint(space)
    if saved.get("hash") == now["hash"]:
        return None
    old = {p["name"]: p for p in saved.get("params", [])}
    new = {p["name"]: p for p in now["params"]}
    if list(old) != list(new):
        missing, extra = [n for n in old if n not in new], [n for n in new if n not in old]
        if missing or extra:
            return (f"it was learned for parameters {list(old)}, this scene has {list(new)}"
                    + (f" (missing here: {missing})" if missing else "")
                    + (f" (not in meta.json: {extra})" if extra else ""))
        return f"it was learned for the parameter order {list(old)}, this scene has {list(new)}"
    for name, p in new.items():
        q = old[name]
        for key in ("kind", "shape", "log", "low", "high"):
            if q.get(key) != p.get(key):
                return f"parameter {name!r}: {key} was {q.get(key)!r} when it was learned, here it is {p.get(key)!r}"
    return f"the parameter-space fingerprint differs ({saved.get('hash')} vs {now['hash']})"


@dataclass
class MetaParams:
    """A learned starting point ``u0`` (normalised) and positive step sizes ``α``, both ``[n]``."""

    u0: torch.Tensor
    step_sizes: torch.Tensor
    fingerprint: dict[str, Any]
    inner_steps: int = 10
    info: dict[str, Any] = field(default_factory=dict)
    source: str = "meta"   # where it was read from, for messages

    def check(self, space: ParamSpace, source: str | None = None) -> None:
        """Raise :class:`ConfigError` when this was learned for another parameter space."""
        why = space_mismatch(self.fingerprint, space)
        if why:
            raise ConfigError(f"{source or self.source} does not fit this parameter space: {why}. "
                              "Meta-train again for this scene (rendergrad meta-train FAMILY.toml --out DIR)")

    def to_json(self, space: ParamSpace | None = None) -> dict[str, Any]:
        out = {"format": FORMAT, "fingerprint": self.fingerprint, "inner_steps": self.inner_steps,
               "u0": self.u0.tolist(), "step_sizes": self.step_sizes.tolist()}
        if space is not None:
            out["init"] = space.decode(space.to_theta(self.u0), max_elements=16)
        out.update(self.info)
        return out

    def save(self, directory: str | Path, space: ParamSpace | None = None) -> Path:
        path = Path(directory) / FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_safe(self.to_json(space)), indent=2))
        return path




def load_meta(source: "str | Path | MetaParams | dict") -> MetaParams:
    """A :class:`MetaParams` from itself, its JSON dict, a ``meta.json`` path or the folder holding one."""
    if isinstance(source, MetaParams):
        return source
    if isinstance(source, dict):
        return _from_json(source, "meta")
    path = Path(source)
    if path.is_dir():
        path = path / FILENAME
    if not path.exists():
        raise ConfigError(f"no meta-learning result at {path}; create one with "
                          "`rendergrad meta-train FAMILY.toml --out DIR`")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable meta.json: {e}") from None
    params = _from_json(data, str(path))
    params.source = str(path)
    return params


def _from_json(data: dict[str, Any], path: str) -> MetaParams:
    if data.get("format") != FORMAT:
        raise ConfigError(f"{path}: format {data.get('format')!r} is not {FORMAT!r}")
    try:
        u0 = torch.tensor(data["u0"], dtype=torch.float64)
        alpha = torch.tensor(data["step_sizes"], dtype=torch.float64)
        fp = dict(data["fingerprint"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{path}: missing or malformed field {e}") from None
    if u0.shape != alpha.shape or u0.ndim != 1 or u0.shape[0] != fp.get("size"):
        raise ConfigError(f"{path}: u0, step_sizes and fingerprint.size disagree")
    info = {k: v for k, v in data.items() if k not in ("format", "fingerprint", "u0", "step_sizes", "inner_steps")}
    return MetaParams(u0=u0, step_sizes=alpha, fingerprint=fp, inner_steps=int(data.get("inner_steps", 10)), info=info)
