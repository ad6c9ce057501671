"""Run seeds: integers in ``[0, 2**63)``, each naming its own random stream.

torch's CPU generator (a Mersenne Twister) is seeded from 32 bits, so ``manual_seed(2**32)``
and ``manual_seed(0)`` give the same numbers. Seeds below ``2**32`` seed the generators
directly (so existing results stay bit-identical); larger seeds are first hashed to 32 bits
with numpy's SeedSequence, so no two seeds related by a simple reduction share a stream.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

SEED_LIMIT = 2 ** 63


def check_seed(seed: Any, what: str = "seed") -> int:
    """Refuse anything but an integer in ``[0, 2**63)``, naming ``what``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"{what} must be an integer in [0, 2**63), got {seed!r}")
    return seed


def generator_seed(seed: int) -> int:
    """The 32-bit seed that torch's generators actually use for run seed ``seed``."""
    seed = check_seed(seed)
    if seed < 2 ** 32:
        return seed
    import numpy as np
    return int(np.random.SeedSequence(seed).generate_state(1, np.uint32)[0])
