"""Mitsuba 3 scenes for the PRDPT task suite, built from scratch as Python dicts (no assets).

Each builder returns a scene dict for ``mi.load_dict`` and is referenced from a run file as
``scene = "examples/mitsuba/scenes.py:<builder>"``; :data:`TASKS` pairs each builder with the
parameters it declares, where the optimization starts and the target it must recover.

Transforms are written as tables (``{"translate": [...], "scale": ...}``), which the renderer
turns into Mitsuba transforms, so the same dicts could come from a TOML file.

The tasks, after Fischer & Ritschel, "Plateau-reduced differentiable path tracing" (CVPR 2023):

* ``shadow``: a sphere outside the view casts a shadow on a plane; recover its position.
* ``sphere_shadow``: the reference "sphere shadow" task: (y, z) of the occluder, 256×192.
* ``occlusion``: a sphere behind an occluder moves along the view axis.
* ``caustic``: a light behind a glass sphere; match the caustic on the floor.
* ``caustic_sharp``: the same with a lamp of radius 0.2 (same power): a sharp, rarely-sampled caustic.
* ``ior``: a dielectric's index of refraction (Mitsuba does not differentiate it).
* ``gi``: a light position and a wall colour seen only through indirect light.
"""

from __future__ import annotations

from typing import Any


def _diffuse(rgb: list[float]) -> dict[str, Any]:
    return {"type": "diffuse", "reflectance": {"type": "rgb", "value": rgb}}


def _checker(a: float = 0.25, b: float = 0.75, scale: float = 8.0) -> dict[str, Any]:
    return {"type": "diffuse", "reflectance": {
        "type": "checkerboard", "color0": {"type": "rgb", "value": [a, a, a]},
        "color1": {"type": "rgb", "value": [b, b, b]}, "to_uv": {"scale": [scale, scale, 1.0]}}}


def _camera(origin: list[float], target: list[float], fov: float = 40.0, up: list[float] = (0, 1, 0),
            height: int = 48, width: int = 64, rfilter: str = "box") -> dict[str, Any]:
    """A perspective camera. The box reconstruction filter puts each sample in one pixel; Mitsuba's
    default Gaussian splats it over a 4×4 neighbourhood with atomic adds, which costs ~1.7× the
    render time on the CPU for the same samples."""
    return {"type": "perspective", "fov": fov, "fov_axis": "x",
            "to_world": {"look_at": {"origin": list(origin), "target": list(target), "up": list(up)}},
            "film": {"type": "hdrfilm", "width": width, "height": height, "rfilter": {"type": rfilter},
                     "pixel_format": "rgb"}}


def shadow(max_depth: int = 6, rfilter: str = "box") -> dict[str, Any]:
    """The reference "sphere shadow" layout: a camera on the +x axis looks at a checkered wall
    (the plane x = 0); a point light high behind the camera and a sphere between the light and
    the wall, above the view, whose shadow is the only visible trace of it."""
    return {
        "type": "scene",
        "integrator": {"type": "path", "max_depth": max_depth},
        "sensor": _camera([17.66, 0.0, 0.0], [0.0, 0.0, 0.0], fov=39.6, rfilter=rfilter),
        "sky": {"type": "constant", "radiance": {"type": "rgb", "value": [0.3, 0.3, 0.5]}},
        "sun": {"type": "point", "position": [26.0, 13.8, 0.0], "intensity": {"type": "rgb", "value": [1715.0] * 3}},
        "wall": {"type": "rectangle", "to_world": [{"rotate": {"axis": [0, 1, 0], "angle": 90}}, {"scale": [12.0, 12.0, 1.0]}],
                 "bsdf": _checker(0.2, 0.6, 12.0)},
        "occluder": {"type": "sphere", "center": [9.0, 4.8, 0.0], "radius": 0.8,
                     "bsdf": _diffuse([0.8, 0.26, 0.04])},
    }


