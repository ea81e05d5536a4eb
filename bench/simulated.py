"""The simulated backend: wall-clock speed against bare simpy, and its memory.

Message rate. N hosts on a ring (each host has two neighbours, 1 ms links).
Every host publishes to each neighbour at ``rate_hz`` (on a topic only that
neighbour subscribes to, so discovery adds no links beyond the ring's);
every host consumes what arrives. After the links are up, the routes have
settled (below) and one warm-up window has passed, the simulation is
advanced window by window, and each window gives the number of messages
delivered in it over the wall-clock seconds it took.

The baseline does the same message passing with bare simpy: a process per
host that wakes every ``1 / rate_hz`` and hands a message (the same 16
bytes) to each neighbour over a modelled link, a timeout per message for the
link's transit whose callback puts the message into the neighbour's
``simpy.Store``, and a process per host that takes from its store. The link
model is the part of chaski's that this run exercises: the edge's latency,
serialisation at its bandwidth if it has one, and first-in first-out
delivery per direction. That is about three simpy events per delivered
message, and no framing, sessions, acknowledgements, routing or
back-pressure: it is what the simulator's own machinery and the protocol
stack cost against doing nothing but moving messages.

Between the two, ``streams`` runs the same pattern on the simulated runtime
alone: a stream per ring edge, each host writing its 16 bytes to each
neighbour and a reader per stream, with no protocol above. Its rate against
simpy's is what the simulator's own machinery costs; chaski's against it is
what the protocol stack (framing, sessions, acknowledgements, topic routing,
the inbox) adds. For both, the simulator counts the events it serves per
delivered message.

Before the first window the simulation runs ``SETTLE_S`` simulated seconds
more, so that discovery's route gossip, a one-off cost at start-up whose
length grows with the ring until ``discovery_reach`` bounds it, is over:
what is measured is the steady message rate, as the baseline's is.

Faster than real time. 1,000 hosts on a random 4-regular graph, each
publishing a heartbeat to its neighbours once a second: simulated seconds
per wall-clock second.

Each size runs in its own process, so its peak resident memory can be read
from the operating system without earlier sizes muddying it.
"""

from __future__ import annotations

import gc
import resource
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any

import networkx as nx
import simpy

from ._procs import Workers
from ._stats import Figure

__all__ = ["HeartbeatCase", "RateCase", "run_heartbeat", "run_memory", "run_rate"]

LATENCY_S = 0.001
# Simulated seconds run before the warm-up window of a rate case. A ring's
# routes settle within discovery_reach (32) flushes of 0.1 s after the links
# are up; at N=1,000 route frames were still a quarter of the events in the
# third second and gone in the fifth.
SETTLE_S = 5.0


@dataclass(frozen=True, slots=True)
class RateCase:
    subject: str  # "chaski", "streams" or "simpy"
    hosts: int
    rate_hz: float
    window_s: float  # simulated seconds per measured window
    rounds: int
    deadline_s: float = 600.0


@dataclass(frozen=True, slots=True)
class HeartbeatCase:
    hosts: int
    window_s: float
    rounds: int
    deadline_s: float = 600.0


def run_rate(case: RateCase) -> list[Figure]:
    with Workers(case.deadline_s) as workers:
        result_q = workers.queue()
        workers.start(_rate_worker, case, result_q)
        rates, events, peak_rss = workers.get(result_q, "simulation result")
    name = f"N={case.hosts:,}"
    figures = [Figure("sim", name, case.subject, "delivered msg/s", "msg/s", rates)]
    if events:
        figures.append(
            Figure(
                "sim",
                name,
                case.subject,
                "events per message",
                "events",
                events,
                higher_is_better=False,
            )
        )
    figures.append(
        Figure(
            "sim",
            name,
            case.subject,
            "peak RSS",
            "MiB",
            (peak_rss / 2**20,),
            higher_is_better=False,
        )
    )
    return figures


def run_heartbeat(case: HeartbeatCase) -> list[Figure]:
    with Workers(case.deadline_s) as workers:
        result_q = workers.queue()
        workers.start(_heartbeat_worker, case, result_q)
        factors, peak_rss = workers.get(result_q, "heartbeat result")
    name = f"heartbeat, N={case.hosts:,}"
    return [
        Figure("sim", name, "chaski", "x real time", "sim s / wall s", factors),
        # Every host is a topic here, and each node keeps a route per topic
        # per overlay neighbour: the memory a large many-topic network costs,
        # which the ring of the memory figure does not show.
        Figure(
            "sim",
            name,
            "chaski",
            "peak RSS",
            "MiB",
            (peak_rss / 2**20,),
            higher_is_better=False,
        ),
    ]


