"""Shared fixtures: one test body, run on both backends."""

from __future__ import annotations

import networkx as nx
import pytest
from pki import Pki

# The plugin that users get with the package runs this suite's tests too.
from chaski_actors.pytest_plugin import Backend, default_graph

__all__ = ["LATENCY", "Backend", "line_graph"]

# Fixed, distinct latencies, so that a test can tell which path a frame took.
LATENCY = {("a", "b"): 0.010, ("b", "c"): 0.020}


def pytest_configure(config: pytest.Config) -> None:
    # An environment installed before the plugin's entry point existed does
    # not load it by itself; load it here so the fixtures are there anyway.
    if not config.pluginmanager.has_plugin("chaski_actors"):
        config.pluginmanager.import_plugin("chaski_actors.pytest_plugin")


def line_graph() -> nx.Graph[str]:
    """a --10 ms-- b --20 ms-- c (the plugin's default topology)."""
    return default_graph()


@pytest.fixture
def backend(chaski_backend: Backend) -> Backend:
    """Each backend in turn; the name this suite's tests have always used."""
    return chaski_backend


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates for security tests, generated once per session."""
    return Pki(tmp_path_factory.mktemp("pki"))
