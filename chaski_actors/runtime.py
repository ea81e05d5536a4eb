"""The runtime: the one seam between actors and the world.

Everything in ``chaski_actors`` is written against the interfaces in this
module and never against asyncio, simpy, sockets or the system clock. A backend
supplies one concrete :class:`Runtime` per host:

* ``chaski_actors.real.RealRuntime`` maps each method onto asyncio, real
  sockets and the monotonic clock;
* ``chaski_actors.sim.SimNetwork(...).runtime(host)`` maps them onto a simpy
  environment, where time is virtual and the network is a networkx graph.

The interface is deliberately small. What can be built from these primitives
(queues, events, locks, retries) is built once, in backend-neutral code, so
that both backends behave alike by construction rather than by care.

Addresses are ``(host, port)`` tuples. Under ``real`` the host is an IP
address; under ``sim`` it is the name of a node of the topology graph.

Cancellation: each backend raises its own cancellation exception inside a
cancelled task (``asyncio.CancelledError`` in both today, but neutral code must
not rely on that and uses :attr:`Runtime.cancelled_error`).
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable, Coroutine, Generator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .errors import BrokenResourceError, ClosedResourceError

__all__ = [
    "Address",
    "DataHandler",
    "DatagramEndpoint",
    "Future",
    "Listener",
    "RandomSource",
    "Runtime",
    "Stream",
    "StreamHandler",
    "Task",
    "Timer",
    "TlsConfig",
    "derive_seed",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
Address = tuple[str, int]

# How much the default :meth:`Stream.consume` reads at a time: large enough
# that a burst of small frames is parsed in one pass.
_CONSUME_SIZE = 1 << 18


def derive_seed(seed: int, *labels: str) -> int:
    """A seed for one random stream, stable across processes and platforms.

    Python's ``hash()`` of a string changes with ``PYTHONHASHSEED``; a digest
    does not, which is what makes simulated runs replay from their seed.
    """
    text = ":".join([str(seed), *labels]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big")


class RandomSource(Protocol):
    """The part of :class:`random.Random` that actors may use.

    The runtime hands out a seeded instance: under ``sim`` it derives from the
    scenario seed, so application randomness replays with the run.
    """

    def random(self) -> float: ...

    def uniform(self, a: float, b: float) -> float: ...

    def randint(self, a: int, b: int) -> int: ...

    def expovariate(self, lambd: float) -> float: ...

    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float: ...

    def getrandbits(self, k: int) -> int: ...

    def choice(self, seq: Sequence[T]) -> T: ...

    def sample(self, population: Sequence[T], k: int) -> list[T]: ...


class Future(Protocol[T]):
    """A one-shot result that tasks can await (asyncio's future, or sim's)."""

    def done(self) -> bool: ...

    def cancelled(self) -> bool: ...

    def result(self) -> T: ...

    def set_result(self, result: T, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...

    def cancel(self, msg: Any | None = None) -> bool: ...

    def __await__(self) -> Generator[Any, None, T]: ...


class Task(Protocol[T_co]):
    """A spawned coroutine. Await it to join it; ``cancel()`` to stop it."""

    def get_name(self) -> str: ...

    def done(self) -> bool: ...

    def cancel(self, msg: Any | None = None) -> bool: ...

    def cancelling(self) -> int:
        """Non-zero while a ``cancel()`` is pending that no timeout scope took.

        Tells a task that is being cancelled apart from code inside it that
        raised the cancellation error of its own accord.
        """
        ...

    def __await__(self) -> Generator[Any, None, T_co]: ...


class Timer(Protocol):
    """A callback scheduled by :meth:`Runtime.call_later`.

    Cancelling must be cheap: keep-alive and call deadlines create and cancel
    timers by the thousand, and a cancelled one must not keep costing time.
    """

    def cancel(self) -> None: ...

    def cancelled(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Where a node's identity lives, for mutual TLS.

    ``certificate`` and ``private_key`` are PEM file paths for this node;
    ``ca_certificate`` is the root that peers' certificates must chain to;
    ``revocation_list`` is re-read at every handshake, so a revocation
    reaches a running node when the file is replaced. A handshake that has
    not finished after ``handshake_timeout_s`` is dropped: it bounds how long
    a silent peer holds a connection slot (the figure is the same as
    ``Settings.handshake_timeout_s``, for the same reasons). A node does not
    copy its setting into this field: a node that lowers one should lower
    both.
    """

    certificate: str
    private_key: str
    ca_certificate: str
    revocation_list: str | None = None
    handshake_timeout_s: float = 5.0

    @classmethod
    def from_directory(cls, directory: str, name: str) -> TlsConfig:
        """The files that ``chaski-actors ca issue`` or enrolment write."""
        base = directory.rstrip("/")
        return cls(
            certificate=f"{base}/{name}.pem",
            private_key=f"{base}/{name}.key",
            ca_certificate=f"{base}/ca.pem",
            revocation_list=f"{base}/crl.pem",
        )


