"""``rendergrad run``: a validated config → :func:`optimize` → the output folder.

Output folder layout (stable, documented in ARCHITECTURE):
``result.json``, ``final.png``, ``target.png``, ``start.png``, ``convergence.png``, ``report.html``,
``status.json``, ``run.log``, ``config.json`` (the resolved config, used by ``--resume``),
``checkpoint/`` and optional ``snapshots/``, ``tensorboard/``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Callable

from .callbacks import Snapshots, StartImage, resolve_callbacks
from .config import validate
from .errors import ConfigError
from .imageio import load_image, save_png
from .loop import Result, optimize
from .result import json_safe
from .optimization import Optimization
from .plotting import convergence_plot
from .registry import Registry, registry as default_registry
from .report import write_report
from .runs import write_status

CONFIG_NAME = "config.json"




def _logger(out: Path) -> logging.Logger:
    log = logging.getLogger(f"rendergrad.run.{out}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
    h = logging.FileHandler(out / "run.log")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(h)
    return log


def check_out_dir(out: Path, *, force: bool = False) -> None:
    """``--out`` must be a folder that holds no run yet (``--force`` overwrites one)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is an existing file, not a folder; name a new folder")
    markers = [m for m in (CONFIG_NAME, "result.json", "checkpoint") if (out / m).exists()]
    if markers and not force:
        raise ConfigError(f"--out {out} already holds a run ({', '.join(markers)}); continue it with "
                          f"`rendergrad run --resume {out}`, overwrite it with --force, or choose another folder")


def read_run_config(out: Path) -> dict[str, Any]:
    """The resolved config a run folder was started with (for ``--resume``)."""
    path = out / CONFIG_NAME
    if not out.is_dir():
        raise ConfigError(f"--resume {out}: no such run folder")
    if not path.exists():
        raise ConfigError(f"{out} is not a rendergrad run folder (no {CONFIG_NAME}); "
                          "start it with `rendergrad run FILE --out DIR`")
    try:
        cfg = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is damaged ({e}); the run cannot be resumed from it. Start it again with "
                          "`rendergrad run FILE --out DIR --force`") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path} is damaged (not a JSON object); start the run again with --force")
    return cfg


@contextlib.contextmanager
def _library_log_to(handler: logging.Handler):
    """Route rendergrad's own loggers (bridge workers, checkpoints) into run.log for the run."""
    lib = logging.getLogger("rendergrad")
    level = lib.level
    lib.addHandler(handler)
    if lib.level == logging.NOTSET or lib.level > logging.INFO:
        lib.setLevel(logging.INFO)
    try:
        yield
    finally:
        lib.removeHandler(handler)
        lib.setLevel(level)


