"""Rule 1 of the design: backend-neutral code imports no I/O, clock or entropy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

NEUTRAL = Path(__file__).resolve().parent.parent / "chaski_actors"
FORBIDDEN = {"asyncio", "simpy", "socket", "ssl", "time", "random", "uuid", "selectors"}
# Names that would reach the same things by another door.
FORBIDDEN_FROM = {("os", "urandom"), ("secrets", "token_bytes")}


def _imports(path: Path) -> list[tuple[str, str | None, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.module, alias.name, node.lineno) for alias in node.names]
    return found


def _neutral_modules() -> list[Path]:
    return sorted(NEUTRAL.rglob("*.py"))


@pytest.mark.parametrize("path", _neutral_modules(), ids=lambda p: p.name)
def test_neutral_module_imports_no_backend(path: Path) -> None:
    bad = [
        f"{path.name}:{line} imports {module}{'.' + name if name else ''}"
        for module, name, line in _imports(path)
        if module.split(".")[0] in FORBIDDEN or (module, name) in FORBIDDEN_FROM
    ]
    assert not bad, "backend-neutral code must ask the runtime instead: " + "; ".join(
        bad
    )


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import asyncio\nfrom time import monotonic\nfrom os import urandom\n"
    )
    modules = [m for m, _n, _l in _imports(bad)]
    assert modules == ["asyncio", "time", "os"]


def test_no_pickle_anywhere() -> None:
    root = NEUTRAL.parent
    for folder in ("chaski_actors", "sim", "real"):
        for path in (root / folder).rglob("*.py"):
            for module, _name, line in _imports(path):
                assert module.split(".")[0] not in {"pickle", "marshal", "shelve"}, (
                    f"{path}:{line}"
                )
