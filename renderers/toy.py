"""``toy``: a pure-torch 2-D renderer of coloured discs, boxes and textures.

It needs nothing installed and renders a batch in one vectorised pass, which makes it the
default for demos, tests and benchmarks. Two modes show the problem this project exists for:

* ``mode="hard"``: binary coverage, forward-only. An object that does not overlap its target
  leaves the loss flat: a plateau with zero gradient everywhere.
* ``mode="soft"``: every edge is blurred by a Gaussian of standard deviation ``softness``
  pixels (an erf profile). Differentiable, and band-limited: moving a shape by a fraction of a
  pixel leaves its image energy unchanged (to ~1e-17 for the default 2 px), so where shapes
  do not overlap their targets the loss is flat and the analytic gradient is numerically zero.
  A hard-stepped or linearly ramped edge would instead leave pixel-grid ripples that an
  optimizer such as Adam, which normalises gradient magnitudes, turns into a random walk.

Images are float64 so that flatness survives the loss computation; the evaluation path
accepts any floating dtype.

A scene is a list of shapes painted in order over a background. Any numeric field of a shape
can be bound to a parameter by giving its name as a string (``"x"`` or ``"$x"``); the
parameters themselves are declared with ``params``::

    ToyRenderer(
        shapes=[{"type": "disc", "x": "x", "y": "y", "radius": 0.12, "color": [1, .3, .2]}],
        params=[{"name": "x", "init": 0.25}, {"name": "y", "init": 0.75}])

Shape types: ``disc`` (x, y, radius), ``box`` (x, y, width, height: centre and full size),
``texture`` (an image parameter of shape ``[h, w, 3]`` stretched over the frame). Coordinates
are in [0, 1] with y pointing down the image.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from rendergrad import Param, ParamSpace, Renderer, hookimpl
from rendergrad.errors import ConfigError, ParameterError
from rendergrad.resolution import parse_resolution

SHAPE_FIELDS: dict[str, dict[str, Any]] = {
    "disc": {"x": 0.5, "y": 0.5, "radius": 0.15, "color": [1.0, 1.0, 1.0], "opacity": 1.0},
    "box": {"x": 0.5, "y": 0.5, "width": 0.3, "height": 0.3, "color": [1.0, 1.0, 1.0], "opacity": 1.0},
    "texture": {"image": None, "opacity": 1.0},
}

DEFAULT_SHAPES = [{"type": "disc", "x": "x", "y": "y", "radius": 0.12, "color": [1.0, 0.45, 0.2]}]
# Bounds keep the default disc (radius 0.12) inside the frame: a disc pushed out of view also
# lowers an image loss, so unbounded [0, 1] positions make the frame corners false minima.
DEFAULT_PARAMS = [{"name": "x", "init": 0.25, "low": 0.12, "high": 0.88},
                  {"name": "y", "init": 0.75, "low": 0.12, "high": 0.88}]


def _ref(value: Any) -> str | None:
    return value.lstrip("$") if isinstance(value, str) else None


class ToyRenderer(Renderer):
    """Pure-torch 2-D discs, boxes and textures; hard (forward-only) or soft (differentiable)."""

    name = "toy"
    differentiable = False               # mode = "hard", the default
    differentiable_when = {"mode": "soft"}

    def __init__(self, resolution: int | Sequence[int] | Mapping[str, int] = 64, mode: str = "hard", softness: float = 2.0,
                 background: Sequence[float] = (0.05, 0.05, 0.08),
                 shapes: Sequence[Mapping[str, Any]] | None = None,
                 params: Sequence[Mapping[str, Any]] | None = None, device: str = "cpu"):
        if mode not in ("hard", "soft"):
            raise ConfigError(f"toy renderer: mode must be 'hard' or 'soft', got {mode!r}")
        if not softness > 0:
            raise ConfigError("toy renderer: softness (edge blur in pixels) must be > 0")
        self.mode = mode
        self.differentiable = mode == "soft"
        self.softness = float(softness)
        h, w = parse_resolution(resolution, "toy renderer")
        self.height, self.width = int(h), int(w)
        self.device = torch.device(device)
        self.dtype = torch.float64
        self.background = torch.tensor(list(background), dtype=self.dtype, device=self.device)
        if self.background.shape != (3,):
            raise ConfigError("toy renderer: background must be 3 numbers (linear RGB)")
        self.shapes = [dict(s) for s in (DEFAULT_SHAPES if shapes is None else shapes)]
        self.space = ParamSpace.from_config(DEFAULT_PARAMS if params is None and shapes is None else (params or []))
        self._validate_shapes()
        ys = (torch.arange(self.height, dtype=self.dtype, device=self.device) + 0.5) / self.height
        xs = (torch.arange(self.width, dtype=self.dtype, device=self.device) + 0.5) / self.width
        self._gy, self._gx = torch.meshgrid(ys, xs, indexing="ij")  # [H, W]

    def _validate_shapes(self) -> None:
        used: set[str] = set()
        for i, s in enumerate(self.shapes):
            kind = s.get("type")
            if kind not in SHAPE_FIELDS:
                raise ConfigError(f"toy renderer: shape {i} has type {kind!r}; use one of {list(SHAPE_FIELDS)}")
            for key, value in s.items():
                if key == "type":
                    continue
                if key not in SHAPE_FIELDS[kind]:
                    raise ConfigError(f"toy renderer: shape {i} ({kind}) has no field {key!r}; "
                                      f"fields: {', '.join(SHAPE_FIELDS[kind])}")
                ref = _ref(value)
                if ref is not None:
                    if ref not in self.space:
                        raise ParameterError(
                            f"toy renderer: shape {i} field {key!r} refers to parameter {ref!r}, which is not "
                            f"declared; declared: {', '.join(self.space.names) or '(none)'}")
                    used.add(ref)
            if kind == "texture" and _ref(s.get("image")) is None:
                raise ConfigError(f"toy renderer: texture shape {i} needs image = \"<param name>\" "
                                  "naming a parameter of shape [h, w, 3]")
        unused = [n for n in self.space.names if n not in used]
        if unused:
            raise ParameterError(f"toy renderer: parameters {unused} are declared but no shape uses them")

    def parameter_space(self) -> ParamSpace:
        return self.space

    # -- rendering -------------------------------------------------------------------------
    def _field(self, shape: Mapping[str, Any], key: str, values: dict[str, torch.Tensor], b: int) -> torch.Tensor:
        v = shape.get(key, SHAPE_FIELDS[shape["type"]][key])
        ref = _ref(v)
        if ref is not None:
            return values[ref].to(self.device, self.dtype)
        return torch.as_tensor(v, dtype=self.dtype, device=self.device).expand(b, *torch.as_tensor(v).shape)

    def _coverage(self, sdf: torch.Tensor) -> torch.Tensor:
        """Signed distance (negative inside, image heights) → coverage in [0, 1]."""
        if self.mode == "hard":
            return (sdf <= 0).to(self.dtype)
        sigma = self.softness / self.height
        return 0.5 * torch.erfc(sdf / (sigma * 2 ** 0.5))

    def render(self, theta: torch.Tensor) -> torch.Tensor:
        theta = torch.as_tensor(theta, device=self.device).to(self.dtype)
        if theta.ndim == 1:
            theta = theta.unsqueeze(0)
        b = theta.shape[0]
        values = self.space.unflatten(theta)
        img = self.background.expand(b, self.height, self.width, 3).clone()
        gx, gy = self._gx.expand(b, -1, -1), self._gy.expand(b, -1, -1)
        aspect = self.width / self.height
        for s in self.shapes:
            col = (lambda k: self._field(s, k, values, b))
            opacity = col("opacity").reshape(b, 1, 1)
            if s["type"] == "texture":
                tex = values[_ref(s["image"])].to(self.device, self.dtype)  # [B, h, w, 3]
                tex = torch.nn.functional.interpolate(tex.permute(0, 3, 1, 2), size=(self.height, self.width),
                                                      mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
                a = opacity.unsqueeze(-1)
                img = img * (1 - a) + tex * a
                continue
            x, y = col("x").reshape(b, 1, 1), col("y").reshape(b, 1, 1)
            if s["type"] == "disc":
                r = col("radius").reshape(b, 1, 1)
                dx, dy = (gx - x) * aspect, gy - y
                sdf = torch.sqrt(dx * dx + dy * dy + 1e-12) - r
            else:
                hw, hh = col("width").reshape(b, 1, 1) / 2, col("height").reshape(b, 1, 1) / 2
                qx, qy = ((gx - x).abs() - hw) * aspect, (gy - y).abs() - hh
                outside = torch.sqrt(qx.clamp_min(0) ** 2 + qy.clamp_min(0) ** 2 + 1e-12)
                sdf = outside + torch.minimum(torch.maximum(qx, qy), torch.zeros_like(qx))
            a = (self._coverage(sdf) * opacity).unsqueeze(-1)  # [B, H, W, 1]
            color = col("color").reshape(b, 1, 1, 3)
            img = img * (1 - a) + color * a
        return img


@hookimpl
def rendergrad_renderers():
    return [ToyRenderer]
