"""rendergrad OLAT: capture a one-light-at-a-time basis in Blender and apply optimized multipliers.

A Blender add-on (``rendergrad olat addon --out rendergrad_olat.zip`` writes the installable
zip). It lives in Render properties → *rendergrad OLAT* and has two operators, both callable
from Python so scripts and tests drive them the same way the panel does:

* ``bpy.ops.rendergrad.olat_capture(directory=..., selected_only=False)`` renders, with the
  scene's own render settings, the scene with every captured light hidden (``base.exr``: the
  world, emissive materials, lights left out), each light alone minus that base
  (``light_NNN_<name>.exr``), everything on (``full.exr``), and writes ``olat.json`` in the
  format rendergrad's ``olat`` renderer reads, with each light's object, energy and colour
  as captured and the linearity check ``|full - (base + Σ I_i)| / |full|``.
* ``bpy.ops.rendergrad.olat_apply(filepath=..., basis=...)`` sets each light's energy and
  colour from a ``multipliers.json`` (written by ``rendergrad olat optimize`` or ``solve``)
  as one undoable step. Values are computed from the energies and colours recorded at
  capture, so applying twice (or another candidate after the first) does not compound.

The add-on needs only Blender (its bundled numpy); rendergrad itself does not have to be
installed in Blender's Python.
"""

import json
import math
import os
import re
import tempfile

import bpy
import numpy as np
from bpy.props import BoolProperty, IntProperty, PointerProperty, StringProperty

bl_info = {
    "name": "rendergrad OLAT",
    "author": "rendergrad",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "Properties > Render > rendergrad OLAT",
    "description": "Capture a one-light-at-a-time basis for rendergrad and apply optimized light multipliers",
    "category": "Render",
}

FORMAT = "rendergrad-olat"
META_NAME = "olat.json"
_SAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


class OlatError(Exception):
    """A capture or apply that cannot proceed; the message says what to change."""


# -- capture ------------------------------------------------------------------------------------
def safe_name(name: str) -> str:
    """An object name as a basis light name (letters, digits, ``_ - .``), as rendergrad requires."""
    return _SAFE.sub("_", name).strip("_") or "light"


def scene_lights(context, selected_only: bool = False) -> list:
    """The light objects a capture renders: visible to the render, in the view layer, sorted by name."""
    objs = [o for o in context.view_layer.objects if o.type == "LIGHT" and not o.hide_render]
    if selected_only:
        objs = [o for o in objs if o.select_get()]
    return sorted(objs, key=lambda o: o.name)


def _read_pixels(path: str) -> np.ndarray:
    """An EXR as Blender stores it: ``[H, W, 4]`` float32, bottom row first, linear."""
    img = bpy.data.images.load(path, check_existing=False)
    try:
        w, h = img.size
        px = np.empty(w * h * img.channels, dtype=np.float32)
        img.pixels.foreach_get(px)
        return px.reshape(h, w, img.channels)
    finally:
        bpy.data.images.remove(img)


def _write_pixels(path: str, px: np.ndarray, scene) -> None:
    """Write ``[H, W, 4]`` float pixels (bottom row first) as a 32-bit float RGB EXR, unaltered.

    ``save_render`` with the scene's EXR settings writes linear values as they are (no view
    transform is applied to linear formats); ``Image.save`` would convert colour spaces.
    """
    h, w = px.shape[:2]
    img = bpy.data.images.new("rendergrad_olat_tmp", w, h, alpha=True, float_buffer=True)
    try:
        img.pixels.foreach_set(np.ascontiguousarray(px, dtype=np.float32).ravel())
        img.save_render(path, scene=scene)
    finally:
        bpy.data.images.remove(img)


