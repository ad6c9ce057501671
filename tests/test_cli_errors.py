"""Bad input through the real command line: one line on stderr, exit 2, no traceback.

Most cases call ``rendergrad.cli.main`` in this process (the same argument parsing and error
handling the installed command runs, without paying for a new interpreter per case); the
cases about processes and signals run the command as a subprocess.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import rendergrad as rg
from rendergrad.cli import main

ROOT = Path(__file__).resolve().parents[1]
PLATEAU = ROOT / "examples/toy/plateau.toml"
SMALL = ["--set", "renderer.options.resolution=16", "--set", "optimizer.steps=3", "--no-progress"]


def fails(capsys, *args) -> str:
    """Run the CLI; it must fail with exit 2 and exactly one line on stderr."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and err.startswith("rendergrad: error: ") and "Traceback" not in err, err
    return err


def write_run(tmp_path: Path, **target) -> Path:
    cfg = tmp_path / "run.toml"
    body = ", ".join(f"{k} = {json.dumps(v)}" for k, v in target.items())
    cfg.write_text(PLATEAU.read_text().replace("[target]\nparams = { x = 0.7, y = 0.3 }", f"[target]\n{body}"))
    return cfg


@pytest.mark.parametrize("setting, words", [
    ('renderer.options.resolution="big"', ["resolution", "'big'"]),
    ('renderer.options.softness="soft"', ["renderer 'toy'", "softness = 'soft'"]),
    ("optimizer.options={betas=[0.9]}", ["optimizer 'adam'", "betas"]),
    ("optimizer.seed=18446744073709551616", ["seed", "[0, 2**63)", "18446744073709551616"]),
    ("optimizer.seed=-1", ["seed", "[0, 2**63)"]),
    ("optimizer..lr=1", ["optimizer..lr", "empty key"]),
    ("optimizer.max_batch=0", ["max_batch", ">= 1"]),
    ("params.init={x=0.5, y=0.5, z=1}", ["unknown parameter 'z'"]),
])
def test_bad_settings_are_one_line(tmp_path, capsys, setting, words):
    err = fails(capsys, "run", PLATEAU, "--out", tmp_path / "o", *SMALL, "--set", setting)
    for w in words:
        assert w in err, err


@pytest.mark.parametrize("params, words", [
    ('[{ name = "k", kind = "categorical", choices = ["a", "b", "c"], init = 1.5 }]', ["init 1.5", "0..2"]),
    ('[{ name = "k", kind = "categorical", choices = ["a", "b", "c"], high = 5 }]', ["high=5", "0..2"]),
])
def test_inconsistent_categorical_parameters_are_refused(tmp_path, capsys, params, words):
    err = fails(capsys, "run", PLATEAU, "--out", tmp_path / "o", "--set", f"renderer.options.params={params}",
                "--set", "renderer.options.shapes=[]", "--set", "target.params={}", *SMALL)
    for w in words:
        assert w in err, err


def _pickled_npy(path: Path) -> None:
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)


@pytest.mark.parametrize("name, make, words", [
    ("t.png", lambda p: p.write_bytes(b"\x89PNG\r\n garbage"), ["cannot read image"]),
    ("t.jpg", lambda p: p.write_text("not a jpeg"), ["cannot read image"]),
    ("t.exr", lambda p: p.write_bytes(b"v/1\x01 garbage" * 10), ["EXR"]),
    ("t.npy", lambda p: p.write_bytes(b"\x93NUMPY garbage"), ["cannot read image"]),
    ("t.npy", _pickled_npy, ["Python objects", "never loads"]),
    ("t.npy", lambda p: np.save(p, np.full((8, 8, 3), np.nan, np.float32)), ["192 NaN or infinite"]),
])
def test_bad_target_images_are_one_line_naming_the_file(tmp_path, capsys, name, make, words):
    img = tmp_path / name
    make(img)
    err = fails(capsys, "run", write_run(tmp_path, image=str(img)), "--out", tmp_path / "o", *SMALL)
    assert str(img) in err, err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "o").exists()   # refused before anything was written


