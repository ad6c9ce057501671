"""``rendergrad demo``: the plateau problem, and every installed estimator on it.

A disc starts where it does not overlap its target. The image loss is then flat around the
start, so an analytic gradient is exactly zero and the optimizer never moves; estimators that
smooth the loss in parameter space see the slope and move. Each estimator gets the same render
budget; the demo writes a side-by-side picture, a convergence plot and a markdown table.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from .loop import optimize
from .plotting import convergence_plot
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
    out.mkdir(parents=True, exist_ok=True)
    reg = registry()
    names = [i.name for i in reg.all() if i.kind == "estimator" and i.available]
    rows, curves, images = [], {}, []
    target_img = start_img = None
    for name in names:
        renderer = reg.create("renderer", "toy", SCENE)
        t0 = time.perf_counter()
        try:
            res = optimize(renderer, "mse", name, target_params=TARGET, lr=lr, steps=budget,
                           max_renders=budget, seed=seed, progress=progress)
        except Exception as e:  # one estimator failing must not hide the others
            rows.append({"estimator": name, "error": f"{type(e).__name__}: {e}"})
            continue
        if start_img is None:
            start_img = renderer.render(renderer.parameter_space().initial_theta()[None])[0]
            target_img = res.target_image
        err = math.dist([res.params["x"], res.params["y"]], [TARGET["x"], TARGET["y"]])
        rows.append({"estimator": name, "renders": res.evaluations, "loss": res.loss, "param_error": err,
                     "solved": err < SOLVED, "wall_s": time.perf_counter() - t0})
        curves[name] = res.history
        images.append((name, res.final_image))
    if images:
        demo_figure(out / "comparison.png", target_img, start_img, images, curves, budget)
        convergence_plot(out / "convergence.png", curves, title="loss against renders (equal budget)")
    table = render_table(rows, budget)
    (out / "results.md").write_text(table)
    print(table)
    print(f"wrote {out / 'comparison.png'}, {out / 'convergence.png'}, {out / 'results.md'}")
    return rows


def demo_figure(path: Path, target_img, start_img, images, curves, budget: int) -> Path:
    """Final images side by side, over the paths taken in parameter space and the loss curves."""
    import matplotlib.pyplot as plt

    from .imageio import to_display
    cols = 2 + len(images)
    fig = plt.figure(figsize=(max(8.0, 1.7 * cols), 6.2), dpi=110)
    grid = fig.add_gridspec(2, cols, height_ratios=[1, 1.6])
    for j, (label, img) in enumerate([("target", target_img), ("start", start_img)] + list(images)):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(to_display(img), interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    half = cols // 2
    ax = fig.add_subplot(grid[1, :half])
    for name, hist in curves.items():
        xs = [h["params"]["x"] for h in hist]
        ys = [h["params"]["y"] for h in hist]
        ax.plot(xs, ys, lw=1.2, label=name)
    ax.plot([START["x"]], [START["y"]], "ko", ms=5, label="start")
    ax.plot([TARGET["x"]], [TARGET["y"]], "r*", ms=12, label="target")
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)  # image convention: y down
    ax.set_aspect("equal")
    ax.set_title("path in parameter space (x, y)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax = fig.add_subplot(grid[1, half:])
    for name, hist in curves.items():
        err = [math.dist([h["params"]["x"], h["params"]["y"]], [TARGET["x"], TARGET["y"]]) for h in hist]
        ax.plot([h["evaluations"] for h in hist], err, lw=1.2, label=name)
    ax.axhline(SOLVED, color="k", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("renders")
    ax.set_title("distance to the target parameters (dotted: solved)", fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.suptitle(f"Plateau task: {budget} renders per estimator. Analytic gradients are zero until the disc "
                 "overlaps its target.", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


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
