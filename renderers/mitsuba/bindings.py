"""Declared parameters → what they change in a loaded Mitsuba scene.

A declaration is a :class:`~rendergrad.Param` table plus exactly one *target*:

* ``key = "<mi.traverse key>"``: the parameter *is* that value (a colour, a roughness, an
  emitter's radiance, a dielectric's IOR). ``multiply = true`` makes it a factor on the scene's
  value instead, which is how light intensities are declared for OLAT capture.
* ``translate = "<id>"`` (offset), ``position = "<id>"`` (absolute centre), ``rotate = "<id>"``
  (degrees about ``axis``), ``scale = "<id>"`` (factor): a transform of a shape, a sensor or an
  emitter. ``axes = "yz"`` picks the coordinates the parameter controls. Shapes with a
  ``to_world`` are transformed there, meshes through their vertex positions, always about the
  object's centre, so a rotation spins the object in place.

Why all this lives in one place: the same code path sets values from plain numbers (forward
renders) and from drjit arrays that carry gradients (differentiable renders), so the analytic
and the black-box estimators see exactly the same scene for the same θ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from rendergrad.declarations import axes_indices, declaration_list
from rendergrad.errors import ConfigError, ParameterError
from rendergrad.params import Param, ParamSpace

TARGETS = ("key", "translate", "position", "rotate", "scale")
OPTIONS = ("axes", "axis", "multiply")
PARAM_FIELDS = tuple(Param.__dataclass_fields__)
LIGHT_SUFFIXES = ("radiance.value", "intensity.value", "irradiance.value", "radiance", "intensity", "irradiance")


@dataclass
class _Object:
    """A movable object: how it is moved and its state at load time."""

    id: str
    mode: str                     # "to_world" | "vertices" | "point"
    key: str
    center: np.ndarray            # [3]
    initial: Any                  # ScalarTransform4f, Point3f array, or [3] position


@dataclass
class Binding:
    param: Param
    kind: str
    target: str
    axes: str = "xyz"
    axis: tuple[float, float, float] = (0.0, 1.0, 0.0)
    multiply: bool = False
    start: int = 0
    stop: int = 0
    value_kind: str = ""          # for keys: "python", "float", "vec3:<Type>", "tensor"
    value_shape: tuple[int, ...] = ()
    initial: Any = None
    extra: dict[str, Any] = field(default_factory=dict)




class SceneBindings:
    """Parses declarations against a loaded scene; :meth:`apply` writes θ into the scene."""

    def __init__(self, mi: Any, dr: Any, scene: Any, params: Any, declarations: Any):
        self.mi, self.dr, self.scene, self.params = mi, dr, scene, params
        self.keys = list(params.keys())
        self.objects = self._movable_objects()
        self.bindings: list[Binding] = []
        items = declaration_list(declarations, "mitsuba renderer")
        if not items:
            raise ConfigError("mitsuba renderer: declare at least one parameter in `params`, e.g. "
                              "{ name = \"albedo\", key = \"wall.bsdf.reflectance.value\" }")
        start = 0
        for d in items:
            b = self._parse(d)
            b.start, b.stop = start, start + b.param.size
            start = b.stop
            self.bindings.append(b)
        self.space = ParamSpace([b.param for b in self.bindings])
        self._by_object: dict[str, list[Binding]] = {}
        for b in self.bindings:
            if b.kind != "key":
                self._by_object.setdefault(b.target, []).append(b)
        for oid, bs in self._by_object.items():
            obj = self.objects[oid]
            kinds = {b.kind for b in bs}
            if obj.mode == "point" and kinds - {"translate", "position"}:
                raise ConfigError(f"mitsuba renderer: {oid!r} is a point emitter; it can only be moved "
                                  "(translate / position), not rotated or scaled")
        keyed = [b.target for b in self.bindings if b.kind == "key"]
        dup = sorted({k for k in keyed if keyed.count(k) > 1})
        if dup:
            raise ConfigError(f"mitsuba renderer: scene key(s) {dup} are bound to more than one parameter")

    # -- discovery ------------------------------------------------------------------------------
    def _movable_objects(self) -> dict[str, _Object]:
        mi = self.mi
        out: dict[str, _Object] = {}
        shapes = {s.id(): s for s in self.scene.shapes()}
        for key in self.keys:
            oid, _, rest = key.rpartition(".")
            if not oid or oid in out or "." in oid and rest != "to_world":
                continue
            if rest == "to_world":
                m = np.array(self.params[key].matrix, dtype=np.float64).reshape(4, 4)
                t0 = mi.ScalarTransform4f(m)
                out[oid] = _Object(oid, "to_world", key, m[:3, 3].copy(), t0)
            elif rest == "vertex_positions":
                v = self.dr.unravel(mi.Point3f, self.params[key])
                arr = np.array(v, dtype=np.float64).reshape(-1, 3)
                shape = shapes.get(oid)
                if shape is not None:
                    bb = shape.bbox()
                    center = (np.array(bb.min, dtype=np.float64).reshape(3) + np.array(bb.max, dtype=np.float64).reshape(3)) / 2
                else:
                    center = (arr.min(0) + arr.max(0)) / 2
                out[oid] = _Object(oid, "vertices", key, center, mi.Point3f(v))
            elif rest == "position":
                p = np.array(self.params[key], dtype=np.float64).reshape(3)
                out[oid] = _Object(oid, "point", key, p.copy(), p.copy())
        return out

    def _unknown_key(self, key: str) -> ParameterError:
        import difflib
        close = difflib.get_close_matches(key, self.keys, n=3)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        return ParameterError(f"mitsuba renderer: the scene has no parameter key {key!r}{hint}. "
                              f"Its keys are: {', '.join(self.keys)}")

    # -- parsing ---------------------------------------------------------------------------------
    def _parse(self, d: dict[str, Any]) -> Binding:
        name = d.get("name", "?")
        who = f"mitsuba renderer: parameter {name!r}"
        unknown = sorted(set(d) - set(PARAM_FIELDS) - set(TARGETS) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"{who}: unknown field(s) {unknown}; a declaration takes the Param fields "
                              f"({', '.join(PARAM_FIELDS)}), one target ({', '.join(TARGETS)}) and the "
                              f"options {', '.join(OPTIONS)}")
        targets = [t for t in TARGETS if t in d]
        if len(targets) != 1:
            raise ConfigError(f"{who}: give exactly one of {', '.join(TARGETS)} to say what the parameter "
                              f"changes (got {targets or 'none'})")
        kind = targets[0]
        target = d.pop(kind)
        axes = d.pop("axes", None)
        axis = d.pop("axis", None)
        multiply = bool(d.pop("multiply", False))
        if not isinstance(target, str):
            raise ConfigError(f"{who}: {kind} must be a string, got {target!r}")
        b = Binding(param=None, kind=kind, target=target, multiply=multiply)  # type: ignore[arg-type]
        if kind == "key":
            if axes is not None or axis is not None:
                raise ConfigError(f"{who}: axes/axis only apply to translate, position, rotate and scale")
            if target not in self.keys:
                raise self._unknown_key(target)
            size, default = self._inspect_key(b, who)
        else:
            if multiply:
                raise ConfigError(f"{who}: multiply only applies to `key` parameters")
            if target not in self.objects:
                raise ParameterError(
                    f"{who}: {target!r} is not a movable object of this scene (a shape or sensor with "
                    f"to_world, a mesh, or a point emitter). Movable objects: {', '.join(self.objects) or '(none)'}")
            obj = self.objects[target]
            if kind == "rotate":
                if axes is not None:
                    raise ConfigError(f"{who}: rotate takes `axis` = [x, y, z], not `axes`")
                ax = np.asarray(axis if axis is not None else (0.0, 1.0, 0.0), dtype=np.float64).reshape(-1)
                if ax.shape != (3,) or not np.linalg.norm(ax) > 0:
                    raise ConfigError(f"{who}: axis must be 3 numbers, not all zero, got {axis!r}")
                b.axis = tuple(float(a) for a in ax / np.linalg.norm(ax))
                size, default = 1, np.zeros(1)
            else:
                if axis is not None:
                    raise ConfigError(f"{who}: `axis` is for rotate; use `axes` = \"xyz\" subset")
                b.axes = axes if axes is not None else "xyz"
                idx = axes_indices(b.axes, who)
                size = len(idx)
                if kind == "translate":
                    default = np.zeros(size)
                elif kind == "scale":
                    default = np.ones(size)
                else:
                    default = obj.center[idx]
        shape = d.pop("shape", None)
        inferred: tuple[int, ...] = tuple(b.value_shape) if kind == "key" else (() if size == 1 else (size,))
        if shape is None:
            shape = inferred
        else:
            shape = tuple(int(s) for s in shape)
            n = math.prod(shape) if shape else 1
            if n != size and not (kind == "key" and n == 1):
                raise ConfigError(f"{who}: shape {list(shape)} has {n} values but its target takes {size}")
        n = math.prod(shape) if shape else 1
        if "init" not in d and d.get("kind", "continuous") == "continuous":
            init = np.broadcast_to(default, (size,)) if n == size else np.asarray(default).reshape(-1)[:1]
            lo = np.broadcast_to(np.asarray(d.get("low", 0.0), dtype=np.float64), (n,))
            hi = np.broadcast_to(np.asarray(d.get("high", 1.0), dtype=np.float64), (n,))
            init = np.asarray(init, dtype=np.float64).reshape(-1)[:n]
            if np.all(hi > lo) and (np.any(init < lo) or np.any(init > hi)):
                raise ParameterError(
                    f"{who}: no init given, and the scene's current value {init.round(6).tolist()} lies outside "
                    f"the bounds [{d.get('low', 0.0)}, {d.get('high', 1.0)}]; give `init` or widen the bounds")
            d["init"] = float(init[0]) if not shape else init.tolist()
        d.setdefault("description", f"{kind} {target}" + (f" ({b.axes})" if kind in ("translate", "position", "scale") else ""))
        try:
            b.param = Param(shape=shape, **d)
        except TypeError as e:
            raise ConfigError(f"{who}: {e}") from None
        except ParameterError as e:
            raise ParameterError(f"mitsuba renderer: {e}") from None
        if b.param.discrete and kind != "key":
            raise ConfigError(f"{who}: transforms take continuous parameters")
        return b

    def _inspect_key(self, b: Binding, who: str) -> tuple[int, np.ndarray]:
        mi, dr = self.mi, self.dr
        value = self.params[b.target]
        tname = type(value).__name__
        if isinstance(value, bool) or not (isinstance(value, (int, float)) or dr.is_array_v(value)):
            raise ConfigError(f"{who}: scene key {b.target!r} holds a {tname}, which cannot be optimized directly"
                              + ("; declare translate / rotate / scale / position on the object instead"
                                 if "Transform" in tname else ""))
        if isinstance(value, (int, float)):
            b.value_kind, b.value_shape = "python", ()
            arr = np.array([float(value)])
        elif dr.is_tensor_v(value):
            b.value_kind, b.value_shape = "tensor", tuple(int(s) for s in value.shape)
            arr = np.array(value, dtype=np.float64).reshape(-1)
        elif dr.depth_v(value) == 1:
            arr = np.array(value, dtype=np.float64).reshape(-1)
            b.value_kind, b.value_shape = "float", (() if arr.size == 1 else (arr.size,))
        elif dr.depth_v(value) == 2 and len(value) == 3 and dr.width(value) == 1:
            b.value_kind, b.value_shape = "vec3:" + tname, (3,)
            arr = np.array(value, dtype=np.float64).reshape(-1)
        else:
            raise ConfigError(f"{who}: scene key {b.target!r} holds a {tname} of width {dr.width(value)}, "
                              "which this renderer cannot bind")
        if dr.is_array_v(value) and not dr.is_diff_v(value) and b.value_kind != "python":
            b.extra["nondiff"] = True
        b.initial = arr.copy()
        if b.multiply:
            return arr.size, np.ones(arr.size)
        return arr.size, arr

    # -- queries ---------------------------------------------------------------------------------
    def light_parameters(self) -> list[str]:
        return [b.param.name for b in self.bindings
                if b.kind == "key" and any(b.target.endswith(s) for s in LIGHT_SUFFIXES)]

    def nondifferentiable(self) -> list[str]:
        """Parameters whose scene value Mitsuba does not differentiate: IOR, integers, Python
        floats, and the position of a point emitter (Mitsuba traverses it as NonDifferentiable,
        so an analytic gradient with respect to it is exactly zero)."""
        def dropped(key: str) -> bool:
            return bool(int(self.params.flags(key)) & 1) if hasattr(self.params, "flags") else False

        out = []
        for b in self.bindings:
            if b.kind == "key":
                if b.value_kind == "python" or b.extra.get("nondiff") or dropped(b.target):
                    out.append(b.param.name)
            elif self.objects[b.target].mode == "point" and dropped(self.objects[b.target].key):
                out.append(b.param.name)
        return out

    # -- applying θ ------------------------------------------------------------------------------
    def apply(self, x: Any, values: np.ndarray) -> None:
        """Write one θ row into the scene: ``x`` a drjit Float [n] (may carry gradients), ``values``
        the same numbers as numpy (for the scene values Mitsuba keeps as plain Python numbers)."""
        mi, dr = self.mi, self.dr
        params = self.params

        def coord(i: int) -> Any:
            return dr.gather(mi.Float, x, i)

        for b in self.bindings:
            if b.kind != "key":
                continue
            n = b.stop - b.start
            if b.value_kind == "python":
                v = float(values[b.start])
                params[b.target] = v * float(b.initial[0]) if b.multiply else v
                continue
            full = b.initial.size
            if b.value_kind == "vec3" or b.value_kind.startswith("vec3:"):
                comps = [coord(b.start + (i if n == full else 0)) for i in range(3)]
                if b.multiply:
                    comps = [c * float(b.initial[i]) for i, c in enumerate(comps)]
                cls = getattr(mi, b.value_kind.split(":", 1)[1])
                params[b.target] = cls(*comps)
            else:
                idx = dr.arange(mi.UInt32, full) if n == full else dr.zeros(mi.UInt32, full)
                flat = dr.gather(mi.Float, x, idx + b.start)
                if b.multiply:
                    flat = flat * mi.Float(b.initial.astype(np.float32))
                params[b.target] = mi.TensorXf(flat, b.value_shape) if b.value_kind == "tensor" else flat
        for oid, bs in self._by_object.items():
            obj = self.objects[oid]
            t = [mi.Float(0.0), mi.Float(0.0), mi.Float(0.0)]
            s = [mi.Float(1.0), mi.Float(1.0), mi.Float(1.0)]
            rot = mi.Transform4f()
            for b in bs:
                if b.kind == "rotate":
                    rot = mi.Transform4f().rotate(mi.Vector3f(*b.axis), coord(b.start)) @ rot
                    continue
                for j, a in enumerate(axes_indices(b.axes, "")):
                    c = coord(b.start + j)
                    if b.kind == "translate":
                        t[a] = t[a] + c
                    elif b.kind == "position":
                        t[a] = t[a] + c - float(obj.center[a])
                    else:
                        s[a] = s[a] * c
            if obj.mode == "point":
                params[obj.key] = mi.Point3f(*(t[a] + float(obj.center[a]) for a in range(3)))
                continue
            c = [float(v) for v in obj.center]
            m = (mi.Transform4f().translate(mi.Vector3f(t[0] + c[0], t[1] + c[1], t[2] + c[2])) @ rot
                 @ mi.Transform4f().scale(mi.Vector3f(*s)) @ mi.Transform4f().translate(mi.Vector3f(-c[0], -c[1], -c[2])))
            if obj.mode == "to_world":
                params[obj.key] = m @ mi.Transform4f(obj.initial.matrix)
            else:
                params[obj.key] = dr.ravel(m @ obj.initial)


def describe_scene_keys(params: Any, limit: int | None = None) -> list[str]:
    keys = list(params.keys())
    return keys if limit is None else keys[:limit]


def declaration_fields() -> Sequence[str]:
    return PARAM_FIELDS + TARGETS + OPTIONS
