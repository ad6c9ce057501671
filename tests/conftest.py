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


@pytest.fixture(scope="session")
def run_folders(tmp_path_factory):
    """A folder of real run folders: two finished, one interrupted (Ctrl-C), one failed (the
    renderer raised), one whose process was killed (status left at running)."""
    import json
    import subprocess

    import rendergrad as rg
    from rendergrad.callbacks import Callback
    from rendergrad.hookspecs import hookimpl
    from rendergrad.registry import discover
    from rendergrad.runner import run_config
    from rendergrad.runs import write_status

    class InterruptAt(Callback):
        """Raises KeyboardInterrupt at a step, as Ctrl-C would."""
        name = "interrupt-at"

        def __init__(self, step: int = 3):
            self.step = step

        def on_step(self, *, step):
            if step == self.step:
                raise KeyboardInterrupt

    toy = discover().get("renderer", "toy")

    class Flaky(toy):
        """The toy renderer, failing at its Nth call."""
        name = "flaky-toy"

        def __init__(self, fail_at: int = 5, **kw):
            super().__init__(**kw)
            self.fail_at, self.calls = fail_at, 0

        def render(self, theta):
            self.calls += 1
            if self.calls == self.fail_at:
                raise RuntimeError("worker lost")
            return super().render(theta)

    class Plugin:
        @staticmethod
        @hookimpl
        def rendergrad_callbacks():
            return [InterruptAt]

        @staticmethod
        @hookimpl
        def rendergrad_renderers():
            return [Flaky]

    reg = discover(extra_plugins=[Plugin])
    root = tmp_path_factory.mktemp("runs")
    scene = {"resolution": 16, "mode": "soft", "softness": 2.0,
             "shapes": [{"type": "disc", "x": "x", "y": "y", "radius": 0.2, "color": [1.0, 0.5, 0.2]}],
             "params": [{"name": "x", "init": 0.35}, {"name": "y", "init": 0.65}]}

    def cfg(estimator, steps=8, renderer="toy", **extra):
        c = {"renderer": {"name": renderer, "options": dict(scene)}, "target": {"params": {"x": 0.5, "y": 0.5}},
             "estimator": {"name": estimator}, "optimizer": {"steps": steps, "lr": 0.03, "checkpoint_every": 2}}
        for k, v in extra.items():
            c[k] = v
        return c

    run_config(cfg("spsa"), root / "spsa", progress=False, registry=reg)
    run_config(cfg("prdpt", steps=12), root / "prdpt", progress=False, registry=reg)
    with pytest.raises(KeyboardInterrupt):
        run_config(cfg("spsa", steps=20, callbacks=[{"name": "interrupt-at", "options": {"step": 5}}]),
                   root / "interrupted", progress=False, registry=reg)
    bad = cfg("fd", steps=20, renderer="flaky-toy")
    bad["renderer"]["options"]["fail_at"] = 9
    with pytest.raises(rg.RendererFailure, match="worker lost"):
        run_config(bad, root / "nested" / "failed", progress=False, registry=reg)
    # killed outright: nothing could record why; its status still says running, its process is gone
    run_config(cfg("spsa", steps=4), root / "killed", progress=False, registry=reg)
    (root / "killed" / "result.json").unlink()
    gone = subprocess.Popen(["true"])
    gone.wait()
    write_status(root / "killed", "running")
    st = json.loads((root / "killed" / "status.json").read_text())
    (root / "killed" / "status.json").write_text(json.dumps({**st, "pid": gone.pid}))
    return root
