"""The real runtime: asyncio, real sockets and the monotonic clock.

Streams are built on ``asyncio.Protocol`` rather than on asyncio's
``StreamReader``/``StreamWriter`` pair: ``receive`` hands over whatever bytes
have arrived in one piece, which lets the codec parse many frames out of a
single read, and ``send`` only waits when the transport says its buffer is
full. Both matter on the publish path, where a drain per message would
cost a round through the event loop each time.

Writes are corked. The first ``send`` in a turn of the event loop goes to the
socket at once, so a lone request or reply is not delayed; later ones in the
same turn are gathered and written together when the turn ends (or once
``_CORK_LIMIT`` bytes have gathered). A publisher that sends a thousand small
frames without waiting thus makes a handful of system calls, not a
thousand, which is most of what a frame costs on loopback. Reads keep the
chunks the transport delivered and hand a lone chunk over without copying.
Everything that waits for the end of a turn (the corks of every connection
and every link, :meth:`RealRuntime.call_soon`) waits in one list that a
single loop callback runs: each callback of the loop's own costs a turn's
worth of bookkeeping, and a remote call used to pay for four of them. A
read callback counts as a turn of its own, and what it leaves due runs as
it returns: a node answering a call from there then costs the loop no
further pass.

A link's reader is not a task. :meth:`RealStream.consume` hands each read to
the node from the protocol's data callback and finishes in a task only the
rare handling that must wait (see :class:`_Consumer`). A task woken per
read costs a turn of the loop on each side of a remote call, and with it a
tenth of the call's CPU time.

The socket is read into one scratch buffer per runtime (asyncio's buffered
protocol), and only the bytes that arrived are copied out. asyncio's plain
protocol instead asks the socket for 256 KiB into a fresh bytes object every
time; an allocation that large goes to ``mmap`` in the C library, so every
read, even of a 100-byte reply, cost three more system calls and a page
fault, which measured as the largest single cost of a remote call.

Every ``OSError`` and ``ssl.SSLError`` that crosses into actor code is turned
into :class:`ConnectError` or :class:`BrokenResourceError` here, with the
original as ``__cause__``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from contextlib import AbstractAsyncContextManager
from random import Random
from typing import Any, TypeVar, cast

from chaski_actors._eager import Rest
from chaski_actors.errors import (
    BrokenResourceError,
    CertificateError,
    ClosedResourceError,
    ConfigError,
    ConnectError,
)
from chaski_actors.runtime import (
    Address,
    DatagramEndpoint,
    DataHandler,
    Future,
    Listener,
    Runtime,
    Stream,
    StreamHandler,
    Task,
    Timer,
    TlsConfig,
)

from . import _tls

T = TypeVar("T")

__all__ = ["RealRuntime"]

log = logging.getLogger("chaski.runtime")
security_log = logging.getLogger("chaski.security")

# Above this many unread bytes we stop reading the socket, so a peer that
# sends faster than the node consumes fills its own TCP window, not our memory.
_READ_HIGH_WATER = 1 << 20
_READ_LOW_WATER = 1 << 18
# Gathered writes go out once this many bytes are waiting, even within one
# turn of the loop: big enough that the system call is amortised over many
# small frames, small enough not to hold a burst back from the socket.
_CORK_LIMIT = 1 << 16
# A write at least this large is not gathered (a quarter of the above, an
# arbitrary point where a system call costs less than copying the data).
_CORK_ALONE = _CORK_LIMIT // 4
# How much one read from a socket may take: asyncio's own figure.
_READ_CHUNK = 1 << 18
# The largest UDP payload over IPv4.
MAX_DATAGRAM = 65507


class RealRuntime(Runtime):
    """The :class:`Runtime` for asyncio; create it inside a running loop."""

    kind = "real"
    cancelled_error = asyncio.CancelledError

    def __init__(self, *, seed: int | None = None, host: str = "127.0.0.1") -> None:
        self._loop = asyncio.get_running_loop()
        self._host = host
        self.random = Random(seed)
        self._tasks: set[asyncio.Task[Any]] = set()
        # Shared by every stream of this runtime: a read copies out of it at
        # once, before the loop can run another read (see the module essay).
        self._scratch = memoryview(bytearray(_READ_CHUNK))
        # What waits for the end of the current turn of the loop, and how
        # many read callbacks are running (see at_turn_end).
        self._turn_end: list[Callable[[], None]] = []
        self._reading = 0
        # The node reads the clock several times per message, so ``now`` is
        # the loop's clock itself, not a method that calls it: asyncio's
        # loop reads time.monotonic (called here directly, without the
        # loop's method around it), uvloop's has a clock of its own in C.
        clock = self._loop.time
        if type(self._loop).time is asyncio.BaseEventLoop.time:
            clock = time.monotonic
        self.now = clock  # type: ignore[method-assign]
        # Likewise, as every remote call makes a future.
        self.create_future = self._loop.create_future  # type: ignore[method-assign]

    def __repr__(self) -> str:
        return f"<RealRuntime {self._host} tasks={len(self._tasks)}>"

    @property
    def host(self) -> str:
        return self._host

    def now(self) -> float:
        return self._loop.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self._loop.call_later(delay, callback)

    def call_soon(self, callback: Callable[[], None]) -> Timer:
        soon = _Soon(callback)
        self.at_turn_end(soon)
        return soon

    def at_turn_end(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when this turn of the loop is over (see the essay).

        A read callback is a turn of its own: what it leaves due runs when
        it returns (:meth:`_read_done`), not from a loop callback, which
        would cost the loop another pass for each answer a node sends.
        """
        due = self._turn_end
        if not due and not self._reading:
            self._loop.call_soon(self._turn_ended)
        due.append(callback)

    def _read_done(self) -> None:
        self._reading -= 1
        if not self._reading and self._turn_end:
            self._turn_ended()

    def _turn_ended(self) -> None:
        due = self._turn_end
        self._turn_end = []
        for callback in due:
            try:
                callback()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._loop.call_exception_handler(
                    {"message": f"exception in {callback!r}", "exception": exc}
                )

    def wall_clock(self) -> float:
        return time.time()

    def secret_bytes(self, count: int) -> bytes:
        return os.urandom(count)

    def create_future(self) -> Future[Any]:
        return self._loop.create_future()

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> Task[T]:
        task = self._loop.create_task(coro, name=name)
        # A strong reference, or the loop may collect a running task.
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s crashed: %r", task.get_name(), exc, exc_info=exc)

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        return asyncio.timeout(seconds)

    def unique_id(self) -> str:
        return uuid.uuid4().hex

    # -- sockets -------------------------------------------------------------

    async def connect(
        self, host: str, port: int, *, tls: TlsConfig | None = None
    ) -> Stream:
        context = _tls.client_context(tls) if tls is not None else None
        try:
            transport, protocol = await self._loop.create_connection(
                lambda: _StreamProtocol(self),
                host,
                port,
                ssl=context,
                server_hostname="" if context is not None else None,
                ssl_handshake_timeout=None if tls is None else tls.handshake_timeout_s,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        identity = None
        if tls is not None:
            try:
                identity = _tls.verified_identity(transport, tls)
            except CertificateError as exc:
                transport.abort()
                raise ConnectError(f"refused {host}:{port}: {exc}") from exc
        return RealStream(protocol, identity)

    async def listen(
        self,
        host: str,
        port: int,
        handler: StreamHandler,
        *,
        tls: TlsConfig | None = None,
        max_connections: int | None = None,
    ) -> Listener:
        context = _tls.server_context(tls) if tls is not None else None
        listener: RealListener | None = None
        # The connections of this listener that are open, handshaken or not:
        # counting from the moment of accept is what bounds a flood of
        # clients that connect and never finish a TLS handshake.
        open_now: set[_StreamProtocol] = set()

        def accepted(protocol: _StreamProtocol) -> None:
            assert protocol.transport is not None and listener is not None
            if max_connections is not None and len(open_now) >= max_connections:
                listener.refused += 1
                protocol.transport.abort()
                return
            open_now.add(protocol)
            protocol.on_lost = open_now.discard
            if tls is None or context is None:
                stream = RealStream(protocol)
                self.spawn(handler(stream), name=f"accept-{stream.peer_address}")
                return
            # Hold the client's hello until start_tls has taken the transport.
            protocol.transport.pause_reading()
            self.spawn(
                self._secure(protocol, context, tls, handler), name="tls-handshake"
            )

        server = await self._loop.create_server(
            lambda: _StreamProtocol(self, on_open=accepted),
            host,
            port,
        )
        listener = RealListener(server)
        return listener

    async def _secure(
        self,
        protocol: _StreamProtocol,
        context: ssl.SSLContext,
        tls: TlsConfig,
        handler: StreamHandler,
    ) -> None:
        """Run the server side of the TLS handshake, check the peer, hand over."""
        raw = protocol.transport
        assert raw is not None
        peer = _address(raw.get_extra_info("peername"))
        # Under uvloop a transport starts reading only after connection_made,
        # so the pause there does not hold the client's hello back: it may
        # already sit in the plain protocol. It goes to the TLS protocol after
        # that one's connection_made, which start_tls schedules below: a call
        # scheduled now that schedules the hand-over lands behind it. Nothing
        # can overtake the hello: the client waits for the server's answer.
        self._loop.call_soon(self._loop.call_soon, _hand_over_early, protocol, raw)
        try:
            secured = await self._loop.start_tls(
                raw,
                protocol,
                context,
                server_side=True,
                ssl_handshake_timeout=tls.handshake_timeout_s,
            )
            if secured is None:
                raise ConnectionResetError("connection closed during the handshake")
            protocol.transport = secured
            identity = _tls.verified_identity(secured, tls)
        except (OSError, ssl.SSLError, TimeoutError, CertificateError) as exc:
            security_log.info("refused %s:%s: %s", *peer, _why_refused(exc))
            (protocol.transport or raw).abort()
            # asyncio does not tell the protocol of a connection lost during
            # the handshake, so its slot is given back here.
            if protocol.on_lost is not None:
                protocol.on_lost(protocol)
                protocol.on_lost = None
            return
        await handler(RealStream(protocol, identity))

    async def open_datagram(
        self, host: str, port: int, *, queue_size: int = 1024
    ) -> DatagramEndpoint:
        if queue_size < 1:
            raise ConfigError("queue_size must be at least 1")
        _transport, protocol = await self._loop.create_datagram_endpoint(
            lambda: _DatagramProtocol(queue_size), local_addr=(host, port)
        )
        return RealDatagramEndpoint(protocol)


def _hand_over_early(protocol: _StreamProtocol, raw: asyncio.Transport) -> None:
    """Pass bytes read before a server-side start_tls to the TLS protocol."""
    if not protocol.chunks or raw.is_closing():
        return
    early = b"".join(protocol.chunks)
    protocol.chunks.clear()
    protocol.buffered = 0
    # Both loops' TLS protocols read through get_buffer and buffer_updated;
    # uvloop's is no subclass of asyncio.BufferedProtocol, so no isinstance.
    tls_protocol = cast(asyncio.BufferedProtocol, raw.get_protocol())
    view = memoryview(early)
    while view:
        buffer = memoryview(tls_protocol.get_buffer(len(view)))
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        tls_protocol.buffer_updated(size)
        view = view[size:]


class _StreamProtocol(asyncio.BufferedProtocol):
    def __init__(
        self,
        runtime: RealRuntime,
        on_open: Callable[[_StreamProtocol], None] | None = None,
    ) -> None:
        self._on_open = on_open
        self._runtime = runtime
        self._scratch = runtime._scratch
        self._at_turn_end = runtime.at_turn_end
        # Kept, because asyncio.get_running_loop() asks the OS for the
        # process id on every call.
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        # Received bytes, as the transport delivered them, not yet read.
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.eof = False
        self.error: BaseException | None = None
        self.lost = False
        self.reading_paused = False
        self.reader: asyncio.Future[None] | None = None
        self.writing_paused = False
        self.drain_waiters: deque[asyncio.Future[None]] = deque()
        self.on_lost: Callable[[_StreamProtocol], None] | None = None
        # Set once the node reads through RealStream.consume: bytes then go
        # straight to it instead of into ``chunks``.
        self.consumer: _Consumer | None = None
        # Writes gathered in this turn of the loop (see the module essay).
        self.corked = False
        self.pending: list[bytes] = []
        self.pending_size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; not a subclass of asyncio.Transport under uvloop
        # (tests/test_uvloop.py runs this backend on that loop too).
        self.transport = cast(asyncio.Transport, transport)
        if self._on_open is not None:
            self._on_open(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        data = self._scratch[:nbytes].tobytes()
        consumer = self.consumer
        if consumer is None:
            self.data_received(data)
            return
        runtime = self._runtime
        runtime._reading += 1
        try:
            consumer.feed(data)
        finally:
            runtime._read_done()

    def data_received(self, data: bytes) -> None:
        if self.consumer is not None:
            self.consumer.feed(data)
            return
        self.chunks.append(data)
        self.buffered += len(data)
        self._wake_reader()
        if self.buffered > _READ_HIGH_WATER and not self.reading_paused:
            assert self.transport is not None
            self.transport.pause_reading()
            self.reading_paused = True

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake_reader()
        if self.consumer is not None:
            self.consumer.end()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pending.clear()
        if self.on_lost is not None:
            self.on_lost(self)
            self.on_lost = None
        if exc is not None:
            self.error = exc
        self.eof = True
        self._wake_reader()
        if self.consumer is not None:
            self.consumer.end()
        while self.drain_waiters:
            waiter = self.drain_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        while self.drain_waiters:
            waiter = self.drain_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def write(self, data: bytes) -> None:
        """Write now if this is the turn's first write, else gather it."""
        transport = self.transport
        assert transport is not None
        if not self.corked:
            self.corked = True
            self._at_turn_end(self._uncork)
            transport.write(data)
            return
        if len(data) >= _CORK_ALONE:
            # Large enough to pay for its own system call: joining it to the
            # small ones would only copy it once more.
            self.flush()
            transport.write(data)
            return
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size >= _CORK_LIMIT:
            self.flush()

    def flush(self) -> None:
        pending = self.pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self.pending_size = 0
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _uncork(self) -> None:
        if self.pending:
            self.flush()
        self.corked = False

    def read(self, max_bytes: int) -> bytes:
        """Take up to ``max_bytes`` of what has arrived (there must be some)."""
        chunks = self.chunks
        first = chunks.popleft()
        if len(first) > max_bytes:
            chunks.appendleft(first[max_bytes:])
            first = first[:max_bytes]
        elif chunks and len(first) < max_bytes:
            parts = [first]
            size = len(first)
            while chunks and size < max_bytes:
                chunk = chunks.popleft()
                if size + len(chunk) > max_bytes:
                    chunks.appendleft(chunk[max_bytes - size :])
                    chunk = chunk[: max_bytes - size]
                parts.append(chunk)
                size += len(chunk)
            first = b"".join(parts)
        self.buffered -= len(first)
        return first

    def _wake_reader(self) -> None:
        reader = self.reader
        if reader is not None:
            self.reader = None
            if not reader.done():
                reader.set_result(None)


class RealStream(Stream):
    """A TCP (or TLS) connection driven by asyncio."""

    def __init__(self, protocol: _StreamProtocol, identity: str | None = None) -> None:
        assert protocol.transport is not None
        self._identity = identity
        self._protocol = protocol
        self._transport = protocol.transport
        self._local = _address(self._transport.get_extra_info("sockname"))
        self._peer = _address(self._transport.get_extra_info("peername"))
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<RealStream {self._local[0]}:{self._local[1]}->"
            f"{self._peer[0]}:{self._peer[1]} buffered={self._protocol.buffered}>"
        )

    @property
    def local_address(self) -> Address:
        return self._local

    @property
    def peer_address(self) -> Address:
        return self._peer

    @property
    def peer_identity(self) -> str | None:
        return self._identity

    async def send(self, data: bytes) -> None:
        if self._closed:
            raise ClosedResourceError("stream was closed")
        protocol = self._protocol
        if protocol.lost or self._transport.is_closing():
            raise BrokenResourceError(
                f"connection to {self._peer[0]}:{self._peer[1]} is lost"
            ) from protocol.error
        protocol.write(data)
        if protocol.writing_paused:
            waiter = protocol.loop.create_future()
            protocol.drain_waiters.append(waiter)
            await waiter
            if protocol.lost:
                raise BrokenResourceError(
                    f"connection to {self._peer[0]}:{self._peer[1]} is lost"
                ) from protocol.error

    def try_send(self, data: bytes) -> bool:
        protocol = self._protocol
        if (
            self._closed
            or protocol.lost
            or protocol.writing_paused
            or self._transport.is_closing()
        ):
            return False
        protocol.write(data)
        return True

    async def receive(self, max_bytes: int = 65536) -> bytes:
        protocol = self._protocol
        while not protocol.chunks:
            error = self.end_error()
            if error is not None:
                raise error
            if protocol.eof:
                return b""
            reader = protocol.loop.create_future()
            protocol.reader = reader
            await reader

        data = protocol.read(max_bytes)
        if protocol.reading_paused and protocol.buffered < _READ_LOW_WATER:
            protocol.reading_paused = False
            self._transport.resume_reading()
        return data

    def consume(
        self,
        runtime: Runtime,
        on_data: DataHandler,
        on_end: Callable[[BaseException | None], Coroutine[Any, Any, None]],
        *,
        name: str,
    ) -> Task[None]:
        protocol = self._protocol
        consumer = _Consumer(self, runtime, on_data, on_end, name)
        # What arrived before, during the handshake, is handed over first.
        backlog = list(protocol.chunks)
        protocol.chunks.clear()
        protocol.buffered = 0
        protocol.consumer = consumer
        consumer.start(backlog, ended=protocol.eof or self._closed)
        return consumer

    def end_error(self) -> BaseException | None:
        """What :meth:`receive` would raise at the end of the stream, if anything."""
        if self._closed:
            return ClosedResourceError("stream was closed")
        error = self._protocol.error
        if error is None:
            return None
        broken = BrokenResourceError(
            f"connection to {self._peer[0]}:{self._peer[1]} broke: {error}"
        )
        broken.__cause__ = error
        return broken

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # What was gathered was sent, as far as the caller knows: it goes first.
        self._protocol.flush()
        self._transport.close()
        self._protocol._wake_reader()

    def abort(self) -> None:
        self._closed = True
        self._protocol.pending.clear()
        self._transport.abort()
        self._protocol._wake_reader()


class _Soon:
    """A callback due at the end of the turn, as a cancellable :class:`Timer`."""

    __slots__ = ("_callback", "_cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._cancelled = False

    def __repr__(self) -> str:
        return f"<soon {self._callback!r}{' cancelled' if self._cancelled else ''}>"

    def __call__(self) -> None:
        if not self._cancelled:
            self._callback()

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled


class _Consumer:
    """A stream's reader, run from the protocol's callbacks (``consume``).

    Each piece that arrives is handed to ``on_data`` at once, in the
    callback, by stepping its coroutine by hand. Most pieces are handled
    without a real wait, and then a received frame costs no task wake-up
    and no extra turn of the event loop: a remote call's answer resolves
    the caller's future from the very callback that read it. When
    ``on_data`` does wait (a full inbox, a slow sink), reading pauses, the
    rest of that call finishes in a task, and the task hands over what
    arrived meanwhile before reading resumes, so the peer feels the
    back-pressure as it did with a reading task.

    It stands for the reading task in the runtime's interface: cancelling
    it stops the reading.
    """

    def __init__(
        self,
        stream: RealStream,
        runtime: Runtime,
        on_data: DataHandler,
        on_end: Callable[[BaseException | None], Coroutine[Any, Any, None]],
        name: str,
    ) -> None:
        self._stream = stream
        self._protocol = stream._protocol
        self._runtime = runtime
        self._on_data = on_data
        self._on_end = on_end
        self._name = name
        # Pieces that arrived while a call of on_data waited, oldest first.
        self._waiting: deque[bytes] = deque()
        self._task: Task[None] | None = None
        self._ended = False
        self._over = False
        self._cancelled = False
        self._finished: asyncio.Future[None] = self._protocol.loop.create_future()

    def __repr__(self) -> str:
        state = "over" if self._over else "waiting" if self._task else "reading"
        return f"<reader {self._name} {state} queued={len(self._waiting)}>"

    def get_name(self) -> str:
        return self._name

    def done(self) -> bool:
        return self._finished.done()

    def cancel(self, msg: Any | None = None) -> bool:
        if self._finished.done():
            return False
        self._cancelled = self._over = True
        self._waiting.clear()
        if self._task is not None:
            self._task.cancel(msg)
        else:
            self._finish()
        return True

    def cancelling(self) -> int:
        return 1 if self._cancelled and not self._finished.done() else 0

    def __await__(self) -> Generator[Any, None, None]:
        return self._finished.__await__()

    def start(self, backlog: list[bytes], *, ended: bool) -> None:
        self._ended = ended
        if backlog or ended:
            self._waiting.extend(backlog)
            self._wait(None)

    def feed(self, data: bytes) -> None:
        """A piece arrived: handle it now, unless an earlier one still waits."""
        if self._over:
            return
        if self._task is not None:
            self._waiting.append(data)
            return
        try:
            coro = self._on_data(data)
        except Exception as exc:
            self._crashed(exc)
            return
        if isinstance(coro, bool):
            if not coro:
                self._stop()
            return
        try:
            waiting_on = coro.send(None)
        except StopIteration as stop:
            if not stop.value:
                self._stop()
            return
        except Exception as exc:
            self._crashed(exc)
            return
        self._wait(Rest(coro, waiting_on))

    def end(self) -> None:
        """The stream ended: on_end is due, after any waiting pieces."""
        if self._over or self._ended:
            return
        self._ended = True
        if self._task is None:
            self._wait(None)

    def _wait(self, rest: Rest[bool] | None) -> None:
        self._pause()
        self._task = self._runtime.spawn(self._catch_up(rest), name=self._name)
        if self._over:
            # Cancelled while on_data ran: it stops at its wait, as a task
            # cancelled while running would.
            self._task.cancel()

    async def _catch_up(self, rest: Rest[bool] | None) -> None:
        try:
            keep = True if rest is None else await rest
            while keep and self._waiting:
                handled = self._on_data(self._waiting.popleft())
                keep = handled if isinstance(handled, bool) else await handled
            if not keep:
                self._stop()
            elif self._ended:
                self._over = True
                await self._on_end(self._stream.end_error())
        except Exception as exc:
            self._crashed(exc)
        finally:
            self._task = None
            if self._over:
                self._finish()
            else:
                self._resume()

    def _stop(self) -> None:
        self._over = True
        self._waiting.clear()
        if self._task is None:
            self._finish()

    def _crashed(self, exc: Exception) -> None:
        log.error("task %s crashed: %r", self._name, exc, exc_info=exc)
        self._stop()

    def _finish(self) -> None:
        if not self._finished.done():
            self._finished.set_result(None)

    def _pause(self) -> None:
        protocol = self._protocol
        transport = protocol.transport
        if transport is None or protocol.reading_paused or transport.is_closing():
            return
        transport.pause_reading()
        protocol.reading_paused = True

    def _resume(self) -> None:
        protocol = self._protocol
        transport = protocol.transport
        if protocol.reading_paused and transport is not None:
            protocol.reading_paused = False
            if not transport.is_closing():
                transport.resume_reading()


class RealListener(Listener):
    def __init__(self, server: asyncio.Server) -> None:
        self._server = server
        self._address = _address(server.sockets[0].getsockname())
        self.refused = 0

    def __repr__(self) -> str:
        return (
            f"<RealListener {self._address[0]}:{self._address[1]} "
            f"refused={self.refused}>"
        )

    @property
    def address(self) -> Address:
        return self._address

    async def aclose(self) -> None:
        self._server.close()


class _DatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, queue_size: int) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.queue: deque[tuple[bytes, Address]] = deque()
        self.queue_size = queue_size
        self.reader: asyncio.Future[None] | None = None
        self.dropped = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(self.queue) >= self.queue_size:
            self.dropped += 1
            return
        self.queue.append((data, _address(addr)))
        self._wake()

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) for an earlier send: UDP is lossy by
        # contract, so they are logged rather than raised.
        log.debug("datagram error: %r", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self.reader is not None and not self.reader.done():
            self.reader.set_result(None)
        self.reader = None


class RealDatagramEndpoint(DatagramEndpoint):
    def __init__(self, protocol: _DatagramProtocol) -> None:
        assert protocol.transport is not None
        self._protocol = protocol
        self._transport = protocol.transport
        self._address = _address(self._transport.get_extra_info("sockname"))

    @property
    def dropped(self) -> int:  # type: ignore[override]
        return self._protocol.dropped

    @property
    def local_address(self) -> Address:
        return self._address

    def send(self, data: bytes, address: Address) -> None:
        if self._protocol.closed:
            raise ClosedResourceError("datagram endpoint was closed")
        if len(data) > MAX_DATAGRAM:
            raise ValueError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")
        self._transport.sendto(data, address)

    async def receive(self) -> tuple[bytes, Address]:
        protocol = self._protocol
        while not protocol.queue:
            if protocol.closed:
                raise ClosedResourceError("datagram endpoint was closed")
            protocol.reader = asyncio.get_running_loop().create_future()
            await protocol.reader
        return protocol.queue.popleft()

    def close(self) -> None:
        self._transport.close()


def _why_refused(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no TLS handshake in time"
    return str(exc) or type(exc).__name__


def _address(raw: Any) -> Address:
    return (str(raw[0]), int(raw[1]))
