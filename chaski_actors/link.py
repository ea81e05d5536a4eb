"""Links: one per paired peer, outliving the connections that carry it.

A :class:`Link` holds what two nodes share beyond any one TCP connection:
the peer's identity, its topics, the :class:`~chaski_actors.session.Session`
that numbers and acknowledges reliable frames, and the round-trip estimate.
A connection (a stream plus its :class:`~chaski_actors.protocol.LinkProtocol`)
is attached when a handshake succeeds and detached when it breaks; the node
then reconnects, if it was the side that dialled, and attaches the next one.

Timers, not tasks
-----------------
Each connected link has two timers from :meth:`Runtime.call_later`, never a
sleeping task: a keep-alive timer due ``keepalive_interval_s`` after the
last frame sent, and a deadline due ``dead_after_s`` after the last bytes
heard. Sending or hearing does not touch the timers (that would cost a
cancel and a new timer per frame); instead a timer that fires checks the
time of the last activity and, if there was some, arms itself again for the
new due time. So an active link costs one timer event per interval, and an
idle one a heartbeat per interval. A bare acknowledgement is also due on a
timer (``ack_delay_s``) unless outgoing data carried it first.

The frames that timers or the reader want sent (heartbeats,
acknowledgements, pongs) go out from one short task per link at a time
(:meth:`Link._kick`), never from the reader: a reader that waits to write
while its peer's reader also waits to write would deadlock two full TCP
windows.

Ordering
--------
Reliable frames must leave in the order of their numbers. A mutex (a queue
of size one) is held from numbering a frame to writing it, so concurrent
publishers cannot interleave a later number before an earlier one. While a
connection is being resumed, frames are numbered and buffered but not
written; the resume writes the backlog, then anything numbered meanwhile,
then opens the link to direct writes, with no await in between.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any

from .errors import BrokenResourceError, ClosedResourceError
from .metrics import RttEstimator
from .protocol import ACK, HEARTBEAT, PONG, SEQ, LinkProtocol
from .runtime import Address, Stream, Task, Timer
from .session import Session
from .sync import Event, Queue

if TYPE_CHECKING:
    from .node import Node, PeerInfo

__all__ = ["Link"]

# Acknowledge at the latest when a quarter of the peer's send buffer has
# arrived unacknowledged, so that a sender under the "wait" rule never
# stalls for want of an acknowledgement while data flows.
_ACK_FRACTION = 4

# Pongs waiting to be sent; a peer pinging faster than we can answer loses
# the excess, counted in pongs_dropped. Arbitrary, far above any sane rate.
_MAX_PONGS = 64

# Float slack when a timer checks whether its due time has come.
_EPSILON = 1e-9


class Link:
    """The lasting link to one peer; see the module essay.

    ``stream`` and ``protocol`` belong to the current connection; ``stream``
    is None while the link is down. ``closed`` means the session is over
    (the peer said goodbye, or reconnection was given up).
    """

    def __init__(
        self, node: Node, peer: PeerInfo, session: Session, *, dialled: bool
    ) -> None:
        self.node = node
        self.peer = peer
        self.session = session
        self.dialled = dialled
        self.stream: Stream | None = None
        # Where the dialling side reconnects: the address it dialled, which
        # may be a proxy or a NAT's, rather than the one the peer advertises.
        self.dial_address: Address | None = None
        self.protocol = LinkProtocol(max_frame_size=node.settings.max_frame_size)
        self.topics: set[str] = set(peer.topics)
        self.opened_at = node.runtime.now()
        self.rtts = RttEstimator()
        self.reader: Task[None] | None = None
        self.reconnector: Task[None] | None = None
        self.closed = False
        self.ready = False
        self.connections = 0
        self.reconnections = 0
        self.last_heard = self.last_sent = self.opened_at
        self.frames_in = self.frames_out = self.bytes_in = self.bytes_out = 0
        self._order: Queue[None] = Queue(node.runtime, 1)
        self._room = Event(node.runtime)
        self._room.set()
        self._keepalive: Timer | None = None
        self._deadline: Timer | None = None
        self._ack_timer: Timer | None = None
        self._linger: Timer | None = None
        self._control: Task[None] | None = None
        self._heartbeat_due = False
        self._pongs: deque[tuple[int, float]] = deque()
        self.pongs_dropped = 0
        self._ack_every = max(1, node.settings.send_buffer_frames // _ACK_FRACTION)

    def __repr__(self) -> str:
        return (
            f"<Link {self.node.name}->{self.peer.name} {self.state} "
            f"topics={sorted(self.topics)} out={self.frames_out} "
            f"unacked={self.session.unacked}>"
        )

    @property
    def state(self) -> str:
        if self.closed:
            return "closed"
        if self.stream is None:
            return "reconnecting" if self.dialled else "waiting"
        return self.protocol.state.value if self.ready else "resuming"

    @property
    def connected(self) -> bool:
        return self.stream is not None

    # -- sending -------------------------------------------------------------

    async def send_frame(self, kind: int, *fields: Any) -> None:
        """Send a frame on the current connection, unnumbered: lost if it breaks.

        Raises :class:`BrokenResourceError` while the link is down.
        """
        await self.send_bytes(self.protocol.encode(kind, *fields))

    async def send_bytes(self, data: bytes) -> None:
        if self.closed:
            raise ClosedResourceError(f"link to {self.peer.name} is closed")
        stream = self.stream
        if stream is None:
            raise BrokenResourceError(f"link to {self.peer.name} is down")
        self._count_out(data)
        await stream.send(data)

    async def send_reliable(self, kind: int, *fields: Any) -> None:
        """Send a frame that arrives once, in order, across reconnections."""
        await self.send_sequenced(self.protocol.encode(kind, *fields))

    async def send_sequenced(self, frame: bytes) -> None:
        """Number an encoded frame, keep it until acknowledged, send it if up.

        Waits while the send buffer is full under the ``wait`` rule. A
        broken connection is not an error here: the frame stays buffered and
        goes out after the reconnection.
        """
        await self._order.put(None)
        try:
            while self.session.full and self.session.overflow == "wait":
                self._room.clear()
                await self._room.wait()
                if self.closed:
                    raise ClosedResourceError(f"link to {self.peer.name} is closed")
            if self.closed:
                raise ClosedResourceError(f"link to {self.peer.name} is closed")
            seq = self.session.push(frame)
            if self.ready and self.stream is not None:
                await self._write_numbered(self.stream, seq, frame)
        finally:
            self._order.get_nowait()

    async def _write_numbered(self, stream: Stream, seq: int, frame: bytes) -> None:
        data = self.protocol.encode(SEQ, seq, self.session.envelope_ack(), frame)
        self._count_out(data)
        # A broken stream is the reader's to notice; the frame stays buffered
        # and is resent after the reconnection.
        with contextlib.suppress(BrokenResourceError, ClosedResourceError):
            await stream.send(data)

    def _count_out(self, data: bytes) -> None:
        self.protocol.sent(data)
        self.frames_out += 1
        self.bytes_out += len(data)
        self.last_sent = self.node.runtime.now()

    def count_in(self, data: bytes, frames: int) -> None:
        self.frames_in += frames
        self.bytes_in += len(data)
        self.last_heard = self.node.runtime.now()

    # -- acknowledgements ------------------------------------------------------

    def acknowledged(self, ack: int) -> None:
        """The peer confirmed frames up to ``ack``: free their room."""
        if self.session.acknowledge(ack):
            self._room.set()

    def received_numbered(self) -> None:
        """A numbered frame was accepted: acknowledge it now or soon."""
        if self.session.ack_owed >= self._ack_every:
            self._kick()
        elif self._ack_timer is None:
            self._ack_timer = self.node.runtime.call_later(
                self.node.settings.ack_delay_s, self._ack_timer_fired
            )

    def _ack_timer_fired(self) -> None:
        self._ack_timer = None
        if self.session.ack_owed:
            self._kick()

    def _kick(self) -> None:
        """Start the task that sends owed control frames, unless it runs."""
        if self._control is None and self.stream is not None and not self.closed:
            self._control = self.node.runtime.spawn(
                self._send_control(self.stream), name=f"control-{self.peer.name}"
            )

    def answer_ping(self, ping_id: int, sent_at: float) -> None:
        """Queue a pong for the control task (the reader must not write)."""
        if len(self._pongs) >= _MAX_PONGS:
            self.pongs_dropped += 1  # the peer's ping times out, as on loss
            return
        self._pongs.append((ping_id, sent_at))
        self._kick()

    async def _send_control(self, stream: Stream) -> None:
        try:
            while self.stream is stream and (
                self._pongs or self._heartbeat_due or self.session.ack_owed
            ):
                if self._pongs:
                    data = self.protocol.encode(PONG, *self._pongs.popleft())
                else:
                    kind = HEARTBEAT if self._heartbeat_due else ACK
                    self._heartbeat_due = False
                    data = self.protocol.encode(kind, self.session.envelope_ack())
                self._count_out(data)
                await stream.send(data)
        except (BrokenResourceError, ClosedResourceError):
            pass  # the reader, or the deadline, will notice
        finally:
            self._control = None

    # -- connections -----------------------------------------------------------

    def attach(self, stream: Stream, protocol: LinkProtocol, peer: PeerInfo) -> None:
        """Make a handshaken connection the link's current one (not yet ready)."""
        self.stream = stream
        self.protocol = protocol
        self.peer = peer
        self.topics = set(peer.topics)
        self.ready = False
        self.connections += 1
        # The handshake's own traffic, counted by the protocol before we had it.
        self.frames_in += protocol.frames_in
        self.bytes_in += protocol.bytes_in
        self.frames_out += protocol.frames_out
        self.bytes_out += protocol.bytes_out
        now = self.node.runtime.now()
        self.last_heard = self.last_sent = now
        self._cancel(self._linger)
        self._linger = None
        settings = self.node.settings
        self._keepalive = self.node.runtime.call_later(
            settings.keepalive_interval_s, self._keepalive_fired
        )
        self._deadline = self.node.runtime.call_later(
            settings.dead_after_s, self._deadline_fired
        )

    async def resume(self, backlog: list[tuple[int, bytes]]) -> None:
        """Write ``backlog`` and whatever was numbered meanwhile, then open up."""
        stream = self.stream
        if stream is None:
            return
        last = 0
        while backlog:
            for seq, frame in backlog:
                if self.stream is not stream:
                    return
                await self._write_numbered(stream, seq, frame)
                last = seq
            backlog = [item for item in self.session.pending() if item[0] > last]
        if self.stream is stream:
            self.ready = True

    def detach(self) -> Stream | None:
        """Forget the current connection and its timers; returns its stream."""
        stream, self.stream = self.stream, None
        self.ready = False
        for timer in (self._keepalive, self._deadline, self._ack_timer):
            self._cancel(timer)
        self._keepalive = self._deadline = self._ack_timer = None
        return stream

    def linger(self, seconds: float) -> None:
        """Close the session if no connection is attached within ``seconds``."""
        self._cancel(self._linger)
        self._linger = self.node.runtime.call_later(seconds, self._linger_fired)

    def close(self) -> None:
        """End the session for good: waiters wake and see the link closed."""
        self.closed = True
        self._cancel(self._linger)
        self._linger = None
        self._room.set()
        if self.reconnector is not None:
            self.reconnector.cancel()
            self.reconnector = None

    # -- timers ----------------------------------------------------------------

    def _keepalive_fired(self) -> None:
        if self.stream is None:
            return
        interval = self.node.settings.keepalive_interval_s
        idle = self.node.runtime.now() - self.last_sent
        if idle >= interval - _EPSILON:
            self._heartbeat_due = True
            self._kick()
            idle = 0.0
        self._keepalive = self.node.runtime.call_later(
            interval - idle, self._keepalive_fired
        )

    def _deadline_fired(self) -> None:
        if self.stream is None:
            return
        limit = self.node.settings.dead_after_s
        silent = self.node.runtime.now() - self.last_heard
        if silent >= limit - _EPSILON:
            self._deadline = None
            self.node._peer_silent(self, silent)
            return
        self._deadline = self.node.runtime.call_later(
            limit - silent, self._deadline_fired
        )

    def _linger_fired(self) -> None:
        self._linger = None
        if self.stream is None and not self.closed:
            self.node._session_expired(self)

    @staticmethod
    def _cancel(timer: Timer | None) -> None:
        if timer is not None:
            timer.cancel()
