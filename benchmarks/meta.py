"""Meta-learning benchmark (Metappearance protocol): ``python -m benchmarks meta``.

For each family, on held-out tasks, compare

* **Meta**: learned start and per-coordinate step sizes, ``inner_steps`` (10) plain steps;
* **Overfit**: the renderer's default start, the estimator's usual run (Adam) to convergence;
* **Mean-init**: start at the mean of the training tasks' optima, the usual optimizer and
  learning rate, 10 steps;
* **Meta-init only**: the learned start, the usual optimizer, 10 steps;
* **Meta-lr only**: the default start, the learned step sizes, 10 steps;
* (OLAT) **NNLS**: the exact non-negative least-squares solve of the linear relighting.

Reported per method: loss and parameter error (RMSE in the normalised space, i.e. in
fractions of each parameter's range) after the method's steps, time and renders per task;
meta-training cost apart. Writes ``benchmarks/results/meta.md``, ``meta.json`` and
``meta_quality_speed.png``.

Families: ``olat`` (relight a Mitsuba-captured 3-light scene towards random RGB light
multipliers; 9 parameters, second order), ``texture`` (a 32×32×3 texture under two
semi-transparent overlays on the toy renderer, 3,072 parameters, second order), ``mitsuba``
(a point light's position on the floor plane from its image; first order through PRDPT).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import rendergrad as rg
from rendergrad.config import validate
from rendergrad.meta import MetaParams
from rendergrad.meta.train import meta_train

RESULTS = Path(__file__).resolve().parent / "results"


# -- families -------------------------------------------------------------------------------------
def olat_family(quick: bool) -> dict[str, Any]:
    from rendergrad.renderers.olat import OlatRenderer
    from rendergrad.renderers.olat_tools import capture
    reg = rg.discover()
    w, h, spp, ref_spp = 32, 24, 64, 1024

    def basis_at(samples: int):
        src = reg.create("renderer", "mitsuba", {
            "scene": str(Path(__file__).resolve().parents[1] / "examples/olat/scene.py") + ":three_lights",
            "resolution": [h, w], "spp": samples, "seed_mode": "fixed", "params": [
                {"name": n, "key": f"{n}.intensity.value", "multiply": True, "low": 0.0, "high": 8.0, "init": 1.0}
                for n in ("key", "fill", "rim")]})
        try:
            return capture(src).basis
        finally:
            src.close()
    # The captured basis is noisy (few spp); the reference lightings are relit from a converged
    # capture, like photographs the capture cannot match exactly: the loss has a floor.
    renderer = OlatRenderer(basis_at(spp), theta_min=0.0, theta_max=4.0, init=1.0)
    reference = OlatRenderer(basis_at(ref_spp), theta_min=0.0, theta_max=4.0, init=1.0)
    ranges = {n: [0.3, 3.0] for n in renderer.names}
    return {"name": "olat", "renderer": renderer, "target_renderer": reference, "ranges": ranges,
            "order": "second", "estimator": "analytic",
            "sizes": f"Mitsuba three_lights scene captured at {w}×{h}, {spp} spp (3 lights + base); references "
                     f"relit from a {ref_spp}-spp capture; 9 parameters (RGB multiplier per light in [0, 4]); "
                     "target multipliers uniform in [0.3, 3] per channel",
            "meta": {"tasks": 32, "test_tasks": 8, "tasks_per_batch": 8, "outer_steps": 60 if quick else 200,
                     "meta_lr": 0.05, "step_size": 0},
            "overfit": {"optimizer": "adam", "lr": 0.02, "steps": 500}}


def texture_family(quick: bool) -> dict[str, Any]:
    from rendergrad.renderers.toy import ToyRenderer
    t = 32
    renderer = ToyRenderer(resolution=48, mode="soft", softness=1.5, background=(0.0, 0.0, 0.0), shapes=[
        {"type": "texture", "image": "tex"},
        {"type": "disc", "x": 0.4, "y": 0.45, "radius": 0.25, "color": [0.2, 0.3, 0.9], "opacity": 0.7},
        {"type": "box", "x": 0.75, "y": 0.7, "width": 0.35, "height": 0.4, "color": [0.9, 0.8, 0.1], "opacity": 0.4},
    ], params=[{"name": "tex", "shape": [t, t, 3], "low": 0.0, "high": 1.0, "init": 0.1}])
    return {"name": "texture", "renderer": renderer, "ranges": {"tex": [0.3, 0.9]}, "order": "second",
            "estimator": "analytic", "target_noise": 0.02,
            "sizes": f"toy renderer 48×48, soft; a {t}×{t}×3 texture ({t * t * 3} parameters, init 0.1) under a "
                     "disc (opacity 0.7) and a box (opacity 0.4); every texel of a target uniform in [0.3, 0.9]; "
                     "Gaussian pixel noise σ = 0.02 on the targets",
            "meta": {"tasks": 32, "test_tasks": 8, "tasks_per_batch": 4, "outer_steps": 60 if quick else 150,
                     "meta_lr": 0.05, "step_size": 0},
            "overfit": {"optimizer": "adam", "lr": 0.02, "steps": 300}}


def mitsuba_family(quick: bool) -> dict[str, Any]:
    reg = rg.discover()
    # Fixed seeds: at this size, independent noise between target and render (0.026 MSE at 4
    # spp) is larger than the signal of the light's position (≤ 0.007), so the optimum drowns.
    w, h, spp = 32, 24, 16
    renderer = reg.create("renderer", "mitsuba", {
        "scene": str(Path(__file__).resolve().parents[1] / "examples/olat/scene.py") + ":three_lights",
        "resolution": [h, w], "spp": spp, "seed_mode": "fixed", "params": [
            {"name": "key_pos", "position": "key", "axes": "xz", "low": [-2.5, -1.0], "high": [2.5, 3.0],
             "init": [-2.0, 2.5]}]})
    return {"name": "mitsuba", "renderer": renderer, "ranges": {"key_pos": [-1.5, 1.5]}, "order": "first",
            "estimator": "prdpt", "estimator_options": {"sigma": 0.2, "sigma_min": 0.02, "samples": 4},
            "sizes": f"Mitsuba three_lights scene at {w}×{h}, {spp} spp, fixed seed; the key light's x, z "
                     "(2 parameters) with targets uniform in [-1.5, 1.5]² (x in [-2.5, 2.5], z in [-1, 3]); "
                     "PRDPT with 4 samples per gradient",
            "meta": {"tasks": 8 if quick else 12, "test_tasks": 4, "tasks_per_batch": 2,
                     "outer_steps": 10 if quick else 30, "meta_lr": 0.1, "step_size": 0},
            "overfit": {"optimizer": "adam", "lr": 0.02, "steps": 60 if quick else 150}}


FAMILIES = {"olat": olat_family, "texture": texture_family, "mitsuba": mitsuba_family}


# -- protocol -------------------------------------------------------------------------------------
def _run(fam: dict[str, Any], estimator, task, *, init_u: torch.Tensor | None = None,
         meta: MetaParams | None = None, steps: int, optimizer: str = "adam", lr: float = 0.02,
         seed: int = 0) -> dict[str, float]:
    renderer = fam["renderer"]
    space = renderer.parameter_space()
    init = None if init_u is None else space.decode(space.to_theta(init_u))
    res = rg.optimize(renderer, "mse", estimator, target=task.target, init=init, meta=meta, steps=steps,
                      optimizer=optimizer, lr=lr, seed=seed, final_render=True)
    err = float((res.u - task.u_star).pow(2).mean().sqrt()) if task.u_star is not None else math.nan
    return {"loss": float(res.loss), "param_rmse": err, "renders": res.evaluations, "seconds": res.wall_time_s}


def _estimator(fam):
    return rg.discover().create("estimator", fam["estimator"], dict(fam.get("estimator_options", {})))


def nnls_solve(fam: dict[str, Any], task) -> dict[str, float]:
    """The exact answer of linear relighting: per colour channel, min ‖A m − (target − base)‖, m ≥ 0."""
    import numpy as np
    from scipy.optimize import nnls
    r = fam["renderer"]
    t0 = time.perf_counter()
    imgs = r.basis.images.numpy().astype(np.float64)                       # [L, H, W, 3]
    tgt = task.target.numpy().astype(np.float64)
    if r.basis.base is not None:
        tgt = tgt - r.basis.base.numpy()
    m = np.zeros((len(r.names), 3))
    for c in range(3):
        m[:, c], _ = nnls(imgs[..., c].reshape(len(r.names), -1).T, tgt[..., c].reshape(-1))
    seconds = time.perf_counter() - t0
    space = r.parameter_space()
    theta = torch.as_tensor(np.clip(m, r.theta_min, r.theta_max).reshape(-1), dtype=torch.float64)
    u = space.to_unit(theta)
    img = r.render(theta.unsqueeze(0))
    mse = float(((img[0].double() - task.target.double()) ** 2).mean())
    return {"loss": mse, "param_rmse": float((u - task.u_star).pow(2).mean().sqrt()), "renders": 0,
            "seconds": seconds}


def make_tasks(fam: dict[str, Any], cfg: dict[str, Any]):
    """The family's tasks: targets from ``target_renderer`` (default: the renderer), plus noise."""
    from rendergrad.meta.family import build_family
    tr = fam.get("target_renderer", fam["renderer"])
    ev = rg.BatchEvaluator(tr, rg.discover().create("objective", "mse", {}), tr.parameter_space(), None)
    train, test = build_family(cfg["target"], cfg["meta"], ev)
    fam["target_renders"] = ev.extra_renders
    noise = fam.get("target_noise", 0.0)
    if noise:
        gen = torch.Generator().manual_seed(1234)
        for t in train + test:
            t.target = t.target + noise * torch.randn(t.target.shape, generator=gen, dtype=t.target.dtype)
    return train, test


