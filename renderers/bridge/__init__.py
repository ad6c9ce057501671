"""The ZeroMQ render bridge: drive renderers that live in another process, language or machine.

* :mod:`.protocol` — the versioned wire format (``docs/bridge-protocol.md``);
* :class:`Server` — subclass it, implement ``describe()`` and ``render(params)``, call ``serve()``;
* :class:`BridgeRenderer` — the ``bridge`` renderer plugin: a client that fans batches out
  over one or more servers, retries on another worker and restarts the workers it launched;
* ``rendergrad bridge serve KIND`` / ``rendergrad bridge ping ENDPOINT`` on the command line.
"""

from __future__ import annotations

import argparse

from rendergrad import hookimpl

from .client import BridgeRenderer
from .protocol import PROTOCOL_VERSION, ProtocolError
from .server import RendererServer, Server

__all__ = ["BridgeRenderer", "Server", "RendererServer", "PROTOCOL_VERSION", "ProtocolError"]


@hookimpl
def rendergrad_renderers():
    return [BridgeRenderer]


def _cmd_ping(args: argparse.Namespace) -> int:
    r = BridgeRenderer(endpoints=args.endpoints, timeout=args.timeout, allow_remote=args.allow_remote)
    try:
        rtts = r.ping()
        d = r.description
        h, w, c = r.image_shape
        print(f"{d.get('name')}: {len(r.space.names)} parameters ({', '.join(r.space.names)}), "
              f"images {w}x{h}x{c}; ping " + ", ".join(f"{t * 1e3:.2f} ms" for t in rtts))
    finally:
        r.close()
    return 0


@hookimpl
def rendergrad_add_commands(subparsers):
    from . import serve
    p = subparsers.add_parser("bridge", help="the ZeroMQ render bridge: serve a renderer, ping a server")
    sub = p.add_subparsers(dest="bridge_command", metavar="SUBCOMMAND")
    ps = sub.add_parser("serve", help="serve a renderer (blender, toy, ...) over the bridge protocol",
                        description=serve.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_arguments(ps)
    ps.set_defaults(func=serve.run)
    pp = sub.add_parser("ping", help="say hello to running servers and show what they serve")
    pp.add_argument("endpoints", nargs="+", help="e.g. tcp://127.0.0.1:5555 or ipc:///tmp/x.sock")
    pp.add_argument("--timeout", type=float, default=10.0,
                    help="seconds to wait for each server's answer (default: %(default)s)")
    pp.add_argument("--allow-remote", action="store_true",
                    help="allow endpoints beyond 127.0.0.1 and ipc:// (refused by default)")
    pp.set_defaults(func=_cmd_ping)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
