"""The exceptions that chaski-actors raises.

One small tree, so that callers can catch at the level they care about::

    ChaskiError
    ├── ConfigError            a setting, scenario or argument is invalid
    ├── ProtocolError          bytes from a peer broke the wire rules
    │   └── CertificateError   a peer's certificate failed verification
    ├── ClosedResourceError    you closed it, then used it
    ├── BrokenResourceError    something outside broke it (reset, vanished peer)
    │   └── ConnectError       a connection could not be opened at all
    └── BusyResourceError      two tasks used something that allows one

``TimeoutError`` is the built-in one, raised by ``Runtime.timeout`` and by every
call that takes a deadline. Foreign exceptions (``OSError``, ``ssl.SSLError``,
msgpack's errors) are translated into this tree where they cross into our code,
with the original kept as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "BrokenResourceError",
    "BusyResourceError",
    "CertificateError",
    "ChaskiError",
    "ClosedResourceError",
    "ConfigError",
    "ConnectError",
    "ProtocolError",
]


class ChaskiError(Exception):
    """Base class of every error that chaski-actors raises on purpose."""


class ConfigError(ChaskiError, ValueError):
    """A setting, scenario file or argument is invalid; the message says which."""


class ProtocolError(ChaskiError):
    """Input from a peer broke the wire rules.

    The only exception that the codec and the protocol state machines let
    escape. The connection it came from cannot be trusted afterwards and is
    closed by the node that saw it.
    """


class CertificateError(ProtocolError):
    """A certificate did not prove who it claims: another CA, expired, revoked,
    or a name that is not the one expected. The message says which."""


class ClosedResourceError(ChaskiError):
    """The object was closed by its owner and then used again."""


class BrokenResourceError(ChaskiError):
    """Something outside our control broke the object (a reset, a lost peer)."""


class ConnectError(BrokenResourceError):
    """A connection could not be opened: refused, unreachable or timed out."""


class BusyResourceError(ChaskiError):
    """Two tasks used, at the same time, an object that allows one at a time."""
