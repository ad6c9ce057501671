"""Tone maps and the image objectives: ssim, histogram, gradient-histogram, style."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rendergrad as rg
from rendergrad.errors import ConfigError
from rendergrad.imageio import linear_to_srgb
from rendergrad.plugins.image_objectives import SSIM, GradientHistogram, Histogram, Style, soft_histogram
from rendergrad.plugins.tonemap import agx, srgb_decode, srgb_encode, tonemap
from rendergrad.registry import registry


def scene(h: int = 32, w: int = 32, light_x: float = 0.2, gain: float = 1.0) -> torch.Tensor:
    """A lit ramp with a bright spot: where the spot is sets the light's direction."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    spot = torch.exp(-((xs - light_x) ** 2 + (ys - 0.5) ** 2) / 0.05)
    base = 0.05 + 0.6 * spot
    return (gain * base).unsqueeze(-1) * torch.tensor([1.0, 0.8, 0.6])


def test_srgb_matches_reference_and_inverts():
    x = torch.linspace(-0.5, 1.5, 301, dtype=torch.float64)
    np.testing.assert_allclose(srgb_encode(x).numpy(), linear_to_srgb(x.numpy()), atol=1e-12)
    y = torch.linspace(0, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(srgb_decode(srgb_encode(y)), y)
    g = torch.linspace(0, 1, 50).requires_grad_()
    (grad,) = torch.autograd.grad(srgb_encode(g).sum(), g)
    assert torch.isfinite(grad).all()


def test_agx_monotone_bounded_and_rolls_off():
    x = torch.logspace(-4, 3, 200).unsqueeze(-1).expand(-1, 3).contiguous().requires_grad_()
    y = agx(x)
    assert float(y.detach().min()) >= 0 and float(y.detach().max()) <= 1
    assert bool((y[1:, 1] >= y[:-1, 1] - 1e-6).all())
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(g).all()
    # highlights are compressed, not clipped: a 4× brighter highlight still changes the value
    assert float(agx(torch.full((1, 3), 8.0))[0, 0]) > float(agx(torch.full((1, 3), 2.0))[0, 0])
    assert float(srgb_encode(torch.tensor(8.0))) == float(srgb_encode(torch.tensor(2.0)))
    # exposure is a factor of two per stop
    torch.testing.assert_close(tonemap(torch.full((3,), 0.1), "linear", 1.0), torch.full((3,), 0.2))
    with pytest.raises(ConfigError, match="unknown tone map"):
        tonemap(x, "filmic")


def test_ssim_zero_for_identical_and_grows_with_noise():
    t = scene()
    o = SSIM()
    o.prepare(t)
    g = torch.Generator().manual_seed(0)
    noisy = [t + s * torch.randn(t.shape, generator=g) for s in (0.0, 0.02, 0.1)]
    loss = o.loss(torch.stack(noisy).clamp_min(0), t)
    assert float(loss[0]) < 1e-6
    assert float(loss[0]) < float(loss[1]) < float(loss[2])
    with pytest.raises(ConfigError, match="objective 'ssim' compares against a reference: give one"):
        o.loss(torch.stack(noisy), None)


def test_soft_histogram_sums_to_one_and_locates_mass():
    v = torch.full((1, 100), 0.8)
    h = soft_histogram(v, 10)
    assert float(h.sum()) == pytest.approx(1.0)
    assert int(h.argmax()) in (7, 8)


@pytest.mark.parametrize("metric", ["emd", "l1", "chi2"])
def test_histogram_gradient_points_to_target_brightness(metric):
    """Lighting by example: the histogram loss is smallest at, and its gradient points to, the target gain."""
    target = scene(16, 16, gain=1.8)
    o = Histogram(metric=metric, bins=32)
    o.prepare(target)
    gains = torch.tensor([0.9, 1.8, 3.0], requires_grad=True)
    loss = o.loss(gains.view(3, 1, 1, 1) * scene(16, 16), target)
    (g,) = torch.autograd.grad(loss.sum(), gains)
    loss = loss.detach()
    assert float(loss[1]) < 1e-6 < float(loss[0]) and float(loss[2]) > 1e-6
    assert float(g[0]) < 0 < float(g[2])  # descent moves both towards 1.8


def test_histogram_descent_recovers_exposure():
    target = scene(16, 16, gain=1.8)
    o = Histogram(bins=32)
    o.prepare(target)
    gain = torch.tensor(0.6, requires_grad=True)
    opt = torch.optim.Adam([gain], lr=0.08)
    for _ in range(60):
        opt.zero_grad()
        o.loss((gain * scene(16, 16)).unsqueeze(0), target).sum().backward()
        opt.step()
    assert abs(float(gain.detach()) - 1.8) < 0.1, float(gain.detach())


def test_gradient_histogram_sees_light_direction():
    """Same luminance histogram, light from the other side: only the gradient histogram tells."""
    left, right = scene(light_x=0.25), scene(light_x=0.75)
    right_mirror = torch.flip(left, dims=[1])
    gh = GradientHistogram()
    gh.prepare(left)
    same, other = gh.loss(torch.stack([left, right_mirror]), left)
    assert float(same) < 1e-6 and float(other) > 0.05
    lh = Histogram()
    lh.prepare(left)
    assert float(lh.loss(right_mirror.unsqueeze(0), left)[0]) < 1e-5  # blind to direction


def test_style_builtin_pluggable_and_import_string():
    t = scene(light_x=0.3)
    for feats in ("pyramid", "random"):
        o = Style(features=feats)
        o.prepare(t)
        l = o.loss(torch.stack([t, scene(light_x=0.3, gain=2.0)]), t)
        assert float(l[0]) < 1e-10 and float(l[1]) > float(l[0])
    calls = []

    def only_colour(x):
        calls.append(x.shape)
        return [x]
    o = Style(features=only_colour)
    o.prepare(t)
    assert float(o.loss(t.unsqueeze(0) * 0.5, t)[0]) > 0 and calls
    o = Style(features="rendergrad.plugins.image_objectives:PyramidFeatures")
    o.prepare(t)
    assert float(o.loss(t.unsqueeze(0), t)[0]) < 1e-10
    with pytest.raises(ConfigError, match="could not be imported"):
        Style(features="no_such_module:thing")
    with pytest.raises(ConfigError, match="unknown style features"):
        Style(features="vgg")


def test_style_network_features_take_float64_images():
    """The toy renderer returns float64; the float32 `random` network must still score it
    (it raised a dtype mismatch), with gradients reaching the images."""
    t = scene(light_x=0.3).double()
    o = Style(features="random")
    o.prepare(t)
    imgs = torch.stack([t, scene(light_x=0.6).double()]).requires_grad_(True)
    loss = o.loss(imgs, t)
    assert float(loss[0].detach()) < 1e-10 and float(loss[1].detach()) > 0
    loss.sum().backward()
    assert imgs.grad is not None and imgs.grad.dtype == torch.float64 and float(imgs.grad.abs().sum()) > 0


def test_objectives_registered_and_drive_a_renderer():
    reg = registry()
    for n in ("ssim", "histogram", "gradient-histogram", "style"):
        assert reg.info("objective", n).available
    with pytest.raises(ConfigError, match="unknown option"):
        reg.create("objective", "ssim", {"windw": 7})
    scene_opts = {
        "resolution": 16, "mode": "soft", "softness": 0.1,
        "shapes": [{"type": "disc", "x": 0.5, "y": 0.5, "radius": 0.3, "color": "c"}],
        "params": [{"name": "c", "shape": [3], "init": 0.3}],
    }
    res = rg.optimize("toy", "ssim", "analytic", renderer_options=scene_opts,
                      target_params={"c": [0.9, 0.5, 0.2]}, lr=0.08, steps=50)
    assert res.loss < 0.01 and abs(res.params["c"][0] - 0.9) < 0.1
