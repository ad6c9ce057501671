"""A render farm drives `rendergrad ask`/`tell` from separate processes to `rendergrad run`'s result."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import rendergrad as rg
from pathlib import Path

from rendergrad.asktell import BatchError
from rendergrad.farm import ask, read_losses, tell

EXE = shutil.which("rendergrad", path=os.path.dirname(sys.executable)) or "rendergrad"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETS = ["--set", "optimizer.steps=1", "--set", "renderer.options.resolution=24",
        "--set", "estimator.options={samples = 2, center = true}", "--set", "optimizer.checkpoint_every=0"]


def cli(*args, ok=True):
    """A separate process, as a farm's job scripts would run it."""
    p = subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert (p.returncode == 0) == ok, p.stderr
    return p


def here(*args, ok=True):
    """The same command line in this process (for the set-up steps, to keep the test fast)."""
    from rendergrad.cli import main
    code = main([str(a) for a in args])
    assert (code == 0) == ok


def farm_render(batch_path, out_dir, scene):
    """What a farm does: read the parameters from the JSON, render each candidate, write NPY files."""
    batch = json.loads(batch_path.read_text())
    renderer = rg.discover().create("renderer", "toy", scene)
    theta = torch.tensor([[row[name] for name in renderer.parameter_space().names] for row in batch["params"]],
                         dtype=torch.float64)   # renderers get float64 theta, as in the loop
    images = renderer.render(theta)
    out_dir.mkdir()
    for i, img in enumerate(images):
        np.save(out_dir / f"{i:04d}.npy", img.numpy())


def test_ask_tell_from_separate_processes_equals_run(tmp_path):
    cfg = os.path.join(ROOT, "examples", "toy", "plateau.toml")
    here("run", cfg, "--out", tmp_path / "inline", "--no-progress", *SETS)
    here("run", cfg, "--out", tmp_path / "farm", "--external", *SETS)
    scene = json.loads((tmp_path / "farm" / "config.json").read_text())["renderer"]["options"]
    told, finished = 0, False
    while not finished:
        batch = Path(cli("ask", tmp_path / "farm").stdout.strip())
        frames = tmp_path / f"frames{told}"
        farm_render(batch, frames, scene)
        finished = "finished" in cli("tell", tmp_path / "farm", "--batch", batch, "--images", frames).stdout
        told += 1
        assert told < 10
    assert told == 2  # one step, two batches (the samples, then the centre)
    inline = json.loads((tmp_path / "inline" / "result.json").read_text())
    farm = json.loads((tmp_path / "farm" / "result.json").read_text())
    assert farm["params"] == inline["params"]
    assert [h["loss"] for h in farm["history"]] == [h["loss"] for h in inline["history"]]
    assert farm["evaluations"] == inline["evaluations"] == 3
    # A told batch cannot be told again.
    with pytest.raises(BatchError, match="no batch is pending"):
        tell(tmp_path / "farm", batch, images=frames)


def test_tell_refuses_wrong_counts_and_bad_files(tmp_path):
    cfg = os.path.join(ROOT, "examples", "toy", "plateau.toml")
    here("run", cfg, "--out", tmp_path / "farm", "--external", *SETS)
    batch = ask(tmp_path / "farm")
    (tmp_path / "one").mkdir()
    np.save(tmp_path / "one" / "0.npy", np.zeros((24, 24, 3), np.float32))
    with pytest.raises(rg.ConfigError, match="2 candidates but the folder holds 1 images"):
        tell(tmp_path / "farm", batch, images=tmp_path / "one")
    (tmp_path / "l.txt").write_text("0.5\n")
    with pytest.raises(BatchError, match="2 candidates but 1 losses"):
        tell(tmp_path / "farm", batch, losses=tmp_path / "l.txt")
    assert ask(tmp_path / "farm") == batch  # nothing changed
    (tmp_path / "l.txt").write_text("0.5\n0.25\n")
    tell(tmp_path / "farm", batch, losses=tmp_path / "l.txt")
    assert ask(tmp_path / "farm") != batch
    here("tell", tmp_path / "farm", "--batch", tmp_path / "missing.json", "--losses", tmp_path / "l.txt", ok=False)


def test_read_losses_accepts_json_and_lines(tmp_path):
    (tmp_path / "a.json").write_text("[1, 2.5]")
    (tmp_path / "b.txt").write_text("1\n2.5\n")
    assert read_losses(tmp_path / "a.json") == read_losses(tmp_path / "b.txt") == [1.0, 2.5]
    (tmp_path / "c.txt").write_text("one")
    with pytest.raises(rg.ConfigError, match="one number per line"):
        read_losses(tmp_path / "c.txt")
