"""The loop as an object: ask/tell with save/load between every call equals rg.optimize bit for bit."""

import pytest
import torch

import rendergrad as rg
from rendergrad.asktell import BatchError
from rendergrad.errors import IncompatiblePluginsError, RendererOutputError
from rendergrad.renderers.toy import ToyRenderer

CASES = {
    "prdpt": ({}, {"estimator_options": {"samples": 4, "center": True}}),
    "zerograds": ({}, {"estimator_options": {"samples": 4}}),
    "spsa": ({}, {}),
    "fd": ({}, {}),
    "analytic": ({}, {}),
    "prdpt-reparam": ({}, {"estimator_options": {"mode": "reparam", "samples": 2}}),
    "cma": ({}, {"estimator_options": {"sigma0": 0.3, "popsize": 4}}),
    "nevergrad": ({}, {"estimator_options": {"optimizer": "NGOpt", "batch": 3}}),
}


def _kw(name, scene, extra):
    kw = dict(target_params={"x": 0.55, "y": 0.45}, steps=6, lr=0.03, seed=3, renderer_options=scene,
              lr_decay=0.5, max_renders=60)
    kw.update(extra)
    return kw


def _drive(opt_factory, tmp_path, *, save_every_call: bool):
    """Ask, render in-process, tell; optionally save and load between every call."""
    opt = opt_factory()
    renderer = opt.renderer
    calls = 0
    while not opt.done:
        batch = opt.ask()
        if save_every_call:
            opt.save(tmp_path)
            opt = rg.Optimization.load(tmp_path)
            assert opt.ask().id == batch.id
            batch = opt.ask() if batch.differentiable else batch   # autograd needs the live theta
        theta = batch.theta   # float64, exactly what the loop would give the renderer
        images = renderer.render(theta)
        opt.tell(batch, images)
        calls += 1
        if save_every_call:
            opt.save(tmp_path)
            opt = rg.Optimization.load(tmp_path)
    return opt.result(), calls


@pytest.mark.parametrize("case", list(CASES))
def test_ask_tell_with_save_load_equals_optimize(case, toy_scene, tmp_path):
    name = case.split("-")[0]
    _, extra = CASES[case]
    kw = _kw(name, toy_scene, extra)
    ref = rg.optimize("toy", "mse", name, **kw)
    res, calls = _drive(lambda: rg.Optimization("toy", "mse", name, **kw), tmp_path, save_every_call=True)
    assert calls >= ref.steps
    assert torch.equal(res.u, ref.u)
    assert [h["loss"] for h in res.history] == [h["loss"] for h in ref.history]
    assert [h["evaluations"] for h in res.history] == [h["evaluations"] for h in ref.history]
    assert res.evaluations == ref.evaluations and res.stopped == ref.stopped
    assert res.best_loss == ref.best_loss


def test_replayed_steps_equal_inline_steps(toy_scene, tmp_path):
    """The fast path of run() (answers inline) and the replay path of ask/tell agree."""
    kw = _kw("zerograds", toy_scene, {"estimator_options": {"samples": 2}, "max_renders": None, "steps": 5})
    fast = rg.Optimization("toy", "mse", "zerograds", **kw).run()
    replay, calls = _drive(lambda: rg.Optimization("toy", "mse", "zerograds", **kw), tmp_path,
                           save_every_call=False)
    assert calls in (5, 6)   # five steps; one elite check (a batch of its own) on a noise-free renderer
    assert torch.equal(fast.u, replay.u)
    assert fast.history == replay.history


def test_several_batches_per_step_are_asked_one_by_one(toy_scene):
    opt = rg.Optimization("toy", "mse", "prdpt", target_params={"x": 0.5, "y": 0.5}, steps=2,
                          renderer_options=toy_scene, estimator_options={"samples": 4, "center": True})
    first = opt.ask()
    assert opt.ask() is first  # the same batch until it is told
    assert first.theta.dtype == torch.float64 and first.theta.shape == (4, 2)
    assert set(first.params[0]) == {"x", "y"}
    opt.tell(first, opt.renderer.render(first.theta.float()))
    second = opt.ask()
    assert second.step == 0 and second.call == 1 and len(second) == 1  # the centre render
    assert opt.step == 0
    opt.tell(second, losses=[0.25])
    assert opt.step == 1 and opt.history[0]["loss"] == 0.25


