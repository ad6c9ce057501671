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
