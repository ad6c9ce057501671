"""The Blender bridge server: a scene, its declared parameters, Cycles/Eevee/Workbench renders.

Runs in its own process, because ``bpy`` can be imported once per process:

    python -m rendergrad.renderers.blender.server --options-file scene.json --endpoint ipc:///tmp/b.sock
    blender -b --factory-startup --python <this file> -- --options-file scene.json   # a Blender install

It loads a ``.blend`` file or builds the scene with a Python script (the user's own file,
named on this server's command line; nothing from the wire is ever executed), exposes only
the parameters declared in ``params`` (validated at start: each path must resolve, be
writable, and its bounds must fit the property's limits), and returns linear float32 images,
read back from EXR files in a private folder under /dev/shm that is removed on exit.
"""

from __future__ import annotations

import math
import os
import runpy
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

if __package__ in (None, ""):  # run as a file by Blender's --python: make rendergrad importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rendergrad.errors import ConfigError, ParameterError  # noqa: E402
from rendergrad.imageio import read_exr_layers  # noqa: E402
from rendergrad.resolution import parse_resolution  # noqa: E402
from rendergrad.renderers.bridge.server import Server  # noqa: E402

from rendergrad.renderers.blender.paths import Binding, PathError, resolve  # noqa: E402

ENGINES = {"cycles": "CYCLES", "eevee": "BLENDER_EEVEE", "workbench": "BLENDER_WORKBENCH"}
PARAM_KEYS = {"name", "path", "low", "high", "init", "kind", "log", "shape", "light", "sigma_scale", "description"}