class _RenderState:
    """Saves, switches and restores what a capture changes: output settings and light visibility."""

    def __init__(self, scene, objects):
        r, s = scene.render, scene.render.image_settings
        self.scene = scene
        self.render = {k: getattr(r, k) for k in ("filepath", "use_file_extension", "use_compositing",
                                                    "use_sequencer")}
        self.image = {k: getattr(s, k) for k in ("file_format", "color_depth", "color_mode", "exr_codec")}
        self.hidden = {o.name: o.hide_render for o in objects}

    def __enter__(self):
        r, s = self.scene.render, self.scene.render.image_settings
        # The basis must be the renderer's linear output: no compositor or sequencer in between.
        r.use_compositing = False
        r.use_sequencer = False
        r.use_file_extension = True
        s.file_format = "OPEN_EXR"
        s.color_depth = "32"
        s.color_mode = "RGB"
        s.exr_codec = "ZIP"
        return self

    def __exit__(self, *exc):
        r, s = self.scene.render, self.scene.render.image_settings
        for k, v in self.image.items():
            setattr(s, k, v)
        for k, v in self.render.items():
            setattr(r, k, v)
        for name, hidden in self.hidden.items():
            obj = bpy.data.objects.get(name)
            if obj is not None:
                obj.hide_render = hidden
        return False


def _render_to(scene, path: str) -> np.ndarray:
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)
    if not os.path.isfile(path):
        raise OlatError(f"Blender did not write {path}; check the scene's render settings")
    return _read_pixels(path)


def capture_basis(context, directory: str, objects=None, report=None) -> dict:
    """Render the OLAT basis of ``objects`` (default: every light of the scene) into ``directory``.

    Returns the metadata written to ``olat.json``. Every render uses the scene's settings as
    they are (engine, samples, seed, resolution), so with a fixed Cycles seed the lights share
    their random numbers and ``base + Σ I_i`` matches ``full`` closely.
    """
    scene = context.scene
    objects = list(scene_lights(context) if objects is None else objects)
    if not objects:
        raise OlatError("no lights to capture: the scene has no light objects visible to the render "
                        "(or none selected with 'Selected lights only')")
    directory = directory or "//olat/"
    if directory.startswith("//") and not bpy.data.filepath:
        raise OlatError(f"the basis folder {directory!r} is relative to the .blend file, which is not saved "
                        "yet: save the file or choose an absolute folder")
    directory = bpy.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    names = [safe_name(o.name) for o in objects]
    if len(set(names)) != len(names):
        names = [f"{n}_{i}" for i, n in enumerate(names)]
    lights = []
    with _RenderState(scene, objects):
        for o in objects:
            o.hide_render = True
        base = _render_to(scene, os.path.join(directory, "base.exr"))
        total = base[..., :3].astype(np.float64)
        with tempfile.TemporaryDirectory(prefix="rendergrad-olat-") as tmp:
            for i, (obj, name) in enumerate(zip(objects, names)):
                if report:
                    report(f"rendering light {i + 1}/{len(objects)}: {obj.name}")
                obj.hide_render = False
                solo = _render_to(scene, os.path.join(tmp, "solo.exr"))
                obj.hide_render = True
                # What the light adds: its solo render minus everything no captured light controls.
                px = solo.copy()
                px[..., :3] = solo[..., :3] - base[..., :3]
                fname = f"light_{i:03d}_{name}.exr"
                _write_pixels(os.path.join(directory, fname), px, scene)
                total += px[..., :3]
                data = obj.data
                lights.append({"name": name, "file": fname, "object": obj.name, "light": data.name,
                               "type": data.type, "energy": float(data.energy),
                               "color": [float(c) for c in data.color],
                               "parameter": f'lights["{data.name}"].energy', "unit": float(data.energy),
                               "kind": "scalar"})
                os.unlink(os.path.join(tmp, "solo.exr"))
        for o in objects:
            o.hide_render = False
        full = _render_to(scene, os.path.join(directory, "full.exr"))[..., :3].astype(np.float64)
    rel = float(np.linalg.norm(full - total) / max(np.linalg.norm(full), 1e-12))
    r = scene.render
    meta = {
        "format": FORMAT, "version": 1,
        "width": int(r.resolution_x * r.resolution_percentage / 100),
        "height": int(r.resolution_y * r.resolution_percentage / 100),
        "lights": lights, "base": "base.exr",
        "source": {"renderer": "blender-addon", "blend": bpy.data.filepath, "scene": scene.name,
                   "engine": r.engine, "blender": bpy.app.version_string,
                   **({"samples": int(scene.cycles.samples), "seed": int(scene.cycles.seed)}
                      if r.engine == "CYCLES" else {})},
        "unit": "init",
        "check": {"relative_error": rel, "renders": len(objects) + 2, "full": "full.exr"},
    }
    with open(os.path.join(directory, META_NAME), "w") as f:
        json.dump(meta, f, indent=2)
    return meta


