"""Rule 4: the same scenario and seed give the same trace, in any process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAR = ROOT / "scenarios" / "star.toml"


def _digest(seed: int, hashseed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaski_actors.cli",
            "simulate",
            str(STAR),
            "--seed",
            str(seed),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    match = re.search(r"^trace-digest: ([0-9a-f]{64})$", result.stdout, re.M)
    assert match, result.stdout
    return match.group(1)


def test_same_seed_same_digest_whatever_the_hash_seed() -> None:
    digests = {_digest(3, hashseed) for hashseed in ("0", "1", "12345")}
    assert len(digests) == 1


def test_another_seed_gives_another_run() -> None:
    assert _digest(3, "0") != _digest(4, "0")
