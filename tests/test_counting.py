"""Render counts and resumes that a plausible bug would break.

Each test here was checked against a bug planted in the code: the render counter counting a
whole batch once per chunk when ``max_batch`` splits it, and a resume that skips
``renderer.load_state_dict`` (a renderer with per-render seeds then draws different noise).
"""

from __future__ import annotations

import pytest
import torch

import rendergrad as rg
from rendergrad.callbacks import Callback


class Counting(rg.Renderer):
    """Counts the parameter rows it renders, independently of rendergrad's own counter."""

    name = "counting"

    def __init__(self) -> None:
        self.rows = 0
        self.calls = 0

    def parameter_space(self) -> rg.ParamSpace:
        return rg.ParamSpace([rg.Param("a", 0.0, 1.0, init=0.2), rg.Param("b", 0.0, 1.0, init=0.8)])

    def render(self, theta):
        self.rows += theta.shape[0]
        self.calls += 1
        return theta.to(torch.float32).reshape(-1, 1, 1, 2).expand(-1, 2, 2, 2).contiguous()


@pytest.mark.parametrize("max_batch", [None, 3, 16])
def test_render_count_equals_the_rows_rendered_when_batches_are_split(max_batch):
    r = Counting()
    res = rg.optimize(r, "mse", "prdpt", target_params={"a": 0.7, "b": 0.3}, steps=5, seed=0,
                      estimator_options={"samples": 8, "elite": 0}, max_batch=max_batch)
    per_step = 8                      # samples = 8 renders a step (no elite: it may render once more)
    assert [h["evaluations"] for h in res.history] == [per_step * (k + 1) for k in range(5)]
    assert res.evaluations + res.extra_renders == r.rows       # every row counted exactly once
    if max_batch == 3:
        assert r.calls == 5 * 3 + 2                            # 8 rows in chunks of 3, + target, final


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, *, record, **kw):
        if record["step"] == self.step:
            raise KeyboardInterrupt


def test_resume_through_a_renderer_with_per_render_seeds_is_bit_identical(tmp_path):
    """Mitsuba in forward mode draws a new seed for every image; a resume must restore its
    counter (renderer.load_state_dict) to continue with the same noise."""
    pytest.importorskip("mitsuba")
    from rendergrad.renderers.mitsuba import MitsubaRenderer
    ok, why = MitsubaRenderer.available()
    if not ok:
        pytest.skip(why)
    scene = {
        "type": "scene",
        "sensor": {"type": "perspective", "fov": 45, "to_world": {"look_at": {"origin": [0, 0, 3], "target": [0, 0, 0]}},
                   # A box filter: with the default Gaussian one, Mitsuba splats each sample into
                   # neighbouring pixels in parallel, and the order of those float32 additions (so
                   # the last bit of a pixel) varied between otherwise identical renders in 8 of
                   # 100 repeats of this test, in the full run as often as in the resumed one; with
                   # a box filter, 0 of 100.
                   "film": {"type": "hdrfilm", "width": 8, "height": 6, "rfilter": {"type": "box"}}},
        "wall": {"type": "rectangle", "bsdf": {"type": "diffuse", "reflectance": {"type": "rgb", "value": [0.5] * 3}}},
        "lamp": {"type": "point", "position": [0.3, 0.2, 2.5], "intensity": {"type": "rgb", "value": [8.0] * 3}},
    }
    kw = dict(renderer_options={"scene": scene, "mode": "forward", "spp": 2, "seed_mode": "independent",
                                "params": [{"name": "albedo", "key": "wall.bsdf.reflectance.value",
                                            "low": 0.05, "high": 0.95}]},
              target_params={"albedo": [0.7, 0.3, 0.5]}, estimator_options={"samples": 2, "schedule": "constant"},
              steps=6, lr=0.05, seed=4)   # the default objective: noise pairs, one sample per pixel each
    full = rg.optimize("mitsuba", "mse", "prdpt", checkpoint_dir=tmp_path / "a", **kw)
    with pytest.raises(KeyboardInterrupt):
        rg.optimize("mitsuba", "mse", "prdpt", checkpoint_dir=tmp_path / "b", callbacks=[StopAt(2)], **kw)
    resumed = rg.optimize("mitsuba", "mse", "prdpt", checkpoint_dir=tmp_path / "b", resume=True, **kw)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert resumed.params == full.params and resumed.loss == full.loss
    assert torch.equal(resumed.final_image, full.final_image)
