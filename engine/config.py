"""Run configuration: TOML in, a validated dict out.

Every key is checked against a schema so a typo fails loudly with the valid keys and a
suggestion, before anything renders. ``--set a.b=value`` overrides go through the same check.
"""

from __future__ import annotations

import copy
import difflib
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import ConfigError
from .seeding import check_seed

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# section -> {key: (expected types, description)}; "options" tables are free-form and checked
# against the plugin's constructor instead.
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], str]]] = {
    "renderer": {
        "name": ((str,), "renderer plugin name (see `rendergrad plugins`)"),
        "options": ((dict,), "keyword arguments for the renderer"),
    },
    "target": {
        "params": ((dict,), "render the target with the renderer at these parameter values"),
        "image": ((str,), "or: a reference image file (EXR, PNG, NPY), relative to the config file"),
        "images": ((str,), "a family (meta-train): a folder or glob of target images, one task each"),
        "ranges": ((dict,), "a family (meta-train): {name = [low, high]} uniform ranges of target parameters; "
                            "`params` fixes the others"),
    },
    "objective": {
        "name": ((str,), "objective plugin name"),
        "options": ((dict,), "keyword arguments for the objective"),
    },
    "estimator": {
        "name": ((str,), "gradient estimator plugin name"),
        "options": ((dict,), "keyword arguments for the estimator"),
    },
    "optimizer": {
        "name": ((str,), "torch optimizer: adam, adamw, sgd, rmsprop, adagrad"),
        "lr": ((int, float), "learning rate, in fractions of each parameter's range"),
        "steps": ((int,), "number of optimization steps"),
        "seed": ((int,), "random seed, an integer in [0, 2**63); equal seeds give bit-identical runs"),
        "options": ((dict,), "extra optimizer keyword arguments, e.g. betas"),
        "max_renders": ((int,), "stop once this many renders are spent"),
        "lr_decay": ((int, float), "final learning rate as a fraction of lr (geometric decay over the run)"),
        "target_loss": ((int, float), "stop once the loss is at or below this"),
        "patience": ((int,), "stop after this many steps without improvement"),
        "min_delta": ((int, float), "improvement smaller than this does not count for patience"),
        "checkpoint_every": ((int,), "save a resumable checkpoint every N steps (0: only at the end)"),
        "checkpoint_seconds": ((int, float), "also save a checkpoint every this many seconds of wall time, "
                                             "so a killed run loses little (0: never)"),
        "snapshot_every": ((int,), "save the current image every N steps (0: never)"),
        "max_batch": ((int,), "split render batches into chunks of at most this size"),
    },
    "params": {
        "init": ((dict,), "initial values overriding the renderer's defaults"),
    },
    "executor": {
        "name": ((str,), "where renders run: local (this process), processes, ray (see docs/executors.md)"),
        "options": ((dict,), "keyword arguments for the executor, e.g. { workers = 4 }"),
    },
    "meta": {
        "inner_steps": ((int,), "plain gradient steps per task in the inner loop (and at inference)"),
        "order": ((str,), "\"first\" (any estimator) or \"second\" (through the inner loop; differentiable renderer)"),
        "tasks": ((int,), "training tasks drawn from target.ranges (target.images: every image not held out)"),
        "test_tasks": ((int,), "tasks held out for evaluation"),
        "tasks_per_batch": ((int,), "tasks per outer step"),
        "outer_steps": ((int,), "meta-gradient steps"),
        "meta_lr": ((int, float), "Adam learning rate of the outer loop (on u0 and log step size)"),
        "meta_lr_decay": ((int, float), "final meta_lr as a fraction of meta_lr (geometric decay)"),
        "step_size": ((int, float), "initial step size of every coordinate; 0: chosen from the first gradients"),
        "seed": ((int,), "seed of task sampling, batches and estimator noise"),
        "checkpoint_every": ((int,), "save a resumable checkpoint every N outer steps"),
        "eval_every": ((int,), "evaluate on the held-out tasks every N outer steps (0: 10 times per run)"),
    },
    "callbacks": {
        "name": ((str,), "callback plugin name: progress, snapshots, tensorboard, ... (see `rendergrad plugins`)"),
        "options": ((dict,), "keyword arguments for the callback"),
    },
}
# Sections written as arrays of tables (``[[callbacks]]``): any number of entries, in order.
LIST_SECTIONS = {"callbacks"}

DEFAULTS: dict[str, dict[str, Any]] = {
    "renderer": {"options": {}},
    "target": {},
    "objective": {"name": "mse", "options": {}},
    "estimator": {"name": "analytic", "options": {}},
    "optimizer": {"name": "adam", "lr": 0.01, "steps": 100, "seed": 0, "options": {},
                  "min_delta": 0.0, "checkpoint_every": 0, "checkpoint_seconds": 60, "snapshot_every": 0},
    "params": {"init": {}},
    "executor": {"name": "local", "options": {}},
    "meta": {"inner_steps": 10, "order": "first", "tasks": 32, "test_tasks": 8, "tasks_per_batch": 4,
             "outer_steps": 100, "meta_lr": 0.01, "meta_lr_decay": 0.1, "step_size": 0, "seed": 0,
             "checkpoint_every": 10, "eval_every": 0},
}


