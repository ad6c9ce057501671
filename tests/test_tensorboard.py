"""The tensorboard callback, read back from real event files with TensorBoard's own reader."""

import subprocess
import sys
import textwrap

import pytest

import rendergrad as rg

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install 'rendergrad[tensorboard]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from rendergrad.cli import main  # noqa: E402
from rendergrad.plugins.tensorboard_callback import TensorBoard  # noqa: E402

TARGET = {"x": 0.7, "y": 0.3}


def events(logdir):
    ea = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    ea.Reload()
    return ea


def steps(ea, tag):
    return [e.step for e in ea.Scalars(tag)]


def test_scalars_images_params_and_hparams(tmp_path, plateau_scene):
    scene = {**plateau_scene, "params": plateau_scene["params"] + [{"name": "c", "shape": [3], "init": 0.5}]}
    scene["shapes"] = [{**scene["shapes"][0], "color": "c"}]
    tb = TensorBoard(logdir=str(tmp_path / "tb"), every=5)
    res = rg.optimize("toy", "mse", "prdpt", renderer_options=scene, target_params={**TARGET, "c": [0.9, 0.4, 0.1]},
                      lr=0.02, lr_decay=0.5, steps=10, seed=0, callbacks=[tb], estimator_options={"samples": 2})
    ea = events(tmp_path / "tb")
    tags = ea.Tags()
    for tag in ("loss/current", "loss/best", "renders", "lr", "wall_time_s", "estimator/sigma", "params/x", "params/y"):
        assert steps(ea, tag) == list(range(10)), tag
    assert [e.value for e in ea.Scalars("loss/current")] == pytest.approx([h["loss"] for h in res.history], rel=1e-6)
    assert [e.value for e in ea.Scalars("renders")] == [h["evaluations"] for h in res.history]
    assert [e.value for e in ea.Scalars("params/x")] == pytest.approx([h["params"]["x"] for h in res.history], rel=1e-6)
    lrs = [e.value for e in ea.Scalars("lr")]
    assert lrs[0] == pytest.approx(0.02) and lrs[-1] < lrs[0]  # the decayed learning rate
    best = [e.value for e in ea.Scalars("loss/best")]
    assert all(b2 <= b1 for b1, b2 in zip(best, best[1:]))
    assert "params/c" in tags["histograms"] and len(ea.Histograms("params/c")) == 10
    (img_tag,) = tags["images"]
    imgs = ea.Images(img_tag)
    assert [i.step for i in imgs] == [4, 9]
    assert imgs[0].width == 3 * 32 + 4 and imgs[0].height == 32  # render | target | difference
    hp = ea.PluginTagToContent("hparams")
    assert any("experiment" in k for k in hp) and any("session_start" in k for k in hp)
    assert b"prdpt" in b"".join(hp.values())
    # two preview renders for the images, besides the target and the final image
    assert res.extra_renders == 4


KILLED = textwrap.dedent("""
    import json, os, sys
    import rendergrad as rg
    from rendergrad.callbacks import Callback
    from rendergrad.plugins.tensorboard_callback import TensorBoard
    scene, logdir, ckpt = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    tb = TensorBoard(logdir=logdir, every=4)
    class Die(Callback):
        def on_step(self, *, step):
            if step == 12:       # past the checkpoint at step 10: events 10..12 are on disk
                tb.flush()
                os._exit(3)      # killed: no checkpoint, no on_end
    rg.optimize("toy", "mse", "prdpt", renderer_options=scene, target_params={"x": 0.7, "y": 0.3}, lr=0.02,
                steps=20, seed=0, checkpoint_dir=ckpt, checkpoint_every=5, callbacks=[tb, Die()])
""")


def test_resumed_run_continues_the_curves_without_duplicate_steps(tmp_path, plateau_scene):
    import json
    logdir, ckpt = tmp_path / "tb", tmp_path / "ckpt"
    p = subprocess.run([sys.executable, "-c", KILLED, json.dumps(plateau_scene), str(logdir), str(ckpt)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 3, p.stderr
    assert steps(events(logdir), "loss/current") == list(range(13))
    res = rg.optimize("toy", "mse", "prdpt", renderer_options=plateau_scene, target_params=TARGET, lr=0.02, steps=20,
                      seed=0, checkpoint_dir=ckpt, checkpoint_every=5, resume=True,
                      callbacks=[TensorBoard(logdir=str(logdir), every=4)])
    ea = events(logdir)
    assert len(list(logdir.iterdir())) == 2  # one event file per session
    for tag in ("loss/current", "renders", "wall_time_s", "estimator/sigma"):
        assert steps(ea, tag) == list(range(20)), tag
    assert [e.value for e in ea.Scalars("loss/current")] == pytest.approx([h["loss"] for h in res.history], rel=1e-6)
    assert [i.step for i in ea.Images(ea.Tags()["images"][0])] == [3, 7, 11, 15, 19]
    wall = [e.value for e in ea.Scalars("wall_time_s")]
    assert all(b > a for a, b in zip(wall, wall[1:]))  # the resumed session adds to the first one's time


def test_rendergrad_run_prints_the_logdir_and_resume_extends_the_curves(tmp_path, capsys, toy_scene):
    run = tmp_path / "run"
    cfg = tmp_path / "run.toml"
    cfg.write_text(textwrap.dedent("""
        [renderer]
        name = "toy"
        options = { resolution = 16, shapes = [{ type = "disc", x = "x", y = "y", radius = 0.2 }], params = [
            { name = "x", init = 0.4 }, { name = "y", init = 0.6 }] }
        [target]
        params = { x = 0.5, y = 0.5 }
        [estimator]
        name = "spsa"
        [optimizer]
        steps = 6
        [[callbacks]]
        name = "tensorboard"
        options = { every = 3 }
    """))
    assert main(["run", str(cfg), "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"tensorboard --logdir {run / 'tensorboard'}" in out
    assert main(["run", "--resume", str(run), "--set", "optimizer.steps=10"]) == 0
    assert f"tensorboard --logdir {run / 'tensorboard'}" in capsys.readouterr().out
    ea = events(run / "tensorboard")
    assert steps(ea, "loss/current") == list(range(10))
    assert [i.step for i in ea.Images(ea.Tags()["images"][0])] == [2, 5, 8]


def test_bad_option_and_unavailable_reason():
    with pytest.raises(rg.ConfigError, match="tensorboard: every must be an integer >= 0"):
        TensorBoard(every=-1)
    assert TensorBoard.available() == (True, "")


def test_a_session_started_in_the_same_second_as_an_earlier_file_sorts_after_it(tmp_path):
    """TensorBoard reads event files in name order; names begin with the creation second."""
    import time
    d = tmp_path / "tb"
    d.mkdir()
    earlier = f"events.out.tfevents.{int(time.time())}.zzzz.99999.0"  # sorts after this host's name
    (d / earlier).write_bytes(b"")
    tb = TensorBoard(logdir=str(d))
    tb.on_start(start_step=0)
    tb.on_end()
    assert sorted(p.name for p in d.iterdir())[-1] != earlier
