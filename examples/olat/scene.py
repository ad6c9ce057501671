"""A small Mitsuba scene with three coloured point lights and one emissive ball.

Used by ``capture.toml`` (``rendergrad olat capture --config``) and the OLAT tests. The glowing
ball is not a declared light, so it ends up in the basis' ``base`` image.
"""


def three_lights(width: int = 64, height: int = 48, spp: int = 16, max_depth: int = 3) -> dict:
    return {
        "type": "scene",
        "integrator": {"type": "path", "max_depth": max_depth},
        "sensor": {"type": "perspective", "fov": 45,
                   "to_world": {"look_at": {"origin": [0, 1.2, 4], "target": [0, 0.3, 0], "up": [0, 1, 0]}},
                   "film": {"type": "hdrfilm", "width": width, "height": height, "rfilter": {"type": "box"}},
                   "sampler": {"type": "independent", "sample_count": spp}},
        "floor": {"type": "rectangle", "to_world": {"rotate": {"axis": [1, 0, 0], "angle": -90}, "scale": 3},
                  "bsdf": {"type": "diffuse", "reflectance": {"type": "rgb", "value": [0.6, 0.6, 0.6]}}},
        "ball": {"type": "sphere", "center": [0, 0.5, 0], "radius": 0.5,
                 "bsdf": {"type": "diffuse", "reflectance": {"type": "rgb", "value": [0.7, 0.5, 0.3]}}},
        "glow": {"type": "sphere", "center": [1.2, 0.15, 0.6], "radius": 0.15,
                 "emitter": {"type": "area", "radiance": {"type": "rgb", "value": [0.3, 0.6, 1.0]}}},
        "key": {"type": "point", "position": [2, 3, 2], "intensity": {"type": "rgb", "value": [12, 11, 10]}},
        "fill": {"type": "point", "position": [-3, 2, 1], "intensity": {"type": "rgb", "value": [3, 4, 6]}},
        "rim": {"type": "point", "position": [0, 2, -2.5], "intensity": {"type": "rgb", "value": [8, 6, 3]}},
    }
