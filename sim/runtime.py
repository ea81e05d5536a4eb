"""The simulated runtime: one per host of a :class:`SimNetwork`."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from asyncio import CancelledError
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from contextlib import AbstractAsyncContextManager
from random import Random
from typing import TYPE_CHECKING, Any, TypeVar

from simpy.events import PENDING

from chaski_actors._eager import Rest
from chaski_actors.errors import (
    BrokenResourceError,
    ClosedResourceError,
    ConfigError,
    ConnectError,
    ProtocolError,
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
from ._kernel import Life, SimFuture, SimTask, SimTimeout, _Ready
from .network import MAX_DATAGRAM, _Pipe, derive_seed

if TYPE_CHECKING:
    from .network import SimNetwork

T = TypeVar("T")

__all__ = ["SimRuntime"]

_ANY_HOST = ("", "0.0.0.0", "::")
# Bytes of nonce in each simulated TLS hello, as in TLS's own randoms.
_TLS_NONCE = 32
# How much a stream's reader takes at a time (the default consume's figure).
_READ_SIZE = 1 << 18

security_log = logging.getLogger("chaski.security")


class SimRuntime(Runtime):
    """The :class:`Runtime` of one simulated host."""

    # Slots, as for the other per-host objects on the message path: no
    # __dict__ to fetch from memory besides the object itself, which counts
    # once thousands of hosts no longer fit in the processor's caches.
    __slots__ = (
        "_clock",
        "_closeables",
        "_host",
        "_ids",
        "_kernel",
        "_life",
        "_readers",
        "_tasks",
        "network",
        "random",
    )

    kind = "sim"
    cancelled_error = CancelledError

    def __init__(self, network: SimNetwork, host: str) -> None:
        self.network = network
        self._host = host
        self._kernel = network.kernel
        self._clock = network.kernel.env
        # Timers and streams of this life of the host; a crash ends it.
        self._life = Life(network.is_up(host))
        self.random = Random(derive_seed(network.seed, "app", host))
        self._ids = itertools.count(1)
        # The host's live tasks, in spawn order; a task leaves when it ends.
        self._tasks: dict[SimTask[Any], None] = {}
        self._closeables: dict[int, Listener | DatagramEndpoint] = {}
        # Streams' readers (consume), which a crash stops as it stops tasks.
        self._readers: dict[_Reader, None] = {}

    def __repr__(self) -> str:
        state = "up" if self.network.is_up(self._host) else "down"
        return f"<SimRuntime {self._host} {state} tasks={len(self._tasks)}>"

    @property
    def host(self) -> str:
        return self._host

    def now(self) -> float:
        return self._clock._now

    async def sleep(self, seconds: float) -> None:
        clock = self._clock
        await clock.wake_at(clock._now + seconds)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        # A crash stops the host's timers as it stops its tasks: a timer set
        # by the previous life must not run code on the restarted one.
        clock = self._clock
        return clock.call_at(clock._now + delay, callback, self._life)

    def call_soon(self, callback: Callable[[], None]) -> Timer:
        # The clock's ready queue: no heap entry, and after the ready work
        # queued before it, as asyncio's call_soon.
        return self._clock.call_soon(callback, self._life)

    def at_turn_end(self, callback: Callable[[], None]) -> None:
        # Under the host's life, as call_soon; see Clock.at_turn_end.
        self._clock.at_turn_end(callback, self._life)

    def wall_clock(self) -> float:
        return self.network.epoch + self.now()

    def secret_bytes(self, count: int) -> bytes:
        return self.random.getrandbits(8 * count).to_bytes(count, "big")

    def _utc_now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.wall_clock(), dt.UTC)

    def create_future(self) -> Future[Any]:
        return SimFuture(self._clock)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> Task[T]:
        if not self.network.is_up(self._host):
            coro.close()
            raise ClosedResourceError(f"host {self._host} is down")
        task = self._kernel.spawn(coro, f"{self._host}/{name}")
        self._tasks[task] = None
        task._registry = self._tasks
        return task

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        return SimTimeout(self._kernel, seconds)

    def unique_id(self) -> str:
        return f"{self._host}-{next(self._ids)}"

    # -- sockets -------------------------------------------------------------

    def _resolve_local(self, host: str) -> str:
        if host in _ANY_HOST or host == self._host:
            return self._host
        raise OSError(99, f"cannot bind {host!r} on simulated host {self._host!r}")

    async def connect(
        self, host: str, port: int, *, tls: TlsConfig | None = None
    ) -> Stream:
        self._check_up()
        out, inbound, local = await self.network._connect(self._host, (host, port))
        stream = self._make_stream(out, inbound, local, (host, port))
        if tls is None:
            return stream
        try:
            async with self.timeout(tls.handshake_timeout_s):
                name, leftover = await _tls.client_handshake(
                    stream, tls, self.secret_bytes(_TLS_NONCE), self._utc_now()
                )
        except (ProtocolError, BrokenResourceError, TimeoutError) as exc:
            stream.abort()
            raise ConnectError(f"refused {host}:{port}: {_why(exc)}") from exc
        stream._secured(name, leftover)
        return stream

    def _make_stream(
        self, out: _Pipe, inbound: _Pipe, local: Address, peer: Address
    ) -> SimStream:
        return SimStream(self.network, out, inbound, local, peer, life=self._life)

    async def listen(
        self,
        host: str,
        port: int,
        handler: StreamHandler,
        *,
        tls: TlsConfig | None = None,
        max_connections: int | None = None,
    ) -> Listener:
        self._check_up()
        local = self._resolve_local(host)
        if port == 0:
            port = self.network._ephemeral_port(local)
        listener = SimListener(self, (local, port))
        self.network._add_listener(
            (local, port), self._guard(listener, handler, tls, max_connections), self
        )
        self._closeables[id(listener)] = listener
        return listener

    async def open_datagram(
        self, host: str, port: int, *, queue_size: int = 1024
    ) -> DatagramEndpoint:
        self._check_up()
        local = self._resolve_local(host)
        if port == 0:
            port = self.network._ephemeral_port(local)
        endpoint = SimDatagramEndpoint(self, (local, port), queue_size)
        self.network._add_datagram((local, port), endpoint)
        self._closeables[id(endpoint)] = endpoint
        return endpoint

    def _guard(
        self,
        listener: SimListener,
        handler: StreamHandler,
        tls: TlsConfig | None,
        max_connections: int | None,
    ) -> StreamHandler:
        """The handler the network calls: limit, then handshake, then ``handler``."""
        open_now: list[SimStream] = []

        async def accepted(stream: Stream) -> None:
            assert isinstance(stream, SimStream)
            open_now[:] = [s for s in open_now if s.is_open]
            if max_connections is not None and len(open_now) >= max_connections:
                listener.refused += 1
                stream.abort()
                return
            open_now.append(stream)
            if tls is not None and not await self._secure(stream, tls):
                return
            await handler(stream)

        return accepted

    async def _secure(self, stream: SimStream, tls: TlsConfig) -> bool:
        try:
            async with self.timeout(tls.handshake_timeout_s):
                name, leftover = await _tls.server_handshake(
                    stream, tls, self.secret_bytes(_TLS_NONCE), self._utc_now()
                )
        except (ProtocolError, BrokenResourceError, TimeoutError) as exc:
            security_log.info(
                "refused %s:%s: %s",
                *stream.peer_address,
                _why(exc),
                extra={"runtime_time": self.now(), "node": self._host},
            )
            stream.abort()
            return False
        stream._secured(name, leftover)
        return True

    def _check_up(self) -> None:
        if not self.network.is_up(self._host):
            raise ClosedResourceError(f"host {self._host} is down")

    def _crashed(self) -> None:
        """Called by the network: every task of this host dies now."""
        self._life.alive = False
        self._life = Life(False)
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        for reader in list(self._readers):
            reader.cancel()
        self._closeables.clear()

    def _restarted(self) -> None:
        """Called by the network: the host's next life begins."""
        self._life.alive = True


