"""Triangle meshes for the nvdiffrast renderer: procedural (cube, sphere, plane) or from a file.

Why procedural meshes: tests, examples and benchmarks need scenes without downloaded assets,
and the benchmark needs meshes of a chosen triangle count (a sphere with ``segments`` sets it).
Files go through ``trimesh`` (OBJ, PLY, GLB/GLTF, STL, OFF): it reads UVs and, for GLB/OBJ, the
base-colour texture, which becomes the object's texture unless the scene names another.

All meshes are plain CPU tensors here; the renderer moves them to its device once.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from rendergrad.errors import ConfigError, PluginUnavailableError

PROCEDURAL = ("cube", "sphere", "plane")
FILE_TYPES = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")


@dataclass
class Mesh:
    """Vertices ``[V,3]`` float32, faces ``[F,3]`` int32, UVs ``[V,2]`` (zeros when the file has none)."""

    vertices: torch.Tensor
    faces: torch.Tensor
    uvs: torch.Tensor
    name: str = ""
    texture: torch.Tensor | None = None   # [h, w, 3] linear, from the file's material, if any
    has_uvs: bool = True

    def __post_init__(self) -> None:
        self.vertices = torch.as_tensor(self.vertices, dtype=torch.float32).reshape(-1, 3).contiguous()
        self.faces = torch.as_tensor(self.faces, dtype=torch.int32).reshape(-1, 3).contiguous()
        self.uvs = torch.as_tensor(self.uvs, dtype=torch.float32).reshape(-1, 2).contiguous()
        if self.uvs.shape[0] != self.vertices.shape[0]:
            raise ConfigError(f"mesh {self.name!r}: {self.uvs.shape[0]} UVs for {self.vertices.shape[0]} vertices")
        if self.faces.numel() == 0:
            raise ConfigError(f"mesh {self.name!r} has no triangles")
        if int(self.faces.min()) < 0 or int(self.faces.max()) >= self.vertices.shape[0]:
            raise ConfigError(f"mesh {self.name!r}: a face indexes a vertex that does not exist")
        # centre of the bounding box: transforms rotate and scale about it

        self.center = (self.vertices.min(0).values + self.vertices.max(0).values) / 2


def cube(size: float = 1.0) -> Mesh:
    """An axis-aligned cube of edge ``size`` centred at the origin; 24 vertices (flat faces), UVs per face."""
    h = size / 2
    verts, uvs, faces = [], [], []
    # (normal axis, sign): each face gets its own 4 vertices so normals stay flat.
    for axis in range(3):
        for sign in (1.0, -1.0):
            u_ax, v_ax = [a for a in range(3) if a != axis]
            base = len(verts)
            for (du, dv) in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                p = [0.0, 0.0, 0.0]
                p[axis], p[u_ax], p[v_ax] = sign * h, du * h, dv * h
                verts.append(p)
                uvs.append([(du + 1) / 2, (dv + 1) / 2])
            # counter-clockwise seen from outside
            quad = [(0, 1, 2), (0, 2, 3)]
            flip = (axis == 1) ^ (sign < 0)
            for a, b, c in quad:
                faces.append([base + a, base + c, base + b] if flip else [base + a, base + b, base + c])
    return Mesh(torch.tensor(verts), torch.tensor(faces), torch.tensor(uvs), name="cube")


def sphere(radius: float = 0.5, segments: int = 32, rings: int | None = None) -> Mesh:
    """A UV sphere: ``2·segments·(rings−1)`` triangles (``rings`` defaults to ``segments // 2``)."""
    rings = int(rings or max(2, segments // 2))
    segments = int(segments)
    if segments < 3 or rings < 2:
        raise ConfigError("sphere: segments must be >= 3 and rings >= 2")
    theta = torch.linspace(0, math.pi, rings + 1)            # polar
    phi = torch.linspace(0, 2 * math.pi, segments + 1)       # azimuth (seam duplicated for UVs)
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    verts = torch.stack([radius * torch.sin(t) * torch.cos(p), radius * torch.cos(t),
                         -radius * torch.sin(t) * torch.sin(p)], -1).reshape(-1, 3)
    uvs = torch.stack([p / (2 * math.pi), 1 - t / math.pi], -1).reshape(-1, 2)
    idx = torch.arange((rings + 1) * (segments + 1)).reshape(rings + 1, segments + 1)
    a, b = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1)
    c, d = idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    faces = torch.cat([torch.stack([a, c, b], -1), torch.stack([b, c, d], -1)])
    # drop the degenerate triangles at the poles
    top = torch.arange(segments)
    keep = torch.ones(faces.shape[0], dtype=torch.bool)
    keep[top] = False                                        # ring 0: a, b at the north pole
    keep[faces.shape[0] // 2 + (rings - 1) * segments + top] = False  # last ring: c, d at the south pole
    return Mesh(verts, faces[keep], uvs, name="sphere")


def plane(size: float = 2.0, subdivisions: int = 1) -> Mesh:
    """A square in the xz-plane facing +y, ``2·subdivisions²`` triangles."""
    n = int(subdivisions)
    if n < 1:
        raise ConfigError("plane: subdivisions must be >= 1")
    s = torch.linspace(-size / 2, size / 2, n + 1)
    x, z = torch.meshgrid(s, s, indexing="xy")
    verts = torch.stack([x, torch.zeros_like(x), z], -1).reshape(-1, 3)
    uvs = torch.stack([(x / size) + 0.5, 0.5 - (z / size)], -1).reshape(-1, 2)
    idx = torch.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1)
    c, d = idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    faces = torch.cat([torch.stack([a, c, b], -1), torch.stack([b, c, d], -1)])
    return Mesh(verts, faces, uvs, name="plane")


def _import_trimesh() -> Any:
    try:
        import trimesh
    except ImportError:
        raise PluginUnavailableError("loading mesh files needs trimesh: pip install 'rendergrad[nvdiffrast]' "
                                     "(or pip install trimesh)") from None
    return trimesh


def load_file(path: str | os.PathLike, *, base_dir: str | os.PathLike | None = None) -> Mesh:
    """A mesh file through trimesh; a GLB/GLTF scene with several meshes is merged into one."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_absolute() and base_dir is not None and not p.exists():
        p = Path(base_dir) / p
    if not p.exists():
        raise ConfigError(f"mesh file {str(path)!r} not found (relative paths are relative to the working "
                          f"directory, {os.getcwd()})")
    if p.suffix.lower() not in FILE_TYPES:
        raise ConfigError(f"mesh file {str(path)!r}: unsupported type {p.suffix!r}; use one of {', '.join(FILE_TYPES)}")
    trimesh = _import_trimesh()
    try:
        loaded = trimesh.load(str(p), process=False, maintain_order=True)
    except Exception as e:
        raise ConfigError(f"mesh file {str(path)!r} cannot be read: {type(e).__name__}: {e}") from None
    if isinstance(loaded, trimesh.Scene):
        geoms = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)] if loaded.geometry else []
        if not geoms:
            raise ConfigError(f"mesh file {str(path)!r} holds no triangle mesh")
        tm = geoms[0] if len(geoms) == 1 else trimesh.util.concatenate(geoms)
    else:
        tm = loaded
    if not isinstance(tm, trimesh.Trimesh) or len(tm.faces) == 0:
        raise ConfigError(f"mesh file {str(path)!r} holds no triangles (a point cloud or lines?)")
    verts = torch.tensor(np.asarray(tm.vertices, dtype=np.float32))
    faces = torch.tensor(np.asarray(tm.faces, dtype=np.int64))
    uv = getattr(tm.visual, "uv", None)
    has_uvs = uv is not None and len(uv) == len(verts)
    uvs = torch.tensor(np.asarray(uv, dtype=np.float32)) if has_uvs else torch.zeros(len(verts), 2)
    texture = None
    material = getattr(tm.visual, "material", None)
    image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    if image is not None and has_uvs:
        arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        texture = srgb_to_linear(torch.tensor(arr)).flip(0)  # image rows top-down, v points up
    return Mesh(verts, faces, uvs, name=p.name, texture=texture, has_uvs=has_uvs)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def make_mesh(spec: Any, *, where: str, base_dir: str | os.PathLike | None = None) -> Mesh:
    """``"cube"``, ``"sphere"``, ``"plane"``, a file path, or a table ``{type = "sphere", segments = 64}`` /
    ``{file = "bunny.obj"}``."""
    if isinstance(spec, str):
        if spec in PROCEDURAL:
            return {"cube": cube, "sphere": sphere, "plane": plane}[spec]()
        if Path(spec).suffix.lower() in FILE_TYPES:
            return load_file(spec, base_dir=base_dir)
        raise ConfigError(f"{where}: mesh {spec!r} is neither one of {', '.join(PROCEDURAL)} nor a mesh file "
                          f"({', '.join(FILE_TYPES)})")
    if isinstance(spec, Mapping):
        d = dict(spec)
        if "file" in d:
            extra = sorted(set(d) - {"file"})
            if extra:
                raise ConfigError(f"{where}: a mesh file table takes only `file`, got also {extra}")
            return load_file(d["file"], base_dir=base_dir)
        kind = d.pop("type", None)
        if kind not in PROCEDURAL:
            raise ConfigError(f"{where}: mesh table needs type = one of {', '.join(PROCEDURAL)} (or file = PATH), "
                              f"got {kind!r}")
        fn = {"cube": cube, "sphere": sphere, "plane": plane}[kind]
        try:
            return fn(**d)
        except TypeError as e:
            raise ConfigError(f"{where}: bad option for a {kind}: {e}") from None
    raise ConfigError(f"{where}: mesh must be a name, a file path or a table, got {type(spec).__name__}")
