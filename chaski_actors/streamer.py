"""Streamers: consume a node's messages by topic with ``async for``.

::

    streams = Streams(node)
    async with streams.streamer("prices") as stream:
        async for message in stream:
            ...

Entering the block subscribes the node to the topics (unless it already was)
and routes their messages into the streamer's queue; leaving it unsubscribes,
closes the queue and keeps what was still unread in
:attr:`Streamer.left_over`, so nothing queued disappears unseen.

Flow control
------------
Each streamer has a bounded :class:`~chaski_actors.sync.Queue`. Under the
``wait`` policy a full queue makes the link's reader wait; the reader stops
draining the connection, the transport's window fills, and the producer's
``publish`` waits in its turn. Memory on the way is bounded by the queue, the
messages of one numbered frame held by the reader (a batch, at most 256
messages or 64 KiB), and the windows of the transport, whatever the producer
tries to send. A batch goes into the queue in one piece and wakes the
consumer once, not once per message. Under a drop policy the reader never waits: the
oldest or the newest message is dropped and counted instead.

A waiting reader stops every topic of its link, not only the slow one, as
TCP itself would. A consumer that must not hold up other traffic from the
same peer should use a drop policy.

Unreliable topics
-----------------
A producer may declare a topic unreliable with
:meth:`Streams.declare_unreliable`. Its messages then travel as datagrams
(UDP, or the simulated network's datagrams, which see the topology's loss),
one per message and per subscribed peer: they are size-bounded by
``datagram_max_size``, unordered, and may be lost. Each carries a sequence
number per producer and topic, so the receiver counts the gaps
(``missing``) as well as what its own full queue drops. Nothing waits on this
path, ever: freshness matters more than completeness here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from .errors import ClosedResourceError, ConfigError
from .log import node_logger
from .node import Link, Message, Node
from .protocol import ANY, INT, NUM, STR, Frame, register_kind
from .settings import Overflow
from .sync import Queue, QueueStatistics

__all__ = [
    "DATAGRAM_PUB",
    "Streamer",
    "StreamerStatistics",
    "Streams",
    "StreamsStatistics",
]

DATAGRAM_PUB: Final = 40  # topic, sequence number, data, sent_at

register_kind(DATAGRAM_PUB, "datagram-pub", STR, INT, ANY, NUM)


@dataclass(frozen=True, slots=True)
class StreamerStatistics:
    topics: tuple[str, ...]
    state: str
    queue: QueueStatistics
    received: int
    late: int  # arrived after the streamer closed, counted and not kept
    left_over: int  # unread when the streamer closed, kept in left_over


@dataclass(frozen=True, slots=True)
class StreamsStatistics:
    streamers: int
    unreliable_topics: tuple[str, ...]
    datagrams_sent: int
    datagrams_unsent: int  # subscribed peers that had no datagram address
    datagrams_received: int
    datagrams_missing: int  # gaps in the producers' sequence numbers
    datagrams_unroutable: int  # for a topic this node does not subscribe
    datagrams_dropped: int  # refused by a full or closed queue


class Streamer:
    """Messages of some topics, in a bounded queue; see the module essay.

    Made by :meth:`Streams.streamer`. Use it once, as ``async with``.
    """

    def __init__(
        self,
        streams: Streams,
        topics: tuple[str, ...],
        maxsize: int,
        overflow: Overflow,
    ) -> None:
        self._streams = streams
        self.topics = topics
        self.queue: Queue[Message] = Queue(streams.node.runtime, maxsize, overflow)
        self.left_over: list[Message] = []
        self._state = "new"
        self._subscribed_here: tuple[str, ...] = ()
        self._received = self._late = 0

    def __repr__(self) -> str:
        return (
            f"<Streamer {','.join(self.topics)} {self._state} "
            f"queued={len(self.queue)}/{self.queue.maxsize} "
            f"left_over={len(self.left_over)}>"
        )

    async def __aenter__(self) -> Streamer:
        if self._state != "new":
            raise ClosedResourceError("a streamer can be entered only once")
        node = self._streams.node
        self._streams._claim(self)
        self._state = "open"
        for topic in self.topics:
            node.set_sink(topic, self._put)
        self._subscribed_here = tuple(t for t in self.topics if t not in node.topics)
        await node.subscribe(*self._subscribed_here)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop consuming; unread messages move to :attr:`left_over`."""
        if self._state != "open":
            return
        self._state = "closed"
        node = self._streams.node

        # Unsubscribing first makes the node count later arrivals as
        # unroutable; closing the queue wakes a reader waiting to put.
        await node.unsubscribe(*self._subscribed_here)
        for topic in self.topics:
            node.set_sink(topic, None)
        self._streams._release(self)
        self.queue.close()
        self.left_over = self.queue.drain()

        if self.left_over:
            self._streams.log.info(
                "streamer %s closed with %d unread messages kept in left_over",
                ",".join(self.topics),
                len(self.left_over),
            )

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.queue.get()
        except ClosedResourceError:
            raise StopAsyncIteration from None

    async def receive(self) -> Message:
        """The next message; ClosedResourceError once closed and drained."""
        return await self.queue.get()

    async def receive_batch(self, limit: int | None = None) -> list[Message]:
        """The waiting messages, at most ``limit``; see :meth:`Node.receive_batch`.

        ClosedResourceError once closed and drained.
        """
        return await self.queue.get_batch(limit)

    async def _put(self, messages: list[Message]) -> None:
        self._received += len(messages)
        self._late += len(messages) - await self.queue.put_many(messages)

    def _offer(self, message: Message) -> bool:
        """Queue without waiting, for datagrams; False if it was dropped."""
        self._received += 1
        try:
            return self.queue.put_nowait(message)
        except ClosedResourceError:
            self._late += 1
            return False

    def statistics(self) -> StreamerStatistics:
        return StreamerStatistics(
            topics=self.topics,
            state=self._state,
            queue=self.queue.statistics(),
            received=self._received,
            late=self._late,
            left_over=len(self.left_over),
        )


