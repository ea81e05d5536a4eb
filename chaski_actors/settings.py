"""Every tunable number of a node, in one validated, immutable object.

A :class:`Settings` can be built directly, from a mapping (a scenario's
``[settings]`` table), from a TOML file or from environment variables. Every
route ends in the same ``__post_init__`` checks, so a bad value is refused with
a :class:`~chaski_actors.errors.ConfigError` that names the field, the value
and what was expected, before any node starts.

Each field carries its reasoning in its ``doc`` metadata, which
:meth:`Settings.describe` hands to the documentation. Times are in seconds and
say so in their names (``_s``); sizes say what they count.

This module is backend-neutral: it reads no environment of its own. The caller
passes ``os.environ`` (or any mapping) to :meth:`Settings.from_env`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args

from .codec import DEFAULT_MAX_FRAME_SIZE
from .errors import ConfigError

__all__ = ["OVERFLOW_POLICIES", "Overflow", "Settings"]

Overflow = Literal["wait", "drop-oldest", "drop-newest"]
OVERFLOW_POLICIES: Final[tuple[Overflow, ...]] = get_args(Overflow)

# The frame header stores the length in 32 bits.
_LARGEST_FRAME: Final = 0xFFFF_FFFF

# 65535 (the IPv4 total length) minus 20 (IPv4 header) and 8 (UDP header).
_LARGEST_DATAGRAM: Final = 65_507


@dataclass(frozen=True, slots=True)
class _Rule:
    """A range check on one field, and the words for what it expects.

    ``accepts`` sees a value whose type is already checked, and a float field's
    value already converted to float.
    """

    accepts: Callable[[Any], bool]
    expected: str


# NaN fails every comparison, but infinity would pass "> 0"; a timeout of
# infinity is better asked for explicitly than slipped in through a typo.
_POSITIVE = _Rule(lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
_GROWTH = _Rule(lambda v: math.isfinite(v) and v >= 1, "a finite number >= 1")
_FRACTION = _Rule(lambda v: 0 <= v < 1, "a fraction, at least 0 and below 1")
_AT_LEAST_ONE = _Rule(lambda v: v >= 1, "an integer >= 1")
_COUNT_OR_ZERO = _Rule(lambda v: v >= 0, "an integer >= 0 (0 means forever)")
_FRAME_SIZE = _Rule(
    lambda v: 1 <= v <= _LARGEST_FRAME, f"an integer from 1 to {_LARGEST_FRAME}"
)
_DATAGRAM_SIZE = _Rule(
    lambda v: 1 <= v <= _LARGEST_DATAGRAM, f"an integer from 1 to {_LARGEST_DATAGRAM}"
)
_OFF_OR_HOPS = _Rule(lambda v: v >= 0, "an integer >= 0 (0 turns it off)")
_OVERFLOW_POLICY = _Rule(
    lambda v: v in OVERFLOW_POLICIES, f"one of {', '.join(OVERFLOW_POLICIES)}"
)


def _about(rule: _Rule, doc: str) -> dict[str, object]:
    """A field's metadata: its range check and the reasoning behind its default."""
    return {"rule": rule, "doc": doc}


