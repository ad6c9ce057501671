"""Scene sources: a Mitsuba XML file, a Python dict, or a builder function that returns a dict.

Why three: XML is what exporters write; a dict is how Mitsuba scenes are built in Python; and a
TOML run file can name neither a dict with transforms nor Python objects, so it names a builder
(``"scenes.py:shadow"``) instead. Dicts coming from TOML may spell transforms as tables
(``to_world = { translate = [0, 1, 0], scale = 0.5 }``); they are turned into Mitsuba
transforms here.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from rendergrad.errors import ConfigError

TRANSFORM_OPS = ("translate", "rotate", "scale", "look_at", "matrix")


def _transform_from_table(mi: Any, spec: Any, where: str) -> Any:
    """``{translate, rotate = {axis, angle}, scale, look_at = {origin, target, up}, matrix}`` or a
    list of such tables (applied left to right, i.e. the first is outermost) → ``ScalarTransform4f``."""
    ops = spec if isinstance(spec, list) else [spec]
    t = mi.ScalarTransform4f()
    for op in ops:
        if not isinstance(op, Mapping):
            raise ConfigError(f"{where}: a transform table must map operations to values, got {op!r}")
        unknown = sorted(set(op) - set(TRANSFORM_OPS))
        if unknown:
            raise ConfigError(f"{where}: unknown transform operation(s) {unknown}; use {', '.join(TRANSFORM_OPS)}")
        for name in TRANSFORM_OPS:  # fixed order inside one table: T · look_at · R · S
            if name not in op:
                continue
            v = op[name]
            try:
                if name == "translate":
                    t = t.translate(mi.ScalarVector3f(v))
                elif name == "rotate":
                    t = t.rotate(mi.ScalarVector3f(v.get("axis", [0, 1, 0])), float(v["angle"]))
                elif name == "scale":
                    t = t.scale(mi.ScalarVector3f(v) if isinstance(v, (list, tuple)) else float(v))
                elif name == "look_at":
                    t = t.look_at(origin=v["origin"], target=v["target"], up=v.get("up", [0, 1, 0]))
                else:
                    t = t @ mi.ScalarTransform4f(v)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise ConfigError(f"{where}: bad {name} value {v!r}: {e}") from None
    return t


def convert_tables(mi: Any, node: Any, where: str = "scene") -> Any:
    """Recursively turn table-spelled ``to_world`` / ``to_uv`` entries of a scene dict into transforms."""
    if not isinstance(node, Mapping):
        return node
    out = {}
    for k, v in node.items():
        if k in ("to_world", "to_uv") and (isinstance(v, list) or (isinstance(v, Mapping) and "type" not in v)):
            out[k] = _transform_from_table(mi, v, f"{where}.{k}")
        elif isinstance(v, Mapping):
            out[k] = convert_tables(mi, v, f"{where}.{k}")
        else:
            out[k] = v
    return out


def _resolve_path(text: str) -> Path:
    p = Path(os.path.expanduser(text))
    if not p.exists():
        raise ConfigError(f"mitsuba renderer: scene file {text!r} not found (relative paths are relative to "
                          f"the working directory, {os.getcwd()})")
    return p


def load_builder(ref: str) -> Callable[..., Any]:
    """``"path/to/file.py:function"`` or ``"package.module:function"`` → the function."""
    module_ref, _, func = ref.rpartition(":")
    if not module_ref or not func:
        raise ConfigError(f"mitsuba renderer: scene {ref!r} is not a file (.xml) or a builder "
                          "'file.py:function' / 'package.module:function'")
    if module_ref.endswith(".py"):
        path = _resolve_path(module_ref).resolve()
        name = f"rendergrad_scene_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_ref)
        except ImportError as e:
            raise ConfigError(f"mitsuba renderer: cannot import scene builder module {module_ref!r}: {e}") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        names = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise ConfigError(f"mitsuba renderer: {module_ref} has no function {func!r}; it has: {', '.join(names)}")
    return fn


def scene_dict_or_file(scene: Any, scene_args: Mapping[str, Any] | None) -> Any:
    """Normalise the ``scene`` option to a dict, an XML path, or an already-loaded scene."""
    args = dict(scene_args or {})
    if isinstance(scene, Mapping):
        if args:
            raise ConfigError("mitsuba renderer: scene_args only apply to a builder function, not to a dict")
        return dict(scene)
    if callable(scene):
        return scene(**args)
    if isinstance(scene, (str, os.PathLike)):
        text = str(scene)
        if text.lower().endswith(".xml"):
            return _resolve_path(text)
        try:
            return load_builder(text)(**args)
        except TypeError as e:
            raise ConfigError(f"mitsuba renderer: scene builder {text!r} rejected scene_args {args}: {e}") from None
    if hasattr(scene, "shapes") and hasattr(scene, "sensors"):
        return scene  # an already loaded mi.Scene
    raise ConfigError("mitsuba renderer: scene must be an XML path, a dict, a builder 'file.py:function', "
                      f"or a mitsuba Scene; got {type(scene).__name__}")


def patch_dict(d: dict[str, Any], *, resolution: tuple[int, int] | None) -> dict[str, Any]:
    """Set the film size of a dict scene's sensor before loading (height, width)."""
    if resolution is None:
        return d
    for v in d.values():
        if isinstance(v, Mapping) and v.get("type") in ("perspective", "thinlens", "orthographic", "radiancemeter",
                                                          "irradiancemeter", "batch"):
            film = dict(v.get("film", {"type": "hdrfilm"}))
            film["height"], film["width"] = int(resolution[0]), int(resolution[1])
            v["film"] = film  # type: ignore[index]
    return d


def load_scene(mi: Any, source: Any, *, resolution: tuple[int, int] | None,
               xml_defaults: Mapping[str, Any] | None) -> Any:
    """Load the scene from what :func:`scene_dict_or_file` returned."""
    if isinstance(source, Path):
        defaults = {k: str(v) for k, v in (xml_defaults or {}).items()}
        try:
            return mi.load_file(str(source), **defaults)
        except Exception as e:
            raise ConfigError(f"mitsuba renderer: cannot load {source}: {e}") from None
    if isinstance(source, Mapping):
        d = convert_tables(mi, dict(source))
        d.setdefault("type", "scene")
        d = patch_dict({k: (dict(v) if isinstance(v, Mapping) else v) for k, v in d.items()}, resolution=resolution)
        try:
            return mi.load_dict(d)
        except Exception as e:
            raise ConfigError(f"mitsuba renderer: cannot load the scene dict: {e}") from None
    return source
