"""Shared fixtures: one test body, run on both backends."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import networkx as nx
import pytest
from pki import Pki

from chaski_actors.real.harness import run_real
from chaski_actors.sim.harness import run_sim

T = TypeVar("T")

# Fixed, distinct latencies, so that a test can tell which path a frame took.
LATENCY = {("a", "b"): 0.010, ("b", "c"): 0.020}


def line_graph() -> nx.Graph[str]:
    """a --10 ms-- b --20 ms-- c"""
    graph: nx.Graph[str] = nx.Graph()
    for (u, v), latency in LATENCY.items():
        graph.add_edge(u, v, latency=latency)
    return graph


class Backend:
    """Runs a coroutine ``main(network)`` on one backend and returns its result.

    ``network.runtime(host)`` gives a runtime per host: hosts of the graph
    under ``sim``, all on loopback under ``real``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"<Backend {self.kind}>"

    @property
    def simulated(self) -> bool:
        return self.kind == "sim"

    def run(
        self,
        main: Callable[[Any], Coroutine[Any, Any, T]],
        *,
        graph: nx.Graph[Any] | None = None,
        seed: int = 0,
    ) -> T:
        if self.kind == "sim":
            return run_sim(
                main, graph if graph is not None else line_graph(), seed=seed
            )
        return run_real(main, seed=seed, limit=30.0)


@pytest.fixture(params=["sim", "real"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return Backend(request.param)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates for security tests, generated once per session."""
    return Pki(tmp_path_factory.mktemp("pki"))
