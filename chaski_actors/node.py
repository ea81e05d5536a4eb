"""Nodes: the actors that join a network, pair with peers and exchange messages.

A :class:`Node` owns one listener and one :class:`~chaski_actors.link.Link`
per paired peer. A link outlives connections: it holds a session
(:mod:`chaski_actors.session`) that numbers publishes and other reliable
frames, so that what was in flight when a connection broke is resent on the
next one and delivered once, in order. A task per connection reads the
stream, lets the :class:`LinkProtocol` check the frames and hands each one
to the node. Handshake, subscriptions, publishing, pings, keep-alive and
reconnection live here; higher layers add their own frame kinds through
:meth:`Node.add_frame_handler`, and send them with ``Link.send_reliable``
when they must survive a reconnection.

The handshake
-------------
The dialling side sends its ``HELLO`` first; the accepting side reads it
before answering, because its answer depends on who is calling: whether it
still holds a session with that very incarnation of the peer, and so
whether the new connection continues that session or starts afresh (see
the session essay). Both hellos carry, in their options, what their sender
has received in order (``received``), what it no longer holds (``base``)
and how many frames it may send unacknowledged (``buffer``, so that the
receiver acknowledges before that buffer fills); the dialler's also names
the incarnation it expects to reach (``peer_id``), and the acceptor's
answers whether the session continues.

Failures
--------
A connection that ends, resets, breaks the protocol or stays silent for
``dead_after_s`` is detached from its link. The side that dialled it
then reconnects, to the address it dialled (for links made by discovery, the
one the peer advertised), with exponential backoff and jitter
(``reconnect_*`` settings); the other side keeps the session for
``session_linger_s``. Publishes meanwhile go into the session's bounded
buffer and flow when the link is back. A ``BYE`` (the peer stopping) or a
protocol error ends the session at once.

Received messages of a subscribed topic go to a sink registered for that
topic (a streamer, say) or else to the node's inbox, a bounded
:class:`~chaski_actors.sync.Queue` whose overflow rule comes from the
settings. Under the ``wait`` rule a full inbox stops the link's reader, and
so, through the transport's window, the publisher: back-pressure, not loss.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from .codec import decode_frame
from .discovery import (
    INTRODUCTION,
    ROUTES,
    ROUTES_PER_FRAME,
    SEEK,
    Announcement,
    Discovery,
    DiscoveryStatistics,
    Route,
    parse_routes,
)
from .errors import (
    BrokenResourceError,
    ClosedResourceError,
    ConfigError,
    ConnectError,
    ProtocolError,
)
from .link import Link, SharedBatch
from .log import node_logger
from .protocol import (
    ACK,
    ANNOUNCE,
    BYE,
    FORWARD,
    HEARTBEAT,
    HELLO,
    PING,
    PONG,
    PUB,
    PUB_TIME_TYPES,
    SEQ,
    SUB,
    UNNUMBERED,
    UNSUB,
    Frame,
    LinkProtocol,
    LinkState,
    check_frame,
    check_numbered,
)
from .runtime import (
    Address,
    DatagramEndpoint,
    Future,
    Listener,
    Runtime,
    Stream,
    Task,
    Timer,
    TlsConfig,
)
from .session import Session
from .settings import Settings
from .sync import Event, Queue, QueueStatistics

__all__ = [
    "Link",
    "LinkStatistics",
    "Message",
    "Node",
    "NodeStatistics",
    "PeerInfo",
]

# Bytes asked of the stream per read: large enough to carry many small
# frames at once, small enough not to hold a big buffer per idle link.
_READ_SIZE = 256 * 1024


class Message(NamedTuple):
    """A published message as the receiving application sees it.

    A named tuple rather than a frozen dataclass: one is built for every
    message received, and a tuple is built several times faster.
    """

    topic: str
    data: Any
    source: str
    sent_at: float
    received_at: float

    @property
    def latency(self) -> float:
        """One-way delay in seconds (comparable clocks: sim, or one machine)."""
        return self.received_at - self.sent_at


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What a peer said about itself in its hello."""

    name: str
    node_id: str
    address: Address
    topics: frozenset[str]
    datagram_address: Address | None = None


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    peer: str
    state: str
    frames_in: int
    frames_out: int
    bytes_in: int
    bytes_out: int
    opened_at: float
    rtt_last: float | None
    rtt_samples: int
    # Sessions, keep-alive and latency (fields with defaults keep old
    # constructors working).
    srtt: float | None = None
    rttvar: float | None = None
    unacked: int = 0
    resent: int = 0
    dropped: int = 0
    duplicates: int = 0
    skipped: int = 0
    connections: int = 0
    reconnections: int = 0


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    name: str
    links: int
    published: int
    delivered: int
    unroutable: int
    protocol_errors: int
    datagrams_in: int
    datagrams_out: int
    datagrams_refused: int
    inbox: QueueStatistics
    per_link: tuple[LinkStatistics, ...] = field(default=())
    # Links layer: reconnections made, peers declared dead, sessions given up
    # (with the frames still unacknowledged in them), frames dropped by full
    # send buffers under "drop-oldest", discovery and propagation.
    reconnections: int = 0
    peers_declared_dead: int = 0
    sessions_lost: int = 0
    frames_abandoned: int = 0
    send_buffer_dropped: int = 0
    forwarded: int = 0
    discovery: DiscoveryStatistics | None = None


# A sink takes messages of one topic, in order, several at a time when one
# numbered frame carried several.
MessageSink = Callable[[list[Message]], Awaitable[None]]
# A frame handler is a coroutine function, or a plain function that returns
# None: one that never waits (a remote call's answer, say) saves making and
# driving a coroutine for every frame.
FrameHandler = Callable[["Link", Frame], Awaitable[None] | None]
DatagramHandler = Callable[["Link", Frame], None]
LinkWatcher = Callable[["Link", str], None]


