"""``rendergrad olat solve``: the exact light multipliers for MSE in linear space.

For the mean squared error against a linear target ``T`` the relit image
``X = base + Σ_i θ_i ⊙ I_i`` is linear in θ, so the best multipliers inside OLAT-AD's clamp
range ``[θ_min, θ_max]`` solve a bound-constrained linear least-squares problem; there is
nothing to tune and no noise. Each colour channel is an independent problem with one unknown
per light (``color="rgb"``), or the three channels share one scalar per light
(``color="scalar"``: keeps every light's colour as authored).

The pixels only enter through the Gram matrix ``G = A Aᵀ`` (lights × lights) and ``A b``,
accumulated in float64 over pixel chunks, so a 4K basis of hundreds of lights solves in the
memory of the basis itself. ``‖Aᵀθ − b‖²`` equals ``‖Rθ − d‖² + const`` with
``G = RᵀR`` from its eigendecomposition, and scipy's bounded-variable least squares
(``lsq_linear(method="bvls")``) solves that small problem exactly.

Use it for MSE in linear space; for SSIM, histograms, style, CLIP or tone-mapped objectives
use ``rendergrad olat optimize`` (OLAT-AD). It is also the reference OLAT-AD's MSE loss is
checked against (``tests/test_olat_solve.py``, ``python -m benchmarks olat --solve``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rendergrad.errors import ConfigError

from .olat import OlatBasis, OlatRenderer, _as_rgb

COLORS = ("rgb", "scalar")


@dataclass
class SolveResult:
    """The optimal multipliers ``[L, 3]``, their MSE, the relit image, and what it cost."""

    names: list[str]
    multipliers: torch.Tensor
    loss: float
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    image: torch.Tensor | None = None
    active: dict[str, list[str]] = field(default_factory=dict)

    def candidate(self) -> dict[str, list[float]]:
        return {n: [float(v) for v in self.multipliers[j]] for j, n in enumerate(self.names)}

    def to_json(self) -> dict[str, Any]:
        """The layout of ``rendergrad olat optimize``'s ``multipliers.json`` (one candidate)."""
        return {"lights": self.names, "best": 0, "multipliers": self.candidate(),
                "candidates": [{"loss": self.loss, "multipliers": self.candidate()}],
                "loss": self.loss, "renders": 1, "seconds": self.seconds, "settings": self.settings,
                "at_bounds": self.active}


