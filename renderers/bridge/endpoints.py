"""Endpoint rules: loopback and ipc:// by default, anything else only when asked for."""

from __future__ import annotations

import re

from rendergrad.errors import ConfigError

_LOOPBACK_TCP = re.compile(r"^tcp://(127\.0\.0\.1|localhost|\[::1\]):(\d+|\*)$")


def is_local(endpoint: str) -> bool:
    return endpoint.startswith(("ipc://", "inproc://")) or bool(_LOOPBACK_TCP.match(endpoint))


def check_endpoint(endpoint: str, *, allow_remote: bool = False) -> str:
    """Refuse endpoints that are not ``tcp://HOST:PORT`` or ``ipc://PATH``; refuse non-loopback
    hosts unless ``allow_remote`` (a server reachable from the network should use CURVE)."""
    if not isinstance(endpoint, str) or not re.match(r"^(tcp://[^\s]+:(\d+|\*)|ipc://\S+|inproc://\S+)$", endpoint):
        raise ConfigError(f"bridge endpoint {endpoint!r} is not valid; use tcp://127.0.0.1:PORT or "
                          "ipc:///path/to/socket")
    if not allow_remote and not is_local(endpoint):
        raise ConfigError(f"bridge endpoint {endpoint!r} is not on this machine; servers bind and clients connect "
                          "to 127.0.0.1 or ipc:// unless allow_remote is set (then secure it with CURVE keys: "
                          "see docs/bridge-protocol.md)")
    return endpoint
