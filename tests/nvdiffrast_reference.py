"""A test double for nvdiffrast's four ops, in pure torch, for a few triangles on the CPU.

It exists only because nvdiffrast needs CUDA and CI has none: with it the renderer's whole
pipeline (binding → clip space → rasterize → interpolate → texture → shading → compositing) runs
in CPU tests. It follows nvdiffrast's conventions (``rast = (u, v, z/w, triangle id + 1)``,
attributes ``u·a0 + v·a1 + (1−u−v)·a2``, perspective-correct barycentrics, row 0 at the bottom,
pixel centres at half-integers, derivatives per pixel) and is checked against the real library
by the ``gpu`` tests. Brute force: every triangle against every pixel. ``antialias`` is the
identity, so silhouette gradients exist only with the real library.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _cross2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


class ReferenceOps:
    """Brute-force rasterizer with nvdiffrast's signatures (see module docstring)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {"rasterize": 0, "interpolate": 0, "texture": 0, "antialias": 0}

    def rasterize(self, pos, tri, resolution, grad_db):
        self.calls["rasterize"] += 1
        h, w = resolution
        b = pos.shape[0]
        t = tri.long()
        v = pos[:, t]                                        # [B,F,3,4]
        wv = v[..., 3]
        ndc = v[..., :2] / wv.unsqueeze(-1)                  # [B,F,3,2]
        zw = v[..., 2] / wv
        ys = (torch.arange(h, dtype=pos.dtype) + 0.5) / h * 2 - 1
        xs = (torch.arange(w, dtype=pos.dtype) + 0.5) / w * 2 - 1
        py, px = torch.meshgrid(ys, xs, indexing="ij")
        p = torch.stack([px, py], -1).reshape(1, 1, h * w, 2)  # [1,1,P,2]
        p0, p1, p2 = (ndc[:, :, i].unsqueeze(2) for i in range(3))  # [B,F,1,2]
        area = _cross2(p1 - p0, p2 - p0)                     # [B,F,1]
        e0 = _cross2(p1 - p, p2 - p) / area                  # weight of vertex 0 (screen space)
        e1 = _cross2(p2 - p, p0 - p) / area
        e2 = 1 - e0 - e1
        inside = (e0 >= 0) & (e1 >= 0) & (e2 >= 0) & (area.abs() > 1e-12) & (wv > 0).all(-1, keepdim=True)
        depth = e0 * zw[..., 0:1] + e1 * zw[..., 1:2] + e2 * zw[..., 2:3]
        inside = inside & (depth >= -1) & (depth <= 1)
        depth_m = torch.where(inside, depth, torch.full_like(depth, math.inf))
        best = depth_m.argmin(1)                             # [B,P]
        hit = torch.isfinite(depth_m.gather(1, best.unsqueeze(1)).squeeze(1))

        def pick(x):  # [B,F,P] -> [B,P]
            return x.gather(1, best.unsqueeze(1)).squeeze(1)
        inv_w = 1 / wv                                       # [B,F,3]
        c0, c1, c2 = (pick(e * inv_w[..., i:i + 1]) for i, e in enumerate((e0, e1, e2)))
        s = c0 + c1 + c2
        u, vv = c0 / s, c1 / s
        z = pick(depth)
        tid = (best + 1).to(pos.dtype)
        zero = torch.zeros_like(u)
        rast = torch.stack([torch.where(hit, u, zero), torch.where(hit, vv, zero), torch.where(hit, z, zero),
                            torch.where(hit, tid, zero)], -1).reshape(b, h, w, 4)
        return rast, torch.zeros_like(rast)

    def interpolate(self, attr, rast, tri, rast_db=None, diff_attrs=None):
        self.calls["interpolate"] += 1
        b, h, w, _ = rast.shape
        if attr.dim() == 2:
            attr = attr.unsqueeze(0)
        attr = attr.expand(b, -1, -1)  # broadcasting along the minibatch, as nvdiffrast does
        t = tri.long()
        tid = rast[..., 3].long() - 1
        hit = (tid >= 0).unsqueeze(-1)
        idx = t[tid.clamp_min(0)]                            # [B,H,W,3]
        gathered = [torch.gather(attr, 1, idx[..., i].reshape(b, -1, 1).expand(-1, -1, attr.shape[-1]))
                    .reshape(b, h, w, -1) for i in range(3)]
        u, v = rast[..., 0:1], rast[..., 1:2]
        out = u * gathered[0] + v * gathered[1] + (1 - u - v) * gathered[2]
        out = torch.where(hit, out, torch.zeros_like(out))
        if diff_attrs is None:
            return out, torch.zeros(b, h, w, 0, dtype=out.dtype)
        # Per-pixel derivatives by central differences of the interpolated values (x right, y up).
        dx = torch.zeros_like(out)
        dy = torch.zeros_like(out)
        dx[:, :, 1:-1] = (out[:, :, 2:] - out[:, :, :-2]) / 2
        dy[:, 1:-1] = (out[:, 2:] - out[:, :-2]) / 2
        da = torch.stack([dx, dy], -1).reshape(b, h, w, -1)
        return out, da

    def texture(self, tex, uv, uv_da, max_mip_level):
        self.calls["texture"] += 1
        b = uv.shape[0]
        levels = [tex.permute(0, 3, 1, 2)]                   # [1|B, C, h, w]
        limit = max_mip_level if max_mip_level is not None else 99
        while len(levels) <= limit and min(levels[-1].shape[-2:]) > 1:
            levels.append(F.avg_pool2d(levels[-1], 2))
        grid = (uv - torch.floor(uv)) * 2 - 1                # wrap, then [-1, 1]

        def sample(level):
            lv = level.expand(b, -1, -1, -1) if level.shape[0] == 1 else level
            return F.grid_sample(lv, grid, mode="bilinear", padding_mode="border",
                                 align_corners=False).permute(0, 2, 3, 1)
        if uv_da is None or len(levels) == 1:
            return sample(levels[0])
        th, tw = tex.shape[1:3]
        d = uv_da.abs()
        footprint = torch.maximum(torch.maximum(d[..., 0] * tw, d[..., 2] * th),
                                  torch.maximum(d[..., 1] * tw, d[..., 3] * th))
        lod = torch.log2(footprint.clamp_min(1e-8)).clamp(0, len(levels) - 1).unsqueeze(-1)
        out = torch.zeros(*uv.shape[:3], tex.shape[-1], dtype=tex.dtype)
        for i, level in enumerate(levels):
            weight = (1 - (lod - i).abs()).clamp_min(0)
            out = out + weight * sample(level)
        return out

    def antialias(self, color, rast, pos, tri):
        self.calls["antialias"] += 1
        return color
