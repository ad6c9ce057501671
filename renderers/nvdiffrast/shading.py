"""Shading and compositing after rasterization: plain torch on interpolated attributes.

Lambert diffuse + Blinn-Phong specular for directional and point lights, plus an ambient term,
evaluated per pixel. No shadows and no indirect light: a rasterizer sees only what the camera
sees (use the Mitsuba renderer for those).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .bindings import LightState


def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def shade(pos: torch.Tensor, normal: torch.Tensor, albedo: torch.Tensor, specular: torch.Tensor,
          shininess: torch.Tensor, eye: torch.Tensor, lights: list[LightState], ambient: torch.Tensor
          ) -> torch.Tensor:
    """Radiance ``[B,H,W,3]`` from world positions, normals, albedo, specular colour ``[B,H,W,3]``,
    shininess ``[B,H,W,1]``, the camera position ``[B,3]`` and the lights.

    Normals face the viewer (two-sided shading), so the triangle winding of a file does not matter.
    """
    v = _normalize(eye[:, None, None, :] - pos)
    n = _normalize(normal)
    n = torch.where((n * v).sum(-1, keepdim=True) < 0, -n, n)
    out = ambient[:, None, None, :] * albedo
    for light in lights:
        radiance = (light.color * light.intensity[:, None])[:, None, None, :]
        if light.type == "directional":
            ldir = _normalize(-light.vector)[:, None, None, :].expand_as(pos)
        else:
            d = light.vector[:, None, None, :] - pos
            dist2 = (d * d).sum(-1, keepdim=True).clamp_min(1e-8)
            ldir = d / dist2.sqrt()
            radiance = radiance / dist2
        ndotl = (n * ldir).sum(-1, keepdim=True)
        lit = ndotl.clamp_min(0.0)
        out = out + albedo * radiance * lit
        h = _normalize(ldir + v)
        ndoth = (n * h).sum(-1, keepdim=True).clamp(1e-6, 1.0)  # clamp: pow's gradient at 0 is nan
        spec = torch.where(ndotl > 0, ndoth ** shininess, torch.zeros_like(ndoth))
        out = out + specular * radiance * spec
    return out


def background_image(background: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """The background as ``[B,H,W,3]`` in the rasterizer's row order (bottom row first).

    A colour ``[B,3]`` fills the frame; an image ``[h,w,3]`` (top row first) is resized to the frame.
    """
    if background.dim() == 2:
        return background[:, None, None, :].expand(batch, height, width, 3)
    img = background
    if img.shape[0] != height or img.shape[1] != width:
        img = F.interpolate(img.permute(2, 0, 1)[None], size=(height, width), mode="bilinear",
                            align_corners=False)[0].permute(1, 2, 0)
    return img.flip(0)[None].expand(batch, height, width, 3)


def gather_per_pixel(values: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
    """Per-object values ``[B,K,C]`` → per-pixel ``[B,H,W,C]`` by the object index map ``obj`` ``[B,H,W]``."""
    b, h, w = obj.shape
    idx = obj.reshape(b, h * w, 1).expand(-1, -1, values.shape[-1])
    return torch.gather(values, 1, idx).reshape(b, h, w, values.shape[-1])
