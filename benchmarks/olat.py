"""OLAT-AD cost against the number of lights and the resolution.

    python -m benchmarks olat [--lights 8 32 128] [--res 256 512] [--steps 10] [--clip] [--out FILE]

For each (lights, resolution): seconds per OLAT-AD step (batch of 4 candidates: relight,
objective, backward, Adam, clamp), seconds of the contraction alone (forward, and forward +
backward), and the peak resident memory of a fresh process doing it. ``--clip`` adds the
relative CLIP text loss with a ViT-B-32-sized open_clip model (random weights, no download).
Each configuration runs in its own spawned process so peak memory is its own.
Timings on a shared CPU are noisy: compare rows of one run (ratios), not runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time
from pathlib import Path
from typing import Any, Sequence


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def measure(lights: int, res: int, objective: str, steps: int, batch: int, threads: int,
            dtype: str = "float32") -> dict[str, Any]:
    import torch
    torch.set_num_threads(threads)
    from rendergrad.renderers.olat import OlatBasis, OlatRenderer
    base_mem = _peak_mib()
    g = torch.Generator().manual_seed(0)
    basis = OlatBasis([f"l{i}" for i in range(lights)], torch.rand(lights, res, res, 3, generator=g) / lights)
    r = OlatRenderer(basis, dtype=dtype)
    del basis
    target = r.relight(torch.full((1, lights, 3), 1.3))[0].detach()
    if objective == "mse":
        from rendergrad.plugins.objectives import MSE
        obj = MSE()
    else:
        from rendergrad.plugins.clip_objective import CLIPObjective, import_open_clip
        import tempfile
        oc = import_open_clip()
        model = oc.create_model("ViT-B-32", pretrained=None)
        ckpt = Path(tempfile.mkdtemp()) / "vit-b-32-random.pt"
        torch.save(model.state_dict(), ckpt)
        del model
        obj = CLIPObjective(checkpoint=str(ckpt), model="ViT-B-32", mode="relative",
                            text="warm evening light", init_text="flat grey light")
        obj.set_init(target.unsqueeze(0))
        target = None
    obj.prepare(target)
    theta = torch.nn.Parameter(torch.ones(batch, lights * 3) + 0.1 * torch.randn(batch, lights * 3, generator=g))
    opt = torch.optim.Adam([theta], lr=0.06)
    lo, hi = r.space.low.float(), r.space.high.float()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        obj.loss(r.render(theta), target).sum().backward()
        opt.step()
        with torch.no_grad():
            theta.copy_(torch.minimum(torch.maximum(theta, lo), hi))

    m = torch.rand(batch, lights, 3, generator=g)
    mg = m.clone().requires_grad_()

    def contract() -> None:
        with torch.no_grad():
            r.relight(m)

    def contract_bwd() -> None:
        r.relight(mg).sum().backward()

    step()  # warm-up
    contract()
    t_step = _median_time(step, steps)
    t_con = _median_time(contract, max(3, steps))
    t_con_bwd = _median_time(contract_bwd, max(3, steps))
    return {"lights": lights, "res": res, "objective": objective, "batch": batch, "dtype": dtype,
            "step_s": t_step, "contract_fwd_s": t_con, "contract_fwd_bwd_s": t_con_bwd,
            "step_over_contraction": t_step / t_con_bwd, "basis_mib": r.basis_bytes() / 2**20,
            "peak_rss_mib": _peak_mib(), "rss_before_mib": base_mem}


def _child(q, kwargs) -> None:
    try:
        q.put(measure(**kwargs))
    except Exception as e:  # report, don't hang the parent
        q.put({"error": f"{type(e).__name__}: {e}", **kwargs})


def run_isolated(**kwargs: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, kwargs))
    p.start()
    out = q.get()
    p.join()
    return out


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares y = a + b x; returns (a, b, R²)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    a = my - b * mx
    ss = sum((y - my) ** 2 for y in ys)
    r2 = 1 - sum((y - a - b * x) ** 2 for x, y in zip(xs, ys)) / ss if ss else 1.0
    return a, b, r2


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks olat", description=__doc__.split("\n\n")[0])
    ap.add_argument("--lights", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--res", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per configuration (median)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    ap.add_argument("--clip", action="store_true", help="also time the relative CLIP loss (ViT-B-32, random)")
    ap.add_argument("--clip-steps", type=int, default=3)
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = []
    print(f"{'obj':4} {'lights':>6} {'res':>5} {'step s':>9} {'contract s':>11} {'fwd+bwd s':>10} "
          f"{'step/contr':>10} {'basis MiB':>9} {'peak MiB':>9}")
    configs = [("mse", l, r, args.steps) for r in args.res for l in args.lights]
    if args.clip:
        configs += [("clip", l, args.res[0], args.clip_steps) for l in (args.lights[0], args.lights[-1])]
    for obj, l, r, steps in configs:
        row = run_isolated(lights=l, res=r, objective=obj, steps=steps, batch=args.batch, threads=args.threads,
                           dtype=args.dtype)
        rows.append(row)
        if "error" in row:
            print(f"{obj:4} {l:6d} {r:5d}  failed: {row['error']}")
            continue
        print(f"{obj:4} {l:6d} {r:5d} {row['step_s']:9.4f} {row['contract_fwd_s']:11.4f} "
              f"{row['contract_fwd_bwd_s']:10.4f} {row['step_over_contraction']:10.2f} {row['basis_mib']:9.1f} "
              f"{row['peak_rss_mib']:9.0f}", flush=True)
    for r in args.res:
        sel = [x for x in rows if x.get("objective") == "mse" and x["res"] == r and "error" not in x]
        if len(sel) >= 2:
            a, b, r2 = linear_fit([x["lights"] for x in sel], [x["step_s"] for x in sel])
            print(f"mse {r}²: step ≈ {a:.4f} s + {b * 1e3:.3f} ms × lights (R² = {r2:.3f})")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": platform.platform(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
