"""OLAT tooling: capture a basis from any renderer, OLAT-AD relighting, contact sheets, apply.

* :func:`capture` renders each light the renderer declares through
  ``Renderer.light_parameters()`` alone (that parameter at its unit value, every other light
  parameter at 0), plus the scene with every light off (the ``base``) and with every light on
  (the check: ``base + Σ I_i`` must equal it within render noise).
* :func:`olat_ad` is Savage et al.'s OLAT-AD: a batch of candidates θ ~ N(1, σ²), Adam on the
  multipliers (lr 0.06, ~230 steps), clamp to ``[θ_min, θ_max]`` after each step, optional
  random resized crops, a differentiable tone map, any objective.
* :func:`write_outputs` writes the contact sheet, ``multipliers.json``, the best image, and
  the ways back into the source scene (:func:`source_params`, :func:`blender_script`).

The ``rendergrad olat capture|optimize|apply`` commands wrap these.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rendergrad import Objective, Renderer, hookimpl
from rendergrad.errors import ConfigError, RendergradError

from .olat import META_NAME, OlatBasis, OlatRenderer, _as_rgb, write_exr

_SAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


# -- capture ------------------------------------------------------------------------------------
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


# -- OLAT-AD ------------------------------------------------------------------------------------
def random_resized_crop(images: torch.Tensor, generator: torch.Generator,
                        scale: tuple[float, float] = (0.5, 1.0),
                        extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-image random square-ratio crop of ``[B,H,W,C]`` resized back to ``H×W`` (differentiable).

    ``extra`` (``[H,W,C]``, e.g. the target) gets each image's crop too → ``[B,H,W,C]``.
    """
    b = images.shape[0]
    lo, hi = scale
    s = lo + (hi - lo) * torch.rand(b, generator=generator, dtype=torch.float64)
    side = s.sqrt()  # scale is the crop's area fraction
    tx = (2 * torch.rand(b, generator=generator, dtype=torch.float64) - 1) * (1 - side)
    ty = (2 * torch.rand(b, generator=generator, dtype=torch.float64) - 1) * (1 - side)
    aff = torch.zeros(b, 2, 3, dtype=images.dtype, device=images.device)
    aff[:, 0, 0] = side.to(aff)
    aff[:, 1, 1] = side.to(aff)
    aff[:, 0, 2] = tx.to(aff)
    aff[:, 1, 2] = ty.to(aff)
    x = images.permute(0, 3, 1, 2)
    grid = F.affine_grid(aff, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).permute(0, 2, 3, 1)
    ex = None
    if extra is not None:
        e = extra.permute(2, 0, 1).unsqueeze(0).expand(b, -1, -1, -1).to(images.dtype)
        ex = F.grid_sample(e, grid, mode="bilinear", padding_mode="border", align_corners=False).permute(0, 2, 3, 1)
    return out, ex


@dataclass
class OlatADResult:
    """Candidates' final multipliers ``[B, L, 3]`` and losses, the best index, history, snapshots."""

    names: list[str]
    multipliers: torch.Tensor
    losses: torch.Tensor
    best: int
    history: list[dict[str, Any]]
    snapshots: list[tuple[int, torch.Tensor]]
    renders: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    images: torch.Tensor | None = None

    def candidate(self, i: int | None = None) -> dict[str, list[float]]:
        m = self.multipliers[self.best if i is None else i]
        return {n: [float(v) for v in m[j]] for j, n in enumerate(self.names)}

    def to_json(self) -> dict[str, Any]:
        return {"lights": self.names, "best": self.best, "multipliers": self.candidate(),
                "candidates": [{"loss": float(self.losses[i]), "multipliers": self.candidate(i)}
                               for i in range(self.multipliers.shape[0])],
                "renders": self.renders, "seconds": self.seconds, "settings": self.settings}


