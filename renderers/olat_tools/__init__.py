"""OLAT tooling: capture a basis from any renderer, OLAT-AD relighting, contact sheets, apply.

One module per job:

* :mod:`.capture` -- :func:`capture` renders each light a renderer declares alone, plus the
  lights-off base and the all-on check.
* :mod:`.optimize` -- :func:`olat_ad`, Savage et al.'s OLAT-AD, run by :class:`rendergrad.Optimization`.
* :mod:`.objective` -- :class:`CandidateObjective`: the tone map and per-candidate crops.
* :mod:`.export` -- :func:`write_outputs` (contact sheet, ``multipliers.json``, best image) and
  the ways back into the source scene (:func:`source_params`, :func:`blender_script`).
* :mod:`.cli` -- the ``rendergrad olat capture|optimize|apply`` commands.

The OLAT *renderer* (the basis and its relighting) is :mod:`rendergrad.renderers.olat`.
This package is the ``olat_tools`` plugin: it registers the ``olat`` command.
"""

from .capture import Capture, capture, light_name
from .cli import rendergrad_add_commands
from .export import _load_multipliers, blender_script, contact_sheet, source_params, write_outputs
from .objective import CandidateObjective, random_resized_crop
from .optimize import OlatADResult, configure_tonemap, olat_ad

__all__ = ["Capture", "capture", "light_name", "OlatADResult", "CandidateObjective", "configure_tonemap", "olat_ad",
           "random_resized_crop", "contact_sheet", "source_params", "blender_script", "write_outputs",
           "rendergrad_add_commands"]