def gram(images: torch.Tensor, residual: torch.Tensor, chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per channel ``G_c = A_c A_cᵀ`` ``[3, L, L]``, ``r_c = A_c b_c`` ``[3, L]`` and ``b_cᵀb_c`` ``[3]``, float64.

    ``images`` ``[L, H, W, 3]``, ``residual`` ``b = target - base`` ``[H, W, 3]``.
    """
    L = images.shape[0]
    a = images.reshape(L, -1, 3)
    b = residual.reshape(-1, 3)
    g = torch.zeros(3, L, L, dtype=torch.float64)
    r = torch.zeros(3, L, dtype=torch.float64)
    bb = torch.zeros(3, dtype=torch.float64)
    for s in range(0, a.shape[1], chunk):
        ac = a[:, s:s + chunk].to(torch.float64).permute(2, 0, 1)  # [3, L, n]
        bc = b[s:s + chunk].to(torch.float64).T                    # [3, n]
        g += ac @ ac.transpose(1, 2)
        r += (ac @ bc.unsqueeze(-1)).squeeze(-1)
        bb += (bc * bc).sum(-1)
    return g.numpy(), r.numpy(), bb.numpy()


def bounded_lsq(g: np.ndarray, r: np.ndarray, low: float, high: float) -> np.ndarray:
    """``argmin_θ θᵀGθ − 2rᵀθ`` over ``low ≤ θ ≤ high``, as ``‖Rθ − d‖²`` with ``G = RᵀR``."""
    from scipy.optimize import lsq_linear
    lam, v = np.linalg.eigh(g)
    tol = max(float(lam.max()), 0.0) * g.shape[0] * np.finfo(np.float64).eps
    keep = lam > tol
    sq = np.sqrt(np.where(keep, lam, 0.0))
    rmat = sq[:, None] * v.T
    d = np.where(keep, (v.T @ r) / np.where(keep, sq, 1.0), 0.0)
    if not keep.any():  # every light is black: any θ is optimal; keep the lower bound
        return np.full(g.shape[0], max(low, 0.0) if math.isfinite(low) else 0.0)
    res = lsq_linear(rmat, d, bounds=(low, high), method="bvls", tol=1e-14)
    return np.clip(res.x, low, high)


def solve(basis: OlatBasis | OlatRenderer, target: torch.Tensor | np.ndarray, *, color: str = "rgb",
          theta_min: float = 0.0, theta_max: float = 8.0) -> SolveResult:
    """The MSE-optimal multipliers of ``basis`` for a linear ``target`` ``[H, W, C]`` within the clamp."""
    if color not in COLORS:
        raise ConfigError(f"olat solve: color must be one of {', '.join(COLORS)}, got {color!r}")
    if not (math.isfinite(theta_min) and theta_min < theta_max):
        raise ConfigError(f"olat solve: need a finite theta_min < theta_max (got {theta_min}, {theta_max})")
    renderer = basis if isinstance(basis, OlatRenderer) else \
        OlatRenderer(basis, theta_min=theta_min, theta_max=theta_max if math.isfinite(theta_max) else 1e30)
    b = renderer.basis
    tgt = torch.as_tensor(_as_rgb(np.asarray(torch.as_tensor(target, dtype=torch.float32)), "olat solve: target"))
    if tuple(tgt.shape[:2]) != (b.height, b.width):
        raise ConfigError(f"olat solve: the target is {tgt.shape[1]}x{tgt.shape[0]} but the basis is "
                          f"{b.width}x{b.height}; render or resize the target to the basis resolution")
    if not bool(torch.isfinite(tgt).all()):
        raise ConfigError("olat solve: the target contains NaN/inf pixels")
    try:  # imported before any work (a clear error) and before the clock starts
        import scipy.optimize  # noqa: F401
    except ImportError:
        raise ConfigError("olat solve needs scipy: pip install 'rendergrad[olat]'") from None
    t0 = time.perf_counter()
    residual = tgt - b.base if b.base is not None else tgt
    g, r, _ = gram(b.images.float(), residual.float())
    L = len(b.names)
    if color == "rgb":
        theta = np.stack([bounded_lsq(g[c], r[c], theta_min, theta_max) for c in range(3)], axis=-1)  # [L, 3]
    else:
        theta = np.repeat(bounded_lsq(g.sum(0), r.sum(0), theta_min, theta_max)[:, None], 3, axis=-1)
    seconds = time.perf_counter() - t0
    m = torch.from_numpy(theta).float()
    with torch.no_grad():
        img = renderer.relight(m.unsqueeze(0))[0]
        loss = float(((img - tgt) ** 2).mean())
    eps = 1e-9 * max(1.0, abs(theta_max) if math.isfinite(theta_max) else 1.0)
    active = {"low": [f"{b.names[i]}.{'RGB'[c]}" for i in range(L) for c in range(3)
                      if theta[i, c] <= theta_min + eps and (color == "rgb" or c == 0)],
              "high": [f"{b.names[i]}.{'RGB'[c]}" for i in range(L) for c in range(3)
                       if theta[i, c] >= theta_max - eps and (color == "rgb" or c == 0)]}
    settings = {"method": "solve", "solver": "scipy.optimize.lsq_linear(bvls)", "objective": "mse",
                "color": color, "theta_min": theta_min, "theta_max": theta_max}
    return SolveResult(list(b.names), m, loss, seconds, settings, img, active)


def write_solution(out: str | Path, result: SolveResult, basis: OlatBasis) -> dict[str, Path]:
    """``multipliers.json`` (as ``optimize`` writes it), the relit image, and the ways back to the scene."""
    from rendergrad.imageio import save_png
    from rendergrad.plugins.tonemap import to_linear_display

    from .olat import write_exr
    from .olat_tools import blender_script, source_params
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"multipliers": out / "multipliers.json", "best_exr": out / "best.exr", "best_png": out / "best.png",
             "params": out / "params.json", "blender": out / "apply_blender.py"}
    paths["multipliers"].write_text(json.dumps(result.to_json(), indent=2))
    write_exr(paths["best_exr"], result.image)
    save_png(paths["best_png"], to_linear_display(result.image.unsqueeze(0), "srgb", 0.0)[0])
    paths["params"].write_text(json.dumps(source_params(basis, result.candidate()), indent=2))
    paths["blender"].write_text(blender_script(basis, result.candidate()))
    return paths


def _cmd_solve(args: argparse.Namespace) -> int:
    from rendergrad.imageio import load_image

    from .olat_tools import _load_multipliers
    if bool(args.target) == bool(args.target_multipliers):
        raise ConfigError("olat solve: give exactly one of --target IMG or --target-multipliers JSON")
    renderer = OlatRenderer(args.basis, theta_min=args.theta_min,
                            theta_max=args.theta_max if math.isfinite(args.theta_max) else 1e30)
    if args.target:
        target = load_image(args.target)
    else:
        with torch.no_grad():
            target = renderer.relight(_load_multipliers(args.target_multipliers, renderer.names).unsqueeze(0))[0]
    res = solve(renderer, target, color=args.color, theta_min=args.theta_min, theta_max=args.theta_max)
    paths = write_solution(args.out, res, renderer.basis)
    bounds = ", ".join(f"{k}: {', '.join(v)}" for k, v in res.active.items() if v)
    print(f"exact {args.color} multipliers for MSE: loss {res.loss:.6g} in {res.seconds:.3f}s"
          + (f" (at the clamp: {bounds})" if bounds else ""))
    print(f"wrote {paths['multipliers']}, {paths['best_exr']}, {paths['params']}, {paths['blender']}")
    return 0


def add_commands(sub: Any) -> None:
    """``rendergrad olat solve``."""
    s = sub.add_parser("solve", help="exact multipliers for MSE in linear space (bounded least squares)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples (see docs/olat.md):\n"
                              "  rendergrad olat solve runs/basis --target reference.exr --out runs/solve\n"
                              "  rendergrad olat solve runs/basis --target reference.exr --color scalar --out runs/solve1")
    s.add_argument("basis", help="olat.json or its folder")
    s.add_argument("--target", help="linear reference image (EXR/NPY; PNG is sRGB-decoded) at the basis resolution")
    s.add_argument("--target-multipliers", metavar="JSON",
                   help="or: relight the basis with these multipliers as the target (as in optimize)")
    s.add_argument("--out", required=True, help="output folder (multipliers.json, best.exr, params.json, ...)")
    s.add_argument("--color", choices=COLORS, default="rgb",
                   help="rgb: a multiplier per light and channel; scalar: one per light, colours kept (default: %(default)s)")
    s.add_argument("--theta-min", type=float, default=0.0, help="lower clamp of every multiplier (default: %(default)s)")
    s.add_argument("--theta-max", type=float, default=8.0,
                   help="upper clamp of every multiplier; inf for none (default: %(default)s)")
    s.set_defaults(func=_cmd_solve)