def configure_tonemap(objective: Objective, tonemap: str | None, exposure: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Apply the tone map exactly once: inside objectives that tone-map, else before the objective.

    Returns the function the loop applies to images (identity when the objective does it).
    """
    from rendergrad.plugins.tonemap import check_tonemap, tonemap as apply_tonemap
    if tonemap is None and not exposure:
        return lambda x: x
    if hasattr(objective, "tonemap") and hasattr(objective, "exposure"):
        if tonemap is not None:
            objective.tonemap = check_tonemap(tonemap)
        objective.exposure = float(exposure)
        return lambda x: x
    key = check_tonemap(tonemap)
    return lambda x: apply_tonemap(x, key, exposure)


def olat_ad(renderer: OlatRenderer, objective: Objective, target: torch.Tensor | None = None, *,
            batch: int = 4, sigma: float = 0.1, lr: float = 0.06, steps: int = 230, seed: int = 0,
            augment: str | None = None, crop_scale: tuple[float, float] = (0.5, 1.0),
            tonemap: str | None = None, exposure: float = 0.0, lr_decay: str = "none",
            snapshot_every: int | None = None, snapshot_size: int = 96,
            init: torch.Tensor | None = None, callback: Callable[[int, torch.Tensor], None] | None = None
            ) -> OlatADResult:
    """OLAT-AD: optimize a batch of RGB-multiplier candidates by Adam on an objective.

    ``target``: the reference image ``[H, W, C]`` (linear) for image objectives, or ``None``.
    ``lr_decay="cosine"`` anneals the step to 1 % of ``lr`` (for precise recovery); ``"none"``
    is the paper's constant rate. Candidates start at ``init`` (default: the basis at unit
    multipliers) plus N(0, σ²) noise on every multiplier (HSV: on the value only).
    """
    if batch < 1 or steps < 0 or not lr > 0 or sigma < 0:
        raise ConfigError("olat_ad: need batch >= 1, steps >= 0, lr > 0, sigma >= 0")
    if augment not in (None, "none", "crop"):
        raise ConfigError(f"olat_ad: augment must be None or 'crop', got {augment!r}")
    if lr_decay not in ("none", "cosine"):
        raise ConfigError(f"olat_ad: lr_decay must be 'none' or 'cosine', got {lr_decay!r}")
    if not (0 < crop_scale[0] <= crop_scale[1] <= 1):
        raise ConfigError(f"olat_ad: crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
    augment = None if augment == "none" else augment
    space = renderer.parameter_space()
    gen = torch.Generator().manual_seed(int(seed))
    lo, hi = space.low.float(), space.high.float()
    start = (space.initial_theta() if init is None else torch.as_tensor(init, dtype=torch.float64)).float()
    mask = torch.ones(space.size)
    if getattr(renderer, "color_model", "rgb") == "hsv":
        mask = torch.tensor([0.0, 0.0, 1.0]).repeat(space.size // 3)
    noise = torch.randn(batch, space.size, generator=gen) * sigma * mask
    theta = torch.nn.Parameter(torch.minimum(torch.maximum(start + noise, lo), hi))
    opt = torch.optim.Adam([theta], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), eta_min=lr * 0.01) \
        if lr_decay == "cosine" else None
    post = configure_tonemap(objective, tonemap, exposure)
    tgt = None if target is None else torch.as_tensor(target, dtype=torch.float32)
    if tgt is not None:
        tgt = post(tgt.unsqueeze(0))[0]
    objective.prepare(tgt)
    if hasattr(objective, "set_init"):
        with torch.no_grad():
            objective.set_init(renderer.render(start.unsqueeze(0)))
    every = snapshot_every or max(1, steps // 6)
    snapshots: list[tuple[int, torch.Tensor]] = []
    history: list[dict[str, Any]] = []
    renders = 0
    t0 = time.perf_counter()

    def evaluate(th: torch.Tensor, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        img = renderer.render(th)
        x = img
        t = tgt
        per_target = None
        if augment == "crop" and train:
            x, per_target = random_resized_crop(img, gen, crop_scale, tgt)
        x = post(x)
        if per_target is None:
            loss = objective.loss(x, t)
        else:
            parts = []
            for i in range(x.shape[0]):
                objective.prepare(per_target[i])
                parts.append(objective.loss(x[i:i + 1], per_target[i]))
            objective.prepare(tgt)
            loss = torch.cat(parts)
        return loss, img

    def snap(step: int, img: torch.Tensor) -> None:
        from rendergrad.plugins.tonemap import to_linear_display
        with torch.no_grad():
            d = img.detach().float()
            h, w = d.shape[1:3]
            f = snapshot_size / max(h, w)
            if f < 1:
                d = F.interpolate(d.permute(0, 3, 1, 2), size=(max(1, round(h * f)), max(1, round(w * f))),
                                  mode="area").permute(0, 2, 3, 1)
            tm = getattr(objective, "tonemap", None) if tonemap is None else tonemap
            snapshots.append((step, to_linear_display(d, tm or "srgb", exposure)))

    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss, img = evaluate(theta, True)
        renders += theta.shape[0]
        if not bool(torch.isfinite(loss).all()):
            raise RendergradError(f"olat_ad: the objective returned a non-finite loss at step {step}; "
                                  "lower lr or check the objective's inputs")
        loss.sum().backward()
        if step % every == 0:
            snap(step, img)
        opt.step()
        if sched is not None:
            sched.step()
        with torch.no_grad():
            theta.copy_(torch.minimum(torch.maximum(theta, lo), hi))
        history.append({"step": step, "loss": float(loss.detach().min()), "mean_loss": float(loss.detach().mean()),
                        "losses": [float(v) for v in loss.detach()], "evaluations": renders})
        if callback is not None:
            callback(step, loss.detach())
    with torch.no_grad():
        final_loss, final_img = evaluate(theta.detach(), False)
    renders += theta.shape[0]
    snap(steps, final_img)
    best = int(torch.argmin(final_loss))
    settings = {"batch": batch, "sigma": sigma, "lr": lr, "steps": steps, "seed": seed, "augment": augment,
                "crop_scale": list(crop_scale), "tonemap": tonemap, "exposure": exposure, "lr_decay": lr_decay,
                "objective": objective.name}
    return OlatADResult(list(renderer.names), renderer.multipliers(theta.detach()).clone(), final_loss.detach(),
                        best, history, snapshots, renders, time.perf_counter() - t0, settings,
                        final_img.detach())


# -- outputs and applying them ------------------------------------------------------------------
def contact_sheet(path: str | Path, result: OlatADResult, target: torch.Tensor | None = None) -> Path:
    """Rows: snapshots over the steps; columns: the candidates (best marked); plus the target."""
    from rendergrad.plotting import image_grid
    rows, labels = [], []
    for step, imgs in result.snapshots:
        row = [imgs[i] for i in range(imgs.shape[0])]
        if target is not None:
            row.append(target if step == result.snapshots[0][0] else None)
        rows.append(row)
        labels.append(f"step {step}")
    cols = [f"#{i}{' (best)' if i == result.best else ''}" for i in range(result.multipliers.shape[0])]
    if target is not None:
        cols.append("target")
    return image_grid(path, rows, row_labels=labels, col_labels=cols,
                      title=f"OLAT-AD: {result.settings.get('objective', '')}, final losses "
                            + ", ".join(f"{float(v):.3g}" for v in result.losses))


def source_params(basis: OlatBasis, multipliers: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Light multipliers → values of the source renderer's light parameters (as captured).

    An RGB light parameter becomes ``unit ⊙ θ``; a scalar one (an energy) ``unit · luma(θ)``
    (its colour lives elsewhere: use :func:`blender_script` or edit the colour by hand).
    """
    out: dict[str, Any] = {}
    for light in basis.lights:
        p = light.get("parameter")
        if not p or light["name"] not in multipliers:
            continue
        m = [float(v) for v in multipliers[light["name"]]]
        unit = light.get("unit", 1.0)
        if isinstance(unit, list) and len(unit) == 3:
            out[p] = [u * v for u, v in zip(unit, m)]
        elif isinstance(unit, list):
            y = 0.2126 * m[0] + 0.7152 * m[1] + 0.0722 * m[2]
            out[p] = [u * y for u in unit]
        else:
            out[p] = float(unit) * (0.2126 * m[0] + 0.7152 * m[1] + 0.0722 * m[2])
    return out


