"""Samples per pixel that follow the run against full samples: renders, samples and seconds to an error.

    python -m benchmarks samples [--tasks sphere_shadow] [--seeds 1] [--budget 800] [--out DIR]

Every task runs PRDPT at its defaults twice per seed, on the default noise-paired MSE: with
every render at the renderer's samples (``samples = "full"``) and with the sample schedule
(``samples = "adaptive"``, :mod:`rendergrad.samples`). For each error level the table gives
the renders, the cost in full-sample renders and the wall seconds each needed to get there,
and the ratio of seconds. Both runs of a seed run one after the other in the same process, so
their seconds compare; the machine's load is whatever it is (compare the ratios).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "samples"
MODES = ("full", "adaptive")


def run_one(task_name: str, samples: str, seed: int, budget: int) -> dict[str, Any]:
    """One PRDPT run; per step: renders, full-sample cost, seconds since the start, error, fraction."""
    torch.set_num_threads(1)
    import rendergrad as rg
    from rendergrad.callbacks import Callback

    from benchmarks.tasks import get_task
    task = get_task(task_name)
    renderer = task.make_renderer()
    space = renderer.parameter_space()
    start = task.error(space.flatten(task.init or {}))
    curve: list[list[float]] = [[0, 0.0, 0.0, start, 1.0]]
    t0 = time.perf_counter()

    class Track(Callback):
        def on_step(self, *, record: dict[str, Any], u: torch.Tensor | None = None, **kw: Any) -> None:
            err = task.error(space.to_theta(u.detach().to(torch.float64)))
            curve.append([record["evaluations"], float(record.get("cost", record["evaluations"])),
                          time.perf_counter() - t0, err, float(record.get("sample_fraction", 1.0))])

    rg.optimize(renderer, "mse", "prdpt", objective_options={"samples": samples}, target=None,
                target_params=task.target_params, init=task.init, steps=budget, max_renders=budget, seed=seed,
                callbacks=[Track()], final_render=False)
    return {"task": task_name, "samples": samples, "seed": seed, "budget": budget, "curve": curve,
            "success": task.success}


def first(curve: list[list[float]], level: float) -> list[float] | None:
    """The first step whose error is at or below ``level``: [renders, cost, seconds, error, fraction]."""
    for row in curve:
        if row[3] <= level:
            return row
    return None


def levels_of(runs: list[dict[str, Any]], extra: list[float] = ()) -> list[float]:
    """Error levels worth a row: the success threshold, then decades down to the best error
    reached, and any ``extra`` levels asked for."""
    best = min(row[3] for r in runs for row in r["curve"])
    levels = [runs[0]["success"]]
    while levels[-1] / 10 >= best:
        levels.append(levels[-1] / 10)
    return sorted(set(levels) | set(extra), reverse=True)


def table(runs: list[dict[str, Any]], extra_levels: list[float] = ()) -> list[str]:
    lines: list[str] = []
    for task in sorted({r["task"] for r in runs}):
        rs = [r for r in runs if r["task"] == task]
        seeds = sorted({r["seed"] for r in rs})
        lines += [f"### {task} (PRDPT defaults, {len(seeds)} seed(s), {rs[0]['budget']} renders)", "",
                  "| error ≤ | full: renders / cost / s | adaptive: renders / cost / s | seconds, adaptive ÷ full |",
                  "|---|---|---|---|"]
        for level in levels_of(rs, extra_levels):
            cells, secs = [], {}
            for mode in MODES:
                hits = [first(r["curve"], level) for r in rs if r["samples"] == mode]
                got = [h for h in hits if h is not None]
                if len(got) * 2 <= len(hits) or not got:
                    cells.append(f"– ({len(got)}/{len(hits)})")
                    continue
                med = [statistics.median(h[i] if h else math.inf for h in hits) for i in range(3)]
                secs[mode] = med[2]
                cells.append(f"{med[0]:.0f} / {med[1]:.0f} / {med[2]:.0f} ({len(got)}/{len(hits)})")
            ratio = f"{secs['adaptive'] / secs['full']:.2f}×" if len(secs) == 2 and secs["full"] > 0 else "–"
            lines.append(f"| {level:.3g} | {cells[0]} | {cells[1]} | {ratio} |")
        for mode in MODES:
            ends = [r["curve"][-1] for r in rs if r["samples"] == mode]
            lines.append("")
            lines.append(f"{mode}: final error {statistics.median(e[3] for e in ends):.3g} after "
                         f"{statistics.median(e[0] for e in ends):.0f} renders, cost "
                         f"{statistics.median(e[1] for e in ends):.0f} full-sample renders, "
                         f"{statistics.median(e[2] for e in ends):.0f} s.")
        lines.append("")
    return lines


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in runs:
        c = list(zip(*r["curve"]))
        style = "-" if r["samples"] == "adaptive" else "--"
        label = f"{r['task']} {r['samples']} seed {r['seed']}"
        axes[0].semilogy(c[2], c[3], style, label=label)
        axes[1].plot(c[0], c[4], style, label=label)
    axes[0].set(xlabel="seconds", ylabel="parameter error", title="error against wall time")
    axes[1].set(xlabel="renders", ylabel="sample fraction", title="samples per pixel, as a fraction")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks samples", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="sphere_shadow", help="comma-separated Mitsuba tasks (benchmarks/tasks.py)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--budget", type=int, default=None, help="renders per run (default: the task's)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--levels", default="", help="extra error levels for the table, comma-separated")
    ap.add_argument("--table-only", action="store_true", help="re-write the table from OUT/runs.json, no runs")
    args = ap.parse_args(argv)
    from benchmarks.tasks import get_task
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = [float(x) for x in args.levels.split(",") if x]
    runs = json.loads((out / "runs.json").read_text()) if args.table_only else []
    for name in ([] if args.table_only else [t for t in args.tasks.split(",") if t]):
        budget = args.budget or get_task(name).budget
        for seed in range(args.seeds):
            for mode in MODES:
                r = run_one(name, mode, seed, budget)
                end = r["curve"][-1]
                print(f"  {name} {mode:<8} seed {seed}: error {end[3]:.3g}, {end[0]:.0f} renders, "
                      f"cost {end[1]:.0f}, {end[2]:.0f} s", flush=True)
                runs.append(r)
    if not args.table_only:
        (out / "runs.json").write_text(json.dumps(runs))
    cmd = "python -m benchmarks samples " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.table_only:
        cmd += "` (the table of the runs in runs.json; their command: `" + " ".join(runs[0].get("command", "?").split())
    for r in runs:
        r.setdefault("command", cmd)
    lines = ["# Samples per pixel that follow the run", "", f"Command: `{cmd.strip()}`", "",
             "Cost: renders weighted by their share of the renderer's samples (a half-sample render costs "
             "half). Medians over seeds; a cell reads renders / cost / seconds (runs that got there / runs).",
             ""] + table(runs, extra) + ["![samples](samples.png)", ""]
    plot(runs, out / "samples.png")
    (out / "samples.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
