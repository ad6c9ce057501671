"""Where a noisy loss has its minimum: the plain and the paired MSE at an answer and at the truth.

    python -m benchmarks loss_bias [--tasks gi,mixed_two_lights,caustic_sharp] [--renders 800] [--repeats 8]
                                   [--objective plain|pairs]

For each task (``benchmarks/tasks.py``), PRDPT at its defaults runs once (seed 0) with the chosen
objective (``plain``: ``mse`` with ``unbiased = false``; ``pairs``: the default, two half-sample
renders per point). Then ``repeats`` evaluations at its final parameters, at the true target
parameters and at the start are scored against the run's target image, with both objectives.
When the final parameters score *lower* than the truth, the objective itself is minimised away
from the true parameters: with independent noise, ``E[(X − T)²] = (E X − T)² + Var X`` and
``Var X`` depends on the parameters; ``E[(X₁ − T)(X₂ − T)] = (E X − T)²`` does not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def measure(name: str, renders: int, repeats: int, objective: str) -> dict[str, float]:
    import rendergrad as rg
    from benchmarks.tasks import get_task
    task = get_task(name)
    r = task.make_renderer()
    space = r.parameter_space()
    res = rg.optimize(r, "mse", "prdpt", target_params=task.target_params, init=task.init, steps=renders,
                      max_renders=renders, seed=0, final_render=False,
                      objective_options={"unbiased": objective == "pairs"})
    target = res.target_image.float()

    def loss_at(params: dict) -> tuple[torch.Tensor, torch.Tensor]:
        theta = space.flatten(params).reshape(1, -1).repeat(repeats, 1)
        r.set_sample_fraction(1.0)
        plain = ((torch.as_tensor(r.render(theta)).float() - target) ** 2).mean(dim=(1, 2, 3))
        r.set_sample_fraction(0.5)
        first, second = (torch.as_tensor(r.render(theta)).float() - target for _ in range(2))
        r.set_sample_fraction(1.0)
        return plain, (first * second).mean(dim=(1, 2, 3))

    out = {"error": task.error(space.flatten(res.params))}
    for where, params in (("final", res.params), ("truth", task.target_params), ("start", task.init or {})):
        plain, pairs = loss_at(params)
        out.update({f"{where}_plain": float(plain.mean()), f"{where}_plain_sd": float(plain.std()),
                    f"{where}_pairs": float(pairs.mean()), f"{where}_pairs_sd": float(pairs.std())})
    r.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks loss_bias", description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="gi,mixed_two_lights,caustic_sharp")
    ap.add_argument("--renders", type=int, default=800)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--objective", choices=("plain", "pairs"), default="pairs",
                    help="the objective the PRDPT run optimises (both are measured at its answer)")
    args = ap.parse_args(argv)
    if str(HERE.parent) not in sys.path:
        sys.path.insert(0, str(HERE.parent))
    torch.set_num_threads(1)
    lines = [f"PRDPT run on the {args.objective} MSE; each cell: mean ± sd of {args.repeats} evaluations.", "",
             "| task | parameter error at the end | objective | at the final parameters | at the true parameters "
             "| at the start |", "|---|---|---|---|---|---|"]
    for name in [t for t in args.tasks.split(",") if t]:
        m = measure(name, args.renders, args.repeats, args.objective)
        for kind in ("plain", "pairs"):
            cells = " | ".join(f"{m[f'{w}_{kind}']:.3g} ± {m[f'{w}_{kind}_sd']:.1g}" for w in ("final", "truth", "start"))
            lines.append(f"| {name} | {m['error']:.3g} | {kind} MSE | {cells} |")
            print(lines[-1], flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
