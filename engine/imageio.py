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
    """Write linear float32 RGB(A) or grey EXR (needs the ``exr`` extra)."""
    a = _np(img)
    return write_exr_layers(path, {"": a[..., None] if a.ndim == 2 else a})


def _openexr(what: str = "reading or writing EXR"):
    try:
        import OpenEXR
    except ImportError:
        raise ConfigError(f"{what} needs OpenEXR: pip install 'rendergrad[exr]'") from None
    return OpenEXR


def read_exr_layers(path: str | Path) -> dict[str, np.ndarray]:
    """Every layer of an EXR as ``{layer: [H,W,C]}`` float32 (RGB, RGBA or Y); the unnamed layer is ``""``.

    The one EXR reader: targets, OLAT bases and Blender's frames all come through here.
    """
    OpenEXR = _openexr()
    try:
        with OpenEXR.File(str(path), separate_channels=True) as f:
            chans = {k: np.asarray(v.pixels) for k, v in f.channels().items()}
    except Exception as e:
        raise ConfigError(f"{path}: not a readable EXR file ({type(e).__name__}: {e})") from None
    layers: dict[str, dict[str, np.ndarray]] = {}
    for full, px in chans.items():
        parts = full.split(".")
        # OpenEXR reports channels of a grouped write as "layer.RGB.R"; plain files as "layer.R".
        if len(parts) >= 2 and parts[-2] in ("RGB", "RGBA"):
            parts = parts[:-2] + parts[-1:]
        layers.setdefault(".".join(parts[:-1]), {})[parts[-1]] = px
    out = {}
    for layer, ch in layers.items():
        if all(c in ch for c in "RGB"):
            out[layer] = np.stack([ch[c] for c in ("RGBA" if "A" in ch else "RGB")], axis=-1)
        elif "Y" in ch:
            out[layer] = ch["Y"][..., None]
        elif len(ch) == 1:
            out[layer] = next(iter(ch.values()))[..., None]
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def write_exr_layers(path: str | Path, layers: dict[str, Any]) -> Path:
    """Write ``{layer: [H,W,3]}`` as one multi-layer EXR (ZIP-compressed float32); the one EXR writer
    for several images (``""`` is the unnamed layer)."""
    OpenEXR = _openexr()
    chans = {}
    for name, img in layers.items():
        a = _np(img)
        key = {1: "Y", 3: "RGB", 4: "RGBA"}.get(a.shape[-1])
        if key is None:
            raise ValueError(f"cannot write a {a.shape[-1]}-channel image as EXR")
        chans[f"{name}.{key}" if name else key] = np.ascontiguousarray(a[..., 0] if key == "Y" else a)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, chans).write(str(path))
    return Path(path)


def load_image(path: str | Path) -> torch.Tensor:
    """Load a target image as linear float32 ``[H,W,C]``: EXR, NPY, or PNG/JPEG (sRGB decoded).

    A file that is not what its name says, a pickled ``.npy`` (never unpickled), or pixels that
    are NaN or infinite are one :class:`ConfigError` naming the file, before anything renders.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"image file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"image path {path} is a folder; name an image file (EXR, PNG, JPEG or NPY)")
    suffix = path.suffix.lower()
    try:
        a = _read(path, suffix)
    except ConfigError:
        raise
    except Exception as e:  # every reader has its own exceptions; the user needs one line
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot read image {path}: {reason}; is it really a {suffix or 'image'} file?") from None
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or not 1 <= a.shape[-1] <= 4 or 0 in a.shape:
        raise ConfigError(f"image {path} has shape {a.shape}; a target is [height, width, channels] with 1-4 channels")
    out = torch.from_numpy(np.ascontiguousarray(a))
    check_target_image(out, f"image {path}")
    return out


def check_target_image(img: torch.Tensor, what: str = "the target image") -> None:
    """A target with NaN or infinite pixels is the target's fault: say so before the loss does."""
    bad = int((~torch.isfinite(img)).sum()) if img.is_floating_point() else 0
    if bad:
        raise ConfigError(f"{what} has {bad} NaN or infinite pixel values; a target must be finite "
                          "(re-export it, or replace them, e.g. numpy.nan_to_num)")


def _read(path: Path, suffix: str) -> np.ndarray:
    if suffix == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except ValueError as e:
            if "allow_pickle" in str(e):
                raise ConfigError(f"{path} holds Python objects (a pickled array), which rendergrad never loads; "
                                  "save a numeric array with numpy.save") from None
            raise
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiub":
            raise ConfigError(f"{path} holds a {getattr(a, 'dtype', type(a))} array; a target needs numbers")
        return a.astype(np.float32)
    if suffix == ".exr":
        layers = read_exr_layers(path)
        if not layers:
            raise ConfigError(f"{path}: no RGB/RGBA/Y channels")
        return np.asarray(layers.get("", next(iter(layers.values()))), dtype=np.float32)
    from PIL import Image
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return srgb_to_linear(a).astype(np.float32)
