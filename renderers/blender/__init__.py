"""The ``blender`` renderer: Blender scenes rendered by supervised Blender server processes.

Each worker is its own process (``bpy`` can be imported once per process) running
:class:`rendergrad.renderers.blender.server.BlenderServer`; this plugin is a
:class:`~rendergrad.renderers.bridge.BridgeRenderer` that launches ``workers`` of them in their
own process groups, restarts any that die, and kills them all when the run ends. See
``docs/blender.md``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any, Sequence

from rendergrad import hookimpl
from rendergrad.errors import ConfigError
from rendergrad.resolution import parse_resolution
from rendergrad.renderers.bridge.client import BridgeRenderer


class BlenderRenderer(BridgeRenderer):
    """Blender (Cycles, Eevee, Workbench) through supervised bridge workers; declared parameters only."""

    name = "blender"

    def __init__(self, scene: str | None = None, params: Sequence[dict[str, Any]] | None = None,
                 engine: str = "cycles", resolution: Any = 64, samples: int = 16,
                 denoise: bool = False, threads: int | None = None, channels: int = 3,
                 max_bounces: int | None = None, persistent_data: bool = False, workers: int = 1, endpoints: str | Sequence[str] | None = None,
                 blender: str | None = None, transport: str = "ipc", timeout: float = 120.0,
                 startup_timeout: float = 180.0, retries: int = 2, max_restarts: int = 5, seed: int = 0,
                 chunk_size: int | None = None, seed_mode: str = "per_render"):
        common = dict(timeout=timeout, startup_timeout=startup_timeout, retries=retries,
                      max_restarts=max_restarts, seed=seed, chunk_size=chunk_size, seed_mode=seed_mode)
        if endpoints is not None:
            if scene is not None or params:
                raise ConfigError("blender renderer: with `endpoints` the servers already hold their scene; "
                                  "drop `scene` and `params` (or drop `endpoints` to launch workers)")
            super().__init__(endpoints=endpoints, **common)
            return
        parse_resolution(resolution, "blender renderer")  # refuse a bad size before launching Blender
        if scene is None:
            raise ConfigError("blender renderer: set `scene` (a .blend file or a .py script that builds the scene) "
                              "and `params`, or `endpoints` to attach to running Blender servers")
        # EXR frames go to a folder this client owns and removes, even after a killed worker.
        scratch = tempfile.mkdtemp(prefix="rendergrad-blender-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self._scratch = weakref.finalize(self, shutil.rmtree, scratch, True)
        options = {"scratch": scratch, "scene": str(Path(scene).expanduser().resolve()), "params": list(params or []), "engine": engine,
                   "resolution": resolution, "samples": samples, "denoise": denoise, "threads": threads,
                   "channels": channels, "max_bounces": max_bounces, "persistent_data": persistent_data}
        opts = json.dumps(options)
        tail = ["--endpoint", "{endpoint}", "--options", opts, "--exit-with-parent"]
        if blender:
            exe = shutil.which(blender) or blender
            server = str(Path(__file__).with_name("server.py"))
            command = [exe, "-b", "--factory-startup", "--python", server, "--", *tail]
        else:
            command = [sys.executable, "-m", "rendergrad.renderers.blender.server", *tail]
        try:
            super().__init__(command=command, workers=workers, transport=transport, **common)
        except BaseException:
            self._scratch()
            raise

    def close(self) -> None:
        super().close()
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            scratch()

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("zmq") is None:
            return False, "needs pyzmq: pip install 'rendergrad[blender]'"
        if importlib.util.find_spec("bpy") is None and shutil.which("blender") is None:
            return False, "needs the bpy wheel (pip install 'rendergrad[blender]') or a `blender` executable"
        return True, ""


@hookimpl
def rendergrad_renderers():
    return [BlenderRenderer]
