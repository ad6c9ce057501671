"""rendergrad: optimize scene parameters through any renderer.

The public API::

    import rendergrad as rg
    result = rg.optimize("toy", "mse", "prdpt", target_params={"x": 0.7, "y": 0.3}, steps=300)

and the plugin contract (:class:`Renderer`, :class:`Objective`, :class:`GradientEstimator`,
:class:`Param`, :class:`ParamSpace`, :data:`hookimpl`). See ``docs/plugins.md``.
"""

from importlib.metadata import PackageNotFoundError, version as _version

from .errors import (CheckpointError, ConfigError, IncompatiblePluginsError, ParameterError,
                     PluginNotFoundError, PluginUnavailableError, RendererFailure, RendererOutputError,
                     RendergradError)
from .hookspecs import hookimpl
from .interfaces import Estimate, GradientEstimator, LossFunction, Objective, Plugin, Renderer, StepContext
from .params import Param, ParamSpace

try:
    __version__ = _version("rendergrad")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0.0.0"


def __getattr__(name: str):
    # Heavier pieces load on first use so `import rendergrad` inside a plugin stays cheap and
    # free of import cycles (plugins import rendergrad; the loop imports the registry).
    if name in ("optimize", "Result"):
        from . import loop
        return getattr(loop, name)
    if name in ("Optimization", "Batch"):
        from . import optimization
        return getattr(optimization, name)
    if name == "discover":
        from .registry import discover
        return discover
    if name == "BatchEvaluator":
        from .evaluation import BatchEvaluator
        return BatchEvaluator
    if name in ("load_config", "run_config"):
        from . import config, runner
        return getattr(config, name, None) or getattr(runner, name)
    raise AttributeError(f"module 'rendergrad' has no attribute {name!r}")


__all__ = [
    "Param", "ParamSpace", "Renderer", "Objective", "GradientEstimator", "Estimate", "StepContext",
    "LossFunction", "Plugin", "hookimpl", "optimize", "Result", "Optimization", "Batch", "discover", "BatchEvaluator",
    "load_config", "run_config", "__version__", "RendergradError", "ConfigError", "ParameterError",
    "PluginNotFoundError", "PluginUnavailableError", "IncompatiblePluginsError", "RendererOutputError",
    "RendererFailure", "CheckpointError",
]
