"""Meta-learning: learned start and per-coordinate step sizes for a family of tasks.

The quadratic family has a closed-form answer. Task i has loss
``½ Σ_j h_j s_i (u_j − c_ij)²`` (curvature ``h_j`` per coordinate, scaled per task by ``s_i``),
with optima ``c_i = μ ± d`` paired with every ``s``. With one inner step the meta-loss is
``Σ_i ½ h s_i (1 − α h s_i)² (u0 − c_i)²``: its minimum is ``u0 = μ`` (the mean optimum) and
``α_j = a*/h_j`` with ``a* = Σ s² / Σ s³`` — the inverse curvature of each coordinate, times
one number set by the spread of the family's curvatures.
"""

import json
import math

import pytest
import torch

import rendergrad as rg
from rendergrad import BatchEvaluator, Objective, Param, ParamSpace, Renderer
from rendergrad.cli import main
from rendergrad.errors import ConfigError
from rendergrad.meta import MetaLearner, MetaParams, Task, load_meta, space_fingerprint
from rendergrad.meta.train import meta_train
from rendergrad.callbacks import Callback
from rendergrad.plugins.estimators import Analytic

H = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64)
MU = torch.tensor([0.4, 0.5, 0.6], dtype=torch.float64)
D = torch.tensor([0.2, 0.1, 0.15], dtype=torch.float64)
S = (0.6, 1.4)


class Identity(Renderer):
    """The image is the parameter vector itself: a renderer whose loss landscape we know."""

    name = "identity"
    differentiable = True

    def __init__(self, n: int = 3):
        self.n = n

    def parameter_space(self) -> ParamSpace:
        return ParamSpace([Param("p", shape=(self.n,), low=0.0, high=1.0)])

    def render(self, theta):
        return theta.to(torch.float64).reshape(theta.shape[0], 1, self.n, 1)


class WeightedQuadratic(Objective):
    """``½ Σ h_j s (x_j − c_j)²``; the target image carries ``c`` (channel 0) and ``s`` (channel 1)."""

    name = "wquad"

    def loss(self, images, target):
        x, c, s = images[:, 0, :, 0], target[0, :, 0], target[0, 0, 1]
        return 0.5 * (s * H * (x - c) ** 2).sum(-1)


def quadratic_tasks():
    tasks = []
    for s in S:
        for sign in (1.0, -1.0):
            c = MU + sign * D
            t = torch.zeros(1, 3, 2, dtype=torch.float64)
            t[0, :, 0], t[0, :, 1] = c, s
            tasks.append(Task(target=t, u_star=c))
    return tasks


def learner(order: str, inner_steps: int = 1, **kw) -> MetaLearner:
    r = Identity()
    ev = BatchEvaluator(r, WeightedQuadratic(), r.parameter_space(), None)
    kw = {"u0": torch.tensor([0.2, 0.8, 0.3]), "step_size": 0.3 / H, "meta_lr": 0.05, "meta_lr_decay": 0.02,
          "outer_steps": 250, **kw}
    return MetaLearner(ev, estimator=Analytic(), order=order, inner_steps=inner_steps, **kw)


@pytest.mark.parametrize("order", ["second", "first"])
def test_quadratic_family_learns_mean_optimum_and_inverse_curvature(order):
    ml = learner(order)
    tasks, gen = quadratic_tasks(), torch.Generator().manual_seed(0)
    for _ in range(ml.outer_steps):
        ml.outer_step(tasks, gen)
    a_star = sum(s * s for s in S) / sum(s ** 3 for s in S)
    assert torch.allclose(ml.u0.detach(), MU, atol=2e-3), ml.u0
    assert torch.allclose(ml.step_sizes, a_star / H, rtol=1e-2), (ml.step_sizes * H, a_star)
    assert ml.evaluator.renders == ml.outer_steps * len(tasks) * 2  # 1 inner step + 1 final, per task


def test_first_and_second_order_agree_where_first_order_is_exact():
    # One inner step: dL/dα is exactly −g_0 ⊙ g_1 in both; the u0 gradients differ by (1 − α h s).
    tasks, gen = quadratic_tasks(), torch.Generator().manual_seed(0)
    first, second = learner("first"), learner("second")
    gu1, ga1, l1 = first.meta_gradient(tasks, gen)
    gu2, ga2, l2 = second.meta_gradient(tasks, gen)
    assert torch.allclose(ga1, ga2, rtol=1e-9, atol=1e-15)
    assert l1 == pytest.approx(l2, rel=1e-12)
    assert not torch.allclose(gu1, gu2)
    # ...and exactly where (1 − α h s) is one for every task: at α → 0 the two u0 gradients meet.
    f0, s0 = learner("first", step_size=1e-9 / H), learner("second", step_size=1e-9 / H)
    assert torch.allclose(f0.meta_gradient(tasks, gen)[0], s0.meta_gradient(tasks, gen)[0], rtol=1e-6)


