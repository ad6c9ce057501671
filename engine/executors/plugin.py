"""The built-in executors, published through the same hook third-party executors use."""

from __future__ import annotations

from ..hookspecs import hookimpl
from .local import LocalExecutor
from .processes import ProcessExecutor
from .ray_actors import RayExecutor


@hookimpl
def rendergrad_executors():
    return [LocalExecutor, ProcessExecutor, RayExecutor]
