"""nvdiffrast benchmark: three mesh problems at equal renders, and throughput against bare nvdiffrast.

    python -m benchmarks nvdiffrast [--quick] [--seeds 5] [--tasks pose,texture,choice]
                                    [--methods analytic,prdpt,zerograds,cma] [--no-throughput]
                                    [--throughput-only] [--out DIR] [--device cuda] [--test-double]

Tasks (all rendered by the ``nvdiffrast`` renderer):

1. ``pose``: a checker-textured crate, (x, y) position and a turn about y; it starts where it
   does not overlap its target (a plateau for analytic gradients, antialiased edges or not);
   error = RMS of the parameter error in units of each parameter's range.
2. ``texture``: the 32×32×3 texels (3,072 parameters) of a lit card seen head-on, from a random
   target texture; error = texel RMSE. Analytic gradients should win by far; we measure by how much.
3. ``choice``: which of three meshes (categorical) and its RGB colour; error = 1 for a wrong
   mesh, else the colour's RMSE.

Methods at the same render budget, ``--seeds`` seeds each: ``analytic`` (differentiable mode:
antialiased), ``prdpt`` and ``zerograds`` (forward mode), ``cma`` (CMA-ES; diagonal covariance
for the texture task, where a full 3,072² covariance is impractical).

Throughput: renders/s for a 10k- and a 100k-triangle textured sphere at 256² and 512², batch 1,
4, 16, 64, forward and differentiable (forward + backward), through the renderer and through
bare nvdiffrast calls doing the same work in the same process (target: renderer ≥ 0.9× bare).

Writes ``DIR/nvdiffrast.md`` and ``DIR/nvdiffrast.json`` (default DIR: benchmarks/results).
``--test-double`` runs everything on the CPU through the pure-torch stand-in for nvdiffrast
used by the tests (tiny budgets; checks the benchmark's plumbing, measures nothing of nvdiffrast).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results"


# -- scenes and tasks -------------------------------------------------------------------------
def crate_scene() -> dict[str, Any]:
    return {"camera": {"origin": [0.0, 0.0, 5.0], "fov": 40.0}, "background": [0.02, 0.02, 0.03],
            "ambient": 0.1,
            "objects": [{"id": "crate", "mesh": "cube", "color": [1.0, 0.85, 0.6], "specular": 0.15,
                         "texture": {"type": "checker", "size": 64, "squares": 4,
                                     "colors": [[0.9, 0.6, 0.3], [0.35, 0.2, 0.1]]}}],
            "lights": [{"id": "sun", "type": "directional", "direction": [-0.4, -0.6, -1.0], "intensity": 1.5}]}


def card_scene(size: int = 32) -> dict[str, Any]:
    return {"camera": {"origin": [0.0, 0.0, 2.6], "fov": 45.0}, "background": [0.0, 0.0, 0.0], "ambient": 0.2,
            "objects": [{"id": "card", "mesh": {"type": "plane", "size": 2.0}, "rotate": [90.0, 0.0, 0.0],
                         "color": 1.0, "texture": {"type": "constant", "size": size, "color": 0.5}}],
            "lights": [{"id": "sun", "type": "directional", "direction": [0.2, -0.2, -1.0], "intensity": 1.0}]}


def choice_scene() -> dict[str, Any]:
    return {"camera": {"origin": [0.0, 0.8, 3.5], "fov": 40.0}, "background": [0.05, 0.05, 0.08], "ambient": 0.1,
            "objects": [{"id": "thing", "mesh": ["cube", {"type": "sphere", "segments": 48},
                                                 {"type": "plane", "size": 1.4}],
                         "rotate": [20.0, 30.0, 0.0], "color": 0.7}],
            "lights": [{"id": "sun", "type": "directional", "direction": [-0.3, -1.0, -0.7], "intensity": 1.5}]}


POSE_PARAMS = [{"name": "position", "translate": "crate", "axes": "xy", "low": [-1.6, -1.2], "high": [1.6, 1.2]},
               {"name": "turn", "rotate": "crate", "axis": [0.0, 1.0, 0.0], "low": -60.0, "high": 60.0}]
CHOICE_PARAMS = [{"name": "shape", "mesh": "thing", "kind": "categorical", "choices": ["cube", "sphere", "card"]},
                 {"name": "paint", "key": "thing.color", "low": 0.0, "high": 1.0, "init": [0.5, 0.5, 0.5]}]


def _gd(name: str, lr: float, **options: Any) -> dict[str, Any]:
    return {"kind": "estimator", "estimator": name, "lr": lr, "options": options}


def _cma(**options: Any) -> dict[str, Any]:
    return {"kind": "baseline", "method": "cma", "options": options}


def make_tasks(res: int, quick: bool) -> dict[str, dict[str, Any]]:
    """Each task: scene, params, init, target, error(θ) → float, budget, success, methods."""
    g = torch.Generator().manual_seed(1234)
    tex_target = (0.15 + 0.7 * torch.rand(32, 32, 3, generator=g))
    pose_target = {"position": [1.1, -0.4], "turn": 35.0}
    pose_init = {"position": [-1.2, 0.3], "turn": 0.0}
    pose_span = torch.tensor([3.2, 2.4, 120.0], dtype=torch.float64)
    pose_goal = torch.tensor([1.1, -0.4, 35.0], dtype=torch.float64)
    return {
        "pose": {
            "description": "textured crate, (x, y) and a turn; no overlap at the start",
            "scene": crate_scene, "params": POSE_PARAMS, "init": pose_init, "target": pose_target,
            "error": lambda th: float((((th[:3] - pose_goal) / pose_span) ** 2).mean().sqrt()),
            "budget": 300 if quick else 1200, "success": 0.01,
            "methods": {"analytic": _gd("analytic", 0.02), "prdpt": _gd("prdpt", 0.02, sigma=0.3, samples=2),
                        "zerograds": _gd("zerograds", 0.02), "cma": _cma(sigma0=0.3)}},
        "texture": {
            "description": "32×32×3 texels of a lit card (3,072 parameters), random target texture",
            "scene": card_scene, "params": [{"name": "texels", "texture": "card"}], "init": None,
            "target": {"texels": tex_target.tolist()},
            "error": lambda th: float(((th.reshape(32, 32, 3) - tex_target.double()) ** 2).mean().sqrt()),
            "budget": 400 if quick else 2000, "success": 0.02,
            "methods": {"analytic": _gd("analytic", 0.02), "prdpt": _gd("prdpt", 0.01, sigma=0.05, samples=8),
                        "zerograds": _gd("zerograds", 0.01), "cma": _cma(sigma0=0.2, CMA_diagonal=True)}},
        "choice": {
            "description": "which of three meshes (categorical) and its RGB colour",
            "scene": choice_scene, "params": CHOICE_PARAMS, "init": {"shape": "cube"},
            "target": {"shape": "sphere", "paint": [0.8, 0.3, 0.1]},
            "error": lambda th: (1.0 if round(float(th[0])) != 1 else
                                 float(((th[1:4] - torch.tensor([0.8, 0.3, 0.1], dtype=th.dtype)) ** 2).mean().sqrt())),
            "budget": 200 if quick else 800, "success": 0.02,
            "methods": {"analytic": _gd("analytic", 0.02), "prdpt": _gd("prdpt", 0.02, sigma=0.3, samples=2),
                        "zerograds": _gd("zerograds", 0.02), "cma": _cma(sigma0=0.3)}},
    }


def _make_renderer(task: dict[str, Any], res: int, mode: str, device: str, ops: Any) -> Any:
    from rendergrad.renderers.nvdiffrast import NvdiffrastRenderer
    kw = {"ops": ops()} if ops is not None else {}
    return NvdiffrastRenderer(task["scene"](), task["params"], resolution=res, mode=mode, device=device, **kw)


def run_one(task: dict[str, Any], method: str, spec: dict[str, Any], seed: int, budget: int, res: int,
            device: str, ops: Any) -> dict[str, Any]:
    import rendergrad as rg
    from rendergrad.callbacks import Callback
    from rendergrad.plugins.baselines import minimize
    mode = "differentiable" if spec.get("estimator") == "analytic" else "forward"
    renderer = _make_renderer(task, res, mode, device, ops)
    space = renderer.parameter_space()
    theta0 = space.flatten(task["init"] or {})
    curve: list[tuple[int, float]] = [(0, task["error"](theta0))]

    def track(renders: int, u: torch.Tensor) -> None:
        curve.append((int(renders), task["error"](space.to_theta(u.detach().cpu().to(torch.float64)))))

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    if spec["kind"] == "estimator":
        class Track(Callback):
            def on_step(self, *, record: dict[str, Any], u: torch.Tensor | None = None, **kw: Any) -> None:
                track(record["evaluations"], u)
        rg.optimize(renderer, "mse", spec["estimator"], estimator_options=dict(spec["options"]),
                    target_params=task["target"], init=task["init"], lr=spec["lr"], steps=budget,
                    max_renders=budget, seed=seed, callbacks=[Track()], final_render=False)
    else:
        minimize(renderer, "mse", "cma", target_params=task["target"], init=task["init"], budget=budget, seed=seed,
                 options=dict(spec["options"]), on_step=lambda rec, u: track(rec["evaluations"], u),
                 final_render=False)
    wall = time.perf_counter() - t0
    renderer.close()
    return {"method": method, "seed": seed, "curve": curve, "wall": wall, "budget": budget}


def renders_to(curve: list[tuple[int, float]], level: float) -> float:
    for r, e in curve:
        if e <= level:
            return r
    return math.inf


def summarise(name: str, task: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    lines = [f"### {name}: {task['description']}", "",
             f"Budget {runs[0]['budget']:,} renders per run, {len({r['seed'] for r in runs})} seeds; success = "
             f"error ≤ {task['success']:g}. Median [min–max] over seeds.", "",
             "| method | start error | final error | renders to success (runs) | wall s per run |",
             "|---|---:|---:|---:|---:|"]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["method"], []).append(r)
    for method, rs in by.items():
        finals = [r["curve"][-1][1] for r in rs]
        hits = [renders_to(r["curve"], task["success"]) for r in rs]
        ok = [h for h in hits if math.isfinite(h)]
        reach = f"{statistics.median(ok):,.0f} ({len(ok)}/{len(rs)})" if ok else f"– (0/{len(rs)})"
        lines.append(f"| {method} | {rs[0]['curve'][0][1]:.3g} | {statistics.median(finals):.3g} "
                     f"[{min(finals):.3g}–{max(finals):.3g}] | {reach} | {statistics.median(r['wall'] for r in rs):.2f} |")
    return lines + [""]


# -- throughput -------------------------------------------------------------------------------
def _sphere_scene(segments: int) -> dict[str, Any]:
    return {"camera": {"origin": [0.0, 0.0, 2.2], "fov": 40.0}, "background": [0.0, 0.0, 0.0], "ambient": 0.1,
            "objects": [{"id": "ball", "mesh": {"type": "sphere", "segments": segments, "rings": segments + 1},
                         "color": 0.8, "texture": {"type": "checker", "size": 256, "squares": 16}}],
            "lights": [{"id": "sun", "type": "directional", "direction": [-0.3, -0.5, -1.0]}]}


def _timeit(fn: Callable[[], Any], device: str, min_time: float = 0.25, max_iters: int = 50) -> float:
    """Seconds per call after two warm-up calls (synchronised on CUDA)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(2):
        fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        sync()
        el = time.perf_counter() - t0
        if el >= min_time or n >= max_iters:
            return el / n