def test_second_order_refuses_a_forward_only_renderer(plateau_scene):
    from rendergrad.renderers.toy import ToyRenderer
    r = ToyRenderer(**plateau_scene)
    ev = BatchEvaluator(r, rg.discover().create("objective", "mse", {}), r.parameter_space(), None)
    with pytest.raises(ConfigError, match="differentiable renderer"):
        MetaLearner(ev, order="second")


def test_optimize_with_meta_takes_the_learned_steps_and_refuses_another_space():
    ml = learner("second", inner_steps=3, outer_steps=20)
    tasks, gen = quadratic_tasks(), torch.Generator().manual_seed(0)
    for _ in range(ml.outer_steps):
        ml.outer_step(tasks, gen)
    space = ml.space
    meta = MetaParams(u0=ml.u0.detach().clone(), step_sizes=ml.step_sizes.clone(),
                      fingerprint=space_fingerprint(space), inner_steps=3)
    task = tasks[1]
    expected = ml.adapt(task, gen)
    res = rg.optimize(Identity(), WeightedQuadratic(), "analytic", target=task.target, meta=meta, steps=3,
                      final_render=False)
    assert torch.allclose(res.u, expected.u, rtol=0, atol=1e-12)
    assert res.evaluations == 3
    with pytest.raises(ConfigError, match=r"learned for parameters .*'p'.* this scene has .*'q'"):
        other = Identity()
        other.parameter_space = lambda: ParamSpace([Param("q", shape=(3,))])
        rg.optimize(other, WeightedQuadratic(), "analytic", target=task.target, meta=meta, steps=1)
    with pytest.raises(ConfigError, match=r"parameter 'p': shape was \[3\] .* here it is \[4\]"):
        rg.optimize(Identity(4), "mse", "analytic", target=torch.zeros(1, 4, 1), meta=meta, steps=1)


def family(tmp_path, **meta):
    scene = {"resolution": 12, "mode": "hard",
             "shapes": [{"type": "disc", "x": "x", "y": "y", "radius": 0.25, "color": [1.0, 0.5, 0.2]}],
             "params": [{"name": "x", "low": 0.2, "high": 0.8}, {"name": "y", "low": 0.2, "high": 0.8}]}
    return {"renderer": {"name": "toy", "options": scene},
            "target": {"ranges": {"x": [0.35, 0.65], "y": [0.35, 0.65]}},
            "estimator": {"name": "prdpt", "options": {"sigma": 0.2, "sigma_min": 0.05}},
            "meta": {"order": "first", "inner_steps": 3, "tasks": 6, "test_tasks": 2, "tasks_per_batch": 2,
                     "outer_steps": 6, "meta_lr": 0.05, "step_size": 0.5, "checkpoint_every": 2, "eval_every": 3,
                     **meta}}


class StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step(self, *, record, **kw):
        if record["step"] == self.step:
            raise KeyboardInterrupt


