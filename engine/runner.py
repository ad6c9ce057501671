"""``rendergrad run``: a validated config → :func:`optimize` → the output folder.

Output folder layout (stable, documented in ARCHITECTURE):
``result.json``, ``final.png``, ``target.png``, ``start.png``, ``convergence.png``, ``report.html``,
``status.json``, ``run.log``, ``config.json`` (the resolved config, used by ``--resume``),
``checkpoint/`` and optional ``snapshots/``, ``tensorboard/``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable

from .callbacks import Snapshots, StartImage, resolve_callbacks
from .config import validate
from .errors import ConfigError
from .imageio import load_image, save_png
from .loop import Result, optimize
from .optimization import Optimization
from .plotting import convergence_plot
from .registry import Registry, registry as default_registry
from .report import write_report
from .runs import write_status

CONFIG_NAME = "config.json"


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


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
    out.mkdir(parents=True, exist_ok=True)
    cfg = validate(cfg)
    if "ranges" in cfg["target"] or "images" in cfg["target"]:
        raise ConfigError("[target] ranges / images describe a family of tasks: learn from it with "
                          "`rendergrad meta-train FILE --out DIR`; a run needs one target (params or image)")
    if meta is None and resume and (out / "meta.json").exists():
        meta = out / "meta.json"
    if meta is not None and not resume:
        from .meta import load_meta
        load_meta(meta).save(out)
    (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2))
    log = _logger(out)
    log.info("run %s resume=%s config=%s", out, resume, json.dumps(cfg))
    reg = registry or default_registry()
    o = cfg["optimizer"]
    target = load_image(cfg["target"]["image"]) if "image" in cfg["target"] else None
    if target is None and "params" not in cfg["target"]:
        log.info("no [target]: the objective runs without a reference image")
    snapshots = [Snapshots(out / "snapshots", o["snapshot_every"])] if o["snapshot_every"] else []
    kw = dict(
            renderer_options=cfg["renderer"]["options"], objective_options=cfg["objective"]["options"],
            estimator_options=cfg["estimator"]["options"], target=target,
            target_params=cfg["target"].get("params"), init=cfg["params"]["init"],
            optimizer=o["name"], lr=float(o["lr"]), optimizer_options=o["options"], steps=o["steps"],
            lr_decay=o.get("lr_decay"),
            seed=o["seed"], max_renders=o.get("max_renders"), target_loss=o.get("target_loss"),
            patience=o.get("patience"), min_delta=float(o["min_delta"]),
            checkpoint_dir=out / "checkpoint", checkpoint_every=o["checkpoint_every"],
            max_batch=o.get("max_batch"), registry=reg,
    )
    if meta is not None:
        kw["meta"] = meta
    names = cfg["renderer"]["name"], cfg["objective"]["name"], cfg["estimator"]["name"]
    if external:
        start_external(names, kw, out, log)
        write_status(out, "running", external=True)  # images come from outside: no process to watch
        return None
    callbacks = resolve_callbacks([*cfg["callbacks"], *snapshots, StartImage(out / "start.png")], reg,
                                  context={"run_dir": out})
    for line in callbacks.announcements():
        log.info(line)
        if echo is not None:
            echo(line)
    write_status(out, "running", resumed=resume)
    for h in log.handlers:  # worker restarts and their reasons go to run.log too
        logging.getLogger("rendergrad.executor").addHandler(h)
    try:
        result = optimize(*names, **kw, callbacks=callbacks, progress=progress, resume=resume, close=True,
                          executor=cfg["executor"]["name"], executor_options=cfg["executor"]["options"])
    except KeyboardInterrupt:
        write_status(out, "interrupted")
        _report(out, log)
        raise
    except Exception as e:
        log.error("run failed: %s: %s (progress is kept in %s)", type(e).__name__, e, out / "checkpoint")
        write_status(out, "failed", error=f"{type(e).__name__}: {e}")
        _report(out, log)
        raise
    finally:
        for h in log.handlers:
            logging.getLogger("rendergrad.executor").removeHandler(h)
    write_outputs(out, result)
    log.info("done: loss=%.6g evaluations=%d wall=%.2fs stopped=%s", result.loss, result.evaluations,
             result.wall_time_s, result.stopped)
    return result


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
    (out / "result.json").write_text(json.dumps(_json_safe(result.to_json()), indent=2))
    if result.final_image is not None:
        save_png(out / "final.png", result.final_image)
    if result.target_image is not None and result.target_image.ndim == 3:
        save_png(out / "target.png", result.target_image)
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
    path = out / CONFIG_NAME
    if not path.exists():
        raise ConfigError(f"{out} is not a rendergrad run folder (no {CONFIG_NAME}); "
                          "start it with `rendergrad run FILE --out DIR`")
    cfg = json.loads(path.read_text())
    return run_config(cfg, out, resume=True, progress=progress, registry=registry)
