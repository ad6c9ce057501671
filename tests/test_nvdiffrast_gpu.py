"""The nvdiffrast renderer with the real library on a CUDA GPU (marked ``gpu``; skipped elsewhere).

These tests also hold the CPU test double (``nvdiffrast_reference``) to the real library: same
scene, same conventions, same pixels up to antialiasing and mip filtering.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import rendergrad as rg
from rendergrad.renderers.nvdiffrast import NvdiffrastRenderer

sys.path.insert(0, str(Path(__file__).parent))
from nvdiffrast_reference import ReferenceOps  # noqa: E402

OK, WHY = NvdiffrastRenderer.available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not OK, reason=f"needs CUDA and nvdiffrast: {WHY}")]
RES = 48


def scene(texture=True):
    obj = {"id": "box", "mesh": "cube", "color": [1.0, 0.3, 0.1], "rotate": [20, 30, 0], "specular": 0.3}
    if texture:
        obj["texture"] = {"type": "checker", "size": 32, "squares": 4}
    return {"camera": {"origin": [0, 0.5, 4], "fov": 40}, "background": [0.0, 0.0, 1.0], "ambient": 0.1,
            "objects": [obj, {"id": "ball", "mesh": {"type": "sphere", "segments": 16}, "translate": [1.2, 0, -0.5],
                              "scale": 0.8, "color": [0.2, 0.8, 0.2]}],
            "lights": [{"id": "sun", "type": "directional", "direction": [-0.3, -0.5, -1]},
                       {"id": "lamp", "type": "point", "position": [1, 2, 2], "intensity": 3}]}


POSE = [{"name": "pos", "translate": "box", "axes": "xy", "low": -1, "high": 1, "init": [0.0, 0.0]}]


def pair(texture=True, **kw):
    real = NvdiffrastRenderer(scene(texture), POSE, resolution=RES, device="cuda", **kw)
    ref = NvdiffrastRenderer(scene(texture), POSE, resolution=RES, device="cpu", ops=ReferenceOps(), **kw)
    return real, ref


def test_real_rasterizer_matches_the_cpu_test_double():
    real, ref = pair(texture=False, mode="forward")
    theta = torch.tensor([[0.0, 0.0], [0.3, -0.2]])
    a, b = real.render(theta).cpu(), ref.render(theta)
    cov_a, cov_b = a[..., 2] < 0.5, b[..., 2] < 0.5
    assert (cov_a == cov_b).float().mean() > 0.99
    both = cov_a & cov_b
    # same pixels shaded the same, apart from a few at edges where coverage rules differ
    differs = ((a - b).abs().amax(-1) > 0.01)[both].float().mean()
    assert differs < 0.01


def test_textured_render_close_to_the_double():
    real, ref = pair(texture=True, mode="forward", max_mip_level=0)
    theta = torch.tensor([[0.1, 0.1]])
    a, b = real.render(theta).cpu(), ref.render(theta)
    both = (a[..., 2] < 0.5) & (b[..., 2] < 0.5)
    assert (a - b).abs()[both].median() < 0.02


def test_a_batch_is_one_call_and_equals_single_renders():
    real = NvdiffrastRenderer(scene(), POSE, resolution=RES, device="cuda", mode="forward")
    theta = torch.rand(8, 2) - 0.5
    batch = real.render(theta)
    assert batch.shape == (8, RES, RES, 3) and batch.is_cuda
    for i in (0, 5):
        assert torch.allclose(batch[i], real.render(theta[i:i + 1])[0], atol=1e-5)


def test_antialias_gives_silhouette_gradients_that_match_finite_differences():
    sc = {"camera": {"origin": [0, 0, 4], "fov": 40}, "background": [0.0, 0.0, 0.0], "ambient": 1.0,
          "objects": [{"id": "box", "mesh": "cube", "color": 1.0}], "lights": []}
    r = NvdiffrastRenderer(sc, POSE, resolution=64, device="cuda")
    target = r.render(torch.tensor([[0.15, 0.0]])).detach()
    f = lambda t: ((r.render(t) - target) ** 2).mean()  # noqa: E731
    theta = torch.tensor([[0.0, 0.0]], requires_grad=True)
    f(theta).backward()
    g = theta.grad[0, 0].item()
    eps = 0.02
    with torch.no_grad():
        fd = (f(torch.tensor([[eps, 0.0]])) - f(torch.tensor([[-eps, 0.0]]))).item() / (2 * eps)
    assert g < 0 and fd < 0                       # moving right lowers the loss
    assert g == pytest.approx(fd, rel=0.5)


def test_analytic_pose_and_texture_optimisation_on_the_gpu():
    r = NvdiffrastRenderer(scene(), POSE, resolution=64, device="cuda")
    res = rg.optimize(r, "mse", "analytic", target_params={"pos": [0.25, -0.15]}, lr=0.02, steps=80, seed=0)
    assert res.params["pos"] == pytest.approx([0.25, -0.15], abs=0.03)
    t = NvdiffrastRenderer(scene(), [{"name": "tex", "texture": "box"}], resolution=64, device="cuda")
    theta = t.parameter_space().initial_theta().unsqueeze(0).float().requires_grad_(True)
    t.render(theta).mean().backward()
    assert torch.isfinite(theta.grad).all() and theta.grad.abs().sum() > 0


def test_mesh_choice_in_one_batch():
    sc = scene(texture=False)
    sc["objects"][0]["mesh"] = ["cube", {"type": "sphere", "segments": 32}]
    r = NvdiffrastRenderer(sc, [{"name": "m", "mesh": "box", "kind": "categorical", "choices": ["c", "s"]}],
                           resolution=RES, device="cuda", mode="forward")
    img = r.render(torch.tensor([[0.0], [1.0]]))
    assert not torch.equal(img[0], img[1])
