"""Where a noisy loss has its minimum: the loss at an optimizer's answer vs at the true parameters.

    python -m benchmarks loss_bias [--tasks gi,mixed_two_lights,caustic_sharp] [--renders 800] [--repeats 8]

For each task (``benchmarks/tasks.py``), PRDPT at its defaults runs once (seed 0); then
``repeats`` images at its final parameters, at the true target parameters and at the start are
scored against the run's target image with the run's objective (MSE). When the final parameters
score *lower* than the truth, the loss itself is minimised away from the true parameters (with
independent noise, ``E[(X − T)²] = (E X − T̄)² + Var X + Var T`` and ``Var X`` depends on the
parameters): no optimizer can reach the target of such a task, only a different objective can.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def measure(name: str, renders: int, repeats: int) -> dict[str, float]:
    import rendergrad as rg
    from benchmarks.tasks import get_task
    task = get_task(name)
    r = task.make_renderer()
    space = r.parameter_space()
    res = rg.optimize(r, "mse", "prdpt", target_params=task.target_params, init=task.init, steps=renders,
                      max_renders=renders, seed=0, final_render=False)
    target = res.target_image.float()

    def loss_at(params: dict) -> torch.Tensor:
        theta = space.flatten(params).reshape(1, -1).repeat(repeats, 1)
        images = torch.as_tensor(r.render(theta)).float()
        return ((images - target) ** 2).mean(dim=(1, 2, 3))

    final, truth, start = loss_at(res.params), loss_at(task.target_params), loss_at(task.init or {})
    r.close()
    return {"error": task.error(space.flatten(res.params)), "final": float(final.mean()), "final_sd": float(final.std()),
            "truth": float(truth.mean()), "truth_sd": float(truth.std()), "start": float(start.mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks loss_bias", description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="gi,mixed_two_lights,caustic_sharp")
    ap.add_argument("--renders", type=int, default=800)
    ap.add_argument("--repeats", type=int, default=8)
    args = ap.parse_args(argv)
    if str(HERE.parent) not in sys.path:
        sys.path.insert(0, str(HERE.parent))
    torch.set_num_threads(1)
    lines = ["| task | parameter error at the end | loss at the final parameters | loss at the true parameters "
             "| loss at the start |", "|---|---|---|---|---|"]
    for name in [t for t in args.tasks.split(",") if t]:
        m = measure(name, args.renders, args.repeats)
        lines.append(f"| {name} | {m['error']:.3g} | {m['final']:.3g} ± {m['final_sd']:.1g} | "
                     f"{m['truth']:.3g} ± {m['truth_sd']:.1g} | {m['start']:.3g} |")
        print(lines[-1], flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
