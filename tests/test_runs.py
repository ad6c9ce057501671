"""`rendergrad runs` and `rendergrad compare` on a folder of finished, interrupted and failed runs."""

import json

import numpy as np
import pytest
from PIL import Image

from rendergrad.cli import main
from rendergrad.runs import find_runs, read_status, sort_records, summarize


def test_every_run_folder_records_its_status(run_folders):
    assert [p.relative_to(run_folders).as_posix() for p in find_runs(run_folders)] == [
        "interrupted", "killed", "nested/failed", "prdpt", "spsa"]
    assert read_status(run_folders / "spsa")["status"] == "finished"
    assert read_status(run_folders / "interrupted")["status"] == "interrupted"
    failed = read_status(run_folders / "nested/failed")
    assert failed["status"] == "failed" and "worker lost" in failed["error"]
    killed = read_status(run_folders / "killed")
    assert killed["status"] == "interrupted" and "process ended" in killed["note"]


def test_runs_json_has_a_row_per_run_with_losses_renders_and_parameter_error(run_folders, capsys):
    assert main(["runs", str(run_folders), "--json"]) == 0
    rows = {r["run"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"spsa", "prdpt", "interrupted", "killed", "nested/failed"}
    spsa = rows["spsa"]
    assert spsa["status"] == "finished" and spsa["renderer"] == "toy" and spsa["estimator"] == "spsa"
    assert spsa["renders"] == 16 and spsa["steps"] == 8 and spsa["stopped"] == "steps"
    res = json.loads((run_folders / "spsa/result.json").read_text())
    assert spsa["final_loss"] == res["loss"] and spsa["wall_time_s"] == res["wall_time_s"] > 0
    # best_loss: the lowest of the step losses and the final render's loss
    assert spsa["best_loss"] == pytest.approx(min([h["loss"] for h in res["history"]] + [res["loss"]]))
    assert spsa["best_loss"] == res["best_loss"] <= res["loss"]
    assert spsa["param_error"] == pytest.approx(((res["params"]["x"] - 0.5) ** 2 + (res["params"]["y"] - 0.5) ** 2) ** 0.5)
    # unfinished runs report what their checkpoint holds: the steps they completed
    assert rows["interrupted"]["status"] == "interrupted" and rows["interrupted"]["steps"] == 6
    assert rows["interrupted"]["renders"] == 12 and rows["interrupted"]["param_error"] is not None
    assert rows["nested/failed"]["status"] == "failed" and "worker lost" in rows["nested/failed"]["error"]
    # render calls: target, start image, then one batch of 4 per fd step; the 9th call failed
    assert rows["nested/failed"]["steps"] == 6 and rows["nested/failed"]["renders"] == 24
    assert rows["killed"]["status"] == "interrupted" and rows["killed"]["steps"] == 4


def test_runs_table_sorts_by_a_column(run_folders, capsys):
    assert main(["runs", str(run_folders), "--sort", "renders", "--reverse"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["run", "status", "renderer", "estimator"] and "param error" in lines[0]
    renders = [int(line.split()[4]) for line in lines[1:]]
    assert renders == sorted(renders, reverse=True) and len(renders) == 5
    records = [summarize(p, run_folders) for p in find_runs(run_folders)]
    by_best = sort_records(records, "best_loss")
    assert [r.best_loss for r in by_best] == sorted(r.best_loss for r in records)
    assert main(["runs", str(run_folders), "--sort", "bestloss"]) == 2
    assert "cannot sort by 'bestloss' (did you mean 'best_loss'?)" in capsys.readouterr().err


def test_compare_draws_every_run_in_one_plot(run_folders, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    assert main(["compare", str(run_folders / "spsa"), str(run_folders / "prdpt"), str(run_folders / "nested"),
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "failed" in text and "prdpt" in text
    with Image.open(out) as im:
        colours = np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)
        assert im.size[0] > 400 and len(colours) > 50  # lines, labels, legend
    assert main(["compare", str(tmp_path / "nope")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_target_parameters_include_the_defaults_a_partial_target_left():
    from rendergrad.runs import param_error, target_params
    cfg = {"target": {"params": {"x": 0.7}}}
    res = {"target_defaults": {"y": 0.5, "tex": "(vector)"}, "params": {"x": 0.6, "y": 0.5, "tex": [0.1] * 20}}
    assert target_params(cfg, res) == {"x": 0.7, "y": 0.5}
    assert param_error(res["params"], target_params(cfg, res)) == pytest.approx(0.1)
    assert target_params({"target": {"image": "t.png"}}, res) is None