@dataclass(frozen=True, slots=True)
class Settings:
    """The settings of one node. Immutable; use :meth:`replace` to vary them."""

    connect_timeout_s: float = field(
        default=5.0,
        metadata=_about(
            _POSITIVE,
            "Give up opening a TCP connection after this long. Linux resends an "
            "unanswered SYN after 1 s and again 2 s later, so 5 s allows both "
            "retries; a connect still pending then has almost surely failed.",
        ),
    )
    handshake_timeout_s: float = field(
        default=5.0,
        metadata=_about(
            _POSITIVE,
            "Drop a new connection whose handshake (a few round trips, plus TLS) has "
            "not finished. Generous for slow links, and it bounds how long a silent "
            "or hostile client can hold a connection slot.",
        ),
    )
    ping_timeout_s: float = field(
        default=5.0,
        metadata=_about(
            _POSITIVE,
            "Fail a latency probe that has had no answer. The same as dead_after_s, "
            "so a probe never outlives the verdict that its peer is dead.",
        ),
    )
    call_timeout_s: float = field(
        default=30.0,
        metadata=_about(
            _POSITIVE,
            "Fail a remote method call that has not returned. Calls run user code "
            "that may do real work; 30 s is the customary request limit of HTTP "
            "clients, an arbitrary but familiar figure.",
        ),
    )
    keepalive_interval_s: float = field(
        default=1.0,
        metadata=_about(
            _POSITIVE,
            "Send a keep-alive on a link that has been idle this long. One small "
            "frame a second per link costs almost nothing and lets dead_after_s be "
            "a few seconds.",
        ),
    )
    dead_after_s: float = field(
        default=5.0,
        metadata=_about(
            _POSITIVE,
            "Declare a peer dead after hearing nothing from it this long: five "
            "keep-alive intervals, so a few lost or late keep-alives (loss, jitter, "
            "a pause for garbage collection) are not mistaken for a dead peer.",
        ),
    )
    reconnect_initial_s: float = field(
        default=0.1,
        metadata=_about(
            _POSITIVE,
            "First wait before reconnecting a broken link. Short, because most "
            "breaks are brief (a restarted peer listens again within a fraction of "
            "a second); the exact figure is arbitrary.",
        ),
    )
    reconnect_max_s: float = field(
        default=10.0,
        metadata=_about(
            _POSITIVE,
            "Longest wait between reconnection attempts: a peer that comes back is "
            "found within about 10 s, and a long outage costs one attempt per 10 s.",
        ),
    )
    reconnect_multiplier: float = field(
        default=2.0,
        metadata=_about(
            _GROWTH,
            "Growth of the wait after each failed attempt. Doubling is the usual "
            "exponential backoff; from 0.1 s it reaches the 10 s cap in 7 attempts.",
        ),
    )
    reconnect_jitter: float = field(
        default=0.2,
        metadata=_about(
            _FRACTION,
            "Each wait is varied at random by up to this fraction of itself, so that "
            "nodes cut off by the same outage do not all reconnect in lockstep.",
        ),
    )
    reconnect_attempts: int = field(
        default=0,
        metadata=_about(
            _COUNT_OR_ZERO,
            "Attempts before a link is given up; 0 means never give up. Links are "
            "meant to be long-lived, and a link given up needs a person to restore.",
        ),
    )
    max_frame_size: int = field(
        default=DEFAULT_MAX_FRAME_SIZE,
        metadata=_about(
            _FRAME_SIZE,
            "Largest frame (in bytes after the length field) a node sends or accepts; "
            "both ends must agree. 1 MiB: the reasoning is at "
            "chaski_actors.codec.DEFAULT_MAX_FRAME_SIZE.",
        ),
    )
    inbox_size: int = field(
        default=1024,
        metadata=_about(
            _AT_LEAST_ONE,
            "Messages a node's inbox holds before the overflow policy applies. "
            "Enough to absorb a burst of small messages; the figure is arbitrary.",
        ),
    )
    send_buffer_frames: int = field(
        default=1024,
        metadata=_about(
            _AT_LEAST_ONE,
            "Unacknowledged frames a link keeps to resend after a reconnection. "
            "Typical frames are small, so this is well under a megabyte; with "
            "max-size frames it could reach 1 GiB, so lower it for bulk data.",
        ),
    )
    overflow: Overflow = field(
        default="wait",
        metadata=_about(
            _OVERFLOW_POLICY,
            "What a full inbox does: 'wait' stops reading from the link (back "
            "pressure, nothing lost); 'drop-oldest' and 'drop-newest' keep going and "
            "count each drop, for streams where only fresh data matters.",
        ),
    )
    max_connections: int = field(
        default=64,
        metadata=_about(
            _AT_LEAST_ONE,
            "Connections a node accepts at once; further ones are refused. Bounds "
            "file descriptors and buffers (64 MiB at the frame limit), well under "
            "the common soft limit of 1024 open files; the figure is arbitrary.",
        ),
    )
    datagram_max_size: int = field(
        default=1200,
        metadata=_about(
            _DATAGRAM_SIZE,
            "Largest datagram payload a node sends, in bytes. It fits a typical "
            "path MTU: IPv6 guarantees 1280 bytes, of which its header takes 40 and "
            "UDP's 8, and 1200 keeps a margin (the figure QUIC uses), so datagrams "
            "are not fragmented on any path.",
        ),
    )
    discovery_ttl: int = field(
        default=2,
        metadata=_about(
            _AT_LEAST_ONE,
            "Hops a discovery announcement travels past its topic's members before "
            "it is dropped. Floods only speed up pairing nearby: topic routes "
            "(discovery_reach) find members however far apart. 2 found as fast as 4 "
            "on 100- and 1000-node trees, and cost a ninth of the flood frames on a "
            "200-node 4-regular overlay; arbitrary.",
        ),
    )

    # -- streamer and remote actors -----------------------------------------
    stream_queue_size: int = field(
        default=256,
        metadata=_about(
            _AT_LEAST_ONE,
            "Messages a streamer holds per topic before its overflow policy applies. "
            "Small on purpose: behind it sit the transport windows, so a slow "
            "consumer stops the producer long before memory matters. Arbitrary.",
        ),
    )
    stream_overflow: Overflow = field(
        default="wait",
        metadata=_about(
            _OVERFLOW_POLICY,
            "What a full streamer queue does: 'wait' makes the producer's publish "
            "wait (back-pressure through the link); the drop policies keep the "
            "freshest or the oldest messages and count every drop.",
        ),
    )
    file_chunk_size: int = field(
        default=64 * 1024,
        metadata=_about(
            _AT_LEAST_ONE,
            "Bytes of a file per frame. Well under max_frame_size, so that a chunk "
            "holds a 100 Mbit/s link for about 5 ms and keep-alives are not delayed "
            "behind it; the figure is arbitrary within that bound.",
        ),
    )
    file_max_size: int = field(
        default=256 * 1024 * 1024,
        metadata=_about(
            _AT_LEAST_ONE,
            "Largest file, in bytes, a node accepts; larger offers are refused "
            "before any byte is sent. Arbitrary; raise it where disks allow.",
        ),
    )
    remote_max_calls: int = field(
        default=64,
        metadata=_about(
            _AT_LEAST_ONE,
            "Remote calls a node runs at once for all peers; further calls are "
            "refused as busy, so a flood costs the flooder an error, not the node "
            "its memory. The same figure as max_connections; arbitrary.",
        ),
    )
    remote_max_calls_per_peer: int = field(
        default=16,
        metadata=_about(
            _AT_LEAST_ONE,
            "Remote calls one peer may have running at once, so that a single "
            "flooding peer cannot take every slot of remote_max_calls from the "
            "others. A quarter of remote_max_calls; arbitrary.",
        ),
    )
    remote_result_cache: int = field(
        default=1024,
        metadata=_about(
            _AT_LEAST_ONE,
            "Answers of finished calls a node remembers, so that a call resent "
            "after a reconnection is answered again instead of run twice. Matches "
            "send_buffer_frames, the most calls a link can resend.",
        ),
    )

    # -- links: sessions, keep-alive, discovery (chaski_actors.session) -----
    ack_delay_s: float = field(
        default=0.25,
        metadata=_about(
            _POSITIVE,
            "Longest a received reliable frame waits for its acknowledgement to ride "
            "on outgoing data before a bare ACK is sent. A quarter of the keep-alive "
            "interval: links that carry data both ways at 4 Hz or more never send a "
            "bare ACK, one-way links send four a second. Nobody waits on it: a "
            "sender under 'wait' is acknowledged as soon as a quarter of its send "
            "buffer has arrived, whatever this delay.",
        ),
    )
    session_linger_s: float = field(
        default=300.0,
        metadata=_about(
            _POSITIVE,
            "How long the accepting side of a broken link keeps its session (and "
            "buffers publishes for it) waiting for the dialling side to reconnect. "
            "Thirty times reconnect_max_s, so a peer that comes back within five "
            "minutes loses nothing; the figure is arbitrary.",
        ),
    )
    discovery_interval_s: float = field(
        default=30.0,
        metadata=_about(
            _POSITIVE,
            "A node with subscriptions announces itself again this often, so that "
            "peers cut off by an outage, or reached only through links made since, "
            "still find it. Rare enough that the flood costs little; arbitrary.",
        ),
    )
    discovery_memory: int = field(
        default=4096,
        metadata=_about(
            _AT_LEAST_ONE,
            "Announcements (and forwarded messages) a node remembers having seen, "
            "to drop the copies that a flood brings back. The oldest are forgotten "
            "first; 4096 covers a flood of a thousand nodes with room to spare.",
        ),
    )
    discovery_reach: int = field(
        default=32,
        metadata=_about(
            _AT_LEAST_ONE,
            "Overlay hops over which a node learns, for each topic, the topic's "
            "smallest-named member (topic routes, see chaski_actors.discovery). "
            "Members this close to it always pair, however far the floods reach. "
            "Above the diameter of a random 1000-node tree (about 25 hops); also "
            "bounds how long a withdrawn route echoes around a cycle. Arbitrary.",
        ),
    )
    propagation_ttl: int = field(
        default=0,
        metadata=_about(
            _OFF_OR_HOPS,
            "Hops a published message may be forwarded by nodes that are not its "
            "subscribers, to reach subscribers that max_connections kept from "
            "pairing directly. 0 (the default) turns forwarding off: each message "
            "then travels only over direct links.",
        ),
    )

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            self._check_field(spec)

        if self.dead_after_s <= self.keepalive_interval_s:
            raise ConfigError(
                f"dead_after_s = {self.dead_after_s!r} is invalid: expected more than "
                f"keepalive_interval_s = {self.keepalive_interval_s!r}, or a peer is "
                "declared dead before a single keep-alive could reach us"
            )
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ConfigError(
                f"reconnect_max_s = {self.reconnect_max_s!r} is invalid: expected at "
                f"least reconnect_initial_s = {self.reconnect_initial_s!r}"
            )

    def _check_field(self, spec: dataclasses.Field[Any]) -> None:
        """Check one field's type and range; normalise an int given for a float."""
        value = getattr(self, spec.name)
        kind = type(spec.default)
        rule: _Rule = spec.metadata["rule"]

        if not _has_kind(value, kind):
            raise _invalid(spec.name, value, rule.expected)
        normalised = float(value) if kind is float else value
        if not rule.accepts(normalised):
            raise _invalid(spec.name, value, rule.expected)

        if normalised is not value:
            object.__setattr__(self, spec.name, normalised)

    def replace(self, **changes: object) -> Settings:
        """A copy with ``changes`` applied, validated like any other."""
        current = {spec.name: getattr(self, spec.name) for spec in _FIELDS}
        return Settings.from_mapping({**current, **changes}, source="Settings.replace")

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, object], *, source: str = "settings"
    ) -> Settings:
        """Settings from a mapping of field names to values; missing ones default.

        Unknown names and wrong types raise :class:`ConfigError`, prefixed with
        ``source`` so the message says where the mapping came from. Ints are
        accepted for float fields.
        """
        unknown = [key for key in mapping if key not in _FIELD_NAMES]
        if unknown:
            raise ConfigError(f"{source}: {_unknown_keys_message(unknown)}")

        try:
            return cls(**mapping)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | Path, table: str = "chaski") -> Settings:
        """Settings from the table ``table`` of the TOML file at ``path``.

        ``table`` may be dotted (``"tool.chaski"`` in a ``pyproject.toml``). A
        missing table gives the defaults; a missing or malformed file raises
        :class:`ConfigError` naming the file.
        """
        try:
            with Path(path).open("rb") as file:
                document = tomllib.load(file)
        except OSError as exc:
            raise ConfigError(f"cannot read settings file {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc

        values: object = document
        for key in table.split("."):
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: [{table}] must be a table")
            values = values.get(key, {})
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{table}] must be a table")

        return cls.from_mapping(values, source=f"{path} [{table}]")

    @classmethod
    def from_env(cls, environ: Mapping[str, str], prefix: str = "CHASKI_") -> Settings:
        """Settings from variables like ``CHASKI_CONNECT_TIMEOUT_S=2.5``.

        Each field is read from ``prefix`` plus its name in upper case and
        parsed by its type; variables without the prefix are ignored, and an
        unknown one with the prefix is an error, because it is most likely a
        misspelling. Pass ``os.environ`` or any other mapping.
        """
        values: dict[str, object] = {}
        for variable, text in environ.items():
            if not variable.startswith(prefix):
                continue
            name = variable.removeprefix(prefix).lower()
            if name not in _FIELD_NAMES:
                raise ConfigError(
                    f"environment variable {variable}: {_unknown_keys_message([name])}"
                )
            values[name] = _parse_env(variable, text, type(_DEFAULTS[name]))

        try:
            return cls(**values)  # type: ignore[arg-type]
        except _InvalidFieldError as exc:
            variable = prefix + exc.name.upper()
            raise ConfigError(f"environment variable {variable}: {exc}") from None
        except ConfigError as exc:
            raise ConfigError(f"environment variables {prefix}*: {exc}") from None

    @classmethod
    def describe(cls) -> list[tuple[str, object, str]]:
        """``(name, default, reasoning)`` for every field, in declaration order."""
        return [(spec.name, spec.default, spec.metadata["doc"]) for spec in _FIELDS]


