"""The link protocol: what two nodes say to each other, as a state machine.

This module does no I/O. :class:`LinkProtocol` takes the bytes a connection
received and returns the frames they contained, checked; it takes frames to
send and returns their bytes. The node moves the bytes.

Frames
------
Every frame is one msgpack array ``[kind, field, ...]`` inside the codec's
length-prefixed, versioned envelope. ``kind`` is a small integer; the table
:data:`SCHEMAS` gives, for each kind, its name and the type of each field.
A frame whose kind is unknown, whose length is wrong, or whose fields have the
wrong types is a :class:`ProtocolError`, as is anything the codec rejects.
Higher layers (discovery, remote calls, streams) add kinds with
:func:`register_kind` at import time.

Numbered frames
---------------
Frames that must survive a broken connection (publishes, remote calls, ...)
travel inside one numbered frame ``[SEQ, seq, ack, [frame, frame, ...]]``
(see :mod:`chaski_actors.session` for the numbers). The frames inside are
plain arrays ``[kind, field, ...]``, not encoded bytes, so a numbered frame is
decoded once, and the list may carry many frames: what a node queued for one
peer within one turn of its event loop travels together, and the receiver
pays for the number, the acknowledgement and the decoding once per batch.
:func:`check_numbered` checks every frame inside against :data:`SCHEMAS` as
if it had come alone, and refuses kinds that belong to one connection
(:data:`UNNUMBERED`) and an empty list. Each frame inside is encoded once
(:meth:`LinkProtocol.encode_item`), however many peers it goes to; the
numbered frame around it is a few bytes joined in front of it.

States
------
A link starts in ``AWAIT_HELLO``. Both sides send ``HELLO`` as soon as the
connection is open, without waiting for the other, which saves a round trip.
The only frame accepted in ``AWAIT_HELLO`` is ``HELLO``; anything else is an
error, so nothing a peer says is acted on before it has introduced itself.
``HELLO`` moves the link to ``OPEN``, where every kind but ``HELLO`` is
accepted. ``BYE`` moves it to ``CLOSED``, where any further frame is an error.
The transitions are the table :data:`TRANSITIONS`.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from .codec import (
    DEFAULT_EXT,
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    ExtTypes,
    FrameDecoder,
    array_header,
    encode_frame,
    encode_payload,
    join_frame,
    pack_uint,
)
from .errors import ProtocolError

__all__ = [
    "ACK",
    "ANNOUNCE",
    "BYE",
    "FORWARD",
    "HEARTBEAT",
    "HELLO",
    "PING",
    "PONG",
    "PUB",
    "PUB_TIME_TYPES",
    "SCHEMAS",
    "SEQ",
    "SUB",
    "TRANSITIONS",
    "UNNUMBERED",
    "UNSUB",
    "Frame",
    "LinkProtocol",
    "LinkState",
    "check_frame",
    "check_numbered",
    "register_kind",
]


class LinkState(enum.Enum):
    AWAIT_HELLO = "await-hello"
    OPEN = "open"
    CLOSED = "closed"


# Field type markers: a tuple of accepted Python types, or ANY.
ANY: Final = (object,)
STR: Final = (str,)
INT: Final = (int,)
NUM: Final = (int, float)
LIST: Final = (list,)
BOOL: Final = (bool,)
BYTES: Final = (bytes,)

HELLO: Final = 1  # name, node_id, listen_host, listen_port, topics, options
BYE: Final = 2  # reason
SUB: Final = 3  # topic
UNSUB: Final = 4  # topic
PUB: Final = 5  # topic, data, sent_at
PING: Final = 6  # ping id, sent_at
PONG: Final = 7  # ping id, sent_at (echoed)
# Link sessions and keep-alive (see chaski_actors.session).
SEQ: Final = 8  # seq, ack, [frame, ...] (each frame a plain [kind, ...] array)
ACK: Final = 9  # ack
HEARTBEAT: Final = 10  # ack
# Discovery (see chaski_actors.discovery).
ANNOUNCE: Final = 11  # origin, node_id, host, port, topics, announce id, ttl
FORWARD: Final = 12  # origin, message id, ttl, topic, data, sent_at


@dataclass(frozen=True, slots=True)
class Schema:
    name: str
    fields: tuple[tuple[type, ...], ...]


SCHEMAS: dict[int, Schema] = {
    HELLO: Schema("hello", (STR, STR, STR, INT, LIST, (dict,))),
    BYE: Schema("bye", (STR,)),
    SUB: Schema("sub", (STR,)),
    UNSUB: Schema("unsub", (STR,)),
    PUB: Schema("pub", (STR, ANY, NUM)),
    PING: Schema("ping", (INT, NUM)),
    PONG: Schema("pong", (INT, NUM)),
    SEQ: Schema("seq", (INT, INT, LIST)),
    ACK: Schema("ack", (INT,)),
    HEARTBEAT: Schema("heartbeat", (INT,)),
    ANNOUNCE: Schema("announce", (STR, STR, STR, INT, LIST, INT, INT)),
    FORWARD: Schema("forward", (STR, INT, INT, STR, ANY, NUM)),
}

# Frames that belong to one connection and are never numbered.
UNNUMBERED: Final = frozenset({HELLO, BYE, SEQ, ACK, HEARTBEAT})

# (state, kind or None for "any other kind") -> next state, or an error text.
TRANSITIONS: dict[tuple[LinkState, int | None], LinkState | str] = {
    (LinkState.AWAIT_HELLO, HELLO): LinkState.OPEN,
    (LinkState.AWAIT_HELLO, None): "a frame arrived before the peer's hello",
    (LinkState.OPEN, HELLO): "a second hello on an open link",
    (LinkState.OPEN, BYE): LinkState.CLOSED,
    (LinkState.OPEN, None): LinkState.OPEN,
    (LinkState.CLOSED, None): "a frame arrived after the peer's bye",
}

# The kinds that take an open link anywhere but back to open.
_OPEN_EXITS: Final = frozenset(
    kind
    for (state, kind), outcome in TRANSITIONS.items()
    if state is LinkState.OPEN and kind is not None and outcome is not LinkState.OPEN
)


def register_kind(kind: int, name: str, *fields: tuple[type, ...]) -> None:
    """Add a frame kind for a higher layer (discovery, remote calls, ...)."""
    existing = SCHEMAS.get(kind)
    if existing is not None and existing != Schema(name, fields):
        raise ValueError(f"frame kind {kind} is taken by {existing.name!r}")
    SCHEMAS[kind] = Schema(name, tuple(fields))


class Frame(NamedTuple):
    """One checked frame: its kind and its fields.

    A named tuple rather than a frozen dataclass: one is built for every frame
    received, and a tuple is built several times faster.
    """

    kind: int
    fields: tuple[Any, ...]

    @property
    def name(self) -> str:
        return SCHEMAS[self.kind].name


def check_numbered(items: list[Any]) -> list[Frame]:
    """Check the frames inside a numbered frame; ProtocolError if one is bad."""
    if not items:
        raise ProtocolError("a numbered frame carries no frames")
    frames: list[Frame] = []
    append = frames.append
    for item in items:
        # Publishes are most of what is numbered, so theirs is the first
        # test, written out; anything else, or anything unusual about a
        # publish, takes the general check.
        if (
            type(item) is list
            and len(item) == 4
            and item[0] == PUB
            and type(item[0]) is int
            and type(item[1]) is str
            and type(item[3]) in PUB_TIME_TYPES
        ):
            append(_new_frame(Frame, (PUB, (item[1], item[2], item[3]))))
            continue
        # The kind is looked at before checking, so that a numbered frame
        # inside a numbered frame is refused without recursing into it.
        kind = item[0] if type(item) is list and item else None
        if type(kind) is int and kind in UNNUMBERED:
            raise ProtocolError(f"a {SCHEMAS[kind].name} frame cannot be numbered")
        append(check_frame(item))
    return frames


# The exact types msgpack gives a publish's time (NUM, without bool): what
# the quick checks of publishes accept, here and in the node.
PUB_TIME_TYPES: Final = (float, int)


def check_frame(item: object) -> Frame:
    """Check one decoded frame against :data:`SCHEMAS`; ProtocolError if bad."""
    # The common case first, and quickly: msgpack decodes to exact builtin
    # types, so comparing types by identity accepts every good frame and
    # leaves anything unusual (a subclass, a bool where an int is due, any
    # error) to the thorough check below, which has the final word.
    if type(item) is list and item:
        kind = item[0]
        fast = _FAST.get(kind) if type(kind) is int else None
        if fast is None or fast[0] is not SCHEMAS.get(kind):
            fast = _prepare(kind)
        if fast is not None and len(item) == fast[1]:
            fields = tuple(item)[1:]
            for index, types in fast[2]:
                if type(fields[index]) not in types:
                    break
            else:
                return _new_frame(Frame, (kind, fields))
    return _check_thoroughly(item)


# Per kind: the schema it was prepared from, the frame's length, and the
# fields whose type is checked (not ANY) with their types.
_Prepared = tuple["Schema", int, tuple[tuple[int, tuple[type, ...]], ...]]
_FAST: dict[int, _Prepared] = {}
# Building the tuple directly skips the named tuple's __new__ in Python.
_new_frame = tuple.__new__


def _prepare(kind: object) -> _Prepared | None:
    """What the quick check needs to know of one kind, from :data:`SCHEMAS`."""
    if type(kind) is not int:
        return None
    schema = SCHEMAS.get(kind)
    if schema is None:
        return None
    checks = tuple((i, t) for i, t in enumerate(schema.fields) if t is not ANY)
    prepared = (schema, len(schema.fields) + 1, checks)
    _FAST[kind] = prepared
    return prepared


def _check_thoroughly(item: object) -> Frame:
    if not isinstance(item, list) or not item:
        raise ProtocolError(f"a frame must be a non-empty array, got {type(item)}")
    kind = item[0]
    schema = SCHEMAS.get(kind) if type(kind) is int else None
    if schema is None:
        raise ProtocolError(f"unknown frame kind {kind!r}")
    fields = item[1:]
    if len(fields) != len(schema.fields):
        raise ProtocolError(
            f"{schema.name} frame has {len(fields)} fields, "
            f"expected {len(schema.fields)}"
        )
    for index, (value, types) in enumerate(zip(fields, schema.fields, strict=True)):
        if types is not ANY and (
            not isinstance(value, types)
            or (isinstance(value, bool) and bool not in types)
        ):
            raise ProtocolError(
                f"{schema.name} frame field {index + 1} has type {type(value).__name__}"
            )
    return Frame(kind, tuple(fields))


class LinkProtocol:
    """The sans-IO state machine of one link; see the module essay."""

    # Slots: one per link, used for every frame (see Session).
    __slots__ = (
        "_decoder",
        "_ext",
        "_max_frame_size",
        "_pack",
        "bytes_in",
        "bytes_out",
        "frames_in",
        "frames_out",
        "state",
    )

    def __init__(
        self,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        ext: ExtTypes | None = None,
    ) -> None:
        self.state = LinkState.AWAIT_HELLO
        self._decoder = FrameDecoder(max_frame_size=max_frame_size, ext=ext)
        self._max_frame_size = max_frame_size
        self._ext = ext
        self._pack = (DEFAULT_EXT if ext is None else ext)._pack
        self.frames_in = self.bytes_in = self.frames_out = self.bytes_out = 0

    def __repr__(self) -> str:
        return (
            f"<LinkProtocol {self.state.value} in={self.frames_in} "
            f"out={self.frames_out} buffered={self._decoder.buffered}>"
        )

    def encode(self, kind: int, *fields: Any) -> bytes:
        """The bytes of one frame, ready for every link that wants it."""
        return encode_frame(
            [kind, *fields], ext=self._ext, max_frame_size=self._max_frame_size
        )

    def encode_item(self, kind: int, *fields: Any) -> bytes:
        """One frame's msgpack object, to travel inside numbered frames."""
        return encode_payload(
            [kind, *fields], ext=self._ext, max_frame_size=self._max_frame_size
        )

    def encode_pub(self, topic: str, data: Any, sent_at: float) -> bytes:
        """:meth:`encode_item` for a publish, the most frequent frame, quicker."""
        try:
            payload = self._pack([PUB, topic, data, sent_at])
        except (TypeError, ValueError, OverflowError):
            payload = b""  # encode_item below says what was wrong
        if 0 < len(payload) < self._max_frame_size:
            return payload
        return self.encode_item(PUB, topic, data, sent_at)

    def encode_numbered(
        self, seq: int, ack: int, items: list[bytes | memoryview]
    ) -> bytes:
        """The numbered frame of ``items``, each a frame from :meth:`encode_item`.

        Joined in one go, so each item's bytes are copied once.
        """
        head = [_SEQ_HEAD, pack_uint(seq), pack_uint(ack), array_header(len(items))]
        return join_frame([*head, *items], max_frame_size=self._max_frame_size)

    def encode_numbered_one(
        self, seq: int, ack: int, frame: list[Any]
    ) -> tuple[bytes, int] | None:
        """:meth:`encode_numbered` of one frame, from its fields, in one go.

        ``frame`` is ``[kind, field, ...]``. The bytes are those that
        :meth:`encode_item` and :meth:`encode_numbered` make in two steps
        (msgpack packs a nested array exactly as it packs it alone), but
        one call into msgpack makes them, which is a good part of the cost
        of a lone remote call or answer. Returns the numbered frame and
        where the frame's own item starts in it, or None if ``frame``
        cannot be encoded or is over the size limit: the two steps then say
        what is wrong.
        """
        try:
            payload = self._pack([SEQ, seq, ack, [frame]])
        except (TypeError, ValueError, OverflowError):
            return None
        length = len(payload) + 1
        if length > self._max_frame_size:
            return None
        # Where the item starts: past the head, the two numbers (their
        # sizes told by their first bytes) and the list's one-byte header.
        start = len(_SEQ_HEAD)
        start += _UINT_SIZES.get(payload[start], 1)
        start += _UINT_SIZES.get(payload[start], 1) + 1 + HEADER_SIZE + 1
        return _LENGTH_AND_VERSION.pack(length, PROTOCOL_VERSION) + payload, start

    def encode_numbered_joined(
        self, seq: int, ack: int, count: int, joined: bytes
    ) -> bytes:
        """:meth:`encode_numbered` of ``count`` items already joined together.

        For a batch shared by several links: the items are joined once, and
        each link's frame only puts its own number in front.
        """
        head = [_SEQ_HEAD, pack_uint(seq), pack_uint(ack), array_header(count)]
        return join_frame([*head, joined], max_frame_size=self._max_frame_size)

    def reacknowledge(self, frame: bytes, ack: int) -> bytes:
        """A numbered frame made by :meth:`encode_numbered`, with a new ``ack``.

        For resending: the frames inside and their number stay as they were.
        """
        start = HEADER_SIZE + 1 + len(_SEQ_HEAD)
        seq_end = start + _uint_size(frame[start])
        ack_end = seq_end + _uint_size(frame[seq_end])
        return join_frame(
            [
                memoryview(frame)[HEADER_SIZE + 1 : seq_end],
                pack_uint(ack),
                memoryview(frame)[ack_end:],
            ],
            max_frame_size=self._max_frame_size,
        )

    def sent(self, data: bytes) -> None:
        """Count a frame encoded elsewhere and sent on this link."""
        self.frames_out += 1
        self.bytes_out += len(data)

    def receive_data(self, data: bytes) -> tuple[list[Frame], ProtocolError | None]:
        """Frames completed by ``data``, checked and in order, and any error.

        The frames are those before the first bad one, if any; they are good
        and are to be acted on. A returned error means the link must then be
        dropped, as the rest of its byte stream cannot be trusted.
        """
        self.bytes_in += len(data)
        items, error = self._decoder.feed_until_error(data)
        frames = []
        try:
            for item in items:
                # Nearly every frame is numbered, on an open link: its
                # check, written out; anything else takes the general one.
                if (
                    self.state is _OPEN
                    and type(item) is list
                    and len(item) == 4
                    and item[0] == SEQ
                    and type(item[0]) is int
                    and type(item[1]) is int
                    and type(item[2]) is int
                    and type(item[3]) is list
                ):
                    fields = (item[1], item[2], item[3])
                    frames.append(_new_frame(Frame, (SEQ, fields)))
                    continue
                frame = check_frame(item)
                # An open link stays open for every kind that has no
                # transition of its own: decided without a table lookup.
                if self.state is not _OPEN or frame.kind in _OPEN_EXITS:
                    self._advance(frame.kind)
                frames.append(frame)
        except ProtocolError as exc:
            error = exc
        if error is not None:
            self.state = LinkState.CLOSED
        self.frames_in += len(frames)
        return frames, error

    def _advance(self, kind: int) -> None:
        state = self.state
        outcome = TRANSITIONS.get((state, kind))
        if outcome is None:
            outcome = TRANSITIONS[state, None]
        if isinstance(outcome, str):
            self.state = LinkState.CLOSED
            raise ProtocolError(outcome)
        self.state = outcome


def _uint_size(first: int) -> int:
    """The length of an unsigned msgpack int that :func:`pack_uint` made."""
    return _UINT_SIZES.get(first, 1)


# By the first byte: uint 8, 16, 32 and 64; a positive fixint is one byte.
_UINT_SIZES: Final = {0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9}

# Looked up once: an enum member read through its class costs a lookup of
# its own on every read.
_OPEN: Final = LinkState.OPEN

# A frame's length and version, as the codec writes them.
_LENGTH_AND_VERSION: Final = struct.Struct(">IB")

# A numbered frame is a four-element array that starts with the kind SEQ.
_SEQ_HEAD: Final = array_header(4) + pack_uint(SEQ)

FrameHandler = Callable[[Any, Frame], Any]
