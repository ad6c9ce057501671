"""Differentiable tone maps: linear radiance → display values in [0, 1].

Why here and differentiable: vision models (CLIP, style features) and perceptual metrics
(SSIM, histograms) were built on display-referred images, while renderers produce linear
radiance. Scoring a linear image directly over-weights highlights; scoring an 8-bit PNG loses
the gradient. Each map below is a torch function, so the loss gradient flows through the
same curve the artist's software applies on screen.

* ``srgb``: the IEC 61966-2-1 transfer curve after clipping to [0, 1] (Blender's "Standard").
* ``agx``: Blender 4's default view transform, via the widely used analytic approximation
  (inset matrix, log2 encoding over [-12.47, 4.03] EV, 6th-order sigmoid fit, outset matrix).
  It rolls off highlights instead of clipping them, so over-exposure keeps a gradient.
* ``linear``: clip to [0, 1] only; ``none``: identity (no clipping).

``exposure`` (stops) multiplies the linear image by ``2**exposure`` first.
"""

from __future__ import annotations

from typing import Callable

import torch

from rendergrad.color import srgb_decode, srgb_encode  # noqa: F401  (re-exported)
from rendergrad.errors import ConfigError


# Row-vector form (x @ M) of the AgX matrices; the GLSL originals are column-major mat3.
_AGX_INSET = torch.tensor([[0.842479062253094, 0.0423282422610123, 0.0423756549057051],
                           [0.0784335999999992, 0.878468636469772, 0.0784336],
                           [0.0792237451477643, 0.0791661274605434, 0.879142973793104]], dtype=torch.float64)
_AGX_OUTSET = torch.tensor([[1.19687900512017, -0.0528968517574562, -0.0529716355144438],
                            [-0.0980208811401368, 1.15190312990417, -0.0980434501171241],
                            [-0.0990297440797205, -0.0989611768448433, 1.15107367264116]], dtype=torch.float64)
_AGX_MIN_EV, _AGX_MAX_EV = -12.47393, 4.026069


def _rgb(x: torch.Tensor, what: str) -> None:
    if x.shape[-1] != 3:
        raise ConfigError(f"tone map {what!r} needs RGB images (last dimension 3), got {tuple(x.shape)}")


def agx(x: torch.Tensor) -> torch.Tensor:
    """Linear Rec.709 → AgX display values in [0, 1] (sRGB-encoded, like Blender's view)."""
    _rgb(x, "agx")
    inset = _AGX_INSET.to(x.device, x.dtype)
    outset = _AGX_OUTSET.to(x.device, x.dtype)
    v = x.clamp_min(0.0) @ inset
    v = torch.log2(v.clamp_min(1e-10)).clamp(_AGX_MIN_EV, _AGX_MAX_EV)
    v = (v - _AGX_MIN_EV) / (_AGX_MAX_EV - _AGX_MIN_EV)
    v2 = v * v
    v4 = v2 * v2
    v = 15.5 * v4 * v2 - 40.14 * v4 * v + 31.96 * v4 - 6.868 * v2 * v + 0.4298 * v2 + 0.1191 * v - 0.00232
    return (v @ outset).clamp(0.0, 1.0)


TONEMAPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "srgb": srgb_encode,
    "agx": agx,
    "linear": lambda x: x.clamp(0.0, 1.0),
    "none": lambda x: x,
}


def check_tonemap(name: str | None) -> str:
    """Validate a tone-map name (``None`` means ``"none"``); returns the canonical name."""
    key = "none" if name is None else str(name).lower()
    if key not in TONEMAPS:
        raise ConfigError(f"unknown tone map {name!r}; choose one of: {', '.join(TONEMAPS)}")
    return key


def tonemap(x: torch.Tensor, name: str | None = "srgb", exposure: float = 0.0) -> torch.Tensor:
    """Apply ``2**exposure`` then the named tone map to a linear image batch ``[..., C]``."""
    fn = TONEMAPS[check_tonemap(name)]
    if exposure:
        x = x * (2.0 ** float(exposure))
    return fn(x)


def to_linear_display(x: torch.Tensor, name: str | None = "srgb", exposure: float = 0.0) -> torch.Tensor:
    """Tone-map, then decode sRGB: an image that ``imageio.save_png`` shows as the tone map would.

    The image writers apply the plain sRGB curve to linear data; feeding them this result
    makes a PNG or contact sheet look like the AgX (or exposed) view the optimizer scored.
    """
    key = check_tonemap(name)
    y = tonemap(x, key, exposure)
    return y if key == "none" else srgb_decode(y)
