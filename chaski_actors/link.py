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
timer, ``ack_delay_s`` (by default a quarter of the keep-alive interval)
after the oldest frame still owed one arrived, unless outgoing data or a
heartbeat carried it first, and at once when a quarter of the peer's send
buffer (its hello says how large) has arrived unacknowledged, so a sender
that waits for room never waits on the timer. The ack timer, too, is lazy:
set for a frame that data acknowledged meanwhile, it finds a later debt
and arms itself again for that debt's due time, so traffic both ways at
more than one message per ``ack_delay_s`` sends no bare acknowledgement.

The frames that timers or the reader want sent (heartbeats,
acknowledgements, pongs) go out from one short task per link at a time
(:meth:`Link._kick`), never from the reader: a reader that waits to write
while its peer's reader also waits to write would deadlock two full TCP
windows.

Batches and ordering
--------------------
Reliable frames leave in numbered frames that may carry many of them (see
:mod:`chaski_actors.protocol`). The first reliable frame of a turn of the
event loop is numbered and written at once, so a lone request or reply is
never delayed. That write corks the link until the turn ends (one
:meth:`Runtime.call_soon`), and what is sent meanwhile gathers in a batch
that goes out as one numbered frame when the turn ends, or as soon as it
holds ``_BATCH_FRAMES`` frames or ``_BATCH_BYTES`` bytes. A sender costs
no timer per frame, only one callback per turn in which it sent. A sender
that finds the batch full waits until the frame being written has left, so
the batch bounds what a link holds beyond its send buffer. The frames of an
open batch count against the send buffer's bound as if they were already
in it; once the buffer is full, frames go one by one, so that
``drop-oldest`` drops what it must and no more.

Shared batches
--------------
A publish to many peers would otherwise cost one :meth:`Link.offer` per
peer and message, and every peer's numbered frame would join the same
items again. Once every link a topic goes to (two or more) is corked with
an empty batch, the node makes them share one batch (a
:class:`SharedBatch`): each link's batch *is* its list, a publish appends
to it once for all of them, and the items are joined once, each link
adding only its own number and acknowledgement in front. The shared batch
holds no more than the fullest of its links could take, so the bounds
above hold for each link as if it had batched alone. It ends, and no
longer takes publishes, as soon as any of its links does something of its
own: it writes or stashes the batch, it takes a frame of another kind,
its turn ends, or its connection changes; a link that still holds the
list then copies it before adding to it (copy on write). The node ends it
too when the set of links a topic goes to may have changed.

Numbered frames must leave in the order of their numbers. One writer at a
time (a flag, not a lock: the other senders leave their frames in the batch
for it) numbers a batch and writes it, and takes the next batch if one
formed while it waited for the connection. While a connection is being
resumed or is down, frames are numbered and buffered one by one, not
written; the resume writes the backlog, then anything numbered meanwhile,
then opens the link to batches, with no await in between. A connection
that breaks numbers the open batch into the buffer first, so it is resent
in its place.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ._eager import step
from .codec import HEADER_SIZE
from .errors import BrokenResourceError, ClosedResourceError, ProtocolError
from .metrics import RttEstimator
from .protocol import ACK, HEARTBEAT, PONG, LinkProtocol
from .runtime import Address, Stream, Task, Timer
from .session import Session
from .sync import Event

if TYPE_CHECKING:
    from .node import Node, PeerInfo

__all__ = ["Link", "SharedBatch"]

# Acknowledge at the latest when a quarter of the peer's send buffer has
# arrived unacknowledged, so that a sender under the "wait" rule never
# stalls for want of an acknowledgement while data flows, however long the
# ack timer (ack_delay_s) is.
_ACK_FRACTION = 4

# Pongs waiting to be sent; a peer pinging faster than we can answer loses
# the excess, counted in pongs_dropped. Arbitrary, far above any sane rate.
_MAX_PONGS = 64

# Float slack when a timer checks whether its due time has come.
_EPSILON = 1e-9

# The bounds of one batch. 256 small messages make the per-frame costs
# (numbering, acknowledging, decoding a frame) vanish per message; 64 KiB
# keeps one numbered frame from holding a slow link for long. Both are
# arbitrary within those reasons.
_BATCH_FRAMES = 256
_BATCH_BYTES = 1 << 16

# What a numbered frame adds around its frames, at most: the array of four,
# SEQ, two 64-bit numbers and a 32-bit array header.
_NUMBERED_OVERHEAD = 1 + 1 + 9 + 9 + 5


