"""The pytest plugin: its fixtures, its backends, its assertion helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from chaski_actors import Node
from chaski_actors.errors import ConfigError
from chaski_actors.faults import Fault
from chaski_actors.pytest_plugin import Backend
from chaski_actors.testing import assert_delivered, assert_paired_within

ROOT = Path(__file__).resolve().parent.parent


def test_delivery_assertions_say_what_went_wrong() -> None:
    assert_delivered([1, 2, 3], [1, 2, 3])
    assert_delivered([1, 2, 3], [3, 1, 2], ordered=False)
    with pytest.raises(AssertionError, match=r"1 lost, e\.g\. \[2\]"):
        assert_delivered([1, 2, 3], [1, 3])
    with pytest.raises(AssertionError, match="1 delivered more than once"):
        assert_delivered([1, 2], [1, 2, 2])
    with pytest.raises(AssertionError, match=r"never sent, e\.g\. \[9\]"):
        assert_delivered([1, 2], [1, 2, 9])
    with pytest.raises(AssertionError, match="out of order from position 1"):
        assert_delivered([1, 2, 3], [1, 3, 2])


def test_the_default_graph_is_the_suite_line(chaski_graph: nx.Graph[str]) -> None:
    assert sorted(chaski_graph.edges(data="latency")) == [
        ("a", "b", 0.01),
        ("b", "c", 0.02),
    ]


def test_pairing_within_a_deadline_in_virtual_time(chaski_sim: Backend) -> None:
    async def main(network: Any) -> tuple[float, str]:
        async with (
            Node(network.runtime("a"), "a") as a,
            Node(network.runtime("c"), "c") as c,
        ):
            await a.connect(*c.address)
            took = await assert_paired_within(a, "c", 1.0)
            try:
                await assert_paired_within(a, "b", 0.25)
            except AssertionError as exc:
                return took, str(exc)
            return took, ""

    took, message = chaski_sim.run(main)
    assert took == 0.0
    assert message == "a not paired with b within 0.25 s (no link)"


def test_a_partition_from_the_fault_timeline(chaski_backend: Backend) -> None:
    # a is cut off from the rest from 0.2 s to 0.7 s; a message sent in
    # between arrives after the heal, on both backends.
    cut = Fault(at_s=0.2, kind="partition", hosts=("a",), duration_s=0.5)

    async def main(network: Any) -> tuple[float, float]:
        # Fault times count from zero in the simulator and from when the
        # delayed loopback was made on real sockets.
        origin = getattr(network, "started_at", 0.0)
        async with (
            Node(network.runtime("a"), "a") as a,
            Node(network.runtime("c"), "c") as c,
        ):
            await c.subscribe("t")
            await a.connect(*c.address)
            await assert_paired_within(a, "c", 0.15)
            await a.runtime.sleep(origin + 0.3 - a.runtime.now())
            await a.publish("t", "late")
            message = await c.receive()
            return message.sent_at - origin, message.received_at - origin

    sent, received = chaski_backend.run(main, faults=[cut])
    assert 0.3 <= sent < 0.7
    assert received >= 0.7


def test_unknown_backends_and_bad_faults_are_refused() -> None:
    with pytest.raises(ValueError, match="'sim' or 'real'"):
        Backend("quantum")

    async def main(network: Any) -> None:
        return None

    with pytest.raises(ConfigError, match="faults"):
        Backend("sim").run(main, faults=[{"at_s": 1.0, "kind": "meteor"}])


def test_the_plugin_is_registered_by_the_package() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    entry = 'chaski_actors = "chaski_actors.pytest_plugin"'
    assert f"[project.entry-points.pytest11]\n{entry}" in pyproject


def test_the_readme_shows_the_example_that_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "tests" / "test_plugin_example.py").read_text()
    assert f"```python\n{example}```" in readme
