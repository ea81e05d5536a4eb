"""The wheel installs the backends under chaski_actors, and nothing generic."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_maps_sim_and_real_under_the_package(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("chaski_actors-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert "chaski_actors/sim/__init__.py" in names
    assert "chaski_actors/real/__init__.py" in names
    assert "chaski_actors/py.typed" in names
    assert tops <= {"chaski_actors", wheel.name.split("-")[0] + "-0.1.0.dist-info"}


def test_the_console_script_is_declared() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert 'chaski-actors = "chaski_actors.cli:main"' in text
