"""Run one coroutine on a simulated network, to completion, in virtual time."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import networkx as nx

from chaski_actors.errors import ChaskiError

from .network import SimNetwork

T = TypeVar("T")

__all__ = ["SimulationStuckError", "run_sim"]

# An hour of simulated time is far beyond any test; reaching it means a hang.
DEFAULT_LIMIT = 3600.0


class SimulationStuckError(ChaskiError):
    """The main coroutine never finished: nothing left to do, or out of time."""


def run_sim(
    main: Callable[[SimNetwork], Coroutine[Any, Any, T]],
    graph: nx.Graph[Any],
    *,
    seed: int = 0,
    limit: float = DEFAULT_LIMIT,
    keep_trace: bool = False,
    setup: Callable[[SimNetwork], None] | None = None,
) -> T:
    """Build a network over ``graph``, run ``main(network)``, return its result.

    Raises :class:`SimulationStuckError` if ``main`` is still waiting when no event
    is left, or when ``limit`` simulated seconds have passed.
    """
    network = SimNetwork(graph, seed=seed, keep_trace=keep_trace)
    if setup is not None:
        # Before main starts: a fault timeline, say, that counts from zero.
        setup(network)
    task = network.spawn(main(network), name="main")
    done = task._done._event
    network.env.run(until=network.env.any_of([done, network.env.timeout(limit)]))
    if not task.done():
        raise SimulationStuckError(
            f"main did not finish within {limit} simulated seconds "
            f"(now {network.now():.3f} s)"
        )
    result: T = task.result()
    return result