class BlenderServer(Server):
    """Serve a Blender scene. Options are the ``blender`` renderer's scene options."""

    name = "blender"

    def __init__(self, scene: str | None = None, params: Sequence[dict[str, Any]] = (), engine: str = "cycles",
                 resolution: int | Sequence[int] = 64, samples: int = 16, denoise: bool = False,
                 threads: int | None = None, channels: int = 3, max_bounces: int | None = None,
                 persistent_data: bool = False, scratch: str | None = None):
        import bpy  # noqa: PLC0415 - only inside the server process
        self.bpy = bpy
        if engine.lower() not in ENGINES:
            raise ConfigError(f"blender: engine {engine!r} is not one of {', '.join(ENGINES)}")
        if channels not in (3, 4):
            raise ConfigError("blender: channels must be 3 (RGB) or 4 (RGBA)")
        h, w = parse_resolution(resolution, "blender")
        if not params:
            raise ConfigError("blender: declare at least one parameter, e.g. params = [{name = \"z\", "
                              "path = 'objects[\"Sphere\"].location[2]', low = 0, high = 2}]")
        self._load_scene(scene)
        sc = bpy.context.scene
        if sc.camera is None:
            raise ConfigError("blender: the scene has no active camera (scene.camera); add one in the scene")
        sc.render.engine = ENGINES[engine.lower()]
        sc.render.resolution_x, sc.render.resolution_y = w, h
        sc.render.resolution_percentage = 100
        # Persistent data renders ~2x faster but Cycles then ignores seed changes; per-render
        # seeds (independent noise, reproducible runs) win by default.
        sc.render.use_persistent_data = bool(persistent_data)
        self.persistent_data = bool(persistent_data)
        if threads:
            sc.render.threads_mode, sc.render.threads = "FIXED", int(threads)
        if sc.render.engine == "CYCLES":
            sc.cycles.device = "CPU"
            sc.cycles.samples = int(samples)
            sc.cycles.use_denoising = bool(denoise)
            sc.cycles.use_adaptive_sampling = False
            if max_bounces is not None:
                sc.cycles.max_bounces = int(max_bounces)
        elif sc.render.engine == "BLENDER_EEVEE":
            sc.eevee.taa_render_samples = int(samples)
        settings = sc.render.image_settings
        settings.file_format = "OPEN_EXR"
        settings.color_depth = "32"
        settings.color_mode = "RGBA"
        settings.exr_codec = "NONE"
        self.channels = channels
        self.size = (h, w)
        self._declare(params)
        # Created last, so a declaration error leaves nothing behind; removed by close().
        # `scratch`: a folder owned by the client that launched this worker, which removes it
        # even when this process is killed before it can clean up.
        base = scratch if scratch and os.path.isdir(scratch) else ("/dev/shm" if os.path.isdir("/dev/shm") else None)
        self._tmp = tempfile.mkdtemp(prefix="rendergrad-blender-", dir=base)
        self._out = os.path.join(self._tmp, "frame.exr")
        sc.render.filepath = self._out

    # -- scene and parameters --------------------------------------------------------------------
    def _load_scene(self, scene: str | None) -> None:
        bpy = self.bpy
        if scene is None:
            raise ConfigError("blender: `scene` must name a .blend file or a Python script that builds the scene")
        path = Path(scene).expanduser()
        if not path.is_file():
            raise ConfigError(f"blender: scene file {str(path)!r} does not exist")
        if path.suffix == ".blend":
            bpy.ops.wm.open_mainfile(filepath=str(path.resolve()))
        elif path.suffix == ".py":
            bpy.ops.wm.read_factory_settings(use_empty=True)
            runpy.run_path(str(path), run_name="__main__")
        else:
            raise ConfigError(f"blender: scene {str(path)!r} must be a .blend file or a .py script")

    def _declare(self, params: Sequence[dict[str, Any]]) -> None:
        from rendergrad import Param
        self.bindings: list[tuple[Param, list[Binding]]] = []
        self.lights: list[str] = []
        seen = set()
        for i, raw in enumerate(params):
            if not isinstance(raw, dict):
                raise ConfigError(f"blender: params[{i}] must be a table with name and path")
            unknown = sorted(set(raw) - PARAM_KEYS)
            if unknown:
                raise ConfigError(f"blender: params[{i}] has unknown key(s) {unknown}; valid keys: "
                                  f"{', '.join(sorted(PARAM_KEYS))}")
            name, path = raw.get("name"), raw.get("path")
            if not isinstance(name, str) or not name:
                raise ConfigError(f"blender: params[{i}] needs a `name`")
            if name in seen:
                raise ParameterError(f"blender: parameter {name!r} is declared twice")
            seen.add(name)
            try:
                binding = resolve(path, self.bpy)
            except PathError as e:
                raise ParameterError(f"blender: parameter {name!r}: {e}") from None
            shape = tuple(raw.get("shape") or ())
            current = binding.get()
            if shape:
                if len(shape) != 1:
                    raise ParameterError(f"blender: parameter {name!r}: only 1-D vector shapes are supported")
                try:
                    length = len(current)
                except TypeError:
                    raise ParameterError(f"blender: parameter {name!r}: {path} is a single value; drop `shape`") \
                        from None
                if shape[0] > length:
                    raise ParameterError(f"blender: parameter {name!r}: shape {list(shape)} is longer than "
                                         f"{path} ({length} values)")
                values = [current[j] for j in range(shape[0])]
            else:
                if not isinstance(current, (int, float)):
                    raise ParameterError(f"blender: parameter {name!r}: {path} is {type(current).__name__}, not a "
                                         "number; index into it (e.g. location[2]) or give shape = [3]")
                values = [current]
            is_int = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
            kind = raw.get("kind", "integer" if is_int else "continuous")
            if is_int and kind != "integer":
                raise ParameterError(f"blender: parameter {name!r}: {path} is an integer property; declare "
                                     "kind = \"integer\"")
            init = raw.get("init")
            if init is None:  # default: the scene's own value
                init = values if shape else values[0]
            kw = {k: raw[k] for k in ("low", "high", "log", "sigma_scale", "description") if k in raw}
            try:
                param = Param(name=name, kind=kind, shape=shape, init=init, **kw)
            except ParameterError as e:
                raise ParameterError(f"blender: {e} (the scene's current value of {path} is {values})") from None
            self._check_limits(param, binding, path)
            self.bindings.append((param, [binding]))
            if raw.get("light", _is_light_energy(binding, self.bpy)):
                self.lights.append(name)
            try:
                self._apply(param, binding, param.initial().numpy())
            except (AttributeError, TypeError, ValueError) as e:
                raise ParameterError(f"blender: parameter {name!r}: {path} cannot be written: {e}") from None

    def _check_limits(self, param: Any, binding: Binding, path: str) -> None:
        prop = binding.rna()
        if prop is None or not hasattr(prop, "hard_min"):
            return
        lo, hi = param.bounds()
        if float(lo.min()) < prop.hard_min - 1e-9 or float(hi.max()) > prop.hard_max + 1e-9:
            raise ParameterError(f"blender: parameter {param.name!r}: bounds [{float(lo.min()):g}, {float(hi.max()):g}] "
                                 f"exceed what {path} accepts [{prop.hard_min:g}, {prop.hard_max:g}]")

    @staticmethod
    def _apply(param: Any, binding: Binding, values: np.ndarray) -> None:
        conv = int if param.kind == "integer" else float
        if param.shape:
            target = binding.get()
            for j, v in enumerate(values):
                target[j] = conv(round(v)) if conv is int else conv(v)
        else:
            v = float(values[0])
            binding.set(int(round(v)) if conv is int else v)

    # -- the Server contract --------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        from rendergrad import ParamSpace
        h, w = self.size
        return {"name": f"blender:{Path(self.bpy.data.filepath).name or 'scene'}",
                "params": ParamSpace([p for p, _ in self.bindings]),
                "image": {"height": h, "width": w, "channels": self.channels},
                "light_parameters": list(self.lights)}

    def render(self, params: np.ndarray, seeds: list[int] | None = None) -> np.ndarray:
        bpy = self.bpy
        sc = bpy.context.scene
        h, w = self.size
        out = np.empty((params.shape[0], h, w, self.channels), dtype=np.float32)
        for i, row in enumerate(params):
            col = 0
            for param, (binding,) in self.bindings:
                self._apply(param, binding, row[col:col + param.size])
                col += param.size
            if seeds is not None and sc.render.engine == "CYCLES" and not self.persistent_data:
                sc.cycles.seed = int(seeds[i])
            try:
                bpy.ops.render.render(write_still=True)
                img = read_exr_layers(self._out)[""]  # the one EXR reader
            finally:
                try:
                    os.unlink(self._out)
                except FileNotFoundError:
                    pass
            out[i] = img[..., :self.channels]
        return out

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)


def _is_light_energy(binding: Binding, bpy: Any) -> bool:
    return binding.last == ("attr", "energy") and isinstance(binding.owner, bpy.types.Light)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    from rendergrad.renderers.bridge import serve
    return serve.main(["blender", *argv])


if __name__ == "__main__":
    sys.exit(main())
