"""The ``rendergrad`` command line.

    rendergrad plugins [--json]                 what is installed, and why anything is unavailable
    rendergrad run FILE.toml --out DIR          optimize; writes result.json, images, a plot
    rendergrad run --resume DIR                 continue an interrupted run bit-identically
    rendergrad run FILE.toml --out DIR --external   images come from a farm: then ask / tell
    rendergrad ask DIR                          write the next batch to render, print its path
    rendergrad tell DIR --batch F --images D    answer it (or --losses FILE)
    rendergrad demo [--out DIR]                 the plateau task, solved by every estimator
    rendergrad meta-train FAMILY.toml --out DIR learn a start and step sizes for a family of tasks
    rendergrad run FILE.toml --meta DIR ...     start from them: a few plain gradient steps
    rendergrad runs DIR [--sort COL] [--json]   a table of every run under DIR
    rendergrad compare RUN... [--out PNG]       their convergence curves in one plot
    rendergrad report DIR                       (re)write DIR/report.html

Plugins add their own subcommands through the ``rendergrad_add_commands`` hook.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import RendergradError

EPILOG = """examples:
  rendergrad demo --out demo-out
  rendergrad plugins --json
  rendergrad run examples/toy/plateau.toml --out runs/plateau
  rendergrad run examples/toy/plateau.toml --out runs/p2 --set estimator.name=spsa --set optimizer.steps=400
  rendergrad run --resume runs/plateau            # after Ctrl-C or a crashed worker
  rendergrad runs runs/ --sort best_loss
  rendergrad compare runs/plateau runs/p2 --out compare.png

A run file has sections [renderer] [target] [objective] [estimator] [optimizer] [params],
optionally [executor] (where renders run) and [[callbacks]] (what watches the run);
see docs/configuration.md. Parameters are optimized in a normalised [0,1] space, so
optimizer.lr is a fraction of each parameter's range."""


