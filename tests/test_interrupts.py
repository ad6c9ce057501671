"""Ctrl-C, twice, on a real `rendergrad run`; checkpoints that can only be complete or absent.

The run here saves no periodic checkpoint (`checkpoint_every = 0`, `checkpoint_seconds = 0`),
so everything rests on the save made at interrupt time, which a second Ctrl-C must not cut.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import rendergrad as rg
from rendergrad.checkpoint import CheckpointSchedule, load_checkpoint, save_checkpoint
from rendergrad.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples/toy/plateau.toml"
EXE = [sys.executable, "-m", "rendergrad.cli"]
# Enough steps that the run cannot finish between its 10th step and the Ctrl-C reaching it (at
# 150 steps a fast machine finished first now and then, and the test saw exit code 0).
SETTINGS = ["--set", "renderer.options.resolution=32", "--set", "optimizer.steps=1000",
            "--set", "optimizer.checkpoint_every=0", "--set", "optimizer.checkpoint_seconds=0",
            "--set", "optimizer.snapshot_every=5", "--set", "estimator.options={schedule='constant'}",
            "--no-progress"]


def comparable(out: Path) -> dict:
    """What must match bit for bit. Not the render count: renders the interrupted step spent
    stay counted (they were spent) and the step runs again on resume."""
    r = json.loads((out / "result.json").read_text())
    out = {k: r[k] for k in ("params", "loss", "best_loss", "best_params", "steps")}
    out["history"] = [(h["step"], h["loss"], h["params"]) for h in r["history"]]
    out["renders"] = r["evaluations"]
    return out


def same_run(resumed: dict, full: dict) -> None:
    renders, full_renders = resumed.pop("renders"), full.pop("renders")
    try:
        assert resumed == full
        assert full_renders <= renders <= full_renders + 2   # PRDPT here: 2 renders a step
    finally:
        resumed["renders"], full["renders"] = renders, full_renders


def cli(*args) -> int:
    """The command line in this process (no interpreter start-up): same parsing and handling."""
    from rendergrad.cli import main
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    assert cli("run", CONFIG, "--out", out, *SETTINGS) == 0
    return comparable(out)


def start(out: Path, script: str | None = None) -> subprocess.Popen:
    argv = [*EXE, "run", str(CONFIG), "--out", str(out), *SETTINGS] if script is None else \
        [sys.executable, "-c", script, "run", str(CONFIG), "--out", str(out), *SETTINGS]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(proc: subprocess.Popen, out: Path, step: int = 10) -> None:
    """Tied to the run's progress (its snapshots), not to a wall-clock delay."""
    shot = out / "snapshots" / f"step_{step:05d}.png"
    deadline = time.monotonic() + 120
    while not shot.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.005)


@pytest.mark.parametrize("gap", [0.002])
def test_two_ctrl_c_then_resume_is_bit_identical(tmp_path, uninterrupted, gap):
    out = tmp_path / "run"
    proc = start(out)
    try:
        wait_for_step(proc, out)
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(gap)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)   # the impatient second Ctrl-C
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"Resume with: rendergrad run --resume {out}" in err, err
    assert not (out / "checkpoint" / "checkpoint.tmp").exists()
    assert "interrupted" in (out / "run.log").read_text()
    assert cli("run", "--resume", out, "--no-progress") == 0
    same_run(comparable(out), uninterrupted)