def occlusion(max_depth: int = 4) -> dict[str, Any]:
    """A red sphere hidden behind a blue one moves along the view axis; a mirror-like floor shows
    a little of it, the rest is a plateau until it comes out in front."""
    return {
        "type": "scene",
        "integrator": {"type": "path", "max_depth": max_depth},
        "sensor": _camera([0.0, 1.0, 8.0], [0.0, 0.8, 0.0], fov=35.0),
        "light": {"type": "rectangle", "to_world": [{"translate": [0.0, 5.0, 2.0]}, {"rotate": {"axis": [1, 0, 0], "angle": 90}},
                                                  {"scale": 1.5}],
                  "emitter": {"type": "area", "radiance": {"type": "rgb", "value": [6.0, 6.0, 6.0]}}},
        "sky": {"type": "constant", "radiance": {"type": "rgb", "value": [0.2, 0.2, 0.2]}},
        "floor": {"type": "rectangle", "to_world": [{"rotate": {"axis": [1, 0, 0], "angle": -90}}, {"scale": 10.0}],
                  "bsdf": {"type": "roughconductor", "alpha": 0.15, "material": "Al"}},
        "blocker": {"type": "sphere", "center": [0.0, 0.8, 2.0], "radius": 0.8, "bsdf": _diffuse([0.1, 0.2, 0.8])},
        "target": {"type": "sphere", "center": [0.0, 0.6, 0.0], "radius": 0.6, "bsdf": _diffuse([0.8, 0.1, 0.1])},
    }


def caustic(max_depth: int = 6, lamp_radius: float = 1.0) -> dict[str, Any]:
    """A bright light out of view behind a glass sphere focuses a caustic on the floor; the
    sphere looks the same wherever the light is, so only the caustic tells where it is.

    ``lamp_radius`` sets how sharp the caustic is; the radiance scales with 1/r² so the lamp's
    power stays the same. A path tracer finds the caustic only by paths that leave the floor,
    refract through the glass and hit the lamp, so a small lamp makes it rare, noisy samples:
    the default (1.0) is soft enough to converge at 16 spp, the ``caustic_sharp`` task uses 0.2.
    """
    if not lamp_radius > 0:
        raise ValueError(f"lamp_radius must be > 0, got {lamp_radius!r}")
    radiance = 12.0 / lamp_radius ** 2
    return {
        "type": "scene",
        "integrator": {"type": "path", "max_depth": max_depth},
        "sensor": _camera([0.0, 5.0, 5.0], [0.0, 0.0, 0.0], fov=45.0),
        "sky": {"type": "constant", "radiance": {"type": "rgb", "value": [0.05, 0.05, 0.05]}},
        "lamp": {"type": "sphere", "center": [0.0, 3.5, -3.5], "radius": float(lamp_radius),
                 "emitter": {"type": "area", "radiance": {"type": "rgb", "value": [radiance] * 3}}},
        "floor": {"type": "rectangle", "to_world": [{"rotate": {"axis": [1, 0, 0], "angle": -90}}, {"scale": 8.0}],
                  "bsdf": _diffuse([0.7, 0.7, 0.7])},
        "glass": {"type": "sphere", "center": [0.0, 1.0, 0.0], "radius": 0.7,
                  "bsdf": {"type": "dielectric", "int_ior": 1.5}},
    }


def ior(max_depth: int = 8) -> dict[str, Any]:
    """A glass sphere over a checkerboard: the index of refraction bends the checks seen through
    it. Mitsuba treats the IOR as non-differentiable."""
    return {
        "type": "scene",
        "integrator": {"type": "path", "max_depth": max_depth},
        "sensor": _camera([0.0, 2.5, 4.0], [0.0, 0.6, 0.0], fov=35.0),
        "sky": {"type": "constant", "radiance": {"type": "rgb", "value": [0.8, 0.8, 0.8]}},
        "floor": {"type": "rectangle", "to_world": [{"rotate": {"axis": [1, 0, 0], "angle": -90}}, {"scale": 6.0}],
                  "bsdf": _checker(0.1, 0.9, 12.0)},
        "glass": {"type": "sphere", "center": [0.0, 0.7, 0.0], "radius": 0.7,
                  "bsdf": {"type": "dielectric", "int_ior": 1.5}},
    }


