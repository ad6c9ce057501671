"""The ``olat`` renderer: basis files, validation, the contraction, gradients, capture round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("OpenEXR")

import rendergrad as rg
from rendergrad.errors import ConfigError
from rendergrad.renderers.olat import OlatBasis, OlatRenderer, hsv_to_rgb
from rendergrad.renderers.olat_tools import (capture, olat_ad, source_params, blender_script,
                                             random_resized_crop)
from rendergrad.plugins.objectives import MSE


def make_basis(lights: int = 3, h: int = 12, w: int = 16, base: bool = True, seed: int = 0) -> OlatBasis:
    g = torch.Generator().manual_seed(seed)
    imgs = torch.rand(lights, h, w, 3, generator=g) ** 3
    b = torch.rand(h, w, 3, generator=g) * 0.05 if base else None
    return OlatBasis([f"l{i}" for i in range(lights)], imgs, b)


def naive(basis: OlatBasis, m: torch.Tensor) -> torch.Tensor:
    out = torch.einsum("blc,lhwc->bhwc", m, basis.images)
    return out + basis.base if basis.base is not None else out


@pytest.mark.parametrize("multilayer", [False, True])
def test_save_load_roundtrip(tmp_path, multilayer):
    b = make_basis()
    meta = b.save(tmp_path, multilayer=multilayer)
    loaded = OlatBasis.load(meta)
    assert loaded.names == b.names
    assert torch.equal(loaded.images, b.images)
    assert torch.equal(loaded.base, b.base)
    also = OlatBasis.load(tmp_path)  # the folder works too
    assert also.names == b.names


def test_render_matches_weighted_sum_and_batches():
    b = make_basis(lights=4)
    r = OlatRenderer(b)
    m = torch.rand(5, 4, 3) * 2
    theta = m.reshape(5, -1)
    out = r.render(theta)
    assert out.shape == (5, 12, 16, 3) and out.dtype == torch.float32
    torch.testing.assert_close(out, naive(b, m), rtol=1e-5, atol=1e-6)
    # rows are independent: rendering one row alone gives the same image
    torch.testing.assert_close(r.render(theta[2:3])[0], out[2], rtol=1e-6, atol=1e-7)


def test_half_precision_storage_close_and_smaller():
    b = make_basis(lights=4)
    full, half = OlatRenderer(b), OlatRenderer(b, dtype="float16", chunk_pixels=37)
    assert half.basis_bytes() * 2 == full.basis_bytes()
    m = (torch.rand(3, 4 * 3) * 2).requires_grad_()
    a, h = full.render(m), half.render(m)
    torch.testing.assert_close(h, a, rtol=2e-3, atol=2e-3)
    ga, = torch.autograd.grad(a.square().sum(), m)
    gh, = torch.autograd.grad(h.square().sum(), m)
    torch.testing.assert_close(gh, ga, rtol=5e-3, atol=1e-3)


def test_gradient_is_exact():
    b = make_basis(lights=2, h=4, w=5)
    r = OlatRenderer(b)
    theta = (torch.rand(2, 6, dtype=torch.float64) + 0.5).requires_grad_()
    r32 = r
    img = r32.render(theta.float())
    (g,) = torch.autograd.grad(img.sum(), theta)
    # d/dθ_{l,c} Σ_pixels X = Σ_pixels I_l[..., c]
    expect = b.images.sum(dim=(1, 2)).reshape(-1).double()
    torch.testing.assert_close(g[0], expect, rtol=1e-5, atol=1e-5)


def test_hsv_color_model():
    rgb = hsv_to_rgb(torch.tensor([[0.0, 1.0, 2.0], [1 / 3, 1.0, 1.0], [0.5, 0.0, 0.7]]))
    torch.testing.assert_close(rgb, torch.tensor([[2.0, 0, 0], [0, 1.0, 0], [0.7, 0.7, 0.7]]))
    b = make_basis(lights=2)
    r = OlatRenderer(b, color_model="hsv")
    assert r.parameter_space().names == ["l0", "l1"]
    theta = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0, 1.0]])  # white at value 1 == unit multipliers
    torch.testing.assert_close(r.render(theta), naive(b, torch.ones(1, 2, 3)))


def test_validation_errors(tmp_path):
    b = make_basis()
    b.save(tmp_path / "ok")
    meta = json.loads((tmp_path / "ok" / "olat.json").read_text())
    # a light of another size
    from rendergrad.imageio import save_exr
    save_exr(tmp_path / "ok" / "small.exr", np.zeros((6, 6, 3), np.float32))
    bad = dict(meta, lights=meta["lights"][:1] + [{"name": "small", "file": "small.exr"}])
    (tmp_path / "ok" / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="same size"):
        OlatBasis.load(tmp_path / "ok" / "bad.json")
    # a missing file, a missing layer, duplicate names, two-channel images
    (tmp_path / "ok" / "missing.json").write_text(json.dumps({"lights": [{"name": "a", "file": "nope.exr"}]}))
    with pytest.raises(ConfigError, match="not found"):
        OlatBasis.load(tmp_path / "ok" / "missing.json")
    (tmp_path / "ok" / "layer.json").write_text(json.dumps({"lights": [{"name": "a", "layer": "a"}]}))
    with pytest.raises(ConfigError, match="multi-layer"):
        OlatBasis.load(tmp_path / "ok" / "layer.json")
    with pytest.raises(ConfigError, match="duplicate"):
        OlatBasis(["a", "a"], torch.zeros(2, 2, 2, 3))
    np.save(tmp_path / "ok" / "two.npy", np.zeros((12, 16, 2), np.float32))
    (tmp_path / "ok" / "two.json").write_text(json.dumps({"lights": [{"name": "a", "file": "two.npy"}]}))
    with pytest.raises(ConfigError, match="channels"):
        OlatBasis.load(tmp_path / "ok" / "two.json")
    with pytest.raises(ConfigError, match="theta_min < theta_max"):
        OlatRenderer(b, theta_min=2, theta_max=1)
    with pytest.raises(ConfigError, match="metadata not found"):
        OlatRenderer(str(tmp_path / "nowhere"))


def test_capture_roundtrip_from_a_linear_renderer(tmp_path):
    """Capturing an olat renderer (it declares its lights) gives back its own basis."""
    b = make_basis(lights=3)
    src = OlatRenderer(b)
    cap = capture(src, tmp_path / "cap")
    assert cap.renders == 3 + 2  # lights off, three solos, all on
    assert cap.relative_error < 1e-6
    got = OlatBasis.load(tmp_path / "cap")
    torch.testing.assert_close(got.images, b.images, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.base, b.base, rtol=1e-5, atol=1e-6)
    assert [l["parameter"] for l in got.lights] == ["l0", "l1", "l2"]
    # a renderer without light parameters is refused with a reason
    from rendergrad.renderers.toy import ToyRenderer
    with pytest.raises(ConfigError, match="declares no light parameters"):
        capture(ToyRenderer())


def test_capture_of_a_light_subset_keeps_the_other_lights_in_the_base():
    """`--light l0 --light l2`: the light left out stays on at its scene value in every render,
    so it is part of the base and base + solos still add up to the full scene."""
    b = make_basis(lights=3)
    src = OlatRenderer(b)
    cap = capture(src, lights=["l0", "l2"], params={"l1": [0.5, 0.5, 0.5]})
    assert cap.renders == 2 + 2 and cap.relative_error < 1e-6
    assert cap.basis.names == ["l0", "l2"]
    torch.testing.assert_close(cap.basis.images, b.images[[0, 2]], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cap.basis.base, b.base + 0.5 * b.images[1], rtol=1e-5, atol=1e-6)


def test_engine_optimize_with_olat_renderer():
    """The olat renderer is an ordinary differentiable renderer for rendergrad.optimize."""
    b = make_basis(lights=2, base=False)
    r = OlatRenderer(b, theta_max=4.0)
    truth = {"l0": [1.5, 0.5, 2.0], "l1": [0.25, 1.0, 3.0]}
    res = rg.optimize(r, "mse", "analytic", target_params=truth, lr=0.05, steps=300)
    got = np.array(res.params["l0"] + res.params["l1"])
    assert np.abs(got - np.array(truth["l0"] + truth["l1"])).max() < 1e-2


def test_olat_ad_recovers_multipliers_and_is_deterministic():
    b = make_basis(lights=3)
    r = OlatRenderer(b)
    truth = torch.tensor([[1.4, 0.6, 1.0], [0.3, 1.2, 0.9], [2.0, 1.7, 0.5]])
    target = r.relight(truth.unsqueeze(0))[0].detach()
    res = olat_ad(r, MSE(), target, steps=230, seed=3)
    assert res.multipliers.shape == (4, 3, 3)
    assert (res.multipliers - truth).abs().max() < 1e-4
    again = olat_ad(r, MSE(), target, steps=230, seed=3)
    assert torch.equal(again.multipliers, res.multipliers)
    # the optimization's relights (B per step); the final scoring of the candidates is an extra
    assert res.renders == 4 * 230 and res.extra_renders == 4
    assert len(res.snapshots) >= 2 and res.snapshots[0][1].shape[0] == 4
    # clamping keeps every candidate inside the bounds
    hi = olat_ad(OlatRenderer(b, theta_max=1.1), MSE(), target, steps=60)
    assert float(hi.multipliers.max()) <= 1.1 + 1e-6 and float(hi.multipliers.min()) >= 0.0


def test_olat_ad_renders_through_the_batch_evaluator():
    """Renders are counted and checked on the one evaluation path, chunked by max_batch."""
    from rendergrad.errors import RendererOutputError

    class Counting(OlatRenderer):
        rows = 0

        def render(self, theta):
            Counting.rows += theta.shape[0]
            return super().render(theta)

    b = make_basis(lights=2)
    target = OlatRenderer(b).relight(torch.tensor([[[1.3, 0.7, 1.0], [0.5, 1.1, 1.6]]]))[0].detach()
    whole = olat_ad(OlatRenderer(b), MSE(), target, batch=5, steps=12, seed=2)
    chunked = olat_ad(Counting(b), MSE(), target, batch=5, steps=12, seed=2, max_batch=2)
    torch.testing.assert_close(chunked.multipliers, whole.multipliers, rtol=0, atol=1e-6)
    assert chunked.renders == whole.renders == 5 * 12 and chunked.extra_renders == 5
    assert Counting.rows == chunked.renders + chunked.extra_renders
    assert [h["evaluations"] for h in chunked.history] == [5 * (i + 1) for i in range(12)]
    assert chunked.to_json()["renders"] == 60
    # A basis that relights to NaN is refused by the evaluator, naming the multipliers.
    bad = make_basis(lights=2)
    bad.images[1, 0, 0, 0] = float("nan")
    with pytest.raises(RendererOutputError, match=r"NaN/inf pixel values at parameters \{'l0'"):
        olat_ad(OlatRenderer(bad), MSE(), target, batch=2, steps=3)


def test_random_resized_crop_shapes_and_identity():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 10, 14, 3)
    out, t = random_resized_crop(x, g, (1.0, 1.0), extra=x[0])
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)  # full-size crop = identity
    out, t = random_resized_crop(x, g, (0.3, 0.5), extra=x[0])
    assert out.shape == x.shape and t.shape == x.shape
    assert not torch.allclose(out, x)


def test_apply_outputs():
    b = OlatBasis(["key", "fill"], torch.zeros(2, 2, 2, 3), lights=[
        {"name": "key", "parameter": "key", "unit": [12.0, 11.0, 10.0]},
        {"name": "fill", "parameter": "Fill.energy", "unit": 100.0}])
    vals = source_params(b, {"key": [2.0, 1.0, 0.5], "fill": [1.0, 1.0, 1.0]})
    assert vals["key"] == [24.0, 11.0, 5.0]
    assert vals["Fill.energy"] == pytest.approx(100.0)
    script = blender_script(b, {"key": [2.0, 1.0, 0.5], "fill": [0.5, 0.5, 0.5]})
    compile(script, "apply_blender.py", "exec")
    assert '"Fill"' in script and "light.energy" in script


def test_cli_bad_input_is_a_clear_error(tmp_path, capsys):
    """Wrong input a user plausibly types gets exit code 2 and a message, never a traceback."""
    from rendergrad.cli import main
    make_basis(lights=2).save(tmp_path / "basis")
    out = tmp_path / "opt"
    assert main(["olat", "optimize", str(tmp_path / "basis"), "--target-multipliers", '{"l0": [1.5, 1, 1]}',
                 "--steps", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    cases = [
        (["olat", "apply", str(out), "--basis", str(tmp_path / "basis"), "--candidate", "9"],
         "--candidate 9 does not exist; "),
        (["olat", "apply", str(tmp_path / "basis" / "olat.json"), "--basis", str(tmp_path / "basis")],
         'has no "multipliers"'),
        (["olat", "optimize", str(tmp_path / "basis"), "--target", str(tmp_path / "x.exr"),
          "--target-multipliers", "{}", "--out", str(tmp_path / "o2")], "not both"),
        (["olat", "optimize", str(tmp_path / "basis"), "--out", str(tmp_path / "o3")], "--target-multipliers"),
        (["olat", "optimize", str(tmp_path / "basis"), "--target-multipliers", "{}", "--option", "foo=1",
          "--out", str(tmp_path / "o4")], "objective 'mse': unknown option 'foo'"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err, (argv, err)
    assert main(["olat", "apply", str(out), "--basis", str(tmp_path / "basis"), "--candidate", "1",
                 "--format", "toml"]) == 0
    assert capsys.readouterr().out.startswith("[params]\ninit = {")