def blender_script(basis: OlatBasis, multipliers: Mapping[str, Sequence[float]]) -> str:
    """A Python script for Blender that scales each light's energy and colour by its multiplier.

    Run it once on the scene as it was captured (the multipliers are relative to it).
    """
    entries = []
    for light in basis.lights:
        if light["name"] not in multipliers:
            continue
        from .olat_blender import blender_light_names
        entries.append({"names": blender_light_names(light, basis.meta),
                        "rgb": [float(v) for v in multipliers[light["name"]]]})
    return f'''"""Apply OLAT-AD light multipliers (generated by `rendergrad olat apply`).

Run in Blender on the scene as captured: blender scene.blend --python this_file.py
Each light's energy is scaled by max(r, g, b) and its colour by (r, g, b) / max(r, g, b).
"""
import bpy

LIGHTS = {json.dumps(entries, indent=4)}


def find(names):
    for n in names:
        if n in bpy.data.lights:
            return bpy.data.lights[n]
        obj = bpy.data.objects.get(n)
        if obj is not None and obj.type == "LIGHT":
            return obj.data
    return None


for entry in LIGHTS:
    light = find(entry["names"])
    if light is None:
        print("rendergrad: no light named", entry["names"], "- skipped")
        continue
    r, g, b = entry["rgb"]
    v = max(r, g, b)
    light.energy = light.energy * v
    if v > 0:
        light.color = [c * m / v for c, m in zip(light.color, (r, g, b))]
    print("rendergrad: set", light.name, "energy", light.energy, "colour", tuple(light.color))
'''


