"""The exceptions that chaski-actors raises.

One small tree, so that callers can catch at the level they care about::

    ChaskiError
    ├── ConfigError            a setting, scenario or argument is invalid
    ├── ProtocolError          bytes from a peer broke the wire rules
    │   └── CertificateError   a peer's certificate failed verification
    ├── ClosedResourceError    you closed it, then used it
    ├── BrokenResourceError    something outside broke it (reset, vanished peer)
    │   └── ConnectError       a connection could not be opened at all
    ├── BusyResourceError      two tasks used something that allows one
    ├── RemoteError            a remote call failed; carries a code
    │   ├── UnknownNameError   no such object or attribute on the callee
    │   ├── RefusedNameError   the name exists but is private or not exposed
    │   ├── MalformedCallError the callee could not read the call
    │   ├── RemoteBusyError    the callee is at its limit of running calls
    │   ├── RemoteTimeoutError the call did not return in time (a TimeoutError)
    │   └── LinkLostError      the link went while the call was in flight
    └── FileTransferError      a file was refused, cut short or corrupted

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
    "FileTransferError",
    "LinkLostError",
    "MalformedCallError",
    "ProtocolError",
    "RefusedNameError",
    "RemoteBusyError",
    "RemoteError",
    "RemoteTimeoutError",
    "UnknownNameError",
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


# -- remote calls and streams ------------------------------------------------


class RemoteError(ChaskiError):
    """A remote call failed; ``code`` says how, ``remote_type`` what was raised.

    A plain ``RemoteError`` means the method itself raised: ``remote_type`` is
    the name of the exception class on the callee (``"ValueError"``) and
    ``remote_message`` its text. The subclasses below are the failures of the
    call machinery, each with its own fixed code, so a caller can catch the
    ones it knows how to handle.
    """

    code = "exception"

    def __init__(
        self, message: str, *, remote_type: str = "", code: str | None = None
    ) -> None:
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_message = message
        if code is not None:
            self.code = code

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, "
            f"remote_type={self.remote_type!r}, message={self.remote_message!r})"
        )


class UnknownNameError(RemoteError):
    """The callee has no object, attribute or method by that name."""

    code = "unknown-name"


class RefusedNameError(RemoteError):
    """The name is private (a leading underscore) or its owner did not expose it."""

    code = "refused"


class MalformedCallError(RemoteError):
    """The callee could not read the call: wrong shape or types of its fields."""

    code = "malformed"


class RemoteBusyError(RemoteError, BusyResourceError):
    """The callee already runs as many calls as its settings allow; retry later."""

    code = "busy"


class RemoteTimeoutError(RemoteError, TimeoutError):
    """No answer within the call's deadline; the callee was asked to cancel it."""

    code = "timeout"


class LinkLostError(RemoteError, BrokenResourceError):
    """The link to the callee closed before the answer came back."""

    code = "link-lost"


class FileTransferError(ChaskiError):
    """A file transfer was refused by the receiver, cut short or failed its check."""
