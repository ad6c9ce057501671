"""Declared Blender parameters: safe data paths such as ``objects["Sphere"].location[2]``.

A path is parsed into tokens and walked with ``getattr``/``[]`` from ``bpy.data`` (or
``scene.`` for the active scene); it is never evaluated, so a path can read and write
properties and nothing else: no calls, no private attributes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"""\.?([A-Za-z_][A-Za-z0-9_]*)|\[\s*(-?\d+)\s*\]|\[\s*"((?:[^"\\]|\\.)*)"\s*\]|\[\s*'((?:[^'\\]|\\.)*)'\s*\]""")


class PathError(ValueError):
    """A data path does not parse or does not resolve in the scene."""


def parse(path: str) -> list[tuple[str, Any]]:
    """``'objects["Cube"].modifiers["Array"].count'`` → ``[('attr','objects'), ('key','Cube'), ...]``."""
    if not isinstance(path, str) or not path.strip():
        raise PathError("a parameter needs a non-empty `path`, e.g. 'objects[\"Sphere\"].location[2]'")
    tokens: list[tuple[str, Any]] = []
    pos = 0
    s = path.strip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m or m.end() == pos or (m.group(1) and pos > 0 and s[pos] != "."):
            raise PathError(f"cannot parse data path {path!r} at character {pos} ({s[pos:pos + 12]!r}); write "
                            "it like objects[\"Sphere\"].location[2] or lights[\"Key\"].energy")
        if m.group(1) is not None:
            if m.group(1).startswith("_"):
                raise PathError(f"data path {path!r}: private attributes ({m.group(1)!r}) are not allowed")
            tokens.append(("attr", m.group(1)))
        elif m.group(2) is not None:
            tokens.append(("index", int(m.group(2))))
        else:
            key = m.group(3) if m.group(3) is not None else m.group(4)
            tokens.append(("key", re.sub(r"\\(.)", r"\1", key)))
        pos = m.end()
    if tokens[0][0] != "attr":
        raise PathError(f"data path {path!r} must start with a bpy.data collection name such as objects, lights, "
                        "materials, or with scene.")
    return tokens


@dataclass
class Binding:
    """A resolved path: where to write, and what the property is."""

    path: str
    owner: Any            # the struct or array holding the value
    last: tuple[str, Any]  # ('attr', name) or ('index', i) / ('key', k)
    rna_owner: Any        # the struct whose RNA property describes the value
    rna_name: str

    def get(self) -> Any:
        kind, k = self.last
        return getattr(self.owner, k) if kind == "attr" else self.owner[k]

    def set(self, value: Any) -> None:
        kind, k = self.last
        if kind == "attr":
            setattr(self.owner, k, value)
        else:
            self.owner[k] = value

    def rna(self) -> Any:
        try:
            return self.rna_owner.bl_rna.properties[self.rna_name]
        except (AttributeError, KeyError):
            return None


def resolve(path: str, bpy: Any) -> Binding:
    tokens = parse(path)
    kind, first = tokens[0]
    if first == "scene":
        obj: Any = bpy.context.scene
    else:
        if not hasattr(bpy.data, first):
            raise PathError(f"data path {path!r}: bpy.data has no collection {first!r} (try objects, lights, "
                            "materials, meshes, cameras, worlds, node_groups)")
        obj = getattr(bpy.data, first)
    rna_owner, rna_name = bpy.data, first
    walked = first
    for i, (kind, k) in enumerate(tokens[1:], start=1):
        is_last = i == len(tokens) - 1
        if is_last:
            if kind == "attr":
                if not hasattr(obj, k):
                    raise PathError(f"data path {path!r}: {walked} has no property {k!r}")
                return Binding(path, obj, (kind, k), obj, k)
            try:
                obj[k]
            except (KeyError, IndexError, TypeError):
                raise PathError(f"data path {path!r}: {walked} has no item [{k!r}]"
                                + _names(obj)) from None
            return Binding(path, obj, (kind, k), rna_owner, rna_name)
        try:
            if kind == "attr":
                nxt = getattr(obj, k)
                rna_owner, rna_name = obj, k
            else:
                nxt = obj[k]
        except (AttributeError, KeyError, IndexError, TypeError):
            what = f"property {k!r}" if kind == "attr" else f"item [{k!r}]"
            raise PathError(f"data path {path!r}: {walked} has no {what}" + _names(obj)) from None
        walked += f".{k}" if kind == "attr" else f"[{k!r}]"
        obj = nxt
    # a path of one token names a collection, which is not a value
    raise PathError(f"data path {path!r} names a collection, not a value")


def _names(obj: Any) -> str:
    try:
        keys = list(obj.keys())
    except Exception:
        return ""
    return f"; it has: {', '.join(map(repr, keys[:20]))}" if keys else ""