def run_family(fam: dict[str, Any], out: Path, *, progress: bool) -> dict[str, Any]:
    renderer = fam["renderer"]
    space = renderer.parameter_space()
    cfg = validate({"renderer": {"name": renderer.name}, "target": {"ranges": fam["ranges"]},
                    "meta": {"order": fam["order"], "inner_steps": 10, "checkpoint_every": 0,
                             "eval_every": max(1, fam["meta"]["outer_steps"] // 5), **fam["meta"]}})
    t0 = time.perf_counter()
    learned, train, test = meta_train(cfg, out / fam["name"], renderer=renderer,
                                      objective=rg.discover().create("objective", "mse", {}),
                                      estimator=_estimator(fam) if fam["order"] == "first" else None,
                                      tasks=make_tasks(fam, cfg), return_tasks=True, progress=progress)
    meta_seconds = time.perf_counter() - t0
    k = learned.inner_steps
    mean_u = torch.stack([t.u_star for t in train]).mean(0)
    default = MetaParams(u0=space.initial_unit(), step_sizes=learned.step_sizes,
                         fingerprint=learned.fingerprint, inner_steps=k)
    o = fam["overfit"]
    methods = {
        "Meta": lambda t: _run(fam, _estimator(fam), t, meta=learned, steps=k),
        "Overfit": lambda t: _run(fam, _estimator(fam), t, steps=o["steps"], optimizer=o["optimizer"], lr=o["lr"]),
        "Mean-init": lambda t: _run(fam, _estimator(fam), t, init_u=mean_u, steps=k, optimizer=o["optimizer"], lr=o["lr"]),
        "Meta-init only": lambda t: _run(fam, _estimator(fam), t, init_u=learned.u0, steps=k,
                                         optimizer=o["optimizer"], lr=o["lr"]),
        "Meta-lr only": lambda t: _run(fam, _estimator(fam), t, meta=default, steps=k),
    }
    if fam["name"] == "olat":
        methods["NNLS (exact)"] = lambda t: nnls_solve(fam, t)
    rows = {}
    for name, fn in methods.items():
        per = [fn(t) for t in test]
        rows[name] = {key: statistics.fmean(p[key] for p in per) for key in per[0]}
        rows[name]["per_task_loss"] = [p["loss"] for p in per]
        print(f"  {fam['name']:8s} {name:15s} loss {rows[name]['loss']:.4g}  param rmse {rows[name]['param_rmse']:.4g}"
              f"  renders {rows[name]['renders']:.0f}  {rows[name]['seconds']:.2f}s", flush=True)
    mt = learned.info["meta_training"]
    a = learned.step_sizes
    return {"family": fam["name"], "sizes": fam["sizes"], "order": fam["order"], "estimator": fam["estimator"],
            "parameters": space.size, "inner_steps": k, "test_tasks": len(test), "train_tasks": len(train),
            "meta_training": {**mt, "target_renders": fam.get("target_renders", mt["target_renders"]),
                              "wall_seconds_incl_setup": meta_seconds},
            "step_sizes": {"min": float(a.min()), "median": float(a.median()), "max": float(a.max())},
            "methods": rows,
            "meta_vs_overfit": rows["Meta"]["loss"] / max(rows["Overfit"]["loss"], 1e-300),
            "meta_ahead_of_mean_init": rows["Meta"]["loss"] < rows["Mean-init"]["loss"]}


# -- report ---------------------------------------------------------------------------------------
def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, r in zip(axes[0], results):
        for name, row in r["methods"].items():
            x = max(row["renders"], 0.5)
            ax.scatter([x], [max(row["loss"], 1e-12)], s=40)
            ax.annotate(name, (x, max(row["loss"], 1e-12)), fontsize=8, xytext=(4, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("renders per task (NNLS: 0, plotted at 0.5)")
        ax.set_ylabel("loss on held-out tasks")
        ax.set_title(f"{r['family']} ({r['parameters']} parameters)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(results: list[dict[str, Any]], command: str) -> str:
    lines = ["# Meta-learning (Metappearance) benchmark", "",
             f"Command: `{command}`. Every method runs on the same held-out tasks; loss is the final "
             "image's MSE, parameter error the RMSE of the normalised parameters against the task's "
             "known optimum (fractions of each parameter's range). Renders and seconds are per task; "
             "meta-training is a one-off cost, reported apart.", ""]
    for r in results:
        mt = r["meta_training"]
        lines += [f"## {r['family']}", "", r["sizes"] + ".", "",
                  f"Meta-training: order {r['order']} ({r['estimator']} gradients), {r['train_tasks']} training / "
                  f"{r['test_tasks']} held-out tasks, {mt['outer_steps']} outer steps × {mt['tasks_per_batch']} tasks, "
                  f"{mt['renders']} renders, {mt['seconds']:.1f} s (targets {mt['target_renders']} renders, "
                  f"evaluation {mt['eval_renders']}). Learned step sizes: min {r['step_sizes']['min']:.3g}, median "
                  f"{r['step_sizes']['median']:.3g}, max {r['step_sizes']['max']:.3g}.", "",
                  "| method | loss | loss − Overfit's | param. RMSE | renders | seconds |",
                  "|---|---|---|---|---|---|"]
        floor = r["methods"]["Overfit"]["loss"]
        for name, row in r["methods"].items():
            lines.append(f"| {name} | {row['loss']:.4g} | {row['loss'] - floor:.3g} | {row['param_rmse']:.4g} | "
                         f"{row['renders']:.0f} | {row['seconds']:.3f} |")
        ratio = r["meta_vs_overfit"]
        lines += ["", f"Meta / Overfit final loss: **{ratio:.4g}** "
                  f"({'within' if ratio <= 1.1 else 'not within'} 10 %); Meta "
                  f"{'ahead of' if r['meta_ahead_of_mean_init'] else 'NOT ahead of'} Mean-init.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks meta", description=__doc__.split("\n")[0])
    ap.add_argument("--families", default="olat,texture,mitsuba", help="comma-separated: " + ", ".join(FAMILIES))
    ap.add_argument("--quick", action="store_true", help="fewer outer steps and tasks (a smoke run)")
    ap.add_argument("--out", default=str(RESULTS), help="results folder (default: benchmarks/results)")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    names = [n.strip() for n in args.families.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        ap.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in names:
            fam = FAMILIES[n](args.quick)
            try:
                results.append(run_family(fam, Path(tmp), progress=args.progress))
            finally:
                fam["renderer"].close()
                if "target_renderer" in fam:
                    fam["target_renderer"].close()
    stem = "meta" + ("_" + "_".join(names) if names != list(FAMILIES) else "") + ("_quick" if args.quick else "")
    command = "python -m benchmarks meta -- " + " ".join(argv or [])
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    (out / f"{stem}.md").write_text(report(results, command.strip()))
    plot(results, out / f"{stem}_quality_speed.png")
    print(f"wrote {out / (stem + '.md')}")
    return 0
