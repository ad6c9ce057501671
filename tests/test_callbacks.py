"""Callbacks as a plugin kind: by name, by instance, from run files, with the keyword arguments they take."""

import json

import pytest

import rendergrad as rg
from rendergrad.callbacks import Callback, CallbackList, ProgressBar, Snapshots, resolve_callbacks
from rendergrad.config import apply_overrides, validate
from rendergrad.errors import ConfigError, PluginNotFoundError
from rendergrad.hookspecs import hookimpl
from rendergrad.registry import discover


class Recorder(Callback):
    """Records what each hook received."""

    name = "recorder"

    def __init__(self, tag: str = "r"):
        self.tag = tag
        self.calls: list[tuple[str, dict]] = []

    def on_start(self, **kw):
        self.calls.append(("start", kw))

    def on_step(self, *, record, **kw):
        self.calls.append(("step", {"record": record, **kw}))

    def on_end(self, *, result, **kw):
        self.calls.append(("end", {"result": result, **kw}))


class RecorderPlugin:
    @staticmethod
    @hookimpl
    def rendergrad_callbacks():
        return [Recorder]


def test_builtins_are_registered_as_callback_plugins():
    reg = discover()
    assert {"progress", "snapshots", "tensorboard"} <= set(reg.names("callback"))
    info = reg.info("callback", "snapshots")
    assert info.distribution == "rendergrad" and "rendergrad.callbacks" in info.entry_point
    assert reg.get("callback", "progress") is ProgressBar


def test_hook_rendergrad_callbacks(toy_scene):
    """A plugin's callback is found through the hook and used by name with its options."""
    reg = discover(extra_plugins=[RecorderPlugin])
    assert "recorder" in reg.names("callback")
    cbs = resolve_callbacks([{"name": "recorder", "options": {"tag": "x"}}], reg)
    res = rg.optimize("toy", "mse", "spsa", renderer_options=toy_scene, target_params={"x": 0.6, "y": 0.4},
                      steps=4, callbacks=cbs, registry=reg)
    (rec,) = list(cbs)
    assert isinstance(rec, Recorder) and rec.tag == "x"
    kinds = [k for k, _ in rec.calls]
    assert kinds == ["start", "step", "step", "step", "step", "end"]
    start = rec.calls[0][1]
    assert start["start_step"] == 0 and start["total_steps"] == 4 and start["settings"]["estimator"] == "spsa"
    assert start["space"].names == ["x", "y"] and start["target"].ndim == 3
    step = rec.calls[2][1]
    assert step["step"] == 1 and step["record"]["step"] == 1 and step["lr"] == pytest.approx(0.01)
    assert step["elapsed_s"] > 0 and step["best_loss"] <= step["record"]["loss"] + 1e-12
    assert rec.calls[-1][1]["result"] is res and rec.calls[-1][1]["error"] is None


def test_names_and_instances_mix_and_old_style_callbacks_get_only_what_they_name(toy_scene):
    seen = []

    class OldStyle:  # no base class, no **kw: it must not receive the newer keyword arguments
        def on_step(self, *, record, u, evaluator):
            seen.append((record["step"], tuple(u.shape), evaluator.renders))

    rec = Recorder()
    res = rg.optimize("toy", "mse", "spsa", renderer_options=toy_scene, target_params={"x": 0.6, "y": 0.4},
                      steps=3, callbacks=[OldStyle(), rec, "progress"])
    assert [s[0] for s in seen] == [0, 1, 2] and seen[0][1] == (2,)
    assert res.steps == 3 and len([c for c in rec.calls if c[0] == "step"]) == 3


def test_unknown_callback_and_bad_options_are_clear_errors(toy_scene):
    with pytest.raises(PluginNotFoundError, match=r"unknown callback 'tensorbord'.*Did you mean 'tensorboard'"):
        rg.optimize("toy", renderer_options=toy_scene, steps=1, callbacks=["tensorbord"])
    with pytest.raises(ConfigError, match=r"callback 'snapshots': unknown option 'evry'.*Valid options: directory, every"):
        resolve_callbacks([{"name": "snapshots", "options": {"evry": 3}}])
    with pytest.raises(ConfigError, match="callbacks must be names or objects with on_start/on_step/on_end"):
        resolve_callbacks([42])


