"""Running a scenario file on real sockets, every node on this machine.

The nodes play the same :func:`~chaski_actors.scenario.play` coroutine as in
the simulator, over asyncio and loopback TCP. Loopback has none of the
scenario's latencies, so by default the streams go through
:class:`~chaski_actors.real.delay.DelayedLoopback`, which holds bytes for
the delays of the scenario's links (see that module for what it models and
what it does not). ``delays=False`` runs on bare loopback.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any

from chaski_actors.report import build_report
from chaski_actors.scenario import Progress, Recorder, Scenario, build_graph, play

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

    async def main() -> float:
        network: DelayedLoopback | LoopbackNetwork
        if delays:
            network = DelayedLoopback(graph, seed=seed)
        else:
            network = LoopbackNetwork(seed=seed)
        loop = asyncio.get_running_loop()
        started = loop.time()
        expected = scenario.duration_s + scenario.drain_s
        ticker = None
        if progress is not None:
            ticker = loop.create_task(_tick(progress, started, expected))
        try:
            async with asyncio.timeout(expected + _GRACE_S):
                await play(network, graph, scenario, recorder)
        finally:
            if ticker is not None:
                ticker.cancel()
        if isinstance(network, DelayedLoopback):
            stats["delayed_streams"] = network.streams
            stats["delayed_chunks"] = network.chunks
            stats["retransmissions"] = network.retransmissions
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
