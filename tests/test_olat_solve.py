"""``rendergrad olat solve``: exact bounded least squares, and OLAT-AD measured against it."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

pytest.importorskip("OpenEXR")
pytest.importorskip("scipy")

from scipy.optimize import lsq_linear  # noqa: E402

from rendergrad.cli import main  # noqa: E402
from rendergrad.plugins.objectives import MSE  # noqa: E402
from rendergrad.renderers.olat import OlatBasis, OlatRenderer  # noqa: E402
from rendergrad.renderers.olat_solve import gram, solve  # noqa: E402
from rendergrad.renderers.olat_tools import olat_ad  # noqa: E402


def make_basis(lights: int = 4, h: int = 12, w: int = 16, seed: int = 0) -> OlatBasis:
    g = torch.Generator().manual_seed(seed)
    return OlatBasis([f"l{i}" for i in range(lights)], torch.rand(lights, h, w, 3, generator=g) ** 3,
                     torch.rand(h, w, 3, generator=g) * 0.05)


def noisy_target(basis: OlatBasis, truth: torch.Tensor, noise: float = 0.03, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        clean = OlatRenderer(basis).relight(truth.unsqueeze(0))[0]
    return clean + noise * torch.randn(clean.shape, generator=g)


# one multiplier beyond the upper clamp, one below zero: both bounds are active at the optimum
TRUTH = torch.tensor([[1.4, 0.6, 1.0], [0.3, 11.0, 0.9], [2.0, 1.7, -0.4], [0.8, 1.1, 1.3]])


def test_solve_is_the_bounded_least_squares_optimum():
    b = make_basis()
    target = noisy_target(b, TRUTH)
    res = solve(b, target, theta_min=0.0, theta_max=8.0)
    a = b.images.double().reshape(4, -1, 3)
    y = (target - b.base).double().reshape(-1, 3)
    for c in range(3):   # the reference: scipy's BVLS on the full pixel matrix, float64
        ref = lsq_linear(a[:, :, c].T.numpy(), y[:, c].numpy(), bounds=(0.0, 8.0), method="bvls").x
        np.testing.assert_allclose(res.multipliers[:, c].numpy(), ref, atol=1e-5)
    assert "l1.G" in res.active["high"] and "l2.B" in res.active["low"]
    # KKT: the gradient vanishes on free multipliers and points out of the box at active bounds
    g, r, _ = gram(b.images, target - b.base)
    theta = res.multipliers.double().numpy()
    for c in range(3):
        grad = g[c] @ theta[:, c] - r[c]
        scale = np.abs(r[c]).max()
        for i in range(4):
            if theta[i, c] <= 1e-9:
                assert grad[i] >= -1e-6 * scale
            elif theta[i, c] >= 8.0 - 1e-9:
                assert grad[i] <= 1e-6 * scale
            else:
                assert abs(grad[i]) <= 1e-5 * scale, (i, c, grad[i])
    # the reported loss is the objective's own MSE of the relit image
    img = OlatRenderer(b).relight(res.multipliers.unsqueeze(0))
    assert res.loss == pytest.approx(float(MSE().loss(img, target)[0]), rel=1e-6)

    # one scalar per light: the same problem with the three channels stacked
    sc = solve(b, target, color="scalar")
    assert torch.equal(sc.multipliers[:, 0], sc.multipliers[:, 1])
    ref = lsq_linear(a.permute(0, 2, 1).reshape(4, -1).T.numpy(), y.T.reshape(-1).numpy(), bounds=(0.0, 8.0),
                     method="bvls").x
    np.testing.assert_allclose(sc.multipliers[:, 0].numpy(), ref, atol=1e-5)
    assert sc.loss > res.loss   # fewer degrees of freedom


def test_solve_recovers_reachable_multipliers():
    b = make_basis(lights=3)
    truth = TRUTH[[0, 3, 0]].clone()
    truth[2] = torch.tensor([0.2, 2.5, 7.5])
    res = solve(b, noisy_target(b, truth, noise=0.0))
    assert float((res.multipliers - truth).abs().max()) < 1e-4 and res.loss < 1e-10
    assert res.active == {"low": [], "high": []}


def test_olat_ad_reaches_the_solve_loss_within_one_percent():
    """OLAT-AD (MSE, paper defaults, no augmentation) against the exact optimum, clamps active."""
    b = make_basis(lights=4, h=24, w=24, seed=2)
    target = noisy_target(b, TRUTH, noise=0.03, seed=3)
    res = solve(b, target)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # first use imports torch._dynamo: not OLAT-AD's time
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a 24×24 basis: more threads only contend on a busy machine
    try:
        t0 = time.perf_counter()
        ad = olat_ad(OlatRenderer(b), MSE(), target, seed=0)
        ad_s = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    final = float(ad.losses[ad.best])
    steps_to = next(h["step"] + 1 for h in ad.history if h["loss"] <= 1.01 * res.loss)
    print(f"solve: loss {res.loss:.6g} in {res.seconds:.4f}s; OLAT-AD: {final:.6g} (x{final / res.loss:.5f}) "
          f"after 230 steps in {ad_s:.2f}s, within 1 % after {steps_to} steps")
    assert res.loss * (1 - 1e-5) <= final <= 1.01 * res.loss
    assert float((ad.multipliers[ad.best] - res.multipliers).abs().max()) < 0.05


def test_cli_solve_writes_multipliers_like_optimize(tmp_path, capsys):
    from rendergrad.imageio import save_exr
    b = make_basis()
    b.save(tmp_path / "basis")
    save_exr(tmp_path / "target.exr", noisy_target(b, TRUTH).numpy())
    out = tmp_path / "solve"
    assert main(["olat", "solve", str(tmp_path / "basis"), "--target", str(tmp_path / "target.exr"),
                 "--out", str(out)]) == 0
    assert "at the clamp" in capsys.readouterr().out
    data = json.loads((out / "multipliers.json").read_text())
    assert data["lights"] == b.names and data["best"] == 0 and data["settings"]["objective"] == "mse"
    assert data["candidates"][0]["multipliers"] == data["multipliers"]
    assert data["multipliers"]["l1"][1] == pytest.approx(8.0)
    for f in ("best.exr", "best.png", "params.json", "apply_blender.py"):
        assert (out / f).is_file(), f
    assert main(["olat", "apply", str(out), "--basis", str(tmp_path / "basis"), "--format", "toml"]) == 0
    assert capsys.readouterr().out.startswith("[params]")
    assert main(["olat", "solve", str(tmp_path / "basis"), "--target", str(tmp_path / "target.exr"),
                 "--color", "scalar", "--theta-max", "inf", "--out", str(tmp_path / "s1")]) == 0
    m = json.loads((tmp_path / "s1" / "multipliers.json").read_text())["multipliers"]
    assert all(v[0] == v[1] == v[2] for v in m.values())
    capsys.readouterr()
    save_exr(tmp_path / "small.exr", np.zeros((6, 6, 3), np.float32))
    for argv, msg in [
        (["--target", str(tmp_path / "small.exr")], "the target is 6x6 but the basis is 16x12"),
        ([], "exactly one of --target"),
        (["--target", str(tmp_path / "target.exr"), "--target-multipliers", "{}"], "exactly one of --target"),
        (["--target", str(tmp_path / "target.exr"), "--theta-min", "3", "--theta-max", "1"], "theta_min < theta_max"),
    ]:
        assert main(["olat", "solve", str(tmp_path / "basis"), *argv, "--out", str(tmp_path / "x")]) == 2, argv
        assert msg in capsys.readouterr().err, argv