def write_outputs(out: str | Path, result: OlatADResult, basis: OlatBasis,
                  target: torch.Tensor | None = None) -> dict[str, Path]:
    """Contact sheet, ``multipliers.json``, ``history.json``, best image (EXR + PNG), apply files."""
    from rendergrad.imageio import save_png
    from rendergrad.plotting import convergence_plot
    from rendergrad.plugins.tonemap import to_linear_display
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"multipliers": out / "multipliers.json", "history": out / "history.json",
             "sheet": out / "contact_sheet.png", "best_exr": out / "best.exr", "best_png": out / "best.png",
             "params": out / "params.json", "blender": out / "apply_blender.py", "plot": out / "convergence.png"}
    paths["multipliers"].write_text(json.dumps(result.to_json(), indent=2))
    paths["history"].write_text(json.dumps(result.history))
    tm = result.settings.get("tonemap") or "srgb"
    tgt_disp = None if target is None else to_linear_display(target.float(), tm, result.settings.get("exposure", 0.0))
    contact_sheet(paths["sheet"], result, tgt_disp)
    best = result.images[result.best]
    write_exr(paths["best_exr"], best)
    save_png(paths["best_png"], to_linear_display(best, tm, result.settings.get("exposure", 0.0)))
    paths["params"].write_text(json.dumps(source_params(basis, result.candidate()), indent=2))
    paths["blender"].write_text(blender_script(basis, result.candidate()))
    convergence_plot(paths["plot"], {"best candidate": result.history}, title="OLAT-AD")
    return paths


# -- CLI ----------------------------------------------------------------------------------------
def _value(text: str) -> Any:
    """A ``--option`` value: TOML (numbers, booleans, arrays, quoted strings) or a bare string."""
    from rendergrad.config import parse_value
    return parse_value(text)


def _pairs(items: Sequence[str] | None, what: str) -> dict[str, Any]:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise ConfigError(f"{what} {it!r} must look like KEY=VALUE")
        k, v = it.split("=", 1)
        out[k.strip()] = _value(v.strip())
    return out


def _cmd_capture(args: argparse.Namespace) -> int:
    from rendergrad.registry import registry
    name, options = args.renderer, _pairs(args.option, "--option")
    params = _pairs(args.param, "--param")
    if args.config:
        from rendergrad.config import load_config
        cfg = load_config(args.config, [])
        name = name or cfg["renderer"]["name"]
        options = {**cfg["renderer"]["options"], **options}
        params = {**cfg["params"]["init"], **params}
    if not name:
        raise ConfigError("olat capture needs --renderer NAME or --config RUN.toml")
    renderer = registry().create("renderer", name, options)
    try:
        cap = capture(renderer, args.out, params=params, lights=args.light or None, unit=args.unit,
                      max_batch=args.max_batch, multilayer=args.multilayer,
                      source={"options": options})
    finally:
        renderer.close()
    print(f"captured {len(cap.basis.names)} lights ({', '.join(cap.basis.names)}) in {cap.renders} renders, "
          f"{cap.seconds:.1f}s; |full - (base + sum)| / |full| = {cap.relative_error:.2e}")
    print(f"wrote {cap.path}")
    return 0


