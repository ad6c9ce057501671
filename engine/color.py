"""The sRGB transfer, once: linear ↔ sRGB-encoded, for tensors (differentiable) and arrays.

Image files for people (PNG), targets read from PNG/JPEG and display-space objectives all use
these two functions, so a colour never round-trips through two slightly different curves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

SRGB_KNEE = 0.0031308      # linear value where the curve turns from a line into a power
SRGB_KNEE_ENCODED = 0.04045


def srgb_encode(x: torch.Tensor) -> torch.Tensor:
    """Linear → sRGB-encoded, clipped to [0, 1]; finite gradient everywhere."""
    x = x.clamp(0.0, 1.0)
    safe = x.clamp_min(SRGB_KNEE)  # pow's gradient is infinite at 0: evaluate it only above the knee
    return torch.where(x <= SRGB_KNEE, 12.92 * x, 1.055 * safe.pow(1.0 / 2.4) - 0.055)


def srgb_decode(x: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded → linear (inverse of :func:`srgb_encode` on [0, 1])."""
    x = x.clamp(0.0, 1.0)
    safe = x.clamp_min(SRGB_KNEE_ENCODED)
    return torch.where(x <= SRGB_KNEE_ENCODED, x / 12.92, ((safe + 0.055) / 1.055).pow(2.4))


def _on_array(fn: Any, x: np.ndarray) -> np.ndarray:
    return fn(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """:func:`srgb_encode` for numpy arrays (float64)."""
    return _on_array(srgb_encode, x)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """:func:`srgb_decode` for numpy arrays (float64)."""
    return _on_array(srgb_decode, x)
