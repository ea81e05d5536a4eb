"""Running a scenario file on the simulated network."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from time import perf_counter
from typing import Any

import networkx as nx

from chaski_actors.faults import Fault
from chaski_actors.metrics import LatencySummary
from chaski_actors.report import build_report
from chaski_actors.scenario import Cast, Progress, Recorder, Scenario, build_graph

from .faults import FaultTimeline, chaos_schedule
from .harness import SimulationStuckError
from .network import NetworkStatistics, SimNetwork

__all__ = ["Progress", "SimReport", "scenario_faults", "sim_report", "simulate"]

# How many times a run reports its progress: often enough for a smooth bar,
# rarely enough that stepping the simulation costs nothing measurable.
_PROGRESS_STEPS = 200
# Simulated seconds a run may take beyond duration and drain (linking,
# stopping) before it counts as stuck; arbitrary, and generous.
_GRACE_S = 60.0


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
    graph: nx.Graph[str] | None = None
    faults: tuple[Fault, ...] = ()

    def summaries(self) -> dict[str, LatencySummary | None]:
        return self.recorder.summaries()


def simulate(
    scenario: Scenario, *, seed: int | None = None, progress: Progress | None = None
) -> SimReport:
    """Run ``scenario`` in virtual time and report what the actors saw."""
    seed = scenario.seed if seed is None else seed
    graph = build_graph(scenario)
    recorder = Recorder()
    network = SimNetwork(graph, seed=seed)
    faults = scenario_faults(scenario, seed)
    cast = Cast(network, graph, scenario, recorder)
    timeline = FaultTimeline(network, on_crash=cast.crashed, on_restart=cast.restarted)
    timeline.schedule(faults)

    started = perf_counter()
    _run(network, cast.play(), scenario, progress)
    wall_s = perf_counter() - started
    recorder.fault_windows = [
        (f.at_s - recorder.start, (f.heals_at or f.at_s) - recorder.start, f.what)
        for f in faults
    ]
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
        graph=graph,
        faults=faults,
    )


def scenario_faults(scenario: Scenario, seed: int) -> tuple[Fault, ...]:
    """The scenario's own faults and, with a [chaos] table, seed's random ones."""
    if scenario.chaos is None:
        return scenario.faults
    graph = build_graph(scenario)
    links = [(str(u), str(v)) for u, v in graph.edges()]
    drawn = chaos_schedule(scenario.chaos, seed, list(graph.nodes), links)
    return tuple(sorted((*scenario.faults, *drawn), key=lambda f: f.at_s))


def _run(
    network: SimNetwork, main: Any, scenario: Scenario, progress: Progress | None
) -> None:
    """Run ``main`` to its end, in steps, reporting progress after each.

    Stepping does not change the run: simpy processes the same events in the
    same order whether it is asked to stop in between or not.
    """
    expected = scenario.duration_s + scenario.drain_s
    limit = expected + _GRACE_S
    task = network.spawn(main, name="main")
    env = network.env
    done = task._done._event
    step = expected / _PROGRESS_STEPS
    while not task.done() and network.now() < limit:
        until = min(network.now() + step, limit)
        env.run(until=env.any_of([done, env.timeout(until - network.now())]))
        if progress is not None:
            progress(min(network.now(), expected), expected)
    if not task.done():
        raise SimulationStuckError(
            f"scenario {scenario.name} did not finish within {limit} simulated "
            f"seconds (now {network.now():.3f} s)"
        )
    task.result()


def sim_report(scenario: Scenario, result: SimReport) -> dict[str, Any]:
    """The run as a report (see :mod:`chaski_actors.report`)."""
    assert result.graph is not None
    stats: dict[str, Any] = asdict(result.network)
    stats["trace_digest"] = result.trace_digest
    stats["trace_events"] = result.trace_events
    return build_report(
        scenario=scenario,
        backend="sim",
        seed=result.seed,
        graph=result.graph,
        recorder=result.recorder,
        clock_s=result.simulated_s - result.recorder.start,
        wall_s=result.wall_s,
        backend_stats=stats,
    )