def _cmd_optimize(args: argparse.Namespace) -> int:
    from rendergrad.imageio import load_image
    from rendergrad.registry import registry
    renderer = OlatRenderer(args.basis, theta_min=args.theta_min, theta_max=args.theta_max, dtype=args.dtype)
    options = _pairs(args.option, "--option")
    for flag, key in (("text", "text"), ("init_text", "init_text"), ("checkpoint", "checkpoint"),
                      ("clip_model", "model"), ("clip_mode", "mode")):
        if getattr(args, flag) is not None:
            options[key] = getattr(args, flag)
    objective = registry().create("objective", args.objective, options)
    target = None
    if args.target and args.target_multipliers:
        raise ConfigError("olat optimize: give --target (an image) or --target-multipliers, not both")
    if args.target:
        target = load_image(args.target)
    elif args.target_multipliers:
        mult = _load_multipliers(args.target_multipliers, renderer.names)
        with torch.no_grad():
            target = renderer.relight(mult.unsqueeze(0))[0]
    res = olat_ad(renderer, objective, target, batch=args.batch, sigma=args.sigma, lr=args.lr, steps=args.steps,
                  seed=args.seed, augment=args.augment, tonemap=args.tonemap, exposure=args.exposure,
                  lr_decay=args.lr_decay)
    paths = write_outputs(args.out, res, renderer.basis, target)
    print(f"best candidate #{res.best}: loss {float(res.losses[res.best]):.6g} after {args.steps} steps "
          f"({res.renders} relights, {res.seconds:.1f}s)")
    print(f"wrote {paths['multipliers']}, {paths['sheet']}, {paths['params']}, {paths['blender']}")
    return 0


def _load_multipliers(spec: str, names: Sequence[str]) -> torch.Tensor:
    """``{name: [r,g,b] or v}`` (a JSON file or inline JSON; a result's "multipliers") → ``[L, 3]``."""
    p = Path(spec)
    try:
        data = json.loads(p.read_text() if p.is_file() else spec)
    except json.JSONDecodeError as e:
        raise ConfigError(f"multipliers {spec!r}: not a JSON file or inline JSON ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("multipliers"), dict):
        data = data["multipliers"]
    if not isinstance(data, dict):
        raise ConfigError("multipliers must be a JSON object {light name: [r, g, b] or a number}")
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"multipliers name unknown lights {unknown}; lights: {', '.join(names)}")
    out = torch.ones(len(names), 3)
    for i, n in enumerate(names):
        if n in data:
            v = torch.as_tensor(data[n], dtype=torch.float32).flatten()
            if v.numel() not in (1, 3):
                raise ConfigError(f"multiplier of {n!r} must be a number or [r, g, b]")
            out[i] = v.expand(3)
    return out


