"""The PRDPT scene suite on real Mitsuba 3: analytic vs PRDPT vs ZeroGrads, and the reference
"sphere shadow" run.

    python -m benchmarks mitsuba_scenes [--steps 150] [--tasks shadow,occlusion,...] [--out FILE]
    python -m benchmarks mitsuba_scenes --sphere-shadow [--seed-mode common|fixed|independent]
        [--lr-decay F] [--sigma-step on|off] [--steps 400] [--ref-steps 20 (0: no timing)] [--out FILE]

Table mode (PRDPT paper tables 4.2/4.3): every task runs each method for the same number of
steps with the same scene, resolution, spp and depth: ``analytic`` (Mitsuba's AD through the
``prb_projective`` integrator, 1 render + adjoint per step), ``prdpt`` and ``zerograds``
(forward renders only). Reported: final image MSE (the final parameters rendered against the
target), parameter MSE in scene units, seconds per step, renders per step.

``--sphere-shadow`` is the long run: the reference task at 256×192, 32 spp, path depth 6, one
antithetic pair per step, σ0 = 0.5 scene units, lr 2e-2, 400 steps, σ annealed after step 200.
``--lr-decay F`` decays Adam's lr geometrically to ``lr·F`` by the last step and ``--sigma-step``
switches the estimator's σ/σ0 gradient scaling; with independent noise in the target and the
renders, Adam at a constant lr keeps jittering around the optimum by about lr, and these two are
what let the parameters settle.
It reports the parameter MSE at steps 50/100/200/300/400 and seconds per step, then times, in
the same process and on the same scene, a loop written the way the authors' code does it
(every render with seed 0, ``mi.render(scene, params)``, ``torch.tensor(image)``), so the
comparison is a ratio measured side by side on a shared machine, and breaks one of our steps
into scene update, path tracing, image transfer and everything else.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "examples" / "mitsuba"))

TABLE_TASKS = ("shadow", "occlusion", "caustic", "ior", "gi")
EXTRA_TASKS = ("caustic_sharp",)   # run only when named in --tasks


def _scenes():
    import scenes  # examples/mitsuba/scenes.py
    return scenes


def _param_mse(space, theta: torch.Tensor, target: dict[str, Any]) -> float:
    t = space.flatten(target).to(torch.float64)
    return float(((theta.to(torch.float64) - t) ** 2).mean())


def _renderer(task: dict[str, Any], mode: str, res: tuple[int, int], spp: int, seed_mode: str = "independent"):
    from rendergrad.renderers.mitsuba import MitsubaRenderer
    kw: dict[str, Any] = dict(resolution=list(res), spp=spp, seed_mode=seed_mode)
    if mode == "differentiable":
        kw.update(mode="differentiable", integrator="prb_projective",
                  max_depth=task["scene_dict"]["integrator"]["max_depth"])
    return MitsubaRenderer(task["scene_dict"], task["params"], **kw)


METHODS = {
    # name: (renderer mode, estimator, estimator options)
    "analytic": ("differentiable", "analytic", {"allow_nondifferentiable": True}),  # the ior row shows it stuck
    "prdpt": ("forward", "prdpt", {"sigma": 0.25, "samples": 4, "schedule": "paper"}),
    "zerograds": ("forward", "zerograds", {"sigma": 0.33, "samples": 4}),
}


def run_table(tasks: list[str], steps: int, res: tuple[int, int], spp: int, lr: float, seed: int,
              methods: tuple[str, ...] = tuple(METHODS)) -> list[dict]:
    import rendergrad as rg
    sc = _scenes()
    rows = []
    for name in tasks:
        for method in methods:
            mode, est, opts = METHODS[method]
            task = sc.task(name)
            r = _renderer(task, mode, res, spp, seed_mode="common" if mode == "forward" else "independent")
            space = r.parameter_space()
            t0 = time.perf_counter()
            result = rg.optimize(r, "mse", est, estimator_options=opts, target_params=task["target"],
                                 init=task["init"], lr=lr, steps=steps, seed=seed)
            wall = time.perf_counter() - t0
            row = {"task": name, "method": method, "image_mse": result.loss,
                   "param_mse": _param_mse(space, result.theta, task["target"]),
                   "start_param_mse": _param_mse(space, space.flatten(task["init"]), task["target"]),
                   "s_per_step": result.wall_time_s / max(1, result.steps),
                   "renders_per_step": result.evaluations / max(1, result.steps),
                   "render_share": result.render_seconds / max(1e-9, result.wall_time_s), "wall": wall,
                   "params": result.params}
            rows.append(row)
            print(f"{name:10s} {method:10s} img {row['image_mse']:.3g}  param {row['param_mse']:.3g} "
                  f"(start {row['start_param_mse']:.3g})  {row['s_per_step']:.3f} s/step  "
                  f"{row['renders_per_step']:.0f} renders/step  {result.params}", flush=True)
            r.close()
    return rows


def table_markdown(rows: list[dict], steps: int, res: tuple[int, int], spp: int, lr: float) -> str:
    lines = [f"Equal settings per task: {steps} steps, {res[1]}×{res[0]} px, {spp} spp, Adam lr {lr} "
             "(normalised units), seed 0. Parameter MSE in scene units; image MSE of the final parameters' "
             "render against the target (includes the Monte Carlo noise of both images).", "",
             "| task | method | image MSE | param MSE (start) | s/step | renders/step |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['method']} | {r['image_mse']:.2e} | {r['param_mse']:.2e} "
                     f"({r['start_param_mse']:.2e}) | {r['s_per_step']:.3f} | {r['renders_per_step']:.0f} |")
    return "\n".join(lines)


# -- the reference sphere-shadow run ------------------------------------------------------------

def reference_style_step(r, theta: torch.Tensor, gt: torch.Tensor, sigma: float, gen: torch.Generator) -> float:
    """One step written like the authors' PRDPT code: importance-sampled antithetic pair, each
    render through the scene parameters with ``seed=0``, ``torch.tensor(image)``, ``MSELoss``."""
    mi = r.mi
    xi = torch.rand(1, theta.shape[0], generator=gen)
    tau = torch.sqrt(-2 * sigma ** 2 * torch.log(xi))
    losses = []
    for pert in (theta + tau[0], theta - tau[0]):
        values = pert.double().numpy()
        r.bindings.apply(mi.Float(values.astype(np.float32)), values)
        r.params.update()
        img = mi.render(r.scene, r.params, seed=0, spp=r.spp, integrator=r.integrator)
        losses.append(torch.nn.MSELoss()(torch.tensor(img, dtype=torch.float32), gt))
    return float(torch.stack(losses).mean())


def profile_step(r, theta: torch.Tensor, reps: int) -> dict[str, float]:
    """Where one forward render's time goes: scene update, path tracing, transfer to torch."""
    import drjit as dr
    mi = r.mi
    out = {"update": 0.0, "trace": 0.0, "transfer": 0.0}
    for i in range(reps):
        values = theta.double().numpy()
        t0 = time.perf_counter()
        r.bindings.apply(mi.Float(values.astype(np.float32)), values)
        r.params.update()
        dr.eval()
        t1 = time.perf_counter()
        img = mi.render(r.scene, spp=r.spp, seed=i, integrator=r.integrator)
        dr.eval(img)
        dr.sync_thread()
        t2 = time.perf_counter()
        torch.from_numpy(np.array(img, dtype=np.float32))
        t3 = time.perf_counter()
        out["update"] += t1 - t0
        out["trace"] += t2 - t1
        out["transfer"] += t3 - t2
    return {k: v / reps for k, v in out.items()}