class SharedBatch:
    """One batch for several links, for the rest of a turn; see the essay.

    Made by :meth:`form`; the node appends publishes with :meth:`add` while
    :attr:`alive`. Once it is full, its links write it and may share the
    next one.
    """

    __slots__ = ("_bytes", "_joined", "_limit", "_room", "alive", "items", "links")

    def __init__(self, links: tuple[Link, ...], room: int, limit: int) -> None:
        self.items: list[bytes | memoryview] = []
        self.links = links
        self.alive = True
        self._bytes = 0
        self._room = room
        self._limit = limit
        self._joined: tuple[int, bytes] | None = None

    def __repr__(self) -> str:
        state = "alive" if self.alive else "ended"
        return f"<SharedBatch {state} links={len(self.links)} items={len(self.items)}>"

    @classmethod
    def form(cls, links: list[Link]) -> SharedBatch | None:
        """Share one batch among ``links``, if each is corked and has none.

        None, having changed nothing, if any of them cannot take part.
        """
        room = _BATCH_FRAMES
        limit = _BATCH_BYTES
        for link in links:
            session = link.session
            if not link._open or link._batch or link._shared is not None:
                return None
            room = min(room, session.capacity - session.held)
            limit = min(limit, link._batch_limit)
        if room <= 0:
            return None
        shared = cls(tuple(links), room, limit)
        for link in links:
            link._batch = shared.items
            link._shared = shared
        return shared

    @staticmethod
    def out_of_step(links: list[Link]) -> bool:
        """True if ``links`` could share a batch once they wrote their own."""
        batched = False
        for link in links:
            if not link._open or link._shared is not None:
                return False
            batched = batched or bool(link._batch)
        return batched

    def add(self, item: bytes | memoryview) -> bool:
        """Append ``item`` for every link; False, and ended, if it has no room."""
        size = self._bytes + len(item)
        if not self.alive or self._room <= 0 or size > self._limit:
            self.alive = False
            return False
        self.items.append(item)
        self._bytes = size
        self._room -= 1
        return True

    def size(self) -> int:
        """The bytes of the items, as a link's own batch would count them."""
        return self._bytes

    def joined(self, items: list[bytes | memoryview]) -> bytes | None:
        """``items`` joined, once for all links; None if they are not ours.

        Asked only once the batch has ended, so the items no longer change.
        """
        if items is not self.items:
            return None
        joined = self._joined
        if joined is None or joined[0] != len(items):
            joined = (len(items), b"".join(items))
            self._joined = joined
        return joined[1]