def _cmd_plugins(args: argparse.Namespace) -> int:
    from .registry import registry
    reg = registry()
    infos = [i for i in reg.all() if not args.kind or i.kind in (args.kind, "?")]
    if args.json:
        print(json.dumps([i.to_json() for i in infos], indent=2))
        return 0
    rows = [(i.kind, i.name, f"{i.distribution} {i.version}", "yes" if i.available else "NO",
             i.reason or i.summary) for i in infos]
    widths = [max(len(r[c]) for r in rows + [("kind", "name", "distribution", "ok", "")]) for c in range(4)]
    print(f"{'kind':<{widths[0]}}  {'name':<{widths[1]}}  {'distribution':<{widths[2]}}  {'ok':<{widths[3]}}  notes")
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import apply_overrides, load_config, validate
    from .runner import check_out_dir, read_run_config, run_config
    progress = not args.no_progress and sys.stderr.isatty()
    if args.resume:
        if args.file or args.out or args.force:
            raise RendergradError("--resume DIR continues the run in DIR from its own config; give no FILE, "
                                  "--out or --force with it (use --set to change a value)")
        out = Path(args.resume)
        cfg = validate(apply_overrides(read_run_config(out), args.set or []))
        result = run_config(cfg, out, resume=True, progress=progress, echo=print)
    else:
        if not args.file or not args.out:
            raise RendergradError("run needs a config file and --out DIR (or --resume DIR)")
        out = Path(args.out)
        check_out_dir(out, force=args.force)
        cfg = load_config(args.file, args.set or [])
        if args.meta and not any(s.split("=", 1)[0].strip() == "optimizer.steps" for s in args.set or []):
            from .meta import load_meta
            cfg["optimizer"]["steps"] = load_meta(args.meta).inner_steps  # the steps it was learned for
        if args.external:
            run_config(cfg, out, external=True, meta=args.meta)
            print(f"set up {out} for external renders; next: rendergrad ask {out}")
            return 0
        result = run_config(cfg, out, resume=False, progress=progress, meta=args.meta, echo=print)
    print(f"loss {result.loss:.6g} after {result.evaluations} renders in {result.wall_time_s:.1f}s "
          f"({result.stopped}); params {json.dumps(result.params) if len(json.dumps(result.params)) < 300 else '...'}")
    print(f"wrote {out / 'result.json'} and {out / 'report.html'}")
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    from .runs import find_runs, format_table, sort_records, summarize
    root = Path(args.dir)
    records = sort_records([summarize(p, root) for p in find_runs(root)], args.sort, args.reverse)
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=2))
    elif not records:
        print(f"no runs under {root} (a run folder holds config.json or result.json)")
    else:
        print(format_table(records))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .plotting import convergence_plot
    from .runs import find_runs, format_table, histories, is_run_dir, summarize
    runs: list[Path] = []
    for r in map(Path, args.runs):
        if not r.exists():
            raise RendergradError(f"{r}: no such run folder")
        runs += [r] if is_run_dir(r) else find_runs(r)  # a folder of runs stands for all of them
    if not runs:
        raise RendergradError(f"no run folders in {' '.join(args.runs)} (a run folder holds config.json or result.json)")
    curves = histories(runs)
    x = {"renders": "evaluations", "steps": "step"}[args.x]
    path = convergence_plot(Path(args.out), curves, title=args.title or f"{len(curves)} runs", x=x)
    print(format_table([summarize(p) for p in runs]))
    print(f"wrote {path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report
    from .runs import is_run_dir
    d = Path(args.dir)
    if not is_run_dir(d):
        raise RendergradError(f"{d} is not a rendergrad run folder (no config.json or result.json)")
    print(f"wrote {write_report(d)}")
    return 0


def _cmd_meta_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .meta.train import meta_train, resume_meta
    progress = not args.no_progress and sys.stderr.isatty()
    if args.resume:
        out = Path(args.resume)
        learned = resume_meta(out, progress=progress)
    else:
        if not args.file or not args.out:
            raise RendergradError("meta-train needs a family run file and --out DIR (or --resume DIR)")
        out = Path(args.out)
        learned = meta_train(load_config(args.file, args.set or []), out, progress=progress)
    ev = learned.info.get("evaluation") or {}
    mt = learned.info["meta_training"]
    print(f"meta-trained {mt['outer_steps']} outer steps on {mt['tasks']} tasks: {mt['renders']} renders "
          f"in {mt['seconds']:.1f}s; a new task costs {learned.info['inference']['renders_per_task']} renders")
    if ev:
        print(f"held-out tasks: loss {ev['loss_before']:.4g} at the learned start, {ev['loss_after']:.4g} after "
              f"{learned.inner_steps} steps")
    print(f"wrote {out / 'meta.json'}")
    return 0


def _cmd_ask(args: argparse.Namespace) -> int:
    from .farm import ask
    path = ask(args.run_dir)
    print(path if path is not None else f"finished; wrote {Path(args.run_dir) / 'result.json'}")
    return 0


def _cmd_tell(args: argparse.Namespace) -> int:
    from .farm import tell
    result = tell(args.run_dir, args.batch, images=args.images, losses=args.losses)
    if result is not None:
        print(f"finished ({result.stopped}): loss {result.loss:.6g}; wrote {Path(args.run_dir) / 'result.json'}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    run_demo(Path(args.out), budget=args.budget, seed=args.seed, progress=not args.no_progress)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rendergrad", description="Optimize scene parameters through any renderer, differentiable or not.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"rendergrad {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add_run_commands(sub)
    _add_farm_commands(sub)
    _add_meta_and_demo_commands(sub)
    _add_result_commands(sub)
    _add_plugin_commands(sub)
    return p


def _add_run_commands(sub: Any) -> None:
    sp = sub.add_parser("plugins", help="list renderers, objectives, estimators, executors and callbacks, with availability")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("--kind", choices=["renderer", "objective", "estimator", "executor", "callback"], help="only this kind")
    sp.set_defaults(func=_cmd_plugins)

    sr = sub.add_parser("run", help="run an optimization described by a TOML file",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sr.add_argument("file", nargs="?", help="run file (TOML)")
    sr.add_argument("--out", help="output folder: result.json, final.png, target.png, convergence.png, run.log")
    sr.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a config value, e.g. --set optimizer.lr=0.05 (repeatable; values are TOML)")
    sr.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    sr.add_argument("--force", action="store_true", help="overwrite the run already in --out DIR")
    sr.add_argument("--no-progress", action="store_true", help="no progress bar")
    sr.add_argument("--meta", metavar="META_DIR",
                    help="start from a meta-train result: learned start and step sizes, its inner_steps steps")
    sr.add_argument("--external", action="store_true",
                    help="only set DIR up: images come from outside through `rendergrad ask`/`tell`")
    sr.set_defaults(func=_cmd_run)


def _add_farm_commands(sub: Any) -> None:
    sa = sub.add_parser("ask", help="write the batch an external run needs rendered next; print its path")
    sa.add_argument("run_dir", help="a folder made by `rendergrad run FILE --out DIR --external`")
    sa.set_defaults(func=_cmd_ask)
    st = sub.add_parser("tell", help="answer a batch of an external run with images or losses")
    st.add_argument("run_dir")
    st.add_argument("--batch", required=True, help="the batch JSON written by `rendergrad ask`")
    told = st.add_mutually_exclusive_group(required=True)
    told.add_argument("--images", help="folder with one EXR/NPY/PNG per candidate, in name order")
    told.add_argument("--losses", help="JSON list or text file: one loss per candidate")
    st.set_defaults(func=_cmd_tell)


def _add_meta_and_demo_commands(sub: Any) -> None:
    sm = sub.add_parser("meta-train", help="learn a starting point and step sizes for a family of tasks",
                        description="A family run file: [target] ranges or images, and [meta] settings "
                                    "(see docs/meta.md). Writes META_DIR/meta.json and meta_curve.png.")
    sm.add_argument("file", nargs="?", help="family run file (TOML)")
    sm.add_argument("--out", help="output folder (META_DIR)")
    sm.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    sm.add_argument("--resume", metavar="DIR", help="continue the meta-training in DIR from its checkpoint")
    sm.add_argument("--no-progress", action="store_true", help="no progress bar")
    sm.set_defaults(func=_cmd_meta_train)

    sd = sub.add_parser("demo", help="the plateau task on the toy renderer, solved by every estimator")
    sd.add_argument("--out", default="rendergrad-demo", help="output folder (default: %(default)s)")
    sd.add_argument("--budget", type=int, default=400, help="renders per estimator (default: %(default)s)")
    sd.add_argument("--seed", type=int, default=0)
    sd.add_argument("--no-progress", action="store_true")
    sd.set_defaults(func=_cmd_demo)


def _add_result_commands(sub: Any) -> None:
    sl = sub.add_parser("runs", help="a table of every run under a folder: status, losses, renders, wall time")
    sl.add_argument("dir", help="folder holding run folders (searched recursively)")
    sl.add_argument("--sort", default="run", metavar="COLUMN",
                    help="run, status, renderer, estimator, renders, steps, final_loss, best_loss, "
                         "param_error, wall_time_s (default: %(default)s)")
    sl.add_argument("--reverse", action="store_true", help="sort descending")
    sl.add_argument("--json", action="store_true", help="machine-readable output")
    sl.set_defaults(func=_cmd_runs)

    sc = sub.add_parser("compare", help="convergence curves of several runs (loss against renders) in one plot")
    sc.add_argument("runs", nargs="+", metavar="RUN", help="run folders (a folder of runs stands for all of them)")
    sc.add_argument("--out", default="compare.png", help="output PNG (default: %(default)s)")
    sc.add_argument("--x", choices=["renders", "steps"], default="renders", help="x axis (default: %(default)s)")
    sc.add_argument("--title", default="")
    sc.set_defaults(func=_cmd_compare)

    sp2 = sub.add_parser("report", help="(re)write a run folder's report.html")
    sp2.add_argument("dir", help="run folder")
    sp2.set_defaults(func=_cmd_report)


def _add_plugin_commands(sub: Any) -> None:
    """Commands that plugins add (``rendergrad_add_commands``); one that fails is skipped with a warning."""
    from .registry import registry
    for hook, label in registry().command_hooks:
        try:
            hook(subparsers=sub)
        except Exception as e:  # a plugin's command must not break the CLI
            print(f"warning: plugin {label} failed to add its commands: {e}", file=sys.stderr)


def _stdout_closed() -> bool:
    """True when stdout is a pipe whose reader has gone, so a BrokenPipeError came from stdout
    and not from a renderer's own pipe."""
    try:
        import select
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poll.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # Report against the subcommand's own parser, so its usage (not the top level's) is shown.
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        target = sub.choices.get(args.command, parser) if sub is not None and args.command else parser
        target.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that went away surfaces here, not at interpreter exit
        return code
    except RendergradError as e:
        print(f"rendergrad: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `rendergrad plugins | head`: the reader stopped reading, which is not an error.
        if not _stdout_closed():
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what shell tools report
    except KeyboardInterrupt:
        import signal
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a further Ctrl-C must not turn this into a traceback
        hint = ""
        if args.command == "run":
            folder = args.resume or args.out
            if folder and (Path(folder) / "checkpoint" / "checkpoint.pt").exists():
                hint = f" Resume with: rendergrad run --resume {folder}"
            elif folder:
                hint = " Nothing was saved yet, so there is nothing to resume."
        elif args.command == "meta-train":
            hint = f" Resume with: rendergrad meta-train --resume {args.resume or args.out}"
        print(f"\nrendergrad: interrupted.{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
