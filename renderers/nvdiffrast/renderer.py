"""The ``nvdiffrast`` renderer: triangle meshes, textures and poses rasterized on the GPU.

The pipeline for a batch θ ``[B, n]`` — one call of each nvdiffrast op for the whole batch
(nvdiffrast's instanced minibatch mode: every image shares the triangles, vertices differ):

1. parameters → batched scene values (:mod:`.bindings`), object transforms, per-vertex offsets,
   the camera's view and projection (:mod:`.geometry`) → clip-space vertices ``[B, V, 4]``;
2. ``rasterize`` → ``interpolate`` (world position, normal; UVs with screen derivatives) →
   ``texture`` (mipmapped) — the seam, :mod:`.backend`;
3. Lambert + Blinn-Phong shading and compositing over the background (:mod:`.shading`);
4. ``antialias`` in ``differentiable`` mode: it turns silhouette edges into gradients of the
   vertex positions, so poses get analytic gradients even where only the outline moves.
   ``forward`` mode skips it and renders without autograd: hard edges for the black-box
   estimators, which do not need gradients and gain speed.

A categorical mesh choice renders every alternative's triangles in the same call and collapses
the vertices of the alternatives not chosen to a point (zero-area triangles cover no pixel), so
a batch mixing choices is still one call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from rendergrad import Renderer
from rendergrad.errors import ConfigError
from rendergrad.resolution import parse_resolution
from rendergrad.params import ParamSpace

from .backend import NvdiffrastOps, RasterOps, availability
from .bindings import SceneBindings, State
from .geometry import look_at, model_matrix, perspective, transform_points, vertex_normals
from .scene import Scene, load_scene
from .shading import background_image, gather_per_pixel, shade

MODES = ("differentiable", "forward")


def _resolution(value: Any) -> tuple[int, int]:
    h, w = parse_resolution(value, "nvdiffrast renderer")
    if h > 16384 or w > 16384:
        raise ConfigError(f"nvdiffrast renderer: resolution {h}x{w} is outside 1..16384 (nvdiffrast's limit)")
    return h, w


def _scene_source(scene: Any) -> tuple[Mapping[str, Any], Path | None]:
    if isinstance(scene, Mapping):
        return scene, None
    if isinstance(scene, (str, os.PathLike)):
        p = Path(os.path.expanduser(str(scene)))
        if p.suffix.lower() != ".toml":
            raise ConfigError(f"nvdiffrast renderer: scene {str(scene)!r} must be a table or a .toml file")
        if not p.exists():
            raise ConfigError(f"nvdiffrast renderer: scene file {str(scene)!r} not found (relative to {os.getcwd()})")
        try:
            import tomllib
        except ImportError:  # pragma: no cover - Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            data = tomllib.loads(p.read_text())
        except Exception as e:
            raise ConfigError(f"nvdiffrast renderer: scene file {p}: {e}") from None
        return data, p.parent
    raise ConfigError(f"nvdiffrast renderer: scene must be a table or a .toml file, got {type(scene).__name__}")


class _Geometry:
    """The scene's triangles in one buffer: every object's every mesh alternative, on the device."""

    def __init__(self, scene: Scene, device: torch.device):
        verts, uvs, faces, tri_obj, ranges = [], [], [], [], []
        offset = 0
        for k, obj in enumerate(scene.objects):
            alts = []
            for mesh in obj.meshes:
                v = mesh.vertices.shape[0]
                verts.append(mesh.vertices)
                uvs.append(mesh.uvs)
                faces.append(mesh.faces.long() + offset)
                tri_obj.append(torch.full((mesh.faces.shape[0],), k, dtype=torch.long))
                alts.append((offset, offset + v, mesh.center))
                offset += v
            ranges.append(alts)
        self.ranges = ranges
        self.vertices = [m.vertices.to(device) for o in scene.objects for m in o.meshes]
        self.uvs = torch.cat(uvs).to(device).contiguous()
        self.tri = torch.cat(faces).to(device=device, dtype=torch.int32).contiguous()
        self.tri_obj = torch.cat(tri_obj).to(device)
        self.num_vertices = offset
        self.num_triangles = int(self.tri.shape[0])


class NvdiffrastRenderer(Renderer):
    """Triangle meshes, textures and poses on the GPU (nvdiffrast); differentiable or forward-only."""

    name = "nvdiffrast"
    differentiable = True                # mode = "differentiable", the default
    differentiable_when = {"mode": "differentiable"}

    def __init__(self, scene: Any, params: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]],
                 *, resolution: int | Sequence[int] | Mapping[str, int] = 256, mode: str = "differentiable",
                 device: str = "cuda", max_mip_level: int | None = 6, ops: RasterOps | None = None):
        if mode not in MODES:
            raise ConfigError(f"nvdiffrast renderer: mode must be one of {MODES}, got {mode!r}")
        if max_mip_level is not None and not (isinstance(max_mip_level, int) and max_mip_level >= 0):
            raise ConfigError(f"nvdiffrast renderer: max_mip_level must be an integer >= 0 (or none), got {max_mip_level!r}")
        self.mode = mode
        self.differentiable = mode == "differentiable"
        self.height, self.width = _resolution(resolution)
        self.max_mip_level = max_mip_level
        spec, base_dir = _scene_source(scene)
        self.scene = load_scene(spec, base_dir=base_dir)
        self.bindings = SceneBindings(self.scene, params)
        self.space: ParamSpace = self.bindings.space
        # The rasterizer last: a scene or parameter mistake is reported even where CUDA is missing.
        self.ops: RasterOps = ops if ops is not None else NvdiffrastOps(device)
        self.device = torch.device(device)
        self.scene.to(self.device)
        self.geometry = _Geometry(self.scene, self.device)
        self.textured = [k for k, o in enumerate(self.scene.objects) if o.texture is not None]
        self._static_world: dict[int, torch.Tensor] = {}   # mesh index → [1, V, 3], objects θ does not move
        self._camera: torch.Tensor | None = None           # [1, 4, 4] projection · view, if θ does not change it
        self._static_normals: torch.Tensor | None = None

    # -- the Renderer interface -----------------------------------------------------------------
    @classmethod
    def available(cls) -> tuple[bool, str]:
        return availability()

    def parameter_space(self) -> ParamSpace:
        return self.space

    def light_parameters(self) -> list[str]:
        return self.bindings.light_parameters()

    def close(self) -> None:
        self.ops = None  # type: ignore[assignment]
        if self.device.type == "cuda" and torch.cuda.is_available():  # pragma: no cover - needs a GPU
            torch.cuda.empty_cache()

    def render(self, theta: torch.Tensor) -> torch.Tensor:
        if self.ops is None:
            raise ConfigError("nvdiffrast renderer: render() after close()")
        theta = torch.as_tensor(theta)
        if theta.ndim == 1:
            theta = theta.unsqueeze(0)
        if theta.shape[-1] != self.space.size:
            raise ConfigError(f"nvdiffrast renderer: theta has {theta.shape[-1]} columns, the scene declares "
                              f"{self.space.size} parameter values")
        if self.differentiable and torch.is_grad_enabled():
            return self._render(theta)
        with torch.no_grad():
            return self._render(theta.detach())

    # -- the pipeline ---------------------------------------------------------------------------
    def clip_vertices(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        """World-space ``[B,V,3]`` and clip-space ``[B,V,4]`` vertices of the whole scene.

        Objects no parameter moves, and the camera when no parameter changes it, are transformed
        once and reused: fewer kernel launches per render, which is what small batches pay for.
        """
        g = self.geometry
        bsz = state.cam_origin.shape[0]
        world = []
        i = 0
        for k, (obj, o_state) in enumerate(zip(self.scene.objects, state.objects)):
            static = obj.id not in self.bindings.moving
            for a, (_start, _stop, center) in enumerate(g.ranges[k]):
                base = g.vertices[i]
                i += 1
                if static and i - 1 in self._static_world:
                    world.append(self._static_world[i - 1].expand(bsz, -1, -1))
                    continue
                pts = base.unsqueeze(0) + o_state.offsets if o_state.offsets is not None else base
                m = model_matrix(o_state.translate, o_state.rotation, o_state.scale, center)
                w = transform_points(m, pts)[..., :3]
                if o_state.mesh_index is not None:
                    chosen = (o_state.mesh_index == a)[:, None, None]
                    w = torch.where(chosen, w, w[:, :1].detach().expand_as(w))  # collapse: zero-area triangles
                if static:
                    self._static_world[i - 1] = w[:1].detach()
                world.append(w)
        world_v = torch.cat(world, 1) if len(world) > 1 else world[0]
        if self.bindings.camera_moves or self._camera is None:
            view = look_at(state.cam_origin, state.cam_target, state.cam_up)
            proj = perspective(state.fov, self.width / self.height, self.scene.camera.near, self.scene.camera.far)
            pv = proj @ view
            if not self.bindings.camera_moves:
                self._camera = pv[:1].detach()
        else:
            pv = self._camera.expand(bsz, 4, 4)
        return world_v, transform_points(pv, world_v)

    def _render(self, theta: torch.Tensor) -> torch.Tensor:
        g, ops = self.geometry, self.ops
        state = self.bindings.apply(theta, self.device)
        bsz, h, w = theta.shape[0], self.height, self.width
        world, clip = self.clip_vertices(state)
        textured = bool(self.textured)
        rast, rast_db = ops.rasterize(clip, g.tri, (h, w), textured and self.max_mip_level != 0)
        if self.bindings.moving:
            normals = vertex_normals(world, g.tri)
        else:  # nothing moves: the normals are the scene's
            if self._static_normals is None:
                self._static_normals = vertex_normals(world[:1].detach(), g.tri)
            normals = self._static_normals.expand(bsz, -1, -1)
        attrs, _ = ops.interpolate(torch.cat([world, normals], -1), rast, g.tri)
        pos, nrm = attrs[..., :3], attrs[..., 3:6]
        tid = rast[..., 3].long() - 1
        covered = (tid >= 0).unsqueeze(-1)
        obj_px = g.tri_obj[tid.clamp_min(0)]
        objs = state.objects
        # one gather for every material value: [B, K, 3 + 3 + 1] → per pixel
        material = torch.stack([torch.cat([o.color, o.specular, o.shininess[:, None]], 1) for o in objs], 1)
        mat_px = gather_per_pixel(material, obj_px)
        albedo, specular, shininess = mat_px[..., :3], mat_px[..., 3:6], mat_px[..., 6:7]
        if textured:
            mip = self.max_mip_level != 0
            uv, uv_da = ops.interpolate(g.uvs.unsqueeze(0), rast, g.tri, rast_db=rast_db if mip else None,
                                        diff_attrs="all" if mip else None)
            for k in self.textured:
                tex = objs[k].texture
                texel = ops.texture(tex, uv, uv_da if mip else None, self.max_mip_level)
                albedo = torch.where((obj_px == k).unsqueeze(-1), albedo * texel, albedo)
        color = shade(pos, nrm, albedo, specular, shininess, state.cam_origin, state.lights, state.ambient)
        bg = background_image(state.background, bsz, h, w)
        img = torch.where(covered, color, bg)
        if self.differentiable and torch.is_grad_enabled():
            img = ops.antialias(img.contiguous(), rast, clip, g.tri)
        return img.flip(1).contiguous()