# What Stream.consume hands each piece to: whether to go on reading, or a
# coroutine that says so (see Stream.consume).
DataHandler = Callable[[bytes], bool | Coroutine[Any, Any, bool]]


class Stream(abc.ABC):
    """A reliable, ordered byte stream: a TCP connection, real or simulated."""

    # Empty, so that a backend's streams may use slots of their own.
    __slots__ = ()

    @property
    @abc.abstractmethod
    def local_address(self) -> Address: ...

    @property
    @abc.abstractmethod
    def peer_address(self) -> Address: ...

    @property
    def peer_identity(self) -> str | None:
        """The peer's verified name from its certificate, or None without TLS."""
        return None

    @abc.abstractmethod
    async def send(self, data: bytes) -> None:
        """Write all of ``data``; waits while the peer's window is full.

        Raises :class:`BrokenResourceError` if the connection is gone and
        :class:`ClosedResourceError` after :meth:`aclose`.
        """

    def try_send(self, data: bytes) -> bool:
        """Write all of ``data`` now if :meth:`send` would not wait first.

        False, having written nothing, if it would wait, if the stream is
        closed or broken (:meth:`send` says which), or if the backend has no
        such shortcut, as this default has not. A caller that gets False
        uses :meth:`send`.
        """
        return False

    @abc.abstractmethod
    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Read what has arrived, at most ``max_bytes``; ``b""`` at end of stream."""

    def consume(
        self,
        runtime: Runtime,
        on_data: DataHandler,
        on_end: Callable[[BaseException | None], Coroutine[Any, Any, None]],
        *,
        name: str,
    ) -> Task[None]:
        """Hand everything that arrives to ``on_data``, one piece at a time.

        ``on_data`` returns whether to go on reading, or a coroutine that
        says so once awaited, when handling the piece must wait: a piece
        handled at once then costs no coroutine. Reading stops when
        ``on_data`` says False. At the end of the stream ``on_end`` gets
        None, or the :class:`BrokenResourceError` or
        :class:`ClosedResourceError` that :meth:`receive` would have raised.
        Cancelling the returned task stops the reading and calls neither.

        This default reads in a task of its own. A backend may instead call
        ``on_data`` from the code that receives the bytes, which saves a wake-up
        of a task per read (the real backend does). Either way, one call of
        ``on_data`` finishes before the next begins, and while one waits
        nothing more is read, so the peer feels the back-pressure. Code run
        by ``on_data`` must therefore not rely on running inside a task of
        its own, up to its first real wait.
        """
        return runtime.spawn(self._read_into(on_data, on_end), name=name)

    async def _read_into(
        self,
        on_data: DataHandler,
        on_end: Callable[[BaseException | None], Coroutine[Any, Any, None]],
    ) -> None:
        try:
            while data := await self.receive(_CONSUME_SIZE):
                handled = on_data(data)
                if not (handled if isinstance(handled, bool) else await handled):
                    return
        except (BrokenResourceError, ClosedResourceError) as exc:
            await on_end(exc)
            return
        await on_end(None)

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close gracefully: what was sent still arrives, then end of stream."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Close at once, dropping anything unsent (a reset, not a goodbye)."""


StreamHandler = Callable[[Stream], Coroutine[Any, Any, None]]


