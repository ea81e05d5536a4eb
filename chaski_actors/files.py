"""File streaming: send a file to a peer in chunks, checked end to end.

::

    receiver_files = Files(receiver)
    receiver_files.allow("/srv/incoming", max_size=10_000_000)
    ...
    receipt = await sender_files.send("receiver", "report.csv")

The exchange, in reliable frames on the ordinary link between the two nodes
(so a transfer survives reconnections, resent by the link's session)::

    sender                                  receiver
    OFFER  id, name, size, sha256   ─────►  checks the offer
                                    ◄─────  ANSWER id, accepted, reason
    CHUNK  id, offset, bytes        ─────►  appends to a hidden part file
    ...                                     (ordered: the link keeps order)
    END    id                       ─────►  checks size and SHA-256,
                                    ◄─────  renames; DONE id, ok, reason

What the receiver refuses
-------------------------
Nothing is accepted until the receiving application calls :meth:`Files.allow`
with a folder, and files are only ever written inside that folder:

* a name is a single path component: no ``/`` or ``\\``, no drive, not
  ``.`` or ``..``, no NUL, at most 255 characters; absolute paths fail the
  same test;
* a name that already exists in the folder, as a file or as a symbolic link,
  is refused, so a link planted in the folder cannot redirect a write;
* a file larger than the receiver's size cap is refused before any byte of
  it travels, and a sender that sends more than it offered is cut off;
* at most ``MAX_INCOMING`` transfers run at once per receiver, and one whose
  sender sends nothing for ``call_timeout_s`` is failed, freeing its slot.

Bytes land in a hidden part file created exclusively (it must not exist,
and an existing link is not followed), which is renamed to the offered name
only once the size and the SHA-256 digest match. A transfer that fails, or
whose link closes, leaves nothing behind.

File reads and writes are done in place, on the node's own loop, a chunk at a
time; on a slow disk this delays the node's other work by one chunk's write.
Moving them to a worker thread is left for when a backend-neutral way to do
so exists in the runtime.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, BinaryIO, Final

from .errors import (
    BrokenResourceError,
    ClosedResourceError,
    ConfigError,
    FileTransferError,
)
from .log import node_logger
from .node import Link, Node
from .protocol import BOOL, INT, STR, Frame, register_kind
from .runtime import Future, Timer
from .sync import Queue, QueueStatistics

__all__ = [
    "FILE_ANSWER",
    "FILE_CHUNK",
    "FILE_DONE",
    "FILE_END",
    "FILE_OFFER",
    "MAX_INCOMING",
    "FileReceipt",
    "Files",
    "FilesStatistics",
    "ReceivedFile",
    "check_file_name",
]

FILE_OFFER: Final = 41  # transfer id, name, size, sha256 hex
FILE_ANSWER: Final = 42  # transfer id, accepted, reason
FILE_CHUNK: Final = 43  # transfer id, offset, bytes
FILE_END: Final = 44  # transfer id
FILE_DONE: Final = 45  # transfer id, ok, reason

register_kind(FILE_OFFER, "file-offer", INT, STR, INT, STR)
register_kind(FILE_ANSWER, "file-answer", INT, BOOL, STR)
register_kind(FILE_CHUNK, "file-chunk", INT, INT, (bytes,))
register_kind(FILE_END, "file-end", INT)
register_kind(FILE_DONE, "file-done", INT, BOOL, STR)

# Transfers one receiver runs at once; each holds an open file. Arbitrary.
MAX_INCOMING: Final = 8
# Received-file notices kept for the application; the oldest is dropped (and
# counted) beyond this, though the file itself stays on disk. Arbitrary.
NOTICES: Final = 64
# Longest file name most file systems accept.
_LONGEST_NAME: Final = 255
_PART_PREFIX: Final = ".chaski-"


def check_file_name(name: object) -> str:
    """``name`` if it is one plain path component, else FileTransferError why."""
    if not isinstance(name, str) or not name:
        raise FileTransferError("a file name must be a non-empty string")
    if len(name) > _LONGEST_NAME:
        raise FileTransferError(f"file name is longer than {_LONGEST_NAME} characters")
    if name in (".", ".."):
        raise FileTransferError(f"file name {name!r} is not a file")
    if "\x00" in name:
        raise FileTransferError("file name contains a NUL character")
    if PurePosixPath(name).name != name or PureWindowsPath(name).name != name:
        raise FileTransferError(
            f"file name {name!r} is a path; send a bare name, without folders"
        )
    if name.startswith(_PART_PREFIX):
        raise FileTransferError(f"file names starting {_PART_PREFIX!r} are reserved")
    return name


@dataclass(frozen=True, slots=True)
class FileReceipt:
    """What the sender learns once the receiver has checked and kept the file."""

    peer: str
    name: str
    size: int
    sha256: str
    seconds: float


@dataclass(frozen=True, slots=True)
class ReceivedFile:
    """A file that arrived whole and was checked; ``path`` is where it is."""

    source: str
    name: str
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class FilesStatistics:
    folder: str | None
    sent: int
    bytes_sent: int
    received: int
    bytes_received: int
    refused: int
    failed: int
    incoming: int
    notices: QueueStatistics


@dataclass(slots=True)
class _Incoming:
    peer_id: str
    source: str
    name: str
    size: int
    sha256: str
    part: Path
    handle: BinaryIO
    hasher: Any = field(default_factory=hashlib.sha256)
    received: int = 0
    heard_at: float = 0.0
    timer: Timer | None = None


@dataclass(slots=True)
class _Outgoing:
    peer: str
    answer: Future[tuple[bool, str]]
    done: Future[tuple[bool, str]]


class Files:
    """Sending and receiving files for one node; see the module essay.

    ``Files(node)`` adds the file frame kinds to ``node``; make one per node.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.runtime = node.runtime
        self.folder: Path | None = None
        self.max_size = node.settings.file_max_size
        self.notices: Queue[ReceivedFile] = Queue(node.runtime, NOTICES, "drop-oldest")
        self.log = node_logger("node", node.runtime, node.name)
        self._incoming: dict[tuple[str, int], _Incoming] = {}
        self._outgoing: dict[int, _Outgoing] = {}
        self._ids = itertools.count(1)
        self._parts = itertools.count(1)
        self._sent = self._bytes_sent = self._received = self._bytes_received = 0
        self._refused = self._failed = 0

        chunk = node.settings.file_chunk_size
        if chunk > node.settings.max_frame_size - 64:
            raise ConfigError(
                f"file_chunk_size = {chunk} does not fit in max_frame_size = "
                f"{node.settings.max_frame_size} with its frame's header"
            )
        for kind, handler in (
            (FILE_OFFER, self._on_offer),
            (FILE_ANSWER, self._on_answer),
            (FILE_CHUNK, self._on_chunk),
            (FILE_END, self._on_end),
            (FILE_DONE, self._on_done),
        ):
            node.add_frame_handler(kind, handler)
        node.watch_links(self._on_link_closed)

    def __repr__(self) -> str:
        return (
            f"<Files {self.node.name} folder={self.folder} "
            f"incoming={len(self._incoming)} outgoing={len(self._outgoing)}>"
        )

    def allow(self, folder: str | Path, *, max_size: int | None = None) -> None:
        """Accept files from peers into ``folder``, each at most ``max_size``."""
        path = Path(folder)
        if not path.is_dir():
            raise ConfigError(f"cannot receive files into {folder}: not a folder")
        self.folder = path.resolve()
        if max_size is not None:
            if max_size < 0:
                raise ConfigError(f"max_size must be >= 0, got {max_size}")
            self.max_size = max_size

    def refuse(self) -> None:
        """Accept no more files (transfers under way finish)."""
        self.folder = None

    async def received(self) -> ReceivedFile:
        """The next file that arrived whole and checked."""
        return await self.notices.get()

    # -- sending ---------------------------------------------------------------

    async def send(
        self,
        peer: str,
        path: str | Path,
        *,
        name: str | None = None,
        timeout: float | None = None,
    ) -> FileReceipt:
        """Send the file at ``path`` to ``peer``, to be saved as ``name``.

        Returns once the receiver has checked and kept it. Raises
        FileTransferError if the receiver refuses, the check fails, the link
        closes or no answer comes within ``timeout`` (default:
        ``settings.call_timeout_s``) at either end of the transfer.
        """
        source = Path(path)
        name = check_file_name(source.name if name is None else name)
        size, digest = _size_and_digest(source)
        link = self._link(peer)
        deadline = self.node.settings.call_timeout_s if timeout is None else timeout
        transfer = next(self._ids)
        outgoing = _Outgoing(
            peer, self.runtime.create_future(), self.runtime.create_future()
        )
        start = self.runtime.now()

        self._outgoing[transfer] = outgoing
        try:
            await self._send(link, FILE_OFFER, transfer, name, size, digest)
            await self._expect(outgoing.answer, deadline, f"{peer} refused {name}")
            await self._send_chunks(link, transfer, source)
            await self._send(link, FILE_END, transfer)
            await self._expect(outgoing.done, deadline, f"{peer} did not keep {name}")
        finally:
            del self._outgoing[transfer]

        self._sent += 1
        self._bytes_sent += size
        return FileReceipt(peer, name, size, digest, self.runtime.now() - start)

    def _link(self, peer: str) -> Link:
        link = self.node.links.get(peer)
        if link is None:
            raise FileTransferError(f"{self.node.name} has no link to {peer!r}")
        return link

    async def _send_chunks(self, link: Link, transfer: int, source: Path) -> None:
        chunk_size = self.node.settings.file_chunk_size
        offset = 0
        with source.open("rb") as handle:
            while chunk := handle.read(chunk_size):
                await self._send(link, FILE_CHUNK, transfer, offset, chunk)
                offset += len(chunk)

    async def _send(self, link: Link, kind: int, *fields: Any) -> None:
        try:
            await link.send_reliable(kind, *fields)
        except (BrokenResourceError, ClosedResourceError) as exc:
            raise FileTransferError(
                f"link to {link.peer.name} lost during a transfer"
            ) from exc

    async def _expect(
        self, waiter: Future[tuple[bool, str]], deadline: float, failure: str
    ) -> None:
        try:
            async with self.runtime.timeout(deadline):
                ok, reason = await waiter
        except TimeoutError as exc:
            raise FileTransferError(f"{failure}: no answer in {deadline} s") from exc
        if not ok:
            raise FileTransferError(f"{failure}: {reason}")

    async def _on_answer(self, link: Link, frame: Frame) -> None:
        transfer, accepted, reason = frame.fields
        self._settle(link, transfer, "answer", (accepted, reason))

    async def _on_done(self, link: Link, frame: Frame) -> None:
        transfer, ok, reason = frame.fields
        self._settle(link, transfer, "done", (ok, reason))

    def _settle(
        self, link: Link, transfer: int, step: str, outcome: tuple[bool, str]
    ) -> None:
        outgoing = self._outgoing.get(transfer)
        if outgoing is None or outgoing.peer != link.peer.name:
            return
        waiter = outgoing.answer if step == "answer" else outgoing.done
        if not waiter.done():
            waiter.set_result(outcome)

    # -- receiving -------------------------------------------------------------

    async def _on_offer(self, link: Link, frame: Frame) -> None:
        transfer, name, size, digest = frame.fields
        key = (link.peer.node_id, transfer)
        try:
            self._check_offer(key, name, size, digest)
            part = self._folder() / f"{_PART_PREFIX}{next(self._parts)}.part"
            handle = part.open("xb")
        except (FileTransferError, OSError) as exc:
            self._refused += 1
            self.log.info("refused file %r from %s: %s", name, link.peer.name, exc)
            await self._reply(link, FILE_ANSWER, transfer, False, str(exc))
            return

        incoming = _Incoming(
            link.peer.node_id, link.peer.name, name, size, digest, part, handle
        )
        self._incoming[key] = incoming
        self._watch_idle(link, transfer, incoming, self._idle_limit())
        await self._reply(link, FILE_ANSWER, transfer, True, "")

    def _idle_limit(self) -> float:
        return self.node.settings.call_timeout_s

    def _watch_idle(
        self, link: Link, transfer: int, incoming: _Incoming, delay: float
    ) -> None:
        """Fail a transfer whose sender goes quiet, so it cannot hold a slot.

        One timer per transfer, re-armed when it fires early rather than on
        every chunk, as the link's keep-alive timers are.
        """
        incoming.heard_at = max(incoming.heard_at, self.runtime.now())

        def fired() -> None:
            if self._incoming.get((incoming.peer_id, transfer)) is not incoming:
                return
            quiet = self.runtime.now() - incoming.heard_at
            limit = self._idle_limit()
            if quiet < limit - 1e-9:
                incoming.timer = self.runtime.call_later(limit - quiet, fired)
                return
            reason = f"no data for {limit} s"
            self.runtime.spawn(
                self._fail(link, incoming, transfer, reason), name=f"idle-{transfer}"
            )

        incoming.timer = self.runtime.call_later(delay, fired)

    def _check_offer(
        self, key: tuple[str, int], name: str, size: int, digest: str
    ) -> None:
        folder = self._folder()
        check_file_name(name)
        if key in self._incoming:
            raise FileTransferError(f"transfer {key[1]} is already under way")
        if len(self._incoming) >= MAX_INCOMING:
            raise FileTransferError(f"busy with {MAX_INCOMING} transfers; retry later")
        if not 0 <= size <= self.max_size:
            raise FileTransferError(
                f"{size} bytes exceeds the receiver's limit of {self.max_size}"
            )
        if len(digest) != 64 or digest.strip("0123456789abcdef"):
            raise FileTransferError(
                "the SHA-256 digest must be 64 lowercase hex digits"
            )
        target = folder / name
        if target.is_symlink():
            raise FileTransferError(f"{name!r} is a link in the receiver's folder")
        if target.exists():
            raise FileTransferError(f"{name!r} already exists in the receiver's folder")

    def _folder(self) -> Path:
        if self.folder is None:
            raise FileTransferError(f"{self.node.name} does not accept files")
        return self.folder

    async def _on_chunk(self, link: Link, frame: Frame) -> None:
        transfer, offset, data = frame.fields
        incoming = self._incoming.get((link.peer.node_id, transfer))
        if incoming is None:
            return  # after a failure: the sender learns of it from DONE
        if offset != incoming.received:
            await self._fail(
                link, incoming, transfer, f"chunk at {offset} out of order"
            )
            return
        if incoming.received + len(data) > incoming.size:
            await self._fail(link, incoming, transfer, "more bytes than offered")
            return
        try:
            incoming.handle.write(data)
        except OSError as exc:
            await self._fail(link, incoming, transfer, f"cannot write: {exc}")
            return
        incoming.hasher.update(data)
        incoming.received += len(data)
        incoming.heard_at = self.runtime.now()

    async def _on_end(self, link: Link, frame: Frame) -> None:
        transfer = frame.fields[0]
        incoming = self._incoming.get((link.peer.node_id, transfer))
        if incoming is None:
            await self._reply(link, FILE_DONE, transfer, False, "no such transfer")
            return
        if incoming.received != incoming.size:
            await self._fail(link, incoming, transfer, "fewer bytes than offered")
            return
        if incoming.hasher.hexdigest() != incoming.sha256:
            await self._fail(link, incoming, transfer, "SHA-256 mismatch")
            return
        try:
            path = self._keep(incoming)
        except (FileTransferError, OSError) as exc:
            await self._fail(link, incoming, transfer, str(exc))
            return

        del self._incoming[incoming.peer_id, transfer]
        if incoming.timer is not None:
            incoming.timer.cancel()
        self._received += 1
        self._bytes_received += incoming.size
        self.notices.put_nowait(
            ReceivedFile(
                incoming.source, incoming.name, path, incoming.size, incoming.sha256
            )
        )
        await self._reply(link, FILE_DONE, transfer, True, "")

    def _keep(self, incoming: _Incoming) -> Path:
        incoming.handle.close()
        target = self._folder() / incoming.name
        # Checked again: the name may have been taken while bytes travelled.
        if target.is_symlink() or target.exists():
            raise FileTransferError(f"{incoming.name!r} appeared in the folder")
        incoming.part.rename(target)
        return target

    async def _fail(
        self, link: Link, incoming: _Incoming, transfer: int, reason: str
    ) -> None:
        self._discard(incoming)
        if self._incoming.pop((incoming.peer_id, transfer), None) is None:
            return  # already failed, or its link closed
        self._failed += 1
        self.log.info(
            "file %r from %s failed: %s", incoming.name, link.peer.name, reason
        )
        await self._reply(link, FILE_DONE, transfer, False, reason)

    @staticmethod
    def _discard(incoming: _Incoming) -> None:
        if incoming.timer is not None:
            incoming.timer.cancel()
        incoming.handle.close()
        incoming.part.unlink(missing_ok=True)

    async def _reply(self, link: Link, kind: int, *fields: Any) -> None:
        try:
            await link.send_reliable(kind, *fields)
        except (BrokenResourceError, ClosedResourceError):
            self.log.debug("file answer to %s lost with its link", link.peer.name)

    def _on_link_closed(self, link: Link, reason: str) -> None:
        for key, incoming in list(self._incoming.items()):
            if incoming.peer_id == link.peer.node_id:
                self._discard(incoming)
                del self._incoming[key]
                self._failed += 1
        lost = (False, f"link closed: {reason}")
        for outgoing in self._outgoing.values():
            if outgoing.peer == link.peer.name:
                for waiter in (outgoing.answer, outgoing.done):
                    if not waiter.done():
                        waiter.set_result(lost)

    def statistics(self) -> FilesStatistics:
        return FilesStatistics(
            folder=None if self.folder is None else str(self.folder),
            sent=self._sent,
            bytes_sent=self._bytes_sent,
            received=self._received,
            bytes_received=self._bytes_received,
            refused=self._refused,
            failed=self._failed,
            incoming=len(self._incoming),
            notices=self.notices.statistics(),
        )


def _size_and_digest(source: Path) -> tuple[int, str]:
    hasher = hashlib.sha256()
    size = 0
    try:
        with source.open("rb") as handle:
            while block := handle.read(1 << 20):
                hasher.update(block)
                size += len(block)
    except OSError as exc:
        raise FileTransferError(f"cannot read {source}: {exc}") from exc
    return size, hasher.hexdigest()
