"""The nvdiffrast renderer on the CPU: everything except nvdiffrast's own kernels.

Scene loading, validation, meshes from files, camera and transform maths, parameter binding,
shading and compositing are real code under test. Only the four rasterizer ops are replaced by
``nvdiffrast_reference.ReferenceOps`` (pure torch), because nvdiffrast runs on CUDA only; the
``gpu`` tests in test_nvdiffrast_gpu.py compare that double with the real library.
"""

from __future__ import annotations

import io
import math
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

import rendergrad as rg
from rendergrad.errors import ConfigError, ParameterError, PluginUnavailableError
from rendergrad.renderers.nvdiffrast import NvdiffrastRenderer
from rendergrad.renderers.nvdiffrast import backend, geometry, meshes
from rendergrad.renderers.nvdiffrast.scene import load_scene

sys.path.insert(0, str(Path(__file__).parent))
from nvdiffrast_reference import ReferenceOps  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RES = 24


def scene(**over):
    s = {"camera": {"origin": [0, 0, 4], "fov": 40}, "background": [0.0, 0.0, 1.0], "ambient": 0.1,
         "objects": [{"id": "box", "mesh": "cube", "color": [1.0, 0.2, 0.1],
                      "texture": {"type": "checker", "size": 8, "squares": 2}}],
         "lights": [{"id": "sun", "type": "directional", "direction": [0, 0, -1], "intensity": 1.0}]}
    s.update(over)
    return s


POSE = [{"name": "pos", "translate": "box", "axes": "xy", "low": -1, "high": 1, "init": [0.0, 0.0]}]


def make(sc=None, params=None, **kw):
    kw.setdefault("resolution", RES)
    kw.setdefault("ops", ReferenceOps())
    return NvdiffrastRenderer(sc or scene(), params or POSE, device="cpu", **kw)


def mask(img):  # pixels not showing the blue background
    return img[..., 2] < 0.5


