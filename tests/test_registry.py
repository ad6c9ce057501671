"""Plugin discovery: built-ins through entry points, broken plugins isolated, clear errors."""

import json
import subprocess
import sys
import textwrap

import pytest

import rendergrad as rg
from rendergrad.errors import ConfigError, PluginNotFoundError, PluginUnavailableError
from rendergrad.hookspecs import hookimpl
from rendergrad.registry import discover


def test_builtins_come_through_the_entry_point_group():
    reg = discover()
    assert {"toy"} <= set(reg.names("renderer"))
    assert {"mse", "l1"} <= set(reg.names("objective"))
    assert {"analytic", "fd", "spsa"} <= set(reg.names("estimator"))
    info = reg.info("renderer", "toy")
    assert info.distribution == "rendergrad" and info.version == rg.__version__
    assert "rendergrad.renderers.toy" in info.entry_point


def test_every_hook_is_documented():
    from rendergrad import hookspecs
    for name in ("rendergrad_renderers", "rendergrad_objectives", "rendergrad_estimators",
                 "rendergrad_add_commands"):
        fn = getattr(hookspecs, name)
        assert fn.__doc__ and len(fn.__doc__.strip()) > 40, name


def test_unknown_plugin_lists_available_and_suggests():
    reg = discover()
    with pytest.raises(PluginNotFoundError, match=r"unknown estimator 'spas'.*Available estimators: .*spsa.*Did you mean 'spsa'"):
        reg.get("estimator", "spas")


def test_unknown_option_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown option 'sigm'.*Valid options: c, gamma, pairs"):
        discover().create("estimator", "spsa", {"sigm": 1})


def test_options_for_a_plugin_without_a_constructor_are_a_clear_error():
    # l1 defines no __init__: object's (*args, **kwargs) signature must not let options through
    with pytest.raises(ConfigError, match=r"objective 'l1': unknown option 'foo'. Valid options: \(none\)"):
        discover().create("objective", "l1", {"foo": 1})
    assert discover().create("objective", "l1", {}).name == "l1"
    with pytest.raises(ConfigError, match=r"objective 'mse': unknown option 'foo'. Valid options: unbiased"):
        discover().create("objective", "mse", {"foo": 1})


class _Broken:
    """An in-process plugin whose hook raises: it must be reported, not crash discovery."""

    @staticmethod
    @hookimpl
    def rendergrad_renderers():
        raise RuntimeError("licence server unreachable")


class _NeedsGPU(rg.Renderer):
    """Needs a GPU."""
    name = "needs-gpu"

    @classmethod
    def available(cls):
        return False, "needs CUDA"

    def parameter_space(self):
        return rg.ParamSpace([rg.Param("x")])

    def render(self, theta):
        raise RuntimeError("never called: unavailable")


class _GPUPlugin:
    @staticmethod
    @hookimpl
    def rendergrad_renderers():
        return [_NeedsGPU, object]


def test_broken_and_unavailable_plugins_are_reported_not_fatal():
    reg = discover(extra_plugins=[_Broken, _GPUPlugin])
    assert "toy" in reg.names("renderer")  # the others still load
    reasons = " | ".join(b.reason for b in reg.broken)
    assert "licence server unreachable" in reasons
    assert "not a Renderer subclass" in reasons
    info = reg.info("renderer", "needs-gpu")
    assert not info.available and info.reason == "needs CUDA"
    with pytest.raises(PluginUnavailableError, match="needs CUDA"):
        reg.get("renderer", "needs-gpu")


def test_plugin_that_fails_to_import_is_listed_with_its_error(tmp_path):
    """A real distribution whose module raises on import: `rendergrad plugins` still works."""
    site = tmp_path / "site"
    dist = site / "broken_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[rendergrad]\nbroken = broken_plugin\n")
    (site / "broken_plugin.py").write_text("raise ImportError('needs libfoo.so')\n")
    env = {"PYTHONPATH": str(site)}
    import os
    out = subprocess.run([sys.executable, "-m", "rendergrad.cli", "plugins", "--json"], capture_output=True,
                         text=True, env={**os.environ, **env}, check=True)
    rows = json.loads(out.stdout)
    broken = [r for r in rows if r["distribution"] == "broken-plugin"]
    assert broken and "needs libfoo.so" in broken[0]["reason"] and broken[0]["available"] is False
    assert any(r["name"] == "toy" for r in rows)


def test_capability_flags_are_per_instance(toy_scene):
    """`plugins --json` gives the class default and the options it depends on; runs ask the instance."""
    from rendergrad.errors import IncompatiblePluginsError
    reg = discover()
    rows = {(i.kind, i.name): i.to_json() for i in reg.all() if i.kind != "?"}
    assert rows[("renderer", "toy")]["differentiable"] is False  # mode = "hard" by default
    assert rows[("renderer", "toy")]["differentiable_when"] == {"mode": "soft"}
    if ("renderer", "mitsuba") in rows:
        assert rows[("renderer", "mitsuba")]["differentiable_when"] == {"mode": "differentiable"}
        assert rows[("renderer", "mitsuba")]["adjustable_samples"] is True
    assert rows[("renderer", "toy")]["adjustable_samples"] is False
    assert rows[("objective", "mse")]["pair_loss"] is True and rows[("objective", "l1")]["pair_loss"] is False
    assert rows[("estimator", "analytic")]["requires_differentiable"] is True
    soft = reg.create("renderer", "toy", toy_scene)
    hard = reg.create("renderer", "toy", dict(toy_scene, mode="hard"))
    assert soft.differentiable and not hard.differentiable
    # The run-time check follows the configured mode, not the class's default.
    opt = rg.Optimization("toy", "mse", "analytic", renderer_options=toy_scene,
                          target_params={"x": 0.5, "y": 0.5}, steps=1, registry=reg)
    opt.close()
    with pytest.raises(IncompatiblePluginsError, match=r"'toy' is forward-only as configured.*mode = 'soft'"):
        rg.Optimization("toy", "mse", "analytic", renderer_options=dict(toy_scene, mode="hard"),
                        target_params={"x": 0.5, "y": 0.5}, steps=1, registry=reg)