class Streams:
    """The streaming layer of one node: streamers and unreliable topics.

    ``Streams(node)`` adds the datagram kind to ``node``; make one per node.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.log = node_logger("node", node.runtime, node.name)
        self._streamers: dict[str, Streamer] = {}
        self._unreliable: dict[str, int] = {}  # topic -> last sequence number
        self._heard: dict[tuple[str, str], tuple[int, int]] = {}  # highest, count
        self._sent = self._unsent = self._received = 0
        self._unroutable = self._dropped = 0
        node.add_datagram_handler(DATAGRAM_PUB, self._on_datagram)

    def __repr__(self) -> str:
        return (
            f"<Streams {self.node.name} streamers={sorted(self._streamers)} "
            f"unreliable={sorted(self._unreliable)}>"
        )

    def streamer(
        self,
        *topics: str,
        maxsize: int | None = None,
        overflow: Overflow | None = None,
    ) -> Streamer:
        """A streamer for ``topics``; the bound and policy default to settings."""
        if not topics:
            raise ConfigError("a streamer needs at least one topic")
        for topic in topics:
            if not isinstance(topic, str) or not topic:
                raise ConfigError(f"a topic is a non-empty string, got {topic!r}")
        settings = self.node.settings
        return Streamer(
            self,
            tuple(dict.fromkeys(topics)),
            settings.stream_queue_size if maxsize is None else maxsize,
            settings.stream_overflow if overflow is None else overflow,
        )

    def _claim(self, streamer: Streamer) -> None:
        taken = [t for t in streamer.topics if t in self._streamers]
        if taken:
            raise ConfigError(f"topics {taken} already have an open streamer")
        for topic in streamer.topics:
            self._streamers[topic] = streamer

    def _release(self, streamer: Streamer) -> None:
        for topic in streamer.topics:
            if self._streamers.get(topic) is streamer:
                del self._streamers[topic]

    # -- publishing ------------------------------------------------------------

    def declare_unreliable(self, *topics: str) -> None:
        """Send these topics' messages as datagrams from now on; see the essay."""
        for topic in topics:
            self._unreliable.setdefault(topic, 0)

    async def publish(self, topic: str, data: Any) -> int:
        """Publish ``data``; returns how many peers it was sent to.

        A reliable topic goes through :meth:`Node.publish` and may wait for a
        slow consumer. An unreliable one never waits; a message too large for
        one datagram raises ConfigError.
        """
        if topic not in self._unreliable:
            return await self.node.publish(topic, data)
        return self._publish_datagrams(topic, data)

    def _publish_datagrams(self, topic: str, data: Any) -> int:
        node = self.node
        sequence = self._unreliable[topic] + 1
        self._unreliable[topic] = sequence
        now = node.runtime.now()
        sent = 0
        for name, link in list(node.links.items()):
            if topic not in link.topics:
                continue
            try:
                ok = node.send_datagram(name, DATAGRAM_PUB, topic, sequence, data, now)
            except ValueError as exc:
                self._unsent += 1
                raise ConfigError(f"unreliable topic {topic!r}: {exc}") from exc
            sent += ok
            self._unsent += not ok
        self._sent += sent
        return sent

    # -- receiving -------------------------------------------------------------

    def _on_datagram(self, link: Link, frame: Frame) -> None:
        topic, sequence, data, sent_at = frame.fields
        node = self.node
        if topic not in node.topics:
            self._unroutable += 1
            return
        self._received += 1
        self._count_sequence(link.peer.name, topic, sequence)

        message = Message(topic, data, link.peer.name, sent_at, node.runtime.now())
        streamer = self._streamers.get(topic)
        if streamer is not None:
            queued = streamer._offer(message)
        elif node.inbox.closed:
            queued = False
        else:
            queued = node.inbox.put_nowait(message)
        self._dropped += not queued

    def _count_sequence(self, source: str, topic: str, sequence: int) -> None:
        highest, count = self._heard.get((source, topic), (0, 0))
        self._heard[source, topic] = (max(highest, sequence), count + 1)

    def statistics(self) -> StreamsStatistics:
        missing = sum(max(0, high - count) for high, count in self._heard.values())
        return StreamsStatistics(
            streamers=len(set(map(id, self._streamers.values()))),
            unreliable_topics=tuple(sorted(self._unreliable)),
            datagrams_sent=self._sent,
            datagrams_unsent=self._unsent,
            datagrams_received=self._received,
            datagrams_missing=missing,
            datagrams_unroutable=self._unroutable,
            datagrams_dropped=self._dropped,
        )
