"""chaski-actors: distributed actors written once, run on two backends.

Actors are written against :class:`~chaski_actors.runtime.Runtime`. Run them
on real sockets with ``chaski_actors.real`` or on a deterministic simulated
network with ``chaski_actors.sim``.
"""

from .errors import (
    BrokenResourceError,
    BusyResourceError,
    CertificateError,
    ChaskiError,
    ClosedResourceError,
    ConfigError,
    ConnectError,
    FileTransferError,
    LinkLostError,
    MalformedCallError,
    ProtocolError,
    RefusedNameError,
    RemoteBusyError,
    RemoteError,
    RemoteTimeoutError,
    UnknownNameError,
)
from .files import FileReceipt, Files, FilesStatistics, ReceivedFile
from .metrics import LatencySummary, summarize
from .node import Link, LinkStatistics, Message, Node, NodeStatistics, PeerInfo
from .remote import Proxy, Remote, RemoteStatistics
from .runtime import Address, Runtime, Stream, TlsConfig
from .settings import Settings
from .streamer import Streamer, StreamerStatistics, Streams, StreamsStatistics
from .sync import Event, Queue, QueueStatistics

__version__ = "0.1.0"

__all__ = [
    "Address",
    "BrokenResourceError",
    "BusyResourceError",
    "CertificateError",
    "ChaskiError",
    "ClosedResourceError",
    "ConfigError",
    "ConnectError",
    "Event",
    "FileReceipt",
    "FileTransferError",
    "Files",
    "FilesStatistics",
    "LatencySummary",
    "Link",
    "LinkLostError",
    "LinkStatistics",
    "MalformedCallError",
    "Message",
    "Node",
    "NodeStatistics",
    "PeerInfo",
    "ProtocolError",
    "Proxy",
    "Queue",
    "QueueStatistics",
    "ReceivedFile",
    "RefusedNameError",
    "Remote",
    "RemoteBusyError",
    "RemoteError",
    "RemoteStatistics",
    "RemoteTimeoutError",
    "Runtime",
    "Settings",
    "Stream",
    "Streamer",
    "StreamerStatistics",
    "Streams",
    "StreamsStatistics",
    "TlsConfig",
    "UnknownNameError",
    "summarize",
]
