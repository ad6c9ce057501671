"""Images in and out: linear float tensors ↔ PNG (sRGB, 8-bit) and EXR (linear float).

Renderers produce linear radiance; people look at sRGB. Everything written for people goes
through :func:`to_display`; everything read as a target comes back linear.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .color import linear_to_srgb, srgb_to_linear  # noqa: F401  (re-exported: the one sRGB transfer)
from .errors import ConfigError


def _np(img: Any) -> np.ndarray:
    if isinstance(img, torch.Tensor):
        img = img.detach().to("cpu", torch.float32).numpy()
    return np.asarray(img, dtype=np.float32)


def to_display(img: Any, exposure: float = 0.0) -> np.ndarray:
    """Linear ``[H,W,C]`` (C = 1, 3 or 4) → sRGB uint8 ``[H,W,3]``."""
    a = _np(img)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif a.shape[-1] == 2:
        a = np.concatenate([a, np.zeros_like(a[..., :1])], axis=-1)
    a = np.nan_to_num(a[..., :3] * (2.0 ** exposure), nan=0.0, posinf=1.0, neginf=0.0)
    return (linear_to_srgb(a) * 255.0 + 0.5).astype(np.uint8)


def save_png(path: str | Path, img: Any) -> Path:
    from PIL import Image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_display(img)).save(path)
    return path


def save_exr(path: str | Path, img: Any) -> Path:
    """Write linear float32 RGB(A) EXR (needs the ``exr`` extra)."""
    import OpenEXR
    a = np.ascontiguousarray(_np(img))  # non-contiguous arrays are written as garbage
    if a.ndim == 2:
        a = a[..., None]
    channels = {1: "Y", 3: "RGB", 4: "RGBA"}.get(a.shape[-1])
    if channels is None:
        raise ValueError(f"cannot write a {a.shape[-1]}-channel image as EXR")
    data = a[..., 0] if channels == "Y" else a
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {channels: np.ascontiguousarray(data)}).write(str(path))
    return Path(path)


def load_image(path: str | Path) -> torch.Tensor:
    """Load a target image as linear float32 ``[H,W,C]``: EXR, NPY, or PNG/JPEG (sRGB decoded)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"image file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        a = np.load(path, allow_pickle=False).astype(np.float32)
    elif suffix == ".exr":
        try:
            import OpenEXR
        except ImportError:
            raise ConfigError("reading EXR needs OpenEXR: pip install 'rendergrad[exr]'") from None
        with OpenEXR.File(str(path)) as f:
            ch = f.channels()
            key = next((k for k in ("RGBA", "RGB", "Y") if k in ch), None)
            if key is None:
                names = sorted(ch)
                if all(c in ch for c in "RGB"):
                    a = np.stack([ch[c].pixels for c in "RGB"], axis=-1)
                else:
                    raise ConfigError(f"{path}: no RGB/RGBA/Y channels (has {names})")
            else:
                a = ch[key].pixels
        a = np.asarray(a, dtype=np.float32)
    else:
        from PIL import Image
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        a = srgb_to_linear(a).astype(np.float32)
    if a.ndim == 2:
        a = a[..., None]
    return torch.from_numpy(np.ascontiguousarray(a))