# The second Ctrl-C at the worst moment: inside the save made at interrupt time. The wrapper
# sends it from within torch.save (the real CLI runs unchanged around it).
SECOND_CTRL_C_DURING_SAVE = """
import os, signal, sys, time, torch
real_save = torch.save
def save(*a, **k):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)            # let the signal arrive while the file is being written
    return real_save(*a, **k)
torch.save = save
from rendergrad.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_second_ctrl_c_inside_the_save_cannot_lose_the_run(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = start(out, SECOND_CTRL_C_DURING_SAVE)
    try:
        wait_for_step(proc, out)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert (out / "checkpoint" / "checkpoint.pt").exists() and not (out / "checkpoint" / "checkpoint.tmp").exists()
    assert "second interrupt" in (out / "run.log").read_text()
    assert cli("run", "--resume", out, "--no-progress") == 0
    same_run(comparable(out), uninterrupted)


def test_ctrl_c_before_the_run_folder_exists_promises_no_resume(tmp_path):
    """Interrupted while a slow renderer starts: nothing to resume, so no such advice."""
    out = tmp_path / "never"
    started = tmp_path / "loading"
    script = ("import sys, time\nimport rendergrad.runner as r\n"
              f"def slow(*a, **k):\n    open({str(started)!r}, 'w').close()\n    time.sleep(60)\n"
              "r.load_image = slow\nfrom rendergrad.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    img = tmp_path / "t.npy"
    import numpy as np
    np.save(img, np.zeros((32, 32, 3), np.float32))
    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG.read_text().replace("params = { x = 0.7, y = 0.3 }", f"image = '{img}'"))
    proc = subprocess.Popen([sys.executable, "-c", script, "run", str(cfg), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not started.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Resume with" not in err and "nothing to resume" in err, err


def test_a_stray_tmp_is_deleted_and_never_read(tmp_path):
    save_checkpoint(tmp_path, {"fingerprint": {}, "step": 3})
    (tmp_path / "checkpoint.tmp").write_bytes(b"half a checkpoi")
    assert load_checkpoint(tmp_path)["step"] == 3
    assert not (tmp_path / "checkpoint.tmp").exists()


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    """A checkpoint whose pickle calls os.system when loaded: refused, nothing runs, and the
    message never suggests turning the safe loader off."""
    import io
    import zipfile
    _Evil.marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"fingerprint": {}}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    with zipfile.ZipFile(ckpt / "checkpoint.pt", "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, pickle.dumps({"fingerprint": _Evil()}, protocol=2) if name.endswith("data.pkl") else data)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(ckpt)
    msg = str(e.value)
    assert "system" in msg and "weights_only" not in msg and "\n" not in msg
    assert not _Evil.marker.exists()


@pytest.mark.parametrize("content", [b"", os.urandom(256)], ids=["empty", "random"])
def test_a_broken_checkpoint_is_one_line_through_the_cli(tmp_path, capsys, content):
    out = tmp_path / "run"
    assert cli("run", CONFIG, "--out", out, "--set", "optimizer.steps=3", "--set", "renderer.options.resolution=16",
               "--no-progress") == 0
    (out / "checkpoint" / "checkpoint.pt").write_bytes(content)
    capsys.readouterr()
    assert cli("run", "--resume", out, "--no-progress") == 2
    line = capsys.readouterr().err.strip()
    assert "Traceback" not in line
    assert "\n" not in line and str(out / "checkpoint" / "checkpoint.pt") in line and "weights_only" not in line
    assert ("empty" if not content else "not a checkpoint file") in line


def test_checkpoints_are_also_saved_by_time():
    now = [0.0]
    s = CheckpointSchedule(every=0, seconds=60, clock=lambda: now[0])
    assert not s.due(1)
    now[0] = 59.0
    assert not s.due(2)
    now[0] = 60.5
    assert s.due(3) and not s.due(4)
    s = CheckpointSchedule(every=5, seconds=0, clock=lambda: now[0])
    assert [k for k in range(1, 16) if s.due(k)] == [5, 10, 15]


def test_periodic_checkpoints_by_time_in_a_run(tmp_path):
    res = rg.optimize("toy", "mse", "spsa", renderer_options={"resolution": 16}, target_params={"x": 0.6, "y": 0.4},
                      steps=3, checkpoint_dir=tmp_path, checkpoint_seconds=1e-9)
    assert res.steps == 3 and load_checkpoint(tmp_path)["step"] == 3
    mtimes = []
    from rendergrad.callbacks import Callback

    class Record(Callback):
        def on_step(self, *, record, **kw):
            p = tmp_path / "b" / "checkpoint.pt"
            mtimes.append(load_checkpoint(tmp_path / "b")["step"] if p.exists() else None)

    rg.optimize("toy", "mse", "spsa", renderer_options={"resolution": 16}, target_params={"x": 0.6, "y": 0.4},
                steps=5, checkpoint_dir=tmp_path / "b", checkpoint_seconds=1e-9, callbacks=[Record()])
    # every step is past the (tiny) time limit: the checkpoint after step k is there at step k+1
    assert mtimes == [None, 1, 2, 3, 4]