class _InvalidFieldError(ConfigError):
    """A ConfigError about one field, which remembers the field's name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def _invalid(name: str, value: object, expected: str) -> _InvalidFieldError:
    return _InvalidFieldError(
        name, f"{name} = {value!r} is invalid: expected {expected}"
    )


_KIND_NAMES: Final[dict[type[Any], str]] = {
    float: "a number",
    int: "an integer",
    str: "a string",
}


def _has_kind(value: object, kind: type[Any]) -> bool:
    """Whether ``value`` may fill a field whose default is of type ``kind``."""
    # bool is an int subclass, but True is no sensible timeout or size.
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _parse_env(variable: str, text: str, kind: type[Any]) -> object:
    """Parse one environment variable's text by the type of its field."""
    if kind is str:
        return text

    try:
        return kind(text.strip())
    except ValueError as exc:
        raise ConfigError(
            f"environment variable {variable}={text!r} is invalid: expected "
            f"{_KIND_NAMES[kind]}"
        ) from exc


def _unknown_keys_message(unknown: list[str]) -> str:
    """Name the unknown settings, suggest the likely intended ones, list all."""
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, _FIELD_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        parts.append(f"{key!r}{hint}")
    return (
        f"unknown setting {', '.join(parts)}; valid settings are "
        f"{', '.join(_FIELD_NAMES)}"
    )


_FIELDS: Final = dataclasses.fields(Settings)
_FIELD_NAMES: Final = [spec.name for spec in _FIELDS]
_DEFAULTS: Final = {spec.name: spec.default for spec in _FIELDS}
