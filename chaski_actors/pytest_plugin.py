"""A pytest plugin for tests of your own actors, on a simulated or real network.

Installing chaski-actors installs this plugin (the ``pytest11`` entry point),
so its fixtures are there in any test suite without a ``conftest.py``:

``chaski_backend``
    Parametrised over ``"sim"`` and ``"real"``: a test that takes it runs
    twice, once per backend. ``chaski_backend.run(main, graph=..., seed=...,
    faults=[...])`` runs the coroutine ``main(network)`` to its end and
    returns its result; ``network.runtime(host)`` gives each host's runtime.
``chaski_sim``, ``chaski_real``
    The same, for one backend only.
``chaski_graph``
    The topology ``run`` uses when it is given none: ``a --10 ms-- b --20
    ms-- c``. Override the fixture in a module or ``conftest.py`` to change
    it for a whole file.

Under ``sim`` the graph's edges give latency, loss and so on, time is
virtual and the run replays from its seed. Under ``real`` every host runs
on loopback; with ``faults`` (or ``delays=True``) the streams go through
:class:`~chaski_actors.real.delay.DelayedLoopback`, which injects the
graph's latencies and plays link faults and partitions in real time.
Faults are :class:`~chaski_actors.faults.Fault` records or the tables of
a scenario's ``[[faults]]`` array, times in seconds from the start.

The assertion helpers live in :mod:`chaski_actors.testing`:
``assert_delivered(sent, received)`` (nothing lost, nothing twice, order
kept) and ``await assert_paired_within(node, peer, seconds)``.

The backends are imported when a test first runs on them, so a suite that
never asks for these fixtures pays nothing for the plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

import networkx as nx
import pytest

from .faults import Fault, parse_faults

__all__ = ["Backend", "default_graph"]

T = TypeVar("T")

# Fixed, distinct latencies, so that a test can tell which path a frame took.
_LATENCY = {("a", "b"): 0.010, ("b", "c"): 0.020}
# Wall seconds a real run may take before it is stopped; a test that needs
# more is waiting for something that will not come. Arbitrary.
_REAL_LIMIT_S = 30.0


def default_graph() -> nx.Graph[str]:
    """a --10 ms-- b --20 ms-- c"""
    graph: nx.Graph[str] = nx.Graph()
    for (u, v), latency in _LATENCY.items():
        graph.add_edge(u, v, latency=latency)
    return graph


FaultLike = Fault | Mapping[str, Any]


class Backend:
    """Runs a coroutine ``main(network)`` on one backend and returns its result.

    ``network.runtime(host)`` gives a runtime per host: hosts of the graph
    under ``sim``, all on loopback under ``real``.
    """

    def __init__(self, kind: str, graph: nx.Graph[Any] | None = None) -> None:
        if kind not in ("sim", "real"):
            raise ValueError(f"a backend is 'sim' or 'real', not {kind!r}")
        self.kind = kind
        self.graph = graph if graph is not None else default_graph()

    def __repr__(self) -> str:
        return f"<Backend {self.kind} hosts={list(self.graph.nodes)}>"

    @property
    def simulated(self) -> bool:
        return self.kind == "sim"

    def run(
        self,
        main: Callable[[Any], Coroutine[Any, Any, T]],
        *,
        graph: nx.Graph[Any] | None = None,
        seed: int = 0,
        faults: Iterable[FaultLike] = (),
        delays: bool = False,
        limit: float | None = None,
    ) -> T:
        """Run ``main(network)`` to its end; see the module essay."""
        graph = graph if graph is not None else self.graph
        timeline = _faults(faults)
        if self.kind == "sim":
            from .sim.faults import FaultTimeline
            from .sim.harness import DEFAULT_LIMIT, run_sim

            def setup(network: Any) -> None:
                FaultTimeline(network).schedule(timeline)

            return run_sim(
                main,
                graph,
                seed=seed,
                limit=limit or DEFAULT_LIMIT,
                setup=setup if timeline else None,
            )
        if timeline or delays:
            from .real.delay import run_delayed

            return run_delayed(
                main, graph, seed=seed, faults=timeline, limit=limit or _REAL_LIMIT_S
            )
        from .real.harness import run_real

        return run_real(main, seed=seed, limit=limit or _REAL_LIMIT_S)


def _faults(faults: Iterable[FaultLike]) -> tuple[Fault, ...]:
    items = list(faults)
    tables = [dict(f) for f in items if not isinstance(f, Fault)]
    parsed = parse_faults(tables, "faults") if tables else ()
    given = [f for f in items if isinstance(f, Fault)]
    return tuple(sorted((*given, *parsed), key=lambda f: f.at_s))


@pytest.fixture
def chaski_graph() -> nx.Graph[Any]:
    """The topology ``Backend.run`` uses when given none; override at will."""
    return default_graph()


@pytest.fixture(params=["sim", "real"])
def chaski_backend(
    request: pytest.FixtureRequest, chaski_graph: nx.Graph[Any]
) -> Backend:
    """Each backend in turn: the test runs once on ``sim``, once on ``real``."""
    return Backend(request.param, chaski_graph)


@pytest.fixture
def chaski_sim(chaski_graph: nx.Graph[Any]) -> Backend:
    return Backend("sim", chaski_graph)


@pytest.fixture
def chaski_real(chaski_graph: nx.Graph[Any]) -> Backend:
    return Backend("real", chaski_graph)
