"""``rendergrad demo``: the plateau problem, and every installed estimator on it.

A disc starts where it does not overlap its target. The image loss is then flat around the
start, so an analytic gradient is exactly zero and the optimizer never moves; estimators that
smooth the loss in parameter space see the slope and move. Each estimator gets the same render
budget; the demo writes a side-by-side picture, a convergence plot, a markdown table and one
run folder (with its report) per estimator.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from .plotting import comparison_figure, convergence_plot
from .registry import registry

SCENE: dict[str, Any] = {
    "resolution": 64, "mode": "soft", "softness": 2.0,
    "shapes": [{"type": "disc", "x": "x", "y": "y", "radius": 0.1, "color": [1.0, 0.45, 0.2]}],
    # The disc stays inside the frame: pushing it out of view would also lower the loss.
    "params": [{"name": "x", "low": 0.12, "high": 0.88, "init": 0.25},
               {"name": "y", "low": 0.12, "high": 0.88, "init": 0.75}],
}
START = {"x": 0.25, "y": 0.75}
SOLVED = 0.01  # parameter error below which a run counts as solved
TARGET = {"x": 0.7, "y": 0.3}


def run_demo(out: Path, *, budget: int = 400, seed: int = 0, progress: bool = True,
             lr: float = 0.02) -> list[dict[str, Any]]:
    """Every available estimator on the plateau task, each a run folder ``out/runs/NAME``.

    The runs go through ``rendergrad run``'s own path, so each folder has its report, and
    ``rendergrad runs OUT`` / ``rendergrad compare OUT`` work on the demo's output.
    """
    from .config import validate
    from .runner import run_config

    out.mkdir(parents=True, exist_ok=True)
    reg = registry()
    names = [i.name for i in reg.all() if i.kind == "estimator" and i.available]
    rows, curves, images = [], {}, []
    target_img = start_img = None
    for name in names:
        cfg = validate({"renderer": {"name": "toy", "options": SCENE}, "target": {"params": TARGET},
                        "objective": {"name": "mse"}, "estimator": {"name": name},
                        "optimizer": {"lr": lr, "steps": budget, "max_renders": budget, "seed": seed}})
        t0 = time.perf_counter()
        try:
            res = run_config(cfg, out / "runs" / name, progress=progress, registry=reg)
        except Exception as e:  # one estimator failing must not hide the others
            rows.append({"estimator": name, "error": f"{type(e).__name__}: {e}"})
            continue
        if start_img is None:
            renderer = reg.create("renderer", "toy", SCENE)
            start_img = renderer.render(renderer.parameter_space().initial_theta()[None])[0]
            target_img = res.target_image
        err = math.dist([res.params["x"], res.params["y"]], [TARGET["x"], TARGET["y"]])
        rows.append({"estimator": name, "renders": res.evaluations, "loss": res.loss, "param_error": err,
                     "solved": err < SOLVED, "wall_s": time.perf_counter() - t0})
        curves[name] = res.history
        images.append((name, res.final_image))
    if images:
        comparison_figure(
            out / "comparison.png", [("target", target_img), ("start", start_img)] + images, curves,
            start=START, target=TARGET, solved=SOLVED,
            title=f"Plateau task: {budget} renders per estimator. Analytic gradients are zero until the disc "
                  "overlaps its target.")
        convergence_plot(out / "convergence.png", curves, title="loss against renders (equal budget)")
    table = render_table(rows, budget)
    (out / "results.md").write_text(table)
    print(table)
    print(f"wrote {out / 'comparison.png'}, {out / 'convergence.png'}, {out / 'results.md'}, "
          f"and a run folder with report.html per estimator in {out / 'runs'} (rendergrad runs {out})")
    return rows


def render_table(rows: list[dict[str, Any]], budget: int) -> str:
    start_err = math.dist([START["x"], START["y"]], [TARGET["x"], TARGET["y"]])
    lines = [f"Plateau task: disc from ({START['x']}, {START['y']}) to ({TARGET['x']}, {TARGET['y']}), no overlap at "
             f"the start (parameter error {start_err:.3f}); budget {budget} renders per estimator.", "",
             f"| estimator | renders | final loss | parameter error | solved (< {SOLVED}) | wall s |",
             "|---|---:|---:|---:|---|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['estimator']} | | | | failed: {r['error']} | |")
        else:
            lines.append(f"| {r['estimator']} | {r['renders']} | {r['loss']:.3g} | {r['param_error']:.3g} | "
                         f"{'yes' if r['solved'] else 'no'} | {r['wall_s']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    torch.set_num_threads(1)
    run_demo(Path("rendergrad-demo"))
