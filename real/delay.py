"""Loopback with the topology's delays: a small delay and fault layer.

Loopback answers in microseconds; a scenario asks for 5 ms in a data
centre and 80 ms across a continent. :class:`DelayedLoopback` hands out
runtimes whose client streams hold every chunk of bytes for the delay that
the simulated network would give it, in both directions, so that a run on
real sockets shows the scenario's latencies and can be set against a
simulated run of the same file.

How. A listener records which host owns its port. A stream that a host
opens to another host's port is wrapped in a :class:`DelayedStream`, and
the client end does all the delaying: outgoing chunks wait for the delay
from client to server before they are written, incoming chunks wait for
the delay from server to client before ``receive`` returns them. The server
end is a plain stream. Connecting waits one sampled round trip, as a TCP
handshake over the modelled path would. The delay of a chunk follows the
simulator's rules: per edge of the lowest-latency path, a sampled latency,
a uniform jitter, and for each loss drawn one retransmission timeout of
``max(200 ms, 2 x latency)``; chunks of a stream never overtake each other.

Faults. :meth:`DelayedLoopback.set_link` takes a link down or up or changes
its latency, and :meth:`DelayedLoopback.play_faults` applies a fault
timeline (:class:`~chaski_actors.faults.Fault`) at its times: links down
and up, partitions (both ways or one way, between the two sides' hosts
whatever path their traffic would take) and degraded links, each undone
after its ``duration_s``. While no path exists, chunks wait (a stalled
stream, as in the simulator), and they go on when the path comes back.
Crashes and restarts are not played: a host here is a node in this very
process, and stopping it is the scenario's business, not the network's;
they are counted in ``skipped_faults``.

What it does not model: bandwidth (loopback is faster than any modelled
link, and frames are small), queueing between streams that share a link,
and datagrams, which travel undelayed. The random draws come from a seeded
generator, but asyncio's scheduling is not deterministic, so two real runs
with one seed are alike, not identical.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from random import Random
from typing import Any, TypeVar

import networkx as nx

from chaski_actors.errors import BrokenResourceError, ClosedResourceError
from chaski_actors.faults import Fault
from chaski_actors.runtime import (
    Address,
    Listener,
    Stream,
    StreamHandler,
    TlsConfig,
    derive_seed,
)
from chaski_actors.sim._latency import Latency, parse_latency

from .runtime import RealRuntime

__all__ = ["DelayedLoopback", "DelayedRuntime", "DelayedStream", "run_delayed"]

T = TypeVar("T")

# Bytes a delayed direction holds before the writer waits (outgoing) or the
# reader stops reading the socket (incoming): a default TCP window, as the
# simulator uses, so back-pressure sets in at the same point.
_WINDOW = 256 * 1024
# Linux's minimum retransmission timeout, as in the simulator.
_MIN_RTO = 0.2


class _Edge:
    __slots__ = ("base", "down", "jitter", "latency", "loss", "up")

    def __init__(self, attrs: dict[str, Any]) -> None:
        self.latency: Latency = parse_latency(attrs.get("latency", 0.001))
        self.jitter = float(attrs.get("jitter", 0.0) or 0.0)
        self.loss = float(attrs.get("loss", 0.0) or 0.0)
        self.up = bool(attrs.get("up", True))
        # What undoing a fault goes back to, and how many faults hold the
        # link down now: overlapping faults leave it up only when all end.
        self.base = (self.latency, self.jitter, self.loss)
        self.down = 0


class DelayedLoopback:
    """One :class:`DelayedRuntime` per host of ``graph``, all on 127.0.0.1.

    The mirror of ``SimNetwork.runtime(host)`` for real sockets; create it
    inside a running event loop.
    """

    kind = "real"

    def __init__(self, graph: nx.Graph[Any], *, seed: int = 0) -> None:
        self.seed = seed
        self.rng = Random(derive_seed(seed, "network"))
        # The origin of fault times: the loop's clock when the network was
        # made, as a simulated network's clock starts at zero.
        self.started_at = asyncio.get_running_loop().time()
        self._edges: dict[tuple[str, str], _Edge] = {}
        for u, v, attrs in graph.edges(data=True):
            self._edges[str(u), str(v)] = _Edge(attrs)
            self._edges[str(v), str(u)] = _Edge(attrs)
        self._hosts = [str(n) for n in graph.nodes]
        self._owners: dict[int, str] = {}
        self._runtimes: dict[str, DelayedRuntime] = {}
        self._changed = asyncio.Event()
        self._paths: dict[tuple[str, str], list[_Edge] | None] = {}
        # Partitions in force: (one side, other side or None for the rest,
        # one way).
        self._partitions: list[tuple[frozenset[str], frozenset[str] | None, bool]] = []
        self.skipped_faults = 0
        self.streams = 0
        self.chunks = 0
        self.retransmissions = 0

    def __repr__(self) -> str:
        return f"<DelayedLoopback hosts={len(self._hosts)} streams={self.streams}>"

    def runtime(self, host: str) -> DelayedRuntime:
        runtime = self._runtimes.get(host)
        if runtime is None:
            seed = derive_seed(self.seed, "app", host)
            runtime = self._runtimes[host] = DelayedRuntime(self, host, seed=seed)
        return runtime

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def owner(self, port: int) -> str | None:
        return self._owners.get(port)

    def set_link(
        self,
        u: str,
        v: str,
        *,
        up: bool | None = None,
        latency: object | None = None,
        both_ways: bool = True,
    ) -> None:
        """Change a link; streams waiting for a path look again."""
        pairs = [(u, v), (v, u)] if both_ways else [(u, v)]
        for pair in pairs:
            edge = self._edges[pair]
            if up is not None:
                edge.up = up
            if latency is not None:
                edge.latency = parse_latency(latency)
        self._changed_now()

    def delay(self, source: str, target: str) -> float | None:
        """A sampled one-way delay from source to target; None: no path now."""
        if self._cut(source, target):
            return None
        path = self._path(source, target)
        if path is None:
            return None
        total = 0.0
        for edge in path:
            total += edge.latency.sample(self.rng)
            if edge.jitter:
                total += self.rng.random() * edge.jitter
            while edge.loss and self.rng.random() < edge.loss:
                self.retransmissions += 1
                total += max(_MIN_RTO, 2 * edge.latency.mean)
        self.chunks += 1
        return total

    async def wait_for_path(self, source: str, target: str) -> float:
        """Wait until a path exists; return a delay sampled on it."""
        while True:
            delay = self.delay(source, target)
            if delay is not None:
                return delay
            await self._changed.wait()

    def _cut(self, source: str, target: str) -> bool:
        for side, others, one_way in self._partitions:
            if _across(side, others, source, target):
                return True
            if not one_way and _across(side, others, target, source):
                return True
        return False

    # -- fault timelines -------------------------------------------------------

    async def play_faults(self, faults: Iterable[Fault]) -> None:
        """Apply each fault at its ``at_s`` from :attr:`started_at`, and undo
        it after its ``duration_s``; returns when the last one is over."""
        loop = asyncio.get_running_loop()
        start = self.started_at
        events: list[tuple[float, int, bool, Fault]] = []
        for i, fault in enumerate(faults):
            events.append((fault.at_s, i, True, fault))
            if fault.heals_at is not None:
                events.append((fault.heals_at, i, False, fault))
        for when, _i, begin, fault in sorted(events, key=lambda e: e[:2]):
            await asyncio.sleep(max(0.0, start + when - loop.time()))
            if begin:
                self.apply(fault)
            else:
                self.undo(fault)

    def apply(self, fault: Fault) -> None:
        """Make ``fault`` happen now (see the module essay for what is played)."""
        kind = fault.kind
        if kind in ("link_down", "link_up"):
            assert fault.link is not None
            for edge in self._fault_edges(fault):
                edge.down = edge.down + 1 if kind == "link_down" else 0
        elif kind == "partition":
            self._partitions.append(_sides(fault))
        elif kind == "heal":
            if fault.hosts:
                self._partitions = [p for p in self._partitions if p != _sides(fault)]
            else:
                self._partitions.clear()
        elif kind == "degrade":
            for edge in self._fault_edges(fault):
                if fault.latency_s is not None:
                    edge.latency = parse_latency(fault.latency_s)
                if fault.loss is not None:
                    edge.loss = fault.loss
                if fault.jitter_s is not None:
                    edge.jitter = fault.jitter_s
        else:
            self.skipped_faults += 1
            return
        self._changed_now()

    def undo(self, fault: Fault) -> None:
        """End a fault that had a duration."""
        kind = fault.kind
        if kind == "link_down":
            for edge in self._fault_edges(fault):
                edge.down = max(0, edge.down - 1)
        elif kind == "partition":
            sides = _sides(fault)
            if sides in self._partitions:
                self._partitions.remove(sides)
        elif kind == "degrade":
            for edge in self._fault_edges(fault):
                edge.latency, edge.jitter, edge.loss = edge.base
        else:
            return
        self._changed_now()

    def _fault_edges(self, fault: Fault) -> list[_Edge]:
        if fault.link is None:
            return list(self._edges.values())
        u, v = fault.link
        pairs = [(u, v)] if fault.one_way else [(u, v), (v, u)]
        return [self._edges[pair] for pair in pairs if pair in self._edges]

    def _changed_now(self) -> None:
        self._paths.clear()
        self._changed.set()
        self._changed = asyncio.Event()

    def _path(self, source: str, target: str) -> list[_Edge] | None:
        key = (source, target)
        if key not in self._paths:
            self._paths[key] = self._find_path(source, target)
        return self._paths[key]

    def _find_path(self, source: str, target: str) -> list[_Edge] | None:
        graph: nx.DiGraph[str] = nx.DiGraph()
        graph.add_nodes_from(self._hosts)
        for (u, v), edge in self._edges.items():
            if edge.up and not edge.down:
                graph.add_edge(u, v, weight=edge.latency.mean)
        try:
            hosts = nx.shortest_path(graph, source, target, weight="weight")
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            return None
        return [self._edges[a, b] for a, b in itertools.pairwise(hosts)]

    def _listening(self, port: int, host: str) -> None:
        self._owners[port] = host


def _across(
    side: frozenset[str], others: frozenset[str] | None, source: str, target: str
) -> bool:
    """Whether traffic from source to target goes from side to the others."""
    if source not in side:
        return False
    return target not in side if others is None else target in others


def _sides(fault: Fault) -> tuple[frozenset[str], frozenset[str] | None, bool]:
    others = None if fault.others is None else frozenset(fault.others)
    return frozenset(fault.hosts), others, fault.one_way


def run_delayed(
    main: Callable[[DelayedLoopback], Coroutine[Any, Any, T]],
    graph: nx.Graph[Any],
    *,
    seed: int = 0,
    faults: Iterable[Fault] = (),
    limit: float = 60.0,
) -> T:
    """Run ``main(network)`` over a :class:`DelayedLoopback` of ``graph``,
    playing ``faults`` from the start; TimeoutError after ``limit``."""

    async def bounded() -> T:
        network = DelayedLoopback(graph, seed=seed)
        player = asyncio.get_running_loop().create_task(network.play_faults(faults))
        try:
            async with asyncio.timeout(limit):
                return await main(network)
        finally:
            player.cancel()

    return asyncio.run(bounded())


class DelayedRuntime(RealRuntime):
    """A :class:`RealRuntime` whose streams to other hosts are delayed."""

    def __init__(self, network: DelayedLoopback, name: str, *, seed: int) -> None:
        super().__init__(seed=seed)
        self.network = network
        self.name = name

    async def listen(
        self,
        host: str,
        port: int,
        handler: StreamHandler,
        *,
        tls: TlsConfig | None = None,
        max_connections: int | None = None,
    ) -> Listener:
        listener = await super().listen(
            host, port, handler, tls=tls, max_connections=max_connections
        )
        self.network._listening(listener.address[1], self.name)
        return listener

    async def connect(
        self, host: str, port: int, *, tls: TlsConfig | None = None
    ) -> Stream:
        target = self.network.owner(port)
        if target is None or target == self.name:
            return await super().connect(host, port, tls=tls)
        # The handshake of TCP: one round trip before the stream is usable.
        there = await self.network.wait_for_path(self.name, target)
        back = await self.network.wait_for_path(target, self.name)
        await asyncio.sleep(there + back)
        inner = await super().connect(host, port, tls=tls)
        self.network.streams += 1
        return DelayedStream(inner, self, target)


class DelayedStream(Stream):
    """A client stream whose bytes take the modelled time in both directions."""

    def __init__(self, inner: Stream, runtime: DelayedRuntime, peer: str) -> None:
        self._inner = inner
        self._network = runtime.network
        self._local = runtime.name
        local = self._local
        self._peer = local
        self._peer = peer
        self._out: deque[tuple[float, bytes]] = deque()
        self._in: deque[tuple[float, bytes]] = deque()
        self._out_bytes = self._in_bytes = 0
        self._out_due = self._in_due = 0.0
        self._out_ready = asyncio.Event()
        self._out_space = asyncio.Event()
        self._in_ready = asyncio.Event()
        self._in_space = asyncio.Event()
        self._error: BaseException | None = None
        self._closing = False
        self._closed = False
        self._tasks = [
            runtime.spawn(self._send_loop(), name=f"delay-{local}-{peer}"),
            runtime.spawn(self._read_loop(), name=f"delay-{peer}-{local}"),
        ]

    def __repr__(self) -> str:
        return (
            f"<DelayedStream {self._local}->{self._peer} out={self._out_bytes} "
            f"in={self._in_bytes}>"
        )

    @property
    def local_address(self) -> Address:
        return self._inner.local_address

    @property
    def peer_address(self) -> Address:
        return self._inner.peer_address

    @property
    def peer_identity(self) -> str | None:
        return self._inner.peer_identity

    def _check(self) -> None:
        if self._closed or self._closing:
            raise ClosedResourceError("stream was closed")
        if self._error is not None:
            raise BrokenResourceError(str(self._error)) from self._error

    async def send(self, data: bytes) -> None:
        self._check()
        while self._out_bytes >= _WINDOW:
            self._out_space.clear()
            await self._out_space.wait()
            self._check()
        loop = asyncio.get_running_loop()
        self._out.append((loop.time(), bytes(data)))
        self._out_bytes += len(data)
        self._out_ready.set()

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                while not self._out:
                    if self._closing:
                        await self._inner.aclose()
                        return
                    self._out_ready.clear()
                    await self._out_ready.wait()
                sent_at, data = self._out[0]
                delay = await self._network.wait_for_path(self._local, self._peer)
                due = max(sent_at + delay, self._out_due)
                self._out_due = due
                await asyncio.sleep(max(0.0, due - loop.time()))
                self._out.popleft()
                self._out_bytes -= len(data)
                self._out_space.set()
                await self._inner.send(data)
        except (BrokenResourceError, ClosedResourceError) as exc:
            self._fail(exc)

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                while self._in_bytes >= _WINDOW:
                    self._in_space.clear()
                    await self._in_space.wait()
                data = await self._inner.receive(65536)
                delay = await self._network.wait_for_path(self._peer, self._local)
                due = max(loop.time() + delay, self._in_due)
                self._in_due = due
                self._in.append((due, data))
                self._in_bytes += len(data)
                self._in_ready.set()
                if not data:
                    return
        except (BrokenResourceError, ClosedResourceError) as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._in_ready.set()
        self._out_space.set()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        loop = asyncio.get_running_loop()
        while True:
            if self._closed or self._closing:
                raise ClosedResourceError("stream was closed")
            if self._in:
                due, data = self._in[0]
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                if not data:
                    return b""
                self._in.popleft()
                if len(data) > max_bytes:
                    self._in.appendleft((due, data[max_bytes:]))
                    data = data[:max_bytes]
                self._in_bytes -= len(data)
                self._in_space.set()
                return data
            if self._error is not None:
                raise BrokenResourceError(str(self._error)) from self._error
            self._in_ready.clear()
            await self._in_ready.wait()

    async def aclose(self) -> None:
        """Close once what was sent has gone out, as a FIN follows the data."""
        if self._closing or self._closed:
            return
        self._closing = True
        self._out_ready.set()
        self._in_ready.set()
        self._tasks[1].cancel()

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        self._inner.abort()
        self._in_ready.set()
        self._out_space.set()
