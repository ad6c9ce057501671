"""The engine stays made of small named parts: no function in engine/ longer than about 60 lines."""

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"
LIMIT = 60


def test_no_engine_function_is_longer_than_60_lines():
    long = []
    for path in sorted(ENGINE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LIMIT:
                    long.append(f"{path.relative_to(ENGINE.parent)}:{node.lineno} {node.name}() has {lines} lines")
    assert not long, f"split these into small named parts (at most {LIMIT} lines each): " + "; ".join(long)
