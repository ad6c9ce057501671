"""Meta-learning (Metappearance): learned starting points and step sizes for task families.

* :class:`MetaLearner` — the core: inner loops through a :class:`~rendergrad.BatchEvaluator`
  and a gradient estimator (first order) or autograd (second order), outer steps on ``u0`` and
  ``log α``;
* :class:`MetaParams` / :func:`load_meta` — ``meta.json``, with the parameter-space
  fingerprint that refuses a file learned for another scene;
* :class:`PerCoordinateSGD` — the update a run with ``meta=`` takes;
* :func:`meta_train` — a family run file → ``META_DIR`` (meta.json, curve, evaluation).
"""

from .learner import InnerResult, MetaLearner, Task
from .optim import PerCoordinateSGD
from .store import MetaParams, load_meta, space_fingerprint, space_mismatch

__all__ = ["MetaLearner", "Task", "InnerResult", "PerCoordinateSGD", "MetaParams", "load_meta",
           "space_fingerprint", "space_mismatch", "meta_train"]


def __getattr__(name: str):
    if name in ("meta_train", "resolve_meta"):
        from . import train
        return getattr(train, name)
    raise AttributeError(name)
