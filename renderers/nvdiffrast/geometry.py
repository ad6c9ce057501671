"""Camera and transform maths, batched and differentiable (plain torch).

Conventions are OpenGL's, which nvdiffrast follows: a right-handed world, the camera looks down
its −z axis, clip space has ``x, y, z ∈ [−w, w]`` and the rasterizer's row 0 is the *bottom* of
the image (the renderer flips rows at the end so images come out top-down like every other
renderer here).
"""

from __future__ import annotations

import math

import torch


def _normalize(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """World → camera matrices ``[B,4,4]`` from ``eye``, ``target``, ``up`` ``[B,3]``."""
    f = _normalize(target - eye)
    s = _normalize(torch.cross(f, up.expand_as(f), dim=-1))
    u = torch.cross(s, f, dim=-1)
    b = eye.shape[0]
    m = torch.zeros(b, 4, 4, dtype=eye.dtype, device=eye.device)
    m[:, 0, :3], m[:, 1, :3], m[:, 2, :3] = s, u, -f
    m[:, 0, 3] = -(s * eye).sum(-1)
    m[:, 1, 3] = -(u * eye).sum(-1)
    m[:, 2, 3] = (f * eye).sum(-1)
    m[:, 3, 3] = 1.0
    return m


def perspective(fov_deg: torch.Tensor, aspect: float, near: float, far: float) -> torch.Tensor:
    """Camera → clip matrices ``[B,4,4]``; ``fov_deg`` ``[B]`` is the vertical field of view."""
    f = 1.0 / torch.tan(torch.deg2rad(fov_deg) / 2)
    b = fov_deg.shape[0]
    m = torch.zeros(b, 4, 4, dtype=fov_deg.dtype, device=fov_deg.device)
    m[:, 0, 0] = f / aspect
    m[:, 1, 1] = f
    m[:, 2, 2] = -(far + near) / (far - near)
    m[:, 2, 3] = -2.0 * far * near / (far - near)
    m[:, 3, 2] = -1.0
    return m


def axis_angle(axis: torch.Tensor, angle_deg: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[B,3,3]`` about unit ``axis`` ``[3]`` or ``[B,3]`` by ``angle_deg`` ``[B]`` (Rodrigues)."""
    a = _normalize(axis.to(angle_deg.dtype)).expand(angle_deg.shape[0], 3)
    t = torch.deg2rad(angle_deg)
    c, s = torch.cos(t)[:, None, None], torch.sin(t)[:, None, None]
    x, y, z = a.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1),
                     torch.stack([-y, x, zero], -1)], -2)
    eye = torch.eye(3, dtype=a.dtype, device=a.device).expand_as(k)
    return eye + s * k + (1 - c) * (k @ k)


def euler_xyz(angles_deg: torch.Tensor) -> torch.Tensor:
    """``[B,3]`` degrees about x, then y, then z (extrinsic) → ``[B,3,3]`` = Rz·Ry·Rx."""
    b = angles_deg.shape[0]
    dev, dt = angles_deg.device, angles_deg.dtype
    ex, ey, ez = (torch.eye(3, dtype=dt, device=dev)[i] for i in range(3))
    return (axis_angle(ez, angles_deg[:, 2]) @ axis_angle(ey, angles_deg[:, 1])
            @ axis_angle(ex, angles_deg[:, 0])).reshape(b, 3, 3)


def model_matrix(translate: torch.Tensor, rotation: torch.Tensor, scale: torch.Tensor,
                 center: torch.Tensor) -> torch.Tensor:
    """``T(translate + center) · R · S · T(−center)`` as ``[B,4,4]``: rotate and scale about the object's centre."""
    b = translate.shape[0]
    m = torch.zeros(b, 4, 4, dtype=translate.dtype, device=translate.device)
    rs = rotation * scale[:, None, :]
    m[:, :3, :3] = rs
    m[:, :3, 3] = translate + center - (rs @ center.reshape(3, 1)).squeeze(-1)
    m[:, 3, 3] = 1.0
    return m


def transform_points(m: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``[B,4,4]`` × points ``[V,3]`` or ``[B,V,3]`` → homogeneous ``[B,V,4]``."""
    if p.dim() == 2:
        p = p.unsqueeze(0).expand(m.shape[0], -1, -1)
    ph = torch.cat([p, torch.ones_like(p[..., :1])], -1)
    return ph @ m.transpose(1, 2)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals ``[B,V,3]`` from positions ``[B,V,3]`` (recomputed per render so
    per-vertex offsets and non-uniform scales shade correctly)."""
    f = faces.long()
    v0, v1, v2 = verts[:, f[:, 0]], verts[:, f[:, 1]], verts[:, f[:, 2]]
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)
    n = torch.zeros_like(verts)
    for k in range(3):
        n = n.index_add(1, f[:, k], fn)
    return _normalize(n)


def fov_to_focal(fov_deg: float, height: int) -> float:
    """Focal length in pixels for a vertical field of view (for docs and tests)."""
    return height / 2 / math.tan(math.radians(fov_deg) / 2)