class Node:
    """A participant of the network; see the module essay.

    ``async with Node(runtime, "a") as node:`` starts listening and stops on
    exit, closing every link.
    """

    # Slots: one per host, used for every message published and delivered
    # (see Link). A subclass that declares no __slots__ of its own gets a
    # __dict__ as usual, so it may keep attributes of its own. Weak
    # references still work: applications keep nodes in weak sets and maps.
    __slots__ = (
        "__weakref__",
        "_abandoned",
        "_announce_soon_pending",
        "_announce_timer",
        "_datagram",
        "_datagram_handlers",
        "_datagram_peers",
        "_datagram_reader",
        "_datagrams_in",
        "_datagrams_out",
        "_datagrams_refused",
        "_declared_dead",
        "_delivered",
        "_dialling",
        "_fanout",
        "_forward_ids",
        "_forwarded",
        "_handlers",
        "_host",
        "_joined_once",
        "_last_announce",
        "_link_watchers",
        "_listener",
        "_paired_once",
        "_pairing",
        "_pending",
        "_ping_ids",
        "_pings",
        "_port",
        "_protocol_errors",
        "_published",
        "_reconnections",
        "_routes_timer",
        "_sessions_lost",
        "_shared",
        "_sinks",
        "_started",
        "_stopped",
        "_unroutable",
        "_unshared_run",
        "_unshared_topic",
        "discovery",
        "discovery_log",
        "inbox",
        "link_log",
        "links",
        "log",
        "name",
        "node_id",
        "runtime",
        "settings",
        "tls",
        "topics",
    )

    def __init__(
        self,
        runtime: Runtime,
        name: str,
        *,
        settings: Settings | None = None,
        host: str | None = None,
        port: int = 0,
        tls: TlsConfig | None = None,
    ) -> None:
        if not name or not isinstance(name, str):
            raise ConfigError(f"a node needs a non-empty name, got {name!r}")
        self.runtime = runtime
        self.name = name
        self.settings = settings if settings is not None else Settings()
        self.node_id = runtime.unique_id()
        self.tls = tls
        self._host = host if host is not None else runtime.host
        self._port = port
        self.topics: set[str] = set()
        self.links: dict[str, Link] = {}
        self.inbox: Queue[Message] = Queue(
            runtime, self.settings.inbox_size, self.settings.overflow
        )
        self._sinks: dict[str, MessageSink] = {}
        # Per topic, the batch its links share this turn (see Link's essay),
        # and how many publishes in a row went to one topic without one.
        self._shared: dict[str, SharedBatch] = {}
        # Per topic, the links it goes to, as publish found them.
        self._fanout: dict[str, list[Link]] = {}
        self._unshared_topic: str | None = None
        self._unshared_run = 0
        self._handlers: dict[int, FrameHandler] = {}
        self._pings: dict[int, Future[float]] = {}
        self._ping_ids = itertools.count(1)
        self._listener: Listener | None = None
        self._datagram: DatagramEndpoint | None = None
        self._datagram_reader: Task[None] | None = None
        self._datagram_handlers: dict[int, DatagramHandler] = {
            PING: self._datagram_ping,
            PONG: self._datagram_pong,
        }
        self._link_watchers: list[LinkWatcher] = []
        self._datagram_peers: dict[Address, str] = {}
        self._datagrams_in = self._datagrams_out = self._datagrams_refused = 0
        self._pending: set[Stream] = set()
        self._started = False
        self._stopped = False
        self._published = self._delivered = self._unroutable = 0
        self._protocol_errors = 0
        self._reconnections = self._declared_dead = 0
        self._sessions_lost = self._abandoned = self._forwarded = 0
        self._pairing = Event(runtime)
        # Origins being dialled by discovery, each with the latest news of it
        # that arrived meanwhile (None: none yet); see _pair.
        self._dialling: dict[str, Announcement | None] = {}
        self._announce_timer: Timer | None = None
        self._last_announce = -math.inf
        self._announce_soon_pending = False
        self._paired_once = self._joined_once = False
        self.discovery = Discovery(
            name,
            memory=self.settings.discovery_memory,
            ttl=self.settings.discovery_ttl,
            reach=self.settings.discovery_reach,
            interval=self.settings.discovery_interval_s,
        )
        self._routes_timer: Timer | None = None
        self._handlers[ROUTES] = self._routes_in
        self._handlers[SEEK] = self._seek_in
        self._link_watchers.append(self._routes_link_closed)
        self._forward_ids = itertools.count(1)
        self.log = node_logger("node", runtime, name)
        self.link_log = node_logger("link", runtime, name)
        self.discovery_log = node_logger("discovery", runtime, name)

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running" if self._started else "new"
        return (
            f"<Node {self.name} {state} peers={sorted(self.links)} "
            f"topics={sorted(self.topics)} inbox={len(self.inbox)}>"
        )

    # -- lifecycle -----------------------------------------------------------

    @property
    def address(self) -> Address:
        if self._listener is None:
            raise ClosedResourceError(f"node {self.name} is not listening")
        return self._listener.address

    async def start(self) -> None:
        if self._started:
            return
        self._listener = await self.runtime.listen(
            self._host,
            self._port,
            self._accepted,
            tls=self.tls,
            max_connections=self.settings.max_connections,
        )
        self._datagram = await self.runtime.open_datagram(self._host, 0)
        self._datagram_reader = self.runtime.spawn(
            self._read_datagrams(self._datagram), name="datagrams"
        )
        self._started = True
        self.log.info("listening on %s:%s", *self._listener.address)
        self._own_routes()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._announce_timer is not None:
            self._announce_timer.cancel()
        if self._routes_timer is not None:
            self._routes_timer.cancel()
        if self._listener is not None:
            await self._listener.aclose()
        if self._datagram is not None:
            self._datagram.close()
        if self._datagram_reader is not None:
            self._datagram_reader.cancel()
        for link in list(self.links.values()):
            await self._close_link(link, "node stopping", polite=True)
        for stream in list(self._pending):
            stream.abort()
        self.inbox.close()
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(ClosedResourceError("node stopped"))
        self._pairing.set()
        self.log.info("stopped")

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- pairing -------------------------------------------------------------

    async def connect(self, host: str, port: int) -> PeerInfo:
        """Open a link to the node at ``(host, port)``; returns who it is.

        Raises :class:`ConnectError` if nothing answers, the handshake fails
        or does not finish within ``settings.handshake_timeout_s``. The link
        then lives until either node stops: a broken connection is
        reconnected by this node, the one that dialled.
        """
        self._check_running()
        known = self._link_at(host, port)
        if known is not None and known.connected:
            # Discovery paired us first: the link is part of the overlay now.
            self._overlay_link(known)
            return known.peer
        stream = await self._dial(host, port)
        link = await self._handshake(stream, dialled=True, known=known)
        if link is None:
            # Both nodes dialled each other at once (discovery does this), and
            # the peer kept the other connection: that link is the answer.
            crossed = self._link_at(host, port)
            if crossed is not None and crossed.connected:
                self._overlay_link(crossed)
                return crossed.peer
            raise ConnectError(f"{self.name}: handshake with {host}:{port} failed")
        return link.peer

    def _link_at(self, host: str, port: int) -> Link | None:
        return next(
            (
                link
                for link in self.links.values()
                if (host, port) in (link.peer.address, link.dial_address)
            ),
            None,
        )

    async def paired(self, topic: str, *, timeout: float = 10.0) -> list[str]:
        """Wait until some linked peer subscribes to ``topic``; their names.

        Raises TimeoutError after ``timeout`` seconds of the runtime's clock.
        """
        async with self.runtime.timeout(timeout):
            while True:
                self._check_running()
                partners = sorted(
                    name
                    for name, link in self.links.items()
                    if link.connected and topic in link.topics
                )
                if partners:
                    return partners
                self._pairing.clear()
                await self._pairing.wait()

    async def _dial(self, host: str, port: int) -> Stream:
        try:
            async with self.runtime.timeout(self.settings.connect_timeout_s):
                return await self.runtime.connect(host, port, tls=self.tls)
        except TimeoutError as exc:
            raise ConnectError(
                f"{self.name}: no answer from {host}:{port} within "
                f"{self.settings.connect_timeout_s} s"
            ) from exc

    async def _accepted(self, stream: Stream) -> None:
        if self._stopped:
            stream.abort()
            return
        await self._handshake(stream, dialled=False)

    async def _handshake(
        self,
        stream: Stream,
        *,
        dialled: bool,
        known: Link | None = None,
        pairing: bool = False,
    ) -> Link | None:
        """Exchange hellos; attach the stream to a new or resumed link.

        ``known`` is the link a dialler means to reconnect, if any;
        ``pairing`` says that discovery dialled (not a join).
        """
        protocol = LinkProtocol(max_frame_size=self.settings.max_frame_size)
        self._pending.add(stream)
        advertised = set(self.topics)
        try:
            async with self.runtime.timeout(self.settings.handshake_timeout_s):
                if dialled:
                    await self._send_hello(
                        stream, protocol, advertised, known, pairing=pairing
                    )
                frames = await self._read_hello(stream, protocol)
                hello = _Hello.parse(frames[0])
                outcome = self._decide(stream, hello, dialled, known)
                if outcome is None:
                    return None
                link, continued = outcome
                if not dialled:
                    await self._send_hello(
                        stream, protocol, advertised, link, continued=continued
                    )
        except (TimeoutError, ProtocolError, BrokenResourceError) as exc:
            self._protocol_errors += isinstance(exc, ProtocolError)
            self.link_log.warning(
                "handshake with %s:%s failed: %s", *stream.peer_address, _why(exc)
            )
            stream.abort()
            return None
        finally:
            self._pending.discard(stream)

        if link is None:
            link = self._new_link(hello, dialled=dialled)
        elif dialled:
            # Whoever dialled a connection redials it if it breaks. A link
            # kept for a peer's earlier life may have been made the other way
            # round, and its new life, which accepted this one, will not.
            # Accepting never takes the duty away: when two dials cross and
            # each end keeps the connection it accepted, both die, and one
            # end must still redial (chaos_mesh seed 279).
            link.dialled = True
        if dialled and link.dial_address is None:
            link.dial_address = stream.peer_address
        pairing = pairing if dialled else hello.pairing
        await self._attach(link, stream, protocol, hello, continued, pairing=pairing)

        # Topics changed while the hellos crossed: the peer has not heard.
        for topic in sorted(self.topics - advertised):
            await self._send_quietly(link, SUB, topic)
        for topic in sorted(advertised - self.topics):
            await self._send_quietly(link, UNSUB, topic)
        try:
            for frame in frames[1:]:
                await self._dispatch(link, frame)
        except ProtocolError as exc:
            # Frames that arrived with the hello answer to the same rules as
            # any later ones: a bad one drops the link (found by fuzzing).
            self._protocol_errors += 1
            reason = f"protocol error: {exc}"
            self.link_log.warning("dropping %s: %s", link.peer.name, reason)
            await self._close_link(link, reason, polite=False)
            return None
        except (BrokenResourceError, ClosedResourceError):
            pass  # the link's reader sees the broken stream and deals with it
        return link

    async def _send_hello(
        self,
        stream: Stream,
        protocol: LinkProtocol,
        topics: set[str],
        link: Link | None,
        *,
        continued: bool | None = None,
        pairing: bool = False,
    ) -> None:
        options = self._hello_options()
        # How many frames we may send unacknowledged, so that the peer
        # acknowledges before our send buffer fills (Link.attach).
        options["buffer"] = self.settings.send_buffer_frames
        if pairing:
            options["pairing"] = True
        if link is not None:
            options["peer_id"] = link.peer.node_id
            options["received"] = link.session.received
            options["base"] = link.session.acked
        if continued is not None:
            options["continued"] = continued
        hello = protocol.encode(
            HELLO,
            self.name,
            self.node_id,
            self._advertised_host(),
            self.address[1],
            sorted(topics),
            options,
        )
        protocol.sent(hello)
        await stream.send(hello)

    async def _read_hello(self, stream: Stream, protocol: LinkProtocol) -> list[Frame]:
        while True:
            data = await stream.receive(_READ_SIZE)
            if not data:
                raise BrokenResourceError("peer closed the connection during handshake")
            frames, error = protocol.receive_data(data)
            if error is not None:
                raise error
            if frames:
                return frames

    def _decide(
        self, stream: Stream, hello: _Hello, dialled: bool, known: Link | None
    ) -> tuple[Link | None, bool] | None:
        """Which link a new connection belongs to, and whether it continues.

        None refuses the connection. A None link means a new one.
        """
        if not all(isinstance(t, str) for t in hello.topics):
            self._refuse(stream, f"hello from {hello.name} lists a non-string topic")
            return None
        if hello.name == self.name:
            self._refuse(stream, "connected to itself")
            return None
        if self.tls is not None and stream.peer_identity != hello.name:
            # With TLS a peer is who its certificate says, whatever it calls
            # itself; a hello under another name is an impersonation attempt.
            self._refuse(
                stream,
                f"hello names {hello.name!r}, certificate names "
                f"{stream.peer_identity!r}",
            )
            return None
        existing = self.links.get(hello.name)
        if known is not None and known is not existing:
            self._refuse(stream, f"{hello.name} is not the peer we had there")
            return None
        same_peer = existing is not None and existing.peer.node_id == hello.node_id
        if dialled:
            if (
                existing is not None
                and known is None
                and existing.connected
                and self.name > hello.name
            ):
                # Both ends dialled at once and each accepted the other's dial
                # before its own was answered. Each keeps the connection the
                # smaller name dialled, so that they keep the same one: if
                # each refused its own, both connections would die, and two
                # accepted links wait forever for the other end to redial.
                # Known shortcoming: a reconnection (``known`` set) that
                # crosses the peer's own dial always keeps its connection,
                # so when the peer is the smaller name both connections can
                # still die; the reconnecting end keeps its duty to redial,
                # and the link comes back one reconnect_* backoff later.
                self._refuse(stream, f"already linked to {hello.name}")
                return None
            return existing, hello.continued
        continued = same_peer and hello.peer_id == self.node_id
        if existing is not None and existing.connected and same_peer and not continued:
            # Both sides dialled at once, or a stale reconnect: keep the link
            # we already have, so each pair of nodes has exactly one.
            self._refuse(stream, f"already linked to {hello.name}")
            return None
        if existing is None and len(self.links) >= self.settings.max_connections:
            self._refuse(stream, f"max_connections={self.settings.max_connections}")
            return None
        return existing, continued

    def _new_link(self, hello: _Hello, *, dialled: bool) -> Link:
        session = Session(self.settings.send_buffer_frames, self.settings.overflow)
        link = Link(self, hello.peer_info(), session, dialled=dialled)
        self.links[hello.name] = link
        self._fanout_changed()
        return link

    async def _attach(
        self,
        link: Link,
        stream: Stream,
        protocol: LinkProtocol,
        hello: _Hello,
        continued: bool,
        *,
        pairing: bool = False,
    ) -> None:
        old = link.detach()
        if old is not None:
            old.abort()  # the peer already moved on to the new connection
        peer = hello.peer_info()
        if link.peer.datagram_address is not None:
            self._datagram_peers.pop(link.peer.datagram_address, None)
        link.attach(stream, protocol, peer, peer_buffer=hello.buffer)
        self._fanout_changed()
        if peer.datagram_address is not None:
            self._datagram_peers[peer.datagram_address] = peer.name
        backlog = link.session.resume(
            continued=continued, peer_received=hello.received, peer_base=hello.base
        )
        link.reader = stream.consume(
            self.runtime,
            # Partials, not lambdas: called for every read, and a partial
            # adds no Python frame of its own.
            functools.partial(self._on_data, link, stream, protocol),
            functools.partial(self._on_end, link, stream),
            name=f"read-{peer.name}",
        )
        if link.connections == 1:
            self.link_log.info("linked to %s at %s:%s", peer.name, *peer.address)
        else:
            self.link_log.info(
                "link to %s resumed (%s session, %d frames to resend)",
                peer.name,
                "same" if continued else "new",
                len(backlog),
            )
        self._pairing.set()
        await link.resume(backlog)
        if (
            link.connections == 1
            and self.topics
            and not (self._paired_once if pairing else self._joined_once)
        ):
            # Joining the overlay, and so does the first partner (members
            # relay for free), widens what our floods reach: announce again,
            # within the rate limit. Later links are left to the topic routes,
            # and later partners are introduced instead.
            self._paired_once = self._paired_once or pairing
            self._joined_once = self._joined_once or not pairing
            self._announce_soon()
        if link.connections == 1 and not pairing:
            self.discovery.routes.add_neighbour(peer.name)
        else:
            self.discovery.routes.resync(peer.name)
        self._routes_soon()
        # Introduced again after every reconnection, not only the first time:
        # while the link was down its peer may have missed news that went by
        # flood, such as a crashed peer's new life, announced once into
        # connections that were stalled then and died (chaos_mesh seed 109).
        # Costs a frame per neighbour sharing a topic, and no flood.
        await self._introduce(link)

    def _hello_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self._datagram is not None:
            options["udp"] = self._datagram.local_address[1]
        return options

    def _refuse(self, stream: Stream, reason: str) -> None:
        self.link_log.info("refused a link: %s", reason)
        stream.abort()

    def _advertised_host(self) -> str:
        host = self.address[0]
        return self.runtime.host if host in ("", "0.0.0.0", "::") else host

    def _check_running(self) -> None:
        if not self._started or self._stopped:
            raise ClosedResourceError(f"node {self.name} is not running")

    # -- reading -------------------------------------------------------------

    def _on_data(
        self, link: Link, stream: Stream, protocol: LinkProtocol, data: bytes
    ) -> bool | Coroutine[Any, Any, bool]:
        """Handle what arrived on ``stream``; False once reading must stop.

        A read that holds one numbered frame whose handling does not wait
        (a remote call, its answer) is handled without a coroutine; any
        other read, and the rest of one that must wait, goes to
        :meth:`_read_on`, which returns the same answer when awaited.
        """
        frames, error = protocol.receive_data(data)
        if link.stream is stream:
            link.count_in(data, len(frames))
        if error is not None or len(frames) != 1 or frames[0].kind != SEQ:
            return self._read_on(link, stream, protocol, frames=frames, error=error)
        fields = frames[0].fields
        try:
            waiting = self._numbered(link, fields[0], fields[1], fields[2])
        except (ProtocolError, BrokenResourceError, ClosedResourceError) as exc:
            return self._read_on(link, stream, protocol, error=exc)
        if waiting is not None:
            return self._read_on(link, stream, protocol, waiting=waiting)
        return True  # a numbered frame leaves the protocol's state as it was

    async def _read_on(
        self,
        link: Link,
        stream: Stream,
        protocol: LinkProtocol,
        *,
        waiting: Awaitable[None] | None = None,
        frames: tuple[Frame, ...] | list[Frame] = (),
        error: Exception | None = None,
    ) -> bool:
        """The rest of :meth:`_on_data`: ``waiting``, ``frames``, then ``error``."""
        try:
            if waiting is not None:
                await waiting
            for frame in frames:
                if frame.kind == SEQ:
                    # Nearly every frame: straight there, a call fewer.
                    fields = frame.fields
                    waiting = self._numbered(link, fields[0], fields[1], fields[2])
                    if waiting is not None:
                        await waiting
                else:
                    await self._dispatch(link, frame)
            if error is not None:
                raise error
        except ProtocolError as exc:
            self._protocol_errors += 1
            reason = f"protocol error: {exc}"
            self.link_log.warning("dropping %s: %s", link.peer.name, reason)
            await self._reader_done(link, stream, reason, fatal=True)
            return False
        except (BrokenResourceError, ClosedResourceError) as exc:
            await self._reader_done(link, stream, _why(exc), fatal=False)
            return False
        if protocol.state is LinkState.CLOSED:
            await self._reader_done(link, stream, "peer said goodbye", fatal=True)
            return False
        return True

    async def _on_end(
        self, link: Link, stream: Stream, exc: BaseException | None
    ) -> None:
        reason = "peer closed the connection" if exc is None else _why(exc)
        await self._reader_done(link, stream, reason, fatal=False)

    async def _reader_done(
        self, link: Link, stream: Stream, reason: str, *, fatal: bool
    ) -> None:
        if link.stream is not stream:
            return  # a stale connection, already replaced or dropped
        if fatal:
            await self._close_link(link, reason, polite=False, from_reader=True)
        else:
            self._connection_lost(link, reason)

    async def _dispatch(self, link: Link, frame: Frame) -> None:
        kind, fields = frame.kind, frame.fields
        if kind == SEQ:
            waiting = self._numbered(link, fields[0], fields[1], fields[2])
            if waiting is not None:
                await waiting
        elif kind in (ACK, HEARTBEAT):
            link.acknowledged(fields[0])
        elif kind == PUB:
            await self._deliver(link, fields)
        elif kind == PING:
            link.answer_ping(fields[0], fields[1])
        elif kind == PONG:
            self._pong(link, fields[0], fields[1])
        elif kind == SUB:
            link.topics.add(fields[0])
            self._fanout_changed()
            self._pairing.set()
        elif kind == UNSUB:
            link.topics.discard(fields[0])
            self._fanout_changed()
        elif kind == ANNOUNCE:
            origin, node_id, host, port, topics, ident, ttl = fields
            if not all(isinstance(topic, str) for topic in topics):
                # Found by fuzzing: a list as a topic broke set operations.
                raise ProtocolError(f"announcement from {origin!r} has a bad topic")
            announcement = Announcement(
                origin, node_id, host, port, tuple(topics), ident, ttl
            )
            await self._announced(link, announcement)
        elif kind == FORWARD:
            await self._forwarded_in(link, fields)
        elif kind == BYE:
            self.link_log.debug("bye from %s: %s", link.peer.name, fields[0])
        else:
            handler = self._handlers.get(kind)
            if handler is None:
                raise ProtocolError(f"no handler for frame {frame.name}")
            waiting = handler(link, frame)
            if waiting is not None:
                await waiting

    def _numbered(
        self, link: Link, seq: int, ack: int, items: list[Any]
    ) -> Awaitable[None] | None:
        """Take a numbered frame; what this returns, unless None, is awaited.

        A lone frame of a higher layer's kind (a remote call or its answer,
        mostly) goes to its handler from here, without a coroutine of the
        node's own: a handler that does not wait then costs none at all.
        Publishes of one topic that the inbox takes at once, what nearly
        every other frame carries, are delivered from here too.
        """
        first = items[0] if len(items) == 1 else None
        if type(first) is list and first and type(first[0]) is int:
            handler = self._handlers.get(first[0])
            if handler is not None:
                # check_numbered's work for one frame: the kinds that cannot
                # be numbered are the node's own, which have no handler here.
                frame = check_frame(first)
                link.acknowledged(ack)
                if not link.session.accept(seq, 1):
                    return None
                link.received_numbered(1)
                return handler(link, frame)

        source = link.peer.name
        first = items[0] if items else None
        # Publishes come in runs; anything else comes alone (see above) or
        # mixed with them, and skips the publishes' quick pass.
        quick = (
            _publish_messages(items, source, self.runtime.now)
            if type(first) is list and first and first[0] == PUB
            else None
        )
        frames = [] if quick else check_numbered(items)
        link.acknowledged(ack)
        new = link.session.accept(seq, len(items))
        if not new:
            return None
        link.received_numbered(new)
        if not quick:
            return self._numbered_frames(link, source, frames, new)
        messages, mixed = quick
        if new < len(messages):
            messages = messages[len(messages) - new :]
        if mixed:
            return self._deliver_runs(messages)
        if self._offer_run(messages):
            return None
        return self._deliver_run(messages)

    async def _numbered_frames(
        self, link: Link, source: str, frames: list[Frame], new: int
    ) -> None:
        """The ``new`` last of a numbered frame's frames, not all publishes."""
        # Anything but a publish is handled in its place, after the
        # publishes before it.
        now: float | None = None  # read once, and only for a publish
        run: list[Message] = []
        for frame in frames[len(frames) - new :]:
            if frame.kind == PUB:
                if now is None:
                    now = self.runtime.now()
                topic, data, sent_at = frame.fields
                run.append(_new_message(Message, (topic, data, source, sent_at, now)))
                continue
            if run:
                await self._deliver_runs(run)
                run = []
            # A higher layer's kind (a remote call, say) goes straight to
            # its handler, without the node's own kinds tested first.
            handler = self._handlers.get(frame.kind)
            if handler is None:
                await self._dispatch(link, frame)
                continue
            waiting = handler(link, frame)
            if waiting is not None:
                await waiting
        if run:
            await self._deliver_runs(run)

    async def _deliver_runs(self, messages: list[Message]) -> None:
        """Deliver messages in order; a run of one topic goes in one piece.

        So a batch goes to its queue in one put and wakes its consumer once.
        """
        run: list[Message] = []
        current = None
        for message in messages:
            if message.topic != current:
                if run:
                    await self._deliver_run(run)
                    run = []
                current = message.topic
            run.append(message)
        await self._deliver_run(run)

    async def _deliver(self, link: Link, fields: tuple[Any, ...]) -> None:
        topic, data, sent_at = fields
        await self._deliver_message(topic, data, link.peer.name, sent_at)

    async def _deliver_message(
        self, topic: str, data: Any, source: str, sent_at: float
    ) -> None:
        await self._deliver_run(
            [Message(topic, data, source, sent_at, self.runtime.now())]
        )

    def _offer_run(self, run: list[Message]) -> bool:
        """Deliver as :meth:`_deliver_run` would, if that needs no wait.

        False, having done nothing, if the topic has a sink or the inbox
        cannot take the messages at once.
        """
        topic = run[0].topic
        if topic not in self.topics:
            self._unroutable += len(run)
            return True
        inbox = self.inbox
        if topic in self._sinks or not (inbox.closed or inbox.offer_many(run)):
            return False
        self._delivered += len(run)
        return True

    async def _deliver_run(self, run: list[Message]) -> None:
        """Deliver messages of one topic, in order."""
        if not run:
            return
        topic = run[0].topic
        if topic not in self.topics:
            self._unroutable += len(run)
            return
        self._delivered += len(run)
        sink = self._sinks.get(topic)
        if sink is not None:
            await sink(run)
        elif not self.inbox.closed and not self.inbox.offer_many(run):
            await self.inbox.put_many(run)

    # -- failures and reconnection ---------------------------------------------

    def _peer_silent(self, link: Link, silent: float) -> None:
        """The link's deadline passed without a byte from the peer."""
        self._declared_dead += 1
        self._connection_lost(link, f"nothing heard for {silent:.3f} s")

    def _connection_lost(self, link: Link, reason: str) -> None:
        stream = link.detach()
        if stream is None or link.closed:
            return
        stream.abort()
        self.link_log.info("connection to %s lost: %s", link.peer.name, reason)
        if self._stopped:
            return
        if link.dialled:
            link.reconnector = self.runtime.spawn(
                self._reconnect(link), name=f"reconnect-{link.peer.name}"
            )
        else:
            link.linger(self.settings.session_linger_s)

    def _session_expired(self, link: Link) -> None:
        self.runtime.spawn(
            self._close_link(link, "peer did not come back", polite=False),
            name=f"expire-{link.peer.name}",
        )

    async def _reconnect(self, link: Link) -> None:
        settings = self.settings
        delay = settings.reconnect_initial_s
        attempt = 0
        while not self._stopped and not link.closed:
            attempt += 1
            jitter = settings.reconnect_jitter * (2 * self.runtime.random.random() - 1)
            await self.runtime.sleep(delay * (1 + jitter))
            if link.connected or link.closed or self._stopped:
                return
            if await self._reconnect_once(link):
                self._reconnections += 1
                link.reconnections += 1
                self.link_log.info(
                    "reconnected to %s after %d attempt(s)", link.peer.name, attempt
                )
                return
            if settings.reconnect_attempts and attempt >= settings.reconnect_attempts:
                link.reconnector = None
                await self._close_link(
                    link, f"gave up after {attempt} reconnection attempts", polite=False
                )
                return
            delay = min(delay * settings.reconnect_multiplier, settings.reconnect_max_s)

    async def _reconnect_once(self, link: Link) -> bool:
        host, port = link.dial_address or link.peer.address
        try:
            stream = await self._dial(host, port)
        except ConnectError as exc:
            self.link_log.debug("reconnect to %s: %s", link.peer.name, exc)
            return False
        if await self._handshake(stream, dialled=True, known=link) is not link:
            return False
        link.reconnector = None
        return True

    async def _close_link(
        self, link: Link, reason: str, *, polite: bool, from_reader: bool = False
    ) -> None:
        if link.closed:
            return
        if polite and link.connected:
            await self._send_quietly(link, BYE, reason)
        unacked = link.session.unacked
        link.close()
        if self.links.get(link.peer.name) is link:
            del self.links[link.peer.name]
            self._fanout_changed()
            if link.peer.datagram_address is not None:
                self._datagram_peers.pop(link.peer.datagram_address, None)
        reader = link.reader
        stream = link.detach()
        if stream is not None:
            if polite:
                await stream.aclose()
            else:
                stream.abort()
        if reader is not None and not from_reader:
            reader.cancel()
        if unacked and not polite:
            self._sessions_lost += 1
            self._abandoned += unacked
            self.link_log.warning(
                "link to %s closed with %d unacknowledged frames: %s",
                link.peer.name,
                unacked,
                reason,
            )
        else:
            self.link_log.info("link to %s closed: %s", link.peer.name, reason)
        for watcher in self._link_watchers:
            watcher(link, reason)

    # -- subscriptions and publishing ---------------------------------------

    async def subscribe(self, *topics: str) -> None:
        await self._change_topics(topics, SUB)

    async def unsubscribe(self, *topics: str) -> None:
        await self._change_topics(topics, UNSUB)

    async def _change_topics(self, topics: Iterable[str], kind: int) -> None:
        changed = False
        for topic in topics:
            if not isinstance(topic, str) or not topic:
                raise ConfigError(f"a topic is a non-empty string, got {topic!r}")
            if (topic in self.topics) == (kind == SUB):
                continue
            changed = True
            if kind == SUB:
                self.topics.add(topic)
            else:
                self.topics.discard(topic)
            for link in list(self.links.values()):
                await self._send_quietly(link, kind, topic)
        if changed and kind == SUB and self.links:
            self._announce_soon()
        if changed:
            self._own_routes()

    async def _send_quietly(self, link: Link, kind: int, *fields: Any) -> bool:
        """Send, treating a broken link as the reader's business, not ours.

        Topic changes need no numbering: every hello restates the topics.
        """
        try:
            await link.send_frame(kind, *fields)
        except (BrokenResourceError, ClosedResourceError):
            return False
        return True

    async def publish(self, topic: str, data: Any) -> int:
        """Send ``data`` to every linked peer subscribed to ``topic``.

        Returns the number of peers it was sent or buffered for. A peer whose
        link is down gets it after the reconnection, within the send buffer
        bound (``send_buffer_frames``; ``overflow`` says what happens beyond
        it). Under ``overflow="wait"`` a peer whose link stays down stalls
        this call once its buffer is full: back-pressure, as with a slow
        reader, and the reason to choose ``drop-oldest`` where fresh data
        matters more than complete data. The frame is encoded once for all
        of them. With
        ``propagation_ttl`` set, the message goes to every linked peer, to be
        passed on towards subscribers that are not linked to this node.
        """
        if not self._started or self._stopped:
            self._check_running()  # raises; written out on the hot path
        now = self.runtime.now()
        if self.settings.propagation_ttl:
            return await self._propagate(topic, data, now)

        # Most publishes of a busy turn: the topic's links share a batch,
        # and the frame joins it once for all of them.
        item: bytes | None = None
        shared = self._shared.get(topic)
        if shared is not None and shared.alive:
            item = shared.links[0].protocol.encode_pub(topic, data, now)
            if shared.add(item):
                self._published += 1
                return len(shared.links)
            # It is full: written now, its links may share the next one, as
            # they would each have written theirs and started another.
            for link in shared.links:
                await link.write_batch()

        links = self._fanout.get(topic)
        if links is None:
            links = self._fanout_of(topic)
        if topic == self._unshared_topic:
            self._unshared_run += 1
        else:
            self._unshared_topic, self._unshared_run = topic, 1
        if len(links) > 1:  # one link gains nothing from sharing a batch
            if item is None:
                item = links[0].protocol.encode_pub(topic, data, now)
            shared = await self._share(topic, links, item)
            if shared is not None:
                self._published += 1
                return len(shared.links)
            links = self._fanout_of(topic)  # sharing may have waited
        if not links:
            return 0

        # Otherwise in one pass over the topic's links only (a node linked
        # to many peers pays nothing for those not subscribed): links whose
        # batch takes the frame, or that write it at once as the first of
        # the turn, are done; the others (a full batch, a link down or out
        # of room) are awaited afterwards, outside the iteration.
        if item is None:
            item = links[0].protocol.encode_pub(topic, data, now)
        sent = 0
        later: list[Link] = []
        for link in links:
            if link.offer(item) or link.send_now(item):
                sent += 1
            else:
                later.append(link)
        for link in later:
            try:
                await link.send_item(item)
            except ClosedResourceError:
                continue
            sent += topic in link.topics
        self._published += 1
        return sent

    def _fanout_of(self, topic: str) -> list[Link]:
        """The links ``topic`` goes to, remembered until they change."""
        links = self._fanout.get(topic)
        if links is None:
            if len(self._fanout) >= _FANOUTS_KEPT:
                self._fanout.clear()
            links = [link for link in self.links.values() if topic in link.topics]
            self._fanout[topic] = links
        return links

    async def _share(
        self, topic: str, links: list[Link], item: bytes
    ) -> SharedBatch | None:
        """Put ``item`` in a batch that ``links`` share, if they can share one."""
        if self._unshared_run >= _REALIGN_AFTER and SharedBatch.out_of_step(links):
            # The links have batches of their own, with this topic's
            # publishes (a write that had to wait put them out of step):
            # written now, they can share the next one.
            for link in links:
                await link.write_batch()
            links = self._fanout_of(topic)
            if len(links) < 2:
                return None
        shared = SharedBatch.form(links)
        if shared is None:
            return None
        if not self._shared:
            # Forgotten when the turn ends, as their links uncork: so the
            # items of past turns are not kept for topics gone quiet.
            self.runtime.at_turn_end(self._end_shared)
        self._shared[topic] = shared
        return shared if shared.add(item) else None

    def _fanout_changed(self) -> None:
        """Links or their topics changed: forget who each topic goes to."""
        self._fanout.clear()
        self._end_shared()

    def _end_shared(self) -> None:
        """End and forget the shared batches (their links keep their lists).

        At the end of a turn, and when links or their topics change, so
        that no batch goes on to take publishes for a set of links that is
        no longer the topic's.
        """
        for shared in self._shared.values():
            shared.alive = False
        self._shared.clear()

    async def _propagate(self, topic: str, data: Any, now: float) -> int:
        """Publish with ``propagation_ttl``: to every link, to be passed on."""
        ident = next(self._forward_ids)
        self.discovery.seen.first_sight((_FORWARD_PREFIX + self.name, ident))
        links = list(self.links.values())
        if not links:
            return 0
        item = links[0].protocol.encode_item(
            FORWARD, self.name, ident, self.settings.propagation_ttl, topic, data, now
        )
        sent = 0
        for link in links:
            try:
                await link.send_item(item)
            except ClosedResourceError:
                continue
            sent += topic in link.topics
        self._published += 1
        return sent

    async def _forwarded_in(self, link: Link, fields: tuple[Any, ...]) -> None:
        origin, ident, ttl, topic, data, sent_at = fields
        if not self.discovery.seen.first_sight((_FORWARD_PREFIX + origin, ident)):
            return
        if topic in self.topics:
            await self._deliver_message(topic, data, origin, sent_at)
        if ttl <= 1 or origin == self.name:
            return
        item = link.protocol.encode_item(
            FORWARD, origin, ident, ttl - 1, topic, data, sent_at
        )
        for other in list(self.links.values()):
            if other is link or other.peer.name == origin:
                continue
            try:
                await other.send_item(item)
                self._forwarded += 1
            except ClosedResourceError:
                continue

    # -- discovery -------------------------------------------------------------

    def _announce_soon(self) -> None:
        """Announce now, or once the rate limit allows (one pending at most).

        The periodic announcement's timer is replaced: it restarts from this
        announcement.
        """
        if self._stopped or self._announce_soon_pending:
            return
        if self._announce_timer is not None:
            self._announce_timer.cancel()
        self.discovery.trickle.reset()
        self._announce_soon_pending = True
        wait = self._last_announce + _ANNOUNCE_SPACING_S
        delay = max(0.0, wait - self.runtime.now())
        self._announce_timer = self.runtime.call_later(delay, self._announce_due)

    def _announce_due(self) -> None:
        self._announce_timer = None
        self._announce_soon_pending = False
        if self._stopped or not self.topics:
            return
        self._last_announce = self.runtime.now()
        announcement = self.discovery.announcement(
            self.node_id, self._advertised_host(), self.address[1], self.topics
        )
        self.runtime.spawn(self._flood(announcement, None), name="announce")
        # The periodic re-announcement: a single timer, replaced each time,
        # waiting twice as long each time nothing has changed in between.
        self._announce_timer = self.runtime.call_later(
            self.discovery.trickle.next_wait(), self._announce_due
        )

    async def _flood(self, announcement: Announcement, came_from: Link | None) -> None:
        fields = announcement.fields()
        for link in list(self.links.values()):
            if link is came_from or link.peer.name == announcement.origin:
                continue
            if not self.discovery.routes.neighbour(link.peer.name):
                continue  # floods keep to the overlay; partners get introductions
            await self._send_quietly(link, ANNOUNCE, *fields)

    async def _introduce(self, link: Link) -> None:
        """Introduce a new peer and our other peers to each other, where they
        share a topic: whichever of each such pair has the smaller name dials,
        so only that one is told.

        This closes triangles within a topic at the cost of a frame per
        neighbour, where a flood would cost one per link within the ttl.
        """
        new = link.peer
        for other in list(self.links.values()):
            if other is link or not other.connected:
                continue
            if not other.topics.intersection(link.topics):
                continue
            if new.name < other.peer.name:
                intro = _introduction(other.peer, other.topics)
                await self._send_quietly(link, ANNOUNCE, *intro)
            else:
                intro = _introduction(new, link.topics)
                await self._send_quietly(other, ANNOUNCE, *intro)

    async def _announced(self, link: Link, announcement: Announcement) -> None:
        new, onward = self.discovery.receive(announcement, self.topics)
        if not new:
            return  # seen before: already acted on and relayed
        want = self.discovery.wants(
            announcement, self.topics, self._linked_to(announcement)
        )
        if announcement.origin in self._dialling:
            self._dialling[announcement.origin] = announcement
        elif want == "dial":
            self._start_pairing(announcement)
        elif want == "answer" and announcement.ident != INTRODUCTION:
            self._announce_soon()
        if onward is not None:
            # Relayed from a task of its own: the reader must not wait on some
            # other link's full window (a stalled peer), or it stops hearing
            # its own peer, and that link is declared dead too.
            self.runtime.spawn(self._flood(onward, link), name="relay")

    def _own_routes(self) -> None:
        if not self._started:
            return
        own = Route(
            self.name, self.node_id, self._advertised_host(), self.address[1], 0
        )
        self.discovery.routes.set_own(own, self.topics)
        self._routes_soon()

    def _routes_soon(self) -> None:
        """Send route changes shortly, batched (one pending flush at most)."""
        if self._stopped or self._routes_timer is not None:
            return
        self._routes_timer = self.runtime.call_later(_ROUTES_DELAY_S, self._routes_due)

    def _routes_due(self) -> None:
        self._routes_timer = None
        if self._stopped:
            return
        out, news = self.discovery.routes.flush()
        if out:
            self.runtime.spawn(self._send_routes(out), name="routes")
        for topic, route in news.items():
            self._seek(topic, route)

    async def _send_routes(
        self, out: list[tuple[str, bool, list[list[object]]]]
    ) -> None:
        for name, whole, entries in out:
            link = self.links.get(name)
            if link is None:
                continue
            for start in range(0, max(1, len(entries)), ROUTES_PER_FRAME):
                chunk = entries[start : start + ROUTES_PER_FRAME]
                if not await self._send_quietly(
                    link, ROUTES, whole and not start, chunk
                ):
                    # The whole table goes again once the link is back.
                    self.discovery.routes.resync(name)
                    break

    def _overlay_link(self, link: Link) -> None:
        if not self.discovery.routes.neighbour(link.peer.name):
            self.discovery.routes.add_neighbour(link.peer.name)
            self._routes_soon()

    async def _routes_in(self, link: Link, frame: Frame) -> None:
        whole, entries = frame.fields
        # Routes come only over the overlay: a peer that sends them joined
        # through this link (perhaps after discovery had paired us).
        self._overlay_link(link)
        self.discovery.routes.receive(link.peer.name, whole, parse_routes(entries))
        if self.discovery.routes.pending:
            self._routes_soon()

    def _routes_link_closed(self, link: Link, reason: str) -> None:
        if self.links.get(link.peer.name) is None:
            self.discovery.routes.remove_neighbour(link.peer.name)
            # If it was a topic's smallest member, seek it again at the next
            # flush (it may have restarted, or be reachable once more).
            self.discovery.routes.forget_member(link.peer.name)
            self._routes_soon()

    def _seek(self, topic: str, route: Route) -> None:
        """Get ``route.member``, smaller than us, to dial us: a SEEK along the route."""
        announcement = Announcement(
            route.member,
            route.node_id,
            route.host,
            route.port,
            (topic,),
            INTRODUCTION,
            1,
        )
        if self._linked_to(announcement):
            return
        via = self.discovery.routes.via(topic, route.member)
        link = self.links.get(via) if via is not None else None
        if link is None:
            return
        self.discovery.seeks += 1
        fields = (
            route.member,
            topic,
            route.distance + 1,
            self.name,
            self.node_id,
            self._advertised_host(),
            self.address[1],
        )
        self.runtime.spawn(self._send_quietly(link, SEEK, *fields), name="seek")

    async def _seek_in(self, link: Link, frame: Frame) -> None:
        target, topic, ttl, origin, node_id, host, port = frame.fields
        if target == self.name:
            announcement = Announcement(
                origin, node_id, host, port, (topic,), INTRODUCTION, 1
            )
            await self._announced(link, announcement)
            return
        via = self.discovery.routes.via(topic, target)
        onward = self.links.get(via) if via is not None else None
        if ttl <= 1 or onward is None or onward is link:
            return  # spent, or no route any more: the periodic floods remain
        # No route is longer than the reach, whatever ttl the sender chose.
        ttl = min(ttl, self.settings.discovery_reach + 1)
        fields = (target, topic, ttl - 1, origin, node_id, host, port)
        self.runtime.spawn(self._send_quietly(onward, SEEK, *fields), name="seek")

    def _linked_to(self, announcement: Announcement) -> bool:
        if announcement.origin in self._dialling:
            return True
        link = self.links.get(announcement.origin)
        if link is None:
            return False
        # A link left waiting for an earlier life of the origin (it crashed
        # and came back under a new id) must not stop pairing with this one:
        # the acceptor of that link would otherwise wait for a dial that the
        # restarted node, which forgot us, never makes.
        return link.connected or link.peer.node_id == announcement.node_id

    def _start_pairing(self, announcement: Announcement) -> None:
        if len(self.links) + len(self._dialling) >= self.settings.max_connections:
            return
        self.discovery.dials += 1
        self._dialling[announcement.origin] = None
        self.runtime.spawn(self._pair(announcement), name=f"pair-{announcement.origin}")

    async def _pair(self, announcement: Announcement) -> None:
        link = None
        try:
            stream = await self._dial(announcement.host, announcement.port)
            link = await self._handshake(stream, dialled=True, pairing=True)
        except (ConnectError, BrokenResourceError, ClosedResourceError) as exc:
            # Closed: this node stopped while the handshake was under way.
            self.discovery_log.debug(
                "pairing with %s failed: %s", announcement.origin, exc
            )
        finally:
            news = self._dialling.pop(announcement.origin, None)
        if link is not None:
            self.discovery_log.info(
                "paired with %s on %s",
                announcement.origin,
                sorted(self.topics.intersection(announcement.topics)),
            )
        elif news is not None and not self._stopped:
            # The origin was announced or introduced again while this dial was
            # under way, and the dial failed: it may have been out of reach
            # when the dial began (cut off, a dial's SYNs all lost) and back
            # since. Act on the news now rather than at the next periodic
            # announcement (chaos_mesh seed 225).
            linked = self._linked_to(news)
            if self.discovery.wants(news, self.topics, linked) == "dial":
                self._start_pairing(news)

    def receive(self) -> Coroutine[Any, Any, Message]:
        """The next message from the inbox (topics without a sink); await it.

        A plain method handing back the inbox's coroutine, which saves a
        coroutine per message over an ``async def`` that awaits it.
        """
        return self.inbox.get()

    def receive_batch(
        self, limit: int | None = None
    ) -> Coroutine[Any, Any, list[Message]]:
        """The messages waiting in the inbox, at most ``limit``; await it.

        Waits for one if none is there. A consumer that keeps up with a busy
        peer gets what arrived together in one list, for one ``await``
        rather than one per message.
        """
        return self.inbox.get_batch(limit)

    def set_sink(self, topic: str, sink: MessageSink | None) -> None:
        """Route ``topic``'s messages to ``sink`` instead of the inbox."""
        if sink is None:
            self._sinks.pop(topic, None)
        else:
            self._sinks[topic] = sink

    def add_frame_handler(self, kind: int, handler: FrameHandler) -> None:
        """Let a higher layer handle frames of ``kind`` received on any link."""
        if kind in self._handlers:
            raise ValueError(f"frame kind {kind} already has a handler")
        if kind in _NODE_KINDS or kind in UNNUMBERED:
            raise ValueError(f"frame kind {kind} is the node's own")
        self._handlers[kind] = handler

    def watch_links(self, watcher: LinkWatcher) -> None:
        """Call ``watcher(link, reason)`` whenever a link is closed for good.

        Higher layers use it to fail what they had in flight on that link.
        """
        self._link_watchers.append(watcher)

    # -- datagrams -----------------------------------------------------------

    def add_datagram_handler(self, kind: int, handler: DatagramHandler) -> None:
        """Let a higher layer handle datagrams of ``kind`` from linked peers."""
        if kind in self._datagram_handlers:
            raise ValueError(f"datagram kind {kind} already has a handler")
        self._datagram_handlers[kind] = handler

    def send_datagram(self, peer: str, kind: int, *fields: Any) -> bool:
        """Send one frame to ``peer`` over UDP: unordered, maybe lost.

        Returns False when the peer has no datagram address. A frame larger
        than ``settings.datagram_max_size`` raises ValueError: splitting it
        would make its loss likelier, so the caller must decide.
        """
        link = self.links.get(peer)
        if link is None or link.peer.datagram_address is None or self._datagram is None:
            return False
        data = link.protocol.encode(kind, *fields)
        if len(data) > self.settings.datagram_max_size:
            raise ValueError(
                f"datagram of {len(data)} bytes exceeds datagram_max_size="
                f"{self.settings.datagram_max_size}"
            )
        self._datagram.send(data, link.peer.datagram_address)
        self._datagrams_out += 1
        return True

    async def _read_datagrams(self, endpoint: DatagramEndpoint) -> None:
        while True:
            try:
                data, source = await endpoint.receive()
            except ClosedResourceError:
                return
            self._on_datagram(data, source)

    def _on_datagram(self, data: bytes, source: Address) -> None:
        # Only linked peers may use datagrams: nothing is acted on from an
        # address that has not completed a handshake over a stream.
        name = self._datagram_peers.get(source)
        link = self.links.get(name) if name is not None else None
        handler = None
        try:
            if link is None:
                raise ProtocolError(f"datagram from unknown address {source}")
            frame = check_frame(
                decode_frame(data, max_frame_size=self.settings.datagram_max_size)
            )
            handler = self._datagram_handlers.get(frame.kind)
            if handler is None:
                raise ProtocolError(f"no datagram handler for {frame.name}")
        except ProtocolError as exc:
            self._datagrams_refused += 1
            self.link_log.debug("refused datagram from %s: %s", source, exc)
            return
        self._datagrams_in += 1
        handler(link, frame)

    # -- ping ----------------------------------------------------------------

    async def ping(
        self, peer: str, count: int = 1, *, via: str = "stream"
    ) -> list[float]:
        """Round-trip times to ``peer`` in seconds, one per ping, in order.

        ``via="stream"`` pings in band, behind whatever the link is sending;
        ``via="datagram"`` pings over UDP, which sees the path without the
        link's queue (and raises TimeoutError when a datagram is lost). Both
        feed the link's RTT estimate (``Link.rtts``).
        """
        if count < 1:
            raise ConfigError(f"ping count must be at least 1, got {count}")
        if via not in ("stream", "datagram"):
            raise ConfigError(f"ping via 'stream' or 'datagram', got {via!r}")
        link = self.links.get(peer)
        if link is None:
            raise ConnectError(f"{self.name} has no link to {peer!r}")
        return [await self._ping_once(link, via) for _ in range(count)]

    async def _ping_once(self, link: Link, via: str = "stream") -> float:
        ping_id = next(self._ping_ids)
        waiter: Future[float] = self.runtime.create_future()
        self._pings[ping_id] = waiter
        try:
            if via == "stream":
                await link.send_frame(PING, ping_id, self.runtime.now())
            elif not self.send_datagram(
                link.peer.name, PING, ping_id, self.runtime.now()
            ):
                raise ConnectError(f"{link.peer.name} has no datagram address")
            async with self.runtime.timeout(self.settings.ping_timeout_s):
                rtt = await waiter
        finally:
            self._pings.pop(ping_id, None)
        link.rtts.append(rtt)
        return rtt

    def _pong(self, link: Link, ping_id: int, sent_at: float) -> None:
        waiter = self._pings.get(ping_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(self.runtime.now() - sent_at)

    def _datagram_ping(self, link: Link, frame: Frame) -> None:
        self.send_datagram(link.peer.name, PONG, *frame.fields)

    def _datagram_pong(self, link: Link, frame: Frame) -> None:
        self._pong(link, frame.fields[0], frame.fields[1])

    # -- statistics ----------------------------------------------------------

    def statistics(self) -> NodeStatistics:
        per_link = tuple(_link_statistics(link) for link in self.links.values())
        return NodeStatistics(
            name=self.name,
            links=len(self.links),
            published=self._published,
            delivered=self._delivered,
            unroutable=self._unroutable,
            protocol_errors=self._protocol_errors,
            datagrams_in=self._datagrams_in,
            datagrams_out=self._datagrams_out,
            datagrams_refused=self._datagrams_refused,
            inbox=self.inbox.statistics(),
            per_link=per_link,
            reconnections=self._reconnections,
            peers_declared_dead=self._declared_dead,
            sessions_lost=self._sessions_lost,
            frames_abandoned=self._abandoned,
            send_buffer_dropped=sum(s.dropped for s in per_link),
            forwarded=self._forwarded,
            discovery=self.discovery.statistics(),
        )


def _link_statistics(link: Link) -> LinkStatistics:
    session = link.session.statistics()
    return LinkStatistics(
        peer=link.peer.name,
        state=link.state,
        frames_in=link.frames_in,
        frames_out=link.frames_out,
        bytes_in=link.bytes_in,
        bytes_out=link.bytes_out,
        opened_at=link.opened_at,
        rtt_last=link.rtts.last,
        rtt_samples=len(link.rtts),
        srtt=link.rtts.srtt,
        rttvar=link.rtts.rttvar,
        unacked=session.unacked,
        resent=session.resent,
        dropped=session.dropped,
        duplicates=session.duplicates,
        skipped=session.skipped,
        connections=link.connections,
        reconnections=link.reconnections,
    )


def _introduction(peer: PeerInfo, topics: Iterable[str]) -> tuple[object, ...]:
    """An announcement of ``peer`` on its behalf, for one hop only."""
    return Announcement(
        peer.name,
        peer.node_id,
        peer.address[0],
        peer.address[1],
        tuple(sorted(topics)),
        INTRODUCTION,
        1,
    ).fields()


# A node announces itself at most once a second, however many answers and
# new links ask for it: bounds the floods a burst of joins can start.
# Arbitrary; a second is short against discovery_interval_s.
_ANNOUNCE_SPACING_S: Final = 1.0

# Building the tuple directly skips the named tuple's __new__ in Python.
_new_message = tuple.__new__

# The kinds that Node._dispatch handles itself: no higher layer may take them.
_NODE_KINDS: Final = frozenset(
    {SEQ, ACK, HEARTBEAT, PUB, PING, PONG, SUB, UNSUB, ANNOUNCE, FORWARD, BYE}
)


def _publish_messages(
    items: list[Any], source: str, clock: Callable[[], float]
) -> tuple[list[Message], bool] | None:
    """The messages of a numbered frame's items, if all are plain publishes.

    Also says whether they are of more than one topic. None if any item is
    something else, or a publish with anything unusual about it: then
    :func:`check_numbered` has the final word. Checking and building in one
    pass over the items is what a subscriber spends most of its time on
    per message, after its own code.
    """
    messages: list[Message] = []
    append = messages.append
    current = None
    mixed = False
    now = 0.0
    for item in items:
        if type(item) is not list or len(item) != 4:
            return None
        kind, topic, data, sent_at = item
        if (
            type(kind) is not int
            or kind != PUB
            or type(topic) is not str
            or type(sent_at) not in PUB_TIME_TYPES
        ):
            return None
        if topic != current:
            if current is None:
                now = clock()
            else:
                mixed = True
            current = topic
        append(_new_message(Message, (topic, data, source, sent_at, now)))
    if not messages:
        return None
    return messages, mixed


# Publishes in a row to one topic, without a shared batch, after which its
# links write their batches early so as to share the next one. Publishes to
# several topics whose links overlap cannot share, and writing early there
# would only make small frames; a long run of one topic's publishes shows
# that its links are merely out of step. Arbitrary.
_REALIGN_AFTER: Final = 16

# Topics whose links a node remembers for publishing; beyond this it
# forgets them all and looks them up again. Arbitrary, far above the
# topics a node usually publishes on.
_FANOUTS_KEPT: Final = 1024

# Route changes wait this long to travel together: one frame per neighbour
# for a burst of changes. A twentieth of a second took a third more frames on
# a growing 200-node overlay; a tenth costs 2 s per 20 hops of distance.
# Arbitrary.
_ROUTES_DELAY_S: Final = 0.1

# Forwarded messages share the discovery's memory of what it has seen; the
# prefix keeps a message id apart from an announcement id of the same origin.
_FORWARD_PREFIX: Final = "msg:"


@dataclass(frozen=True, slots=True)
class _Hello:
    """A peer's hello, with the session options read out of it."""

    name: str
    node_id: str
    host: str
    port: int
    topics: list[Any]
    datagram_address: Address | None
    peer_id: str | None
    received: int
    base: int
    continued: bool
    pairing: bool = False
    buffer: int = 0  # the peer's send_buffer_frames; 0 if it did not say

    @classmethod
    def parse(cls, frame: Frame) -> _Hello:
        if frame.kind != HELLO:
            raise ProtocolError(f"expected a hello, got {frame.name}")
        name, node_id, host, port, topics, options = frame.fields

        def number(key: str) -> int:
            value = options.get(key, 0)
            if type(value) is not int or value < 0:
                raise ProtocolError(f"hello option {key!r} must be an int >= 0")
            return value

        udp = options.get("udp")
        peer_id = options.get("peer_id")
        return cls(
            name,
            node_id,
            host,
            port,
            topics,
            (host, udp) if type(udp) is int else None,
            peer_id if isinstance(peer_id, str) else None,
            number("received"),
            number("base"),
            options.get("continued") is True,
            options.get("pairing") is True,
            number("buffer"),
        )

    def peer_info(self) -> PeerInfo:
        return PeerInfo(
            self.name,
            self.node_id,
            (self.host, self.port),
            frozenset(t for t in self.topics if isinstance(t, str)),
            self.datagram_address,
        )


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no hello in time"
    return str(exc) or type(exc).__name__