def test_bad_tells_are_refused_and_change_nothing(toy_scene, tmp_path):
    opt = rg.Optimization("toy", "mse", "spsa", target_params={"x": 0.5, "y": 0.5}, steps=3,
                          renderer_options=toy_scene)
    batch = opt.ask()
    good = opt.renderer.render(batch.theta.float())
    before = opt.state_dict()
    nan = good.clone()
    nan[0, 0, 0, 0] = float("nan")
    for bad, err, msg in [
        (dict(images=good[:1]), RendererOutputError, "1 images for a batch of 2"),
        (dict(images=good[:, :4]), RendererOutputError, "changed its image size"),
        (dict(images=nan), RendererOutputError, "NaN/inf"),
        (dict(losses=[1.0]), BatchError, "2 candidates but 1 losses"),
        (dict(losses=[1.0, float("nan")]), BatchError, "not finite"),
        (dict(), BatchError, "exactly one"),
    ]:
        with pytest.raises(err, match=msg):
            opt.tell(batch, **bad)
    with pytest.raises(BatchError, match="unknown to this run"):
        opt.tell("0123456789ab-s0-c0", good)
    opt.tell(batch, good)
    with pytest.raises(BatchError, match="stale"):
        opt.tell(batch, good)
    assert before["step"] == 0 and opt.step == 1
    # A refused tell leaves the saved state exactly as it was.
    opt2 = rg.Optimization("toy", "mse", "spsa", target_params={"x": 0.5, "y": 0.5}, steps=3,
                           renderer_options=toy_scene, seed=1)
    b2 = opt2.ask()
    opt2.save(tmp_path / "a")
    with pytest.raises(RendererOutputError):
        opt2.tell(b2, good[:1])
    opt2.save(tmp_path / "b")
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert a["answers"] == b["answers"] == [] and torch.equal(a["generator"], b["generator"])


def test_already_told_batch_in_the_same_step(toy_scene):
    opt = rg.Optimization("toy", "mse", "prdpt", target_params={"x": 0.5, "y": 0.5}, steps=2,
                          renderer_options=toy_scene, estimator_options={"samples": 2, "center": True})
    first = opt.ask()
    opt.tell(first, losses=[1.0, 2.0])
    with pytest.raises(BatchError, match="already told"):
        opt.tell(first, losses=[1.0, 2.0])


def test_external_runs_refuse_gradient_estimators_and_renders(toy_scene):
    with pytest.raises(IncompatiblePluginsError, match="outside this process"):
        rg.Optimization("toy", "mse", "analytic", renderer_options=toy_scene, external=True)
    opt = rg.Optimization("toy", "mse", "fd", renderer_options=toy_scene, external=True,
                          target_params={"x": 0.5, "y": 0.5}, steps=1)
    assert opt.evaluator.extra_renders == 1  # the target, once
    with pytest.raises(rg.ConfigError, match="ask/tell"):
        opt.run()


def test_differentiable_batches_need_images_with_gradients(toy_scene):
    opt = rg.Optimization("toy", "mse", "analytic", target_params={"x": 0.5, "y": 0.5}, steps=2,
                          renderer_options=toy_scene)
    batch = opt.ask()
    assert batch.differentiable and batch.theta.requires_grad
    with pytest.raises(BatchError, match="differentiable with respect to batch.theta"):
        opt.tell(batch, opt.renderer.render(batch.theta.detach().float()))
    with pytest.raises(BatchError, match="needs images"):
        opt.tell(batch, losses=[0.1])


class Closing(ToyRenderer):
    name = "closing-toy"
    closed = 0

    def close(self):
        type(self).closed += 1


def test_a_renderer_made_by_name_is_closed_at_the_end(toy_scene):
    class Plugin:
        @staticmethod
        @rg.hookimpl
        def rendergrad_renderers():
            return [Closing]

    reg = rg.discover(extra_plugins=[Plugin])
    Closing.closed = 0
    rg.optimize("closing-toy", "mse", "spsa", renderer_options=toy_scene, steps=2, registry=reg,
                target_params={"x": 0.5, "y": 0.5})
    assert Closing.closed == 1
    inst = Closing(**toy_scene)
    rg.optimize(inst, "mse", "spsa", steps=2, registry=reg, target_params={"x": 0.5, "y": 0.5})
    assert Closing.closed == 1  # an instance belongs to the caller


