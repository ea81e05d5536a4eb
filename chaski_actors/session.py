"""Link sessions: delivery once and in order across broken connections.

TCP delivers in order within one connection, but what was in flight when a
connection broke is gone, and neither end knows how much of it arrived. A
session is the state two nodes keep about their link, outside any one
connection, so that a new connection can carry on where the old one stopped.
This module holds that state and its rules; it does no I/O and keeps no
clock. The node feeds it events (a frame to send, a frame received, an
acknowledgement, a reconnection) and moves the bytes it hands back.

Sequence numbers
----------------
Each direction of a link numbers its reliable frames (publishes, remote
calls, ...) 1, 2, 3, ... They travel in numbered frames
``[SEQ, seq, ack, [frame, ...]]`` that carry one or more of them:
everything the sender queued for the peer within one turn of its event
loop, up to a bound, so that acknowledging and decoding are paid once per
batch and not once per message. ``seq`` is the number of the first frame
inside; the others follow on. ``ack`` is the highest number the sender has
itself received in order from the other side: acknowledgements ride on data
whenever there is data to ride on. Control frames (pings, heartbeats,
acknowledgements) are not numbered: losing one with a connection costs
nothing that the next one does not repair.

Because the numbers count the frames inside and not the batches, every
rule below (the buffer bound, what is dropped, what counts as skipped or
duplicate) reads the same whether frames travel alone or in batches: a
batch is a way of moving frames, not a unit of delivery.

The session keeps each numbered frame as it was first written, and a
resend gets a fresh ``ack`` in place of the old one, so a batch resent after
a reconnection never carries an acknowledgement the peer can no longer make
sense of (a restarted peer numbers from 1 again).

Acknowledgements are cumulative. ``ack = n`` says "everything up to n has
arrived", so one lost acknowledgement is repaired by the next, and the
receiver need not acknowledge every frame: the node sends a bare ``ACK``
only when :attr:`Session.ack_owed` reaches a threshold or a timer
runs out, whichever is first.

The send buffer
---------------
A sent frame stays in the buffer until it is acknowledged, because only
then is it certain to have arrived. The buffer holds at most ``capacity``
frames, counted inside their batches. When it is full, the overflow rule
decides:

``wait``         the caller must wait for room (:attr:`Session.full`), so a
                 publisher slows to the pace of its slowest peer; nothing is
                 lost.
``drop-oldest``  the oldest unacknowledged batch is discarded to make room
                 and its frames counted in ``dropped``. The receiver sees
                 a jump in the sequence numbers and counts the missing
                 frames in ``skipped``; what it does receive is still in
                 order and never duplicated. A batch goes whole, so a
                 batch of several frames may take a little more than the
                 room needed; the link sends frames one by one, unbatched,
                 while its buffer is full, which keeps this small.

Resuming
--------
After a new connection the two ends exchange, in their hellos, what they
have received in order (``received``) and the sequence number below which
they hold nothing any more (``base``, the highest number the peer has
acknowledged). The node decides whether the new connection continues the
old session (both ends are the same incarnations as before) or starts a
fresh one (one end restarted and lost its state), then calls
:meth:`Session.resume`:

* continuing, everything above the peer's ``received`` is resent, and the
  peer drops any frame numbered at or below what it already has;
* fresh, the receiving side starts from the peer's ``base`` (what came
  before is gone with the old incarnation) and every unacknowledged frame is
  resent, since the new incarnation holds none of them.

Within the buffer bound, a frame handed to :meth:`Session.push` is thus
delivered by :meth:`Session.accept` once, in order, however many times the
connection breaks, which ``tests/test_session.py`` checks under random
schedules of loss, duplication and reconnection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from .errors import ConfigError, ProtocolError

__all__ = ["Session", "SessionOverflow", "SessionStatistics"]

SessionOverflow = Literal["wait", "drop-oldest"]

# Numbers travel as msgpack unsigned ints, which stop at 64 bits.
_LARGEST_NUMBER = 2**64 - 1


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    """A snapshot of one session, both directions."""

    next_seq: int
    acked: int
    received: int
    unacked: int
    capacity: int
    sent: int
    resent: int
    dropped: int
    delivered: int
    duplicates: int
    skipped: int
    resumed: int


class Session:
    """The reliable-delivery state of one link; see the module essay."""

    # Slots: one per link, read and written for every numbered frame; with
    # thousands of links an object without a __dict__ is one fetch from
    # memory fewer per use.
    __slots__ = (
        "_delivered",
        "_dropped",
        "_duplicates",
        "_resent",
        "_resumed",
        "_sent",
        "_skipped",
        "_unacked",
        "ack_owed",
        "acked",
        "capacity",
        "held",
        "next_seq",
        "overflow",
        "received",
    )

    def __init__(self, capacity: int, overflow: str = "wait") -> None:
        if capacity < 1:
            raise ConfigError(f"a session buffer needs capacity >= 1, got {capacity}")
        # The node's overflow setting also allows "drop-newest" for its inbox;
        # for a send buffer that would lose the frame being published while
        # keeping older ones, which helps nobody, so it waits instead.
        self.overflow: SessionOverflow = (
            "drop-oldest" if overflow == "drop-oldest" else "wait"
        )
        self.capacity = capacity
        self.next_seq = 1
        self.acked = 0
        self.received = 0
        self.ack_owed = 0
        # (first number, encoded frames, how many), oldest first.
        self._unacked: deque[tuple[int, bytes, int]] = deque()
        self.held = 0  # frames in the buffer, counted inside their batches
        self._sent = self._resent = self._dropped = 0
        self._delivered = self._duplicates = self._skipped = self._resumed = 0

    def __repr__(self) -> str:
        return (
            f"<Session next={self.next_seq} acked={self.acked} "
            f"received={self.received} unacked={self.held}/{self.capacity}>"
        )

    # -- sending -------------------------------------------------------------

    @property
    def full(self) -> bool:
        return self.held >= self.capacity

    @property
    def unacked(self) -> int:
        return self.held

    def push(self, frame: bytes, count: int = 1) -> int:
        """Number a batch of ``count`` frames and keep it until acknowledged.

        ``frame`` is the batch, encoded; returns the number of its first
        frame. Under ``wait`` the caller must first make sure there is room
        for ``count`` frames; pushing beyond the capacity then is a bug and
        raises. Under ``drop-oldest`` the oldest batches make room.
        """
        if self.held + count > self.capacity:
            if self.overflow == "wait":
                raise RuntimeError("push into a full session buffer under 'wait'")
            while self._unacked and self.held + count > self.capacity:
                dropped = self._unacked.popleft()[2]
                self.held -= dropped
                self._dropped += dropped
        seq = self.next_seq
        self.next_seq += count
        self._unacked.append((seq, frame, count))
        self.held += count
        self._sent += count
        return seq

    def envelope_ack(self) -> int:
        """The ``ack`` to put in an outgoing envelope; the debt is paid."""
        self.ack_owed = 0
        return self.received

    def acknowledge(self, ack: int) -> int:
        """The peer has everything up to ``ack``; returns how many were freed."""
        if ack >= self.next_seq:
            raise ProtocolError(
                f"peer acknowledged frame {ack}, but only {self.next_seq - 1} were sent"
            )
        freed = 0
        unacked = self._unacked
        # A batch is freed once its last frame is acknowledged.
        while unacked and unacked[0][0] + unacked[0][2] - 1 <= ack:
            freed += unacked.popleft()[2]
        self.held -= freed
        self.acked = max(self.acked, ack)
        return freed

    # -- receiving -----------------------------------------------------------

    def accept(self, seq: int, count: int = 1) -> int:
        """How many of the ``count`` frames numbered from ``seq`` are new.

        The new ones are the last ones, and must be delivered: a number at
        or below :attr:`received` is a duplicate (a resend of something that
        had arrived); a jump past the next number means the sender discarded
        frames under ``drop-oldest``.
        """
        last = seq + count - 1
        if last > _LARGEST_NUMBER:
            raise ProtocolError(
                f"frames numbered up to {last}, beyond what an ack can carry"
            )
        received = self.received
        if last <= received:
            self._duplicates += count
            return 0
        new = min(count, last - received)
        self._duplicates += count - new
        if seq > received + 1:
            self._skipped += seq - received - 1
        self.received = last
        self.ack_owed += new
        self._delivered += new
        return new

    # -- reconnecting --------------------------------------------------------

    def resume(
        self, *, continued: bool, peer_received: int, peer_base: int
    ) -> list[tuple[int, bytes]]:
        """Adopt the peer's view after a new connection; returns what to resend.

        ``continued`` says whether both ends are the incarnations that held
        this session before (see the module essay).
        """
        if continued:
            self.acknowledge(min(peer_received, self.next_seq - 1))
        else:
            self.received = peer_base
        self.ack_owed = 0
        self._resumed += 1
        again = [(seq, frame) for seq, frame, _ in self._unacked]
        self._resent += self.held
        return again

    def pending(self) -> Iterator[tuple[int, bytes]]:
        """The unacknowledged batches and their first numbers, oldest first."""
        return iter([(seq, frame) for seq, frame, _ in self._unacked])

    def statistics(self) -> SessionStatistics:
        return SessionStatistics(
            next_seq=self.next_seq,
            acked=self.acked,
            received=self.received,
            unacked=self.held,
            capacity=self.capacity,
            sent=self._sent,
            resent=self._resent,
            dropped=self._dropped,
            delivered=self._delivered,
            duplicates=self._duplicates,
            skipped=self._skipped,
            resumed=self._resumed,
        )
