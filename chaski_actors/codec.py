"""The wire codec: how values become frames, and frames become values again.

Everything a node sends on a stream travels as a sequence of frames. This module
turns values into frames and bytes back into values, and nothing more: it does
no I/O, keeps no clock and never waits, so both backends and every protocol
state machine share it, and the simulated network carries exactly the bytes
that a real socket would.

Frame layout
------------

::

    +--------------------+-----------+----------------------------------+
    | length N           | version   | payload                          |
    | 4 bytes, unsigned, | 1 byte    | N - 1 bytes: exactly one msgpack |
    | big-endian         |           | object                           |
    +--------------------+-----------+----------------------------------+

N counts every byte after the length field (the version byte and the
payload), so a whole frame occupies ``HEADER_SIZE + N`` bytes. The limit
``max_frame_size`` applies to N, and both ends must agree on it.

A frame can also be put together from pieces encoded earlier
(:func:`join_frame`): msgpack encodes an array as a header that counts its
elements followed by the elements' own encodings, so an array header, a few
small ints (:func:`pack_uint`) and values packed once with
:func:`encode_payload` join into a frame that a decoder cannot tell from one
packed in one go. The link layer uses this to wrap one encoded message in a
numbered frame per peer without encoding the message again.

A decoder refuses, with :class:`~chaski_actors.errors.ProtocolError`:

* an N larger than ``max_frame_size``, as soon as the four length bytes have
  arrived. Waiting for the body first would let a peer make us buffer up to
  4 GiB by announcing it;
* N = 0, which has no room for the version byte;
* a version byte other than :data:`PROTOCOL_VERSION`, as soon as it arrives.
  Putting the version in every frame costs one byte and means a peer running
  an incompatible release is refused before anything it sent is misread;
* a payload that is not exactly one well-formed msgpack object: bad msgpack,
  an incomplete object, or bytes left over after the object.

After the first refusal a :class:`FrameDecoder` is broken for good. Once the
framing of a byte stream is in doubt no later byte can be trusted, so the
connection it reads from has to be closed.

Values
------

The payload is msgpack, packed with ``use_bin_type=True`` so that ``str`` and
``bytes`` stay distinct. What comes back is not always the type that went in:

* tuples come back as lists, because msgpack has one array type;
* ``bytearray`` and ``memoryview`` come back as ``bytes``, because msgpack has
  one binary type;
* map keys must be ``str`` or ``bytes``. Maps with other keys are encoded,
  but every decoder refuses them. Strings hash with a secret per-process key
  (unless ``PYTHONHASHSEED`` pins it), while ints, floats and tuples hash
  predictably, so a peer could fill a 1 MiB frame with colliding keys and
  make building the dict quadratic.

Values outside msgpack's own types travel as msgpack extension types, listed
in an :class:`ExtTypes` registry. The built-in ones are::

    code  type                payload
    1     datetime.datetime   wall-clock fields, fold, and the UTC offset if aware
    2     complex             two IEEE 754 doubles, real then imaginary
    3     numpy.ndarray       [dtype string, shape, raw C-order bytes]

An aware datetime comes back with a fixed-offset ``timezone``: the offset
survives, a zone's name and rules (a ``ZoneInfo``) do not. A numpy array comes
back as a new, writable, C-ordered array.

numpy is optional and never imported by this module on its own account: an
array can only be encoded once the application has imported numpy, and
decoding one imports numpy on first use. The standard msgpack timestamp
(extension code -1), which other msgpack implementations emit for times, is
decoded as an aware ``datetime`` in UTC. Any other extension code that the
registry does not know is refused.

Nothing in this module executes received data: there is no pickle, no eval,
and numpy arrays of object dtype are refused in both directions. Every length
that msgpack reads from a payload is capped by the size of the frame it sits
in, so a hostile length prefix inside a frame cannot allocate more than a
small multiple of the frame itself.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import msgpack

from .errors import ConfigError, ProtocolError

__all__ = [
    "DEFAULT_EXT",
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "PROTOCOL_VERSION",
    "DecoderStatistics",
    "ExtTypes",
    "FrameDecoder",
    "array_header",
    "decode_frame",
    "encode_frame",
    "encode_payload",
    "join_frame",
    "pack_uint",
]

_T = TypeVar("_T")

PROTOCOL_VERSION: Final = 1

HEADER_SIZE: Final = 4

# 1 MiB carries any control message and ordinary pub/sub payloads; bulk data
# is meant to be streamed in pieces. It also bounds what a hostile or broken
# peer can make a node buffer (about 1 MiB per connection, so 64 MiB at the
# default 64 connections), and a frame of this size holds a 100 Mbit/s link
# for about 84 ms, not long enough to delay keep-alives queued behind it.
DEFAULT_MAX_FRAME_SIZE: Final = 1 << 20

# The length field is 32 bits wide, so no limit above this can be expressed.
_LARGEST_LENGTH: Final = 0xFFFF_FFFF

_LENGTH = struct.Struct(">I")
_LENGTH_AND_VERSION = struct.Struct(">IB")

# Extension codes 0..127 belong to applications; msgpack reserves the negative
# ones for itself.
_FIRST_APP_CODE: Final = 0
_LAST_APP_CODE: Final = 127

_DATETIME_CODE: Final = 1
_COMPLEX_CODE: Final = 2
_NDARRAY_CODE: Final = 3

# Tells msgpack to decode its standard timestamp extension as an aware
# datetime in UTC, the closest thing to what we ourselves send for a time.
_TIMESTAMP_AS_DATETIME: Final = 3


@dataclass(frozen=True, slots=True)
class _ExtCodec:
    """How one application type travels as one msgpack extension code."""

    code: int
    type: type[Any]
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], object]


class ExtTypes:
    """A registry of msgpack extension types for values msgpack cannot carry.

    Each entry ties an extension code (0 to 127) to a Python type, a function
    that turns a value of that type into ``bytes`` and one that turns those
    bytes back into a value. A decode function receives bytes from the network
    and must treat them as hostile: validate, never execute. Whatever it raises
    reaches the caller as a :class:`ProtocolError`.

    ``ExtTypes()`` starts with the built-in codes listed in the module
    docstring; ``ExtTypes(builtins=False)`` starts empty. Both ends of a
    connection must use registries that agree on every code they exchange.

    Encoding looks a value's exact type up first and then its base classes, so
    a subclass of a registered type is encoded as the registered type and
    decodes as that type.
    """

    __slots__ = ("_by_code", "_by_type", "_deferred", "_pack_lock", "_packer")

    def __init__(self, *, builtins: bool = True) -> None:
        self._by_code: dict[int, _ExtCodec] = {}
        self._by_type: dict[type[Any], _ExtCodec] = {}
        self._deferred: dict[int, Callable[[], _ExtCodec]] = {}

        # One reusable Packer is about twice as fast per message as
        # msgpack.packb, which builds a new one on every call. It keeps an
        # internal buffer, so the lock lets only one caller use it at a time.
        self._packer = msgpack.Packer(use_bin_type=True, default=self._to_ext)
        self._pack_lock = threading.Lock()

        if builtins:
            self._register_builtins()

    def register(
        self,
        code: int,
        type_: type[_T],
        encode: Callable[[_T], bytes],
        decode: Callable[[bytes], _T],
    ) -> None:
        """Send values of ``type_`` as extension ``code``, using the two functions.

        Raises :class:`ConfigError` if the code is outside 0 to 127, or if the
        code or the type is already registered.
        """
        if isinstance(code, bool) or not isinstance(code, int):
            raise ConfigError(f"extension code must be an int, not {code!r}")
        if not _FIRST_APP_CODE <= code <= _LAST_APP_CODE:
            raise ConfigError(
                f"extension code {code} is outside "
                f"{_FIRST_APP_CODE}..{_LAST_APP_CODE}, the range msgpack leaves to "
                "applications"
            )
        if code in self._by_code or code in self._deferred:
            raise ConfigError(f"extension code {code} is already registered")
        if type_ in self._by_type:
            raise ConfigError(f"{type_.__qualname__} already has an extension code")

        codec = _ExtCodec(code, type_, encode, decode)
        self._by_code[code] = codec
        self._by_type[type_] = codec

    def _register_builtins(self) -> None:
        self.register(_DATETIME_CODE, dt.datetime, _encode_datetime, _decode_datetime)
        self.register(_COMPLEX_CODE, complex, _encode_complex, _decode_complex)
        self._deferred[_NDARRAY_CODE] = _ndarray_codec

    def __repr__(self) -> str:
        entries = [f"{c.code}:{c.type.__qualname__}" for c in self._by_code.values()]
        entries += [f"{code}:(deferred)" for code in self._deferred]
        return f"<ExtTypes codes=[{', '.join(entries)}]>"

    def _pack(self, obj: object) -> bytes:
        """Encode ``obj`` as msgpack; raises what msgpack and the encoders raise."""
        # A second thread, or an encoder that itself encodes a frame, finds the
        # lock taken and falls back to the slower one-shot path. (The flag is
        # passed by position because parsing a keyword costs about 80 ns.)
        if not self._pack_lock.acquire(False):
            packed: bytes = msgpack.packb(obj, use_bin_type=True, default=self._to_ext)
            return packed

        try:
            packed = self._packer.pack(obj)
        finally:
            self._pack_lock.release()
        return packed

    def _to_ext(self, obj: object) -> msgpack.ExtType:
        """Turn a value msgpack cannot pack into an extension value (its hook)."""
        codec = self._by_type.get(type(obj)) or self._find_encoder(type(obj))
        return msgpack.ExtType(codec.code, codec.encode(obj))

    def _find_encoder(self, cls: type[Any]) -> _ExtCodec:
        """Find the codec for a type not registered as itself: the slow path."""
        self._install_imported_deferred()

        for base in cls.__mro__:
            codec = self._by_type.get(base)
            if codec is not None:
                return codec

        # msgpack's own convention for "cannot serialize"; encode_frame turns it
        # into a ProtocolError.
        raise TypeError(
            f"cannot encode a {cls.__qualname__}: it is not a msgpack type and has "
            "no registered extension type"
        )

    def _install_imported_deferred(self) -> None:
        """Install the deferred codecs whose modules the application has imported.

        A value of a deferred type (a numpy array) can only exist once its
        module has been imported, so a codec whose module is still absent
        cannot be needed for encoding yet.
        """
        if _NDARRAY_CODE in self._deferred and "numpy" in sys.modules:
            self._install_deferred(_NDARRAY_CODE)

    def _install_deferred(self, code: int) -> _ExtCodec | None:
        """Install the deferred codec for ``code``; None if there is none."""
        factory = self._deferred.pop(code, None)
        if factory is None:
            return self._by_code.get(code)

        # A codec whose module is not installed here stays unregistered, and
        # its code is then refused like any unknown one.
        try:
            codec = factory()
        except ImportError:
            return None
        self._by_code[code] = codec
        self._by_type[codec.type] = codec
        return codec

    def _from_ext(self, code: int, data: bytes) -> object:
        """Turn an extension value back into a Python value (msgpack's ext_hook)."""
        codec = self._by_code.get(code) or self._install_deferred(code)
        if codec is None:
            raise ProtocolError(
                f"frame holds msgpack extension code {code}, which this node has not "
                "registered; both ends must register the same extension types"
            )
        return codec.decode(data)


# Wall-clock fields year, month, day, hour, minute, second, microsecond and
# fold; an aware datetime adds its UTC offset in microseconds. Storing the
# fields rather than an instant keeps naive values exact and keeps the offset.
_DATETIME_FIELDS = struct.Struct(">HBBBBBIB")
_UTC_OFFSET = struct.Struct(">q")
_ONE_MICROSECOND = dt.timedelta(microseconds=1)


def _encode_datetime(value: dt.datetime) -> bytes:
    """Pack a datetime; the offset is kept but a zone's name and rules are not."""
    fields = _DATETIME_FIELDS.pack(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        value.fold,
    )

    offset = value.utcoffset()
    if offset is None:
        return fields
    return fields + _UTC_OFFSET.pack(offset // _ONE_MICROSECOND)


def _decode_datetime(data: bytes) -> dt.datetime:
    """Unpack a datetime; an aware one gets a fixed-offset ``timezone``."""
    if len(data) == _DATETIME_FIELDS.size:
        tzinfo = None
    elif len(data) == _DATETIME_FIELDS.size + _UTC_OFFSET.size:
        (offset,) = _UTC_OFFSET.unpack_from(data, _DATETIME_FIELDS.size)
        tzinfo = dt.timezone(dt.timedelta(microseconds=offset))
    else:
        raise ValueError(f"a datetime extension value cannot be {len(data)} bytes")

    year, month, day, hour, minute, second, micro, fold = _DATETIME_FIELDS.unpack_from(
        data
    )
    return dt.datetime(
        year, month, day, hour, minute, second, micro, tzinfo=tzinfo, fold=fold
    )


_COMPLEX = struct.Struct(">dd")


def _encode_complex(value: complex) -> bytes:
    return _COMPLEX.pack(value.real, value.imag)


def _decode_complex(data: bytes) -> complex:
    real, imag = _COMPLEX.unpack(data)
    return complex(real, imag)


# The numpy dtype kinds that are plain bytes in memory: bool, signed and
# unsigned ints, floats, complex, timedelta64, datetime64, bytes and str.
# Object arrays hold pointers, and structured ('V') dtypes would lose their
# field names in a dtype string, so both are refused.
_PLAIN_NUMPY_KINDS: Final = frozenset("biufcmMSU")

# What dtype.str gives for those kinds: byte order, kind, item size, and for
# datetime and timedelta a unit, as in "<i4", "|b1", "<U3" or "<M8[10ms]".
_DTYPE_TEXT: Final = re.compile(
    r"[<>|][biufcmMSU][0-9]{1,9}(\[[0-9]{0,9}[a-zA-Z]{1,2}\])?"
)


def _ndarray_codec() -> _ExtCodec:
    """Build the numpy codec; called only once numpy is known to be wanted."""
    import numpy

    return _ExtCodec(_NDARRAY_CODE, numpy.ndarray, _encode_ndarray, _decode_ndarray)


def _encode_ndarray(array: Any) -> bytes:
    """Pack an array as its dtype string, its shape and its C-order bytes."""
    if array.dtype.kind not in _PLAIN_NUMPY_KINDS:
        raise TypeError(
            f"cannot encode a numpy array of dtype {array.dtype}: only numeric, "
            "bool, datetime, bytes and str dtypes can be sent"
        )

    fields = [array.dtype.str, list(array.shape), array.tobytes(order="C")]
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def _decode_ndarray(data: bytes) -> Any:
    """Unpack an array into a new, writable, C-ordered array of its own."""
    import numpy

    match msgpack.unpackb(data, raw=False):
        case [str() as dtype_text, list() as shape, bytes() as raw]:
            pass
        case _:
            raise ValueError("a numpy extension value must be [dtype, shape, bytes]")

    # Only the canonical text that the encoder writes is handed to numpy, so a
    # peer cannot reach numpy's many other dtype spellings (structured, object,
    # deprecated aliases); the kind check then holds even if numpy reads a
    # canonical text differently from what the pattern assumes.
    if not _DTYPE_TEXT.fullmatch(dtype_text):
        raise ValueError(f"numpy arrays of dtype {dtype_text!r} are refused")
    dtype = numpy.dtype(dtype_text)
    if dtype.kind not in _PLAIN_NUMPY_KINDS:
        raise ValueError(f"numpy arrays of dtype {dtype_text!r} are refused")
    if not all(type(n) is int and n >= 0 for n in shape):
        raise ValueError(f"numpy array shape {shape!r} is not a list of sizes")

    return numpy.frombuffer(raw, dtype=dtype).reshape(shape).copy()


# The registry used where none is given: the built-in extension types.
DEFAULT_EXT = ExtTypes()


def encode_frame(
    obj: object,
    *,
    ext: ExtTypes | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> bytes:
    """Encode ``obj`` as one complete frame, header included.

    ``ext`` defaults to a shared registry with the built-in extension types.
    Raises :class:`ProtocolError` if ``obj`` cannot be encoded (an unsupported
    type, an int outside the 64-bit ranges, a str with lone surrogates) or if
    the frame would be longer than ``max_frame_size``.
    """
    payload = encode_payload(obj, ext=ext, max_frame_size=max_frame_size)
    return _LENGTH_AND_VERSION.pack(len(payload) + 1, PROTOCOL_VERSION) + payload


def encode_payload(
    obj: object,
    *,
    ext: ExtTypes | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> bytes:
    """Encode ``obj`` as the msgpack object of a frame, without the header.

    For values that travel inside a larger frame (see :func:`join_frame`);
    refuses what :func:`encode_frame` refuses.
    """
    registry = DEFAULT_EXT if ext is None else ext
    try:
        payload = registry._pack(obj)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(
            f"cannot encode {type(obj).__qualname__} value as a frame: {exc}"
        ) from exc

    length = len(payload) + 1
    if length > max_frame_size:
        raise ProtocolError(
            f"encoded frame is {length} bytes, over the limit of {max_frame_size}; "
            "send the data in smaller pieces or raise max_frame_size on both ends"
        )
    return payload


# msgpack's markers for unsigned ints and arrays of each width.
_UINT8, _UINT16, _UINT32, _UINT64 = b"\xcc", b"\xcd", b"\xce", b"\xcf"
_ARRAY16, _ARRAY32 = b"\xdc", b"\xdd"
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
# The one-byte encodings of 0..127 (positive fixints), prebuilt.
_FIXINTS: Final = tuple(bytes((n,)) for n in range(128))


def pack_uint(n: int) -> bytes:
    """msgpack's shortest encoding of an int from 0 to 2**64 - 1."""
    if n < 128:
        return _FIXINTS[n]
    if n <= 0xFF:
        return _UINT8 + bytes((n,))
    if n <= 0xFFFF:
        return _UINT16 + _U16.pack(n)
    if n <= 0xFFFF_FFFF:
        return _UINT32 + _U32.pack(n)
    return _UINT64 + _U64.pack(n)


def array_header(count: int) -> bytes:
    """The msgpack header of an array of ``count`` elements."""
    if count < 16:
        return bytes((0x90 | count,))
    if count <= 0xFFFF:
        return _ARRAY16 + _U16.pack(count)
    return _ARRAY32 + _U32.pack(count)


def join_frame(
    parts: list[bytes | memoryview],
    *,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> bytes:
    """One frame whose msgpack object is ``parts`` joined, header included.

    The parts must join into exactly one msgpack object: an array header
    followed by the encodings of its elements, each made by msgpack (or by
    :func:`pack_uint` and :func:`array_header`). This is how a value made of
    pieces encoded earlier, perhaps once for many frames, becomes a frame
    without being encoded again.
    """
    length = 1 + sum(map(len, parts))
    if length > max_frame_size:
        raise ProtocolError(
            f"frame is {length} bytes, over the limit of {max_frame_size}; "
            "send the data in smaller pieces or raise max_frame_size on both ends"
        )
    return b"".join([_LENGTH_AND_VERSION.pack(length, PROTOCOL_VERSION), *parts])


def decode_frame(
    data: bytes | bytearray | memoryview,
    *,
    ext: ExtTypes | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> object:
    """Decode ``data``, which must be exactly one whole frame, header included.

    Raises :class:`ProtocolError` if it is anything else.
    """
    # Frames nested in other frames come through here one at a time, so a
    # well-formed one is decoded directly. Anything amiss, down to an error
    # inside msgpack, takes the decoder's path, which says what is wrong.
    size = len(data) - HEADER_SIZE - 1
    limit = max_frame_size if type(max_frame_size) is int else 0
    if size >= 0 and limit <= _LARGEST_LENGTH:
        length, version = _LENGTH_AND_VERSION.unpack_from(data)
        if length == size + 1 <= limit and version == PROTOCOL_VERSION:
            registry = DEFAULT_EXT if ext is None else ext
            try:
                return msgpack.unpackb(
                    memoryview(data)[HEADER_SIZE + 1 :],
                    raw=False,
                    timestamp=_TIMESTAMP_AS_DATETIME,
                    ext_hook=registry._from_ext,
                    max_str_len=size,
                    max_bin_len=size,
                    max_ext_len=size,
                    max_array_len=size,
                    max_map_len=size // 2,
                )
            except Exception:
                pass

    decoder = FrameDecoder(max_frame_size, ext)
    values = decoder.feed(data)

    if not values:
        raise ProtocolError("data ends before the frame it starts is complete")
    if len(values) > 1 or decoder.buffered:
        raise ProtocolError("data goes on after the end of the first frame")
    return values[0]


@dataclass(frozen=True, slots=True)
class DecoderStatistics:
    """A snapshot of one :class:`FrameDecoder`.

    ``bytes`` counts the bytes of the decoded frames, headers included, so
    ``bytes + buffered`` is everything fed in so far, until the decoder breaks.
    """

    frames: int
    bytes: int
    buffered: int


class FrameDecoder:
    """Turns a byte stream, fed in pieces of any size, into decoded values.

    ``feed`` returns the values of every frame that the new bytes completed, in
    order, and keeps the rest for the next call. Invalid input raises
    :class:`ProtocolError` and breaks the decoder: later calls raise it too.
    ``ext`` and ``max_frame_size`` must match the encoder's.
    """

    __slots__ = (
        "_buffer",
        "_bytes",
        "_error",
        "_ext_hook",
        "_frames",
        "_max_frame_size",
    )

    def __init__(
        self,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        ext: ExtTypes | None = None,
    ) -> None:
        if isinstance(max_frame_size, bool) or not isinstance(max_frame_size, int):
            raise ConfigError(f"max_frame_size must be an int, not {max_frame_size!r}")
        if not 1 <= max_frame_size <= _LARGEST_LENGTH:
            raise ConfigError(
                f"max_frame_size = {max_frame_size} is outside 1..{_LARGEST_LENGTH}, "
                "the lengths a frame header can announce"
            )

        registry = DEFAULT_EXT if ext is None else ext
        self._max_frame_size = max_frame_size
        self._ext_hook = registry._from_ext
        self._buffer = bytearray()
        self._error: ProtocolError | None = None
        self._frames = 0
        self._bytes = 0

    @property
    def max_frame_size(self) -> int:
        return self._max_frame_size

    @property
    def buffered(self) -> int:
        """Bytes received that are not yet part of a complete frame."""
        return len(self._buffer)

    def statistics(self) -> DecoderStatistics:
        return DecoderStatistics(self._frames, self._bytes, len(self._buffer))

    def __repr__(self) -> str:
        state = "open" if self._error is None else "broken"
        return (
            f"<FrameDecoder {state} frames={self._frames} "
            f"buffered={len(self._buffer)} max_frame_size={self._max_frame_size}>"
        )

    def feed(self, data: bytes | bytearray | memoryview) -> list[object]:
        """Add received bytes; return the values of the frames they completed."""
        values, error = self.feed_until_error(data)
        if error is not None:
            raise error
        return values

    def feed_until_error(
        self, data: bytes | bytearray | memoryview
    ) -> tuple[list[object], ProtocolError | None]:
        """Like :meth:`feed`, but hand back the good frames before a bad one.

        A read can carry valid frames followed by a broken one; they were sent
        in good faith, and dropping them with the connection would lose them.
        The error, if any, comes back beside them instead of being raised.
        """
        if self._error is not None:
            return [], ProtocolError(
                "decoder is broken by an earlier protocol error "
                f"({self._error}); close this connection and open a new one"
            )

        if not self._buffer:
            value = self._decode_whole(data)
            if value is not _NOT_WHOLE:
                return [value], None

        self._buffer += data
        values: list[object] = []
        try:
            self._parse(values)
        except ProtocolError as exc:
            self._break(exc)
            return values, exc
        # Besides our own checks, only msgpack and the extension decoders it
        # calls can fail in _parse, and they raise many types (ValueError,
        # TypeError for an unhashable map key, OverflowError, whatever a user's
        # decoder raises). For received bytes all of them mean that the peer
        # broke the rules.
        except Exception as exc:
            error = _payload_error(exc)
            error.__cause__ = exc
            self._break(error)
            return values, error
        return values, None

    def _decode_whole(self, data: bytes | bytearray | memoryview) -> object:
        """The value of ``data`` if it is exactly one good frame, else _NOT_WHOLE.

        A read holds exactly one frame more often than not (a remote call,
        its answer), and then the buffer is not needed. Anything else, good
        or bad, is left to the general path, which says what is wrong.
        """
        size = len(data) - HEADER_SIZE - 1
        if size < 0:
            return _NOT_WHOLE
        length, version = _LENGTH_AND_VERSION.unpack_from(data)
        if (
            length != size + 1
            or length > self._max_frame_size
            or version != PROTOCOL_VERSION
        ):
            return _NOT_WHOLE
        # A small frame is copied out: msgpack reads a bytes object faster
        # than a view, by more than the copy costs.
        body = (
            data[HEADER_SIZE + 1 :]
            if size <= _COPY_UP_TO
            else memoryview(data)[HEADER_SIZE + 1 :]
        )
        try:
            value = msgpack.unpackb(
                body,
                raw=False,
                timestamp=_TIMESTAMP_AS_DATETIME,
                ext_hook=self._ext_hook,
                max_str_len=size,
                max_bin_len=size,
                max_ext_len=size,
                max_array_len=size,
                max_map_len=size // 2,
            )
        except Exception:
            return _NOT_WHOLE
        self._frames += 1
        self._bytes += len(data)
        return value

    def _break(self, error: ProtocolError) -> None:
        # Nothing buffered can be trusted any more, so let the memory go.
        self._error = error
        self._buffer = bytearray()

    def _parse(self, values: list[object]) -> None:
        """Decode every complete frame in the buffer, then drop their bytes.

        One read from a socket often holds many frames, so they are walked with
        an offset and the consumed prefix is deleted once per call. What stays
        behind is never more than one incomplete frame, which the next deletion
        will not move again, so each received byte is copied at most twice:
        into the buffer, and perhaps once towards its front.
        """
        buffer = self._buffer
        end = len(buffer)
        offset = 0

        # The loop is written out in one piece because a function call per
        # frame is a noticeable share of the cost of decoding a small frame.
        max_frame_size = self._max_frame_size
        ext_hook = self._ext_hook
        with memoryview(buffer) as view:
            while end - offset >= HEADER_SIZE:
                (length,) = _LENGTH.unpack_from(buffer, offset)
                if not 0 < length <= max_frame_size:
                    raise _length_error(length, max_frame_size)

                version_at = offset + HEADER_SIZE
                if version_at < end and buffer[version_at] != PROTOCOL_VERSION:
                    raise _version_error(buffer[version_at])

                stop = version_at + length
                if stop > end:
                    break

                # An array element takes at least one byte and a map entry at
                # least two, so these caps admit every valid payload while
                # keeping a forged count from making msgpack preallocate far
                # beyond the frame. (msgpack picks the same caps by default,
                # but the guarantee should not hang on a library default.)
                size = length - 1
                value = msgpack.unpackb(
                    view[version_at + 1 : stop],
                    raw=False,
                    timestamp=_TIMESTAMP_AS_DATETIME,
                    ext_hook=ext_hook,
                    max_str_len=size,
                    max_bin_len=size,
                    max_ext_len=size,
                    max_array_len=size,
                    max_map_len=size // 2,
                )
                values.append(value)
                offset = stop

        if offset:
            del buffer[:offset]
            self._frames += len(values)
            self._bytes += offset


# Up to this many bytes, a whole frame's body is copied before decoding
# (FrameDecoder._decode_whole). Past it the copy would cost more than reading
# through a view; the figure is arbitrary between those two.
_COPY_UP_TO: Final = 4096

# What FrameDecoder._decode_whole returns for data it leaves to the general
# path (None is a value a frame may hold).
_NOT_WHOLE: Final = object()


def _length_error(length: int, max_frame_size: int) -> ProtocolError:
    """Explain why a frame length that is zero or over the limit is refused."""
    if length == 0:
        return ProtocolError("frame length is 0, too short for the version byte")
    return ProtocolError(
        f"frame header announces {length} bytes, over the limit of "
        f"{max_frame_size}; the peer is broken or uses a larger max_frame_size"
    )


def _version_error(version: int) -> ProtocolError:
    return ProtocolError(
        f"frame has protocol version {version}, but this node speaks version "
        f"{PROTOCOL_VERSION}; upgrade the older of the two nodes"
    )


def _payload_error(exc: Exception) -> ProtocolError:
    """Translate a failure inside msgpack or an extension decoder."""
    if isinstance(exc, msgpack.ExtraData):
        return ProtocolError(
            "frame has bytes left over after its msgpack object, but a frame "
            "holds exactly one object"
        )
    return ProtocolError(f"frame payload is not valid: {type(exc).__name__}: {exc}")