# -- availability ----------------------------------------------------------------------------
def test_unavailable_without_cuda_or_package_says_why_and_how_to_install(monkeypatch):
    monkeypatch.setattr(backend, "distribution", lambda: None)
    ok, why = NvdiffrastRenderer.available()
    assert not ok and "pip install 'rendergrad[nvdiffrast]'" in why and "NVlabs/nvdiffrast" in why
    monkeypatch.setattr(backend, "distribution", lambda: ("diffrp-nvdiffrast", "0.3.3.1"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok, why = NvdiffrastRenderer.available()
    assert not ok and "CUDA" in why
    with pytest.raises(PluginUnavailableError, match="CUDA"):
        backend.NvdiffrastOps("cuda")


def test_plugins_command_lists_the_renderer():
    from rendergrad.cli import main
    buf = io.StringIO()
    with redirect_stdout(buf):
        main(["plugins"])
    line = next(x for x in buf.getvalue().splitlines() if " nvdiffrast " in x)
    ok, why = NvdiffrastRenderer.available()
    assert ("NO" in line and why[:40] in line) if not ok else "yes" in line.lower()


def test_scene_errors_come_before_cuda_is_needed():
    with pytest.raises(ConfigError, match="no object 'nope'.*box"):
        NvdiffrastRenderer(scene(), [{"name": "p", "translate": "nope"}], device="cuda")


# -- meshes ------------------------------------------------------------------------------------
def test_procedural_meshes():
    c = meshes.cube()
    assert c.faces.shape == (12, 3) and c.vertices.shape == (24, 3)
    assert torch.allclose(c.vertices.abs(), torch.full_like(c.vertices, 0.5))
    s = meshes.sphere(segments=16, rings=8)
    assert s.faces.shape[0] == 2 * 16 * 7
    assert torch.allclose(s.vertices.norm(dim=1), torch.full((s.vertices.shape[0],), 0.5), atol=1e-5)
    v = s.vertices[s.faces.long()]
    areas = torch.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1).norm(dim=-1)
    assert bool((areas > 1e-8).all()), "degenerate pole triangles must be dropped"
    assert meshes.plane(subdivisions=3).faces.shape[0] == 18


@pytest.mark.parametrize("suffix", [".obj", ".ply", ".glb"])
def test_mesh_files_round_trip_through_trimesh(tmp_path, suffix):
    trimesh = pytest.importorskip("trimesh")
    s = meshes.sphere(segments=12, rings=6)
    tm = trimesh.Trimesh(s.vertices.numpy(), s.faces.numpy(), process=False)
    path = tmp_path / f"ball{suffix}"
    tm.export(path)
    m = meshes.make_mesh(str(path), where="test")
    assert m.faces.shape[0] == s.faces.shape[0]
    assert torch.allclose(m.center, s.center, atol=1e-5)
    area = lambda mm: float(torch.cross(*(mm.vertices[mm.faces.long()][:, i] - mm.vertices[mm.faces.long()][:, 0]  # noqa: E731
                                          for i in (1, 2)), dim=-1).norm(dim=-1).sum())
    assert area(m) == pytest.approx(area(s), rel=1e-4)


def test_glb_with_uvs_and_texture_brings_its_texture(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    from PIL import Image
    c = meshes.cube()
    img = Image.fromarray(np.full((4, 4, 3), [255, 0, 0], dtype=np.uint8))
    visual = trimesh.visual.TextureVisuals(uv=c.uvs.numpy(), image=img)
    tm = trimesh.Trimesh(c.vertices.numpy(), c.faces.numpy(), visual=visual, process=False)
    path = tmp_path / "box.glb"
    tm.export(path)
    sc = load_scene(scene(objects=[{"id": "box", "mesh": str(path)}]))
    tex = sc.objects[0].texture
    assert tex is not None and tex.shape[-1] == 3
    assert float(tex[..., 0].mean()) > 0.9 and float(tex[..., 1:].max()) < 0.05


def test_mesh_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        meshes.make_mesh(str(tmp_path / "x.obj"), where="t")
    with pytest.raises(ConfigError, match="neither one of cube, sphere, plane"):
        meshes.make_mesh("torus", where="t")
    bad = tmp_path / "bad.ply"
    bad.write_text("not a ply")
    with pytest.raises(ConfigError, match="bad.ply"):
        meshes.make_mesh(str(bad), where="t")


# -- scene validation ------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"objects": []}, "non-empty list"),
    ({"objects": [{"mesh": "cube"}]}, "needs an id"),
    ({"objects": [{"id": "a", "mesh": "cube", "colour": 1}]}, r"unknown key\(s\) \['colour'\]"),
    ({"objects": [{"id": "a", "mesh": "cube", "color": [1, 2]}]}, "color: expected 3"),
    ({"lights": [{"type": "point"}]}, "needs position"),
    ({"lights": [{"type": "spot"}]}, "type must be one of"),
    ({"lights": [{"id": "box", "type": "directional"}]}, "unique"),
    ({"camera": {"origin": [0, 4, 0], "target": [0, 0, 0], "up": [0, 1, 0]}}, "parallel"),
    ({"camera": {"near": 2, "far": 1}}, "far"),
    ({"sky": 1}, r"unknown key\(s\) \['sky'\]"),
    ({"objects": [{"id": "a", "mesh": "cube", "texture": {"type": "noise"}}]}, "checker"),
])
def test_scene_mistakes_get_one_clear_sentence(change, message):
    with pytest.raises(ConfigError, match=message):
        load_scene(scene(**change))