def test_callbacks_in_run_files_are_validated():
    cfg = validate({"renderer": {"name": "toy"}, "callbacks": [{"name": "tensorboard", "options": {"every": 5}},
                                                               {"name": "progress"}]})
    assert cfg["callbacks"] == [{"name": "tensorboard", "options": {"every": 5}}, {"name": "progress", "options": {}}]
    assert validate({"renderer": {"name": "toy"}})["callbacks"] == []
    with pytest.raises(ConfigError, match=r"write \[\[callbacks\]\] \(double brackets\)"):
        validate({"renderer": {"name": "toy"}, "callbacks": {"name": "progress"}})
    with pytest.raises(ConfigError, match=r"\[\[callbacks\]\] #1 needs a name"):
        validate({"renderer": {"name": "toy"}, "callbacks": [{"options": {}}]})
    with pytest.raises(ConfigError, match=r"unknown key 'option' in \[\[callbacks\]\] #2 \(did you mean 'options'\?\)"):
        validate({"renderer": {"name": "toy"}, "callbacks": [{"name": "progress"}, {"name": "x", "option": {}}]})
    with pytest.raises(ConfigError, match=r"unknown section \[callback\] \(did you mean 'callbacks'\?\)"):
        validate({"renderer": {"name": "toy"}, "callback": [{"name": "progress"}]})
    over = apply_overrides({"renderer": {"name": "toy"}}, ['callbacks=[{name="snapshots", options={every=2}}]'])
    assert validate(over)["callbacks"] == [{"name": "snapshots", "options": {"every": 2}}]


def test_snapshots_by_name_write_into_the_run_folder(tmp_path, toy_scene):
    from rendergrad.runner import run_config
    cfg = {"renderer": {"name": "toy", "options": toy_scene}, "target": {"params": {"x": 0.6, "y": 0.4}},
           "estimator": {"name": "spsa"}, "optimizer": {"steps": 6},
           "callbacks": [{"name": "snapshots", "options": {"every": 3}}]}
    res = run_config(cfg, tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run/snapshots").iterdir()) == ["sheet.png", "step_00003.png",
                                                                          "step_00006.png"]
    # target, start image, two snapshots, final image: all counted apart from the optimization
    assert res.extra_renders == 5 and res.evaluations == 12
    assert json.loads((tmp_path / "run/config.json").read_text())["callbacks"][0]["name"] == "snapshots"
    with pytest.raises(ConfigError, match="needs options = { directory"):
        rg.optimize("toy", renderer_options=toy_scene, steps=1, callbacks=[Snapshots(every=1)])


def test_callback_list_passes_its_context_and_collects_announcements(tmp_path):
    class Announcer(Callback):
        def announce(self, run_dir):
            return f"look in {run_dir}"

        def on_start(self, *, run_dir, start_step):
            self.got = (run_dir, start_step)

    a = Announcer()
    cbs = CallbackList([a, Recorder()], context={"run_dir": tmp_path})
    assert cbs.announcements() == [f"look in {tmp_path}"]
    cbs.on_start(start_step=3, space=None)
    assert a.got == (tmp_path, 3)


def test_the_plugin_guide_callback_example_works(tmp_path, toy_scene):
    """The CsvLog example in docs/plugins.md, run as written, by name through a registry."""
    import re
    import types
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs/plugins.md").read_text()
    code = re.search(r"## Callbacks.*?```python\n(.*?)```", text, re.S).group(1)
    module = types.ModuleType("csvlog_example")
    exec(compile(code, "docs/plugins.md", "exec"), module.__dict__)
    reg = discover(extra_plugins=[module])
    from rendergrad.runner import run_config
    cfg = {"renderer": {"name": "toy", "options": toy_scene}, "target": {"params": {"x": 0.6, "y": 0.4}},
           "estimator": {"name": "spsa"}, "optimizer": {"steps": 5},
           "callbacks": [{"name": "csv", "options": {"path": "l.csv"}}]}
    run_config(cfg, tmp_path / "run", progress=False, registry=reg)
    rows = (tmp_path / "run/l.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["0", "1", "2", "3", "4"] and rows[-1].split(",")[1] == "10"