# -- apply --------------------------------------------------------------------------------------
def load_json(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise OlatError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as e:
        raise OlatError(f"{what} {path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise OlatError(f"{what} {path} must hold a JSON object")
    return data


def load_multipliers(path: str, candidate: int = -1) -> dict:
    """``{light: [r, g, b]}`` from a ``multipliers.json`` (or its folder); ``candidate >= 0`` picks one."""
    path = bpy.path.abspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "multipliers.json")
    data = load_json(path, "multipliers file")
    if candidate >= 0:
        cands = data.get("candidates") or []
        if candidate >= len(cands):
            raise OlatError(f"{path} has no candidate {candidate} (it has {len(cands)})")
        data = cands[candidate]
    mult = data.get("multipliers", data)
    out = {}
    for name, v in mult.items():
        v = [float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v)] * 3
        if len(v) != 3 or not all(math.isfinite(x) and x >= 0 for x in v):
            raise OlatError(f"{path}: multiplier of {name!r} must be a number or [r, g, b], finite and >= 0")
        out[str(name)] = v
    return out


def _find(entry: dict):
    for n in (entry.get("object"), entry.get("name")):
        obj = bpy.data.objects.get(n) if n else None
        if obj is not None and obj.type == "LIGHT":
            return obj
    light = bpy.data.lights.get(entry.get("light") or entry.get("name") or "")
    if light is not None:
        users = [o for o in bpy.data.objects if o.data == light]
        return users[0] if users else None
    return None


def apply_multipliers(multipliers: dict, meta: dict) -> list:
    """Set each captured light to ``energy·max(m)`` and ``colour·m/max(m)`` (values as captured).

    A light whose data block other objects share gets its own copy first, so one object's
    multiplier does not change the others. Returns ``[(object, energy, colour)]``; lights the
    scene no longer has are skipped and listed as ``(name, None, None)``.
    """
    entries = {e["name"]: e for e in meta.get("lights", []) if isinstance(e, dict) and "name" in e}
    unknown = sorted(set(multipliers) - set(entries))
    if unknown:
        raise OlatError(f"multipliers name lights the basis does not have: {unknown}; "
                        f"basis lights: {', '.join(entries)}")
    done = []
    for name, m in multipliers.items():
        entry = entries[name]
        obj = _find(entry)
        if obj is None:
            done.append((name, None, None))
            continue
        if obj.data.users > 1:
            obj.data = obj.data.copy()
        light = obj.data
        energy = float(entry.get("energy", light.energy))
        color = [float(c) for c in entry.get("color", light.color)]
        v = max(m)
        light.energy = energy * v
        if v > 0:
            light.color = [c * x / v for c, x in zip(color, m)]
        done.append((obj.name, float(light.energy), tuple(light.color)))
    return done


# -- UI -----------------------------------------------------------------------------------------
class RENDERGRAD_OlatSettings(bpy.types.PropertyGroup):
    directory: StringProperty(name="Basis folder", subtype="DIR_PATH", default="//olat/",
                              description="Where the capture writes olat.json and the EXRs; apply reads olat.json here")
    selected_only: BoolProperty(name="Selected lights only", default=False,
                                description="Capture only the selected lights; the others stay on and join the base")
    multipliers: StringProperty(name="Multipliers", subtype="FILE_PATH", default="",
                                description="multipliers.json written by `rendergrad olat optimize` or `solve`")
    candidate: IntProperty(name="Candidate", default=-1, min=-1,
                           description="Which candidate to apply; -1: the best")


