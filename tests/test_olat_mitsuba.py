"""OLAT capture from real Mitsuba, OLAT-AD recovery to 1e-4, and the ``rendergrad olat`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("OpenEXR")
pytest.importorskip("mitsuba")
pytest.importorskip("rendergrad.renderers.mitsuba")

from rendergrad.cli import main
from rendergrad.plugins.objectives import MSE
from rendergrad.registry import registry
from rendergrad.renderers.olat import OlatBasis, OlatRenderer
from rendergrad.renderers.olat_tools import capture, olat_ad

ROOT = Path(__file__).resolve().parents[1]
SCENE = f"{ROOT / 'examples' / 'olat' / 'scene.py'}:three_lights"
LIGHTS = ("key", "fill", "rim")
TRUTH = torch.tensor([[1.6, 1.2, 0.8], [0.5, 0.7, 1.4], [2.2, 1.9, 1.1]])


def mitsuba(seed_mode: str, spp: int = 16, seed: int = 0):
    params = [{"name": n, "key": f"{n}.intensity.value", "multiply": True, "low": 0.0, "high": 8.0, "init": 1.0}
              for n in LIGHTS]
    return registry().create("renderer", "mitsuba", {
        "scene": SCENE, "scene_args": {"width": 40, "height": 30}, "params": params, "spp": spp,
        "seed_mode": seed_mode, "seed": seed})


@pytest.fixture(scope="module")
def basis_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mitsuba_basis")
    r = mitsuba("fixed")
    assert r.light_parameters() == list(LIGHTS)
    cap = capture(r, out)
    # Same samples for every render: light transport is linear, so the sum is exact up to rounding.
    assert cap.relative_error < 1e-5, cap.relative_error
    assert cap.basis.base is not None and float(cap.basis.base.max()) > 0  # the glowing ball
    return out


def test_capture_sum_matches_full_render_within_noise(tmp_path):
    """With independent seeds the check error is at the level of Monte Carlo noise."""
    r = mitsuba("independent", spp=16)
    cap = capture(r, tmp_path)
    full2 = torch.as_tensor(mitsuba("independent", spp=16, seed=99).render(torch.ones(1, 9)))[0]
    noise = float((cap.full - full2).norm() / cap.full.norm())  # two full renders, different samples
    # base + Σ I_i carries the noise of 2·L + 1 independent renders, so allow a few noise levels
    assert cap.relative_error < 3 * noise, (cap.relative_error, noise)
    assert cap.relative_error > 1e-4  # and it really is noisy: the check is not vacuous


def test_olat_ad_recovers_known_multipliers_from_mitsuba_basis(basis_dir):
    r = OlatRenderer(basis_dir)
    assert r.names == list(LIGHTS)
    target = r.relight(TRUTH.unsqueeze(0))[0].detach()
    res = olat_ad(r, MSE(), target)  # paper defaults: batch 4, lr 0.06, 230 steps, clamp
    err = (res.multipliers - TRUTH).abs()
    assert float(err.max()) < 1e-4, err.max()
    # a target rendered by Mitsuba itself at those intensities (same samples) is the same image
    mi_target = torch.as_tensor(mitsuba("fixed").render(TRUTH.reshape(1, -1)))[0]
    torch.testing.assert_close(target, mi_target, rtol=1e-4, atol=1e-5)


def test_cli_capture_optimize_apply(tmp_path, basis_dir):
    cfg = tmp_path / "capture.toml"
    params = ", ".join(f'{{ name = "{n}", key = "{n}.intensity.value", multiply = true, low = 0.0, high = 8.0 }}'
                       for n in LIGHTS)
    cfg.write_text(f'[renderer]\nname = "mitsuba"\noptions = {{ scene = "{SCENE}", spp = 4, seed_mode = "fixed", '
                   f'scene_args = {{ width = 24, height = 18 }}, params = [{params}] }}\n')
    assert main(["olat", "capture", "--config", str(cfg), "--out", str(tmp_path / "b"), "--multilayer"]) == 0
    b = OlatBasis.load(tmp_path / "b")
    assert b.names == list(LIGHTS) and (tmp_path / "b" / "basis.exr").is_file()
    assert b.meta["check"]["relative_error"] < 1e-5

    mult = tmp_path / "m.json"
    mult.write_text(json.dumps({n: TRUTH[i].tolist() for i, n in enumerate(LIGHTS)}))
    out = tmp_path / "run"
    assert main(["olat", "optimize", str(basis_dir), "--target-multipliers", str(mult), "--out", str(out),
                 "--steps", "230", "--batch", "2"]) == 0
    res = json.loads((out / "multipliers.json").read_text())
    got = torch.tensor([res["multipliers"][n] for n in LIGHTS])
    assert float((got - TRUTH).abs().max()) < 1e-4
    for f in ("contact_sheet.png", "best.exr", "best.png", "params.json", "apply_blender.py"):
        assert (out / f).is_file(), f
    params = json.loads((out / "params.json").read_text())  # values for the mitsuba renderer's params
    assert params["key"] == pytest.approx(TRUTH[0].tolist(), abs=1e-4)

    toml_out = tmp_path / "apply.toml"
    assert main(["olat", "apply", str(out), "--basis", str(basis_dir), "--format", "toml",
                 "--out", str(toml_out)]) == 0
    import tomllib
    init = tomllib.loads(toml_out.read_text())["params"]["init"]
    assert init["rim"] == pytest.approx(TRUTH[2].tolist(), abs=1e-4)
    assert main(["olat", "capture", "--out", str(tmp_path / "x")]) == 2  # no renderer: a clear error