def test_meta_training_resumes_bit_identically(tmp_path):
    cfg = family(tmp_path)
    whole = meta_train(cfg, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        meta_train(cfg, tmp_path / "cut", callbacks=[StopAt(2)])
    from rendergrad.meta.train import resume_meta
    resumed = resume_meta(tmp_path / "cut")
    assert torch.equal(whole.u0, resumed.u0) and torch.equal(whole.step_sizes, resumed.step_sizes)
    a = json.loads((tmp_path / "whole" / "history.json").read_text())
    b = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert a == b
    mt = whole.info["meta_training"]
    # 2 tasks per step × (3 inner + 1 final) estimates × 2 PRDPT samples; targets and evaluation apart.
    assert mt["renders"] == 6 * 2 * 4 * 2
    assert mt["target_renders"] == 8 and mt["eval_renders"] > 0
    assert whole.info["inference"]["renders_per_task"] == 3 * 2 + 1


def test_cli_meta_train_then_run_with_meta_and_mismatch(tmp_path, capsys):
    cfg = family(tmp_path, outer_steps=2)
    fam = tmp_path / "family.toml"
    fam.write_text(_toml(cfg))
    assert main(["meta-train", str(fam), "--out", str(tmp_path / "m"), "--no-progress"]) == 0
    assert (tmp_path / "m" / "meta_curve.png").stat().st_size > 0
    learned = load_meta(tmp_path / "m")
    assert learned.u0.shape == (2,) and bool((learned.step_sizes > 0).all())
    assert main(["run", str(fam), "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "meta-train" in capsys.readouterr().err
    one = {k: v for k, v in cfg.items() if k != "meta"}
    one["target"] = {"params": {"x": 0.5, "y": 0.4}}
    run_file = tmp_path / "one.toml"
    run_file.write_text(_toml(one))
    assert main(["run", str(run_file), "--meta", str(tmp_path / "m"), "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 0
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["steps"] == 3 and result["history"][0]["params"] == pytest.approx(
        {k: v for k, v in learned.info["init"].items()})
    one["renderer"]["options"]["params"][0]["high"] = 0.9
    run_file.write_text(_toml(one))
    assert main(["run", str(run_file), "--meta", str(tmp_path / "m"), "--out", str(tmp_path / "r2"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "does not fit this parameter space: parameter 'x': high was [0.8]" in err and "[0.9]" in err


def _toml(cfg) -> str:
    def val(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + " }"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, str):
            return json.dumps(v)
        return repr(v).lower() if isinstance(v, bool) else repr(v)
    return "\n".join(f"[{sec}]\n" + "\n".join(f"{k} = {val(v)}" for k, v in body.items()) for sec, body in cfg.items())


def test_family_of_images_and_bad_ranges(tmp_path):
    from rendergrad.imageio import save_png
    from rendergrad.renderers.toy import ToyRenderer
    cfg = family(tmp_path, outer_steps=2, inner_steps=2, test_tasks=1, eval_every=2)
    scene = dict(cfg["renderer"]["options"], mode="soft")
    r = ToyRenderer(**scene)
    refs = tmp_path / "refs"
    refs.mkdir()
    for i, (x, y) in enumerate([(0.4, 0.5), (0.5, 0.6), (0.6, 0.4), (0.45, 0.45)]):
        save_png(refs / f"r{i}.png", r.render(torch.tensor([[x, y]]))[0])
    (refs / "notes.txt").write_text("not an image")
    cfg["renderer"]["options"] = scene
    cfg["target"] = {"images": str(refs)}
    cfg["estimator"] = {"name": "analytic"}
    learned, train, test = meta_train(cfg, tmp_path / "m", return_tasks=True)
    assert len(train) == 3 and len(test) == 1 and test[0].u_star is None
    assert learned.info["evaluation"]["param_rmse_u"] is None and learned.info["evaluation"]["loss_after"] >= 0
    cfg["target"] = {"images": str(tmp_path / "none" / "*.png")}
    with pytest.raises(ConfigError, match="matches no image files"):
        meta_train(cfg, tmp_path / "m2")
    cfg["target"] = {"ranges": {"x": [0.7, 0.3]}}
    with pytest.raises(ConfigError, match=r"ranges: x = \[0.7, 0.3\] must be \[low, high\]"):
        meta_train(cfg, tmp_path / "m3")
    cfg["target"] = {"ranges": {"z": [0.3, 0.7]}}
    with pytest.raises(ConfigError, match="unknown parameter 'z'"):
        meta_train(cfg, tmp_path / "m4")
    cfg["target"] = {"image": "a.png", "ranges": {"x": [0.3, 0.7]}}
    with pytest.raises(ConfigError, match="takes one of `image`, `images`"):
        meta_train(cfg, tmp_path / "m5")


def test_optimization_with_meta_saves_and_loads(tmp_path):
    from rendergrad.meta import PerCoordinateSGD
    tasks = quadratic_tasks()
    space = Identity().parameter_space()
    meta = MetaParams(u0=MU.clone(), step_sizes=0.5 / H, fingerprint=space_fingerprint(space), inner_steps=4)
    whole = rg.optimize(Identity(), WeightedQuadratic(), "analytic", target=tasks[0].target, meta=meta, steps=4,
                        final_render=False)
    run = rg.Optimization(Identity(), WeightedQuadratic(), "analytic", target=tasks[0].target, meta=meta, steps=4)
    run.run(final_render=False)
    run.save(tmp_path / "ck")
    loaded = rg.Optimization.load(tmp_path / "ck", renderer=Identity(), objective=WeightedQuadratic())
    assert torch.equal(loaded.u.detach(), whole.u) and loaded.settings["optimizer"] == "meta-sgd"
    assert isinstance(loaded.opt, PerCoordinateSGD) and torch.equal(loaded.opt.step_sizes, 0.5 / H)
