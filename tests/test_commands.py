"""The console commands: ca, enrol and node, as a person would run them."""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

from chaski_actors import Node, TlsConfig
from chaski_actors.cli import main
from chaski_actors.testing import eventually

PASSPHRASE = "a passphrase for tests"
# Generous: a subprocess must import the package on a busy machine.
DEADLINE_S = 30.0


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("CHASKI_CA_PASSPHRASE", PASSPHRASE)
    return {**os.environ, "CHASKI_CA_PASSPHRASE": PASSPHRASE}


def _start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "chaski_actors.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )


class _Lines:
    """Lines of a subprocess's pipe, read without blocking past a deadline.

    Reads the file descriptor directly: a buffered text wrapper can hold
    whole lines that ``select`` does not know about.
    """

    def __init__(self, pipe: IO[str] | None) -> None:
        assert pipe is not None
        self._fd = pipe.fileno()
        self._buffer = b""
        self.seen: list[str] = []

    def wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            while b"\n" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\n", 1)
                line = raw.decode()
                self.seen.append(line)
                match = re.search(pattern, line)
                if match is not None:
                    return match
            left = deadline - time.monotonic()
            ready = (
                select.select([self._fd], [], [], max(left, 0))[0] if left > 0 else []
            )
            data = os.read(self._fd, 65536) if ready else b""
            if not data:
                raise AssertionError(f"no line matching {pattern!r} in {self.seen}")
            self._buffer += data


def _interrupt(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=DEADLINE_S)
    finally:
        process.kill()
    return process.returncode, err


def test_ca_init_issue_revoke(env: dict[str, str], tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    assert main(["ca", "init", "--dir", str(ca)]) == 0
    assert (
        main(["ca", "issue", "--dir", str(ca), "--name", "n1", "--ip", "10.0.0.1"]) == 0
    )
    assert main(["ca", "revoke", "--dir", str(ca), "--name", "n1"]) == 0
    names = sorted(p.name for p in ca.iterdir())
    assert names == ["ca.json", "ca.key", "ca.pem", "crl.pem", "n1.key", "n1.pem"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in ca.iterdir())
    assert (ca / "n1.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert main(["ca", "init", "--dir", str(ca)]) == 2  # never overwrites a root
    assert main(["ca", "revoke", "--dir", str(ca), "--name", "nobody"]) == 2


def test_node_runs_until_interrupted(env: dict[str, str], tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    for name in ("n1", "me"):
        if name == "n1":
            assert main(["ca", "init", "--dir", str(ca)]) == 0
        assert main(["ca", "issue", "--dir", str(ca), "--name", name]) == 0
    process = _start(
        "node",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "n1",
        "--tls-dir",
        str(ca),
        "--subscribe",
        "greetings",
        env=env,
    )
    try:
        errors, output = _Lines(process.stderr), _Lines(process.stdout)
        found = errors.wait_for(r"listening on 127\.0\.0\.1:(\d+)")
        port = int(found.group(1))

        async def publish() -> None:
            from chaski_actors.real import RealRuntime

            runtime = RealRuntime()
            tls = TlsConfig.from_directory(str(ca), "me")
            async with Node(runtime, "me", tls=tls) as me:
                await me.connect("127.0.0.1", port)
                await eventually(runtime, lambda: "greetings" in me.links["n1"].topics)
                await me.publish("greetings", "hello from a test")

        asyncio.run(asyncio.wait_for(publish(), DEADLINE_S))
        printed = output.wait_for(r"greetings")
        assert printed.string == "greetings me 'hello from a test'"
        errors.wait_for(r"linked to me")
    finally:
        code, rest = _interrupt(process)
    assert code == 0
    assert "stopped" in rest


def test_ca_serve_and_enrol(env: dict[str, str], tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    assert main(["ca", "init", "--dir", str(ca)]) == 0
    process = _start(
        "ca", "serve", "--dir", str(ca), "--listen", "127.0.0.1:0", env=env
    )
    try:
        output = _Lines(process.stdout)
        fingerprint = output.wait_for(r"fingerprint: (\w+)").group(1)
        token = output.wait_for(r"token: (\w+)").group(1)
        port = output.wait_for(r"listening on [\d.]+:(\d+)").group(1)
        node = tmp_path / "node"
        command = ["enrol", "--ca", f"127.0.0.1:{port}", "--token", token]
        command += ["--fingerprint", fingerprint, "--name", "n2", "--dir", str(node)]
        assert main(command) == 0
        assert main(command) == 2  # the token is used up
    finally:
        code, _ = _interrupt(process)
    assert code == 0
    assert sorted(p.name for p in node.iterdir()) == [
        "ca.pem",
        "crl.pem",
        "n2.key",
        "n2.pem",
    ]
