"""``cma`` and ``nevergrad``: derivative-free optimizers as step-proposing estimators.

Each step asks the library for a population, renders it with **one** call of the loss
function (so :class:`~rendergrad.evaluation.BatchEvaluator` counts every render, and a render
farm driving :class:`rendergrad.Optimization` by ``ask``/``tell`` receives the whole population
as one batch), tells the library the losses, and returns ``Estimate(step=recommendation - u)``:
the loop moves the parameters to the library's recommendation instead of stepping its torch
optimizer. Checkpoints, callbacks, progress and the stop rules are then the loop's own.

What the run reports as its parameters is the library's recommendation after every
generation: for CMA-ES the distribution mean (``result.xfavorite``, the mean mapped into the
bounds), which is what the method believes in and, on noisy renders, far steadier than the
best sample seen; for nevergrad ``provide_recommendation()``. The step's ``loss`` is the mean
of the population's losses (a loss *around* the parameters, like PRDPT's); the lowest one is in
the history as ``min_loss``.

Resuming without pickles. Checkpoints are read with ``torch.load(weights_only=True)``, which a
pycma or nevergrad object cannot pass. The state is the told history instead: the seed, the start
point, every generation's losses and a checksum of its population (plain tensors). Loading it
rebuilds the library object by starting it from the same seed and asking/telling the same
generations again. That is exact because each object draws from its own copy of numpy's global
random state (both libraries use ``np.random`` internally): the copy is swapped in around every
call into the library, so nothing else in the process can shift its stream and the object never
disturbs anyone else's. Two of nevergrad's habits would still break it, and both are closed: some
of NGOpt's choices start pycma without a seed (pycma then seeds numpy from the clock:
:func:`pycma_seeded_by_stream`), and they run it in a thread that computes its next candidate
after ``tell`` has returned (:func:`settle` waits for it). A rebuilt population that does not
match its checksum (another library version) stops the resume with a clear error rather than
continuing differently. Rebuilding costs one ask/tell per past generation (about 2 ms each for
pycma in 2-D, 4 ms for nevergrad's NGOpt), only when a state is loaded into a fresh object:
replays of a step within one process (``ask``/``tell``) reuse the live object.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import importlib.util
import math
import threading
import time
import warnings
import weakref
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from rendergrad import Estimate, GradientEstimator, StepContext, hookimpl
from rendergrad.errors import CheckpointError, ConfigError
from rendergrad.params import ParamSpace

SEED_SPACE = 2 ** 32  # numpy's legacy seeds are 32-bit


class NumpyStream:
    """A private copy of numpy's global random state, made current only inside :meth:`active`.

    Libraries that draw from ``np.random`` directly become deterministic functions of their
    seed and the calls made to them, whatever else in the process uses numpy's generator.
    """

    def __init__(self, seed: int):
        self.state = np.random.RandomState(seed % SEED_SPACE).get_state()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        outer = np.random.get_state()
        np.random.set_state(self.state)
        try:
            with warnings.catch_warnings():  # both libraries warn per call about their internals
                warnings.simplefilter("ignore")
                yield
        finally:
            self.state = np.random.get_state()
            np.random.set_state(outer)


@contextlib.contextmanager
def pycma_seeded_by_stream() -> Iterator[None]:
    """While active, pycma objects created without a ``seed`` option draw from numpy's current
    global state (the :class:`NumpyStream` swapped in) instead of reseeding it from the clock.

    Why: pycma's default seed is ``"time"``. nevergrad starts ``cma.fmin`` without a seed inside
    some of its portfolio's choices (NGOpt picks a CMA-based meta-model for a few hundred
    evaluations in 8 dimensions), so those runs differed from process to process, from the first
    candidate on, and could not be rebuilt by replay. pycma's "do nothing" seed (NaN) as the
    default makes them functions of the run's seed again.
    """
    try:
        import cma.options_parameters as pycma_options
    except ImportError:
        yield
        return
    defaults = pycma_options.cma_default_options
    before = defaults["seed"]
    defaults["seed"] = math.nan
    try:
        yield
    finally:
        defaults["seed"] = before


def recast_threads(optimizer: Any, depth: int = 6) -> list[Any]:
    """The threads in which nevergrad runs wrapped ``minimize``-style optimizers (``CmaFmin2``,
    scipy's methods: a ``MessagingThread`` each), in ``optimizer`` and its sub-optimizers."""
    import nevergrad as ng
    found: list[Any] = []
    stack: list[tuple[Any, int]] = [(optimizer, 0)]
    seen: set[int] = set()
    while stack:
        obj, level = stack.pop()
        if id(obj) in seen or level > depth:
            continue
        seen.add(id(obj))
        thread = getattr(obj, "_messaging_thread", None)
        if thread is not None and hasattr(thread, "messages_ask"):
            found.append(thread)
        for value in vars(obj).values():
            items = value if isinstance(value, (list, tuple)) else \
                list(value.values()) if isinstance(value, dict) else [value]
            stack += [(v, level + 1) for v in items if isinstance(v, ng.optimizers.base.Optimizer)]
    return found


def settle(threads: list[Any], timeout: float = 60.0) -> None:
    """Wait until each thread has posted its next candidate or ended.

    Why: nevergrad's tell hands a wrapped optimizer its loss through a queue and returns at once;
    the thread then computes its next candidate *concurrently* (pycma's update and sampling, drawn
    from numpy's global random state). Returning before it is done lets those draws land outside
    this optimizer's :class:`NumpyStream`, at whatever moment the scheduler picks, and the run
    differs from one process to the next. Once the next candidate is posted, the thread is blocked
    waiting for its loss and draws nothing more.
    """
    deadline = time.monotonic() + timeout
    for thread in threads:
        while thread.is_alive() and thread.messages_ask.empty() and time.monotonic() < deadline:
            time.sleep(0.0002)


_LIVE_THREADS: "weakref.WeakSet[Any]" = weakref.WeakSet()
_STOP_REGISTERED = False


def stop_at_exit(threads: list[Any]) -> None:
    """Stop these library threads when the interpreter exits, before it waits for its threads.

    Why: nevergrad's threads are not daemons and wait for their next loss for ever. A script
    that keeps its run (``opt = rg.Optimization(..., "ngopt"); opt.run()``) still holds the
    optimizer when Python exits, and Python waits for every non-daemon thread before it frees
    anything: the script never ended. ``threading._register_atexit`` runs just before that wait
    (it is how ``concurrent.futures`` stops its workers); ``atexit`` where it is missing.
    """
    global _STOP_REGISTERED
    _LIVE_THREADS.update(threads)
    if threads and not _STOP_REGISTERED:
        register = getattr(threading, "_register_atexit", None) or atexit.register
        register(_stop_live_threads)
        _STOP_REGISTERED = True


def _stop_live_threads() -> None:
    for thread in list(_LIVE_THREADS):
        with contextlib.suppress(Exception):
            thread.stop()


def _checksum(x: np.ndarray) -> float:
    return float(np.sum(x, dtype=np.float64))


class LibraryOptimizer(GradientEstimator):
    """An ask/tell optimizer from a library, one generation per step, resumable by replay.

    Subclasses create the library object (:meth:`_create`) and map ask, tell and the
    recommendation onto it; this class owns the step, the history and the state.
    """

    def __init__(self, seed: int | None = None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ConfigError(f"{self.name}: seed must be a non-negative integer or absent (the run's seed), "
                              f"got {seed!r}")
        self.seed = seed
        self._reset()

    # -- what a library adapter provides --------------------------------------------------
    def _create(self, x0: np.ndarray, seed: int, budget: int) -> Any:
        raise NotImplementedError

    def _ask(self) -> tuple[Any, np.ndarray]:
        """``(token, X)``: what :meth:`_tell` needs back, and the population ``[λ, n]`` in ``[0, 1]``."""
        raise NotImplementedError

    def _tell(self, token: Any, losses: np.ndarray) -> None:
        raise NotImplementedError

    def _recommend(self) -> np.ndarray:
        raise NotImplementedError

    def _stopped(self) -> bool:
        return False

    def _seed_for(self, run_seed: int) -> int:
        return run_seed

    def renders_per_step(self, n: int) -> int:
        """Renders per generation for ``n`` parameters (the population the library asks for)."""
        raise NotImplementedError

    def _diagnostics(self) -> dict[str, float]:
        return {}

    @contextlib.contextmanager
    def _library(self) -> Iterator[None]:
        """Around every call into the library: its own copy of numpy's random state."""
        assert self._stream is not None
        with self._stream.active():
            yield

    # -- state --------------------------------------------------------------------------
    def _reset(self) -> None:
        self._lib: Any = None
        self._stream: NumpyStream | None = None
        self._seed: int | None = None
        self._x0: torch.Tensor | None = None
        self._budget = 0
        self._losses = torch.zeros(0, 0, dtype=torch.float64)
        self._check = torch.zeros(0, dtype=torch.float64)
        self._asked: tuple[Any, np.ndarray] | None = None   # asked, not yet told (a pending batch)
        self._rec: np.ndarray | None = None
        self._converged = False

    def setup(self, space: ParamSpace, total_steps: int) -> None:
        super().setup(space, total_steps)
        self._reset()
        self._per_step = self.renders_per_step(space.size)

    def next_step_renders(self) -> int:
        """A generation: the same population every step, known before it is asked."""
        return self._per_step

    def state_dict(self) -> dict[str, Any]:
        if self._lib is None:
            return {}
        # the tensors are replaced, never changed in place, so handing them out is safe
        return {"seed": self._seed, "x0": self._x0, "budget": self._budget, "losses": self._losses,
                "check": self._check}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            if self._lib is not None and len(self._losses):
                self._reset()  # a state from before the first generation
            return
        if self._lib is not None and self._seed == state["seed"] and self._budget == state["budget"] \
                and torch.equal(self._x0, state["x0"]) and self._losses.shape == state["losses"].shape \
                and torch.equal(self._losses, state["losses"]):
            return  # the live object is already there (a replay within one process)
        self._start(state["x0"], int(state["seed"]), int(state["budget"]))
        for i, (losses, check) in enumerate(zip(state["losses"], state["check"])):
            token, x = self._ask_once()
            if _checksum(x) != float(check):
                self._reset()
                raise CheckpointError(
                    f"{self.name}: rebuilding the saved run gave a different population at generation {i} "
                    "(a different version of the optimizer library?), so it cannot continue exactly; "
                    "start the run again without resuming, or install the version that made it")
            self._generation(token, x, losses)

    def converged(self) -> bool:
        """The library's own termination (CMA-ES: step size or spread below tolerance)."""
        return self._converged

    # -- a step -------------------------------------------------------------------------
    def _start(self, x0: torch.Tensor, seed: int, budget: int) -> None:
        self._reset()
        self._seed, self._x0, self._budget = seed, x0.detach().to("cpu", torch.float64).clone(), budget
        self._dim = self._x0.shape[0]
        self._stream = NumpyStream(seed)
        with self._library():
            self._lib = self._create(self._x0.numpy().copy(), seed, budget)

    def _ask_once(self) -> tuple[Any, np.ndarray]:
        if self._asked is None:
            with self._library():
                token, x = self._ask()
            self._asked = (token, np.asarray(x, dtype=np.float64))
        return self._asked

    def _generation(self, token: Any, x: np.ndarray, losses: torch.Tensor) -> None:
        values = losses.detach().to("cpu", torch.float64).reshape(-1)
        with self._library():
            self._tell(token, values.numpy().copy())
            self._rec = np.clip(np.asarray(self._recommend(), dtype=np.float64), 0.0, 1.0)
            self._converged = bool(self._stopped())
        self._asked = None
        row = values.unsqueeze(0)
        self._losses = row if not len(self._losses) else torch.cat([self._losses, row])
        self._check = torch.cat([self._check, torch.tensor([_checksum(x)], dtype=torch.float64)])

    def _budget_for(self, ctx: StepContext) -> int:
        return int(ctx.max_renders or 0)

    def estimate(self, loss_fn, u: torch.Tensor, ctx: StepContext) -> Estimate:
        seed = self.seed if self.seed is not None else self._seed_for(int(ctx.generator.initial_seed()))
        fresh = self._lib is None or (not len(self._losses) and (
            self._seed != seed or not torch.equal(self._x0, u.detach().to("cpu", torch.float64))))
        if fresh:
            self._start(u, seed, self._budget_for(ctx))
        token, x = self._ask_once()
        # one batch: the population; losses may come back on the renderer's device
        losses = loss_fn(torch.as_tensor(x, dtype=u.dtype)).detach().to("cpu", torch.float64)
        self._generation(token, x, losses)
        step = torch.as_tensor(self._rec, dtype=u.dtype, device=u.device) - u
        info = {"min_loss": float(losses.min()), **self._diagnostics()}
        return Estimate(grad=-step, loss=float(losses.mean()), renders=int(x.shape[0]), info=info,
                        step=step)


# -- CMA-ES (pycma) ---------------------------------------------------------------------------
class CMA(LibraryOptimizer):
    """CMA-ES (pycma): a population per step, the parameters move to the distribution mean."""

    name = "cma"
    RESERVED = ("bounds", "seed", "randn")

    def __init__(self, sigma0: float = 0.2, popsize: int | None = None, diagonal_above: int = 200,
                 seed: int | None = None, options: Mapping[str, Any] | None = None):
        super().__init__(seed)
        if not (isinstance(sigma0, (int, float)) and 0 < sigma0 and math.isfinite(sigma0)):
            raise ConfigError(f"cma: sigma0 (the initial step size, a fraction of each range) must be > 0, "
                              f"got {sigma0!r}")
        if popsize is not None and (isinstance(popsize, bool) or not isinstance(popsize, int) or popsize < 2):
            raise ConfigError(f"cma: popsize (renders per step) must be an integer >= 2, got {popsize!r}")
        self.sigma0, self.popsize, self.diagonal_above = float(sigma0), popsize, int(diagonal_above)
        self.options = dict(options or {})
        self._check_options()

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("cma") is None:
            return False, "needs pycma: pip install 'rendergrad[baselines]'"
        return True, ""

    def _check_options(self) -> None:
        import cma
        valid = set(cma.CMAOptions())
        for key in self.options:
            if key in self.RESERVED:
                raise ConfigError(f"cma: option {key!r} is set by rendergrad (the [0, 1] box, the seed option, "
                                  "its own random stream); remove it from options")
            if key not in valid:
                close = difflib.get_close_matches(key, sorted(valid), n=3)
                raise ConfigError(f"cma: {key!r} is not a pycma option"
                                  + (f"; did you mean {', '.join(close)}?" if close else "")
                                  + " (list them with python -c 'import cma; print(list(cma.CMAOptions()))')")
        self.renders_per_step(2)  # bad option values fail here, not at the first step

    def renders_per_step(self, n: int) -> int:
        """Renders per step for ``n`` parameters (pycma's default is ``4 + 3 ln n``), as pycma decides it."""
        with NumpyStream(1).active():  # pycma seeds numpy's global generator: keep that to itself
            # per-coordinate spreads belong to the real space, not to this probe's
            return int(self._create(np.full(n, 0.5), 1, 0, spreads=False).popsize)

    def _seed_for(self, run_seed: int) -> int:
        # pycma treats seed 0 as "seed from the clock": shift by one
        return run_seed % (SEED_SPACE - 1) + 1

    def _create(self, x0: np.ndarray, seed: int, budget: int, spreads: bool = True) -> Any:
        import cma
        options = {k: v for k, v in self.options.items() if spreads or k != "CMA_stds"}
        stds = options.get("CMA_stds")
        if x0.shape[0] == 1:  # pycma needs >= 2 dimensions: carry one ignored coordinate
            x0 = np.concatenate([x0, [0.5]])
            if stds is not None and len(stds) == 1:
                stds = list(stds) + [1.0]
        opts = {"bounds": [0.0, 1.0], "seed": seed, "verbose": -9, "verb_log": 0, "verb_disp": 0,
                "CMA_diagonal": x0.shape[0] > self.diagonal_above}
        if self.popsize:
            opts["popsize"] = self.popsize
        opts.update(options)
        if stds is not None:
            opts["CMA_stds"] = stds
        try:
            return cma.CMAEvolutionStrategy(x0.tolist(), self.sigma0, opts)
        except Exception as e:  # pycma raises plain errors for bad option values
            raise ConfigError(f"cma: pycma refused the options {opts}: {type(e).__name__}: {e}") from None

    def _ask(self) -> tuple[Any, np.ndarray]:
        xs = self._lib.ask()
        return xs, np.asarray(xs)[:, : self._dim]

    def _tell(self, token: Any, losses: np.ndarray) -> None:
        self._lib.tell(token, [float(v) for v in losses])

    def _recommend(self) -> np.ndarray:
        # xfavorite: the mean mapped through pycma's boundary transform; the raw mean may lie
        # outside the bounds
        return np.asarray(self._lib.result.xfavorite)[: self._dim]

    def _stopped(self) -> bool:
        # asking on after pycma's own termination lets the degenerate covariance carry the mean away
        return bool(self._lib.stop())

    def _diagnostics(self) -> dict[str, float]:
        return {"sigma": float(self._lib.sigma)}

    def spread(self) -> float | None:
        """The widest standard deviation of the search distribution over the parameters (σ times
        the covariance's largest axis scale), in units of each range; None before the first step."""
        if self._lib is None:
            return None
        return float(np.max(np.asarray(self._lib.stds)[: self._dim]))


# -- nevergrad --------------------------------------------------------------------------------
def nevergrad_names() -> list[str]:
    import nevergrad as ng
    return sorted(ng.optimizers.registry.keys())


class Nevergrad(LibraryOptimizer):
    """Any nevergrad optimizer (default NGOpt), `batch` candidates per step."""

    name = "nevergrad"

    def __init__(self, optimizer: str = "NGOpt", batch: int = 1, sigma: float = 0.2, budget: int | None = None,
                 seed: int | None = None, options: Mapping[str, Any] | None = None):
        super().__init__(seed)
        import nevergrad as ng
        if optimizer not in ng.optimizers.registry:
            close = difflib.get_close_matches(str(optimizer), list(ng.optimizers.registry), n=3)
            raise ConfigError(f"{self.name}: unknown optimizer {optimizer!r}: not a nevergrad registry name"
                              + (f"; did you mean {', '.join(close)}?" if close else "")
                              + " (list them with rendergrad.plugins.dfo.nevergrad_names())")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"{self.name}: batch (candidates per step) must be a positive integer, got {batch!r}")
        if not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ConfigError(f"{self.name}: sigma (the mutation scale, a fraction of each range) must be > 0, "
                              f"got {sigma!r}")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise ConfigError(f"{self.name}: budget (renders the optimizer plans for) must be a positive "
                              f"integer or absent (the run's max_renders), got {budget!r}")
        self.optimizer, self.batch, self.sigma, self.budget = optimizer, batch, float(sigma), budget
        self.options = dict(options or {})
        with NumpyStream(0).active():  # bad option names fail here, not at the first step
            self._create(np.full(2, 0.5), 0, 10)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("nevergrad") is None:
            return False, "needs nevergrad: pip install 'rendergrad[baselines]'"
        return True, ""

    def renders_per_step(self, n: int) -> int:
        """Renders per step: ``batch``."""
        return self.batch

    def _budget_for(self, ctx: StepContext) -> int:
        # nevergrad's portfolio (NGOpt) chooses its algorithm from the budget
        return int(self.budget or ctx.max_renders or max(ctx.total_steps, 1) * self.batch)

    def _create(self, x0: np.ndarray, seed: int, budget: int) -> Any:
        import nevergrad as ng
        # σ in fractions of the [0, 1] range, like every other method here
        param = ng.p.Array(init=x0).set_bounds(0.0, 1.0).set_mutation(sigma=self.sigma)
        param.random_state = np.random.RandomState(seed % SEED_SPACE)
        try:
            return ng.optimizers.registry[self.optimizer](parametrization=param, budget=budget,
                                                          num_workers=self.batch, **self.options)
        except TypeError as e:
            raise ConfigError(f"{self.name}: nevergrad optimizer {self.optimizer!r} refused options "
                              f"{self.options}: {e}") from None

    @contextlib.contextmanager
    def _library(self) -> Iterator[None]:
        with super()._library(), pycma_seeded_by_stream():
            yield

    def _ask(self) -> tuple[Any, np.ndarray]:
        cands = [self._lib.ask() for _ in range(self.batch)]
        stop_at_exit(recast_threads(self._lib))
        return cands, np.stack([np.asarray(c.value, dtype=np.float64) for c in cands])

    def _tell(self, token: Any, losses: np.ndarray) -> None:
        for cand, value in zip(token, losses):
            self._lib.tell(cand, float(value))
            settle(recast_threads(self._lib))

    def _recommend(self) -> np.ndarray:
        return np.asarray(self._lib.provide_recommendation().value, dtype=np.float64)


class NGOpt(Nevergrad):
    """nevergrad's NGOpt portfolio (the nevergrad estimator with optimizer = "NGOpt")."""

    name = "ngopt"

    def __init__(self, batch: int = 1, sigma: float = 0.2, budget: int | None = None, seed: int | None = None,
                 options: Mapping[str, Any] | None = None):
        super().__init__("NGOpt", batch=batch, sigma=sigma, budget=budget, seed=seed, options=options)


@hookimpl
def rendergrad_estimators():
    return [CMA, Nevergrad, NGOpt]
