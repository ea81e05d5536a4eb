"""The simulated network: hosts and links of a networkx graph, moved by simpy.

Model
-----
Every node of the graph is a host; every edge is a pair of directed links
(one per direction, so a one-way fault can cut one and not the other). An
edge's attributes say how its links behave:

``latency``   seconds, or a distribution (see ``_latency``); default 1 ms
``jitter``    extra delay drawn uniformly from ``[0, jitter]`` seconds
``loss``      probability that a packet is lost on this link
``bandwidth`` bits per second; absent or 0 means unlimited
``up``        whether the link carries anything at all

A packet (a stream segment, a datagram, a connection request) follows the
lowest-mean-latency path of links that are up between live hosts. On each
directed link it waits until the link has finished serialising earlier
packets, takes ``size * 8 / bandwidth`` seconds to serialise, then travels for
a sampled latency plus jitter. So queues build up where traffic converges,
as on a real network.

The whole path is worked out when the packet is sent, in one step, which
costs one scheduled arrival per packet instead of one per hop. The price is that a
packet reserves a busy link in the order packets were *sent*, not the order
they *reach* that link; this only matters for multi-hop paths that cross
other traffic, and only by a serialisation time.

Streams behave like TCP. Segments of one connection arrive in order (a
segment never overtakes the one before it, whatever the jitter); a read
returns everything that has arrived, up to its limit, in one piece, so a
burst costs the reader one wake-up. A loss is
repaired by a retransmission and so shows up as delay: one retransmission
timeout (at least 200 ms, as Linux uses, doubling with each further loss)
per lost copy, added to the segment's arrival and not to the queues of the
hops after the loss, which other connections share (a segment lost six
times arrives 12.6 s late; booking the next hop until then stalled every
connection that crossed it). A segment whose path
is cut waits, with every later segment of its connection, until a path
exists again: a partition stalls a stream instead of failing it, and it is
keep-alive, above, that must notice. Datagrams behave like UDP: lost where a
link loses them, unordered, dropped when no path exists or the receiver's
queue is full.

Partitions separate hosts, not wires: a partition between two sets of hosts
blocks every packet whose source is in one set and whose destination is in
the other (one direction only for a one-way partition), wherever its path
runs, as a firewall rule on every host would. Two hosts on the same side
still reach each other even if their path crosses a host of the other side.
Under a one-way partition a stream's segments still arrive in the open
direction, but their acknowledgements cannot come back, so the sender's
window is not credited until the partition heals: the sender's writes stall
once a window's worth is outstanding, as a real TCP sender's would.

Hosts can crash and restart. A crash cancels every task of the host and
forgets its connections, listeners and datagram sockets; the peers of its
connections learn nothing until they next send, when the restarted host
answers with a reset (or, while it is down, nothing answers and the stream
stalls).

Determinism: the network draws from its own seeded generator, separate from
the applications' ones; hosts, links and connections are kept in insertion
order, never in sets, so the trace digest is stable across processes.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Callable, Coroutine, Hashable, Iterable
from dataclasses import dataclass
from random import Random
from typing import Any, Final

import networkx as nx
from simpy.events import PENDING

from chaski_actors.errors import (
    BrokenResourceError,
    ConfigError,
    ConnectError,
)
from chaski_actors.runtime import Address, StreamHandler, derive_seed

from ._kernel import Kernel, SimFuture
from ._latency import Latency, parse_latency

__all__ = [
    "LinkStatistics",
    "NetworkStatistics",
    "Partition",
    "SimNetwork",
    "Trace",
    "derive_seed",
]

# TCP/IP header bytes charged per segment against a link's bandwidth.
_SEGMENT_OVERHEAD: Final = 40
# UDP/IP header bytes charged per datagram.
_DATAGRAM_OVERHEAD: Final = 28
# The largest UDP payload over IPv4.
MAX_DATAGRAM: Final = 65507
# Linux's minimum retransmission timeout.
_MIN_RTO: Final = 0.2
# Linux retries a connection request after 1 s, then doubles; three tries
# keep a doomed connect short while still covering a brief outage.
_SYN_RETRIES: Final = (1.0, 2.0, 4.0)
# Receive window per direction of a stream; typical of a default TCP socket.
DEFAULT_WINDOW: Final = 256 * 1024
# What the wall clock reads at simulated time 0 (2025-01-01T00:00:00Z), for
# certificate validity. Fixed, not today's date, so that runs replay.
DEFAULT_EPOCH: Final = 1735689600.0

_FIN: Final = b""


class Trace:
    """An ordered record of what happened on the network, reduced to a digest.

    Lines are hashed in batches: hashing the concatenation of lines gives
    the digest that hashing them one by one would, at a fraction of the
    calls.
    """

    # Lines gathered before they are hashed.
    _BATCH: Final = 512

    def __init__(self, keep: bool = False) -> None:
        self._hash = hashlib.sha256()
        self._pending: list[str] = []
        self.count = 0
        self.lines: list[str] | None = [] if keep else None

    def record(self, time: float, kind: str, *fields: object) -> None:
        self._add(f"{time:.9f} {kind} {' '.join(map(str, fields))}\n")

    def segment(self, time: float, cid: int, source: str, size: int) -> None:
        """``record(time, "seg", cid, source, size)``, for the commonest line.

        ``_add`` written out: one line per segment that arrives.
        """
        line = f"{time:.9f} seg {cid} {source} {size}\n"
        pending = self._pending
        pending.append(line)
        self.count += 1
        if self.lines is not None:
            self.lines.append(line)
        if len(pending) >= self._BATCH:
            self._flush()

    def _add(self, line: str) -> None:
        pending = self._pending
        pending.append(line)
        self.count += 1
        if self.lines is not None:
            self.lines.append(line)
        if len(pending) >= self._BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._hash.update("".join(self._pending).encode())
            self._pending.clear()

    def digest(self) -> str:
        self._flush()
        return self._hash.hexdigest()


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    """Traffic over one directed link."""

    source: str
    target: str
    up: bool
    packets: int
    bytes: int
    lost: int


@dataclass(frozen=True, slots=True)
class NetworkStatistics:
    """Traffic over the whole simulated network."""

    hosts: int
    links: int
    connections: int
    segments: int
    segment_bytes: int
    datagrams: int
    datagrams_lost: int
    retransmissions: int
    stalled_segments: int


class _Hop:
    """One directed link and its transmit queue."""

    __slots__ = (
        "bandwidth",
        "bytes",
        "free_at",
        "jitter",
        "latency",
        "loss",
        "lost",
        "packets",
        "source",
        "target",
        "up",
    )

    def __init__(self, source: str, target: str, attrs: dict[str, Any]) -> None:
        self.source = source
        self.target = target
        self.latency: Latency = parse_latency(attrs.get("latency", 0.001))
        self.jitter = _non_negative(attrs, "jitter", source, target)
        self.loss = _non_negative(attrs, "loss", source, target)
        if self.loss >= 1:
            raise ConfigError(f"edge {source}-{target}: loss must be below 1")
        self.bandwidth = _non_negative(attrs, "bandwidth", source, target)
        self.up = bool(attrs.get("up", True))
        self.free_at = 0.0
        self.packets = 0
        self.bytes = 0
        self.lost = 0


def _non_negative(attrs: dict[str, Any], key: str, u: str, v: str) -> float:
    try:
        value = float(attrs.get(key, 0.0) or 0.0)
    except (TypeError, ValueError):
        raise ConfigError(
            f"edge {u}-{v}: {key} must be a number, got {attrs[key]!r}"
        ) from None
    if value < 0:
        raise ConfigError(f"edge {u}-{v}: {key} must be >= 0, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Partition:
    """The directed host pairs one call of :meth:`SimNetwork.partition` blocks."""

    pairs: tuple[tuple[str, str], ...]

    def __repr__(self) -> str:
        return f"<Partition of {len(self.pairs)} directed pairs>"


class _Pipe:
    """One direction of a simulated TCP connection."""

    __slots__ = (
        "back",
        "buffered",
        "chunks",
        "conn",
        "dead",
        "dst",
        "eof",
        "error",
        "in_flight",
        "incarnation",
        "key",
        "last_arrival",
        "path",
        "reader",
        "reverse",
        "routed",
        "sent",
        "src",
        "stalled",
        "unacked",
        "writer",
    )

    def __init__(
        self, conn: _Connection, src: str, dst: str, key: int, incarnation: int
    ) -> None:
        self.conn = conn
        self.key = key
        # Which life of the destination host this direction was opened with.
        self.incarnation = incarnation
        self.src = src
        self.dst = dst
        # Arrived, unread segments, and how many bytes they hold. A list, not
        # a deque: it is short, and an empty deque costs 700 bytes more, per
        # direction of every connection.
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.eof = False
        self.error: BaseException | None = None
        self.dead = False
        self.in_flight = 0
        # Bytes delivered whose acknowledgement a one-way partition holds back.
        self.unacked = 0
        self.last_arrival = 0.0
        # Segments waiting for a path, as (number, data) in sending order.
        self.stalled: list[tuple[int, bytes]] = []
        self.sent = 0
        # The routes both ways as of topology version ``routed``.
        self.path: list[_Hop] | None = None
        self.back: list[_Hop] | None = None
        self.routed = -1
        self.reader: SimFuture[None] | None = None
        self.writer: SimFuture[None] | None = None
        # The other direction of the same connection, to answer resets on.
        self.reverse: _Pipe | None = None

    def take(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of what arrived, in order (one segment: no copy)."""
        chunks = self.chunks
        first = chunks[0]
        size = len(first)
        if size >= max_bytes:
            if size > max_bytes:
                chunks[0] = first[max_bytes:]
                first = first[:max_bytes]
                size = max_bytes
            else:
                del chunks[0]
        elif len(chunks) == 1:
            chunks.clear()
        else:
            # A burst: as many whole segments as fit, then part of the next.
            count = 1
            while count < len(chunks) and size + len(chunks[count]) <= max_bytes:
                size += len(chunks[count])
                count += 1
            pieces = chunks[:count]
            if count < len(chunks) and size < max_bytes:
                chunk = chunks[count]
                cut = max_bytes - size
                pieces.append(chunk[:cut])
                chunks[count] = chunk[cut:]
                size = max_bytes
            del chunks[:count]
            first = b"".join(pieces)
        self.buffered -= size
        return first

    def unread(self, data: bytes) -> None:
        """Put ``data`` back in front of what is still to be read."""
        self.chunks.insert(0, data)
        self.buffered += len(data)

    def wake_reader(self) -> None:
        # The future stays, for the reader to reuse (SimFuture._reuse).
        reader = self.reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    def wake_writer(self) -> None:
        if self.writer is not None and not self.writer.done():
            self.writer.set_result(None)
        self.writer = None


