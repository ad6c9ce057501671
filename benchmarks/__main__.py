"""``python -m benchmarks [NAME ...] [-- ARGS]``: run benchmark modules by name.

Any module ``benchmarks/NAME.py`` that defines ``main(argv)`` is a benchmark; no list to keep
up to date. Arguments after the names go to each benchmark (``python -m benchmarks estimators
--quick``); ``python -m benchmarks --list`` shows what is there.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"__main__", "__init__", "tasks"}


def discover() -> dict[str, object]:
    """``{name: module}`` for every module here with a callable ``main``."""
    if str(HERE.parent) not in sys.path:
        sys.path.insert(0, str(HERE.parent))
    found = {}
    for info in pkgutil.iter_modules([str(HERE)]):
        if info.name in NOT_BENCHMARKS or info.name.startswith("_") or info.ispkg:
            continue
        try:
            mod = importlib.import_module(f"benchmarks.{info.name}")
        except Exception as e:  # one broken benchmark must not hide the others
            print(f"benchmarks: cannot import {info.name}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        if callable(getattr(mod, "main", None)):
            found[info.name] = mod
    return found


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    available = discover()
    if argv[:1] in (["--list"], ["-l"], ["-h"], ["--help"]):
        print(__doc__)
        print("benchmarks:", ", ".join(sorted(available)) or "(none)")
        return 0
    names = []
    while argv and not argv[0].startswith("-"):
        names.append(argv.pop(0))
    if argv[:1] == ["--"]:
        argv.pop(0)
    unknown = [n for n in names if n not in available]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {', '.join(sorted(available))}", file=sys.stderr)
        return 2
    rc = 0
    for name in names or sorted(available):
        print(f"== benchmark {name} ==", flush=True)
        rc = max(rc, int(available[name].main(argv) or 0))
    return rc


if __name__ == "__main__":
    sys.exit(main())