def run_memory(hosts: int, deadline_s: float = 300.0) -> list[Figure]:
    with Workers(deadline_s) as workers:
        result_q = workers.queue()
        workers.start(_memory_worker, hosts, result_q)
        per_node = workers.get(result_q, "memory result")
    return [
        Figure(
            "memory",
            f"sim, N={hosts:,}",
            "chaski",
            "bytes per node",
            "B",
            (per_node,),
            higher_is_better=False,
        )
    ]


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- chaski ------------------------------------------------------------------


class _Counting:
    delivered = 0


def _ring(hosts: int) -> nx.Graph[str]:
    graph: nx.Graph[str] = nx.Graph()
    names = [f"h{i}" for i in range(hosts)]
    for i, name in enumerate(names):
        graph.add_edge(name, names[(i + 1) % hosts], latency=LATENCY_S)
    return graph


def _regular(hosts: int) -> nx.Graph[str]:
    raw = nx.random_regular_graph(4, hosts, seed=1)
    graph: nx.Graph[str] = nx.Graph()
    for u, v in raw.edges():
        graph.add_edge(f"h{u}", f"h{v}", latency=LATENCY_S)
    return graph


def _inbox(host: str) -> str:
    # A topic per host, so that discovery pairs nobody beyond the graph's
    # edges: the links are exactly the edges, as in the simpy baseline.
    return f"to-{host}"


def build_chaski(graph: nx.Graph[str], rate_hz: float) -> tuple[Any, _Counting]:
    """A simulated network with one linked, publishing node per host."""
    from chaski_actors import ClosedResourceError, Node
    from chaski_actors.sim import SimNetwork

    network = SimNetwork(graph, seed=1)
    counting = _Counting()
    nodes: dict[str, Node] = {}

    async def consume(node: Node) -> None:
        try:
            while True:
                await node.receive()
                counting.delivered += 1
        except ClosedResourceError:
            return

    async def publish(node: Node) -> None:
        runtime = node.runtime
        interval = 1.0 / rate_hz
        topics = [_inbox(n) for n in graph.neighbors(node.name)]
        await runtime.sleep(runtime.random.uniform(0.0, interval))
        while True:
            for topic in topics:
                await node.publish(topic, b"x" * 16)
            await runtime.sleep(interval)

    async def setup() -> None:
        for host in graph.nodes:
            node = Node(network.runtime(host), host)
            await node.start()
            await node.subscribe(_inbox(host))
            nodes[host] = node
        for u, v in graph.edges():
            dialer, target = (u, v) if u < v else (v, u)
            await nodes[dialer].connect(*nodes[target].address)
        for node in nodes.values():
            node.runtime.spawn(consume(node), name="consume")
            node.runtime.spawn(publish(node), name="publish")

    task = network.spawn(setup(), name="setup")
    network.env.run(until=task._done._event)
    return network, counting


def _advance_chaski(network: Any, until: float) -> None:
    network.run(until=until)


def build_streams(graph: nx.Graph[str], rate_hz: float) -> tuple[Any, _Counting]:
    """The same pattern over bare simulated streams: no protocol above them."""
    from chaski_actors.sim import SimNetwork

    network = SimNetwork(graph, seed=1)
    counting = _Counting()
    port = 1

    async def read(stream: Any) -> None:
        while data := await stream.receive():
            # A read may hold several messages that arrived together.
            counting.delivered += len(data) // 16

    async def write(runtime: Any, streams: list[Any]) -> None:
        interval = 1.0 / rate_hz
        await runtime.sleep(runtime.random.uniform(0.0, interval))
        while True:
            for stream in streams:
                await stream.send(b"x" * 16)
            await runtime.sleep(interval)

    outgoing: dict[str, list[Any]] = {host: [] for host in graph.nodes}

    async def accepted(stream: Any) -> None:
        outgoing[stream.local_address[0]].append(stream)
        await read(stream)

    async def setup() -> None:
        for host in graph.nodes:
            await network.runtime(host).listen(host, port, accepted)
        for u, v in graph.edges():
            dialer, target = (u, v) if u < v else (v, u)
            runtime = network.runtime(dialer)
            stream = await runtime.connect(target, port)
            outgoing[dialer].append(stream)
            runtime.spawn(read(stream), name="read")
        for host in graph.nodes:
            runtime = network.runtime(host)
            runtime.spawn(write(runtime, outgoing[host]), name="write")

    task = network.spawn(setup(), name="setup")
    network.env.run(until=task._done._event)
    return network, counting


