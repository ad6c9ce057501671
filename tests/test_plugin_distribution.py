"""The example third-party plugin distribution, installed for real with pip and optimized
through `rendergrad run`: the path docs/plugins.md tells a new user to take."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin-disk"


def test_example_plugin_installs_is_discovered_and_optimizes(tmp_path):
    site = tmp_path / "site"
    build = tmp_path / "src"
    shutil.copytree(EXAMPLE, build)  # build outside the repo: no build/ or egg-info left behind
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(build)], check=True, capture_output=True, text=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    exe = shutil.which("rendergrad", path=os.path.dirname(sys.executable))

    rows = json.loads(subprocess.run([exe, "plugins", "--json"], env=env, check=True, capture_output=True,
                                     text=True).stdout)
    disk = [r for r in rows if r["name"] == "disk"]
    assert disk == [dict(disk[0], kind="renderer", distribution="rendergrad-disk", version="1.0.0",
                         available=True, differentiable=False)]

    out = tmp_path / "run"
    subprocess.run([exe, "run", str(EXAMPLE / "run.toml"), "--out", str(out), "--set", "optimizer.steps=150"],
                   env=env, check=True, capture_output=True, text=True)
    result = json.loads((out / "result.json").read_text())
    assert result["renderer"] == "disk"
    assert result["evaluations"] > 0
    assert result["loss"] < 0.5 * result["history"][0]["loss"]
