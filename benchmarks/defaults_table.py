"""The defaults table: estimators at their defaults against CMA-ES, from recorded benchmark runs.

    python -m benchmarks defaults_table [RUNS ...] [--out FILE]

``RUNS`` are ``runs.json`` / ``runs.jsonl`` files written by ``python -m benchmarks estimators``
(default: every ``runs.json`` under ``benchmarks/results/defaults10/``, in name order; a
run recorded again in a later file replaces the earlier one). Per task and method:
successful runs, renders to success (median [min–max] over the runs that got there), final error,
and the two checks the defaults are held to:

* **vs CMA-ES**: the best of ``prdpt``/``zerograds``/``auto`` succeeds at least as often as
  ``cma`` and needs at most 1.5× its median renders;
* **auto vs the best**: ``auto`` succeeds as often as the best method (most successes, then fewest
  median renders) and needs at most 1.5× its median renders.

A second table gives each method's **expected renders to success** (ERT, the "average running
time" of the COCO benchmarking platform): every render any run spent, up to its success or to the
end of its budget, divided by the number of runs that succeeded. The median over successful runs
alone rewards a method that gives up early and punishes one that solves the hard seeds late (a
restart that finds the optimum after 400 renders raises its median); ERT charges every failure its
full budget, so it is the renders a user should expect to pay for one solution when runs that
fail are started again.

A third table gives **seconds to success** (median over the runs that got there, and the
expected seconds per success charged as ERT is), because on a path-traced scene a render's cost
is not the same for every method: ZeroGrads fits a network between renders, CMA-ES updates a
covariance. A run recorded with ``seconds`` (one per curve point, as ``estimators`` writes them
now) is read exactly; an older run without them is estimated as its wall time × its share of
renders at success, and its cell is marked ``≈``. Runs recorded in different benchmark commands
shared the machine with different work, so compare ratios within a command's runs where it
matters.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_DIR = HERE / "results" / "defaults10"
OURS = ("prdpt", "zerograds", "auto")
ORDER = ("prdpt", "zerograds", "auto", "cma", "ngopt")


def load(paths: list[Path]) -> list[dict[str, Any]]:
    """The runs of every file; a run (task, method, seed, budget) in a later file replaces an earlier one."""
    runs: dict[tuple, dict[str, Any]] = {}
    for p in paths:
        text = p.read_text()
        for r in json.loads(text) if p.suffix == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]:
            runs[(r["task"], r["method"], r["seed"], r.get("budget"))] = r
    return list(runs.values())


def within_budget(run: dict[str, Any]) -> list[list[float]]:
    """The run's error curve up to its render budget. A method whose last step is a population
    (CMA-ES after a hand-off) may end a few renders past the budget; a success there would be
    bought with renders the other methods did not get."""
    budget = run.get("budget")
    return [p for p in run["curve"] if not budget or p[0] <= budget] or run["curve"][:1]


def first_success(curve: list[list[float]], level: float) -> float:
    return next((r for r, e in curve if e <= level), math.inf)


def stats(runs: list[dict[str, Any]], level: float) -> dict[str, Any]:
    hits = sorted(first_success(within_budget(r), level) for r in runs)
    ok = [h for h in hits if h < math.inf]
    final = sorted(within_budget(r)[-1][1] for r in runs)
    return {"ok": len(ok), "n": len(runs), "median": statistics.median(ok) if ok else math.inf,
            "min": ok[0] if ok else math.inf, "max": ok[-1] if ok else math.inf,
            "final": statistics.median(final), "final_min": final[0], "final_max": final[-1]}


def expected_renders(runs: list[dict[str, Any]], level: float) -> float:
    """ERT: renders spent by all runs (to success, or all of a failed run's) per successful run."""
    spent, ok = 0.0, 0
    for r in runs:
        hit = first_success(within_budget(r), level)
        if hit < math.inf:
            spent, ok = spent + hit, ok + 1
        else:
            spent += max(r["curve"][-1][0], r.get("budget") or 0)
    return spent / ok if ok else math.inf


def ours_over_cma(cost: dict[str, float]) -> str:
    """The best of our methods' expected cost per success over CMA-ES's (renders or seconds)."""
    ours = [cost[m] for m in OURS if m in cost]
    if not ours or "cma" not in cost:
        return "–"
    if cost["cma"] == math.inf:
        return "neither succeeds" if min(ours) == math.inf else "CMA-ES never succeeds"
    return f"{min(ours) / cost['cma']:.2f}×"


def seconds_to(run: dict[str, Any], level: float) -> tuple[float, bool]:
    """``(seconds to success or ∞, exact)``: read from the run's ``seconds`` where it has them,
    else its wall time × the share of its renders spent at success."""
    curve, secs = within_budget(run), run.get("seconds")
    exact = secs is not None and len(secs) == len(run["curve"])
    i = next((k for k, (_, e) in enumerate(curve) if e <= level), None)
    if i is None:
        return math.inf, exact
    if exact:
        return float(secs[i]), True
    total = max(run["curve"][-1][0], 1)      # the wall time covers every render of the run
    return float(run["wall"]) * curve[i][0] / total, False


def expected_seconds(runs: list[dict[str, Any]], level: float) -> tuple[float, float, bool]:
    """``(median seconds to success, seconds spent per success, all exact)`` over ``runs``."""
    hits, spent, exact = [], 0.0, True
    for r in runs:
        t, ok = seconds_to(r, level)
        exact = exact and ok
        if t < math.inf:
            hits.append(t)
            spent += t
        else:
            secs = r.get("seconds")
            spent += float(secs[-1]) if secs else float(r["wall"])
    med = statistics.median(hits) if hits else math.inf
    return med, (spent / len(hits) if hits else math.inf), exact


def seconds_table(runs: list[dict[str, Any]]) -> str:
    """Seconds to success per task and method: median over successful runs / expected per success."""
    from benchmarks.tasks import get_task
    tasks, methods = columns(runs)
    lines = ["| task | " + " | ".join(methods) + " | best of ours / CMA-ES (expected) |",
             "|---|" + "---|" * (len(methods) + 1)]

    def fmt(v: float) -> str:
        return "∞" if v == math.inf else f"{v:.3g}"

    for t in tasks:
        level = get_task(t).success
        got = {m: expected_seconds([r for r in runs if r["task"] == t and r["method"] == m], level)
               for m in methods if any(r["task"] == t and r["method"] == m for r in runs)}
        ratio = ours_over_cma({m: got[m][1] for m in got})
        cells = [("" if got[m][2] or got[m][1] == math.inf else "≈") + f"{fmt(got[m][0])} / {fmt(got[m][1])}"
                 if m in got else "" for m in methods]
        lines.append(f"| {t} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def columns(runs: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The tasks in the order first recorded, and the methods in table order (ours, then baselines)."""
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    methods = [m for m in ORDER if any(r["method"] == m for r in runs)]
    methods += sorted({r["method"] for r in runs} - set(methods))
    return tasks, methods


def ert_table(runs: list[dict[str, Any]]) -> str:
    """Expected renders to success per task and method, and ours against CMA-ES by that measure."""
    from benchmarks.tasks import get_task
    tasks, methods = columns(runs)
    lines = ["| task | " + " | ".join(methods) + " | best of ours / CMA-ES |", "|---|" + "---|" * (len(methods) + 1)]
    for t in tasks:
        level = get_task(t).success
        ert = {m: expected_renders([r for r in runs if r["task"] == t and r["method"] == m], level)
               for m in methods if any(r["task"] == t and r["method"] == m for r in runs)}
        ratio = ours_over_cma(ert)
        lines.append(f"| {t} | " + " | ".join(("∞" if ert[m] == math.inf else f"{ert[m]:.0f}") if m in ert else ""
                                              for m in methods) + f" | {ratio} |")
    return "\n".join(lines)


def cell(s: dict[str, Any]) -> str:
    if not s["ok"]:
        return f"– ({s['ok']}/{s['n']}), final {s['final']:.2g}"
    return f"{s['median']:.0f} [{s['min']:.0f}–{s['max']:.0f}] ({s['ok']}/{s['n']})"


def better(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """``a`` beats ``b``: a higher success rate, then fewer median renders."""
    ra, rb = a["ok"] / a["n"], b["ok"] / b["n"]
    return ra > rb or (ra == rb and a["median"] < b["median"])


def holds(ours: dict[str, Any], ref: dict[str, Any]) -> bool:
    return ours["ok"] / ours["n"] >= ref["ok"] / ref["n"] and ours["median"] <= 1.5 * ref["median"]


def table(runs: list[dict[str, Any]]) -> str:
    from benchmarks.tasks import get_task
    tasks, methods = columns(runs)
    lines = ["| task (success) | " + " | ".join(methods) + " | best of ours vs CMA-ES | auto vs best |",
             "|---|" + "---|" * (len(methods) + 2)]
    for t in tasks:
        level = get_task(t).success
        by = {m: stats([r for r in runs if r["task"] == t and r["method"] == m], level)
              for m in methods if any(r["task"] == t and r["method"] == m for r in runs)}
        best = min(by, key=lambda m: (-by[m]["ok"] / by[m]["n"], by[m]["median"]))
        ours = [m for m in OURS if m in by]
        top = None
        for m in ours:
            if top is None or better(by[m], by[top]):
                top = m
        vs_cma = "–" if top is None or "cma" not in by else \
            f"neither reaches it (final error: {top} {by[top]['final']:.2g}, cma {by['cma']['final']:.2g})" \
            if not by[top]["ok"] and not by["cma"]["ok"] else \
            f"{'met' if holds(by[top], by['cma']) else 'missed'} ({top}: {by[top]['ok']}/{by[top]['n']}, " \
            f"{by[top]['median'] / by['cma']['median']:.2f}× renders)" if by["cma"]["ok"] and by[top]["ok"] else \
            f"{'met' if by[top]['ok'] >= by['cma']['ok'] else 'missed'} ({top}: {by[top]['ok']}/{by[top]['n']} vs " \
            f"{by['cma']['ok']}/{by['cma']['n']})"
        vs_best = "–" if "auto" not in by else ("met (auto is the best)" if best == "auto" else
                                                f"{'met' if holds(by['auto'], by[best]) else 'missed'} (best: {best})")
        lines.append(f"| {t} (≤ {level:g}) | " + " | ".join(cell(by[m]) if m in by else "" for m in methods)
                     + f" | {vs_cma} | {vs_best} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks defaults_table", description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="*", help="runs.json / runs.jsonl files of `python -m benchmarks estimators`")
    ap.add_argument("--out", default=None, help="write the markdown table here too")
    ap.add_argument("--seeds", default=None, metavar="FIRST-LAST",
                    help="only the runs of these seeds, e.g. 10-39: compare methods on the same seeds when the "
                         "files hold different ranges")
    ap.add_argument("--methods", default=None, help="only these methods (comma-separated)")
    args = ap.parse_args(argv)
    paths = [Path(p) for p in args.runs] or sorted(DEFAULT_DIR.glob("*/runs.json"))
    if not paths:
        print(f"no runs given and none under {DEFAULT_DIR}; run `python -m benchmarks estimators --out "
              f"{DEFAULT_DIR}/NAME` first")
        return 0
    if str(HERE.parent) not in sys.path:
        sys.path.insert(0, str(HERE.parent))
    runs = load(paths)
    if args.seeds:
        first, _, last = args.seeds.partition("-")
        runs = [r for r in runs if int(first) <= r["seed"] <= int(last or first)]
    if args.methods:
        runs = [r for r in runs if r["method"] in args.methods.split(",")]
    md = (table(runs) + "\n\nExpected renders to success (all renders spent / successful runs):\n\n"
          + ert_table(runs) + "\n\nSeconds to success, median / expected per success (≈: estimated from the "
          "run's wall time × its share of renders):\n\n" + seconds_table(runs))
    print(md)
    if args.out:
        Path(args.out).write_text(md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
