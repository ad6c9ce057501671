"""rendergrad benchmarks: ``python -m benchmarks [NAME ...]`` runs the modules named (all by default).

Every module ``benchmarks/NAME.py`` with a ``main(argv) -> int`` function is a benchmark.
"""
