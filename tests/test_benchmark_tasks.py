"""Benchmark tasks are the problems they claim to be, and the benchmark machinery works."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import __main__ as dispatcher  # noqa: E402
from benchmarks import estimators as bench  # noqa: E402
from benchmarks.tasks import TASKS, BoxRenderer, LEDRenderer, get_task, rosenbrock  # noqa: E402

pytest.importorskip("scipy")


def test_box_matches_the_reference_formula():
    img = BoxRenderer().render(torch.tensor([[0.5, 0.33], [0.5, 0.66]]))
    assert img.shape == (2, 256, 256, 1)
    ss = torch.linspace(0, 1, 256)
    x, y = torch.meshgrid(ss, ss, indexing="ij")
    px, py = 0.5, 0.33
    ref = torch.flipud((1 - 2 * (((py - x) / 0.1).abs() ** 10 + ((y - px) / 0.1).abs() ** 10)).clamp(0, 1))
    assert torch.allclose(img[0, ..., 0], ref, atol=1e-5)
    # start and target boxes do not overlap: the loss is on a plateau at the start
    assert float((img[0] * img[1]).sum()) == 0.0


def test_every_task_starts_away_from_its_target_and_scores_zero_there():
    for name in TASKS:
        kw = {"segments": 21} if name == "led" else {"size": 8} if name == "texture" else {}
        task = get_task(name, **kw)
        r = task.make_renderer()
        space = r.parameter_space()
        theta0 = space.flatten(task.init or {})
        assert task.error(theta0) > task.success, name
        if task.target_params:
            assert task.error(space.flatten(task.target_params)) <= task.success, name


def test_function_tasks():
    toy = get_task("toy")
    r = toy.make_renderer()
    v = r.render(torch.tensor([[4.0], [6.0], [1.1]], dtype=torch.float64)).flatten()
    assert v[0] == pytest.approx(0.0, abs=1e-9) and v[1] == pytest.approx(1.0)
    # the spline's second zero, and the error measures the distance to the nearer zero
    from benchmarks.tasks import TOY_SECOND_ZERO
    assert r.render(torch.tensor([[TOY_SECOND_ZERO]]))[0, 0, 0, 0] == pytest.approx(0.0, abs=1e-6)
    assert r.render(torch.tensor([[4.06]]))[0, 0, 0, 0] < 0
    assert toy.error(torch.tensor([4.11])) == pytest.approx(0.0063, abs=1e-4)
    assert rosenbrock(torch.tensor([[1.0, 1.0]]))[0] == 0
    rb = get_task("rosenbrock")
    assert rb.error(torch.tensor([1.0, 1.0])) == 0


def test_led_segments_are_distinct_and_visible():
    r = LEDRenderer(336)
    assert r.parameter_space().size == 336
    assert bool((r.masks.sum(1) > 0).all())
    assert torch.linalg.matrix_rank(r.masks[:60]) == 60     # no two segments share their pixels


def test_metrics():
    curve = [(0, 1.0), (10, 0.5), (20, 0.04), (30, 0.01)]
    assert bench.renders_to(curve, 0.05) == 20
    assert bench.renders_to(curve, 0.001) == math.inf
    assert bench.error_at(curve, 25) == 0.04 and bench.error_at(curve, 5) == 1.0


def test_dispatcher_finds_benchmarks():
    found = dispatcher.discover()
    assert {"estimators", "overhead"} <= set(found)
    assert "tasks" not in found


def test_estimator_benchmark_end_to_end(tmp_path):
    rc = bench.main(["--tasks", "toy", "--methods", "prdpt,cma", "--seeds", "2", "--budget", "200",
                     "--jobs", "1", "--out", str(tmp_path)])
    assert rc == 0
    md = (tmp_path / "estimators.md").read_text()
    assert "| prdpt |" in md and "| cma |" in md and "| seconds to it |" in md
    assert (tmp_path / "estimators_toy.png").stat().st_size > 1000
    # every run was recorded as it ended; --resume keeps them and runs only what is missing
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 4
    (tmp_path / "runs.jsonl").write_text("\n".join(lines[:3]) + "\n")
    rc = bench.main(["--tasks", "toy", "--methods", "prdpt,cma", "--seeds", "2", "--budget", "200",
                     "--jobs", "1", "--out", str(tmp_path), "--resume"])
    assert rc == 0
    again = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert again[:3] == lines[:3] and len(again) == 4
    import json
    assert json.loads(again[3])["curve"] == json.loads(lines[3])["curve"]   # the missing run, re-run
    for line in again:   # one time per curve point, from 0, never going back
        run = json.loads(line)
        assert len(run["seconds"]) == len(run["curve"]) and run["seconds"][0] == 0.0
        assert run["seconds"] == sorted(run["seconds"]) and run["seconds"][-1] <= run["wall"]
    from benchmarks import defaults_table
    table = tmp_path / "table.md"
    assert defaults_table.main([str(tmp_path / "runs.jsonl"), "--out", str(table)]) == 0
    row = next(line for line in table.read_text().splitlines() if line.startswith("| toy"))
    assert row.count("/2)") >= 2 or "(0/2)" in row            # prdpt and cma cells, 2 seeds each
    assert "met" in row or "missed" in row
    ert_row, seconds_row = [line for line in table.read_text().splitlines() if line.startswith("| toy")][1:]
    assert ert_row.count("|") == 5                             # task, prdpt, cma, ours / CMA-ES
    assert seconds_row.count("|") == 5 and "≈" not in seconds_row   # read from the recorded seconds
    # the same seeds for every method, and a chosen set of methods
    assert defaults_table.main([str(tmp_path / "runs.jsonl"), "--out", str(table), "--seeds", "1-1",
                                "--methods", "prdpt"]) == 0
    row = next(line for line in table.read_text().splitlines() if line.startswith("| toy"))
    assert "/1)" in row and row.count("|") == 5                # task, prdpt (1 seed), two verdicts


def test_first_seed_runs_held_out_seeds(tmp_path):
    """--first-seed 3 --seeds 2 runs seeds 3 and 4, and seed 3 repeats what a run from seed 0 gave it."""
    import json
    assert bench.main(["--tasks", "toy", "--methods", "prdpt", "--seeds", "2", "--first-seed", "3", "--budget", "60",
                       "--jobs", "1", "--out", str(tmp_path / "held")]) == 0
    held = [json.loads(x) for x in (tmp_path / "held" / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in held) == [3, 4]
    assert bench.main(["--tasks", "toy", "--methods", "prdpt", "--seeds", "4", "--budget", "60",
                       "--jobs", "1", "--out", str(tmp_path / "all")]) == 0
    full = {r["seed"]: r for r in map(json.loads, (tmp_path / "all" / "runs.jsonl").read_text().splitlines())}
    assert full[3]["curve"] == next(r for r in held if r["seed"] == 3)["curve"]


def test_expected_renders_charge_failures_their_budget():
    from benchmarks.defaults_table import expected_renders
    runs = [{"curve": [[10, 1.0], [50, 0.001]], "budget": 100},     # solved at 50
            {"curve": [[10, 1.0], [100, 0.5]], "budget": 100},      # failed: all 100 renders count
            {"curve": [[10, 1.0], [30, 0.0]], "budget": 100}]       # solved at 30
    assert expected_renders(runs, 0.01) == (50 + 100 + 30) / 2
    assert expected_renders(runs[1:2], 0.01) == float("inf")


def test_a_success_past_the_budget_does_not_count():
    """A population step may end a run a few renders past its budget (CMA-ES after a hand-off):
    those renders were not given to the other methods."""
    from benchmarks.defaults_table import expected_renders, seconds_to, stats
    late = {"curve": [[0, 1.0], [594, 0.02], [603, 0.001]], "seconds": [0.0, 5.0, 5.1], "wall": 5.2, "budget": 600}
    assert stats([late], 0.01)["ok"] == 0 and stats([late], 0.01)["final"] == 0.02
    assert expected_renders([late], 0.01) == float("inf") and seconds_to(late, 0.01)[0] == float("inf")
    assert stats([dict(late, budget=603)], 0.01)["ok"] == 1


def test_seconds_to_success_are_read_where_recorded_and_estimated_otherwise():
    from benchmarks.defaults_table import expected_seconds, seconds_to
    timed = {"curve": [[0, 1.0], [10, 0.5], [50, 0.001], [100, 0.0]], "seconds": [0.0, 1.0, 7.0, 9.0], "wall": 9.5}
    assert seconds_to(timed, 0.01) == (7.0, True)
    old = {"curve": [[0, 1.0], [50, 0.001], [100, 0.0]], "wall": 8.0}   # recorded before seconds were
    assert seconds_to(old, 0.01) == (4.0, False)                        # half the renders: half the time
    failed = {"curve": [[0, 1.0], [100, 0.5]], "seconds": [0.0, 3.0], "wall": 3.2}
    assert seconds_to(failed, 0.01)[0] == float("inf")
    median, per_success, exact = expected_seconds([timed, failed], 0.01)
    assert (median, per_success, exact) == (7.0, 10.0, True)           # the failure's 3 s charged too
    assert expected_seconds([timed, old], 0.01)[2] is False


def test_texture_methods_run_with_their_own_optimizer():
    """The texture task's SGD settings reach the optimizer (an unknown one is refused)."""
    from benchmarks.estimators import run_one
    from rendergrad.errors import ConfigError
    task = get_task("texture", size=8)
    assert task.methods["spsa"]["optimizer"] == "sgd"
    res = run_one("texture", "spsa", task.methods["spsa"], 0, 200, {"size": 8})
    assert res["curve"][-1][1] < res["curve"][0][1]
    with pytest.raises(ConfigError, match="optimizer"):
        run_one("texture", "spsa", dict(task.methods["spsa"], optimizer="newton"), 0, 20, {"size": 8})


