"""Every error a user can cause has its own class, and each message says what to fix."""


class RendergradError(Exception):
    """Base class: catch this to handle any rendergrad error."""


class ConfigError(RendergradError, ValueError):
    """A run configuration is malformed: unknown key, wrong type, missing section."""


class ParameterError(RendergradError, ValueError):
    """A parameter is unknown, out of bounds, or declared inconsistently."""


class PluginNotFoundError(RendergradError, LookupError):
    """No plugin of that kind and name is registered."""


class PluginUnavailableError(RendergradError, RuntimeError):
    """The plugin is registered but cannot run here (missing library, no GPU, ...)."""


class IncompatiblePluginsError(RendergradError, ValueError):
    """Two plugins cannot work together, e.g. an analytic estimator with a forward-only renderer."""


class RendererOutputError(RendergradError, RuntimeError):
    """A renderer returned something unusable: NaN/inf pixels, the wrong shape or type."""


class RendererFailure(RendergradError, RuntimeError):
    """A renderer crashed, hung or lost its worker while rendering."""


class CheckpointError(RendergradError, RuntimeError):
    """A checkpoint is missing, unreadable or belongs to a different run."""
