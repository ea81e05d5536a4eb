"""The runnable examples in scenarios/ work on both backends, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

EXPECTED = {
    "streamer_hello.py": [
        "reading 4: 24 C from sensor",
        "telemetry: 50 sent as datagrams",
        "file: hello.txt (22000 bytes) arrived at hello.txt",
        "identical: True",
        "streamer_hello: OK",
    ],
    "remote_hello.py": [
        "hello, newcomer",
        "2 + 3 = 5",
        "greeted so far: 1",
        "a remote error arrives typed: ZeroDivisionError: division by zero",
        "private names are refused: greeter._secret",
        "remote_hello: OK",
    ],
}


@pytest.mark.parametrize("backend", ["sim", "real"])
@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_example_runs(example: str, backend: str) -> None:
    result = subprocess.run(
        [sys.executable, str(SCENARIOS / example), "--backend", backend],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for line in EXPECTED[example]:
        assert line in result.stdout, result.stdout
    assert f"backend: {backend}" in result.stdout


def test_simulated_examples_print_exact_virtual_times() -> None:
    result = subprocess.run(
        [sys.executable, str(SCENARIOS / "remote_hello.py"), "--backend", "sim"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    # 25 ms each way on the simulated topology.
    assert "one call, one round trip: 50.0 ms" in result.stdout


@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_simulated_examples_replay_exactly(example: str) -> None:
    outputs = []
    for hash_seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, str(SCENARIOS / example), "--backend", "sim"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