class _Connection:
    __slots__ = ("cid", "client", "server")

    def __init__(self, cid: int, client: Address, server: Address) -> None:
        self.cid = cid
        self.client = client
        self.server = server


class SimNetwork:
    """A simulated network over a networkx graph; see the module essay.

    ``runtime(host)`` gives the :class:`~chaski_actors.runtime.Runtime` for one
    host. ``run(until)`` advances simulated time.
    """

    def __init__(
        self,
        graph: nx.Graph[Any],
        *,
        seed: int = 0,
        window: int = DEFAULT_WINDOW,
        keep_trace: bool = False,
        epoch: float = DEFAULT_EPOCH,
    ) -> None:
        if graph.number_of_nodes() == 0:
            raise ConfigError("the topology has no hosts")
        self.seed = seed
        self.kernel = Kernel()
        self.env = self.kernel.env
        self.trace = Trace(keep=keep_trace)
        self.rng = Random(derive_seed(seed, "network"))
        self.window = window
        self.epoch = epoch

        self._hosts: dict[str, Hashable] = {str(n): n for n in graph.nodes}
        if len(self._hosts) != graph.number_of_nodes():
            raise ConfigError("two hosts of the topology share a name")
        self._hops: dict[tuple[str, str], _Hop] = {}
        for u, v, attrs in graph.edges(data=True):
            su, sv = str(u), str(v)
            self._hops[su, sv] = _Hop(su, sv, attrs)
            if not graph.is_directed():
                self._hops[sv, su] = _Hop(sv, su, attrs)

        self._down_hosts: dict[str, None] = {}
        # Directed (source, destination) pairs that partitions block, each
        # with the number of partitions blocking it, so that overlapping
        # partitions heal independently.
        self._blocked: dict[tuple[str, str], int] = {}
        self._unacked: dict[int, _Pipe] = {}
        self._incarnation: dict[str, int] = dict.fromkeys(self._hosts, 0)
        self._version = 0
        self._routed: nx.DiGraph[str] | None = None
        self._routes: dict[tuple[str, str], list[_Hop] | None] = {}
        self._runtimes: dict[str, Any] = {}
        self._listeners: dict[Address, tuple[StreamHandler, Any]] = {}
        self._datagrams: dict[Address, Any] = {}
        self._pipes: dict[int, tuple[_Pipe, _Pipe]] = {}
        self._stalled: dict[int, _Pipe] = {}
        self._cids = itertools.count(1)
        self._ports: dict[str, itertools.count[int]] = {}
        self._stats = {
            "segments": 0,
            "segment_bytes": 0,
            "datagrams": 0,
            "datagrams_lost": 0,
            "retransmissions": 0,
        }
        self._fault_watchers: list[Callable[[str], None]] = []
        # Bound once: every segment's heap entry calls it.
        self._arrival = self._arrive

    # -- the public face -----------------------------------------------------

    @property
    def hosts(self) -> list[str]:
        return list(self._hosts)

    def now(self) -> float:
        return self.kernel.now()

    def runtime(self, host: str) -> Any:
        """The runtime for ``host`` (created on first use)."""
        from .runtime import SimRuntime

        if host not in self._hosts:
            raise ConfigError(f"no host {host!r} in the topology")
        runtime = self._runtimes.get(host)
        if runtime is None:
            runtime = self._runtimes[host] = SimRuntime(self, host)
        return runtime

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> Any:
        """Run a coroutine that belongs to no host (a scenario's driver)."""
        return self.kernel.spawn(coro, name)

    def run(self, until: float | None = None) -> None:
        """Advance simulated time to ``until`` (or until nothing is left)."""
        if until is None:
            self.env.run()
        else:
            self.env.run(until=until)

    def link(self, u: str, v: str) -> _Hop:
        try:
            return self._hops[u, v]
        except KeyError:
            raise ConfigError(f"no link {u}->{v} in the topology") from None

    def latency(self, u: str, v: str) -> float:
        """Mean one-way latency of the lowest-latency path from u to v."""
        path = self.route(u, v)
        if path is None:
            raise ConnectError(f"no path from {u} to {v}")
        return sum(hop.latency.mean for hop in path)

    def statistics(self) -> NetworkStatistics:
        return NetworkStatistics(
            hosts=len(self._hosts),
            links=len(self._hops),
            connections=len(self._pipes),
            stalled_segments=sum(len(p.stalled) for p in self._stalled.values()),
            **self._stats,
        )

    def link_statistics(self) -> list[LinkStatistics]:
        return [
            LinkStatistics(h.source, h.target, h.up, h.packets, h.bytes, h.lost)
            for h in self._hops.values()
        ]

    # -- faults --------------------------------------------------------------

    def set_link(
        self,
        u: str,
        v: str,
        *,
        up: bool | None = None,
        both_ways: bool = True,
        latency: object | None = None,
        loss: float | None = None,
        jitter: float | None = None,
    ) -> None:
        """Change a link (both directions unless ``both_ways`` is false)."""
        hops = [self.link(u, v)]
        if both_ways and (v, u) in self._hops:
            hops.append(self._hops[v, u])
        for hop in hops:
            if up is not None:
                hop.up = up
            if latency is not None:
                hop.latency = parse_latency(latency)
            if loss is not None:
                hop.loss = loss
            if jitter is not None:
                hop.jitter = jitter
        self.trace.record(self.now(), "link", u, v, up, latency, loss, jitter)
        self._topology_changed(f"link {u}-{v}")

    def crash(self, host: str) -> None:
        """Stop a host dead: its tasks, sockets and connections are gone."""
        if host in self._down_hosts:
            return
        self._down_hosts[host] = None
        self._incarnation[host] += 1
        self.trace.record(self.now(), "crash", host)

        for address in [a for a in self._listeners if a[0] == host]:
            del self._listeners[address]
        for address in [a for a in self._datagrams if a[0] == host]:
            self._datagrams.pop(address).close()
        # Connections are not touched here: the crashed host's ends die with
        # its tasks (its streams check the incarnation), and the peers learn
        # nothing until a segment of theirs reaches the restarted host.
        runtime = self._runtimes.get(host)
        if runtime is not None:
            runtime._crashed()
        self._topology_changed(f"crash {host}")

    def restart(self, host: str) -> None:
        """Bring a crashed host back, empty: actors must be started again."""
        if host not in self._down_hosts:
            return
        del self._down_hosts[host]
        self.trace.record(self.now(), "restart", host)
        runtime = self._runtimes.get(host)
        if runtime is not None:
            runtime._restarted()
        self._topology_changed(f"restart {host}")

    def partition(
        self,
        side: Iterable[str],
        other: Iterable[str] | None = None,
        *,
        one_way: bool = False,
    ) -> Partition:
        """Cut traffic between ``side`` and ``other`` (default: every other host).

        A one-way partition blocks only packets from ``side`` to ``other``.
        Returns a handle for :meth:`heal`; partitions may overlap.
        """
        a = self._known_hosts(side)
        b = self._known_hosts(other) if other is not None else None
        if b is None:
            b = [h for h in self._hosts if h not in a]
        pairs = [(u, v) for u in a for v in b if u != v]
        if not one_way:
            pairs += [(v, u) for u, v in pairs]
        handle = Partition(tuple(pairs))
        for pair in handle.pairs:
            self._blocked[pair] = self._blocked.get(pair, 0) + 1
        self.trace.record(self.now(), "partition", a, b, one_way)
        self._topology_changed(f"partition {a} {'->' if one_way else '|'} {b}")
        return handle

    def heal(self, partition: Partition) -> None:
        """Lift one partition; pairs that another partition blocks stay blocked."""
        for pair in partition.pairs:
            count = self._blocked.get(pair, 0)
            if count <= 1:
                self._blocked.pop(pair, None)
            else:
                self._blocked[pair] = count - 1
        self.trace.record(self.now(), "heal", len(partition.pairs))
        self._topology_changed("heal")

    def blocked(self, src: str, dst: str) -> bool:
        """Whether a partition blocks packets from ``src`` to ``dst``."""
        return (src, dst) in self._blocked

    def _known_hosts(self, hosts: Iterable[str]) -> list[str]:
        chosen = list(dict.fromkeys(hosts))
        unknown = [h for h in chosen if h not in self._hosts]
        if unknown:
            raise ConfigError(f"no host(s) {unknown} in the topology")
        return chosen

    def is_up(self, host: str) -> bool:
        return host not in self._down_hosts

    def incarnation(self, host: str) -> int:
        """How many times ``host`` has crashed: its streams die with each life."""
        return self._incarnation[host]

    def watch_faults(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(description)`` after every topology change."""
        self._fault_watchers.append(callback)

    def _topology_changed(self, what: str) -> None:
        self._version += 1
        self._routed = None
        self._routes.clear()
        for pipe in list(self._stalled.values()):
            self._retry(pipe)
        for pipe in list(self._unacked.values()):
            self._credit(pipe)
        for watcher in self._fault_watchers:
            watcher(what)

    # -- routing and transit -------------------------------------------------

    def route(self, src: str, dst: str) -> list[_Hop] | None:
        key = (src, dst)
        try:
            return self._routes[key]
        except KeyError:
            pass
        path = self._compute_route(src, dst)
        self._routes[key] = path
        return path

    def _compute_route(self, src: str, dst: str) -> list[_Hop] | None:
        if src in self._down_hosts or dst in self._down_hosts:
            return None
        if src == dst:
            return []
        if (src, dst) in self._blocked:
            return None
        graph = self._routed
        if graph is None:
            graph = self._routed = nx.DiGraph()
            graph.add_nodes_from(h for h in self._hosts if h not in self._down_hosts)
            graph.add_weighted_edges_from(
                (h.source, h.target, h.latency.mean)
                for h in self._hops.values()
                if h.up and graph.has_node(h.source) and graph.has_node(h.target)
            )
        try:
            nodes = nx.dijkstra_path(graph, src, dst)
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            return None
        return [self._hops[a, b] for a, b in itertools.pairwise(nodes)]

    def _transit(self, path: list[_Hop], size: int, reliable: bool) -> float | None:
        """Arrival time of a packet sent now along ``path``; None if lost.

        The time lost to retransmissions is added at the end, not on the hop
        that lost the packet: the copy that finally gets through occupies the
        later hops seconds after the first one would have, and charging the
        wait there would book those hops for the future, queueing every
        other connection that crosses them behind one unlucky segment.
        """
        t = self.env._now
        retransmitting = 0.0
        rng = self.rng
        for hop in path:
            start = t if t > hop.free_at else hop.free_at
            if hop.bandwidth:
                start += size * 8 / hop.bandwidth
                hop.free_at = start
            latency = hop.latency
            t = start + (
                latency.mean if latency.name == "fixed" else latency.sample(rng)
            )
            if hop.jitter:
                t += rng.random() * hop.jitter
            hop.packets += 1
            hop.bytes += size
            if hop.loss:
                rto = max(_MIN_RTO, 2 * latency.mean)
                while rng.random() < hop.loss:
                    hop.lost += 1
                    if not reliable:
                        return None
                    self._stats["retransmissions"] += 1
                    retransmitting += rto
                    rto *= 2
        return t + retransmitting

    def _path_alive(self, path: list[_Hop]) -> bool:
        down = self._down_hosts
        return all(h.up and h.target not in down for h in path)

    def _at(self, when: float, callback: Callable[[Any], None], value: Any) -> None:
        self.env.call(when, callback, value)

    # -- streams -------------------------------------------------------------

    def _ephemeral_port(self, host: str) -> int:
        counter = self._ports.setdefault(host, itertools.count(40000))
        while True:
            port = next(counter)
            if (host, port) not in self._listeners:
                return port

    def _add_listener(
        self, address: Address, handler: StreamHandler, runtime: Any
    ) -> None:
        if address in self._listeners:
            raise OSError(98, f"address {address[0]}:{address[1]} already in use")
        self._listeners[address] = (handler, runtime)
        self.trace.record(self.now(), "listen", *address)

    def _remove_listener(self, address: Address) -> None:
        self._listeners.pop(address, None)

    async def _connect(self, src: str, dst: Address) -> tuple[_Pipe, _Pipe, Address]:
        if dst[0] not in self._hosts:
            raise ConnectError(f"cannot connect to {dst[0]}:{dst[1]}: no such host")
        for retry_after in _SYN_RETRIES:
            path = self.route(src, dst[0])
            arrival = None if path is None else self._transit(path, 60, False)
            if self.route(dst[0], src) is None and dst[0] not in self._down_hosts:
                # The request may arrive, but the answer cannot come back
                # (a one-way partition): to the client it is a lost request.
                arrival = None
            if arrival is None:
                await self.kernel.sleep(retry_after)
                continue
            await self.kernel.sleep(arrival - self.now())
            return await self._accept(src, dst)
        raise ConnectError(f"cannot connect to {dst[0]}:{dst[1]}: timed out")

    async def _accept(self, src: str, dst: Address) -> tuple[_Pipe, _Pipe, Address]:
        entry = self._listeners.get(dst) if dst[0] not in self._down_hosts else None
        local = (src, self._ephemeral_port(src))
        reply = self.route(dst[0], src)
        back = None if reply is None else self._transit(reply, 60, True)
        if entry is None:
            if back is not None:
                await self.kernel.sleep(back - self.now())
            raise ConnectError(
                f"cannot connect to {dst[0]}:{dst[1]}: connection refused"
            )

        cid = next(self._cids)
        conn = _Connection(cid, local, dst)
        out = _Pipe(conn, src, dst[0], 2 * cid, self._incarnation[dst[0]])
        inbound = _Pipe(conn, dst[0], src, 2 * cid + 1, self._incarnation[src])
        out.reverse, inbound.reverse = inbound, out
        self._pipes[cid] = (out, inbound)
        self.trace.record(self.now(), "accept", cid, *local, *dst)

        handler, runtime = entry
        server_stream = runtime._make_stream(inbound, out, dst, local)
        runtime.spawn(handler(server_stream), name=f"accept-{cid}")
        if back is not None:
            await self.kernel.sleep(back - self.now())
        return out, inbound, local

    def _send(self, pipe: _Pipe, data: bytes) -> None:
        pipe.in_flight += len(data)
        pipe.sent += 1
        if pipe.stalled:
            self._stall(pipe, pipe.sent, data)
        else:
            self._launch(pipe, pipe.sent, data)

    def _route_pipe(self, pipe: _Pipe) -> None:
        """Look up a pipe's routes again after the topology changed."""
        pipe.path = self.route(pipe.src, pipe.dst)
        pipe.back = self.route(pipe.dst, pipe.src)
        pipe.routed = self._version

    def _launch(self, pipe: _Pipe, number: int, data: bytes) -> None:
        version = self._version
        if pipe.routed != version:
            self._route_pipe(pipe)
        path = pipe.path
        if path is None:
            self._stall(pipe, number, data)
            return
        arrival = self._transit(path, len(data) + _SEGMENT_OVERHEAD, True)
        assert arrival is not None
        last = pipe.last_arrival
        # In order: never before the segment sent ahead of it.
        arrival = pipe.last_arrival = arrival if arrival > last else last
        self.env.call(arrival, self._arrival, (pipe, number, data, path, version))

    def _stall(self, pipe: _Pipe, number: int, data: bytes) -> None:
        # Segments sent before the path broke may still be in flight and
        # stall on arrival, after later ones: keep them in sending order.
        bisect.insort(pipe.stalled, (number, data), key=lambda item: item[0])
        self._stalled[pipe.key] = pipe

    def _retry(self, pipe: _Pipe) -> None:
        self._stalled.pop(pipe.key, None)
        waiting = pipe.stalled
        pipe.stalled = []
        for number, data in waiting:
            if pipe.stalled:
                self._stall(pipe, number, data)
            else:
                self._launch(pipe, number, data)

    def _arrive(self, segment: tuple[_Pipe, int, bytes, list[_Hop], int]) -> None:
        pipe, number, data, path, version = segment
        if pipe.dead:
            # The receiving end forgot this connection: as a TCP stack does,
            # it answers every segment with a reset, so a peer whose first
            # reset was lost (a one-way partition, say) still learns later.
            if pipe.error is None and pipe.reverse is not None:
                self.trace.record(self.now(), "rst", pipe.conn.cid, pipe.dst)
                self._send_reset(pipe.reverse, pipe)
            return
        current = self._version
        if pipe.stalled or (
            version != current
            and (not self._path_alive(path) or (pipe.src, pipe.dst) in self._blocked)
        ):
            self._stall(pipe, number, data)
            return
        conn = pipe.conn
        if self._incarnation[pipe.dst] != pipe.incarnation:
            self._answer_reset(pipe)
            return

        size = len(data)
        if pipe.routed == current and pipe.back is not None:
            pipe.in_flight -= size  # _acknowledge's usual case, written out
        else:
            self._acknowledge(pipe, size)
        stats = self._stats
        stats["segments"] += 1
        stats["segment_bytes"] += size
        self.trace.segment(self.env._now, conn.cid, pipe.src, size)
        if size:
            pipe.chunks.append(data)
            pipe.buffered += size
        else:
            pipe.eof = True
        reader = pipe.reader
        if reader is not None and reader._value is PENDING:
            # The arrival and the reader's wake-up in one step.
            reader._set_now()

    def _acknowledge(self, pipe: _Pipe, size: int) -> None:
        """Credit the sender's window, unless the way back is cut."""
        if pipe.routed != self._version:
            self._route_pipe(pipe)
        if pipe.back is None and pipe.dst not in self._down_hosts:
            pipe.unacked += size
            self._unacked[pipe.key] = pipe
        else:
            pipe.in_flight -= size

    def _credit(self, pipe: _Pipe) -> None:
        if pipe.dead:
            self._unacked.pop(pipe.key, None)
        elif self.route(pipe.dst, pipe.src) is not None:
            self._unacked.pop(pipe.key, None)
            pipe.in_flight -= pipe.unacked
            pipe.unacked = 0
            pipe.wake_writer()

    def _answer_reset(self, pipe: _Pipe) -> None:
        """A segment reached a host that no longer knows its connection."""
        self.trace.record(self.now(), "rst", pipe.conn.cid, pipe.dst)
        pair = self._pipes.pop(pipe.conn.cid, None)
        if pair is None:
            return
        back = pair[1] if pair[0] is pipe else pair[0]
        self._send_reset(back, pipe)

    def _reset(self, out: _Pipe, inbound: _Pipe) -> None:
        """The local end aborted: the peer hears of it one trip later."""
        if self._pipes.pop(out.conn.cid, None) is None:
            return
        self.trace.record(self.now(), "abort", out.conn.cid, out.src)
        inbound.wake_reader()
        out.wake_writer()
        self._send_reset(out, inbound)

    def _send_reset(self, peer_reads: _Pipe, peer_writes: _Pipe) -> None:
        """Kill both directions now; the peer learns when the reset arrives.

        Until then its reads wait and its writes vanish, as on a real network.
        If no path exists this reset is lost, but each later segment of the
        peer's that gets through draws another (see ``_arrive``).
        """
        peer_reads.dead = peer_writes.dead = True
        path = self.route(peer_reads.src, peer_reads.dst)
        if path is None:
            return
        arrival = self._transit(path, _SEGMENT_OVERHEAD, True)
        assert arrival is not None

        def arrived(_nothing: None) -> None:
            error = BrokenResourceError("connection reset by peer")
            peer_reads.error = peer_writes.error = error
            peer_reads.wake_reader()
            peer_writes.wake_writer()

        self._at(arrival, arrived, None)

    # -- datagrams -----------------------------------------------------------

    def _add_datagram(self, address: Address, endpoint: Any) -> None:
        if address in self._datagrams:
            raise OSError(98, f"address {address[0]}:{address[1]} already in use")
        self._datagrams[address] = endpoint

    def _remove_datagram(self, address: Address) -> None:
        self._datagrams.pop(address, None)

    def _send_datagram(self, src: Address, data: bytes, dst: Address) -> None:
        self._stats["datagrams"] += 1
        path = self.route(src[0], dst[0])
        arrival = (
            None
            if path is None
            else self._transit(path, len(data) + _DATAGRAM_OVERHEAD, False)
        )
        if arrival is None:
            self._stats["datagrams_lost"] += 1
            self.trace.record(self.now(), "dgram-lost", *src, *dst, len(data))
            return
        self._at(arrival, self._datagram_arrives, (src, data, dst))

    def _datagram_arrives(self, datagram: tuple[Address, bytes, Address]) -> None:
        src, data, dst = datagram
        endpoint = self._datagrams.get(dst)
        self.trace.record(self.now(), "dgram", *src, *dst, len(data))
        if (
            endpoint is None
            or dst[0] in self._down_hosts
            or self.blocked(src[0], dst[0])
        ):
            self._stats["datagrams_lost"] += 1
            return
        endpoint._deliver(data, src)


def hosts_of(graph: nx.Graph[Any]) -> Iterable[str]:
    return (str(n) for n in graph.nodes)