# -- bare simpy --------------------------------------------------------------


class _Wire:
    """One direction of a baseline link: where it delivers, and its queue."""

    __slots__ = ("bandwidth", "free_at", "last_arrival", "latency", "store")

    def __init__(self, store: simpy.Store, attrs: dict[str, Any]) -> None:
        self.store = store
        self.latency = float(attrs.get("latency", LATENCY_S))
        self.bandwidth = float(attrs.get("bandwidth", 0.0))
        self.free_at = 0.0
        self.last_arrival = 0.0


def build_simpy(graph: nx.Graph[str], rate_hz: float) -> tuple[Any, _Counting]:
    """The same message passing with bare simpy processes and stores."""
    env = simpy.Environment()
    counting = _Counting()
    stores = {host: simpy.Store(env) for host in graph.nodes}
    wires = {
        host: [_Wire(stores[n], graph.edges[host, n]) for n in graph.neighbors(host)]
        for host in graph
    }

    def deliver(event: simpy.Event) -> None:
        store, message = event.value
        store.put(message)

    def send(wire: _Wire, message: bytes) -> None:
        now = env.now
        start = now
        if wire.bandwidth:
            start = max(now, wire.free_at) + len(message) * 8 / wire.bandwidth
            wire.free_at = start
        # In order per direction, as a stream's segments are.
        arrival = max(start + wire.latency, wire.last_arrival)
        wire.last_arrival = arrival
        transit = env.timeout(arrival - now, (wire.store, message))
        transit.callbacks.append(deliver)

    def publisher(host: str, phase: float) -> Any:
        interval = 1.0 / rate_hz
        yield env.timeout(phase * interval)
        while True:
            for wire in wires[host]:
                send(wire, b"x" * 16)
            yield env.timeout(interval)

    def consumer(store: simpy.Store) -> Any:
        while True:
            yield store.get()
            counting.delivered += 1

    for index, host in enumerate(graph.nodes):
        env.process(publisher(host, (index * 0.618) % 1.0))
        env.process(consumer(stores[host]))
    return env, counting


def _measure(
    advance: Any,
    start: float,
    window: float,
    rounds: int,
    counting: _Counting,
    *,
    served: Any = None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Delivered messages per wall-clock second in each window, and events
    served per delivered message if ``served()`` counts them."""
    rates, events = [], []
    at = start
    for index in range(rounds + 1):
        before = counting.delivered
        events_before = served() if served else 0
        gc.collect()
        started = time.perf_counter()
        at += window
        advance(at)
        elapsed = time.perf_counter() - started
        delivered = counting.delivered - before
        if index:  # the first window is the warm-up
            rates.append(delivered / elapsed)
            if served and delivered:
                events.append((served() - events_before) / delivered)
    return tuple(rates), tuple(events)


def _rate_worker(case: RateCase, result_q: Any) -> None:
    graph = _ring(case.hosts)
    if case.subject == "simpy":
        env, counting = build_simpy(graph, case.rate_hz)
        rates, events = _measure(env.run, env.now, case.window_s, case.rounds, counting)
    else:
        build = build_chaski if case.subject == "chaski" else build_streams
        network, counting = build(graph, case.rate_hz)
        # Steady state, as the baseline has no start-up: topic routes
        # spread one overlay hop per flush, up to discovery_reach hops, and
        # until they have the windows measure gossip as well as messages.
        network.run(until=network.now() + SETTLE_S)
        rates, events = _measure(
            lambda until: _advance_chaski(network, until),
            network.now(),
            case.window_s,
            case.rounds,
            counting,
            served=lambda: network.env.served,
        )
    result_q.put((rates, events, _peak_rss()))


def _heartbeat_worker(case: HeartbeatCase, result_q: Any) -> None:
    network, _counting = build_chaski(_regular(case.hosts), 1.0)
    factors = []
    at = network.now()
    for index in range(case.rounds + 1):
        started = time.perf_counter()
        at += case.window_s
        network.run(until=at)
        elapsed = time.perf_counter() - started
        if index:
            factors.append(case.window_s / elapsed)
    result_q.put((tuple(factors), _peak_rss()))


def _memory_worker(hosts: int, result_q: Any) -> None:
    # Imports and first-use caches are paid before the snapshot, not per node.
    build_chaski(_ring(4), 1.0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    network, _counting = build_chaski(_ring(hosts), 1.0)
    network.run(until=network.now() + 2.0)
    gc.collect()
    after = tracemalloc.take_snapshot()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    tracemalloc.stop()
    result_q.put(grown / hosts)