def suggest(word: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Check sections, keys and types; fill defaults. Returns a new dict."""
    if not isinstance(cfg, Mapping):
        raise ConfigError("a run configuration must be a table of sections")
    out: dict[str, Any] = {}
    for section, body in cfg.items():
        if section not in SCHEMA:
            raise ConfigError(f"unknown section [{section}]{suggest(section, SCHEMA)}; "
                              f"valid sections: {', '.join(f'[{s}]' for s in SCHEMA)}")
        if section in LIST_SECTIONS:
            out[section] = _validate_list(section, body)
            continue
        if not isinstance(body, Mapping):
            raise ConfigError(f"[{section}] must be a table, got {type(body).__name__}")
        for key, value in body.items():
            if key not in SCHEMA[section]:
                raise ConfigError(
                    f"unknown key {key!r} in [{section}]{suggest(key, SCHEMA[section])}; valid keys: "
                    + ", ".join(SCHEMA[section]))
            types, _ = SCHEMA[section][key]
            if isinstance(value, bool) or not isinstance(value, types):
                want = " or ".join(t.__name__ for t in types)
                raise ConfigError(f"[{section}] {key} must be {want}, got {value!r}")
    for section, defaults in DEFAULTS.items():
        out[section] = {**copy.deepcopy(defaults), **copy.deepcopy(dict(cfg.get(section, {})))}
    for section in LIST_SECTIONS:
        out.setdefault(section, [])
    if "name" not in out["renderer"]:
        raise ConfigError("[renderer] name is required, e.g. name = \"toy\" (see `rendergrad plugins`)")
    t = out["target"]
    if "params" in t and "image" in t:
        raise ConfigError("[target] takes either `params` or `image`, not both")
    family = [k for k in ("image", "images", "ranges") if k in t]
    if len(family) > 1 or ("images" in t and "params" in t):
        raise ConfigError(f"[target] takes one of `image`, `images` (a family of images) or `ranges` "
                          f"(with optional fixed `params`); got {', '.join(sorted(t))}")
    o = out["optimizer"]
    if o["steps"] < 0:
        raise ConfigError("[optimizer] steps must be >= 0")
    if not o["lr"] > 0:
        raise ConfigError("[optimizer] lr must be > 0")
    check_seed(o["seed"], "[optimizer] seed")
    for key in ("max_batch", "max_renders", "patience"):
        if key in o and o[key] < 1:
            raise ConfigError(f"[optimizer] {key} must be >= 1, got {o[key]}; leave it out for no limit")
    for key in ("checkpoint_every", "checkpoint_seconds", "snapshot_every"):
        if o[key] < 0:
            raise ConfigError(f"[optimizer] {key} must be >= 0 (0 turns it off), got {o[key]}")
    return out


def _validate_list(section: str, body: Any) -> list[dict[str, Any]]:
    """An array of tables such as ``[[callbacks]]``: each entry needs a name; options default to {}."""
    if not isinstance(body, list):
        raise ConfigError(f"{section} must be an array of tables: write [[{section}]] (double brackets), "
                          f"got {type(body).__name__}")
    entries = []
    for i, entry in enumerate(body):
        where = f"[[{section}]] #{i + 1}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a table with name = \"...\", got {entry!r}")
        for key, value in entry.items():
            if key not in SCHEMA[section]:
                raise ConfigError(f"unknown key {key!r} in {where}{suggest(key, SCHEMA[section])}; valid keys: "
                                  + ", ".join(SCHEMA[section]))
            types, _ = SCHEMA[section][key]
            if isinstance(value, bool) or not isinstance(value, types):
                want = " or ".join(t.__name__ for t in types)
                raise ConfigError(f"{where} {key} must be {want}, got {value!r}")
        if "name" not in entry:
            raise ConfigError(f"{where} needs a name, e.g. name = \"progress\" (see `rendergrad plugins --kind callback`)")
        entries.append({"options": {}, **copy.deepcopy(dict(entry))})
    return entries


def parse_value(text: str) -> Any:
    """A ``--set`` value: parsed as TOML (numbers, booleans, arrays, inline tables), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``section.key[.subkey]=value`` overrides (``--set``)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r} (e.g. --set optimizer.steps=200)")
        path, text = item.split("=", 1)
        keys = [k.strip() for k in path.split(".")]
        if any(not k for k in keys):
            raise ConfigError(f"--set {path}: empty key between dots; write section.key, e.g. optimizer.lr")
        if keys and keys[0] in LIST_SECTIONS and len(keys) == 1:  # --set 'callbacks=[{name="progress"}]'
            cfg[keys[0]] = parse_value(text.strip())
            continue
        if len(keys) < 2:
            raise ConfigError(f"--set key must name a section and a key, e.g. optimizer.lr, got {path!r}")
        node = cfg
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {path}: {k!r} is not a table")
        node[keys[-1]] = parse_value(text.strip())
    return cfg


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read, override and validate a run file. Relative image paths resolve against its folder."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    cfg = validate(apply_overrides(raw, overrides))
    for key in ("image", "images"):
        img = cfg["target"].get(key)
        if img and not Path(img).is_absolute():
            cfg["target"][key] = str((path.parent / img).resolve())
    return cfg
