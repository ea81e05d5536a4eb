"""Memory of an idle real link: what Python allocates per linked pair of nodes.

One hub node and ``links`` client nodes share one process and event loop;
every client links to the hub. tracemalloc compares the heap after all the
nodes have started with the heap after all the links are up and idle, so the
figure is what one link costs at both of its ends (its streams, protocol
state, reader tasks and buffers), not what a node costs. Kernel socket
buffers are not Python allocations and are not counted.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

from ._procs import Workers
from ._stats import Figure

__all__ = ["run_link_memory"]


def run_link_memory(links: int, deadline_s: float = 120.0) -> list[Figure]:
    with Workers(deadline_s) as workers:
        result_q = workers.queue()
        workers.start(_worker, links, result_q)
        per_link = workers.get(result_q, "link memory")
    return [
        Figure(
            "memory",
            f"real, {links} idle links",
            "chaski",
            "bytes per link",
            "B",
            (per_link,),
            higher_is_better=False,
        )
    ]


def _worker(links: int, result_q: Any) -> None:
    result_q.put(asyncio.run(_measure(links)))


async def _measure(links: int) -> float:
    from chaski_actors import Node, Settings
    from chaski_actors.real import RealRuntime

    # The default max_connections (64) would refuse most of the clients.
    hub = Node(RealRuntime(), "hub", settings=Settings(max_connections=links + 8))
    await hub.start()
    clients = [Node(RealRuntime(), f"c{i}") for i in range(links)]
    for client in clients:
        await client.start()
    # One link first, so that first-use caches are not charged to the rest.
    warm = Node(RealRuntime(), "warm")
    await warm.start()
    await warm.connect(*hub.address)

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for client in clients:
        await client.connect(*hub.address)
    while len(hub.links) < links + 1:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()

    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    for node in [*clients, warm, hub]:
        await node.stop()
    return grown / links
