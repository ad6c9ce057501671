"""Image size, one way for every renderer: ``64``, ``[height, width]`` or ``{height = , width = }``.

Lists are always ``[height, width]`` (the order of an image tensor ``[H, W, C]``); a table names
both, so a run file reads the same whichever renderer it targets.
"""

from __future__ import annotations

from typing import Any, Mapping

from .errors import ConfigError


def parse_resolution(value: Any, who: str) -> tuple[int, int]:
    """``(height, width)`` from an int, a ``[height, width]`` pair or a ``{height, width}`` table."""
    hint = "give an int, [height, width] or { height = H, width = W }"
    if isinstance(value, Mapping):
        extra = set(value) - {"height", "width"}
        if extra or len(value) != 2:
            raise ConfigError(f"{who}: resolution table needs exactly the keys height and width "
                              f"(got {sorted(value)}); {hint}")
        h, w = value["height"], value["width"]
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        h, w = value
    elif isinstance(value, int) and not isinstance(value, bool):
        h = w = value
    else:
        raise ConfigError(f"{who}: resolution {value!r} is not understood; {hint}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (h, w)) or h < 1 or w < 1:
        raise ConfigError(f"{who}: resolution must be positive integers, got {value!r}; {hint}")
    return h, w
