"""OLAT in real Blender: the add-on installed from its zip, capture and apply; the ``blender``
renderer captured by ``rendergrad olat capture``; the generated apply script run inside bpy.

bpy can be imported once per process, so every Blender step runs in a subprocess (one per
test); the add-on test reuses one capture for all its assertions. Cycles on the CPU, 64×64,
8 samples, fixed seeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("OpenEXR")
if not __import__("importlib.util").util.find_spec("bpy"):
    pytest.skip("needs the bpy wheel", allow_module_level=True)

from rendergrad.cli import main  # noqa: E402
from rendergrad.renderers.olat import OlatBasis, OlatRenderer, read_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "examples" / "bridge" / "blender_scene.py"   # Key (600 W) and Fill (200 W) point lights
SAMPLES, SEED = 8, 3

# Builds the example scene, adds a dim world so the lights-off base is not black, sets Cycles.
SETUP = f"""
import bpy, json, os, runpy, sys
bpy.ops.wm.read_factory_settings(use_empty=True)
runpy.run_path({str(SCENE)!r}, run_name="__main__")
sc = bpy.context.scene
world = bpy.data.worlds.new("World")
world.color = (0.04, 0.05, 0.07)
sc.world = world
sc.render.engine = "CYCLES"
sc.cycles.device = "CPU"
sc.cycles.samples = {SAMPLES}
sc.cycles.seed = {SEED}
sc.cycles.use_adaptive_sampling = False
sc.cycles.use_denoising = False
sc.render.resolution_x = sc.render.resolution_y = 64
sc.render.resolution_percentage = 100
sc.render.threads_mode, sc.render.threads = "FIXED", 2
"""


def run_bpy(code: str, tmp: Path, env: dict[str, str] | None = None) -> dict:
    """Run ``SETUP`` + ``code`` in a fresh Python with bpy; ``code`` sets ``OUT`` (a dict), returned."""
    script = tmp / "bpy_job.py"
    script.write_text(SETUP + textwrap.dedent(code) + "\nprint('RESULT ' + json.dumps(OUT))\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240,
                          cwd=tmp, env={**os.environ, **(env or {})})
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


MULT = {"Key": [2.0, 1.0, 0.5], "Fill": [0.25, 0.5, 0.5]}


@pytest.fixture(scope="module")
def addon_run(tmp_path_factory):
    """Install the zip in a private Blender user folder, capture, re-render, apply (twice), render."""
    tmp = tmp_path_factory.mktemp("olat_addon")
    zip_path = tmp / "rendergrad_olat.zip"
    assert main(["olat", "addon", "--out", str(zip_path)]) == 0
    (tmp / "multipliers.json").write_text(json.dumps({"best": 0, "multipliers": MULT}))
    users = tmp / "blender_user"
    code = f"""
    bpy.ops.preferences.addon_install(filepath={str(zip_path)!r})
    bpy.ops.preferences.addon_enable(module="rendergrad_olat")
    import rendergrad_olat
    OUT = {{"module": rendergrad_olat.__file__,
            "panel_context": bpy.types.RENDERGRAD_PT_olat.bl_context,
            "panel_space": bpy.types.RENDERGRAD_PT_olat.bl_space_type,
            "apply_options": sorted(bpy.types.RENDERGRAD_OT_olat_apply.bl_options)}}
    try:   # the panel's default folder is relative to the .blend file, which was never saved
        bpy.ops.rendergrad.olat_capture()
        OUT["unsaved"] = "no error"
    except RuntimeError as e:
        OUT["unsaved"] = str(e)
    OUT["capture"] = list(bpy.ops.rendergrad.olat_capture(directory={str(tmp / "cap")!r}))
    for o in bpy.data.objects:
        o.select_set(o.name == "Key")
    OUT["capture_selected"] = list(bpy.ops.rendergrad.olat_capture(directory={str(tmp / "sel")!r},
                                                                   selected_only=True))
    OUT["hidden_after"] = {{o.name: o.hide_render for o in bpy.data.objects if o.type == "LIGHT"}}
    OUT["format_after"] = sc.render.image_settings.file_format

    def render(path):
        s = sc.render.image_settings
        s.file_format, s.color_depth, s.color_mode = "OPEN_EXR", "32", "RGB"
        sc.render.filepath = path
        bpy.ops.render.render(write_still=True)

    sc.cycles.seed = {SEED + 1}
    render({str(tmp / "full_other_seed.exr")!r})   # the noise level: the same scene, other samples
    sc.cycles.seed = {SEED}
    for _ in range(2):                                 # applying twice must not compound
        OUT["apply"] = list(bpy.ops.rendergrad.olat_apply(filepath={str(tmp / "multipliers.json")!r},
                                                          basis={str(tmp / "cap")!r}))
        OUT["lights"] = {{l.name: [l.energy, list(l.color)] for l in bpy.data.lights}}
    render({str(tmp / "applied.exr")!r})
    try:   # called from Python, an operator's error report is raised
        bpy.ops.rendergrad.olat_apply(filepath={str(tmp / "nope.json")!r}, basis={str(tmp / "cap")!r})
        OUT["bad"] = "no error"
    except RuntimeError as e:
        OUT["bad"] = str(e)
    """
    out = run_bpy(code, tmp, env={"BLENDER_USER_RESOURCES": str(users)})
    return tmp, zip_path, out


def test_addon_zip_installs_and_registers(addon_run):
    tmp, zip_path, out = addon_run
    assert zipfile.ZipFile(zip_path).namelist() == ["rendergrad_olat/__init__.py"]
    # enabled from the installed copy in the private user folder, not from the source tree
    assert Path(out["module"]).resolve().is_relative_to((tmp / "blender_user").resolve()), out["module"]
    assert out["panel_space"] == "PROPERTIES" and out["panel_context"] == "render"
    assert out["apply_options"] == ["REGISTER", "UNDO"]
    assert "multipliers file not found" in out["bad"] and "nope.json" in out["bad"]
    assert "not saved yet" in out["unsaved"] and "//olat/" in out["unsaved"]


def test_capture_writes_a_linear_basis(addon_run):
    tmp, _, out = addon_run
    assert out["capture"] == ["FINISHED"]
    cap = tmp / "cap"
    assert sorted(p.name for p in cap.iterdir()) == ["base.exr", "full.exr", "light_000_Fill.exr",
                                                     "light_001_Key.exr", "olat.json"]
    basis = OlatBasis.load(cap)
    assert basis.names == ["Fill", "Key"] and basis.images.shape == (2, 64, 64, 3)
    lights = {l["name"]: l for l in basis.lights}
    assert lights["Key"]["energy"] == pytest.approx(600.0) and lights["Fill"]["energy"] == pytest.approx(200.0)
    assert lights["Key"]["object"] == "Key" and lights["Key"]["color"] == pytest.approx([1.0, 1.0, 1.0])
    assert basis.meta["source"]["samples"] == SAMPLES and basis.meta["source"]["seed"] == SEED
    # the world is the base; the scene is left as it was found
    assert 0 < float(basis.base.mean()) < 0.2 * float(basis.images.sum(0).mean())
    assert out["hidden_after"] == {"Key": False, "Fill": False}
    assert out["format_after"] == "PNG"
    # linearity: base + Σ I_i is the full render, closer than two renders of it with other samples
    full = torch.from_numpy(read_image(cap / "full.exr", "full"))
    other = torch.from_numpy(read_image(tmp / "full_other_seed.exr", "other seed"))
    total = basis.base + basis.images.sum(0)
    noise = rel(other, full)
    err = rel(total, full)
    assert basis.meta["check"]["relative_error"] == pytest.approx(err, rel=1e-3)
    assert 1e-4 < noise and err < noise, (err, noise)
    # the key light is the brighter one, and each solo image is non-negative up to noise
    assert float(basis.images[1].mean()) > float(basis.images[0].mean()) > 0


def test_selected_only_keeps_other_lights_in_the_base(addon_run):
    tmp, _, out = addon_run
    assert out["capture_selected"] == ["FINISHED"]
    sel, all_ = OlatBasis.load(tmp / "sel"), OlatBasis.load(tmp / "cap")
    assert sel.names == ["Key"]
    noise = rel(torch.from_numpy(read_image(tmp / "full_other_seed.exr", "other")),
                torch.from_numpy(read_image(tmp / "cap" / "full.exr", "full")))
    assert rel(sel.base, all_.base + all_.images[0]) < 2 * noise
    assert rel(sel.images[0], all_.images[1]) < 2 * noise


def test_apply_sets_energies_and_colours_and_relights_like_the_basis(addon_run):
    tmp, _, out = addon_run
    assert out["apply"] == ["FINISHED"]
    key_e, key_c = out["lights"]["Key"]
    fill_e, fill_c = out["lights"]["Fill"]
    assert key_e == pytest.approx(600.0 * 2.0) and key_c == pytest.approx([1.0, 0.5, 0.25])
    assert fill_e == pytest.approx(200.0 * 0.5) and fill_c == pytest.approx([0.5, 1.0, 1.0])
    # Rendering the scene after apply gives the basis relit with those multipliers
    basis = OlatBasis.load(tmp / "cap")
    m = torch.tensor([MULT[n] for n in basis.names]).unsqueeze(0)
    relit = OlatRenderer(basis).relight(m)[0]
    applied = torch.from_numpy(read_image(tmp / "applied.exr", "applied"))
    unit = torch.from_numpy(read_image(tmp / "cap" / "full.exr", "full"))
    noise = rel(torch.from_numpy(read_image(tmp / "full_other_seed.exr", "other")), unit)
    assert rel(applied, relit) < 1.5 * noise, (rel(applied, relit), noise)
    assert rel(unit, relit) > 5 * noise   # and the multipliers really changed the image


def test_blender_renderer_capture_solve_and_apply_script_in_bpy(tmp_path):
    """`olat capture` through the `blender` renderer, `olat solve`, `olat apply --format blender`,
    and the generated script run inside bpy on the scene as captured."""
    cfg = tmp_path / "capture.toml"
    cfg.write_text(textwrap.dedent(f"""
        [renderer]
        name = "blender"
        [renderer.options]
        scene = {json.dumps(str(SCENE))}
        resolution = 64
        samples = {SAMPLES}
        seed_mode = "fixed"
        threads = 2
        params = [
          {{ name = "key", path = 'lights["Key"].energy', low = 0.0, high = 5000.0 }},
          {{ name = "fill", path = 'lights["Fill"].energy', low = 0.0, high = 5000.0 }},
          {{ name = "z", path = 'objects["Sphere"].location[2]', low = 0.3, high = 2.0 }},
        ]
    """))
    basis_dir = tmp_path / "basis"
    assert main(["olat", "capture", "--config", str(cfg), "--out", str(basis_dir)]) == 0
    basis = OlatBasis.load(basis_dir)
    assert basis.names == ["key", "fill"] and basis.images.shape == (2, 64, 64, 3)
    assert [l["unit"] for l in basis.lights] == [pytest.approx(600.0), pytest.approx(200.0)]
    assert basis.base is None                # no world, no emission: the lights-off image is black
    assert basis.meta["check"]["relative_error"] < 0.05
    assert float(basis.images[0].mean()) > float(basis.images[1].mean()) > 0

    truth = {"key": [1.5, 1.0, 0.5], "fill": [0.5, 0.5, 2.0]}
    solved = tmp_path / "solved"
    assert main(["olat", "solve", str(basis_dir), "--target-multipliers", json.dumps(truth),
                 "--out", str(solved)]) == 0
    got = json.loads((solved / "multipliers.json").read_text())["multipliers"]
    for n in truth:
        assert got[n] == pytest.approx(truth[n], abs=1e-3), (n, got[n])
    script = tmp_path / "apply.py"
    assert main(["olat", "apply", str(solved), "--basis", str(basis_dir), "--format", "blender",
                 "--out", str(script)]) == 0
    out = run_bpy(f"""
    runpy.run_path({str(script)!r}, run_name="__main__")
    OUT = {{l.name: [l.energy, list(l.color)] for l in bpy.data.lights}}
    """, tmp_path)
    assert out["Key"][0] == pytest.approx(600.0 * 1.5, rel=1e-3)
    assert out["Key"][1] == pytest.approx([1.0, 1.0 / 1.5, 0.5 / 1.5], rel=1e-3)
    assert out["Fill"][0] == pytest.approx(200.0 * 2.0, rel=1e-3)
    assert out["Fill"][1] == pytest.approx([0.25, 0.25, 1.0], rel=1e-3)
