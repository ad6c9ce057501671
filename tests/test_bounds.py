"""Parameter values that leave rendergrad lie inside their bounds exactly, as float64.

A bridge server written from docs/bridge-protocol.md checks ``low <= value <= high`` with no
tolerance; bounds such as 0.15 and 0.85 are not exact in binary floating point, so a value that
passed through float32 on the way arrives one rounding step outside and is refused.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import rendergrad as rg

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = ROOT / "examples" / "bridge" / "minimal_server.py"


class Recording(rg.Renderer):
    """Records every theta it is given; a plain in-process plugin."""

    name = "recording"

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def parameter_space(self) -> rg.ParamSpace:
        return rg.ParamSpace([rg.Param("a", low=0.15, high=0.85, init=0.8),
                              rg.Param("b", low=0.1, high=0.8, init=0.3, log=True),
                              rg.Param("k", kind="categorical", choices=["p", "q", "r"], init="q")])

    def render(self, theta):
        self.seen.append(theta.detach().clone())
        v = theta[:, :2].to(torch.float32)
        return v.reshape(-1, 1, 1, 2).expand(-1, 4, 4, 2).contiguous()


def test_to_theta_maps_the_unit_cube_corners_onto_the_bounds_exactly():
    space = Recording().parameter_space()
    u = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0 + 1e-9, -1e-12, 0.49]], dtype=torch.float32)
    theta = space.to_theta(u)
    assert theta.dtype == torch.float64
    assert theta[0].tolist() == [0.15, 0.1, 0.0] and theta[1].tolist() == [0.85, 0.8, 2.0]
    assert bool((theta >= space.low).all() and (theta <= space.high).all())
    assert theta[2, 2].item() == 1.0   # discrete values are exact


def test_every_theta_a_plugin_receives_is_float64_and_inside_the_bounds():
    r = Recording()
    rg.optimize(r, "mse", "prdpt", target_params={"a": 0.85, "b": 0.8, "k": "r"},
                estimator_options={"sigma": 0.3, "samples": 8}, steps=15, lr=0.2, seed=3)
    space = r.parameter_space()
    seen = torch.cat(r.seen)
    assert seen.dtype == torch.float64
    assert bool((seen >= space.low).all() and (seen <= space.high).all())
    # the bound itself was asked for (the clamp), and arrived as the exact float64 bound
    assert (seen[:, 0] == 0.85).any() and (seen[:, 1] == 0.8).any()
    assert set(seen[:, 2].tolist()) <= {0.0, 1.0, 2.0}


def test_a_strict_server_written_from_the_doc_runs_prdpt_to_its_target():
    """minimal_server.py checks bounds exactly; with --margin 0.15, x and y span [0.15, 0.85]."""
    from rendergrad.renderers.bridge import BridgeRenderer
    r = BridgeRenderer(command=[sys.executable, str(MINIMAL), "{endpoint}", "--size", "24", "--margin", "0.15"],
                       workers=2, timeout=20)
    try:
        assert r.space["x"].high == 0.85
        res = rg.optimize(r, "mse", "prdpt", target_params={"x": 0.7, "y": 0.35, "power": 2.0},
                          estimator_options={"sigma": 0.3, "samples": 8}, lr=0.03, steps=300, seed=0)
        assert r.stats["lost"] == 0 and r.stats["retries"] == 0
    finally:
        r.close()
    assert res.params["x"] == pytest.approx(0.7, abs=0.03) and res.params["y"] == pytest.approx(0.35, abs=0.03)
    assert res.params["power"] == pytest.approx(2.0, abs=0.15)


def test_rendergrads_own_server_has_no_tolerance():
    from rendergrad.renderers.bridge import protocol as P
    from rendergrad.renderers.bridge.server import Server

    class S(Server):
        def describe(self):
            return {"params": [{"name": "x", "low": 0.15, "high": 0.85, "init": 0.5}],
                    "image": {"height": 2, "width": 2, "channels": 1}}

        def render(self, params):
            return np.zeros((params.shape[0], 2, 2, 1), np.float32)

    s = S()
    s.max_message_bytes, s.max_batch = 1 << 20, 16
    s._prepare()
    ok = P.decode_reply(s.handle(P.encode_request("render", 1, params=np.array([[0.85], [0.15]]))))
    assert ok.ok
    above = float(np.float32(0.85))   # 0.8500000238418579: what a float32 round trip makes of 0.85
    rep = P.decode_reply(s.handle(P.encode_request("render", 2, params=np.array([[above]]))))
    assert not rep.ok and rep.code == P.E_OUT_OF_BOUNDS and "0.8500000238418579" in rep.message
