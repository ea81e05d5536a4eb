"""The wire codec: round trips, framing rules, and hostile input."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import math
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaski_actors.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    DecoderStatistics,
    ExtTypes,
    FrameDecoder,
    decode_frame,
    encode_frame,
)
from chaski_actors.errors import ConfigError, ProtocolError

# Enough to find the framing and splitting bugs this file looks for, while the
# whole file stays within a few seconds.
EXAMPLES = settings(max_examples=200, deadline=None)

INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=INT64_MIN, max_value=UINT64_MAX)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


def raw_frame(payload: bytes, *, version: int = PROTOCOL_VERSION) -> bytes:
    """A frame built by hand, so tests can break the rules encode_frame keeps."""
    return struct.pack(">IB", len(payload) + 1, version) + payload


def assert_same(got: Any, want: Any) -> None:
    """Equality that also checks types (True is not 1) and lets NaN equal NaN."""
    assert type(got) is type(want), (got, want)
    if isinstance(want, float) and math.isnan(want):
        assert math.isnan(got)
    elif isinstance(want, list):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
    elif isinstance(want, dict):
        assert list(got) == list(want)
        for key in want:
            assert_same(got[key], want[key])
    else:
        assert got == want


def feed_in_pieces(decoder: FrameDecoder, stream: bytes, cuts: list[int]) -> list[Any]:
    """Feed ``stream`` split at ``cuts``; return every value the decoder gave."""
    out: list[Any] = []
    bounds = [0, *sorted(cuts), len(stream)]
    for start, stop in itertools.pairwise(bounds):
        out += decoder.feed(stream[start:stop])
    return out


# Round trips


@EXAMPLES
@given(st.lists(values, min_size=1, max_size=5), st.data())
def test_values_survive_any_split_of_the_stream(
    messages: list[Any], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(m) for m in messages)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))

    decoder = FrameDecoder()
    got = feed_in_pieces(decoder, stream, cuts)

    assert len(got) == len(messages)
    for g, w in zip(got, messages, strict=True):
        assert_same(g, w)
    assert decoder.statistics() == DecoderStatistics(len(messages), len(stream), 0)


@EXAMPLES
@given(values)
def test_decode_frame_inverts_encode_frame(value: Any) -> None:
    assert_same(decode_frame(encode_frame(value)), value)


def test_frame_layout_is_length_version_payload() -> None:
    frame = encode_frame([1, "a"])

    # N = 5: the version byte and a 4-byte array [1, "a"].
    assert frame == b"\x00\x00\x00\x05\x01\x92\x01\xa1a"
    assert len(frame) == HEADER_SIZE + 5


def test_tuples_come_back_as_lists_and_bytearrays_as_bytes() -> None:
    value = decode_frame(encode_frame([(1, 2), bytearray(b"ab"), memoryview(b"cd")]))

    assert value == [[1, 2], b"ab", b"cd"]


def test_many_frames_in_one_read() -> None:
    stream = b"".join(encode_frame({"seq": i}) for i in range(10_000))

    got = FrameDecoder().feed(stream)

    assert got == [{"seq": i} for i in range(10_000)]


def test_frames_that_each_fill_a_read_are_counted_like_any_other() -> None:
    frames = [encode_frame(value) for value in (None, "x", [1, {"a": b"b"}])]
    decoder = FrameDecoder(max_frame_size=100)

    got = [decoder.feed(frame) for frame in frames]

    assert got == [[None], ["x"], [[1, {"a": b"b"}]]]
    size = sum(map(len, frames))
    assert decoder.statistics() == DecoderStatistics(3, size, 0)


def test_statistics_and_repr_describe_the_state() -> None:
    frame = encode_frame("hello")
    decoder = FrameDecoder(max_frame_size=100)

    decoder.feed(frame + frame + frame[:3])

    assert decoder.statistics() == DecoderStatistics(2, 2 * len(frame), 3)
    assert decoder.buffered == 3
    assert repr(decoder) == "<FrameDecoder open frames=2 buffered=3 max_frame_size=100>"


# Incomplete input


def test_truncated_frame_gives_nothing_until_complete() -> None:
    frame = encode_frame({"topic": "t", "payload": b"x" * 50})

    for size in range(len(frame)):
        decoder = FrameDecoder()
        assert decoder.feed(frame[:size]) == []
        assert decoder.buffered == size
        assert decoder.feed(frame[size:]) == [{"topic": "t", "payload": b"x" * 50}]
        assert decoder.buffered == 0


def test_byte_by_byte_feeding() -> None:
    frame = encode_frame([1.5, None, True])
    decoder = FrameDecoder()

    got = [value for byte in frame for value in decoder.feed(bytes([byte]))]

    assert got == [[1.5, None, True]]


def test_feed_accepts_bytearray_and_memoryview() -> None:
    frame = encode_frame("x")
    decoder = FrameDecoder()

    assert decoder.feed(bytearray(frame)) == ["x"]
    assert decoder.feed(memoryview(frame)) == ["x"]


# Framing rules


def test_oversized_length_is_refused_before_the_body_arrives() -> None:
    decoder = FrameDecoder(max_frame_size=100)

    assert decoder.feed(struct.pack(">I", 101)[:3]) == []
    with pytest.raises(ProtocolError, match="101 bytes, over the limit of 100"):
        decoder.feed(struct.pack(">I", 101)[3:])


def test_largest_allowed_frame_is_accepted() -> None:
    payload = msgpack.packb(b"x" * 90)
    decoder = FrameDecoder(max_frame_size=len(payload) + 1)

    assert decoder.feed(raw_frame(payload)) == [b"x" * 90]


def test_zero_length_frame_is_refused() -> None:
    with pytest.raises(ProtocolError, match="length is 0"):
        FrameDecoder().feed(b"\x00\x00\x00\x00")


def test_frame_with_version_only_is_refused() -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(raw_frame(b""))


def test_wrong_version_is_refused_as_soon_as_it_arrives() -> None:
    frame = raw_frame(msgpack.packb("x" * 100), version=PROTOCOL_VERSION + 1)

    with pytest.raises(ProtocolError, match="protocol version 2"):
        FrameDecoder().feed(frame[: HEADER_SIZE + 1])


def test_trailing_bytes_inside_a_frame_are_refused() -> None:
    frame = raw_frame(msgpack.packb([1, 2]) + b"\x00")

    with pytest.raises(ProtocolError, match="left over") as caught:
        FrameDecoder().feed(frame)
    assert isinstance(caught.value.__cause__, msgpack.ExtraData)


def test_forged_array_count_is_refused_without_allocating_it() -> None:
    # An array header that announces 2**32 - 1 elements in a 6-byte payload.
    frame = raw_frame(b"\xdd\xff\xff\xff\xff\x00")

    with pytest.raises(ProtocolError, match="max_array_len"):
        FrameDecoder().feed(frame)


def test_map_keys_other_than_str_are_refused_on_decode() -> None:
    frame = encode_frame({1: "one"})

    with pytest.raises(ProtocolError):
        decode_frame(frame)


def test_decoder_stays_broken_after_an_error() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x00\x00\x00\x00")

    with pytest.raises(ProtocolError, match="decoder is broken"):
        decoder.feed(encode_frame("fine"))
    assert "broken" in repr(decoder)
    assert decoder.buffered == 0


@EXAMPLES
@given(st.binary(max_size=300), st.data())
def test_random_bytes_only_ever_raise_protocol_error(
    junk: bytes, data: st.DataObject
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(junk)), max_size=4))
    with contextlib.suppress(ProtocolError):
        feed_in_pieces(FrameDecoder(max_frame_size=1000), junk, cuts)


@EXAMPLES
@given(st.binary(max_size=300))
def test_random_payloads_in_valid_frames_only_ever_raise_protocol_error(
    payload: bytes,
) -> None:
    # A correct header gets the junk past the framing checks and into msgpack.
    with contextlib.suppress(ProtocolError):
        FrameDecoder().feed(raw_frame(payload))


def test_decode_frame_wants_exactly_one_whole_frame() -> None:
    frame = encode_frame(7)

    with pytest.raises(ProtocolError, match="ends before"):
        decode_frame(frame[:-1])
    with pytest.raises(ProtocolError, match="goes on"):
        decode_frame(frame + frame)
    with pytest.raises(ProtocolError, match="goes on"):
        decode_frame(frame + b"\x00")


def test_invalid_max_frame_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        FrameDecoder(max_frame_size=0)
    with pytest.raises(ConfigError):
        FrameDecoder(max_frame_size=2**32)


# Encoding errors


@pytest.mark.parametrize("value", [object(), {1, 2}, 2**64, -(2**63) - 1, "\ud800"])
def test_unencodable_value_raises_protocol_error_with_cause(value: object) -> None:
    with pytest.raises(ProtocolError, match="cannot encode") as caught:
        encode_frame(value)

    assert isinstance(caught.value.__cause__, TypeError | ValueError | OverflowError)


def test_encoding_recovers_after_an_unencodable_value() -> None:
    with pytest.raises(ProtocolError):
        encode_frame(["ok", object()])

    assert decode_frame(encode_frame(["ok"])) == ["ok"]


def test_oversized_value_is_refused_by_the_encoder() -> None:
    with pytest.raises(ProtocolError, match="over the limit of 50"):
        encode_frame(b"x" * 50, max_frame_size=50)

    assert len(encode_frame(b"x" * 47, max_frame_size=50)) == HEADER_SIZE + 50


def test_default_limit_is_one_mebibyte() -> None:
    assert DEFAULT_MAX_FRAME_SIZE == 1 << 20


# Extension types


fixed_offsets = st.builds(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes)),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
)


@EXAMPLES
@given(st.datetimes(timezones=st.none() | st.just(dt.UTC) | fixed_offsets))
def test_datetime_round_trip_is_exact(value: dt.datetime) -> None:
    got = decode_frame(encode_frame(value))

    assert isinstance(got, dt.datetime)
    assert got == value
    assert got.utcoffset() == value.utcoffset()
    assert got.replace(tzinfo=None) == value.replace(tzinfo=None)
    assert got.fold == value.fold


def test_datetime_keeps_microseconds_and_sub_minute_offsets() -> None:
    zone = dt.timezone(dt.timedelta(hours=-3, seconds=-30, microseconds=-5))
    value = dt.datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=zone)

    got = decode_frame(encode_frame(value))

    assert isinstance(got, dt.datetime)
    assert got == value
    assert got.tzinfo == zone


def test_datetime_subclass_is_sent_as_a_datetime() -> None:
    class Stamp(dt.datetime):
        pass

    got = decode_frame(encode_frame(Stamp(2000, 1, 1, 12)))

    assert type(got) is dt.datetime
    assert got == dt.datetime(2000, 1, 1, 12)


def test_msgpack_timestamp_decodes_as_utc_datetime() -> None:
    timestamp = msgpack.Timestamp(seconds=86_400, nanoseconds=5_000)
    frame = raw_frame(msgpack.packb(timestamp))

    got = decode_frame(frame)

    assert got == dt.datetime(1970, 1, 2, 0, 0, 0, 5, tzinfo=dt.UTC)


@EXAMPLES
@given(st.complex_numbers())
def test_complex_round_trip(value: complex) -> None:
    got = decode_frame(encode_frame(value))

    assert isinstance(got, complex)
    assert_same(got.real, value.real)
    assert_same(got.imag, value.imag)


def test_unknown_extension_code_is_refused() -> None:
    frame = raw_frame(msgpack.packb(msgpack.ExtType(42, b"abc")))

    with pytest.raises(ProtocolError, match="extension code 42"):
        FrameDecoder().feed(frame)


def test_negative_extension_code_is_refused() -> None:
    # fixext 1 with type -5: msgpack reserves negative codes, we use none but -1.
    frame = raw_frame(b"\xd4\xfb\x00")

    with pytest.raises(ProtocolError, match="extension code -5"):
        decode_frame(frame)


def test_registry_without_builtins_refuses_datetime() -> None:
    frame = encode_frame(dt.datetime(2020, 1, 1))

    with pytest.raises(ProtocolError, match="extension code 1"):
        decode_frame(frame, ext=ExtTypes(builtins=False))
    with pytest.raises(ProtocolError, match="cannot encode"):
        encode_frame(dt.datetime(2020, 1, 1), ext=ExtTypes(builtins=False))


def test_malformed_builtin_extension_payload_is_refused() -> None:
    frame = raw_frame(msgpack.packb(msgpack.ExtType(1, b"\x00" * 5)))

    with pytest.raises(ProtocolError, match="datetime extension value"):
        decode_frame(frame)


def test_user_extension_type_round_trip() -> None:
    class Point:
        def __init__(self, x: int, y: int) -> None:
            self.x, self.y = x, y

    def encode(p: Point) -> bytes:
        return struct.pack(">ii", p.x, p.y)

    def decode(data: bytes) -> Point:
        return Point(*struct.unpack(">ii", data))

    ext = ExtTypes()
    ext.register(10, Point, encode, decode)

    got = decode_frame(encode_frame([Point(3, -4)], ext=ext), ext=ext)

    assert isinstance(got, list)
    assert (got[0].x, got[0].y) == (3, -4)
    assert "10:" in repr(ext)


def test_extension_encoder_may_encode_frames_itself() -> None:
    # The nested call finds the shared packer busy and must not corrupt it.
    class Wrapped:
        def __init__(self, inner: bytes = b"") -> None:
            self.inner = inner

    ext = ExtTypes()
    ext.register(11, Wrapped, lambda _: encode_frame([1, 2, 3], ext=ext), Wrapped)

    got = decode_frame(encode_frame({"a": Wrapped(), "b": "zzz"}, ext=ext), ext=ext)

    assert isinstance(got, dict)
    assert decode_frame(got["a"].inner) == [1, 2, 3]
    assert got["b"] == "zzz"


@pytest.mark.parametrize(
    ("code", "message"),
    [(128, "outside"), (-1, "outside"), (1, "already registered"), (True, "int")],
)
def test_bad_registrations_are_config_errors(code: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ExtTypes().register(code, bytearray, bytes, bytearray)


def test_registering_a_type_twice_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="already has"):
        ExtTypes().register(20, complex, lambda c: b"", lambda b: 0j)


def test_numpy_array_round_trip() -> None:
    np = pytest.importorskip("numpy")
    arrays = [
        np.arange(12, dtype=">i4").reshape(3, 4).T,
        np.linspace(0, 1, 5, dtype=np.float32),
        np.array([[True, False]]),
        np.array(["ab", "c"]),
        np.array(["2024-01-01"], dtype="datetime64[ms]"),
        np.zeros((0, 3), dtype=np.complex128),
        np.full((), 2.5),
    ]

    for array in arrays:
        got: Any = decode_frame(encode_frame(array))
        assert got.dtype == array.dtype
        assert got.shape == array.shape
        assert np.array_equal(got, array)
        assert got.flags.writeable

    with pytest.raises(ProtocolError, match="dtype object"):
        encode_frame(np.array([None, 1], dtype=object))
    with pytest.raises(ProtocolError, match="refused"):
        decode_frame(raw_frame(msgpack.packb(msgpack.ExtType(3, _ndarray("|O", [1])))))
    with pytest.raises(ProtocolError, match="shape"):
        decode_frame(
            raw_frame(msgpack.packb(msgpack.ExtType(3, _ndarray("<i4", [-1]))))
        )


def _ndarray(dtype: str, shape: list[int]) -> bytes:
    """A hand-made numpy extension payload holding eight zero bytes."""
    packed: bytes = msgpack.packb([dtype, shape, b"\x00" * 8])
    return packed
