"""The ``rendergrad olat capture|optimize|apply`` commands (and the solve / add-on subcommands)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from rendergrad import hookimpl
from rendergrad.errors import ConfigError

from ..olat import OlatBasis, OlatRenderer
from .capture import capture
from .export import _load_multipliers, blender_script, source_params, write_outputs
from .optimize import olat_ad


def _value(text: str) -> Any:
    """A ``--option`` value: TOML (numbers, booleans, arrays, quoted strings) or a bare string."""
    from rendergrad.config import parse_value
    return parse_value(text)


def _pairs(items: Sequence[str] | None, what: str) -> dict[str, Any]:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise ConfigError(f"{what} {it!r} must look like KEY=VALUE")
        k, v = it.split("=", 1)
        out[k.strip()] = _value(v.strip())
    return out


def _cmd_capture(args: argparse.Namespace) -> int:
    from rendergrad.registry import registry
    name, options = args.renderer, _pairs(args.option, "--option")
    params = _pairs(args.param, "--param")
    if args.config:
        from rendergrad.config import load_config
        cfg = load_config(args.config, [])
        name = name or cfg["renderer"]["name"]
        options = {**cfg["renderer"]["options"], **options}
        params = {**cfg["params"]["init"], **params}
    if not name:
        raise ConfigError("olat capture needs --renderer NAME or --config RUN.toml")
    renderer = registry().create("renderer", name, options)
    try:
        cap = capture(renderer, args.out, params=params, lights=args.light or None, unit=args.unit,
                      max_batch=args.max_batch, multilayer=args.multilayer,
                      source={"options": options})
    finally:
        renderer.close()
    print(f"captured {len(cap.basis.names)} lights ({', '.join(cap.basis.names)}) in {cap.renders} renders, "
          f"{cap.seconds:.1f}s; |full - (base + sum)| / |full| = {cap.relative_error:.2e}")
    print(f"wrote {cap.path}")
    return 0


def _cmd_optimize(args: argparse.Namespace) -> int:
    from rendergrad.imageio import load_image
    from rendergrad.registry import registry
    renderer = OlatRenderer(args.basis, theta_min=args.theta_min, theta_max=args.theta_max, dtype=args.dtype)
    options = _pairs(args.option, "--option")
    for flag, key in (("text", "text"), ("init_text", "init_text"), ("checkpoint", "checkpoint"),
                      ("clip_model", "model"), ("clip_mode", "mode")):
        if getattr(args, flag) is not None:
            options[key] = getattr(args, flag)
    objective = registry().create("objective", args.objective, options)
    target = None
    if args.target and args.target_multipliers:
        raise ConfigError("olat optimize: give --target (an image) or --target-multipliers, not both")
    if args.target:
        target = load_image(args.target)
    elif args.target_multipliers:
        mult = _load_multipliers(args.target_multipliers, renderer.names)
        with torch.no_grad():
            target = renderer.relight(mult.unsqueeze(0))[0]
    if args.resume and not args.checkpoint_dir:
        raise ConfigError("olat optimize: --resume needs --checkpoint-dir (the folder the interrupted run saved to)")
    res = olat_ad(renderer, objective, target, batch=args.batch, sigma=args.sigma, lr=args.lr, steps=args.steps,
                  seed=args.seed, augment=args.augment, tonemap=args.tonemap, exposure=args.exposure,
                  lr_decay=args.lr_decay, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                  progress=args.progress, max_renders=args.max_renders)
    paths = write_outputs(args.out, res, renderer.basis, target)
    print(f"best candidate #{res.best}: loss {float(res.losses[res.best]):.6g} after {len(res.history)} steps "
          f"({res.renders} relights + {res.extra_renders} for the record, {res.seconds:.1f}s)")
    print(f"wrote {paths['multipliers']}, {paths['sheet']}, {paths['params']}, {paths['blender']}")
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    basis = OlatBasis.load(args.basis)
    src = Path(args.result)
    if src.is_dir():
        src = src / "multipliers.json"
    if not src.is_file():
        raise ConfigError(f"olat apply: {src} not found (give multipliers.json or the optimize output folder)")
    try:
        data = json.loads(src.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"olat apply: {src} is not JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("multipliers"), dict):
        raise ConfigError(f"olat apply: {src} has no \"multipliers\"; give the multipliers.json written by "
                          "`rendergrad olat optimize` (or its output folder)")
    if args.candidate is not None:
        candidates = data.get("candidates") or []
        if not 0 <= args.candidate < len(candidates):
            raise ConfigError(f"olat apply: --candidate {args.candidate} does not exist; {src} has candidates "
                              f"0 to {len(candidates) - 1}")
        mult = candidates[args.candidate]["multipliers"]
    else:
        mult = data["multipliers"]
    if args.format == "params":
        text = json.dumps(source_params(basis, mult), indent=2)
    elif args.format == "toml":
        vals = source_params(basis, mult)
        text = "[params]\ninit = { " + ", ".join(f'"{k}" = {json.dumps(v)}' for k, v in vals.items()) + " }\n"
    else:
        text = blender_script(basis, mult)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


@hookimpl
def rendergrad_add_commands(subparsers):
    p = subparsers.add_parser("olat", help="OLAT relighting: capture a basis, optimize light multipliers, apply them")
    sub = p.add_subparsers(dest="olat_command", metavar="SUBCOMMAND", required=True)

    c = sub.add_parser("capture", help="render one image per light with any renderer that declares light parameters")
    c.add_argument("--config", help="a run TOML: its [renderer] and [params] init are used")
    c.add_argument("--renderer", help="renderer plugin name")
    c.add_argument("--option", action="append", metavar="KEY=VALUE", help="renderer option (TOML value)")
    c.add_argument("--param", action="append", metavar="KEY=VALUE", help="scene parameter value during capture")
    c.add_argument("--light", action="append", help="capture only this light parameter (repeatable)")
    c.add_argument("--unit", choices=["init", "one"], default="init",
                   help="light value a multiplier of 1 stands for: as authored (init) or 1.0")
    c.add_argument("--max-batch", type=int, help="render at most this many images per call")
    c.add_argument("--multilayer", action="store_true", help="write one multi-layer EXR instead of one per light")
    c.add_argument("--out", required=True, help="output folder (olat.json + EXRs)")
    c.set_defaults(func=_cmd_capture)

    _add_optimize_parser(sub)

    a = sub.add_parser("apply", help="turn optimized multipliers into source-scene values or a Blender script")
    a.add_argument("result", help="multipliers.json or the optimize output folder")
    a.add_argument("--basis", required=True, help="the basis the multipliers belong to (olat.json)")
    a.add_argument("--format", choices=["params", "toml", "blender"], default="params",
                   help="params: JSON of source-scene values; toml: a [params] init block for a run file; "
                        "blender: a script for blender --python (default: params)")
    a.add_argument("--candidate", type=int, help="use this candidate instead of the best")
    a.add_argument("--out", help="write here instead of stdout")
    a.set_defaults(func=_cmd_apply)

    from .. import olat_blender, olat_solve
    olat_solve.add_commands(sub)
    olat_blender.add_commands(sub)


def _add_optimize_parser(sub: Any) -> None:
    o = sub.add_parser("optimize", help="OLAT-AD: optimize per-light RGB multipliers for an objective",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples (see docs/olat.md):\n"
                              "  rendergrad olat optimize runs/basis --target reference.exr --objective style --out runs/style\n"
                              "  rendergrad olat optimize runs/basis --target-multipliers examples/olat/target_multipliers.json "
                              "--out runs/mse")
    o.add_argument("basis", help="olat.json or its folder")
    o.add_argument("--out", required=True, help="output folder (multipliers.json, contact sheet, best image)")
    o.add_argument("--objective", default="mse", help="objective plugin (mse, ssim, histogram, style, clip, ...; default: %(default)s)")
    o.add_argument("--option", action="append", metavar="KEY=VALUE", help="objective option (TOML value)")
    o.add_argument("--target", help="reference image (EXR/PNG/NPY)")
    o.add_argument("--target-multipliers", metavar="JSON",
                   help="or: relight the basis with these multipliers as the target: inline JSON "
                        "'{\"key\": [1.6, 1.2, 0.8]}' or a JSON file; unnamed lights stay at 1")
    o.add_argument("--text", help="clip: target prompt")
    o.add_argument("--init-text", help="clip: prompt describing the starting image (relative mode)")
    o.add_argument("--checkpoint", help="clip: local weights file")
    o.add_argument("--clip-model", help="clip: architecture name or model-config JSON")
    o.add_argument("--clip-mode", choices=["text", "relative", "image"],
                   help="clip: relative (needs --init-text) or absolute text, or an image target")
    o.add_argument("--batch", type=int, default=4, help="candidates optimized side by side (default: %(default)s)")
    o.add_argument("--sigma", type=float, default=0.1, help="std. dev. of the initial multipliers around 1 (default: %(default)s)")
    o.add_argument("--lr", type=float, default=0.06, help="Adam learning rate (default: %(default)s)")
    o.add_argument("--steps", type=int, default=230, help="Adam steps (default: %(default)s)")
    o.add_argument("--lr-decay", choices=["none", "cosine"], default="none", help="learning-rate schedule (default: %(default)s)")
    o.add_argument("--augment", choices=["none", "crop"], default="none",
                   help="random resized crop per candidate and step (text prompts) (default: %(default)s)")
    o.add_argument("--tonemap", choices=["srgb", "agx", "linear", "none"],
                   help="differentiable tone map before the objective (default: the objective's own, if any)")
    o.add_argument("--exposure", type=float, default=0.0, help="exposure in stops before tone mapping (default: %(default)s)")
    o.add_argument("--theta-min", type=float, default=0.0, help="lower clamp of every multiplier (default: %(default)s)")
    o.add_argument("--theta-max", type=float, default=8.0, help="upper clamp of every multiplier (default: %(default)s)")
    o.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="basis storage (the sum is accumulated in float32) (default: %(default)s)")
    o.add_argument("--seed", type=int, default=0, help="seed of the initial candidates and the crops (default: %(default)s)")
    o.add_argument("--max-renders", type=int, help="stop once this many relights are spent (B per step)")
    o.add_argument("--checkpoint-dir", help="save the run's state here (periodically, at the end, on failure)")
    o.add_argument("--resume", action="store_true", help="continue the run saved in --checkpoint-dir exactly")
    o.add_argument("--progress", action="store_true", help="show a progress bar")
    o.set_defaults(func=_cmd_optimize)
