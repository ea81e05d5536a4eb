"""The README's examples run as tests."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)


def test_quick_start_has_exactly_two_commands() -> None:
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    assert all(len(b.strip().splitlines()) == 1 for b in blocks)
    assert "simulate scenarios/" in blocks[0]
    assert "pytest" in blocks[1]


def test_ci_runs_the_second_command() -> None:
    ci = (README.parent / ".ci" / "run").read_text()
    assert _bash_blocks()[1].strip() in ci


def test_python_examples_print_what_they_promise(
    capsys: object,
) -> None:
    import contextlib
    import io

    for block in _python_blocks():
        promised = re.findall(r"print\(.*\)\s+# (.*)$", block, re.M)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
        printed = out.getvalue().strip().splitlines()
        assert printed[-len(promised) :] == promised