def _cmd_apply(args: argparse.Namespace) -> int:
    basis = OlatBasis.load(args.basis)
    src = Path(args.result)
    if src.is_dir():
        src = src / "multipliers.json"
    if not src.is_file():
        raise ConfigError(f"olat apply: {src} not found (give multipliers.json or the optimize output folder)")
    try:
        data = json.loads(src.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"olat apply: {src} is not JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("multipliers"), dict):
        raise ConfigError(f"olat apply: {src} has no \"multipliers\"; give the multipliers.json written by "
                          "`rendergrad olat optimize` (or its output folder)")
    if args.candidate is not None:
        candidates = data.get("candidates") or []
        if not 0 <= args.candidate < len(candidates):
            raise ConfigError(f"olat apply: --candidate {args.candidate} does not exist; {src} has candidates "
                              f"0 to {len(candidates) - 1}")
        mult = candidates[args.candidate]["multipliers"]
    else:
        mult = data["multipliers"]
    if args.format == "params":
        text = json.dumps(source_params(basis, mult), indent=2)
    elif args.format == "toml":
        vals = source_params(basis, mult)
        text = "[params]\ninit = { " + ", ".join(f'"{k}" = {json.dumps(v)}' for k, v in vals.items()) + " }\n"
    else:
        text = blender_script(basis, mult)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


@hookimpl
def rendergrad_add_commands(subparsers):
    p = subparsers.add_parser("olat", help="OLAT relighting: capture a basis, optimize light multipliers, apply them")
    sub = p.add_subparsers(dest="olat_command", metavar="SUBCOMMAND", required=True)

    c = sub.add_parser("capture", help="render one image per light with any renderer that declares light parameters")
    c.add_argument("--config", help="a run TOML: its [renderer] and [params] init are used")
    c.add_argument("--renderer", help="renderer plugin name")
    c.add_argument("--option", action="append", metavar="KEY=VALUE", help="renderer option (TOML value)")
    c.add_argument("--param", action="append", metavar="KEY=VALUE", help="scene parameter value during capture")
    c.add_argument("--light", action="append", help="capture only this light parameter (repeatable)")
    c.add_argument("--unit", choices=["init", "one"], default="init",
                   help="light value a multiplier of 1 stands for: as authored (init) or 1.0")
    c.add_argument("--max-batch", type=int, help="render at most this many images per call")
    c.add_argument("--multilayer", action="store_true", help="write one multi-layer EXR instead of one per light")
    c.add_argument("--out", required=True, help="output folder (olat.json + EXRs)")
    c.set_defaults(func=_cmd_capture)

    o = sub.add_parser("optimize", help="OLAT-AD: optimize per-light RGB multipliers for an objective",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples (see docs/olat.md):\n"
                              "  rendergrad olat optimize runs/basis --target reference.exr --objective style --out runs/style\n"
                              "  rendergrad olat optimize runs/basis --target-multipliers examples/olat/target_multipliers.json "
                              "--out runs/mse")
    o.add_argument("basis", help="olat.json or its folder")
    o.add_argument("--out", required=True, help="output folder (multipliers.json, contact sheet, best image)")
    o.add_argument("--objective", default="mse", help="objective plugin (mse, ssim, histogram, style, clip, ...; default: %(default)s)")
    o.add_argument("--option", action="append", metavar="KEY=VALUE", help="objective option (TOML value)")
    o.add_argument("--target", help="reference image (EXR/PNG/NPY)")
    o.add_argument("--target-multipliers", metavar="JSON",
                   help="or: relight the basis with these multipliers as the target: inline JSON "
                        "'{\"key\": [1.6, 1.2, 0.8]}' or a JSON file; unnamed lights stay at 1")
    o.add_argument("--text", help="clip: target prompt")
    o.add_argument("--init-text", help="clip: prompt describing the starting image (relative mode)")
    o.add_argument("--checkpoint", help="clip: local weights file")
    o.add_argument("--clip-model", help="clip: architecture name or model-config JSON")
    o.add_argument("--clip-mode", choices=["text", "relative", "image"],
                   help="clip: relative (needs --init-text) or absolute text, or an image target")
    o.add_argument("--batch", type=int, default=4, help="candidates optimized side by side (default: %(default)s)")
    o.add_argument("--sigma", type=float, default=0.1, help="std. dev. of the initial multipliers around 1 (default: %(default)s)")
    o.add_argument("--lr", type=float, default=0.06, help="Adam learning rate (default: %(default)s)")
    o.add_argument("--steps", type=int, default=230, help="Adam steps (default: %(default)s)")
    o.add_argument("--lr-decay", choices=["none", "cosine"], default="none", help="learning-rate schedule (default: %(default)s)")
    o.add_argument("--augment", choices=["none", "crop"], default="none",
                   help="random resized crop per candidate and step (text prompts) (default: %(default)s)")
    o.add_argument("--tonemap", choices=["srgb", "agx", "linear", "none"],
                   help="differentiable tone map before the objective (default: the objective's own, if any)")
    o.add_argument("--exposure", type=float, default=0.0, help="exposure in stops before tone mapping (default: %(default)s)")
    o.add_argument("--theta-min", type=float, default=0.0, help="lower clamp of every multiplier (default: %(default)s)")
    o.add_argument("--theta-max", type=float, default=8.0, help="upper clamp of every multiplier (default: %(default)s)")
    o.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="basis storage (the sum is accumulated in float32) (default: %(default)s)")
    o.add_argument("--seed", type=int, default=0, help="seed of the initial candidates and the crops (default: %(default)s)")
    o.set_defaults(func=_cmd_optimize)

    a = sub.add_parser("apply", help="turn optimized multipliers into source-scene values or a Blender script")
    a.add_argument("result", help="multipliers.json or the optimize output folder")
    a.add_argument("--basis", required=True, help="the basis the multipliers belong to (olat.json)")
    a.add_argument("--format", choices=["params", "toml", "blender"], default="params",
                   help="params: JSON of source-scene values; toml: a [params] init block for a run file; "
                        "blender: a script for blender --python (default: params)")
    a.add_argument("--candidate", type=int, help="use this candidate instead of the best")
    a.add_argument("--out", help="write here instead of stdout")
    a.set_defaults(func=_cmd_apply)

    from . import olat_blender, olat_solve
    olat_solve.add_commands(sub)
    olat_blender.add_commands(sub)
