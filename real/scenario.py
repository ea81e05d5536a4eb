"""Running a scenario file on real sockets, every node on this machine.

The nodes play the same :func:`~chaski_actors.scenario.play` coroutine as in
the simulator, over asyncio and loopback TCP. Loopback has none of the
scenario's latencies, so by default the streams go through
:class:`~chaski_actors.real.delay.DelayedLoopback`, which holds bytes for
the delays of the scenario's links (see that module for what it models and
what it does not). ``delays=False`` runs on bare loopback. The same layer
plays the scenario's fault timeline (``[[faults]]`` and the seed's
``[chaos]`` schedule, as the simulator would draw it) on the links;
crashes and restarts are left out and counted in the report's
``backend_stats.skipped_faults``, and bare loopback plays no faults.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any

from chaski_actors.report import build_report
from chaski_actors.scenario import Progress, Recorder, Scenario, build_graph, play
from chaski_actors.sim.scenario import scenario_faults

from .delay import DelayedLoopback
from .harness import LoopbackNetwork

__all__ = ["run_scenario"]

# Seconds a run may take beyond duration and drain before it is stopped:
# linking and stopping take well under a second on loopback; arbitrary.
_GRACE_S = 30.0
# How often the progress callback is told the time.
_TICK_S = 0.1


def run_scenario(
    scenario: Scenario,
    *,
    seed: int | None = None,
    progress: Progress | None = None,
    delays: bool = True,
) -> dict[str, Any]:
    """Run ``scenario`` on loopback and return its report."""
    seed = scenario.seed if seed is None else seed
    graph = build_graph(scenario)
    recorder = Recorder()
    stats: dict[str, Any] = {"injected_delays": delays}
    faults = scenario_faults(scenario, seed)

    async def main() -> float:
        network: DelayedLoopback | LoopbackNetwork
        if delays:
            network = DelayedLoopback(graph, seed=seed)
        else:
            network = LoopbackNetwork(seed=seed)
        loop = asyncio.get_running_loop()
        started = loop.time()
        expected = scenario.duration_s + scenario.drain_s
        helpers = []
        if progress is not None:
            helpers.append(loop.create_task(_tick(progress, started, expected)))
        if isinstance(network, DelayedLoopback):
            helpers.append(loop.create_task(network.play_faults(faults)))
        try:
            async with asyncio.timeout(expected + _GRACE_S):
                await play(network, graph, scenario, recorder)
        finally:
            for helper in helpers:
                helper.cancel()
        # Fault times count from when the network was made, which is a
        # little before the nodes were up and the recorder's clock began.
        origin = getattr(network, "started_at", started)
        offset = recorder.start - origin
        if isinstance(network, DelayedLoopback):
            stats["delayed_streams"] = network.streams
            stats["delayed_chunks"] = network.chunks
            stats["retransmissions"] = network.retransmissions
            stats["skipped_faults"] = network.skipped_faults
            recorder.fault_windows = [
                (f.at_s - offset, (f.heals_at or f.at_s) - offset, f.what)
                for f in faults
                if f.kind not in ("crash", "restart")
            ]
        return loop.time() - recorder.start

    wall = perf_counter()
    clock_s = asyncio.run(main())
    return build_report(
        scenario=scenario,
        backend="real",
        seed=seed,
        graph=graph,
        recorder=recorder,
        clock_s=clock_s,
        wall_s=perf_counter() - wall,
        backend_stats=stats,
    )


async def _tick(progress: Progress, started: float, expected: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        progress(min(loop.time() - started, expected), expected)
        await asyncio.sleep(_TICK_S)
