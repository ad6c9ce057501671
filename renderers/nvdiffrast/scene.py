"""The scene description of the nvdiffrast renderer: a dict (or TOML tables) → validated tensors.

A scene is what a run file can spell, so every field is a number, a list, a string or a table::

    camera = { origin = [0, 0, 4], target = [0, 0, 0], up = [0, 1, 0], fov = 40 }
    ambient = [0.1, 0.1, 0.1]
    background = [0.02, 0.02, 0.03]          # or an image file
    objects = [{ id = "box", mesh = "cube", translate = [0.5, 0, 0], rotate = [0, 30, 0],
                 scale = 1.0, color = [0.8, 0.3, 0.2], specular = 0.2, shininess = 32,
                 texture = { type = "checker", size = 64, squares = 8 } }]
    lights = [{ id = "sun", type = "directional", direction = [-1, -1, -1], color = [1, 1, 1], intensity = 2 },
              { id = "lamp", type = "point", position = [2, 2, 2], intensity = 10 }]

Why validated here, before anything is rasterized: a mistake in a scene should cost a sentence
naming the key and the fix, not a CUDA error from deep inside a kernel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from rendergrad.errors import ConfigError

from .meshes import Mesh, make_mesh

SCENE_KEYS = ("camera", "objects", "lights", "ambient", "background")
CAMERA_KEYS = ("origin", "target", "up", "fov", "near", "far")
OBJECT_KEYS = ("id", "mesh", "translate", "rotate", "scale", "color", "specular", "shininess", "texture")
LIGHT_KEYS = ("id", "type", "direction", "position", "color", "intensity")
LIGHT_TYPES = ("directional", "point")
RESERVED_IDS = ("camera", "ambient", "background")


@dataclass
class Camera:
    origin: torch.Tensor
    target: torch.Tensor
    up: torch.Tensor
    fov: float = 45.0
    near: float = 0.1
    far: float = 100.0


@dataclass
class SceneObject:
    id: str
    meshes: list[Mesh]                 # one, or the alternatives a categorical parameter chooses from
    translate: torch.Tensor            # [3]
    rotate: torch.Tensor               # [3] degrees, about x then y then z
    scale: torch.Tensor                # [3]
    color: torch.Tensor                # [3] linear albedo (multiplies the texture)
    specular: torch.Tensor             # [3]
    shininess: float
    texture: torch.Tensor | None       # [h, w, 3] linear, row 0 = v of 0 (bottom)
    mesh_index: int = 0

    @property
    def center(self) -> torch.Tensor:
        return self.meshes[self.mesh_index].center


@dataclass
class Light:
    id: str
    type: str
    vector: torch.Tensor               # direction the light travels (directional) or position (point)
    color: torch.Tensor
    intensity: float


@dataclass
class Scene:
    camera: Camera
    objects: list[SceneObject]
    lights: list[Light]
    ambient: torch.Tensor
    background: torch.Tensor           # [3] colour or [H, W, 3] image (top row first)
    base_dir: Path | None = None
    ids: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device) -> "Scene":
        """Move every tensor to ``device`` once, so a render copies nothing from the host."""
        cam = self.camera
        cam.origin, cam.target, cam.up = (t.to(device) for t in (cam.origin, cam.target, cam.up))
        for o in self.objects:
            for name in ("translate", "rotate", "scale", "color", "specular"):
                setattr(o, name, getattr(o, name).to(device))
            if o.texture is not None:
                o.texture = o.texture.to(device)
            for m in o.meshes:
                m.center = m.center.to(device)
        for light in self.lights:
            light.vector, light.color = light.vector.to(device), light.color.to(device)
        self.ambient, self.background = self.ambient.to(device), self.background.to(device)
        return self

    def object(self, oid: str, who: str) -> SceneObject:
        for o in self.objects:
            if o.id == oid:
                return o
        raise ConfigError(f"{who}: no object {oid!r}; the scene's objects are: "
                          f"{', '.join(o.id for o in self.objects) or '(none)'}")

    def light(self, lid: str, who: str) -> Light:
        for light in self.lights:
            if light.id == lid:
                return light
        raise ConfigError(f"{who}: no light {lid!r}; the scene's lights are: "
                          f"{', '.join(x.id for x in self.lights) or '(none)'}")


def _vec(value: Any, n: int, where: str, *, scalar_ok: bool = True) -> torch.Tensor:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected {n} numbers, got {value!r}")
    if isinstance(value, (int, float)) and scalar_ok:
        return torch.full((n,), float(value), dtype=torch.float32)
    try:
        t = torch.tensor(value, dtype=torch.float32).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"{where}: expected {n} numbers, got {value!r}") from None
    if t.numel() != n or not bool(torch.isfinite(t).all()):
        raise ConfigError(f"{where}: expected {n} finite numbers, got {value!r}")
    return t


def _float(value: Any, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if positive and not value > 0:
        raise ConfigError(f"{where}: must be > 0, got {value!r}")
    return float(value)


def _unknown(d: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    bad = sorted(set(d) - set(allowed))
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {bad}; valid keys: {', '.join(allowed)}")


def checker(size: int = 64, squares: int = 8, colors: Sequence[Sequence[float]] = ((0.9, 0.9, 0.9), (0.1, 0.1, 0.1))
            ) -> torch.Tensor:
    """A procedural checkerboard texture ``[size, size, 3]``."""
    if size < 1 or squares < 1:
        raise ConfigError("checker texture: size and squares must be >= 1")
    i = torch.arange(size)
    cell = (i * squares // size)
    parity = ((cell[:, None] + cell[None, :]) % 2).to(torch.float32)[..., None]
    c0, c1 = (torch.tensor(c, dtype=torch.float32) for c in colors)
    return c0 * (1 - parity) + c1 * parity


def _texture(spec: Any, mesh: Mesh, where: str, base_dir: Path | None) -> torch.Tensor | None:
    if spec is None:
        return mesh.texture
    if spec is False:
        return None
    if isinstance(spec, (str, os.PathLike)):
        from rendergrad.imageio import load_image
        p = Path(os.path.expanduser(str(spec)))
        if not p.is_absolute() and not p.exists() and base_dir is not None:
            p = base_dir / p
        img = load_image(p)
        if img.shape[-1] == 1:
            img = img.expand(*img.shape[:2], 3)
        return img[..., :3].flip(0).contiguous()
    if isinstance(spec, Mapping):
        d = dict(spec)
        kind = d.pop("type", None)
        if kind == "checker":
            try:
                return checker(**d)
            except TypeError as e:
                raise ConfigError(f"{where}: bad checker option: {e}") from None
        if kind == "constant":
            size = int(d.pop("size", 16))
            return _vec(d.pop("color", 1.0), 3, f"{where}.color").expand(size, size, 3).clone()
        raise ConfigError(f"{where}: texture table needs type = 'checker' or 'constant', got {kind!r}")
    raise ConfigError(f"{where}: texture must be an image file, a table {{type = 'checker'}}, or false; got {spec!r}")


def _object(i: int, d: Any, base_dir: Path | None) -> SceneObject:
    where = f"nvdiffrast scene: objects[{i}]"
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where} must be a table, got {type(d).__name__}")
    _unknown(d, OBJECT_KEYS, where)
    if "id" not in d or not isinstance(d["id"], str) or not d["id"]:
        raise ConfigError(f"{where} needs an id (a name parameters refer to), e.g. id = \"box\"")
    oid = d["id"]
    where = f"nvdiffrast scene: object {oid!r}"
    if "mesh" not in d:
        raise ConfigError(f"{where} needs a mesh: \"cube\", \"sphere\", \"plane\", a file, or a list of them")
    specs = d["mesh"] if isinstance(d["mesh"], list) else [d["mesh"]]
    if not specs:
        raise ConfigError(f"{where}: mesh list is empty")
    meshes = [make_mesh(s, where=f"{where}.mesh", base_dir=base_dir) for s in specs]
    tex = _texture(d.get("texture"), meshes[0], f"{where}.texture", base_dir)
    if tex is not None and not any(m.has_uvs for m in meshes):
        raise ConfigError(f"{where}: has a texture but its mesh has no UV coordinates")
    return SceneObject(
        id=oid, meshes=meshes,
        translate=_vec(d.get("translate", 0.0), 3, f"{where}.translate"),
        rotate=_vec(d.get("rotate", 0.0), 3, f"{where}.rotate"),
        scale=_vec(d.get("scale", 1.0), 3, f"{where}.scale"),
        color=_vec(d.get("color", 0.8), 3, f"{where}.color"),
        specular=_vec(d.get("specular", 0.0), 3, f"{where}.specular"),
        shininess=_float(d.get("shininess", 32.0), f"{where}.shininess", positive=True),
        texture=tex)


def _light(i: int, d: Any) -> Light:
    where = f"nvdiffrast scene: lights[{i}]"
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where} must be a table, got {type(d).__name__}")
    _unknown(d, LIGHT_KEYS, where)
    lid = d.get("id", f"light{i}")
    kind = d.get("type", "directional")
    if kind not in LIGHT_TYPES:
        raise ConfigError(f"{where}: type must be one of {LIGHT_TYPES}, got {kind!r}")
    if kind == "directional":
        if "position" in d:
            raise ConfigError(f"{where}: a directional light has a direction, not a position")
        vec = _vec(d.get("direction", [0.0, -1.0, -1.0]), 3, f"{where}.direction", scalar_ok=False)
        if float(vec.norm()) == 0:
            raise ConfigError(f"{where}.direction must not be zero")
    else:
        if "direction" in d:
            raise ConfigError(f"{where}: a point light has a position, not a direction")
        if "position" not in d:
            raise ConfigError(f"{where}: a point light needs position = [x, y, z]")
        vec = _vec(d["position"], 3, f"{where}.position", scalar_ok=False)
    return Light(id=str(lid), type=kind, vector=vec, color=_vec(d.get("color", 1.0), 3, f"{where}.color"),
                 intensity=_float(d.get("intensity", 1.0), f"{where}.intensity"))


def _camera(d: Any) -> Camera:
    where = "nvdiffrast scene: camera"
    d = dict(d or {})
    _unknown(d, CAMERA_KEYS, where)
    cam = Camera(origin=_vec(d.get("origin", [0.0, 0.0, 4.0]), 3, f"{where}.origin", scalar_ok=False),
                 target=_vec(d.get("target", [0.0, 0.0, 0.0]), 3, f"{where}.target", scalar_ok=False),
                 up=_vec(d.get("up", [0.0, 1.0, 0.0]), 3, f"{where}.up", scalar_ok=False),
                 fov=_float(d.get("fov", 45.0), f"{where}.fov", positive=True),
                 near=_float(d.get("near", 0.1), f"{where}.near", positive=True),
                 far=_float(d.get("far", 100.0), f"{where}.far", positive=True))
    if not cam.fov < 180:
        raise ConfigError(f"{where}.fov must be below 180 degrees, got {cam.fov}")
    if not cam.far > cam.near:
        raise ConfigError(f"{where}: far ({cam.far}) must be greater than near ({cam.near})")
    if float((cam.target - cam.origin).norm()) == 0:
        raise ConfigError(f"{where}: origin and target are the same point")
    if float(torch.cross(cam.target - cam.origin, cam.up, dim=0).norm()) < 1e-6:
        raise ConfigError(f"{where}: up {cam.up.tolist()} is parallel to the viewing direction; pick another up")
    return cam


def load_scene(spec: Mapping[str, Any], *, base_dir: str | os.PathLike | None = None) -> Scene:
    """Validate a scene description (see the module docstring) and load its meshes and textures."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"nvdiffrast scene must be a table, got {type(spec).__name__}")
    _unknown(spec, SCENE_KEYS, "nvdiffrast scene")
    bd = Path(base_dir) if base_dir is not None else None
    objs = spec.get("objects")
    if not isinstance(objs, list) or not objs:
        raise ConfigError("nvdiffrast scene: `objects` must be a non-empty list of object tables, e.g. "
                          "objects = [{ id = \"box\", mesh = \"cube\" }]")
    objects = [_object(i, o, bd) for i, o in enumerate(objs)]
    lights_spec = spec.get("lights", [{"id": "sun", "type": "directional", "direction": [-0.5, -1.0, -1.0]}])
    if not isinstance(lights_spec, list):
        raise ConfigError("nvdiffrast scene: `lights` must be a list of light tables")
    lights = [_light(i, x) for i, x in enumerate(lights_spec)]
    ids = [o.id for o in objects] + [x.id for x in lights]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"nvdiffrast scene: ids must be unique across objects and lights; repeated: {dupes}")
    reserved = sorted(set(ids) & set(RESERVED_IDS))
    if reserved:
        raise ConfigError(f"nvdiffrast scene: ids {reserved} are reserved (camera, ambient, background); rename them")
    bg = spec.get("background", [0.0, 0.0, 0.0])
    if isinstance(bg, (str, os.PathLike)):
        from rendergrad.imageio import load_image
        p = Path(os.path.expanduser(str(bg)))
        if not p.is_absolute() and not p.exists() and bd is not None:
            p = bd / p
        img = load_image(p)
        background = (img.expand(*img.shape[:2], 3) if img.shape[-1] == 1 else img[..., :3]).contiguous()
    else:
        background = _vec(bg, 3, "nvdiffrast scene: background")
    return Scene(camera=_camera(spec.get("camera")), objects=objects, lights=lights,
                 ambient=_vec(spec.get("ambient", 0.05), 3, "nvdiffrast scene: ambient"),
                 background=background, base_dir=bd)