class SimStream(Stream):
    """One end of a simulated TCP connection."""

    # Slots: see SimRuntime.
    __slots__ = (
        "_closed",
        "_identity",
        "_in",
        "_life",
        "_local",
        "_network",
        "_out",
        "_peer",
    )

    def __init__(
        self,
        network: SimNetwork,
        out: _Pipe,
        inbound: _Pipe,
        local: Address,
        peer: Address,
        *,
        life: Life,
    ) -> None:
        self._network = network
        self._out = out
        self._in = inbound
        self._local = local
        self._peer = peer
        self._closed = False
        # The life of the local host this stream belongs to; a crash ends both.
        self._life = life
        self._identity: str | None = None

    def _check_alive(self) -> None:
        if self._closed:
            raise ClosedResourceError("stream was closed")
        if not self._life.alive:
            raise ClosedResourceError(f"host {self._local[0]} crashed")

    def __repr__(self) -> str:
        return (
            f"<SimStream {self._local[0]}:{self._local[1]}->{self._peer[0]}:"
            f"{self._peer[1]} in_flight={self._out.in_flight}>"
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

    @property
    def is_open(self) -> bool:
        """Neither closed here nor reset by the peer."""
        return not self._closed and not self._out.dead and self._out.error is None

    def _secured(self, identity: str, leftover: bytes) -> None:
        """The TLS handshake verified the peer; give back what it read past."""
        self._identity = identity
        if leftover:
            self._in.unread(leftover)

    async def send(self, data: bytes) -> None:
        out = self._out
        network = self._network
        while True:
            if self._closed or not self._life.alive:
                self._check_alive()  # raises
            if out.error is not None:
                raise BrokenResourceError(str(out.error)) from out.error
            if out.in_flight + out.buffered < network.window or not data:
                break
            if out.writer is None or out.writer.done():
                out.writer = SimFuture(network.env)
            await out.writer
        if data:
            network._send(out, bytes(data))

    def try_send(self, data: bytes) -> bool:
        out = self._out
        network = self._network
        if (
            self._closed
            or not self._life.alive
            or out.error is not None
            or out.in_flight + out.buffered >= network.window
            or not data
        ):
            return False
        # A frame is nearly always bytes already, and then needs no copy.
        network._send(out, data if data.__class__ is bytes else bytes(data))
        return True

    async def receive(self, max_bytes: int = 65536) -> bytes:
        pipe = self._in
        while not pipe.buffered:
            if self._closed or not self._life.alive:
                self._check_alive()  # raises
            if pipe.error is not None:
                raise BrokenResourceError(str(pipe.error)) from pipe.error
            if pipe.eof:
                return b""
            reader = pipe.reader
            if reader is None or (reader.done() and not reader._reuse()):
                reader = pipe.reader = SimFuture(self._network.env)
            await reader
        # Everything that arrived since the last read, up to max_bytes, in
        # one piece: a burst of segments costs the reader one wake-up.
        data = pipe.take(max_bytes)
        # The reader drained our side of the window: the peer may send again.
        if pipe.writer is not None:
            pipe.wake_writer()
        return data

    def consume(
        self,
        runtime: Runtime,
        on_data: DataHandler,
        on_end: Callable[[BaseException | None], Coroutine[Any, Any, None]],
        *,
        name: str,
    ) -> Task[None]:
        return _Reader(self, runtime, on_data, on_end, name)

    def _end_error(self) -> BaseException | None:
        """What :meth:`receive` raises once nothing is left to read, if anything."""
        if self._closed:
            return ClosedResourceError("stream was closed")
        if not self._life.alive:
            return ClosedResourceError(f"host {self._local[0]} crashed")
        error = self._in.error
        if error is not None:
            broken = BrokenResourceError(str(error))
            broken.__cause__ = error
            return broken
        return None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        out = self._out
        if out.error is None and not out.dead:
            self._network._send(out, b"")
        self._in.wake_reader()
        out.wake_writer()

    def abort(self) -> None:
        if self._closed and self._out.dead:
            return
        self._closed = True
        self._network._reset(self._out, self._in)


class _Reader:
    """A stream's reader, run from the wake-up that its data's arrival causes.

    ``consume`` without a task: where the reading task would be resumed
    (the arrival of a segment resolves the pipe's reader future, see
    ``network._arrive``), this reader's callback runs instead, reads what
    arrived and hands it to ``on_data``, stepping by hand the coroutine
    that this may return. It is woken at the very moment the task would
    have been, so the schedule and the trace are those of a reading task;
    what it saves is the task's machinery per read: a coroutine step for
    the loop, and one for each ``receive``.

    A call of ``on_data`` that waits finishes in a task, which then reads
    on until the stream has nothing more; nothing is read meanwhile, so the
    peer feels the back-pressure as it did with a reading task. A crash of
    the host stops the reader as it cancels the host's tasks: ``on_end`` is
    not called.
    """

    __slots__ = (
        "_clock",
        "_finished",
        "_name",
        "_on_data",
        "_on_end",
        "_over",
        "_parked",
        "_readers",
        "_runtime",
        "_stream",
        "_task",
        "_wake",
    )

    def __init__(
        self,
        stream: SimStream,
        runtime: Runtime,
        on_data: DataHandler,
        on_end: Callable[[BaseException | None], Coroutine[Any, Any, None]],
        name: str,
    ) -> None:
        self._stream = stream
        self._runtime = runtime
        self._on_data = on_data
        self._on_end = on_end
        self._name = name
        self._clock = stream._network.env
        self._finished: SimFuture[None] = SimFuture(self._clock)
        # A call of on_data (or on_end) that waited, finishing in a task.
        self._task: Task[None] | None = None
        self._over = False
        # The future whose callbacks hold ``_wake`` while nothing is to read.
        self._parked: SimFuture[None] | None = None
        self._wake = self._read
        if isinstance(runtime, SimRuntime):
            self._readers: dict[_Reader, None] | None = runtime._readers
            self._readers[self] = None
        else:
            self._readers = None
        # The first read is due when a task spawned now would make it.
        self._clock._ready.append(_Ready(self._wake, True, None))

    def __repr__(self) -> str:
        state = "over" if self._over else "waiting" if self._task else "reading"
        return f"<reader {self._name} {state}>"

    def get_name(self) -> str:
        return self._name

    def done(self) -> bool:
        return self._finished.done()

    def cancel(self, msg: Any | None = None) -> bool:
        if self._finished.done():
            return False
        self._over = True
        if self._task is not None:
            self._task.cancel(msg)  # its end finishes the reader
            return True
        parked = self._parked
        if parked is not None and parked.callbacks:
            parked.callbacks.remove(self._wake)
        self._parked = None
        self._finish(cancelled=True)
        return True

    def cancelling(self) -> int:
        task = self._task
        return 0 if task is None else task.cancelling()

    def __await__(self) -> Generator[Any, None, None]:
        return self._finished.__await__()

    def _read(self, _event: Any = None) -> None:
        """Hand what has arrived to ``on_data`` until it waits or nothing is left.

        What the reading task's ``receive`` did, step for step. Also the
        callback of the event that wakes the reader (``_event``).
        """
        self._parked = None
        if self._over:
            return
        stream = self._stream
        pipe = stream._in
        while pipe.buffered:
            data = pipe.take(_READ_SIZE)
            if pipe.writer is not None:
                pipe.wake_writer()
            handled = self._on_data(data)
            if handled is True:
                continue  # handled at once, the usual case
            if handled is False:
                self._over = True
                self._finish()
                return
            if not self._step(handled):
                return
        if (
            stream._closed
            or pipe.error is not None
            or pipe.eof
            or not stream._life.alive
        ):
            self._over = True
            self._step(self._on_end(stream._end_error()))
            return
        # Wait for the next arrival on the pipe's reader future, reused as
        # receive reuses it.
        reader = pipe.reader
        if reader is None or (reader._value is not PENDING and not reader._reuse()):
            reader = pipe.reader = SimFuture(self._clock)
        reader.callbacks.append(self._wake)
        self._parked = reader

    def _step(self, coro: Coroutine[Any, Any, Any]) -> bool:
        """Run ``coro`` until it first waits; whether reading goes on at once.

        False if the coroutine waits (a task finishes it and reads on), if
        it returned False (reading stops), or if it failed.
        """
        try:
            waiting_on = coro.send(None)
        except StopIteration as stop:
            if self._over:
                self._finish()  # on_end, or a stop while on_data ran
                return False
            if not stop.value:
                self._over = True
                self._finish()
                return False
            return True
        except Exception as exc:
            self._crashed(exc)
            return False
        self._task = self._runtime.spawn(
            self._catch_up(Rest(coro, waiting_on)), name=self._name
        )
        return False

    async def _catch_up(self, rest: Rest[Any]) -> None:
        try:
            keep = await rest
        except CancelledError:
            # By the owner, or by a crash of the host.
            self._over = True
            self._finish(cancelled=True)
            raise
        except Exception as exc:
            self._crashed(exc)
            return
        finally:
            self._task = None
        if self._over:
            self._finish()  # on_end is done, or the owner stopped reading
        elif keep:
            self._read()
        else:
            self._over = True
            self._finish()

    def _crashed(self, exc: Exception) -> None:
        self._over = True
        self._stream._network.kernel.report_crash(self, exc)
        if not self._finished.done():
            self._finished.set_exception(exc)
        self._forget()

    def _finish(self, *, cancelled: bool = False) -> None:
        finished = self._finished
        if not finished.done():
            if cancelled:
                finished.cancel()
            else:
                finished.set_result(None)
        self._forget()

    def _forget(self) -> None:
        if self._readers is not None:
            self._readers.pop(self, None)
            self._readers = None


class SimListener(Listener):
    def __init__(self, runtime: SimRuntime, address: Address) -> None:
        self._runtime = runtime
        self._address = address
        self.refused = 0

    def __repr__(self) -> str:
        return (
            f"<SimListener {self._address[0]}:{self._address[1]} "
            f"refused={self.refused}>"
        )

    @property
    def address(self) -> Address:
        return self._address

    async def aclose(self) -> None:
        self._runtime.network._remove_listener(self._address)
        self._runtime._closeables.pop(id(self), None)


class SimDatagramEndpoint(DatagramEndpoint):
    def __init__(self, runtime: SimRuntime, address: Address, queue_size: int) -> None:
        if queue_size < 1:
            raise ConfigError("queue_size must be at least 1")
        self._runtime = runtime
        self._address = address
        self._queue: deque[tuple[bytes, Address]] = deque()
        self._queue_size = queue_size
        self._reader: SimFuture[None] | None = None
        self._closed = False
        self.dropped = 0

    @property
    def local_address(self) -> Address:
        return self._address

    def send(self, data: bytes, address: Address) -> None:
        if self._closed:
            raise ClosedResourceError("datagram endpoint was closed")
        if len(data) > MAX_DATAGRAM:
            raise ValueError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")
        self._runtime.network._send_datagram(self._address, bytes(data), address)

    def _deliver(self, data: bytes, source: Address) -> None:
        if self._closed or len(self._queue) >= self._queue_size:
            self.dropped += 1
            return
        self._queue.append((data, source))
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    async def receive(self) -> tuple[bytes, Address]:
        while not self._queue:
            if self._closed:
                raise ClosedResourceError("datagram endpoint was closed")
            self._reader = SimFuture(self._runtime.network.env)
            await self._reader
        return self._queue.popleft()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._runtime.network._remove_datagram(self._address)
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no TLS handshake in time"
    return str(exc) or type(exc).__name__