def gi(max_depth: int = 5) -> dict[str, Any]:
    """A light out of view faces a coloured wall; the camera sees only floor and a box behind
    the light's emitting side, lit solely by what bounces off the wall. Where the light is and
    what colour the wall has reach the image only as indirect light."""
    return {
        "type": "scene",
        "integrator": {"type": "path", "max_depth": max_depth},
        "sensor": _camera([4.0, 2.0, 0.0], [2.0, 0.0, 0.0], fov=40.0),
        "light": {"type": "rectangle",
                  "to_world": [{"translate": [0.3, 1.2, 0.0]}, {"rotate": {"axis": [0, 1, 0], "angle": -90}}, {"scale": 0.4}],
                  "emitter": {"type": "area", "radiance": {"type": "rgb", "value": [150.0, 150.0, 150.0]}}},
        "floor": {"type": "rectangle", "to_world": [{"rotate": {"axis": [1, 0, 0], "angle": -90}}, {"scale": 4.0}],
                  "bsdf": _diffuse([0.75, 0.75, 0.75])},
        "wall": {"type": "rectangle",
                 "to_world": [{"translate": [-1.5, 1.5, 0.0]}, {"rotate": {"axis": [0, 1, 0], "angle": 90}}, {"scale": [3.0, 1.5, 1.0]}],
                 "bsdf": _diffuse([0.8, 0.2, 0.1])},
        "box": {"type": "cube", "to_world": [{"translate": [1.5, 0.3, 0.5]}, {"scale": 0.3}],
                "bsdf": _diffuse([0.8, 0.8, 0.8])},
    }


# Each task: the builder, the renderer's `params` declarations, the start (init) and the target.
TASKS: dict[str, dict[str, Any]] = {
    "shadow": {
        "scene": "shadow",
        "params": [{"name": "occluder", "translate": "occluder", "axes": "yz",
                    "low": [-3.0, -1.0], "high": [1.0, 3.0], "init": [0.0, 0.0]}],
        "init": {"occluder": [-0.5, 2.5]}, "target": {"occluder": [-1.5, 1.0]},
    },
    "sphere_shadow": {
        "scene": "shadow",
        "params": [{"name": "occluder", "translate": "occluder", "axes": "yz",
                    "low": [-3.0, -1.0], "high": [1.0, 3.0], "init": [0.0, 0.0]}],
        "init": {"occluder": [-0.5, 2.5]}, "target": {"occluder": [-1.5, 1.0]},
    },
    "occlusion": {
        "scene": "occlusion",
        "params": [{"name": "depth", "translate": "target", "axes": "z", "low": -2.0, "high": 3.5, "init": 0.0}],
        "init": {"depth": -1.5}, "target": {"depth": 3.0},
    },
    "caustic": {
        "scene": "caustic",
        "params": [{"name": "lamp", "position": "lamp", "axes": "xz", "low": [-2.0, -5.5], "high": [2.0, -1.5]}],
        "init": {"lamp": [-1.4, -4.5]}, "target": {"lamp": [0.8, -2.5]},
    },
    "caustic_sharp": {
        "scene": "caustic", "scene_args": {"lamp_radius": 0.2},
        "params": [{"name": "lamp", "position": "lamp", "axes": "xz", "low": [-2.0, -5.5], "high": [2.0, -1.5]}],
        "init": {"lamp": [-1.4, -4.5]}, "target": {"lamp": [0.8, -2.5]},
    },
    "ior": {
        "scene": "ior",
        "params": [{"name": "ior", "key": "glass.bsdf.eta", "low": 1.05, "high": 2.4}],
        "init": {"ior": 1.2}, "target": {"ior": 1.8},
    },
    "gi": {
        "scene": "gi",
        "params": [{"name": "light_z", "translate": "light", "axes": "z", "low": -2.0, "high": 2.0, "init": 0.0},
                   {"name": "wall", "key": "wall.bsdf.reflectance.value", "low": 0.0, "high": 1.0}],
        "init": {"light_z": 1.5, "wall": [0.2, 0.6, 0.8]}, "target": {"light_z": -1.0, "wall": [0.8, 0.2, 0.1]},
    },
}


def task(name: str) -> dict[str, Any]:
    """A copy of one :data:`TASKS` entry with the scene builder resolved to a dict."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
    t = {k: (list(v) if isinstance(v, list) else v) for k, v in TASKS[name].items()}
    t["scene_dict"] = globals()[t["scene"]](**t.get("scene_args", {}))
    return t
