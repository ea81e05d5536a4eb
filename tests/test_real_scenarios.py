"""Scenarios on real sockets, the delay layer, and comparing two runs."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import networkx as nx
import pytest

from chaski_actors import Node
from chaski_actors.cli import main
from chaski_actors.faults import Fault
from chaski_actors.real.delay import DelayedLoopback
from chaski_actors.real.scenario import run_scenario
from chaski_actors.report import check_report, load_report
from chaski_actors.scenario import load_scenario
from chaski_actors.testing import eventually

ROOT = Path(__file__).resolve().parent.parent


def _two_hosts(latency: float) -> nx.Graph[str]:
    graph: nx.Graph[str] = nx.Graph()
    graph.add_edge("a", "b", latency=latency)
    return graph


def test_delays_reach_loopback() -> None:
    async def main() -> tuple[float, float]:
        network = DelayedLoopback(_two_hosts(0.03), seed=1)
        async with (
            Node(network.runtime("a"), "a") as a,
            Node(network.runtime("b"), "b") as b,
        ):
            await b.subscribe("t")
            await a.connect(*b.address)
            await eventually(a.runtime, lambda: "t" in a.links["b"].topics)
            await a.publish("t", 1)
            message = await b.receive()
            rtt = (await a.ping("b"))[0]
            return message.latency, rtt

    latency, rtt = asyncio.run(main())
    # At least the modelled delay; the slack above it is scheduling on a
    # busy machine, bounded generously.
    assert 0.03 <= latency < 0.03 + 0.5
    assert 0.06 <= rtt < 0.06 + 0.5


def test_a_cut_link_stalls_and_heals() -> None:
    async def main() -> float:
        network = DelayedLoopback(_two_hosts(0.001), seed=1)
        async with (
            Node(network.runtime("a"), "a") as a,
            Node(network.runtime("b"), "b") as b,
        ):
            await b.subscribe("t")
            await a.connect(*b.address)
            await eventually(a.runtime, lambda: "t" in a.links["b"].topics)
            network.set_link("a", "b", up=False)
            cut_at = a.runtime.now()
            await a.publish("t", 1)
            b.runtime.spawn(_heal_later(network), name="heal")
            message = await b.receive()
            return message.received_at - cut_at

    waited = asyncio.run(main())
    assert waited >= 0.2


async def _heal_later(network: DelayedLoopback) -> None:
    await asyncio.sleep(0.2)
    network.set_link("a", "b", up=True)


def test_run_then_compare_with_the_simulation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    star = str(ROOT / "scenarios" / "star.toml")
    real, sim = tmp_path / "real", tmp_path / "sim"
    assert main(["run", star, "--duration", "1", "--out", str(real)]) == 0
    assert main(["simulate", star, "--duration", "1", "--out", str(sim)]) == 0
    capsys.readouterr()

    report = load_report(real)
    check_report(report)
    assert report["backend"] == "real"
    assert report["backend_stats"]["injected_delays"] is True
    assert report["topics"]["telemetry"]["delivered"] > 0
    # The injected 5 ms (plus up to 1 ms of jitter) is a floor for loopback.
    assert report["topics"]["telemetry"]["latency_ms"]["p50_ms"] >= 5.0
    for name in ("latency_cdf.png", "latency_timeline.png", "topology.png"):
        assert (real / name).stat().st_size > 10_000

    png = tmp_path / "cmp.png"
    assert main(["compare", str(sim), str(real), "--png", str(png)]) == 0
    table = capsys.readouterr().out
    assert "telemetry" in table and "p99_ms" in table and "b/a" in table
    assert png.read_bytes().startswith(b"\x89PNG")


SCENARIOS = sorted((ROOT / "scenarios").glob("*.toml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_scenario_runs_on_sockets(path: Path) -> None:
    # Convergence takes about a quarter of a second on an idle machine; the
    # margin is for a loaded one, where asyncio's scheduling slows it down.
    scenario = dataclasses.replace(load_scenario(path), duration_s=2.0, drain_s=0.6)
    report = run_scenario(scenario)

    check_report(report)
    assert report["convergence"]["initial_s"] is not None
    assert sum(t["delivered"] for t in report["topics"].values()) > 0


def test_the_delay_layer_plays_faults_as_the_simulator_does() -> None:
    graph: nx.Graph[str] = nx.Graph()
    graph.add_edge("a", "b", latency=0.01)
    graph.add_edge("b", "c", latency=0.02)
    one_way = Fault(at_s=0.0, kind="partition", hosts=("a",), one_way=True)
    slow = Fault(at_s=0.0, kind="degrade", link=("b", "c"), latency_s=0.5)
    down = Fault(at_s=0.0, kind="link_down", link=("a", "b"))
    crash = Fault(at_s=0.0, kind="crash", hosts=("c",))

    async def main() -> None:
        network = DelayedLoopback(graph, seed=1)
        assert network.delay("a", "c") == pytest.approx(0.03)

        network.apply(one_way)
        assert network.delay("a", "c") is None
        assert network.delay("c", "a") == pytest.approx(0.03)
        network.undo(one_way)

        network.apply(slow)
        assert network.delay("a", "c") == pytest.approx(0.51)
        network.undo(slow)
        assert network.delay("c", "b") == pytest.approx(0.02)

        network.apply(down)
        network.apply(down)
        network.undo(down)
        # Two overlapping outages: the link is back only when both end.
        assert network.delay("a", "b") is None
        network.undo(down)
        assert network.delay("a", "b") == pytest.approx(0.01)

        network.apply(crash)
        assert network.skipped_faults == 1

    asyncio.run(main())