def test_out_must_not_be_a_file_or_an_existing_run(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert "is an existing file" in fails(capsys, "run", PLATEAU, "--out", f, *SMALL)
    out = tmp_path / "run"
    assert main(["run", str(PLATEAU), "--out", str(out), *SMALL]) == 0
    first = (out / "result.json").read_text()
    err = fails(capsys, "run", PLATEAU, "--out", out, *SMALL)
    assert "already holds a run" in err and "--resume" in err and "--force" in err
    assert (out / "result.json").read_text() == first
    assert main(["run", str(PLATEAU), "--out", str(out), "--force", *SMALL, "--set", "optimizer.steps=2"]) == 0
    assert json.loads((out / "result.json").read_text())["steps"] == 2


def test_resume_of_a_damaged_config_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(PLATEAU), "--out", str(out), *SMALL]) == 0
    (out / "config.json").write_text('{"renderer": {"name": "toy"')
    err = fails(capsys, "run", "--resume", out)
    assert str(out / "config.json") in err and "damaged" in err
    assert "no such run folder" in fails(capsys, "run", "--resume", tmp_path / "nothing")


def test_seeds_beyond_32_bits_are_their_own_runs(tmp_path):
    res = {s: [h["loss"] for h in rg.optimize("toy", "mse", "prdpt", renderer_options={"resolution": 16}, steps=5,
                                              seed=s, target_params={"x": 0.6, "y": 0.4}).history]
           for s in (0, 2 ** 32, 2 ** 63 - 1)}
    assert res[0] != res[2 ** 32] and res[2 ** 32] != res[2 ** 63 - 1]
    from rendergrad.errors import ConfigError
    with pytest.raises(ConfigError, match=r"\[0, 2\*\*63\)"):
        rg.optimize("toy", "mse", "spsa", steps=1, seed=2 ** 63)


def test_partial_target_params_say_which_take_their_defaults(tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(PLATEAU), "--out", str(out), *SMALL, "--set", "target.params={x=0.6}"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["target_defaults"] == {"y": 0.75}
    assert "target.params leaves out y" in (out / "run.log").read_text()
    assert main(["run", str(PLATEAU), "--out", str(tmp_path / "full"), *SMALL]) == 0
    assert "target_defaults" not in json.loads((tmp_path / "full/result.json").read_text())


def test_zero_steps_is_quiet(tmp_path):
    p = subprocess.run([sys.executable, "-W", "default", "-m", "rendergrad.cli", "run", str(PLATEAU), "--out",
                        str(tmp_path / "o"), *SMALL, "--set", "optimizer.steps=0"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "Warning" not in p.stderr, p.stderr
    assert (tmp_path / "o/convergence.png").exists()


@pytest.mark.parametrize("estimator", ["prdpt", "spsa"])
def test_best_loss_is_the_lowest_loss_seen_and_never_above_loss(estimator):
    res = rg.optimize("toy", "mse", estimator, renderer_options={"resolution": 16}, steps=12, lr=0.05, seed=1,
                      target_params={"x": 0.3, "y": 0.7}, init={"x": 0.35, "y": 0.65}, min_delta=0.5)
    seen = [h["loss"] for h in res.history] + [res.loss]
    assert res.best_loss <= res.loss and res.best_loss == min(seen)


class _Picky(rg.Renderer):
    name = "picky"

    def __init__(self, size: int = 8):
        if size > 4:
            raise ValueError(f"size must be at most 4, got {size}")

    def parameter_space(self):
        return rg.ParamSpace([rg.Param("a")])

    def render(self, theta):
        return theta.reshape(-1, 1, 1, 1).float()


class _PickyPlugin:
    @staticmethod
    @rg.hookimpl
    def rendergrad_renderers():
        return [_Picky]


def test_a_plugin_constructor_may_raise_plain_exceptions():
    """docs/plugins.md: ValueError and TypeError from a constructor are clean errors too."""
    from rendergrad.errors import ConfigError
    reg = rg.discover(extra_plugins=[_PickyPlugin])
    with pytest.raises(ConfigError, match=r"renderer 'picky' refused its options \(size = 9\): size must be at most 4"):
        reg.create("renderer", "picky", {"size": 9})
