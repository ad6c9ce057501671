"""``olat``: relight a scene as a linear combination of one-light-at-a-time renders.

Light transport is linear in emission, so with one linear render ``I_i`` per light (and an
optional ``base`` image holding everything no light controls: emission, ambient) every
lighting of the scene is ``X = base + Σ_i θ_i ⊙ I_i`` with an RGB multiplier ``θ_i`` per light.
That costs a weighted sum instead of a path-traced frame, is exactly differentiable, and the
answer is a set of light intensities an artist can keep editing in the source scene.

A basis is a folder with ``olat.json``::

    {"format": "rendergrad-olat", "version": 1,
     "lights": [{"name": "key", "file": "key.exr"}, {"name": "rim", "file": "rim.exr"}],
     "base": "base.exr"}

or a multi-layer EXR: ``{"file": "basis.exr", "lights": [{"name": "key", "layer": "key"}],
"base": {"layer": "base"}}`` (channels ``key.R/G/B``). Optional per-light keys written by
``rendergrad olat capture`` (``parameter``, ``unit``, ``kind``) record how a multiplier maps
back onto the source renderer's light parameters.

Parameters: one ``(3,)`` parameter per light, named after it: an RGB multiplier in
``[theta_min, theta_max]`` (``color_model="rgb"``), or hue, saturation and value
(``color_model="hsv"``: hue and saturation in [0, 1], value in the multiplier bounds).
A batch renders as one contraction ``[3, B, L] × [3, L, H·W]``; ``dtype="float16"`` stores
the basis in half precision (half the memory; the sum is still accumulated in float32).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from rendergrad import Param, ParamSpace, Renderer, hookimpl
from rendergrad.errors import ConfigError
from rendergrad.imageio import read_exr_layers, write_exr_layers

FORMAT = "rendergrad-olat"
META_NAME = "olat.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


# -- EXR (one reader and writer, in rendergrad.imageio) ------------------------------------


def _as_rgb(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise ConfigError(f"{what}: expected an image [H, W, C], got shape {a.shape}")
    c = a.shape[-1]
    if c == 1:
        return np.repeat(a, 3, axis=-1)
    if c in (3, 4):
        return a[..., :3]
    raise ConfigError(f"{what}: has {c} channels; an OLAT image needs 1 (grey), 3 (RGB) or 4 (RGBA)")


def read_image(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise ConfigError(f"{what}: file not found: {path}")
    if path.suffix.lower() == ".npy":
        return _as_rgb(np.load(path, allow_pickle=False), what)
    if path.suffix.lower() != ".exr":
        raise ConfigError(f"{what}: {path.name} is not linear data; OLAT images must be EXR (or .npy) files")
    layers = read_exr_layers(path)
    if "" not in layers:
        raise ConfigError(f"{what}: {path} has no plain R,G,B (or Y) channels; layers found: "
                          f"{sorted(layers)}. For a multi-layer file name the layer in olat.json")
    return _as_rgb(layers[""], what)


def write_exr(path: Path, img: Any) -> Path:
    from rendergrad.imageio import save_exr
    a = img.detach().cpu().float().numpy() if isinstance(img, torch.Tensor) else np.asarray(img, np.float32)
    return save_exr(path, np.ascontiguousarray(a))


# -- the basis ----------------------------------------------------------------------------------
@dataclass
class OlatBasis:
    """Light names, their linear images ``[L, H, W, 3]``, an optional base ``[H, W, 3]``, metadata."""

    names: list[str]
    images: torch.Tensor
    base: torch.Tensor | None = None
    lights: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.names:
            raise ConfigError("an OLAT basis needs at least one light")
        dupes = sorted({n for n in self.names if self.names.count(n) > 1})
        if dupes:
            raise ConfigError(f"OLAT basis: duplicate light names {dupes}; each light needs a unique name")
        for n in self.names:
            if not isinstance(n, str) or not _NAME_RE.match(n):
                raise ConfigError(f"OLAT basis: light name {n!r} must be letters, digits, '_', '-' or '.'")
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.shape[0] != len(self.names):
            raise ConfigError(f"OLAT basis: images must be [{len(self.names)}, H, W, 3], got {tuple(self.images.shape)}")
        if self.base is not None and tuple(self.base.shape) != tuple(self.images.shape[1:]):
            raise ConfigError(f"OLAT basis: base image is {tuple(self.base.shape)} but the lights are "
                              f"{tuple(self.images.shape[1:])}; render them at the same resolution")
        if not self.lights:
            self.lights = [{"name": n} for n in self.names]

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    @classmethod
    def load(cls, path: str | Path) -> "OlatBasis":
        """Load from ``olat.json`` (or the folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / META_NAME
        if not path.is_file():
            raise ConfigError(f"OLAT basis metadata not found: {path} (expected an {META_NAME} written by "
                              "`rendergrad olat capture`, or one you wrote by hand; see docs/olat.md)")
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON: {e}") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("lights"), list) or not meta["lights"]:
            raise ConfigError(f"{path}: needs a non-empty \"lights\" list of {{\"name\", \"file\" or \"layer\"}}")
        root = path.parent
        layers: dict[str, np.ndarray] | None = None
        if meta.get("file"):
            mpath = root / meta["file"]
            if not mpath.is_file():
                raise ConfigError(f"{path}: multi-layer file not found: {mpath}")
            layers = read_exr_layers(mpath) if mpath.suffix.lower() == ".exr" else None
            if layers is None:
                raise ConfigError(f"{path}: \"file\" must be a multi-layer EXR, got {mpath.name}")

        def fetch(entry: Any, what: str) -> np.ndarray:
            if isinstance(entry, str):
                entry = {"file": entry}
            if not isinstance(entry, dict):
                raise ConfigError(f"{path}: {what} must be a file name or an object with \"file\" or \"layer\"")
            if entry.get("file"):
                return read_image(root / entry["file"], f"{path.name}: {what}")
            if "layer" in entry:
                if layers is None:
                    raise ConfigError(f"{path}: {what} names layer {entry['layer']!r} but there is no top-level "
                                      "\"file\" (the multi-layer EXR)")
                if entry["layer"] not in layers:
                    raise ConfigError(f"{path}: {what}: layer {entry['layer']!r} not in {meta['file']}; "
                                      f"layers: {sorted(layers)}")
                return _as_rgb(layers[entry["layer"]], f"{what} (layer {entry['layer']!r})")
            raise ConfigError(f"{path}: {what} needs \"file\" or \"layer\"")

        names, imgs = [], []
        for i, light in enumerate(meta["lights"]):
            if not isinstance(light, dict) or not light.get("name"):
                raise ConfigError(f"{path}: lights[{i}] needs a \"name\"")
            names.append(str(light["name"]))
            a = fetch(light, f"light {light['name']!r}")
            if imgs and a.shape != imgs[0].shape:
                raise ConfigError(f"{path}: light {light['name']!r} is {a.shape[1]}x{a.shape[0]} but "
                                  f"{names[0]!r} is {imgs[0].shape[1]}x{imgs[0].shape[0]}; every basis image "
                                  "must have the same size")
            imgs.append(a)
        base = None
        if meta.get("base"):
            b = fetch(meta["base"], "base")
            if b.shape != imgs[0].shape:
                raise ConfigError(f"{path}: base image is {b.shape[1]}x{b.shape[0]} but the lights are "
                                  f"{imgs[0].shape[1]}x{imgs[0].shape[0]}")
            base = torch.from_numpy(np.ascontiguousarray(b))
        for a, n in zip(imgs, names):
            if not np.isfinite(a).all():
                raise ConfigError(f"{path}: light {n!r} contains NaN/inf pixels; re-render it")
        return cls(names, torch.from_numpy(np.ascontiguousarray(np.stack(imgs))), base,
                   [dict(l) for l in meta["lights"]], meta)

    def save(self, folder: str | Path, *, multilayer: bool = False, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the EXRs and ``olat.json`` into ``folder``; returns the metadata path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        lights = [dict(l) for l in self.lights]
        meta: dict[str, Any] = {"format": FORMAT, "version": 1, "width": self.width, "height": self.height}
        meta.update({k: v for k, v in self.meta.items() if k not in ("lights", "base", "file", "format", "version")})
        meta.update(extra or {})
        if multilayer:
            layers = {n: self.images[i].float().numpy() for i, n in enumerate(self.names)}
            if self.base is not None:
                layers["base"] = self.base.float().numpy()
                meta["base"] = {"layer": "base"}
            write_exr_layers(folder / "basis.exr", layers)
            meta["file"] = "basis.exr"
            for l in lights:
                l.pop("file", None)
                l["layer"] = l["name"]
        else:
            for i, l in enumerate(lights):
                l.pop("layer", None)
                l["file"] = f"light_{i:03d}_{l['name']}.exr"
                write_exr(folder / l["file"], self.images[i])
            if self.base is not None:
                write_exr(folder / "base.exr", self.base)
                meta["base"] = "base.exr"
        meta["lights"] = lights
        (folder / META_NAME).write_text(json.dumps(meta, indent=2))
        return folder / META_NAME


# -- the contraction ----------------------------------------------------------------------------
class _Relight(torch.autograd.Function):
    """``out[c] = M[c] @ basis[c]`` for a basis that may be stored in half precision.

    A custom backward (``grad_M = grad_out @ basisᵀ``) so autograd never keeps a float32 copy of
    a half-precision basis; both passes convert the basis in pixel chunks.
    """

    @staticmethod
    def forward(ctx, m: torch.Tensor, basis: torch.Tensor, chunk: int) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(basis)
        ctx.chunk = chunk
        if basis.dtype == m.dtype:
            return torch.bmm(m, basis)
        n = basis.shape[-1]
        out = m.new_empty(m.shape[0], m.shape[1], n)
        for s in range(0, n, chunk):
            out[..., s:s + chunk] = torch.bmm(m, basis[..., s:s + chunk].to(m.dtype))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (basis,) = ctx.saved_tensors
        if basis.dtype == grad.dtype:
            return torch.bmm(grad, basis.transpose(1, 2)), None, None
        n = basis.shape[-1]
        g = None
        for s in range(0, n, ctx.chunk):
            part = torch.bmm(grad[..., s:s + ctx.chunk], basis[..., s:s + ctx.chunk].to(grad.dtype).transpose(1, 2))
            g = part if g is None else g + part
        return g, None, None


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """``[..., 3]`` hue, saturation, value → RGB; differentiable (piecewise linear in hue)."""
    h, s, v = hsv.unbind(-1)
    k = torch.tensor([0.0, 2.0 / 3.0, 1.0 / 3.0], device=hsv.device, dtype=hsv.dtype)
    p = (torch.remainder(h.unsqueeze(-1) + k, 1.0) * 6.0 - 3.0).abs()
    return v.unsqueeze(-1) * (1.0 - s.unsqueeze(-1) + s.unsqueeze(-1) * (p - 1.0).clamp(0.0, 1.0))


class OlatRenderer(Renderer):
    """Relights a captured OLAT basis: X = base + Σ θ_i ⊙ I_i; exact gradients, milliseconds a frame."""

    name = "olat"
    differentiable = True

    def __init__(self, basis: str | OlatBasis = "olat.json", theta_min: float = 0.0, theta_max: float = 8.0,
                 init: float | Mapping[str, Any] = 1.0, color_model: str = "rgb", dtype: str = "float32",
                 device: str = "cpu", chunk_pixels: int = 1 << 16):
        if not math.isfinite(theta_min) or not math.isfinite(theta_max) or theta_max <= theta_min:
            raise ConfigError(f"olat: need theta_min < theta_max (got {theta_min}, {theta_max})")
        if color_model not in ("rgb", "hsv"):
            raise ConfigError(f"olat: color_model must be 'rgb' or 'hsv', got {color_model!r}")
        if dtype not in ("float32", "float16", "bfloat16"):
            raise ConfigError(f"olat: dtype must be float32, float16 or bfloat16, got {dtype!r}")
        self.basis = basis if isinstance(basis, OlatBasis) else OlatBasis.load(basis)
        self.names = list(self.basis.names)
        self.theta_min, self.theta_max = float(theta_min), float(theta_max)
        self.color_model = color_model
        self.device = torch.device(device)
        self.chunk = int(chunk_pixels)
        L, H, W, _ = self.basis.images.shape
        self.shape = (H, W)
        store = getattr(torch, dtype)
        # [3, L, H·W]: one matrix per colour channel, so a batch is three matmuls.
        self._basis = self.basis.images.to(self.device).permute(3, 0, 1, 2).reshape(3, L, H * W) \
            .to(store).contiguous()
        self._base = self.basis.base.to(self.device, torch.float32) if self.basis.base is not None else None
        self.space = self._make_space(init)

    def _make_space(self, init: float | Mapping[str, Any]) -> ParamSpace:
        per = dict(init) if isinstance(init, Mapping) else {}
        unknown = sorted(set(per) - set(self.names))
        if unknown:
            raise ConfigError(f"olat: init names unknown lights {unknown}; lights: {', '.join(self.names)}")
        params = []
        for n in self.names:
            v = per.get(n, 1.0 if isinstance(init, Mapping) else init)
            if self.color_model == "rgb":
                params.append(Param(n, low=self.theta_min, high=self.theta_max, init=v, shape=(3,),
                                    description=f"RGB multiplier of light {n}"))
            else:
                val = v if isinstance(v, (list, tuple)) else [0.0, 0.0, float(v)]
                params.append(Param(n, low=[0.0, 0.0, self.theta_min], high=[1.0, 1.0, self.theta_max],
                                    init=val, shape=(3,), description=f"hue, saturation, value of light {n}"))
        return ParamSpace(params)

    def parameter_space(self) -> ParamSpace:
        return self.space

    def light_parameters(self) -> list[str]:
        return list(self.names) if self.color_model == "rgb" else []

    def multipliers(self, theta: torch.Tensor) -> torch.Tensor:
        """``theta`` ``[B, n]`` → RGB multipliers ``[B, L, 3]``."""
        m = theta.reshape(theta.shape[0], len(self.names), 3)
        return hsv_to_rgb(m) if self.color_model == "hsv" else m

    def relight(self, m: torch.Tensor) -> torch.Tensor:
        """RGB multipliers ``[B, L, 3]`` → images ``[B, H, W, 3]`` (float32, linear)."""
        b = m.shape[0]
        mm = m.to(self.device, torch.float32).permute(2, 0, 1)  # [3, B, L]
        out = _Relight.apply(mm, self._basis, self.chunk)        # [3, B, H·W]
        img = out.permute(1, 2, 0).reshape(b, *self.shape, 3)
        return img + self._base if self._base is not None else img

    def render(self, theta: torch.Tensor) -> torch.Tensor:
        theta = torch.as_tensor(theta, dtype=torch.float32)
        if theta.ndim == 1:
            theta = theta.unsqueeze(0)
        if theta.shape[-1] != self.space.size:
            raise ConfigError(f"olat: theta has {theta.shape[-1]} columns, the basis needs {self.space.size} "
                              f"(3 per light × {len(self.names)} lights)")
        return self.relight(self.multipliers(theta))

    def basis_bytes(self) -> int:
        return self._basis.numel() * self._basis.element_size()


@hookimpl
def rendergrad_renderers():
    return [OlatRenderer]