def bare_pipeline(dr: Any, ctx: Any, verts: torch.Tensor, tri: torch.Tensor, uv: torch.Tensor, tex: torch.Tensor,
                  res: int, diff: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The same work written directly against nvdiffrast: MVP → rasterize → interpolate → texture →
    Lambert → background → antialias (differentiable only). ``mvp`` ``[B,4,4]`` → image."""
    vh = torch.cat([verts, torch.ones_like(verts[:, :1])], 1)
    light = torch.nn.functional.normalize(torch.tensor([0.3, 0.5, 1.0], device=verts.device), dim=0)
    faces = tri.long()
    fn_ = torch.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]], dim=-1)
    normals = torch.zeros_like(verts).index_add(0, faces[:, 0], fn_).index_add(0, faces[:, 1], fn_) \
        .index_add(0, faces[:, 2], fn_)
    normals = torch.nn.functional.normalize(normals, dim=-1)

    def render(mvp: torch.Tensor) -> torch.Tensor:
        clip = (vh.unsqueeze(0) @ mvp.transpose(1, 2)).contiguous()
        rast, db = dr.rasterize(ctx, clip, tri, resolution=[res, res], grad_db=True)
        n, _ = dr.interpolate(normals[None], rast, tri)
        t, t_da = dr.interpolate(uv[None], rast, tri, rast_db=db, diff_attrs="all")
        albedo = dr.texture(tex, t, t_da, filter_mode="linear-mipmap-linear", max_mip_level=6)
        col = albedo * (0.1 + (n * light).sum(-1, keepdim=True).clamp_min(0))
        col = torch.where(rast[..., 3:] > 0, col, torch.zeros_like(col))
        if diff:
            col = dr.antialias(col.contiguous(), rast, clip, tri)
        return col
    return render


def throughput(device: str, ops: Any, quick: bool) -> list[dict[str, Any]]:
    from rendergrad.renderers.nvdiffrast import NvdiffrastRenderer
    from rendergrad.renderers.nvdiffrast.geometry import look_at, perspective
    rows = []
    meshes = [("10k", 72), ("100k", 224)] if ops is None else [("tiny", 6)]
    sizes = (256, 512) if ops is None else (16,)
    batches = (1, 4, 16, 64) if ops is None else (1, 4)
    params = [{"name": "pos", "translate": "ball", "axes": "xy", "low": -0.5, "high": 0.5, "init": [0.0, 0.0]}]
    dr = ctx = None
    if ops is None:
        import nvdiffrast.torch as dr
        ctx = dr.RasterizeCudaContext(device=device)
    for label, seg in meshes:
        for res in sizes:
            for mode in ("forward", "differentiable"):
                kw = {"ops": ops()} if ops is not None else {}
                r = NvdiffrastRenderer(_sphere_scene(seg), params, resolution=res, mode=mode, device=device, **kw)
                g = r.geometry
                bare = None
                if dr is not None:
                    tex = r.scene.objects[0].texture.to(device).unsqueeze(0).contiguous()
                    bare = bare_pipeline(dr, ctx, g.vertices[0], g.tri, g.uvs, tex, res, mode == "differentiable")
                for b in batches:
                    theta = (torch.rand(b, 2) - 0.5) * 0.2
                    if mode == "forward":
                        ours = lambda: r.render(theta)  # noqa: E731
                    else:
                        th = theta.clone().requires_grad_(True)
                        ours = lambda: r.render(th).mean().backward()  # noqa: E731
                    t_ours = _timeit(ours, device)
                    t_bare = math.nan
                    if bare is not None:
                        view = look_at(torch.tensor([[0.0, 0.0, 2.2]], device=device).expand(b, 3),
                                       torch.zeros(b, 3, device=device), torch.tensor([0.0, 1.0, 0.0], device=device))
                        mvp = perspective(torch.full((b,), 40.0, device=device), 1.0, 0.1, 100.0) @ view
                        if mode == "forward":
                            def bare_call():
                                with torch.no_grad():
                                    return bare(mvp)
                        else:
                            mv = mvp.clone().requires_grad_(True)
                            bare_call = lambda: bare(mv).mean().backward()  # noqa: E731
                        t_bare = _timeit(bare_call, device)
                    rows.append({"mesh": label, "triangles": g.num_triangles, "resolution": res, "mode": mode,
                                 "batch": b, "renders_per_s": b / t_ours,
                                 "bare_renders_per_s": b / t_bare if math.isfinite(t_bare) else None,
                                 "ratio": (t_bare / t_ours) if math.isfinite(t_bare) else None})
                    print(f"  throughput {label} {res}² {mode:14s} B={b:2d}: {b / t_ours:9.1f} renders/s"
                          + (f"  bare {b / t_bare:9.1f}  ratio {t_bare / t_ours:.2f}" if math.isfinite(t_bare) else ""),
                          flush=True)
                r.close()
    return rows


def throughput_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| mesh (triangles) | resolution | mode | batch | renderer renders/s | bare nvdiffrast renders/s | ratio |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        bare = f"{r['bare_renders_per_s']:,.1f}" if r["bare_renders_per_s"] else "–"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "–"
        lines.append(f"| {r['mesh']} ({r['triangles']:,}) | {r['resolution']}² | {r['mode']} | {r['batch']} | "
                     f"{r['renders_per_s']:,.1f} | {bare} | {ratio} |")
    ratios = [r["ratio"] for r in rows if r["ratio"]]
    if ratios:
        below = [r for r in rows if r["ratio"] and r["ratio"] < 0.9]
        lines += ["", f"Renderer ÷ bare: median {statistics.median(ratios):.2f}, min {min(ratios):.2f}; "
                      f"{len(below)} of {len(ratios)} configurations below the 0.9 target."]
    return lines + [""]


# -- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks nvdiffrast", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller budgets (the GPU check uses this)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--tasks", default="pose,texture,choice")
    ap.add_argument("--methods", default="analytic,prdpt,zerograds,cma")
    ap.add_argument("--resolution", type=int, default=None, help="task image size (default 128, quick 96)")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--throughput-only", action="store_true")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--test-double", action="store_true",
                    help="CPU dry run through the tests' pure-torch stand-in for nvdiffrast (plumbing only)")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds for the optimisation runs: no new run starts after it (the report says so)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    ops = None
    if args.test_double:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from nvdiffrast_reference import ReferenceOps
        ops, args.device = ReferenceOps, "cpu"
    else:
        from rendergrad.renderers.nvdiffrast import NvdiffrastRenderer
        ok, why = NvdiffrastRenderer.available()
        if not ok:
            print(f"nvdiffrast benchmark: cannot run here: {why}", file=sys.stderr)
            return 2
    res = args.resolution or (16 if args.test_double else 96 if args.quick else 128)
    tasks = make_tasks(res, args.quick)
    unknown = [t for t in args.tasks.split(",") if t not in tasks]
    if unknown:
        print(f"unknown task(s) {unknown}; tasks: {', '.join(tasks)}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
                              "torch": torch.__version__, "quick": args.quick, "resolution": res, "tasks": {}}
    md = ["# nvdiffrast benchmark", "",
          f"Device: {report['device']}; torch {torch.__version__}; task images {res}²"
          + ("; CPU DRY RUN through the test double: no number here measures nvdiffrast." if args.test_double else ""),
          "", "Command: `python -m benchmarks nvdiffrast " + " ".join(argv or sys.argv[1:]) + "`", ""]
    t_start = time.perf_counter()
    # throughput first: it is short, and a time limit on the optimisation runs must not starve it
    if not args.no_throughput:
        md += ["## Throughput", ""]
        try:
            rows = throughput(args.device, ops, args.quick)
            report["throughput"] = rows
            md += throughput_table(rows)
        except Exception as e:  # report it and go on to the optimisation runs
            import traceback
            traceback.print_exc()
            report["throughput_error"] = f"{type(e).__name__}: {e}"
            md += [f"**Throughput failed:** {type(e).__name__}: {e}", ""]
    skipped: list[str] = []
    failures: list[str] = []
    if not args.throughput_only:
        md += ["## Optimisation at equal renders", ""]
        for name in args.tasks.split(","):
            task = tasks[name]
            budget = 24 if args.test_double else task["budget"]
            runs = []
            names = args.tasks.split(",")
            # an equal share of the time limit per task, so a slow task cannot starve the next ones
            task_end = (time.perf_counter() + args.time_limit / len(names)) if args.time_limit else math.inf
            for seed in range(args.seeds):       # seeds outer: a time limit cuts every method alike
                for method in args.methods.split(","):
                    spec = task["methods"][method]
                    if time.perf_counter() > task_end:
                        skipped.append(f"{name}/{method}/seed {seed}")
                        continue
                    try:
                        r = run_one(task, method, spec, seed, budget, res, args.device, ops)
                    except Exception as e:  # one failing method must not hide the others
                        print(f"  {name}/{method}/seed {seed}: FAILED {type(e).__name__}: {e}", flush=True)
                        r = {"method": method, "seed": seed, "curve": [(0, math.nan)], "wall": math.nan,
                             "budget": budget, "error": f"{type(e).__name__}: {e}"}
                    runs.append(r)
                    if "error" in r:
                        failures.append(f"{name}/{method}/seed {seed}: {r['error']}")
                    print(f"  {name}/{method}/seed {seed}: error {r['curve'][0][1]:.3g} → {r['curve'][-1][1]:.3g} "
                          f"in {r['wall']:.1f} s", flush=True)
            report["tasks"][name] = runs
            if runs:
                md += summarise(name, task, runs)
        if skipped:
            report["skipped"] = skipped
            md += [f"**Not run** (time limit of {args.time_limit:g} s, shared equally by the tasks): "
                   f"{len(skipped)} runs: " + ", ".join(skipped), ""]
        if failures:
            report["failures"] = failures
            md += ["**Failed runs:**", ""] + [f"- {f}" for f in failures] + [""]
    md += [f"Total wall time {time.perf_counter() - t_start:.0f} s."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "nvdiffrast.md").write_text("\n".join(md) + "\n")
    (out / "nvdiffrast.json").write_text(json.dumps(report, indent=1, default=str))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
