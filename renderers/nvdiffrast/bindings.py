"""Declared parameters → batched scene values, in the declaration style of the Mitsuba plugin.

A declaration is a :class:`~rendergrad.Param` table plus exactly one *target*:

* ``translate = "<id>"`` (offset), ``position = "<id>"`` (absolute centre), ``rotate = "<id>"``
  (degrees about ``axis``), ``scale = "<id>"`` (factor; ``uniform = true`` for one value): a
  transform of an object, about its centre; ``axes = "xy"`` picks the coordinates. The id
  ``camera`` moves the camera (``translate`` / ``position`` of its origin).
* ``key = "<id>.<field>"``: a value: an object's ``color``, ``specular``, ``shininess``; a light's
  ``direction``, ``position``, ``color``, ``intensity``; ``camera.fov``, ``camera.target``;
  ``ambient``; ``background`` (a colour background). ``multiply = true`` makes it a factor on
  the scene's value.
* ``offsets = "<id>"``: a per-vertex offset field ``[V, 3]`` added to the object's mesh (a vector
  parameter with one row per vertex).
* ``texture = "<id>"``: the object's texels ``[h, w, 3]`` (a vector parameter).
* ``mesh = "<id>"``: a categorical choice among the object's ``mesh = [...]`` alternatives.

:meth:`SceneBindings.apply` turns θ ``[B, n]`` into a :class:`State` of batched tensors with
autograd intact; it is plain torch, so it runs and is tested on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from rendergrad.declarations import axes_indices, declaration_list
from rendergrad.errors import ConfigError, ParameterError
from rendergrad.params import Param, ParamSpace

from .geometry import axis_angle, euler_xyz
from .scene import Scene

TARGETS = ("key", "translate", "position", "rotate", "scale", "offsets", "texture", "mesh")
OPTIONS = ("axes", "axis", "multiply", "uniform")
PARAM_FIELDS = tuple(Param.__dataclass_fields__)
OBJECT_FIELDS = {"color": 3, "specular": 3, "shininess": 1}
LIGHT_FIELDS = {"direction": 3, "position": 3, "color": 3, "intensity": 1}
CAMERA_FIELDS = {"fov": 1, "target": 3}


@dataclass
class Binding:
    param: Param
    kind: str
    target: str
    attr: str = ""
    axes: list[int] = field(default_factory=lambda: [0, 1, 2])
    axis: tuple[float, float, float] = (0.0, 1.0, 0.0)
    multiply: bool = False
    uniform: bool = False
    start: int = 0
    stop: int = 0
    cache: dict[Any, torch.Tensor] = field(default_factory=dict)


@dataclass
class ObjectState:
    translate: torch.Tensor                # [B,3]
    rotation: torch.Tensor                 # [B,3,3]
    scale: torch.Tensor                    # [B,3]
    color: torch.Tensor                    # [B,3]
    specular: torch.Tensor                 # [B,3]
    shininess: torch.Tensor                # [B]
    texture: torch.Tensor | None           # [B or 1,h,w,3]
    offsets: torch.Tensor | None           # [B,V,3]
    mesh_index: torch.Tensor | None        # [B] long


@dataclass
class LightState:
    type: str
    vector: torch.Tensor                   # [B,3]
    color: torch.Tensor                    # [B,3]
    intensity: torch.Tensor                # [B]


@dataclass
class State:
    objects: list[ObjectState]
    lights: list[LightState]
    cam_origin: torch.Tensor               # [B,3]
    cam_target: torch.Tensor               # [B,3]
    cam_up: torch.Tensor                   # [3]
    fov: torch.Tensor                      # [B]
    ambient: torch.Tensor                  # [B,3]
    background: torch.Tensor               # [B,3] or [H,W,3]




class SceneBindings:
    """Parses declarations against a loaded :class:`Scene`; :meth:`apply` maps θ to a :class:`State`."""

    def __init__(self, scene: Scene, declarations: Any):
        self.scene = scene
        items = declaration_list(declarations, "nvdiffrast renderer")
        if not items:
            raise ConfigError("nvdiffrast renderer: declare at least one parameter in `params`, e.g. "
                              "{ name = \"pos\", translate = \"box\", axes = \"xy\", low = -1, high = 1 }")
        self.bindings: list[Binding] = []
        i = 0
        for n, d in enumerate(items):
            b = self._parse(n, d)
            b.start, b.stop = i, i + b.param.size
            i = b.stop
            self.bindings.append(b)
        self.space = ParamSpace([b.param for b in self.bindings])
        self.mesh_choice = {b.target for b in self.bindings if b.kind == "mesh"}
        # What θ can change: everything else is computed once per device and reused (fewer GPU
        # kernel launches per render; the renderer caches static vertices and the camera too).
        self.moving = {b.target for b in self.bindings if b.kind != "key" and b.target != "camera"}
        self.camera_moves = any(b.target == "camera" or b.target.startswith("camera.") for b in self.bindings)
        self._rotations: dict[Any, list[torch.Tensor]] = {}

    # -- parsing ---------------------------------------------------------------------------------
    def _parse(self, n: int, decl: dict[str, Any]) -> Binding:
        who = f"nvdiffrast renderer: params[{n}] ({decl.get('name', '?')!r})"
        targets = [t for t in TARGETS if t in decl]
        if len(targets) != 1:
            raise ConfigError(f"{who}: give exactly one target ({', '.join(TARGETS)}); got "
                              f"{targets or 'none'}")
        kind = targets[0]
        unknown = sorted(set(decl) - set(TARGETS) - set(OPTIONS) - set(PARAM_FIELDS))
        if unknown:
            raise ConfigError(f"{who}: unknown key(s) {unknown}; a declaration takes {', '.join(PARAM_FIELDS)}, "
                              f"one target of {', '.join(TARGETS)}, and options {', '.join(OPTIONS)}")
        d = dict(decl)
        target = d.pop(kind)
        if not isinstance(target, str):
            raise ConfigError(f"{who}: {kind} must name an id (a string), got {target!r}")
        b = Binding(param=None, kind=kind, target=target)  # type: ignore[arg-type]
        b.axes = axes_indices(d.pop("axes", "xyz"), who)
        axis = d.pop("axis", [0.0, 1.0, 0.0])
        try:
            b.axis = tuple(float(a) for a in axis)  # type: ignore[assignment]
            assert len(b.axis) == 3 and any(b.axis)
        except (TypeError, ValueError, AssertionError):
            raise ConfigError(f"{who}: axis must be three numbers, not all zero; got {axis!r}") from None
        b.multiply = bool(d.pop("multiply", False))
        b.uniform = bool(d.pop("uniform", False))
        if b.multiply and kind != "key":
            raise ConfigError(f"{who}: multiply applies to key = ... values only")
        if b.uniform and kind != "scale":
            raise ConfigError(f"{who}: uniform applies to scale only")
        if "shape" in d:
            d["shape"] = tuple(d["shape"])
        size, current, defaults = self._target(b, who)
        shape = d.get("shape", () if size == 1 else ((size // 3, 3) if kind == "offsets" else
                                                     tuple(self._texture_shape(b)) if kind == "texture" else (size,)))
        n_shape = 1
        for s in shape:
            n_shape *= int(s)
        if n_shape != size and not (kind == "key" and n_shape == 1):
            raise ConfigError(f"{who}: shape {list(shape)} has {n_shape} values but {kind} {target!r} takes {size}")
        d["shape"] = tuple(shape)
        for k, v in defaults.items():
            d.setdefault(k, v)
        if "init" not in d and d.get("kind", "continuous") == "continuous" and current is not None:
            lo, hi = (torch.as_tensor(d.get(x, dv), dtype=torch.float64) for x, dv in (("low", 0.0), ("high", 1.0)))
            cur = current.to(torch.float64).reshape(-1)
            if kind == "texture":
                cur = torch.minimum(torch.maximum(cur, lo), hi)  # texels: clip the file's values into the bounds
            elif bool(((cur < lo - 1e-9) | (cur > hi + 1e-9)).any()):
                raise ParameterError(
                    f"{who}: no init given, and the scene's current value {[round(float(x), 6) for x in cur[:6]]} "
                    f"lies outside the bounds [{d.get('low', 0.0)}, {d.get('high', 1.0)}]; give `init` or widen the bounds")
            d["init"] = float(cur[0]) if not shape else cur[:n_shape].tolist()
        d.setdefault("description", f"{kind} {target}")
        try:
            b.param = Param(**d)
        except TypeError as e:
            raise ConfigError(f"{who}: {e}") from None
        except ParameterError as e:
            raise ParameterError(f"nvdiffrast renderer: {e}") from None
        if kind == "mesh":
            if b.param.kind != "categorical":
                raise ConfigError(f"{who}: mesh = ... is a categorical parameter; set kind = \"categorical\"")
            n_alt = len(self.scene.object(target, who).meshes)
            if len(b.param.choices or ()) != n_alt:
                raise ConfigError(f"{who}: {len(b.param.choices or ())} choices for object {target!r}, which has "
                                  f"{n_alt} mesh alternatives; give one choice (a label) per alternative")
        elif b.param.discrete:
            raise ConfigError(f"{who}: {kind} takes a continuous parameter (only mesh = ... is categorical)")
        return b

    def _texture_shape(self, b: Binding) -> tuple[int, ...]:
        tex = self.scene.object(b.target, "").texture
        return tuple(tex.shape)  # type: ignore[union-attr]

    def _target(self, b: Binding, who: str) -> tuple[int, torch.Tensor | None, dict[str, Any]]:
        """Size of the target, its current value (for a default init), default Param fields."""
        scene, kind, t = self.scene, b.kind, b.target
        if kind in ("translate", "position", "scale", "rotate"):
            if t == "camera":
                if kind not in ("translate", "position"):
                    raise ConfigError(f"{who}: the camera can be moved (translate / position); aim it with "
                                      "key = \"camera.target\" and zoom with key = \"camera.fov\"")
                origin = scene.camera.origin
                cur = {"translate": torch.zeros(3), "position": origin}[kind][b.axes]
                return len(b.axes), cur, {}
            obj = scene.object(t, who)
            if kind == "rotate":
                return 1, torch.zeros(1), {"low": -180.0, "high": 180.0}
            if kind == "scale":
                return (1 if b.uniform else len(b.axes)), torch.ones(1 if b.uniform else len(b.axes)), {
                    "low": 0.1, "high": 3.0}
            cur = (torch.zeros(3) if kind == "translate" else obj.translate + obj.center)[b.axes]
            return len(b.axes), cur, {"low": -1.0, "high": 1.0} if kind == "translate" else {}
        if kind == "offsets":
            obj = scene.object(t, who)
            if len(obj.meshes) > 1:
                raise ConfigError(f"{who}: offsets need one mesh; object {t!r} has {len(obj.meshes)} alternatives")
            v = obj.meshes[0].vertices.shape[0]
            return v * 3, torch.zeros(v * 3), {"low": -0.1, "high": 0.1}
        if kind == "texture":
            obj = scene.object(t, who)
            if obj.texture is None:
                raise ConfigError(f"{who}: object {t!r} has no texture; give it one, e.g. "
                                  "texture = { type = \"checker\", size = 64 } or texture = { type = \"constant\", size = 32 }")
            return obj.texture.numel(), obj.texture, {"low": 0.0, "high": 1.0}
        if kind == "mesh":
            obj = scene.object(t, who)
            return 1, None, {"kind": "categorical", "choices": [m.name or str(i) for i, m in enumerate(obj.meshes)],
                             "init": float(obj.mesh_index)}
        # key = "<id>.<field>"
        if t in ("ambient", "background"):
            if t == "background" and scene.background.dim() != 1:
                raise ConfigError(f"{who}: the background is an image; only a colour background can be a parameter")
            b.attr = t
            value = scene.ambient if t == "ambient" else scene.background
            return 3, (torch.ones(3) if b.multiply else value), {}
        oid, _, fld = t.partition(".")
        b.attr = fld
        if oid == "camera":
            table = CAMERA_FIELDS
            value = {"fov": torch.tensor([scene.camera.fov]), "target": scene.camera.target}.get(fld)
        elif any(o.id == oid for o in scene.objects):
            table = OBJECT_FIELDS
            obj = scene.object(oid, who)
            value = {"color": obj.color, "specular": obj.specular, "shininess": torch.tensor([obj.shininess])}.get(fld)
        elif any(x.id == oid for x in scene.lights):
            table = LIGHT_FIELDS
            light = scene.light(oid, who)
            if fld in ("direction", "position") and fld != ("direction" if light.type == "directional" else "position"):
                raise ConfigError(f"{who}: light {oid!r} is a {light.type} light; it has a "
                                  f"{'direction' if light.type == 'directional' else 'position'}, not a {fld}")
            value = {"direction": light.vector, "position": light.vector, "color": light.color,
                     "intensity": torch.tensor([light.intensity])}.get(fld)
        else:
            ids = ["camera", "ambient", "background"] + [o.id for o in scene.objects] + [x.id for x in scene.lights]
            raise ConfigError(f"{who}: key {t!r} names no object, light or camera; write \"<id>.<field>\" with an "
                              f"id of: {', '.join(ids)}")
        if fld not in table:
            raise ConfigError(f"{who}: {oid!r} has no field {fld!r}; its fields are: {', '.join(table)}")
        if b.multiply:
            value = torch.ones(table[fld])
        return table[fld], value, {}

    # -- queries ---------------------------------------------------------------------------------
    def light_parameters(self) -> list[str]:
        return [b.param.name for b in self.bindings if b.kind == "key" and b.attr in ("intensity", "color")
                and any(x.id == b.target.partition(".")[0] for x in self.scene.lights)]

    # -- applying θ ------------------------------------------------------------------------------
    def apply(self, theta: torch.Tensor, device: torch.device | str | None = None) -> State:
        """θ ``[B, n]`` (parameter units) → batched scene values on ``device``, differentiable in θ."""
        scene = self.scene
        dev = torch.device(device) if device is not None else theta.device
        theta = theta.to(device=dev, dtype=torch.float32)
        bsz = theta.shape[0]

        def rows(v: torch.Tensor) -> torch.Tensor:
            return v.to(dev, torch.float32).reshape(1, -1).expand(bsz, -1)

        if dev not in self._rotations:
            self._rotations[dev] = [euler_xyz(o.rotate.to(dev, torch.float32).reshape(1, 3)) for o in scene.objects]
        objects: list[ObjectState] = []
        for o, rot in zip(scene.objects, self._rotations[dev]):
            objects.append(ObjectState(
                translate=rows(o.translate), rotation=rot.expand(bsz, 3, 3), scale=rows(o.scale),
                color=rows(o.color), specular=rows(o.specular),
                shininess=torch.full((bsz,), o.shininess, device=dev),
                texture=o.texture.to(dev, torch.float32).unsqueeze(0) if o.texture is not None else None,
                offsets=None, mesh_index=None))
        lights = [LightState(x.type, rows(x.vector), rows(x.color), torch.full((bsz,), x.intensity, device=dev))
                  for x in scene.lights]
        state = State(objects=objects, lights=lights, cam_origin=rows(scene.camera.origin),
                      cam_target=rows(scene.camera.target), cam_up=scene.camera.up.to(dev),
                      fov=torch.full((bsz,), scene.camera.fov, device=dev), ambient=rows(scene.ambient),
                      background=(rows(scene.background) if scene.background.dim() == 1
                                  else scene.background.to(dev, torch.float32)))
        index = {o.id: i for i, o in enumerate(scene.objects)}
        lindex = {x.id: i for i, x in enumerate(scene.lights)}
        for b in self.bindings:
            v = theta[:, b.start:b.stop]
            if b.kind == "key":
                self._apply_key(b, v, state, index, lindex)
                continue
            if b.target == "camera":
                cols = list(b.axes)
                if b.kind == "translate":
                    state.cam_origin = _add_cols(state.cam_origin, cols, v)
                else:
                    state.cam_origin = _set_cols(state.cam_origin, cols, v)
                continue
            o, obj = scene.objects[index[b.target]], objects[index[b.target]]
            if b.kind == "translate":
                obj.translate = _add_cols(obj.translate, b.axes, v)
            elif b.kind == "position":
                center = torch.stack([o.center[a] for a in b.axes]).to(dev)
                obj.translate = _set_cols(obj.translate, b.axes, v - center)
            elif b.kind == "rotate":
                axis = b.cache.get(dev)
                if axis is None:  # made once per device: no host-to-device copy per render
                    axis = b.cache[dev] = torch.tensor(b.axis, device=dev)
                obj.rotation = axis_angle(axis, v[:, 0]) @ obj.rotation
            elif b.kind == "scale":
                if b.uniform:
                    obj.scale = obj.scale * v[:, :1]
                else:
                    ones = torch.ones(bsz, 3, device=dev)
                    obj.scale = obj.scale * _set_cols(ones, b.axes, v)
            elif b.kind == "offsets":
                obj.offsets = v.reshape(bsz, -1, 3)
            elif b.kind == "texture":
                obj.texture = v.reshape(bsz, *b.param.shape)
            elif b.kind == "mesh":
                obj.mesh_index = torch.round(v[:, 0].detach()).long().clamp(0, len(o.meshes) - 1)
        return state

    def _apply_key(self, b: Binding, v: torch.Tensor, state: State, index: dict[str, int],
                   lindex: dict[str, int]) -> None:
        oid = b.target.partition(".")[0]
        def combine(cur: torch.Tensor) -> torch.Tensor:
            if cur.dim() == 1:              # a scalar per image: fov, shininess, intensity
                val = v[:, 0]
            else:                           # a colour or vector; one value broadcasts
                val = v.expand(-1, cur.shape[1]) if v.shape[1] == 1 else v
            return cur * val if b.multiply else val
        if b.target == "ambient":
            state.ambient = combine(state.ambient)
        elif b.target == "background":
            state.background = combine(state.background)
        elif oid == "camera":
            if b.attr == "fov":
                state.fov = combine(state.fov)
            else:
                state.cam_target = combine(state.cam_target)
        elif oid in index:
            obj = state.objects[index[oid]]
            setattr(obj, b.attr, combine(getattr(obj, b.attr)))
        else:
            light = state.lights[lindex[oid]]
            fld = "vector" if b.attr in ("direction", "position") else b.attr
            setattr(light, fld, combine(getattr(light, fld)))


def _set_cols(x: torch.Tensor, cols: Sequence[int], v: torch.Tensor) -> torch.Tensor:
    """``x`` ``[B,3]`` with columns ``cols`` replaced by ``v``; column slices only, no index tensors
    (which would be copied to the GPU on every render)."""
    out = list(x.unbind(1))
    for j, a in enumerate(cols):
        out[a] = v[:, j]
    return torch.stack(out, 1)


def _add_cols(x: torch.Tensor, cols: Sequence[int], v: torch.Tensor) -> torch.Tensor:
    out = list(x.unbind(1))
    for j, a in enumerate(cols):
        out[a] = out[a] + v[:, j]
    return torch.stack(out, 1)


def declaration_fields() -> Sequence[str]:
    return PARAM_FIELDS + TARGETS + OPTIONS
