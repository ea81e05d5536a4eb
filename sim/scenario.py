"""Running a scenario file on the simulated network."""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter
from typing import Any

from chaski_actors.metrics import LatencySummary
from chaski_actors.scenario import Recorder, Scenario, build_graph, play

from .harness import run_sim
from .network import NetworkStatistics, SimNetwork

__all__ = ["SimReport", "simulate"]


@dataclass(frozen=True, slots=True)
class SimReport:
    scenario: str
    seed: int
    hosts: int
    edges: int
    simulated_s: float
    wall_s: float
    recorder: Recorder
    network: NetworkStatistics
    trace_digest: str
    trace_events: int

    def summaries(self) -> dict[str, LatencySummary | None]:
        return self.recorder.summaries()


def simulate(scenario: Scenario, *, seed: int | None = None) -> SimReport:
    """Run ``scenario`` in virtual time and report what the actors saw."""
    seed = scenario.seed if seed is None else seed
    graph = build_graph(scenario)
    recorder = Recorder()
    state: dict[str, Any] = {}

    async def main(network: SimNetwork) -> None:
        state["network"] = network
        await play(network, graph, scenario, recorder)

    limit = scenario.duration_s + scenario.drain_s + 60.0
    started = perf_counter()
    run_sim(main, graph, seed=seed, limit=limit)
    wall_s = perf_counter() - started
    network: SimNetwork = state["network"]
    return SimReport(
        scenario=scenario.name,
        seed=seed,
        hosts=graph.number_of_nodes(),
        edges=graph.number_of_edges(),
        simulated_s=network.now(),
        wall_s=wall_s,
        recorder=recorder,
        network=network.statistics(),
        trace_digest=network.trace.digest(),
        trace_events=network.trace.count,
    )
