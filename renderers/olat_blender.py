"""OLAT and Blender: the installable add-on zip, and how basis lights map onto Blender lights.

The add-on itself is the package :mod:`rendergrad.renderers.olat_blender_addon` (it imports
``bpy``, so only Blender imports it); :func:`build_addon_zip` packs it under the module name
``rendergrad_olat`` for Preferences → Add-ons → Install from Disk.
"""

from __future__ import annotations

import argparse
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

from rendergrad.errors import ConfigError

ADDON_MODULE = "rendergrad_olat"
ADDON_SOURCE = Path(__file__).with_name("olat_blender_addon")
_DATA_NAME = re.compile(r"""^(lights|objects)\[\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')\s*\]""")


def addon_files() -> list[Path]:
    """The add-on's source files (Python only; no caches)."""
    files = sorted(p for p in ADDON_SOURCE.rglob("*.py") if "__pycache__" not in p.parts)
    if not (ADDON_SOURCE / "__init__.py").is_file():
        raise ConfigError(f"the Blender add-on sources are missing from {ADDON_SOURCE}; reinstall rendergrad")
    return files


def build_addon_zip(out: str | Path) -> Path:
    """Write the installable add-on zip (``rendergrad_olat/__init__.py``, ...) to ``out``."""
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise ConfigError(f"olat addon: --out {out} must end in .zip (Blender installs add-ons from .zip files)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in addon_files():
            z.write(p, f"{ADDON_MODULE}/{p.relative_to(ADDON_SOURCE).as_posix()}")
    return out


def blender_light_names(light: Mapping[str, Any], meta: Mapping[str, Any]) -> list[str]:
    """Blender object/light names a basis light may be called in the scene, most specific first.

    A basis captured by the add-on records the ``object``; one captured through the ``blender``
    renderer records the renderer parameter, whose declared ``path`` (``lights["Key"].energy``)
    names the Blender light.
    """
    names = [light.get("object"), light.get("light")]
    parameter = str(light.get("parameter") or "")
    paths = [parameter]
    options = (meta.get("source") or {}).get("options") or {}
    for p in options.get("params") or []:
        if isinstance(p, Mapping) and p.get("name") == parameter and isinstance(p.get("path"), str):
            paths.insert(0, p["path"])
    for path in paths:
        m = _DATA_NAME.match(path.strip())
        if m:
            names.append(re.sub(r"\\(.)", r"\1", m.group(2) if m.group(2) is not None else m.group(3)))
    names += [light.get("name"), parameter.split(".")[0],
              re.sub(r"[._]?(energy|power|strength|intensity)$", "", parameter)]
    return list(dict.fromkeys(str(n) for n in names if n))


def _cmd_addon(args: argparse.Namespace) -> int:
    path = build_addon_zip(args.out)
    print(f"wrote {path}: install it in Blender with Edit > Preferences > Add-ons > Install from Disk, "
          f"enable 'rendergrad OLAT', then use Properties > Render > rendergrad OLAT")
    return 0


def add_commands(sub: Any) -> None:
    """``rendergrad olat addon``."""
    p = sub.add_parser("addon", help="write the Blender add-on (capture a basis, apply multipliers) as an installable zip")
    p.add_argument("--out", default="rendergrad_olat.zip", help="zip to write (default: %(default)s)")
    p.set_defaults(func=_cmd_addon)