def run_sphere_shadow(steps: int, ref_steps: int, seed: int, seed_mode: str = "common",
                      lr_decay: float | None = None, sigma_step: bool = True, sigma_min: float = 0.04,
                      anneal_end: float = 1.0) -> dict[str, Any]:
    import rendergrad as rg
    sc = _scenes()
    task = sc.task("sphere_shadow")
    res, spp = (192, 256), 32
    r = _renderer(task, "forward", res, spp, seed_mode=seed_mode)
    space = r.parameter_space()
    width = float((space.high - space.low)[0])          # 4 scene units: σ and lr scale by 1/4
    opts: dict[str, Any] = {"sigma": 0.5 / width, "samples": 2, "sampler": "importance", "sigma_step": sigma_step,
                            "sigma_min": sigma_min / width}
    if anneal_end < 1.0:
        # σ constant for the first half, linear down to σ_min at anneal_end, then held there.
        opts["points"] = [[0.0, 0.5 / width], [0.5, 0.5 / width], [anneal_end, sigma_min / width],
                          [1.0, sigma_min / width]]
    marks = {50, 100, 200, 300, 400, steps}
    curve: dict[int, float] = {}

    from rendergrad.callbacks import Callback

    class ParamCurve(Callback):
        def on_step(self, *, record, u, evaluator):  # noqa: D401 - callback signature
            k = record["step"] + 1
            if k in marks:
                curve[k] = _param_mse(space, space.to_theta(u.detach()), task["target"])

    t0 = time.perf_counter()
    result = rg.optimize(r, "mse", "prdpt", estimator_options=opts, target_params=task["target"],
                         init=task["init"], lr=0.02 / width, lr_decay=lr_decay, steps=steps, seed=seed,
                         callbacks=[ParamCurve()])
    wall = time.perf_counter() - t0
    from rendergrad.registry import registry
    schedule = registry().create("estimator", "prdpt", opts).schedule.describe()
    schedule["anneal_end"] = anneal_end
    ours = {"estimator_options": opts, "schedule": schedule, "width": width, "lr_decay": lr_decay,
            "load_average_after": os.getloadavg(),
            "history": [{"step": h["step"], "loss": h["loss"], "sigma": h.get("sigma"), "params": h["params"]}
                        for h in result.history],
            "param_mse_curve": curve, "final_param_mse": _param_mse(space, result.theta, task["target"]),
            "params": result.params, "s_per_step": result.wall_time_s / result.steps,
            "render_s_per_step": result.render_seconds / result.steps,
            "renders_per_step": result.evaluations / result.steps, "wall": wall}
    print("ours: " + repr({k: v for k, v in ours.items() if k != "history"}), flush=True)
    if ref_steps <= 0:
        r.close()
        return {"ours": ours, "side": None, "seed_mode": seed_mode, "seed": seed}

    # Side by side, same process: a step written like the authors' loop on the same scene with
    # their film filter (Mitsuba's default Gaussian), our estimator step on that scene, and our
    # step on the scene as run above (box filter). Interleaved, so load changes hit all three.
    gt = result.target_image.to(torch.float32)
    theta = space.flatten(task["init"]).to(torch.float32)
    gauss = sc.task("sphere_shadow")
    gauss["scene_dict"] = sc.shadow(rfilter="gaussian")
    r_gauss = _renderer(gauss, "forward", res, spp, seed_mode="common")
    gt_gauss = r_gauss.render(space.flatten(task["target"]).float().unsqueeze(0))[0]
    gen = torch.Generator().manual_seed(seed)
    from rendergrad import StepContext
    from rendergrad.registry import registry
    u = space.to_unit(theta.double())
    ours_step = {}
    for label, rr, target in (("gaussian", r_gauss, gt_gauss), ("box", r, gt)):
        est = registry().create("estimator", "prdpt", opts)
        est.setup(space, ref_steps)
        ours_step[label] = (est, rg.BatchEvaluator(rr, _mse(), space, target))
    times = {"reference_style_gaussian": 0.0, "ours_gaussian": 0.0, "ours_box": 0.0}
    reference_style_step(r_gauss, theta, gt_gauss, 0.5, gen)   # warm-up
    for k in range(ref_steps):
        t0 = time.perf_counter()
        reference_style_step(r_gauss, theta, gt_gauss, 0.5, gen)
        t1 = time.perf_counter()
        est, ev = ours_step["gaussian"]
        est.estimate(ev, u, StepContext(step=k, total_steps=ref_steps, generator=gen))
        t2 = time.perf_counter()
        est, ev = ours_step["box"]
        est.estimate(ev, u, StepContext(step=k, total_steps=ref_steps, generator=gen))
        t3 = time.perf_counter()
        times["reference_style_gaussian"] += t1 - t0
        times["ours_gaussian"] += t2 - t1
        times["ours_box"] += t3 - t2
    times = {k: v / ref_steps for k, v in times.items()}
    side = {**times, "ratio": times["reference_style_gaussian"] / times["ours_box"],
            "profile_box": profile_step(r, theta, reps=max(4, ref_steps // 2)),
            "profile_gaussian": profile_step(r_gauss, theta, reps=max(4, ref_steps // 2)),
            "load_average": os.getloadavg()}
    print(f"side by side: {side}", flush=True)
    r.close()
    r_gauss.close()
    return {"ours": ours, "side": side, "seed_mode": seed_mode, "seed": seed}


def _mse():
    from rendergrad.registry import registry
    return registry().create("objective", "mse", {})


def sphere_markdown(out: dict[str, Any], steps: int, command: str = "") -> str:
    """Every setting of the run, the curve against the reference, and the timing if measured."""
    o, s = out["ours"], out["side"]
    opts, sch, w = o["estimator_options"], o["schedule"], o["width"]
    curve = ", ".join(f"{v:.2g} @{k}" for k, v in sorted(o["param_mse_curve"].items()))
    decay = "none (constant lr)" if o["lr_decay"] is None else f"{o['lr_decay']:g} (geometric to lr·{o['lr_decay']:g} at the last step)"
    lines = [
        *( [f"    {command}", ""] if command else [] ),
        f"- settings: PRDPT `sampler = \"{opts['sampler']}\"`, {opts['samples']} renders per step (one antithetic pair), "
        f"σ0 = {opts['sigma'] * w:g} scene units ({opts['sigma']:g} of the {w:g}-unit range), σ constant to 50% of "
        f"the run, then linear to σ_min = {opts['sigma_min'] * w:g} scene units ({opts['sigma_min']:g} of the range) at "
        f"{sch['anneal_end']:.0%} of the run{', then held' if sch['anneal_end'] < 1 else ''}, "
        f"`sigma_step = {str(opts['sigma_step']).lower()}`; "
        f"Adam lr 2e-2 scene units ({0.02 / w:g} normalised), lr_decay {decay}; {steps} steps; "
        f"256×192, 32 spp, path depth 6, box film filter; `seed_mode = \"{out['seed_mode']}\"`, seed {out['seed']}",
        f"- parameter MSE: {curve} (reference: 0.56 @50, 0.060 @100, 0.039 @200, 0.0014 @300, 3e-6 @400)",
        f"- final parameters {o['params']} (target {{'occluder': [-1.5, 1.0]}}), final MSE {o['final_param_mse']:.2g}",
        f"- wall time: {o['s_per_step']:.3f} s/step over the run ({o['render_s_per_step']:.3f} s of it in the renderer), "
        f"{o['renders_per_step']:.0f} renders/step; load average after the run "
        f"{', '.join(f'{x:.1f}' for x in o['load_average_after'])}",
    ]
    if s is not None:
        pb, pg = s["profile_box"], s["profile_gaussian"]
        lines += [
            f"- side by side, interleaved in one process (load average {', '.join(f'{x:.1f}' for x in s['load_average'])}): "
            f"a step written like the authors' loop (Gaussian filter) {s['reference_style_gaussian']:.3f} s; our step with "
            f"the Gaussian filter {s['ours_gaussian']:.3f} s; our step with the box filter {s['ours_box']:.3f} s "
            f"(authors' / ours = {s['ratio']:.2f}×)",
            f"- one render, box filter: scene update {pb['update'] * 1e3:.1f} ms, path tracing {pb['trace'] * 1e3:.1f} ms, "
            f"transfer to torch {pb['transfer'] * 1e3:.1f} ms; Gaussian filter: path tracing {pg['trace'] * 1e3:.1f} ms",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks mitsuba_scenes", description=__doc__.split("\n")[0])
    ap.add_argument("--sphere-shadow", action="store_true", help="the long reference run instead of the table")
    ap.add_argument("--steps", type=int, default=None, help="steps per run (table: 150, sphere shadow: 400)")
    ap.add_argument("--tasks", default=",".join(TABLE_TASKS),
                    help=f"table: comma-separated tasks; also {', '.join(EXTRA_TASKS)} (not run by default)")
    ap.add_argument("--methods", default=",".join(METHODS), help="table: comma-separated methods")
    ap.add_argument("--resolution", default="48,64", help="table: height,width")
    ap.add_argument("--spp", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--ref-steps", type=int, default=20,
                    help="steps timed side by side (sphere shadow); 0 skips the side-by-side timing")
    ap.add_argument("--lr-decay", type=float, default=None,
                    help="sphere shadow: decay Adam's lr geometrically to lr·F by the last step (default: constant lr)")
    ap.add_argument("--sigma-step", default="on", choices=("on", "off"),
                    help="sphere shadow: prdpt's sigma_step (scale the gradient by σ/σ0 as σ anneals)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seed-mode", default="common", choices=("independent", "common", "fixed"),
                    help="sphere shadow: the renderer's seed_mode (fixed = every render, target included, "
                         "with one seed, as the authors' code does)")
    ap.add_argument("--sigma-min", type=float, default=0.04,
                    help="sphere shadow: σ at the end of the anneal, in scene units (the authors' code: 0.01)")
    ap.add_argument("--anneal-end", type=float, default=1.0,
                    help="sphere shadow: fraction of the run where σ reaches σ_min (default 1: the last step)")
    ap.add_argument("--out", default=None, help="append the markdown result to this file")
    ap.add_argument("--history", default=None,
                    help="sphere shadow: write every step's parameters, σ and loss to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.sphere_shadow:
        steps = args.steps or 400
        if args.lr_decay is not None and not 0 < args.lr_decay <= 1:
            ap.error(f"--lr-decay is the final lr as a fraction of lr, in (0, 1]; got {args.lr_decay}")
        if not 0.5 < args.anneal_end <= 1.0:
            ap.error(f"--anneal-end is a fraction of the run in (0.5, 1]; got {args.anneal_end}")
        if not 0 < args.sigma_min <= 0.5:
            ap.error(f"--sigma-min is in scene units, in (0, 0.5] (σ0 = 0.5); got {args.sigma_min}")
        command = "python -m benchmarks mitsuba_scenes " + " ".join(sys.argv[1:] if argv is None else argv)
        out = run_sphere_shadow(steps, args.ref_steps, args.seed, args.seed_mode, lr_decay=args.lr_decay,
                                sigma_step=args.sigma_step == "on", sigma_min=args.sigma_min,
                                anneal_end=args.anneal_end)
        md = "## Sphere shadow (reference task)\n\n" + sphere_markdown(out, steps, command)
        if args.history:
            import json
            Path(args.history).write_text(json.dumps({"command": command, "seed_mode": args.seed_mode,
                                                      "history": out["ours"]["history"]}))
    else:
        steps = args.steps or 150
        res = tuple(int(v) for v in args.resolution.split(","))
        tasks = [t for t in args.tasks.split(",") if t]
        bad = [t for t in tasks if t not in TABLE_TASKS + EXTRA_TASKS]
        if bad:
            ap.error(f"unknown task(s) {bad}; tasks: {', '.join(TABLE_TASKS + EXTRA_TASKS)}")
        methods = tuple(m for m in args.methods.split(",") if m)
        if not methods or any(m not in METHODS for m in methods):
            ap.error(f"--methods takes a comma-separated subset of {', '.join(METHODS)}; got {args.methods!r}")
        rows = run_table(tasks, steps, res, args.spp, args.lr, args.seed, methods)  # type: ignore[arg-type]
        md = "## Task table (analytic vs PRDPT vs ZeroGrads)\n\n" + table_markdown(rows, steps, res, args.spp, args.lr)  # type: ignore[arg-type]
    print()
    print(md)
    if args.out:
        with open(args.out, "a") as f:
            f.write(md + "\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
