"""Engine overhead: how much of a step is *not* the render, with a renderer costing ≈1 ms/image.

    python -m benchmarks overhead [--steps 300] [--ms 1.0] [--samples 2,8]

The renderer sleeps ``ms`` per image (a stand-in for a fast GPU rasteriser or a remote
render farm: time spent elsewhere, not on this CPU) and returns a 64×64 image. For each
estimator the loop runs ``steps`` steps; the evaluator times the renderer calls, and
``overhead = 1 − render time / wall time`` is everything else: estimator maths, objective,
optimizer, history, validation. The goal is ≤ 5 % at 2 renders per step.

Times depend on what else the machine runs, so each row also counts the torch operations per
step outside the renderer (a short separate run under a dispatch counter): that number does
not change with the load, and each eager operation on these tiny tensors costs a few µs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from rendergrad import Param, ParamSpace, Renderer

HERE = Path(__file__).resolve().parent


_IN_RENDER = [False]   # the operation count leaves out the renderer's own work


class SleepRenderer(Renderer):
    """A flat image whose colour depends on the parameters, after ``ms`` milliseconds per image."""

    name = "sleep"
    differentiable = True

    def __init__(self, ms: float = 1.0, n: int = 4, size: int = 64):
        self.ms, self.n, self.size = ms, n, size

    def parameter_space(self) -> ParamSpace:
        return ParamSpace([Param("p", shape=(self.n,), init=0.3)])

    def render(self, theta: torch.Tensor) -> torch.Tensor:
        _IN_RENDER[0] = True
        try:
            return self._render(theta)
        finally:
            _IN_RENDER[0] = False

    def _render(self, theta: torch.Tensor) -> torch.Tensor:
        deadline = time.perf_counter() + self.ms * 1e-3 * theta.shape[0]
        time.sleep(max(0.0, deadline - time.perf_counter() - 2e-4))
        while time.perf_counter() < deadline:   # finish precisely; sleep overshoots by ~0.1 ms
            pass
        colour = theta[:, :3].float() if self.n >= 3 else theta.float().repeat(1, 3)[:, :3]
        # A real renderer writes every pixel: return memory, not a stride-0 view (reductions
        # over an expanded view cost 10x more and would be charged to the engine).
        return colour.reshape(-1, 1, 1, 3).expand(-1, self.size, self.size, 3).contiguous()


def measure(estimator: str, options: dict, steps: int, ms: float) -> dict:
    import rendergrad as rg
    r = SleepRenderer(ms)
    t0 = time.perf_counter()
    res = rg.optimize(r, "mse", estimator, estimator_options=options, target=torch.full((64, 64, 3), 0.6),
                      lr=0.01, steps=steps, seed=0, final_render=False)
    wall = time.perf_counter() - t0
    loop_wall = res.wall_time_s
    over = 1.0 - res.render_seconds / loop_wall
    return {"estimator": estimator, "options": options, "renders": res.evaluations, "steps": res.steps,
            "wall": wall, "loop_wall": loop_wall, "render_s": res.render_seconds, "overhead": over,
            "overhead_ms_per_step": (loop_wall - res.render_seconds) / res.steps * 1e3}


def count_ops(estimator: str, options: dict, steps: int = 20) -> float:
    """Torch operations per step outside the renderer (independent of the machine's load)."""
    import rendergrad as rg
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not _IN_RENDER[0]:
                Count.n += 1
            return func(*args, **(kwargs or {}))

    r, target = SleepRenderer(0.0), torch.full((64, 64, 3), 0.6)
    with Count():
        res = rg.optimize(r, "mse", estimator, estimator_options=options, target=target, lr=0.01,
                          steps=steps, seed=0, final_render=False)
    return Count.n / res.steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks overhead", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--ms", type=float, default=1.0, help="render cost per image, milliseconds")
    ap.add_argument("--samples", default="2,8", help="renders per step for prdpt/zerograds/spsa")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cases = [("analytic", {})]
    for n in [int(s) for s in args.samples.split(",") if s]:
        cases += [("prdpt", {"samples": n}), ("zerograds", {"samples": n}), ("spsa", {"pairs": max(1, n // 2)})]
    cases.append(("fd", {}))
    measure("prdpt", {}, 20, args.ms)  # warm-up: imports, allocator
    load = os.getloadavg()
    rows = [measure(e, o, args.steps, args.ms) for e, o in cases]
    load = [max(a, b) for a, b in zip(load, os.getloadavg())]
    for r in rows:
        r["ops"] = count_ops(r["estimator"], r["options"])
    lines = ["# Engine overhead", "",
             f"Command: `python -m benchmarks overhead {' '.join(argv if argv is not None else sys.argv[1:])}`. "
             f"Renderer: {args.ms} ms per image (timed wait), 64×64 image, 4 parameters, MSE, Adam, "
             f"{args.steps} steps, {os.cpu_count()} CPU cores, load average up to "
             f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) while it ran.", "",
             "| estimator | options | renders/step | render s | loop s | not-render ms/step | overhead "
             "| torch ops/step |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['estimator']} | {r['options'] or ''} | {r['renders'] / r['steps']:.0f} | "
                     f"{r['render_s']:.2f} | {r['loop_wall']:.2f} | {r['overhead_ms_per_step']:.2f} | "
                     f"{100 * r['overhead']:.1f} % | {r['ops']:.0f} |")
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "overhead.md").write_text(text)
    print(text)
    print(f"wrote {out / 'overhead.md'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
