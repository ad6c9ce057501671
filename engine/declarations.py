"""Helpers for renderers that bind run-file parameter declarations to their scenes.

Mitsuba and nvdiffrast (and any third-party renderer in the same style) accept ``params`` as a
list of tables or a table of tables, and ``axes = "xz"`` for transforms; parsing them in one
place keeps their error messages the same everywhere.
"""

from __future__ import annotations

from typing import Any, Mapping

from .errors import ConfigError


def declaration_list(declarations: Any, who: str) -> list[dict[str, Any]]:
    """``params`` as a list of tables (a table of tables names each by its key)."""
    if isinstance(declarations, Mapping):
        return [dict(v, name=k) for k, v in declarations.items()]
    if isinstance(declarations, (list, tuple)):
        out = []
        for i, d in enumerate(declarations):
            if not isinstance(d, Mapping):
                raise ConfigError(f"{who}: params[{i}] must be a table, got {type(d).__name__}")
            out.append(dict(d))
        return out
    raise ConfigError(f"{who}: `params` must be a list of parameter tables (or a table of tables)")


def axes_indices(axes: Any, who: str) -> list[int]:
    """``"xz"`` → ``[0, 2]``: a non-empty subset of x, y, z without repeats."""
    if not isinstance(axes, str) or not axes or any(a not in "xyz" for a in axes) or len(set(axes)) != len(axes):
        raise ConfigError(f"{who}: axes must be a non-empty subset of 'xyz' without repeats, got {axes!r}")
    return ["xyz".index(a) for a in axes]
