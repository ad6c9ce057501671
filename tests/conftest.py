import os

import pytest
import torch

# Two cores: keep torch from oversubscribing when tests run next to renderer processes.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def toy_scene():
    """A small soft toy scene: one disc, parameters x, y."""
    return {
        "resolution": 32, "mode": "soft", "softness": 2.0,
        "shapes": [{"type": "disc", "x": "x", "y": "y", "radius": 0.15, "color": [1.0, 0.5, 0.2]}],
        "params": [{"name": "x", "init": 0.4}, {"name": "y", "init": 0.6}],
    }


@pytest.fixture
def plateau_scene():
    """The plateau task at test size: a hard-edged disc that does not overlap its target.

    Bounds keep the disc inside the frame: a disc leaving the frame also lowers the loss and
    would make the frame's edges false minima.
    """
    return {
        "resolution": 32, "mode": "hard",
        "shapes": [{"type": "disc", "x": "x", "y": "y", "radius": 0.1, "color": [1.0, 0.45, 0.2]}],
        "params": [{"name": "x", "init": 0.25, "low": 0.12, "high": 0.88},
                   {"name": "y", "init": 0.75, "low": 0.12, "high": 0.88}],
    }


@pytest.fixture
def plateau_target():
    return {"x": 0.7, "y": 0.3}