def test_gradient_quality_reports_consecutive_cosine_and_variants():
    rows = bench.gradient_quality("texture", budget=100, methods=("spsa",), task_kw={"size": 8},
                                  variants={"zg-nobuffer": {"method": "zerograds", "options": {"buffer": 0}}})
    assert [r["method"] for r in rows] == ["spsa", "zg-nobuffer"]
    for r in rows:
        assert -1.0 <= r["cos_consecutive"] <= 1.0 and -1.0 <= r["cos_last"] <= 1.0
    # SPSA draws fresh directions every step: consecutive estimates are far from parallel
    assert abs(rows[0]["cos_consecutive"]) < 0.5
    with pytest.raises(KeyError, match="no method"):
        bench.gradient_quality("texture", budget=20, methods=(), task_kw={"size": 8},
                               variants={"x": {"method": "newton"}})


def test_variants_name_an_estimator_with_options():
    name, spec = bench._variant('iso=prdpt:{"covariance": "isotropic"}')
    assert name == "iso" and spec["estimator"] == "prdpt" and spec["options"] == {"covariance": "isotropic"}
    assert bench._variant("c=cma")[1]["kind"] == "baseline"
    with pytest.raises(SystemExit, match="not JSON"):
        bench._variant("x=prdpt:{covariance}")


@pytest.mark.parametrize("name, start, n", [("two_shapes", 0.214, 8), ("one_disc", 0.361, 6), ("one_box", 0.286, 7),
                                            ("one_glow", 0.229, 6)])
def test_unseen_toy_scenes_score_zero_at_their_targets_and_measure_the_start(name, start, n):
    task = get_task(name)
    space = task.make_renderer().parameter_space()
    assert space.size == n
    assert task.error(space.flatten(task.target_params)) == pytest.approx(0.0, abs=1e-12)
    assert task.error(space.initial_theta()) == pytest.approx(start, abs=1e-3)   # RMS over normalised parameters
    assert set(task.methods) >= {"prdpt", "zerograds", "auto", "cma", "ngopt"}