def run_config(cfg: dict[str, Any], out: str | Path, *, resume: bool = False, progress: bool = True,
               registry: Registry | None = None, external: bool = False, meta: Any = None,
               echo: Callable[[str], None] | None = None) -> Result | None:
    """Run a validated config, writing everything into ``out``.

    ``external=True`` only sets the run up for ``rendergrad ask``/``tell`` (returns None).
    ``meta``: a ``meta-train`` folder or ``meta.json``; it is copied into ``out`` (a resumed run
    picks it up from there).
    ``echo`` receives the lines callbacks want a person to see before the run starts (the
    ``tensorboard --logdir`` line); they also go to ``run.log``.
    """
    out = Path(out)
    cfg = validate(cfg)
    if "ranges" in cfg["target"] or "images" in cfg["target"]:
        raise ConfigError("[target] ranges / images describe a family of tasks: learn from it with "
                          "`rendergrad meta-train FILE --out DIR`; a run needs one target (params or image)")
    # Everything a user can get wrong in the files is checked before the folder is written.
    target = load_image(cfg["target"]["image"]) if "image" in cfg["target"] else None
    reg = registry or default_registry()
    # Made here, before the folder is written, when it renders in this process. An external
    # run's renderer may not exist here (a farm renders), and a pool builds its own.
    renderer = None if external or cfg["executor"]["name"] != "local" else \
        reg.create("renderer", cfg["renderer"]["name"], cfg["renderer"]["options"])
    meta = _prepare_folder(cfg, out, resume=resume, meta=meta)
    log = _logger(out)
    defaults = _log_start(log, cfg, out, resume=resume, target=target, renderer=renderer)
    kw = _run_kwargs(cfg, out, target, reg, meta)
    names = cfg["renderer"]["name"], cfg["objective"]["name"], cfg["estimator"]["name"]
    if external:
        start_external(names, kw, out, log)
        write_status(out, "running", external=True)  # images come from outside: no process to watch
        return None
    snapshots = [Snapshots(out / "snapshots", cfg["optimizer"]["snapshot_every"])] \
        if cfg["optimizer"]["snapshot_every"] else []
    callbacks = resolve_callbacks([*cfg["callbacks"], *snapshots, StartImage(out / "start.png")], reg,
                                  context={"run_dir": out})
    for line in callbacks.announcements():
        log.info(line)
        if echo is not None:
            echo(line)
    write_status(out, "running", resumed=resume)
    result = _run_logged(cfg, out, log, renderer, names, kw, callbacks=callbacks, progress=progress, resume=resume)
    if defaults:
        result.info["target_defaults"] = defaults
    workers = _log_workers(log, renderer)
    if workers is not None:
        result.info["workers"] = workers
    write_outputs(out, result)
    log.info("done: loss=%.6g best_loss=%.6g evaluations=%d wall=%.2fs stopped=%s", result.loss, result.best_loss,
             result.evaluations, result.wall_time_s, result.stopped)
    return result


def _prepare_folder(cfg: dict[str, Any], out: Path, *, resume: bool, meta: Any) -> Any:
    """Create the run folder with its config (and its meta-learned start); returns the meta to use."""
    out.mkdir(parents=True, exist_ok=True)
    if meta is None and resume and (out / "meta.json").exists():
        meta = out / "meta.json"
    if meta is not None and not resume:
        from .meta import load_meta
        load_meta(meta).save(out)
    (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2))
    return meta


def _log_start(log: logging.Logger, cfg: dict[str, Any], out: Path, *, resume: bool, target: Any,
               renderer: Any) -> dict[str, Any]:
    """What the run starts from, in run.log; returns the target's defaulted parameters."""
    log.info("run %s resume=%s config=%s", out, resume, json.dumps(cfg))
    if target is None and "params" not in cfg["target"]:
        log.info("no [target]: the objective runs without a reference image")
    defaults = _target_defaults(renderer, cfg["target"]) if renderer is not None else {}
    if defaults:
        log.info("target.params leaves out %s: the target is rendered with their initial values %s",
                 ", ".join(defaults), json.dumps(defaults))
    return defaults


def _run_kwargs(cfg: dict[str, Any], out: Path, target: Any, reg: Registry, meta: Any) -> dict[str, Any]:
    """The config's sections as keyword arguments of :class:`Optimization` / ``optimize``."""
    o = cfg["optimizer"]
    kw = dict(
            renderer_options=cfg["renderer"]["options"], objective_options=cfg["objective"]["options"],
            estimator_options=cfg["estimator"]["options"], target=target,
            target_params=cfg["target"].get("params"), init=cfg["params"]["init"],
            optimizer=o["name"], lr=float(o["lr"]), optimizer_options=o["options"], steps=o["steps"],
            lr_decay=o.get("lr_decay"),
            seed=o["seed"], max_renders=o.get("max_renders"), target_loss=o.get("target_loss"),
            patience=o.get("patience"), min_delta=float(o["min_delta"]),
            checkpoint_dir=out / "checkpoint", checkpoint_every=o["checkpoint_every"],
            checkpoint_seconds=float(o["checkpoint_seconds"]),
            max_batch=o.get("max_batch"), registry=reg,
    )
    if meta is not None:
        kw["meta"] = meta
    return kw