class Listener(abc.ABC):
    """A listening socket; each accepted stream runs the handler in a new task."""

    @property
    @abc.abstractmethod
    def address(self) -> Address: ...

    #: Connections reset on arrival because ``max_connections`` were open.
    refused: int = 0

    @abc.abstractmethod
    async def aclose(self) -> None: ...


class DatagramEndpoint(abc.ABC):
    """An unreliable, unordered message socket: UDP, real or simulated.

    ``receive`` waits for the next datagram. Datagrams that arrive while the
    receive queue is full are dropped and counted in ``dropped``.
    """

    dropped: int = 0

    @property
    @abc.abstractmethod
    def local_address(self) -> Address: ...

    @abc.abstractmethod
    def send(self, data: bytes, address: Address) -> None:
        """Send one datagram; never waits. Oversized datagrams raise ValueError."""

    @abc.abstractmethod
    async def receive(self) -> tuple[bytes, Address]: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class Runtime(abc.ABC):
    """Clock, tasks, timers and sockets for one host."""

    # Empty, so that a backend's runtime may use slots of its own.
    __slots__ = ()

    #: "real" or "sim": for logs and reports, never for branching in actors.
    kind: str
    #: The exception that cancellation raises inside a task.
    cancelled_error: type[BaseException]
    #: Seeded random numbers for the application.
    random: RandomSource

    @property
    @abc.abstractmethod
    def host(self) -> str:
        """The address a node on this runtime listens on by default."""

    @abc.abstractmethod
    def now(self) -> float:
        """Seconds on this runtime's clock: monotonic, or simulated."""

    @abc.abstractmethod
    async def sleep(self, seconds: float) -> None: ...

    @abc.abstractmethod
    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...

    def call_soon(self, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` once the running task yields, as a timer due now.

        For work put off to the end of the current turn (corked writes). A
        backend with a cheaper way than a timer overrides this: asyncio's
        ready queue skips the timer heap, which costs a tenth of a small
        remote call when done on every turn.
        """
        return self.call_later(0.0, callback)

    def at_turn_end(self, callback: Callable[[], None]) -> None:
        """:meth:`call_soon` for a callback that is never cancelled.

        A backend may run it more cheaply, without a timer to hand back.
        """
        self.call_soon(callback)

    @abc.abstractmethod
    def wall_clock(self) -> float:
        """Seconds since the Unix epoch, for certificate validity windows.

        Under ``sim`` it is the network's epoch plus virtual time, so that
        certificates expire in simulated time too.
        """

    @abc.abstractmethod
    def secret_bytes(self, count: int) -> bytes:
        """``count`` unpredictable bytes, for tokens and nonces.

        Under ``real`` they come from the operating system; under ``sim`` from
        the seeded generator, so a run replays (and nothing there is secret).
        """

    @abc.abstractmethod
    def create_future(self) -> Future[Any]: ...

    @abc.abstractmethod
    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> Task[T]:
        """Run ``coro`` concurrently. A task that fails is logged, not lost."""

    @abc.abstractmethod
    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        """``async with runtime.timeout(s):`` raises TimeoutError after ``s``."""

    @abc.abstractmethod
    def unique_id(self) -> str:
        """An identifier that no other call, on any host, returns."""

    @abc.abstractmethod
    async def connect(
        self, host: str, port: int, *, tls: TlsConfig | None = None
    ) -> Stream:
        """Open a stream; raises :class:`ConnectError` if it cannot."""

    @abc.abstractmethod
    async def listen(
        self,
        host: str,
        port: int,
        handler: StreamHandler,
        *,
        tls: TlsConfig | None = None,
        max_connections: int | None = None,
    ) -> Listener:
        """Accept streams on ``(host, port)``; port 0 picks a free one.

        With ``tls`` the handler gets a stream only after the TLS handshake
        and the peer's certificate checked out. With ``max_connections`` a
        connection accepted while that many are open (handshaking or not) is
        reset at once and counted in the listener's ``refused``.
        """

    @abc.abstractmethod
    async def open_datagram(
        self, host: str, port: int, *, queue_size: int = 1024
    ) -> DatagramEndpoint: ...
