"""OLAT capture: render each declared light alone (plus lights-off and all-on) through BatchEvaluator.

:func:`capture` renders each light the renderer declares through
``Renderer.light_parameters()`` alone (that parameter at its unit value, every other light
parameter at 0), plus the scene with every light off (the ``base``) and with every light on
(the check: ``base + Σ I_i`` must equal it within render noise).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from rendergrad import Renderer
from rendergrad.errors import ConfigError

from ..olat import OlatBasis, _as_rgb, write_exr

_SAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


@dataclass
class Capture:
    """What :func:`capture` produced: the basis, the full render, the linearity check, the cost."""

    basis: OlatBasis
    full: torch.Tensor
    relative_error: float
    renders: int
    seconds: float
    path: Path | None = None


def light_name(parameter: str) -> str:
    """A file- and param-safe light name from a renderer parameter name."""
    return _SAFE.sub("_", parameter).strip("_") or "light"


def capture(renderer: Renderer, out: str | Path | None = None, *, params: Mapping[str, Any] | None = None,
            lights: Sequence[str] | None = None, unit: str = "init", base: str | bool = "auto",
            max_batch: int | None = None, multilayer: bool = False,
            source: Mapping[str, Any] | None = None) -> Capture:
    """Render the OLAT basis of ``renderer``; write it to ``out`` when given.

    ``unit="init"``: each light's unit is its value in the scene as authored (the parameter's
    initial value, or ``params``), so multipliers of 1 reproduce the scene; ``"one"``: 1.0.
    ``base="auto"`` keeps the lights-off image only if it is not black.
    """
    from rendergrad.evaluation import BatchEvaluator
    from rendergrad.plugins.objectives import MSE

    if unit not in ("init", "one"):
        raise ConfigError(f"capture: unit must be 'init' or 'one', got {unit!r}")
    declared = list(renderer.light_parameters())
    if not declared:
        raise ConfigError(
            f"renderer {renderer.name!r} declares no light parameters; OLAT capture needs a renderer whose "
            "light_parameters() names the parameters that scale each light (see docs/olat.md)")
    chosen = list(lights) if lights else declared
    missing = [l for l in chosen if l not in declared]
    if missing:
        raise ConfigError(f"capture: {missing} are not light parameters of {renderer.name!r}; "
                          f"it declares: {', '.join(declared)}")
    space = renderer.parameter_space()
    theta0 = space.flatten(dict(params or {}), what="capture params")
    # Lights left out of a subset keep their scene value in every render, so they belong to the
    # base and base + Σ solo still reproduces the full scene.
    off = theta0.clone()
    units: dict[str, torch.Tensor] = {}
    for p in chosen:
        sl = space.slice(p)
        lo, hi = space.low[sl], space.high[sl]
        if bool((lo > 0).any()):
            raise ConfigError(f"capture: light parameter {p!r} has lower bound {lo.tolist()} > 0, so the light "
                              "cannot be switched off; allow 0 in the renderer's bounds")
        u = theta0[sl].clone()
        if unit == "one" or not bool((u > 0).any()):
            u = torch.ones_like(u)
        if bool((u > hi).any()):
            raise ConfigError(f"capture: unit value {u.tolist()} of {p!r} exceeds its upper bound {hi.tolist()}")
        units[p] = u
        off[sl] = 0.0
    rows = [off]
    for p in chosen:
        t = off.clone()
        t[space.slice(p)] = units[p]
        rows.append(t)
    full = off.clone()
    for p in chosen:
        full[space.slice(p)] = units[p]
    rows.append(full)
    ev = BatchEvaluator(renderer, MSE(), space, None, max_batch=max_batch)
    t0 = time.perf_counter()
    with torch.no_grad():
        imgs = ev.render_theta(torch.stack(rows).to(torch.float32)).detach().float().cpu()
    seconds = time.perf_counter() - t0
    imgs = torch.from_numpy(np.stack([_as_rgb(i.numpy(), f"{renderer.name} render") for i in imgs]))
    base_img, full_img = imgs[0], imgs[-1]
    # Each solo render also holds what no light controls (emission, ambient): that is the base.
    solo = imgs[1:-1] - base_img
    keep_base = bool(base) if base != "auto" else bool(base_img.abs().max() > 1e-6 * max(float(full_img.abs().max()), 1e-12))
    total = solo.sum(0) + base_img
    rel = float((full_img - total).norm() / full_img.norm().clamp_min(1e-12))
    names = [light_name(p) for p in chosen]
    if len(set(names)) != len(names):
        names = [f"{n}_{i}" for i, n in enumerate(names)]
    light_meta = []
    for n, p in zip(names, chosen):
        u = units[p]
        light_meta.append({"name": n, "parameter": p, "unit": u.tolist() if u.numel() > 1 else float(u[0]),
                           "kind": "rgb" if u.numel() == 3 else ("scalar" if u.numel() == 1 else "vector")})
    meta = {"source": {"renderer": renderer.name, **dict(source or {}),
                       "params": space.decode(theta0, max_elements=64)},
            "unit": unit, "check": {"relative_error": rel, "renders": len(rows)}}
    basis = OlatBasis(names, solo.contiguous(), base_img.contiguous() if keep_base else None, light_meta, meta)
    path = None
    if out is not None:
        path = basis.save(out, multilayer=multilayer)
        write_exr(Path(out) / "full.exr", full_img)
    return Capture(basis, full_img, rel, ev.renders, seconds, path)
