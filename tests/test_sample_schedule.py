"""Samples per pixel that follow the run (the mse option ``samples = "adaptive"``).

``noisy_gain`` (tests/executor_plugins.py) renders a flat image whose noise grows as
``1 / sqrt(fraction)``: the render noise the schedule measures is real noise that the fraction
controls, as on a path tracer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import rendergrad as rg
from rendergrad.errors import ConfigError
from rendergrad.evaluation import BatchEvaluator
from rendergrad.samples import WINDOW, SampleSchedule

sys.path.insert(0, str(Path(__file__).parent))
import executor_plugins as ep  # noqa: E402

REG = rg.discover(extra_plugins=[ep])
TARGET = torch.full((16, 16, 3), 0.6)


def feed(schedule: SampleSchedule, noise: float, spread: float, batches: int, seed: int = 0) -> None:
    """Batches of two points whose copies differ by ``noise`` and whose true scores by ``spread``."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        true = torch.randn(2, generator=g, dtype=torch.float64) * spread
        copies = true + torch.randn(2, 2, generator=g, dtype=torch.float64) * noise
        schedule.update(copies, copies.mean(dim=0))


def test_the_fraction_falls_to_the_floor_while_noise_is_small_and_climbs_back_when_it_is_not():
    s = SampleSchedule(1 / 16)
    assert s.fraction == 1.0                       # starts at full samples
    feed(s, noise=1e-3, spread=1.0, batches=WINDOW // 2 - 1)
    assert s.fraction == 1.0                       # no decision before a window of points
    feed(s, noise=1e-3, spread=1.0, batches=1)
    assert s.fraction == 0.5 and s.last_ratio < s.low
    feed(s, noise=1e-3, spread=1.0, batches=10 * WINDOW)
    assert s.fraction == 1 / 16                    # never below the floor
    feed(s, noise=1.0, spread=1e-3, batches=10 * WINDOW)
    assert s.fraction == 1.0                       # noise dominates: back to every sample


def test_the_noise_inside_the_spread_is_not_counted_as_signal():
    """Pure noise spreads the scores as much as it spreads the copies: no signal at all, so the
    fraction must rise, whatever the raw spread of the scores."""
    s = SampleSchedule(1 / 16)
    s.fraction = 1 / 4
    feed(s, noise=1.0, spread=0.0, batches=WINDOW // 2)   # one window
    assert s.fraction == 1 / 2


def test_the_state_round_trips_mid_window():
    s = SampleSchedule(1 / 8)
    feed(s, noise=1e-3, spread=1.0, batches=WINDOW // 2 + 3)
    t = SampleSchedule(1 / 8)
    t.load_state_dict(s.state_dict())
    feed(s, noise=1e-3, spread=1.0, batches=WINDOW, seed=1)
    feed(t, noise=1e-3, spread=1.0, batches=WINDOW, seed=1)
    assert (s.fraction, s.state_dict()) == (t.fraction, t.state_dict())


def test_the_evaluator_renders_at_the_scheduled_fraction_and_counts_its_cost():
    r = ep.NoisyGain(size=16, noise=0.01)
    ev = BatchEvaluator(r, REG.create("objective", "mse", {"samples": "adaptive"}), r.parameter_space(), TARGET)
    assert ev.schedule is not None and ev.schedule.floor == 2 / 16
    ev.schedule.fraction = 0.25
    ev(torch.tensor([[0.2], [0.9]], dtype=torch.float64))
    assert r.fractions == [0.125] * 4 and r.fraction == 1.0   # half of a quarter per copy, then restored
    assert ev.renders == 2 and ev.cost == 0.5
    # Gradients through the renderer use every sample, whatever the schedule says.
    u = torch.tensor([[0.5]], dtype=torch.float64, requires_grad=True)
    ev(u, differentiable=True).sum().backward()
    assert r.fractions[-2:] == [0.5, 0.5] and ev.cost == 1.5
    # The preview for the record is a full-sample image and costs the optimization nothing.
    ev.preview_scored(torch.tensor([0.5], dtype=torch.float64))
    assert r.fractions[-2:] == [0.5, 0.5] and ev.renders == 3 and ev.cost == 1.5


def test_a_run_spends_fewer_samples_and_still_solves_and_records_them():
    """Small render noise against the spread of a wide search: the samples come down."""
    kw = dict(target=TARGET, renderer_options={"size": 16, "noise": 0.02}, steps=60, seed=3, registry=REG,
              final_render=False)
    full = rg.optimize("noisy_gain", "mse", "prdpt", **kw)
    adaptive = rg.optimize("noisy_gain", "mse", "prdpt", objective_options={"samples": "adaptive"}, **kw)
    fractions = [h["sample_fraction"] for h in adaptive.history]
    assert min(fractions) < 1.0
    assert adaptive.history[-1]["cost"] < 0.8 * adaptive.evaluations
    assert "cost" not in full.history[-1]
    assert abs(full.params["level"] - 0.6) < 0.02
    assert abs(adaptive.params["level"] - 0.6) < 0.02, adaptive.params


def test_a_resumed_run_with_a_sample_schedule_is_bit_identical(tmp_path):
    from rendergrad.callbacks import Callback

    class StopAt(Callback):
        def on_step(self, *, record, **kw):
            if record["step"] == 13:
                raise KeyboardInterrupt

    kw = dict(target=TARGET, renderer_options={"size": 16, "noise": 0.02}, steps=30, seed=5, registry=REG,
              final_render=False, objective_options={"samples": "adaptive"})
    full = rg.optimize("noisy_gain", "mse", "prdpt", checkpoint_dir=tmp_path / "a", **kw)
    assert len({h["sample_fraction"] for h in full.history}) > 1   # the fraction changed in the run
    with pytest.raises(KeyboardInterrupt):
        rg.optimize("noisy_gain", "mse", "prdpt", checkpoint_dir=tmp_path / "b", callbacks=[StopAt()], **kw)
    resumed = rg.optimize("noisy_gain", "mse", "prdpt", checkpoint_dir=tmp_path / "b", resume=True, **kw)
    assert [(h["loss"], h["cost"], h["sample_fraction"]) for h in resumed.history] == \
        [(h["loss"], h["cost"], h["sample_fraction"]) for h in full.history]
    assert resumed.params == full.params


def test_a_schedule_needs_split_renders_and_a_known_option():
    with pytest.raises(ConfigError, match='samples must be "full" or "adaptive"'):
        REG.create("objective", "mse", {"samples": "low"})
    r = ep.NoisyGain(size=4)
    plain = BatchEvaluator(r, REG.create("objective", "mse", {"samples": "adaptive", "unbiased": False}),
                           r.parameter_space(), TARGET[:4, :4])
    assert plain.schedule is None   # no copies, no measure of the noise: full samples
