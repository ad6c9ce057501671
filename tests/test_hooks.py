"""Every plugin hook is documented and has a test named ``test_hook_<hook>`` that exercises it.

A new hook in ``engine/hookspecs.py`` fails these checks until it is described in its
docstring, in ``docs/plugins.md``, and tested by a function of that name somewhere in tests/.
"""

import argparse
import ast
from pathlib import Path

import pytest
import torch

import rendergrad as rg
from rendergrad import hookspecs
from rendergrad.hookspecs import hookimpl
from rendergrad.executors.local import LocalExecutor
from rendergrad.registry import KINDS, discover

TESTS = Path(__file__).resolve().parent
DOCS = TESTS.parent / "docs"
HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("rendergrad_"))


def _test_names() -> set[str]:
    names = set()
    for path in TESTS.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_hook_"):
                names.add(node.name)
    return names


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    doc = getattr(hookspecs, hook).__doc__ or ""
    assert len(doc.strip()) > 40, f"{hook} needs a docstring saying what to return and when it is called"
    assert hook in (DOCS / "plugins.md").read_text(), f"{hook} is not described in docs/plugins.md"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    assert f"test_hook_{hook}" in _test_names(), f"no test named test_hook_{hook} in tests/"


def test_every_plugin_kind_has_a_hook():
    for kind, (hook, _base) in KINDS.items():
        assert hook in HOOKS, kind


# -- the hooks, each through an in-process plugin ----------------------------------------------
class Dot(rg.Renderer):
    """A single grey pixel whose brightness is the parameter."""
    name = "test-dot"
    differentiable = True

    def parameter_space(self):
        return rg.ParamSpace([rg.Param("v", low=0.0, high=1.0, init=0.2)])

    def render(self, theta):
        return theta[:, 0].reshape(-1, 1, 1, 1).expand(-1, 1, 1, 3)


class Abs(rg.Objective):
    """Mean absolute difference."""
    name = "test-abs"

    def loss(self, images, target):
        return (images - target).abs().flatten(1).mean(1)


class Sign(rg.GradientEstimator):
    """Steps by the sign of a central difference."""
    name = "test-sign"

    def estimate(self, loss_fn, u, ctx):
        h = 0.01
        lo, hi = loss_fn(torch.stack([u - h, u + h]))
        return rg.Estimate(grad=torch.sign(hi - lo).reshape(1).to(u.dtype), loss=float((lo + hi) / 2), renders=2)


class Reversed(LocalExecutor):
    """Renders a batch's chunks last to first, in this process: order must still come back right."""
    name = "test-reversed"

    def render(self, tasks):
        self.calls = getattr(self, "calls", 0) + 1
        return list(reversed(super().render(list(reversed(tasks)))))


class Plugin:
    @staticmethod
    @hookimpl
    def rendergrad_renderers():
        return [Dot]

    @staticmethod
    @hookimpl
    def rendergrad_objectives():
        return [Abs]

    @staticmethod
    @hookimpl
    def rendergrad_estimators():
        return [Sign]

    @staticmethod
    @hookimpl
    def rendergrad_executors():
        return [Reversed]

    @staticmethod
    @hookimpl
    def rendergrad_add_commands(subparsers):
        p = subparsers.add_parser("test-hello", help="say hello")
        p.set_defaults(func=lambda args: 7)


def _run(reg):
    return rg.optimize("test-dot", "test-abs", "test-sign", target_params={"v": 0.7}, lr=0.05, steps=40,
                       registry=reg)


def test_hook_rendergrad_renderers():
    reg = discover(extra_plugins=[Plugin])
    assert reg.get("renderer", "test-dot") is Dot
    assert abs(_run(reg).params["v"] - 0.7) < 0.05


def test_hook_rendergrad_objectives():
    reg = discover(extra_plugins=[Plugin])
    assert reg.get("objective", "test-abs") is Abs
    res = _run(reg)
    assert res.loss < res.history[0]["loss"]


def test_hook_rendergrad_estimators():
    reg = discover(extra_plugins=[Plugin])
    assert reg.get("estimator", "test-sign") is Sign
    assert _run(reg).evaluations == 80


def test_hook_rendergrad_executors():
    reg = discover(extra_plugins=[Plugin])
    assert reg.get("executor", "test-reversed") is Reversed
    reference = _run(reg)
    ex = Reversed()
    res = rg.optimize("test-dot", "test-abs", "test-sign", target_params={"v": 0.7}, lr=0.05, steps=40,
                      registry=reg, executor=ex, max_batch=1)
    assert ex.calls >= 40 and res.params == reference.params and res.evaluations == reference.evaluations


def test_hook_rendergrad_add_commands():
    reg = discover(extra_plugins=[Plugin])
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    for hook, _label in reg.command_hooks:
        hook(subparsers=sub)
    args = parser.parse_args(["test-hello"])
    assert args.func(args) == 7
    # the built-in plugins add theirs the same way
    from rendergrad.cli import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert "baseline" in sub.choices
