"""The plugin contract, enforced: every registered plugin passes the conformance kit, and a
plugin that breaks the contract is reported while the rest keeps working."""

import pytest
import torch

import rendergrad as rg
from rendergrad.hookspecs import hookimpl
from rendergrad.testing import ContractError, check_estimator, check_objective, check_renderer

REG = rg.discover()


def _mitsuba():
    from test_mitsuba import COLOUR, small_room
    return REG.get("renderer", "mitsuba")(small_room(), COLOUR, mode="differentiable", spp=4,
                                          seed_mode="fixed", resolution=[8, 8])


def _olat():
    from test_olat import make_basis
    return REG.get("renderer", "olat")(make_basis(lights=2, base=False), theta_max=4.0)


def _clip(tmp_path):
    from test_objectives_clip import TINY
    import json
    from rendergrad.plugins.clip_objective import import_open_clip
    cfg = tmp_path / "rg-tiny-clip.json"
    cfg.write_text(json.dumps(TINY))
    open_clip = import_open_clip()
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    torch.save({"state_dict": open_clip.create_model("rg-tiny-clip", pretrained=None).state_dict()},
               tmp_path / "tiny.pt")
    return REG.create("objective", "clip", {"checkpoint": str(tmp_path / "tiny.pt"), "model": str(cfg),
                                            "mode": "text", "text": "a red disc"})


def _bridge(tmp_path):
    """A real worker process: the dependency-free example server, launched by the client."""
    import sys
    from pathlib import Path
    server = Path(__file__).resolve().parents[1] / "examples" / "bridge" / "minimal_server.py"
    return REG.create("renderer", "bridge", {"command": [sys.executable, str(server), "{endpoint}", "--size", "8"],
                                             "workers": 1, "timeout": 60})


def _blender(tmp_path):
    import importlib.util
    if not importlib.util.find_spec("bpy"):
        pytest.skip("needs the bpy wheel")
    from test_blender import PARAMS, SCENE
    (tmp_path / "scene.py").write_text(SCENE)
    return REG.create("renderer", "blender", {"scene": str(tmp_path / "scene.py"), "params": PARAMS[:1],
                                              "resolution": 16, "samples": 1, "workers": 1, "timeout": 120})


# Plugins that cannot be made from default options; each needs a real scene, basis or server.
FACTORIES = {("renderer", "mitsuba"): lambda tmp: _mitsuba(), ("renderer", "olat"): lambda tmp: _olat(),
             ("objective", "clip"): _clip, ("renderer", "bridge"): _bridge, ("renderer", "blender"): _blender}
CHECKS = {"renderer": check_renderer, "objective": check_objective, "estimator": check_estimator}
EVERY = [pytest.param(kind, name, id=f"{kind}-{name}",
                      marks=[pytest.mark.slow] if (kind, name) == ("renderer", "blender") else [])
         for kind in CHECKS for name in REG.names(kind)]


@pytest.mark.parametrize("kind,name", EVERY)
def test_every_registered_plugin_keeps_the_contract(kind, name, tmp_path):
    if not REG.info(kind, name).available:
        pytest.skip(REG.info(kind, name).reason)
    factory = FACTORIES.get((kind, name))
    plugin = factory(tmp_path) if factory else REG.create(kind, name, {})
    CHECKS[kind](plugin)


class NoRender(rg.Renderer):
    name = "no-render"

    def parameter_space(self):
        return rg.ParamSpace([rg.Param("x")])


class Typo:
    """A plugin with a misspelled hook next to a correct one."""

    @staticmethod
    @hookimpl
    def rendergrad_renderer():
        return []

    @staticmethod
    @hookimpl
    def rendergrad_renderers():
        return [NoRender]


class Unmarked:
    @staticmethod
    def rendergrad_objectives():
        return []


def test_misspelled_hooks_and_missing_methods_are_reported_while_the_rest_works():
    reg = rg.discover(extra_plugins=[Typo, Unmarked])
    reasons = {b.name: b.reason for b in reg.broken}
    assert "did you mean 'rendergrad_renderers'?" in reasons["rendergrad_renderer"]
    assert "not marked with @rendergrad.hookimpl" in reasons["rendergrad_objectives"]
    assert "does not implement render()" in reasons["no-render"]
    assert "no-render" not in reg.names("renderer") and "toy" in reg.names("renderer")
    res = rg.optimize("toy", "mse", "spsa", steps=2, target_params={"x": 0.5}, registry=reg)
    assert res.steps == 2


def test_plugins_command_shows_the_misspelled_hook(capsys, monkeypatch):
    from rendergrad import cli, registry
    monkeypatch.setattr(registry, "_default", rg.discover(extra_plugins=[Typo]))
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "rendergrad_renderer" in out and "did you mean 'rendergrad_renderers'?" in out


class Drifting(rg.Renderer):
    """Changes its images between identical calls without saying so in state_dict()."""

    name = "drifting"

    def __init__(self):
        self.calls = 0

    def parameter_space(self):
        return rg.ParamSpace([rg.Param("x")])

    def render(self, theta):
        self.calls += 1
        return torch.full((theta.shape[0], 4, 4, 3), float(self.calls))


class Forgetful(rg.GradientEstimator):
    """Carries state between steps that its state_dict() does not hold."""

    name = "forgetful"

    def __init__(self):
        self.count = 0

    def estimate(self, loss_fn, u, ctx):
        self.count += 1
        return rg.Estimate(grad=torch.full_like(u, float(self.count)), loss=float(loss_fn(u)[0]), renders=1)


def test_the_kit_names_the_broken_rule():
    with pytest.raises(ContractError, match="put every random seed in state_dict"):
        check_renderer(Drifting())
    with pytest.raises(ContractError, match="belongs in state_dict"):
        check_estimator(Forgetful())
    with pytest.raises(TypeError):
        NoRender()  # abstract: cannot even be made
