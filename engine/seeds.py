"""One vocabulary for renderers with Monte Carlo noise: how seeds are given to the renders.

* ``per_render`` — a new seed for every image: independent noise.
* ``per_batch`` — one seed per batch, shared by its images: common random numbers, so the
  difference between the two renders of an antithetic pair is the parameters' and not the noise's.
* ``fixed`` — always the run's ``seed``: every render of the same parameters is the same image.

``independent`` and ``common`` (older Mitsuba names) are accepted as ``per_render`` and ``per_batch``.
"""

from __future__ import annotations

from .errors import ConfigError

SEED_MODES = ("per_render", "per_batch", "fixed")
ALIASES = {"independent": "per_render", "common": "per_batch"}


def parse_seed_mode(value: str, who: str) -> str:
    """The canonical seed mode for ``value`` (an alias becomes its canonical name)."""
    mode = ALIASES.get(value, value)
    if mode not in SEED_MODES:
        raise ConfigError(f"{who}: seed_mode must be one of {', '.join(SEED_MODES)}, got {value!r}")
    return mode
