"""``rendergrad bridge serve``: start a bridge server from the command line.

    rendergrad bridge serve toy --options '{"resolution": 64}'
    rendergrad bridge serve blender --options-file scene.json --endpoint ipc:///tmp/blender.sock

KIND is ``blender`` (the Blender server; options as for the ``blender`` renderer's scene
options) or the name of any installed in-process renderer plugin (``toy``, ``mitsuba``...).
Also runnable as ``python -m rendergrad.renderers.bridge.serve``; Blender workers run
``python -m rendergrad.renderers.blender.server``, which skips plugin discovery and starts faster.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from . import protocol as P


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", help="'blender' or the name of an installed renderer plugin (e.g. toy)")
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5555",
                   help="where to listen: tcp://127.0.0.1:PORT (PORT * picks a free one) or ipc:///path "
                        "(default: %(default)s)")
    p.add_argument("--options", default=None, help="renderer/scene options as a JSON object")
    p.add_argument("--options-file", default=None, help="renderer/scene options from a JSON or TOML file")
    p.add_argument("--ready-file", default=None, help="write the bound endpoint here once listening")
    p.add_argument("--max-message-bytes", type=int, default=P.DEFAULT_MAX_MESSAGE_BYTES,
                   help="largest request or reply accepted (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=1024, help="largest batch per request (default: %(default)s)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow binding a non-loopback address (use --curve-secret-key-file with it)")
    p.add_argument("--curve-secret-key-file", default=None,
                   help="file holding this server's Z85 CURVE secret key: encrypt and authenticate traffic")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="stop when the process that started this server goes away")


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    from rendergrad.errors import ConfigError
    opts: dict[str, Any] = {}
    if args.options_file:
        path = Path(args.options_file)
        text = path.read_text()
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # pragma: no cover - Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            opts.update(tomllib.loads(text))
        else:
            opts.update(json.loads(text))
    if args.options:
        try:
            extra = json.loads(args.options)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--options must be a JSON object: {e}") from None
        if not isinstance(extra, dict):
            raise ConfigError("--options must be a JSON object, e.g. '{\"resolution\": 64}'")
        opts.update(extra)
    return opts


def make_server(kind: str, options: dict[str, Any]):
    if kind == "blender":
        from rendergrad.registry import check_options
        from rendergrad.renderers.blender.server import BlenderServer
        check_options(BlenderServer, options, "blender server")
        return BlenderServer(**options)
    from rendergrad.registry import registry
    from .server import RendererServer
    return RendererServer(registry().create("renderer", kind, options))


def run(args: argparse.Namespace) -> int:
    key = None
    if args.curve_secret_key_file:
        key = Path(args.curve_secret_key_file).read_text().strip().encode()
    server = make_server(args.kind, load_options(args))
    server.serve(args.endpoint, allow_remote=args.allow_remote, ready_file=args.ready_file,
                 max_message_bytes=args.max_message_bytes, max_batch=args.max_batch,
                 exit_with_parent=args.exit_with_parent, curve_secret_key=key)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from rendergrad.errors import RendergradError
    p = argparse.ArgumentParser(prog="rendergrad bridge serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except RendergradError as e:
        print(f"rendergrad bridge serve: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