def test_the_ask_tell_guide_example_runs(tmp_path, monkeypatch):
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "docs" / "ask-tell.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "docs/ask-tell.md", "exec"), scope)
    ref = rg.optimize("toy", "mse", "prdpt", renderer_options={"mode": "hard", "resolution": 32},
                      target_params={"x": 0.7, "y": 0.3}, lr=0.02, steps=20, seed=0,
                      estimator_options={"center": True}, final_render=False)
    assert scope["result"].params == ref.params and scope["result"].evaluations == ref.evaluations
    assert ref.evaluations in (60, 61)   # 20 steps of 2 samples and a centre render; one elite check at most


@pytest.mark.parametrize("value", [{"height": 12, "width": 20}, [12, 20]])
def test_resolution_is_height_width_everywhere(value, toy_scene):
    from rendergrad.resolution import parse_resolution
    assert parse_resolution(value, "x") == (12, 20)
    img = ToyRenderer(**{**toy_scene, "resolution": value}).render(torch.tensor([[0.5, 0.5]]))
    assert img.shape == (1, 12, 20, 3)


@pytest.mark.parametrize("bad", [{"height": 12}, {"h": 1, "w": 2}, [0, 4], "64", [1.5, 2]])
def test_bad_resolutions_say_what_to_give(bad):
    from rendergrad.resolution import parse_resolution
    with pytest.raises(rg.ConfigError, match=r"toy renderer: resolution.*\[height, width\]"):
        parse_resolution(bad, "toy renderer")


def test_one_seed_vocabulary_with_the_old_names_as_aliases():
    from rendergrad.seeds import parse_seed_mode
    assert [parse_seed_mode(m, "r") for m in ("per_render", "independent", "per_batch", "common", "fixed")] == \
        ["per_render", "per_render", "per_batch", "per_batch", "fixed"]
    with pytest.raises(rg.ConfigError, match="r: seed_mode must be one of per_render, per_batch, fixed"):
        parse_seed_mode("shared", "r")


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_one_exr_writer_and_reader_round_trip(channels, tmp_path):
    from rendergrad.imageio import load_image, read_exr_layers, save_exr, write_exr_layers
    img = torch.rand(5, 7, channels)
    save_exr(tmp_path / "a.exr", img)
    assert torch.equal(load_image(tmp_path / "a.exr"), img)
    write_exr_layers(tmp_path / "b.exr", {"key": img[..., :1].expand(5, 7, 3), "fill": img[..., :1].expand(5, 7, 3)})
    layers = read_exr_layers(tmp_path / "b.exr")
    assert sorted(layers) == ["fill", "key"] and layers["key"].shape == (5, 7, 3)


def test_options_a_checkpoint_cannot_hold_still_resume(toy_scene, tmp_path):
    kw = dict(renderer_options=toy_scene, target_params={"x": 0.5, "y": 0.5}, steps=4, seed=2,
              checkpoint_dir=tmp_path, checkpoint_every=2, init={"x": 0.3})
    full = rg.optimize("toy", "mse", "spsa", **kw)
    opt = rg.Optimization("toy", "mse", "spsa", **{**kw, "init": {"x": torch.tensor(0.3).numpy()}})  # numpy: not plain
    opt.save(tmp_path / "odd")
    with pytest.raises(rg.ConfigError, match="cannot be saved"):
        rg.Optimization.load(tmp_path / "odd")
    again = rg.optimize("toy", "mse", "spsa", **kw, resume=True)
    assert torch.equal(again.u, full.u)


def test_optimize_passes_every_setting_on_to_optimization():
    """rg.optimize forwards its arguments by name: both must take the same settings."""
    import inspect
    own = {"resume", "final_render", "close"}
    a = set(inspect.signature(rg.optimize).parameters) - own
    b = set(inspect.signature(rg.Optimization.__init__).parameters) - {"self", "external"}
    assert a == b, (a - b, b - a)
