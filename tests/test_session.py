"""The session state machine alone: exactly once, in order, under random faults."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaski_actors.codec import decode_frame
from chaski_actors.errors import ProtocolError
from chaski_actors.protocol import PUB, SEQ, LinkProtocol
from chaski_actors.session import Session


@dataclass
class Pair:
    """One direction of a link: a sender's session, a receiver's, a connection.

    ``wire`` holds what is in flight on the current connection, in order, as
    TCP would deliver it; breaking the connection loses all of it.
    """

    sender: Session
    receiver: Session
    wire: list[tuple[int, bytes]] = field(default_factory=list)
    connected: bool = True
    pushed: list[bytes] = field(default_factory=list)
    delivered: list[bytes] = field(default_factory=list)

    def push(self, frame: bytes) -> None:
        if self.sender.full and self.sender.overflow == "wait":
            return  # the publisher would wait here
        seq = self.sender.push(frame)
        self.pushed.append(frame)
        if self.connected:
            self.wire.append((seq, frame))

    def deliver(self, count: int) -> None:
        arrived, self.wire = self.wire[:count], self.wire[count:]
        for seq, frame in arrived:
            if self.receiver.accept(seq):
                self.delivered.append(frame)

    def acknowledge(self) -> None:
        if self.connected:
            self.sender.acknowledge(self.receiver.envelope_ack())

    def cut(self) -> None:
        self.wire.clear()
        self.connected = False

    def reconnect(self) -> None:
        self.wire.clear()
        self.connected = True
        self.receiver.resume(
            continued=True, peer_received=0, peer_base=self.sender.acked
        )
        self.wire.extend(
            self.sender.resume(
                continued=True,
                peer_received=self.receiver.received,
                peer_base=0,
            )
        )

    def resend_everything(self) -> None:
        # A spurious resend on a live connection: only duplicates arrive.
        if self.connected:
            self.wire.extend(self.sender.pending())


ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(1, 5)),
        st.tuples(st.just("deliver"), st.integers(0, 8)),
        st.tuples(st.just("ack"), st.just(0)),
        st.tuples(st.just("cut"), st.just(0)),
        st.tuples(st.just("reconnect"), st.just(0)),
        st.tuples(st.just("dup"), st.just(0)),
    ),
    max_size=80,
)


def run(pair: Pair, actions: list[tuple[str, int]]) -> None:
    counter = len(pair.pushed)
    for action, amount in actions:
        if action == "push":
            for _ in range(amount):
                pair.push(counter.to_bytes(4, "big"))
                counter += 1
        elif action == "deliver":
            pair.deliver(amount)
        elif action == "ack":
            pair.acknowledge()
        elif action == "cut":
            pair.cut()
        elif action == "reconnect":
            pair.reconnect()
        else:
            pair.resend_everything()


def heal(pair: Pair) -> None:
    pair.reconnect()
    pair.deliver(len(pair.wire))
    pair.acknowledge()


@settings(max_examples=300, deadline=None)
@given(ACTIONS, st.integers(1, 12))
def test_wait_delivers_everything_once_in_order(
    actions: list[tuple[str, int]], capacity: int
) -> None:
    pair = Pair(Session(capacity, "wait"), Session(capacity, "wait"))
    run(pair, actions)
    assert pair.delivered == pair.pushed[: len(pair.delivered)]
    heal(pair)
    assert pair.delivered == pair.pushed
    assert pair.sender.unacked == 0
    assert pair.receiver.statistics().skipped == 0


@settings(max_examples=300, deadline=None)
@given(ACTIONS, st.integers(1, 12))
def test_drop_oldest_never_duplicates_or_reorders(
    actions: list[tuple[str, int]], capacity: int
) -> None:
    pair = Pair(Session(capacity, "drop-oldest"), Session(capacity, "drop-oldest"))
    run(pair, actions)
    heal(pair)
    numbers = [int.from_bytes(frame, "big") for frame in pair.delivered]
    assert numbers == sorted(set(numbers))
    # Every frame is delivered or counted missing by the receiver; the
    # sender's evictions include some that had arrived before eviction.
    skipped = pair.receiver.statistics().skipped
    assert len(pair.delivered) + skipped == len(pair.pushed)
    assert skipped <= pair.sender.statistics().dropped


def test_a_restarted_peer_gets_every_unacknowledged_frame_again() -> None:
    sender, old_receiver = Session(8), Session(8)
    for n in range(5):
        sender.push(bytes([n]))
    for seq in (1, 2):
        old_receiver.accept(seq)
    sender.acknowledge(old_receiver.envelope_ack())
    # The receiver crashed and came back empty: a fresh session.
    fresh = Session(8)
    fresh.resume(continued=False, peer_received=0, peer_base=sender.acked)
    again = sender.resume(continued=False, peer_received=0, peer_base=0)
    assert [seq for seq, _ in again] == [3, 4, 5]
    assert [fresh.accept(seq) for seq, _ in again] == [True, True, True]
    assert fresh.statistics().skipped == 0


def test_acknowledging_the_unsent_is_a_protocol_error() -> None:
    session = Session(4)
    session.push(b"x")
    with pytest.raises(ProtocolError, match="only 1 were sent"):
        session.acknowledge(2)


def test_wait_refuses_to_overfill() -> None:
    session = Session(1)
    session.push(b"x")
    assert session.full
    with pytest.raises(RuntimeError):
        session.push(b"y")
    assert repr(session) == "<Session next=2 acked=0 received=0 unacked=1/1>"


def test_batches_are_numbered_by_the_frames_inside() -> None:
    sender, receiver = Session(8), Session(8)
    assert sender.push(b"abc", 3) == 1
    assert sender.push(b"de", 2) == 4
    assert sender.unacked == 5 and not sender.full
    # A batch is new, a duplicate, or (if a sender ever split differently)
    # new only in its tail: the receiver delivers the new frames alone.
    assert receiver.accept(1, 3) == 3
    assert receiver.accept(1, 3) == 0
    assert receiver.accept(2, 4) == 2
    assert receiver.envelope_ack() == 5
    stats = receiver.statistics()
    assert (stats.delivered, stats.duplicates, stats.skipped) == (5, 5, 0)
    # A batch is freed once its last frame is acknowledged.
    assert sender.acknowledge(2) == 0
    assert sender.acknowledge(3) == 3 and sender.unacked == 2


def test_drop_oldest_drops_whole_batches_and_counts_their_frames() -> None:
    sender, receiver = Session(4, "drop-oldest"), Session(4)
    sender.push(b"abc", 3)
    sender.push(b"d", 1)
    sender.push(b"e", 1)  # the batch of three goes to make room
    assert sender.statistics().dropped == 3 and sender.unacked == 2
    again = sender.resume(continued=False, peer_received=0, peer_base=0)
    assert [seq for seq, _ in again] == [4, 5]
    assert [receiver.accept(seq) for seq, _ in again] == [1, 1]
    assert receiver.statistics().skipped == 3


@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(1, 20),
)
def test_a_resent_frame_gets_a_new_ack_and_keeps_the_rest(
    seq: int, ack: int, new_ack: int, count: int
) -> None:
    protocol = LinkProtocol()
    items = [protocol.encode_item(PUB, "t", n, 0.5) for n in range(count)]
    frame = protocol.encode_numbered(seq, ack, items)
    expected = [SEQ, seq, new_ack, [[PUB, "t", n, 0.5] for n in range(count)]]
    assert decode_frame(frame) == [SEQ, seq, ack, expected[3]]
    assert decode_frame(protocol.reacknowledge(frame, new_ack)) == expected


@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(),
        lambda inner: st.lists(inner, max_size=4),
        max_leaves=8,
    ),
)
def test_a_frame_numbered_in_one_go_has_the_bytes_of_two_steps(
    seq: int, ack: int, value: object
) -> None:
    protocol = LinkProtocol()
    numbered = protocol.encode_numbered_one(seq, ack, [PUB, "t", value, 0.5])
    assert numbered is not None
    frame, start = numbered
    item = protocol.encode_item(PUB, "t", value, 0.5)
    assert frame == protocol.encode_numbered(seq, ack, [item])
    assert frame[start:] == item


def test_a_frame_that_cannot_be_numbered_in_one_go_is_left_to_two_steps() -> None:
    protocol = LinkProtocol(max_frame_size=100)
    assert protocol.encode_numbered_one(1, 0, [PUB, "t", object(), 0.5]) is None
    assert protocol.encode_numbered_one(1, 0, [PUB, "t", b"x" * 100, 0.5]) is None
    with pytest.raises(ProtocolError):
        protocol.encode_item(PUB, "t", b"x" * 100, 0.5)


def test_phi_accrual_suspects_sooner_on_a_steady_link() -> None:
    from chaski_actors.failure import PhiAccrualDetector, TimeoutDetector

    phi = PhiAccrualDetector(threshold=8.0)
    timeout = TimeoutDetector(5.0)
    for beat in range(50):
        now = beat * 1.0 + (0.01 if beat % 2 else 0.0)
        phi.heartbeat(now)
        timeout.heartbeat(now)
    assert phi.phi(49.5) < 1.0
    assert phi.phi(60.0) > 8.0
    suspect = phi.suspect_at()
    assert suspect is not None and 49.01 + 1.0 < suspect < 49.01 + 1.2
    assert timeout.suspect_at() == pytest.approx(54.01)
    assert phi.phi(suspect) == pytest.approx(8.0, abs=1e-6)
