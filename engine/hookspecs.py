"""The plugin hooks rendergrad calls. One module, each hook documented.

A plugin is a module (or object) with functions decorated by :data:`rendergrad.hookimpl`,
published under the entry-point group ``rendergrad`` in its distribution's
``pyproject.toml``::

    [project.entry-points.rendergrad]
    disk = "rendergrad_disk"

Each hook returns a list of classes; rendergrad collects them from every plugin. A plugin
module that fails to import, or a hook that raises, is reported by ``rendergrad plugins``
with its error and never stops the host from running with the others.
"""

import pluggy

PROJECT = "rendergrad"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def rendergrad_renderers():
    """Return a list of :class:`rendergrad.Renderer` subclasses this plugin provides.

    Each class needs a unique ``name`` (what a run's ``[renderer] name`` refers to), a
    ``differentiable`` flag, ``parameter_space()`` and ``render(theta)``. Constructor keyword
    arguments are the run's ``[renderer] options``.
    """


@hookspec
def rendergrad_objectives():
    """Return a list of :class:`rendergrad.Objective` subclasses this plugin provides.

    Each class needs a unique ``name`` and ``loss(images, target) -> [B]``. Constructor
    keyword arguments are the run's ``[objective] options``.
    """


@hookspec
def rendergrad_estimators():
    """Return a list of :class:`rendergrad.GradientEstimator` subclasses this plugin provides.

    Each class needs a unique ``name``, ``requires_differentiable`` and
    ``estimate(loss_fn, u, ctx) -> Estimate``. Constructor keyword arguments are the run's
    ``[estimator] options``.
    """


@hookspec
def rendergrad_callbacks():
    """Return a list of :class:`rendergrad.callbacks.Callback` subclasses this plugin provides.

    Each class needs a unique ``name`` (what a run file's ``[[callbacks]] name`` refers to) and
    any of ``on_start(**kw)``, ``on_step(*, record, **kw)``, ``on_end(*, result, **kw)``; a hook
    receives only the keyword arguments it names (or all with ``**kw``). Constructor keyword
    arguments are the run's ``[[callbacks]] options``. An optional ``announce(run_dir)`` returns
    a line ``rendergrad run`` prints before the run starts (e.g. how to watch it).
    """


@hookspec
def rendergrad_executors():
    """Return a list of :class:`rendergrad.executors.Executor` subclasses this plugin provides.

    An executor decides where a batch's renders run (this process, worker processes, a
    cluster); the evaluator still counts, validates and scores every image. Each class needs a
    unique ``name`` (what a run's ``[executor] name`` refers to) and ``render(tasks)``, which
    returns each task's images in order after calling ``renderer.seek(index, batch)`` and, for
    renderers with ``adjustable_samples``, ``renderer.set_sample_fraction(task.fraction)``: call
    :func:`rendergrad.executors.seek_and_render` with the task's fields, so images do not depend
    on which worker rendered them. Constructor keyword arguments are the run's ``[executor] options``.
    """


@hookspec
def rendergrad_add_commands(subparsers):
    """Add subcommands to the ``rendergrad`` command line.

    ``subparsers`` is the :mod:`argparse` sub-parser action of the top-level parser. Add a
    parser with ``subparsers.add_parser(name, help=...)`` and set ``func`` on it with
    ``parser.set_defaults(func=callable)``; the callable receives the parsed arguments and
    returns an exit code. This is how a renderer plugin ships its own tools (``rendergrad
    bridge serve``, ``rendergrad olat capture``) without the core knowing about them.
    """
