"""How far each parameter moves the loss, in units of one render's noise: what a budget can resolve.

    python -m benchmarks sensitivity [--tasks mixed_pose,mixed_lamp,mixed_two_lights] [--shift 0.1]
                                     [--repeats 16]

For each task (``benchmarks/tasks.py``) the target image is rendered once at the true
parameters, as a run renders it. Then the default objective (the noise-paired MSE: two
half-sample renders per point) is evaluated ``repeats`` times at the truth and at the truth
with one parameter coordinate moved by ``shift`` of its range (inward from a bound). Each row
gives the loss's rise over the truth's, divided by the standard deviation of *one* evaluation.

A coordinate whose rise is well below 1 at the success threshold's distance cannot be told from
the truth by one render: an optimizer needs about ``1 / rise²`` renders near it to see the
difference, whatever the method. A task that stays unsolved with such a coordinate is limited by
its images (resolution, samples, the parameter's effect on them), not by the optimizer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def measure(name: str, shift: float, repeats: int) -> list[dict[str, float | str]]:
    from rendergrad.evaluation import BatchEvaluator
    from rendergrad.registry import registry

    from benchmarks.tasks import get_task
    task = get_task(name)
    r = task.make_renderer()
    space = r.parameter_space()
    ev = BatchEvaluator(r, registry().create("objective", "mse", {}), space, None)
    truth = space.to_unit(space.flatten(task.target_params))
    target = ev.preview(space.to_theta(truth).unsqueeze(0))[0]
    ev.target = target
    ev.objective.prepare(target)

    def scores(u: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return ev(u.unsqueeze(0).repeat(repeats, 1)).double()

    base = scores(truth)
    labels = [f"{p.name}[{i}]" if p.size > 1 else p.name for p in space.params for i in range(p.size)]
    rows = []
    for i, label in enumerate(labels):
        u = truth.clone()
        u[i] = u[i] + shift if u[i] + shift <= 1.0 else u[i] - shift
        moved = scores(u)
        sd = float(torch.cat([base - base.mean(), moved - moved.mean()]).std())
        rise = float(moved.mean() - base.mean())
        rows.append({"task": name, "coordinate": label, "rise": rise, "sd": sd, "ratio": rise / sd if sd > 0 else float("inf")})
    r.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks sensitivity", description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="mixed_pose,mixed_lamp,mixed_two_lights")
    ap.add_argument("--shift", type=float, default=0.1, help="how far each coordinate moves, as a fraction of its range")
    ap.add_argument("--repeats", type=int, default=16, help="evaluations per point")
    ap.add_argument("--out", default=str(HERE / "results" / "sensitivity.md"))
    args = ap.parse_args(argv)
    if not 0 < args.shift <= 0.5 or args.repeats < 2:
        ap.error("--shift must lie in (0, 0.5] and --repeats be at least 2")
    cmd = "python -m benchmarks sensitivity " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = ["# Sensitivity: each parameter's effect on the loss, against one render's noise", "",
             f"Command: `{cmd.strip()}`. The default objective (noise-paired MSE) at the true parameters and "
             f"with one coordinate moved by {args.shift:g} of its range; rise = mean loss there − at the truth, "
             f"sd = one evaluation's standard deviation ({args.repeats} evaluations per point).", "",
             "| task | coordinate | rise | sd | rise ÷ sd |", "|---|---|---|---|---|"]
    for name in [t for t in args.tasks.split(",") if t]:
        for row in measure(name, args.shift, args.repeats):
            lines.append(f"| {row['task']} | {row['coordinate']} | {row['rise']:.3g} | {row['sd']:.3g} | "
                         f"{row['ratio']:.2f} |")
            print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