def _run_logged(cfg: dict[str, Any], out: Path, log: logging.Logger, renderer: Any, names: tuple[str, str, str],
                kw: dict[str, Any], *, callbacks: Any, progress: bool, resume: bool) -> Result:
    """Optimize, recording an interruption or a failure in run.log and status.json before it propagates."""
    first: Any = names[0]
    if renderer is not None:  # made above (in-process executor), so its option errors came first
        first = renderer
        del kw["renderer_options"]
    try:
        with _library_log_to(log.handlers[0]):  # bridge and executor workers' restarts go to run.log
            return optimize(first, *names[1:], **kw, callbacks=callbacks, progress=progress, resume=resume,
                            close=True, executor=cfg["executor"]["name"],
                            executor_options=cfg["executor"]["options"])
    except KeyboardInterrupt:
        saved = (out / "checkpoint" / "checkpoint.pt").exists()
        log.warning("interrupted (Ctrl-C); %s", f"progress is kept in {out / 'checkpoint'}" if saved
                    else "no checkpoint was written yet")
        _log_workers(log, renderer)
        write_status(out, "interrupted")
        _report(out, log)
        raise
    except Exception as e:
        log.error("run failed: %s: %s (progress is kept in %s)", type(e).__name__, e, out / "checkpoint")
        _log_workers(log, renderer)
        if renderer is not None:
            with contextlib.suppress(Exception):  # a failure before the loop began leaves it open
                renderer.close()
        write_status(out, "failed", error=f"{type(e).__name__}: {e}")
        _report(out, log)
        raise


def _target_defaults(renderer: Any, target: dict[str, Any]) -> dict[str, Any]:
    """The parameters a partial ``target.params`` leaves at their initial values."""
    if "params" not in target:
        return {}
    space = renderer.parameter_space()
    missing = [n for n in space.names if n not in target["params"]]
    if not missing:
        return {}
    values = space.decode(space.initial_theta(), max_elements=16)
    return {n: values.get(n, "(vector)") for n in missing}


def _log_workers(log: logging.Logger, renderer: Any) -> dict[str, int] | None:
    """Worker restarts, retries and timeouts of a renderer that runs workers (``worker_stats()``)."""
    stats = getattr(renderer, "worker_stats", None)
    if not callable(stats):
        return None
    counts = {k: int(v) for k, v in stats().items()}
    log.info("workers: %s", ", ".join(f"{k}={v}" for k, v in counts.items()))
    return counts


def start_external(names: tuple[str, str, str], kw: dict[str, Any], out: Path, log: logging.Logger) -> None:
    """Save a run whose images come from outside; nothing is rendered but the target."""
    if kw["target"] is None and kw["target_params"] is not None \
            and not kw["registry"].info("renderer", names[0]).available:
        raise ConfigError(f"renderer {names[0]!r} is unavailable here, so it cannot render the target; "
                          "give [target] image = FILE for an external run")
    with Optimization(*names, **kw, external=True) as opt:
        opt.save(out / "checkpoint")
    log.info("external run set up in %s: use rendergrad ask/tell", out)


def write_outputs(out: Path, result: Result) -> None:
    data = result.to_json()
    for key in ("target_defaults", "workers"):
        if key in result.info:
            data[key] = result.info[key]
    (out / "result.json").write_text(json.dumps(json_safe(data), indent=2))
    if result.final_image is not None:
        save_png(out / "final.png", result.final_image)
    if result.target_image is not None and result.target_image.ndim == 3:
        save_png(out / "target.png", result.target_image)
    with warnings.catch_warnings():  # an empty history (steps = 0) is an empty plot, not a warning
        warnings.simplefilter("ignore")
        convergence_plot(out / "convergence.png", {result.estimator: result.history}, best=True,
                         title=f"{result.renderer} / {result.estimator}")
    write_status(out, "finished", stopped=result.stopped)
    write_report(out)


def _report(out: Path, log: logging.Logger) -> None:
    """The report of a run that did not finish; never hides the error that stopped it."""
    try:
        write_report(out)
    except Exception as e:  # pragma: no cover - a broken folder must not mask the run's error
        log.error("could not write %s: %s: %s", out / "report.html", type(e).__name__, e)


def resume_dir(out: str | Path, *, progress: bool = True, registry: Registry | None = None) -> Result:
    """Continue the run whose output folder is ``out``."""
    out = Path(out)
    cfg = read_run_config(out)
    return run_config(cfg, out, resume=True, progress=progress, registry=registry)
