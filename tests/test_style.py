"""The code base is formatted, linted and type-checked as part of the suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["chaski_actors", "sim", "real", "tests", "scenarios", "bench"]


def _run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


def _existing() -> list[str]:
    return [s for s in SOURCES if (ROOT / s).exists()]


def test_ruff_format() -> None:
    result = _run(sys.executable, "-m", "ruff", "format", "--check", *_existing())
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_lint() -> None:
    result = _run(sys.executable, "-m", "ruff", "check", *_existing())
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict(tmp_path: Path) -> None:
    # Type-check the package as it is installed: sim/ and real/ become
    # chaski_actors.sim and chaski_actors.real, exactly as in a wheel.
    package = tmp_path / "chaski_actors"
    shutil.copytree(ROOT / "chaski_actors", package)
    shutil.copytree(ROOT / "sim", package / "sim")
    shutil.copytree(ROOT / "real", package / "real")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    result = _run(
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--config-file",
        str(tmp_path / "pyproject.toml"),
        "--cache-dir",
        str(ROOT / ".mypy_cache"),
        "-p",
        "chaski_actors",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