class RENDERGRAD_OT_olat_capture(bpy.types.Operator):
    """Render one linear EXR per light (every other light off), the base and the full scene"""

    bl_idname = "rendergrad.olat_capture"
    bl_label = "Capture OLAT basis"
    bl_options = {"REGISTER"}

    directory: StringProperty(name="Folder", subtype="DIR_PATH", default="",
                              description="Output folder (default: the panel's basis folder)")
    selected_only: BoolProperty(name="Selected lights only", default=False)

    def execute(self, context):
        settings = context.scene.rendergrad_olat
        directory = self.directory or settings.directory
        try:
            objs = scene_lights(context, self.selected_only)
            meta = capture_basis(context, directory, objs, report=lambda m: self.report({"INFO"}, m))
        except OlatError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"captured {len(meta['lights'])} lights into {bpy.path.abspath(directory)}; "
                              f"|full - (base + sum)| / |full| = {meta['check']['relative_error']:.2e}")
        return {"FINISHED"}


class RENDERGRAD_OT_olat_apply(bpy.types.Operator):
    """Set the lights' energy and colour from a multipliers.json (one undo step)"""

    bl_idname = "rendergrad.olat_apply"
    bl_label = "Apply multipliers"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="Multipliers", subtype="FILE_PATH", default="",
                             description="multipliers.json or its folder (default: the panel's file)")
    basis: StringProperty(name="Basis", default="",
                          description="olat.json of the capture or its folder (default: the panel's basis folder)")
    candidate: IntProperty(name="Candidate", default=-1, min=-1)

    def execute(self, context):
        settings = context.scene.rendergrad_olat
        try:
            src = self.filepath or settings.multipliers
            if not src:
                raise OlatError("choose a multipliers.json to apply")
            basis = bpy.path.abspath(self.basis or settings.directory)
            if os.path.isdir(basis):
                basis = os.path.join(basis, META_NAME)
            meta = load_json(basis, "basis metadata (olat.json)")
            mult = load_multipliers(src, self.candidate)
            done = apply_multipliers(mult, meta)
        except OlatError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        missing = [n for n, e, _ in done if e is None]
        if missing:
            self.report({"WARNING"}, f"no light object for {missing} in this scene; skipped")
        self.report({"INFO"}, f"applied multipliers to {len(done) - len(missing)} lights")
        return {"FINISHED"}


class RENDERGRAD_PT_olat(bpy.types.Panel):
    bl_label = "rendergrad OLAT"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        settings = context.scene.rendergrad_olat
        layout = self.layout
        layout.use_property_split = True
        col = layout.column()
        col.prop(settings, "directory")
        col.prop(settings, "selected_only")
        n = len(scene_lights(context, settings.selected_only))
        op = col.operator(RENDERGRAD_OT_olat_capture.bl_idname, text=f"Capture {n} lights", icon="RENDER_STILL")
        op.directory = settings.directory
        op.selected_only = settings.selected_only
        col.separator()
        col.prop(settings, "multipliers")
        col.prop(settings, "candidate")
        op = col.operator(RENDERGRAD_OT_olat_apply.bl_idname, icon="LIGHT")
        op.filepath = settings.multipliers
        op.basis = settings.directory
        op.candidate = settings.candidate


CLASSES = (RENDERGRAD_OlatSettings, RENDERGRAD_OT_olat_capture, RENDERGRAD_OT_olat_apply, RENDERGRAD_PT_olat)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.rendergrad_olat = PointerProperty(type=RENDERGRAD_OlatSettings)


def unregister():
    del bpy.types.Scene.rendergrad_olat
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