class Link:
    """The lasting link to one peer; see the module essay.

    ``stream`` and ``protocol`` belong to the current connection; ``stream``
    is None while the link is down. ``closed`` means the session is over
    (the peer said goodbye, or reconnection was given up).
    """

    # Slots: one per link, read and written for every frame sent and read;
    # with thousands of links an object without a __dict__ is one fetch from
    # memory fewer per use (see Session). Weak references to a link still
    # work, as they did before it had slots.
    __slots__ = (
        "__weakref__",
        "_ack_every",
        "_ack_timer",
        "_batch",
        "_batch_bytes",
        "_batch_limit",
        "_batch_room",
        "_clock",
        "_control",
        "_corked",
        "_deadline",
        "_flusher",
        "_heartbeat_due",
        "_keepalive",
        "_largest_item",
        "_linger",
        "_open",
        "_owed_since",
        "_pongs",
        "_room",
        "_shared",
        "_writing",
        "bytes_in",
        "bytes_out",
        "closed",
        "connections",
        "dial_address",
        "dialled",
        "frames_in",
        "frames_out",
        "last_heard",
        "last_sent",
        "node",
        "opened_at",
        "peer",
        "pongs_dropped",
        "protocol",
        "reader",
        "ready",
        "reconnections",
        "reconnector",
        "rtts",
        "session",
        "stream",
        "topics",
    )

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
        # The runtime's clock, read on every frame sent and every read.
        self._clock = node.runtime.now
        self.rtts = RttEstimator()
        self.reader: Task[None] | None = None
        self.reconnector: Task[None] | None = None
        self.closed = False
        self.ready = False
        self.connections = 0
        self.reconnections = 0
        self.last_heard = self.last_sent = self.opened_at
        self.frames_in = self.frames_out = self.bytes_in = self.bytes_out = 0
        self._room = Event(node.runtime)
        self._room.set()
        # The batch of frames waiting for the next numbered frame, and the
        # writer's state (see the module essay).
        self._batch: list[bytes | memoryview] = []
        self._batch_bytes = 0
        self._batch_room = Event(node.runtime)
        self._batch_room.set()
        self._writing = False
        self._corked = False
        # Corked, ready and not closed: a batch may take frames (offer).
        self._open = False
        # The shared batch whose list _batch is, if any (module essay).
        self._shared: SharedBatch | None = None
        self._flusher: Task[None] | None = None
        largest = node.settings.max_frame_size - _NUMBERED_OVERHEAD
        self._largest_item = largest
        self._batch_limit = min(_BATCH_BYTES, largest)
        self._keepalive: Timer | None = None
        self._deadline: Timer | None = None
        self._ack_timer: Timer | None = None
        # When the oldest frame still owed an acknowledgement arrived.
        self._owed_since = 0.0
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
        """Write an encoded frame after everything sent before it.

        The open batch goes first, so that a goodbye, say, cannot overtake
        the publishes of the same turn of the loop.
        """
        await self.write_batch()
        if self.closed:
            raise ClosedResourceError(f"link to {self.peer.name} is closed")
        stream = self.stream
        if stream is None:
            raise BrokenResourceError(f"link to {self.peer.name} is down")
        self._count_out(data)
        await stream.send(data)

    async def write_batch(self) -> None:
        """Write the open batch now, unless the link is down or closed."""
        while self._batch and self.ready and not self.closed:
            if self._writing:
                self._batch_room.clear()
                await self._batch_room.wait()
            else:
                await self._write_batches()

    async def send_reliable(self, kind: int, *fields: Any) -> None:
        """Send a frame that arrives once, in order, across reconnections."""
        await self.send_item(self.protocol.encode_item(kind, *fields))

    async def send_sequenced(self, frame: bytes) -> None:
        """Like :meth:`send_reliable`, for a frame encoded by ``encode_frame``."""
        await self.send_item(memoryview(frame)[HEADER_SIZE + 1 :])

    def offer(self, item: bytes | memoryview) -> bool:
        """Add an encoded frame to the open batch if that needs no waiting.

        The quick path of :meth:`send_item`; False means nothing was done
        and :meth:`send_item` must be awaited instead.
        """
        if not self._open:
            return False
        batch = self._batch
        count = len(batch)
        shared = self._shared
        size = (self._batch_bytes if shared is None else shared.size()) + len(item)
        session = self.session
        if (
            count >= _BATCH_FRAMES
            or session.held + count >= session.capacity
            or size > (self._batch_limit if count else self._largest_item)
        ):
            return False
        if shared is not None:
            batch = self._own_batch()
        batch.append(item)
        self._batch_bytes = size
        return True

    def send_now(self, item: bytes | memoryview) -> bool:
        """Number an encoded frame and write it alone, if that needs no waiting.

        The other quick path of :meth:`send_item`, for the first frame of a
        turn (a lone request or answer): it skips the coroutines of the
        general path. False means nothing was sent and :meth:`send_item`
        must be awaited instead.
        """
        stream = self.stream
        session = self.session
        if (
            self._corked
            or self._writing
            or self._batch
            or not self.ready
            or self.closed
            or stream is None
            or session.held >= session.capacity
            or len(item) > self._largest_item
        ):
            return False
        frame = self.protocol.encode_numbered(
            session.next_seq, session.envelope_ack(), [item]
        )
        if not stream.try_send(frame):
            return False
        session.push(frame, 1)
        self._count_out(frame)
        self._cork()
        return True

    def send_one_now(self, kind: int, *fields: Any) -> bytes | None:
        """Encode, number and write one frame alone, if that needs no waiting.

        :meth:`send_now` for a frame not yet encoded: the frame and its
        numbered frame are encoded in one go. Returns the frame's item (what
        :meth:`LinkProtocol.encode_item` gives), or None if nothing was
        sent; the caller then encodes the frame itself, which also says
        what is wrong with a frame that cannot be encoded.
        """
        stream = self.stream
        session = self.session
        if (
            self._corked
            or self._writing
            or self._batch
            or not self.ready
            or self.closed
            or stream is None
            or session.held >= session.capacity
        ):
            return None
        numbered = self.protocol.encode_numbered_one(
            session.next_seq, session.received, [kind, *fields]
        )
        if numbered is None:
            return None
        frame, start = numbered
        if len(frame) - start > self._largest_item or not stream.try_send(frame):
            return None
        session.ack_owed = 0  # paid by the ack the frame carries
        session.push(frame, 1)
        self._count_out(frame)
        self._cork()
        return frame[start:]

    async def send_item(self, item: bytes | memoryview) -> None:
        """Number an encoded frame, keep it until acknowledged, send it if up.

        ``item`` is a frame's msgpack object without the frame header
        (:meth:`LinkProtocol.encode_item`). Waits while the send buffer is
        full under the ``wait`` rule, and while the batch is full. A broken
        connection is not an error here: the frame stays buffered and goes
        out after the reconnection.
        """
        if self.offer(item):
            return
        if len(item) > self._largest_item:
            raise ProtocolError(
                f"frame of {len(item)} bytes does not fit in a numbered frame "
                f"within max_frame_size={self.node.settings.max_frame_size}"
            )
        while True:
            if self.closed:
                raise ClosedResourceError(f"link to {self.peer.name} is closed")
            if not (self.ready and self.stream is not None):
                # Down or resuming: numbered now, written by the resume.
                if self.session.full and self.session.overflow == "wait":
                    await self._wait_for_room()
                    continue
                self._number([item], self.session.received)
                return
            batch = self._batch
            if batch and (
                len(batch) >= _BATCH_FRAMES
                or self._batch_size() + len(item) > self._batch_limit
                or self.session.held + len(batch) >= self.session.capacity
            ):
                # The open batch must leave first: it is full, or the send
                # buffer is, and then frames go one by one (module essay).
                if self._writing:
                    self._batch_room.clear()
                    await self._batch_room.wait()
                else:
                    await self._write_batches()
                continue
            if self.session.full and self.session.overflow == "wait":
                await self._wait_for_room()
                continue
            break

        self._own_batch().append(item)
        self._batch_bytes += len(item)
        if self._writing:
            return  # the writer takes it when its write is done
        # Past the buffer's bound (only under drop-oldest) the frame leaves
        # at once, dropping what it must now rather than at the turn's end.
        if self.session.held + len(self._batch) <= self.session.capacity:
            if self._corked:
                return
            # The turn's first frame leaves now; what follows in the same
            # turn gathers for one batch at its end.
            self._cork()
        await self._write_batches()

    async def _wait_for_room(self) -> None:
        self._room.clear()
        await self._room.wait()

    async def _write_batches(self) -> None:
        """Number and write batches until none is left; the one writer."""
        stream = self.stream
        if self._writing or stream is None:
            return
        self._writing = True
        try:
            while self._batch and self.ready and self.stream is stream:
                shared = self._shared
                frame = self._number(
                    self._take_batch(), self.session.envelope_ack(), shared
                )
                # _write, written out: a coroutine and a context manager
                # fewer per numbered frame.
                self._count_out(frame)
                try:
                    await stream.send(frame)
                except (BrokenResourceError, ClosedResourceError):
                    continue  # as in _write: the frame stays buffered
        finally:
            self._writing = False
        if self._batch:
            self._start_flusher()  # the connection changed under the writer

    def _take_batch(self) -> list[bytes | memoryview]:
        batch = self._batch
        self._leave_shared()
        self._batch = []
        self._batch_bytes = 0
        self._batch_room.set()
        return batch

    def _batch_size(self) -> int:
        shared = self._shared
        return self._batch_bytes if shared is None else shared.size()

    def _own_batch(self) -> list[bytes | memoryview]:
        """The batch, to add to: copied first if it is still shared."""
        shared = self._shared
        if shared is not None:
            self._leave_shared()
            self._batch = list(self._batch)
            self._batch_bytes = shared.size()
        return self._batch

    def _leave_shared(self) -> None:
        """Stop following the shared batch; it ends for the others too."""
        shared = self._shared
        if shared is not None:
            shared.alive = False
            self._shared = None

    def _number(
        self,
        items: list[bytes | memoryview],
        ack: int,
        shared: SharedBatch | None = None,
    ) -> bytes:
        """Number ``items`` as one frame and keep it in the send buffer."""
        session = self.session
        joined = shared.joined(items) if shared is not None else None
        if joined is None:
            frame = self.protocol.encode_numbered(session.next_seq, ack, items)
        else:
            frame = self.protocol.encode_numbered_joined(
                session.next_seq, ack, len(items), joined
            )
        session.push(frame, len(items))
        return frame

    def _cork(self) -> None:
        """Keep what is sent from now on for a batch at the end of the turn."""
        self._corked = True
        self._open = self.ready and not self.closed
        self.node.runtime.at_turn_end(self._uncork)

    def _uncork(self) -> None:
        self._corked = self._open = False
        if self._shared is not None:
            self._end_shared()
        if self._batch:
            self._start_flusher(at_once=True)

    def _start_flusher(self, *, at_once: bool = False) -> None:
        """Write the batches from a task; ``at_once``: from here if no wait.

        At the end of a turn the connection nearly always takes the batch
        at once, and then it is written from the calling callback; only a
        write that must wait for the connection gets a task to finish it.
        """
        if self._flusher is not None or self._writing or not self.ready:
            return
        coro = self._write_batches()
        writing: Awaitable[None] | None = step(coro) if at_once else coro
        if writing is None:
            return  # all written already
        self._flusher = self.node.runtime.spawn(
            self._flush(writing), name=f"flush-{self.peer.name}"
        )

    async def _flush(self, writing: Awaitable[None]) -> None:
        try:
            await writing
        finally:
            self._flusher = None

    def _stash_batch(self) -> None:
        """Number the open batch into the buffer, to go out with the resume."""
        if self._batch:
            shared = self._shared
            self._number(self._take_batch(), self.session.received, shared)

    def _end_shared(self) -> None:
        """The link no longer takes publishes through its shared batch.

        It keeps the list it holds, and copies it before adding to it.
        """
        if self._shared is not None:
            self._shared.alive = False

    async def _write(self, stream: Stream, data: bytes) -> None:
        self._count_out(data)
        # A broken stream is the reader's to notice; the frame stays buffered
        # and is resent after the reconnection.
        with contextlib.suppress(BrokenResourceError, ClosedResourceError):
            await stream.send(data)

    def _count_out(self, data: bytes) -> None:
        # LinkProtocol.sent, written out: this runs for every frame sent.
        size = len(data)
        protocol = self.protocol
        protocol.frames_out += 1
        protocol.bytes_out += size
        self.frames_out += 1
        self.bytes_out += size
        self.last_sent = self._clock()

    def count_in(self, data: bytes, frames: int) -> None:
        self.frames_in += frames
        self.bytes_in += len(data)
        self.last_heard = self._clock()

    # -- acknowledgements ------------------------------------------------------

    def acknowledged(self, ack: int) -> None:
        """The peer confirmed frames up to ``ack``: free their room."""
        if self.session.acknowledge(ack):
            self._room.set()

    def received_numbered(self, new: int) -> None:
        """``new`` numbered frames were accepted: acknowledge them now or soon."""
        owed = self.session.ack_owed
        if owed >= self._ack_every:
            self._kick()
            return
        if owed == new:
            # Nothing was owed before these: the wait starts now.
            self._owed_since = self._clock()
            if self._ack_timer is None:
                self._ack_timer = self.node.runtime.call_later(
                    self.node.settings.ack_delay_s, self._ack_timer_fired
                )

    def _ack_timer_fired(self) -> None:
        self._ack_timer = None
        if not self.session.ack_owed:
            return
        # The timer may have been set for frames that outgoing data has
        # acknowledged since; the frames owed now arrived later and may
        # still wait for data to carry them.
        due = self._owed_since + self.node.settings.ack_delay_s
        now = self.node.runtime.now()
        if now < due - _EPSILON:
            self._ack_timer = self.node.runtime.call_later(
                due - now, self._ack_timer_fired
            )
            return
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

    def attach(
        self,
        stream: Stream,
        protocol: LinkProtocol,
        peer: PeerInfo,
        *,
        peer_buffer: int = 0,
    ) -> None:
        """Make a handshaken connection the link's current one (not yet ready).

        ``peer_buffer`` is the peer's send buffer in frames, from its hello
        (0 if it did not say): the smaller of the two buffers sets how many
        received frames may wait for an acknowledgement.
        """
        own = self.node.settings.send_buffer_frames
        window = min(own, peer_buffer) if peer_buffer else own
        self._ack_every = max(1, window // _ACK_FRACTION)
        self.stream = stream
        self.protocol = protocol
        self.peer = peer
        self.topics = set(peer.topics)
        self.ready = self._open = False
        self._end_shared()
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
                ack = self.session.envelope_ack()
                await self._write(stream, self.protocol.reacknowledge(frame, ack))
                last = seq
            backlog = [item for item in self.session.pending() if item[0] > last]
        if self.stream is stream:
            self.ready = True

    def detach(self) -> Stream | None:
        """Forget the current connection and its timers; returns its stream."""
        stream, self.stream = self.stream, None
        self.ready = self._open = False
        self._stash_batch()
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
        self._open = False
        self._end_shared()
        self._cancel(self._linger)
        self._linger = None
        self._room.set()
        self._batch_room.set()
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
