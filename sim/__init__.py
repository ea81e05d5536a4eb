"""The simulated backend: actors on a simpy network built from a networkx graph.

    net = SimNetwork(nx.path_graph(3), seed=7)
    runtime = net.runtime("0")

Everything runs in virtual time, reproducibly from the seed.
"""

from ._kernel import Kernel, SimFuture, SimTask
from ._latency import Latency, parse_latency
from .network import LinkStatistics, NetworkStatistics, SimNetwork, Trace, derive_seed
from .runtime import SimRuntime, SimStream

__all__ = [
    "Kernel",
    "Latency",
    "LinkStatistics",
    "NetworkStatistics",
    "SimFuture",
    "SimNetwork",
    "SimRuntime",
    "SimStream",
    "SimTask",
    "Trace",
    "derive_seed",
    "parse_latency",
]