# -- geometry --------------------------------------------------------------------------------
def test_look_at_and_perspective():
    eye, tgt, up = torch.tensor([[1.0, 2.0, 5.0]]), torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([0.0, 1.0, 0.0])
    view = geometry.look_at(eye, tgt, up)
    p = geometry.transform_points(view, torch.stack([eye[0], tgt[0]]))
    assert torch.allclose(p[0, 0, :3], torch.zeros(3), atol=1e-6)
    assert torch.allclose(p[0, 1, :3], torch.tensor([0.0, 0.0, -5.0]), atol=1e-6)
    proj = geometry.perspective(torch.tensor([60.0]), 2.0, 0.1, 10.0)
    d = 3.0
    edge = torch.tensor([[0.0, d * math.tan(math.radians(30)), -d], [0.0, 0.0, -0.1], [0.0, 0.0, -10.0]])
    c = geometry.transform_points(proj, edge)[0]
    ndc = c[:, :3] / c[:, 3:]
    assert ndc[0, 1] == pytest.approx(1.0, abs=1e-5)
    assert ndc[1, 2] == pytest.approx(-1.0, abs=1e-5) and ndc[2, 2] == pytest.approx(1.0, abs=1e-5)


def test_rotations_and_model_matrix_about_the_centre():
    r = geometry.axis_angle(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([90.0]))
    assert torch.allclose(r[0] @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    e = geometry.euler_xyz(torch.tensor([[10.0, 20.0, 30.0]]))
    assert torch.allclose(e[0] @ e[0].T, torch.eye(3), atol=1e-6)
    center = torch.tensor([1.0, 2.0, 3.0])
    m = geometry.model_matrix(torch.tensor([[0.5, 0.0, 0.0]]), r, torch.tensor([[2.0, 2.0, 2.0]]), center)
    out = geometry.transform_points(m, center[None])[0, 0, :3]
    assert torch.allclose(out, center + torch.tensor([0.5, 0.0, 0.0]), atol=1e-6)


# -- parameter binding -----------------------------------------------------------------------
def test_declarations_make_the_parameter_space():
    sc = scene(objects=[{"id": "box", "mesh": "cube", "texture": {"type": "checker", "size": 8}},
                        {"id": "ball", "mesh": [{"type": "sphere", "segments": 8}, "cube"]}],
               lights=[{"id": "sun", "type": "directional", "direction": [0, 0, -1]},
                       {"id": "lamp", "type": "point", "position": [1, 1, 2], "intensity": 3}])
    params = [
        {"name": "pos", "translate": "box", "axes": "xy"},
        {"name": "spin", "rotate": "box", "axis": [0, 1, 0]},
        {"name": "size", "scale": "box", "uniform": True},
        {"name": "cam", "position": "camera", "axes": "z", "low": 2, "high": 6},
        {"name": "fov", "key": "camera.fov", "low": 20, "high": 80},
        {"name": "sun_dir", "key": "sun.direction", "low": -1, "high": 1},
        {"name": "lamp_pos", "key": "lamp.position", "low": -3, "high": 3},
        {"name": "lamp_col", "key": "lamp.color", "multiply": True, "low": 0, "high": 2},
        {"name": "tint", "key": "box.color"},
        {"name": "shape", "mesh": "ball", "kind": "categorical", "choices": ["sphere", "cube"]},
        {"name": "tex", "texture": "box"},
    ]
    r = make(sc, params)
    space = r.parameter_space()
    assert space["pos"].size == 2 and space["size"].size == 1 and space["tex"].shape == (8, 8, 3)
    assert space["cam"].initial().tolist() == [4.0] and space["fov"].initial().tolist() == [40.0]
    assert space["shape"].kind == "categorical" and space["lamp_col"].initial().tolist() == [1.0] * 3
    assert set(r.light_parameters()) == {"lamp_col"}
    theta = space.initial_theta().unsqueeze(0)
    img0 = r.render(theta)
    assert img0.shape == (1, RES, RES, 3) and bool(torch.isfinite(img0).all())


def test_offsets_are_a_vector_parameter_with_one_row_per_vertex():
    r = make(params=[{"name": "dv", "offsets": "box", "low": -0.2, "high": 0.2}])
    p = r.parameter_space()["dv"]
    assert p.shape == (24, 3) and p.initial().abs().max() == 0


@pytest.mark.parametrize("decl, message", [
    ({"name": "p", "translate": "nope"}, "no object 'nope'; the scene's objects are: box"),
    ({"name": "p", "key": "box.roughness"}, "no field 'roughness'.*color, specular, shininess"),
    ({"name": "p", "key": "moon.color"}, "names no object, light or camera.*sun"),
    ({"name": "p", "key": "sun.position"}, "directional light.*direction, not a position"),
    ({"name": "p", "translate": "box", "multiply": True}, "multiply applies to key"),
    ({"name": "p", "translate": "box", "key": "box.color"}, "exactly one target"),
    ({"name": "p", "translate": "box", "axes": "xw"}, "axes must be"),
    ({"name": "p", "rotate": "camera"}, "camera can be moved"),
    ({"name": "p", "mesh": "box", "kind": "categorical", "choices": ["a", "b"]}, "1 mesh alternatives"),
    ({"name": "p", "key": "box.color", "low": 0.5, "high": 1.0}, "outside the bounds"),
    ({"name": "p", "translate": "box", "sigma": 1}, r"unknown key\(s\) \['sigma'\]"),
])
def test_declaration_mistakes_name_the_fix(decl, message):
    with pytest.raises((ConfigError, ParameterError), match=message):
        make(params=[decl])


def test_texture_parameter_needs_a_texture():
    sc = scene(objects=[{"id": "box", "mesh": "cube"}])
    with pytest.raises(ConfigError, match="has no texture.*checker"):
        make(sc, [{"name": "t", "texture": "box"}])


# -- the pipeline, with the test double for the rasterizer -----------------------------------
def test_pose_moves_the_object_the_right_way_and_a_batch_is_one_call():
    r = make()
    img = r.render(torch.tensor([[0.0, 0.0], [0.8, 0.0], [0.0, 0.8]]))
    assert r.ops.calls["rasterize"] == 1 and r.ops.calls["texture"] == 1
    centroids = []
    for i in range(3):
        ys, xs = mask(img[i]).nonzero(as_tuple=True)
        centroids.append((float(xs.float().mean()), float(ys.float().mean())))
    c = (RES - 1) / 2
    assert centroids[0] == pytest.approx((c, c), abs=0.01)
    assert centroids[1][0] > c + 3 and centroids[1][1] == pytest.approx(c, abs=0.01)  # +x: right
    assert centroids[2][1] < c - 3                                                      # +y: up (row 0 is the top)
    # the batch renders what single renders do
    single = r.render(torch.tensor([[0.8, 0.0]]))
    assert torch.allclose(single[0], img[1], atol=1e-5)


def test_cube_size_on_screen_matches_the_field_of_view():
    r = make(params=[{"name": "fov", "key": "camera.fov", "low": 10, "high": 90}], resolution=48)
    img = r.render(torch.tensor([[40.0], [20.0]]))
    width = [int(mask(img[i])[24].sum()) for i in range(2)]
    expect = [0.5 / 3.5 / math.tan(math.radians(f / 2)) * 48 for f in (40, 20)]  # front face at z = 0.5
    assert width[0] == pytest.approx(expect[0], abs=1.5) and width[1] == pytest.approx(expect[1], abs=1.5)


def test_shading_lambert_blinn_phong_ambient_and_point_light_falloff():
    sc = scene(objects=[{"id": "box", "mesh": "cube", "color": [0.5, 0.5, 0.5]}], ambient=0.0)
    params = [{"name": "k", "key": "sun.intensity", "low": 0, "high": 4},
              {"name": "d", "key": "sun.direction", "low": -1, "high": 1},
              {"name": "amb", "key": "ambient", "low": 0, "high": 1}]
    r = make(sc, params)
    front = lambda img: img[0, RES // 2, RES // 2]  # noqa: E731
    lit = r.render(torch.tensor([[1.0, 0, 0, -1, 0, 0, 0]]))
    assert torch.allclose(front(lit), torch.full((3,), 0.5), atol=1e-4)           # albedo · n·l with n·l = 1
    tilted = r.render(torch.tensor([[1.0, 0, math.sqrt(3), -1, 0, 0, 0]]))       # 60° from the normal
    assert torch.allclose(front(tilted), torch.full((3,), 0.25), atol=1e-3)
    ambient = r.render(torch.tensor([[0.0, 0, 0, -1, 0.2, 0.2, 0.2]]))
    assert torch.allclose(front(ambient), torch.full((3,), 0.1), atol=1e-5)
    # specular highlight on top of the diffuse term
    spec = make(scene(objects=[{"id": "box", "mesh": "cube", "color": 0.5, "specular": 0.5}], ambient=0.0),
                [{"name": "k", "key": "sun.intensity", "low": 0, "high": 4}])
    assert float(front(spec.render(torch.tensor([[1.0]])))[0]) == pytest.approx(1.0, abs=1e-3)
    # a point light: inverse-square falloff
    pl = make(scene(objects=[{"id": "box", "mesh": "cube", "color": 1.0}], ambient=0.0,
                    lights=[{"id": "lamp", "type": "point", "position": [0, 0, 1.5], "intensity": 1.0}]),
              [{"name": "z", "key": "lamp.position", "low": -3, "high": 3}])
    near, far = pl.render(torch.tensor([[0, 0, 1.5], [0, 0, 2.5]]))
    # (the pixel centre sits half a pixel off the face's centre: a percent of angle and distance)
    assert float(near[RES // 2, RES // 2, 0]) == pytest.approx(1.0, rel=0.02)
    assert float(far[RES // 2, RES // 2, 0]) == pytest.approx(0.25, rel=0.02)


def test_background_image_and_colour(tmp_path):
    from rendergrad.imageio import save_png
    bg = np.zeros((8, 8, 3), dtype=np.float32)
    bg[:4, :, 1] = 1.0                                                    # top half green
    save_png(tmp_path / "bg.png", bg)
    r = make(scene(background=str(tmp_path / "bg.png")), [{"name": "p", "translate": "box", "axes": "z", "low": -9,
                                                            "high": 1, "init": -9}])
    img = r.render(torch.tensor([[-9.0]]))[0]
    assert float(img[1, 1, 1]) > 0.9 and float(img[-2, 1, 1]) < 0.05


def test_mesh_choice_changes_the_silhouette_within_one_call():
    sc = scene(objects=[{"id": "obj", "mesh": ["cube", {"type": "sphere", "segments": 10}], "color": [1.0, 0.2, 0.1]}])
    r = make(sc, [{"name": "which", "mesh": "obj", "kind": "categorical", "choices": ["cube", "sphere"]}])
    img = r.render(torch.tensor([[0.0], [1.0], [0.0]]))
    assert r.ops.calls["rasterize"] == 1
    cube_px, sphere_px = int(mask(img[0]).sum()), int(mask(img[1]).sum())
    assert torch.equal(img[0], img[2])
    assert sphere_px < cube_px * 0.9          # a disc of radius 0.5 covers less than the square
    corner = mask(img[0])[RES // 2 - 5, RES // 2 - 5]
    assert bool(corner) and not bool(mask(img[1])[RES // 2 - 5, RES // 2 - 5])


def test_gradients_reach_colours_lights_texels_offsets_and_camera():
    params = [{"name": "tint", "key": "box.color"},
              {"name": "dir", "key": "sun.direction", "low": -1, "high": 1, "init": [0.3, -0.2, -1]},
              {"name": "tex", "texture": "box"},
              {"name": "dv", "offsets": "box", "low": -0.2, "high": 0.2},
              {"name": "fov", "key": "camera.fov", "low": 20, "high": 80}]
    r = make(params=params)
    space = r.parameter_space()
    target = r.render(space.initial_theta().unsqueeze(0) * 0.9).detach()
    theta = space.initial_theta().unsqueeze(0).clone().float().requires_grad_(True)
    loss = ((r.render(theta) - target) ** 2).mean()
    loss.backward()
    g = space.unflatten(theta.grad)
    assert r.ops.calls["antialias"] >= 1
    for name in ("tint", "dir", "tex", "dv", "fov"):
        assert bool(torch.isfinite(g[name]).all()), name
        assert float(g[name].abs().sum()) > 0, name


def test_colour_gradient_matches_finite_differences():
    r = make(params=[{"name": "tint", "key": "box.color"}])
    target = torch.rand(1, RES, RES, 3, generator=torch.Generator().manual_seed(0))
    theta = torch.tensor([[0.4, 0.5, 0.6]], requires_grad=True)
    f = lambda t: ((r.render(t) - target) ** 2).mean()  # noqa: E731
    f(theta).backward()
    eps = 0.05  # the loss is quadratic in the colour: central differences are exact up to float32 rounding
    for i in range(3):
        d = torch.zeros(1, 3)
        d[0, i] = eps
        fd = (f(theta.detach() + d) - f(theta.detach() - d)) / (2 * eps)
        assert float(theta.grad[0, i]) == pytest.approx(float(fd), rel=1e-3, abs=1e-7)


def test_forward_mode_has_no_autograd_and_no_antialias():
    r = make(mode="forward")
    assert not r.differentiable
    theta = torch.zeros(2, 2, requires_grad=True)
    img = r.render(theta)
    assert not img.requires_grad and r.ops.calls["antialias"] == 0


def test_render_checks_theta_width_and_close():
    r = make()
    with pytest.raises(ConfigError, match="2 parameter values"):
        r.render(torch.zeros(1, 3))
    r.close()
    with pytest.raises(ConfigError, match="after close"):
        r.render(torch.zeros(1, 2))


def test_options_are_validated():
    with pytest.raises(ConfigError, match="mode must be"):
        make(mode="soft")
    with pytest.raises(ConfigError, match="resolution"):
        make(resolution=[0, 4])
    with pytest.raises(ConfigError, match=r"\.toml"):
        make(sc="scene.xml")


def test_analytic_and_prdpt_runs_through_the_loop():
    r = make(params=[{"name": "tint", "key": "box.color", "init": [0.2, 0.2, 0.2]}], resolution=16)
    res = rg.optimize(r, "mse", "analytic", target_params={"tint": [0.9, 0.4, 0.1]}, lr=0.1, steps=15, seed=0,
                      final_render=False)
    assert res.params["tint"][1:] == pytest.approx([0.4, 0.1], abs=0.06) and res.params["tint"][0] > 0.8
    r2 = make(mode="forward", resolution=16)
    res2 = rg.optimize(r2, "mse", "prdpt", target_params={"pos": [0.3, 0.0]}, estimator_options={"sigma": 0.1},
                       lr=0.05, steps=20, seed=0, final_render=False)
    # 20 antithetic pairs, and at most one render to check an elite jump (the rasteriser has no noise)
    assert res2.evaluations in (40, 41) and res2.loss < 0.5 * res2.history[0]["loss"]
    assert res2.params["pos"][0] == pytest.approx(0.3, abs=0.1)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "examples" / "nvdiffrast").glob("*.toml")))
def test_example_run_files_load(name, monkeypatch):
    from rendergrad.config import load_config
    monkeypatch.chdir(ROOT)
    cfg = load_config(ROOT / "examples" / "nvdiffrast" / name)
    opts = dict(cfg["renderer"]["options"])
    opts.update(device="cpu", ops=ReferenceOps(), resolution=16)
    r = NvdiffrastRenderer(**opts)
    img = r.render(r.parameter_space().initial_theta().unsqueeze(0))
    assert img.shape == (1, 16, 16, 3) and bool(torch.isfinite(img).all())
    if "params" in cfg.get("target", {}):
        r.parameter_space().flatten(cfg["target"]["params"])


def test_gpu_check_script_is_valid_shell():
    import subprocess
    script = ROOT / "benchmarks" / "gpu" / "check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    out = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert "OUTDIR" in out
    bad = subprocess.run(["bash", str(script), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr


def test_scene_file_resolves_mesh_and_texture_paths_next_to_it(tmp_path, monkeypatch):
    trimesh = pytest.importorskip("trimesh")
    from rendergrad.imageio import save_png
    c = meshes.cube()
    trimesh.Trimesh(c.vertices.numpy(), c.faces.numpy(), process=False).export(tmp_path / "box.ply")
    save_png(tmp_path / "wood.png", np.full((4, 4, 3), 0.5, dtype=np.float32))
    (tmp_path / "scene.toml").write_text(
        'background = [0.0, 0.0, 1.0]\n'
        '[[objects]]\nid = "box"\nmesh = "box.ply"\ntexture = "wood.png"\n')
    monkeypatch.chdir(ROOT)  # not the scene's folder: paths must resolve against the scene file
    with pytest.raises(ConfigError, match="no UV coordinates"):
        make(str(tmp_path / "scene.toml"))
    (tmp_path / "scene.toml").write_text('[[objects]]\nid = "box"\nmesh = "box.ply"\ncolor = [1, 0, 0]\n')
    r = make(str(tmp_path / "scene.toml"))
    assert r.geometry.num_triangles == 12


def test_the_seam_calls_nvdiffrast_with_its_own_signatures():
    """Without CUDA the real ops cannot run; their arguments can still be bound to nvdiffrast's
    functions, so a renamed or misspelt keyword fails here and not first on a GPU."""
    import inspect
    from types import SimpleNamespace
    dr = pytest.importorskip("nvdiffrast.torch")
    seen = []

    def checked(name, result):
        sig = inspect.signature(getattr(dr, name))

        def call(*args, **kwargs):
            sig.bind(*args, **kwargs)
            seen.append(name)
            return result(*args, **kwargs)
        return call
    ops = object.__new__(backend.NvdiffrastOps)
    ops._topology = (None, None)
    ops.ctx = object()

    def rast(ctx, pos, tri, resolution, **kw):
        return torch.zeros(pos.shape[0], *resolution, 4), torch.zeros(pos.shape[0], *resolution, 4)

    def interp(attr, rast, tri, rast_db=None, diff_attrs=None):
        c = attr.shape[-1]
        return torch.zeros(*rast.shape[:3], c) + 0 * attr.sum(), torch.zeros(*rast.shape[:3], 2 * c)
    ops.dr = SimpleNamespace(
        rasterize=checked("rasterize", rast),
        interpolate=checked("interpolate", interp),
        texture=checked("texture", lambda tex, uv, *a, **kw: torch.ones(*uv.shape[:3], tex.shape[-1])),
        antialias=checked("antialias", lambda color, *a, **kw: color),
        antialias_construct_topology_hash=checked("antialias_construct_topology_hash", lambda *a: "hash"))
    r = make(ops=ops)
    theta = torch.zeros(2, 2, requires_grad=True)
    r.render(theta)
    assert seen == ["rasterize", "interpolate", "interpolate", "texture", "antialias_construct_topology_hash",
                    "antialias"]


def test_static_objects_and_camera_are_cached_and_still_right():
    sc = scene(objects=[{"id": "box", "mesh": "cube", "color": [1.0, 0.2, 0.1], "scale": 0.6},
                        {"id": "ball", "mesh": {"type": "sphere", "segments": 8}, "translate": [1.2, 0.0, 0.0],
                         "scale": 0.8, "color": [0.2, 1.0, 0.1]}])
    r = make(sc, POSE, resolution=32)
    first = r.render(torch.tensor([[-0.5, 0.0]]))
    assert r._static_world and r._camera is not None          # the ball and the camera were cached
    again = r.render(torch.tensor([[0.5, 0.0], [-0.5, 0.0], [0.0, 0.3]]))
    assert torch.allclose(again[1], first[0], atol=1e-6)      # same θ, same image, at another batch size
    fresh = make(sc, POSE, resolution=32).render(torch.tensor([[0.5, 0.0]]))
    assert torch.allclose(again[0], fresh[0], atol=1e-6)
    green = lambda img: (img[..., 1] > 0.5) & (img[..., 0] < 0.5)  # noqa: E731
    assert green(first[0]).sum() > 10 and torch.equal(green(again[2]), green(first[0]))
