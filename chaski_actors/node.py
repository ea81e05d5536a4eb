"""Nodes: the actors that join a network, pair with peers and exchange messages.

A :class:`Node` owns one listener and one :class:`Link` per paired peer. A
link is a stream plus a :class:`LinkProtocol`; a task per link reads the
stream, lets the protocol check the frames and hands each one to the node.
Handshake, subscriptions, publishing and pings live here; higher layers add
their own frame kinds through :meth:`Node.add_frame_handler`.

Received messages of a subscribed topic go to a sink registered for that
topic (a streamer, say) or else to the node's inbox, a bounded
:class:`~chaski_actors.sync.Queue` whose overflow rule comes from the
settings. Under the ``wait`` rule a full inbox stops the link's reader, and
so, through the transport's window, the publisher: back-pressure, not loss.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .codec import decode_frame
from .errors import (
    BrokenResourceError,
    ClosedResourceError,
    ConfigError,
    ConnectError,
    ProtocolError,
)
from .log import node_logger
from .protocol import (
    BYE,
    HELLO,
    PING,
    PONG,
    PUB,
    SUB,
    UNSUB,
    Frame,
    LinkProtocol,
    LinkState,
    check_frame,
)
from .runtime import (
    Address,
    DatagramEndpoint,
    Future,
    Listener,
    Runtime,
    Stream,
    Task,
    TlsConfig,
)
from .settings import Settings
from .sync import Queue, QueueStatistics

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


@dataclass(frozen=True, slots=True)
class Message:
    """A published message as the receiving application sees it."""

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


MessageSink = Callable[[Message], Awaitable[None]]
FrameHandler = Callable[["Link", Frame], Awaitable[None]]
DatagramHandler = Callable[["Link", Frame], None]
LinkWatcher = Callable[["Link", str], None]


class Link:
    """A handshaken connection to one peer."""

    def __init__(
        self, node: Node, stream: Stream, protocol: LinkProtocol, peer: PeerInfo
    ) -> None:
        self.node = node
        self.stream = stream
        self.protocol = protocol
        self.peer = peer
        self.topics: set[str] = set(peer.topics)
        self.opened_at = node.runtime.now()
        self.rtts: list[float] = []
        self.reader: Task[None] | None = None
        self.closed = False

    def __repr__(self) -> str:
        return (
            f"<Link {self.node.name}->{self.peer.name} {self.protocol.state.value} "
            f"topics={sorted(self.topics)} out={self.protocol.frames_out}>"
        )

    async def send_frame(self, kind: int, *fields: Any) -> None:
        await self.send_bytes(self.protocol.encode(kind, *fields))

    async def send_bytes(self, data: bytes) -> None:
        if self.closed:
            raise ClosedResourceError(f"link to {self.peer.name} is closed")
        self.protocol.sent(data)
        await self.stream.send(data)

    def statistics(self) -> LinkStatistics:
        p = self.protocol
        return LinkStatistics(
            peer=self.peer.name,
            state="closed" if self.closed else p.state.value,
            frames_in=p.frames_in,
            frames_out=p.frames_out,
            bytes_in=p.bytes_in,
            bytes_out=p.bytes_out,
            opened_at=self.opened_at,
            rtt_last=self.rtts[-1] if self.rtts else None,
            rtt_samples=len(self.rtts),
        )


class Node:
    """A participant of the network; see the module essay.

    ``async with Node(runtime, "a") as node:`` starts listening and stops on
    exit, closing every link.
    """

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
        self._handlers: dict[int, FrameHandler] = {}
        self._pings: dict[int, Future[float]] = {}
        self._ping_ids = itertools.count(1)
        self._listener: Listener | None = None
        self._datagram: DatagramEndpoint | None = None
        self._datagram_reader: Task[None] | None = None
        self._datagram_handlers: dict[int, DatagramHandler] = {}
        self._link_watchers: list[LinkWatcher] = []
        self._datagram_peers: dict[Address, str] = {}
        self._datagrams_in = self._datagrams_out = self._datagrams_refused = 0
        self._pending: set[Stream] = set()
        self._started = False
        self._stopped = False
        self._published = self._delivered = self._unroutable = 0
        self._protocol_errors = 0
        self.log = node_logger("node", runtime, name)
        self.link_log = node_logger("link", runtime, name)

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

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
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
        or does not finish within ``settings.handshake_timeout_s``.
        """
        self._check_running()
        try:
            async with self.runtime.timeout(self.settings.connect_timeout_s):
                stream = await self.runtime.connect(host, port, tls=self.tls)
        except TimeoutError as exc:
            raise ConnectError(
                f"{self.name}: no answer from {host}:{port} within "
                f"{self.settings.connect_timeout_s} s"
            ) from exc
        link = await self._handshake(stream)
        if link is None:
            raise ConnectError(f"{self.name}: handshake with {host}:{port} failed")
        return link.peer

    async def _accepted(self, stream: Stream) -> None:
        if self._stopped:
            stream.abort()
            return
        await self._handshake(stream)

    async def _handshake(self, stream: Stream) -> Link | None:
        protocol = LinkProtocol(max_frame_size=self.settings.max_frame_size)
        self._pending.add(stream)
        advertised = set(self.topics)
        try:
            hello = protocol.encode(
                HELLO,
                self.name,
                self.node_id,
                self._advertised_host(),
                self.address[1],
                sorted(advertised),
                self._hello_options(),
            )
            await stream.send(hello)
            protocol.sent(hello)
            async with self.runtime.timeout(self.settings.handshake_timeout_s):
                frames = await self._read_hello(stream, protocol)
        except (TimeoutError, ProtocolError, BrokenResourceError) as exc:
            self._protocol_errors += isinstance(exc, ProtocolError)
            self.link_log.warning(
                "handshake with %s:%s failed: %s", *stream.peer_address, _why(exc)
            )
            stream.abort()
            return None
        finally:
            self._pending.discard(stream)

        link = self._open_link(stream, protocol, frames[0])
        if link is None:
            return None
        # Topics changed while the hellos crossed: the peer has not heard.
        for topic in sorted(self.topics - advertised):
            await self._send_quietly(link, SUB, topic)
        for topic in sorted(advertised - self.topics):
            await self._send_quietly(link, UNSUB, topic)
        for frame in frames[1:]:
            await self._dispatch(link, frame)
        return link

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

    def _open_link(
        self, stream: Stream, protocol: LinkProtocol, hello: Frame
    ) -> Link | None:
        name, node_id, host, port, topics, options = hello.fields
        if not all(isinstance(t, str) for t in topics):
            self._refuse(stream, f"hello from {name} lists a non-string topic")
            return None
        if name == self.name:
            self._refuse(stream, "connected to itself")
            return None
        if self.tls is not None and stream.peer_identity != name:
            # With TLS a peer is who its certificate says, whatever it calls
            # itself; a hello under another name is an impersonation attempt.
            self._refuse(
                stream,
                f"hello names {name!r}, certificate names {stream.peer_identity!r}",
            )
            return None
        if name in self.links:
            # Both sides dialled at once, or a stale reconnect: keep the link
            # we already have, so each pair of nodes has exactly one.
            self._refuse(stream, f"already linked to {name}")
            return None
        if len(self.links) >= self.settings.max_connections:
            self._refuse(stream, f"max_connections={self.settings.max_connections}")
            return None

        udp = options.get("udp")
        datagram_address = (host, udp) if type(udp) is int else None
        peer = PeerInfo(
            name, node_id, (host, port), frozenset(topics), datagram_address
        )
        link = Link(self, stream, protocol, peer)
        self.links[name] = link
        if datagram_address is not None:
            self._datagram_peers[datagram_address] = name
        link.reader = self.runtime.spawn(self._read_loop(link), name=f"read-{name}")
        self.link_log.info("linked to %s at %s:%s", name, host, port)
        return link

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

    async def _read_loop(self, link: Link) -> None:
        reason = "peer closed the connection"
        try:
            while True:
                data = await link.stream.receive(_READ_SIZE)
                if not data:
                    break
                frames, error = link.protocol.receive_data(data)
                for frame in frames:
                    await self._dispatch(link, frame)
                if error is not None:
                    raise error
                if link.protocol.state is LinkState.CLOSED:
                    reason = "peer said goodbye"
                    break
        except ProtocolError as exc:
            self._protocol_errors += 1
            reason = f"protocol error: {exc}"
            self.link_log.warning("dropping %s: %s", link.peer.name, reason)
        except (BrokenResourceError, ClosedResourceError) as exc:
            reason = _why(exc)
        await self._close_link(link, reason, polite=False, from_reader=True)

    async def _dispatch(self, link: Link, frame: Frame) -> None:
        kind, fields = frame.kind, frame.fields
        if kind == PUB:
            await self._deliver(link, fields)
        elif kind == PING:
            await link.send_frame(PONG, fields[0], fields[1])
        elif kind == PONG:
            self._pong(link, fields[0], fields[1])
        elif kind == SUB:
            link.topics.add(fields[0])
        elif kind == UNSUB:
            link.topics.discard(fields[0])
        elif kind == BYE:
            self.link_log.debug("bye from %s: %s", link.peer.name, fields[0])
        else:
            handler = self._handlers.get(kind)
            if handler is None:
                raise ProtocolError(f"no handler for frame {frame.name}")
            await handler(link, frame)

    async def _deliver(self, link: Link, fields: tuple[Any, ...]) -> None:
        topic, data, sent_at = fields
        if topic not in self.topics:
            self._unroutable += 1
            return
        message = Message(topic, data, link.peer.name, sent_at, self.runtime.now())
        self._delivered += 1
        sink = self._sinks.get(topic)
        if sink is not None:
            await sink(message)
        elif not self.inbox.closed:
            await self.inbox.put(message)

    async def _close_link(
        self, link: Link, reason: str, *, polite: bool, from_reader: bool = False
    ) -> None:
        if link.closed:
            return
        if polite:
            await self._send_quietly(link, BYE, reason)
        link.closed = True
        if self.links.get(link.peer.name) is link:
            del self.links[link.peer.name]
            if link.peer.datagram_address is not None:
                self._datagram_peers.pop(link.peer.datagram_address, None)
        if polite:
            await link.stream.aclose()
        else:
            link.stream.abort()
        if link.reader is not None and not from_reader:
            link.reader.cancel()
        self.link_log.info("link to %s closed: %s", link.peer.name, reason)
        for watcher in self._link_watchers:
            watcher(link, reason)

    # -- subscriptions and publishing ---------------------------------------

    async def subscribe(self, *topics: str) -> None:
        await self._change_topics(topics, SUB)

    async def unsubscribe(self, *topics: str) -> None:
        await self._change_topics(topics, UNSUB)

    async def _change_topics(self, topics: Iterable[str], kind: int) -> None:
        for topic in topics:
            if not isinstance(topic, str) or not topic:
                raise ConfigError(f"a topic is a non-empty string, got {topic!r}")
            if (topic in self.topics) == (kind == SUB):
                continue
            if kind == SUB:
                self.topics.add(topic)
            else:
                self.topics.discard(topic)
            for link in list(self.links.values()):
                await self._send_quietly(link, kind, topic)

    async def _send_quietly(self, link: Link, kind: int, *fields: Any) -> bool:
        """Send, treating a broken link as the reader's business, not ours."""
        try:
            await link.send_frame(kind, *fields)
        except (BrokenResourceError, ClosedResourceError):
            return False
        return True

    async def publish(self, topic: str, data: Any) -> int:
        """Send ``data`` to every linked peer subscribed to ``topic``.

        Returns the number of peers it was sent to. The frame is encoded once
        for all of them.
        """
        self._check_running()
        links = [link for link in self.links.values() if topic in link.topics]
        if not links:
            return 0
        frame = links[0].protocol.encode(PUB, topic, data, self.runtime.now())
        sent = 0
        for link in links:
            try:
                await link.send_bytes(frame)
                sent += 1
            except (BrokenResourceError, ClosedResourceError):
                continue
        self._published += 1
        return sent

    async def receive(self) -> Message:
        """The next message from the inbox (topics without a sink)."""
        return await self.inbox.get()

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

    async def ping(self, peer: str, count: int = 1) -> list[float]:
        """Round-trip times to ``peer`` in seconds, one per ping, in order."""
        if count < 1:
            raise ConfigError(f"ping count must be at least 1, got {count}")
        link = self.links.get(peer)
        if link is None:
            raise ConnectError(f"{self.name} has no link to {peer!r}")
        return [await self._ping_once(link) for _ in range(count)]

    async def _ping_once(self, link: Link) -> float:
        ping_id = next(self._ping_ids)
        waiter: Future[float] = self.runtime.create_future()
        self._pings[ping_id] = waiter
        try:
            await link.send_frame(PING, ping_id, self.runtime.now())
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

    # -- statistics ----------------------------------------------------------

    def statistics(self) -> NodeStatistics:
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
            per_link=tuple(link.statistics() for link in self.links.values()),
        )


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no hello in time"
    return str(exc) or type(exc).__name__
