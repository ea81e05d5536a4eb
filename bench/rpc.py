"""Remote calls over loopback: chaski, a raw asyncio echo and Pyro5.

A server process exposes ``echo(payload)``; a client process calls it. Each
round measures, after one warm-up round:

* ``sequential``: one call at a time; the round trip of every call gives
  p50 and p99, and calls over elapsed time gives calls/s;
* ``64 in flight``: 64 calls outstanding at all times; calls/s.

The raw echo is the floor for Python: length-prefixed msgpack frames
``[call id, payload]`` on a bare ``asyncio.Protocol``, replies matched to
futures by id. Pyro5 runs its default thread-pool server and serializer; its
64 calls in flight come from 64 threads, each with its own proxy, because a
Pyro5 proxy serves one call at a time.

chaski calls ``echo`` through a :class:`~chaski_actors.remote.Proxy`; its
server admits 64 running calls per peer (the default is 16) so that the
64-in-flight case is not refused as busy, and its client keeps up to 64 in
flight (it would queue all but 16 by default).

The original Chaski (``chaski 0.1a5``) serves a module by its import name: the
client asks for ``bench.rpc`` and calls its :func:`echo`. Its proxy's call is
synchronous (it runs the request to completion on the event loop it is
called from), and it sends every call twice, once without arguments when the
method is looked up and once with them when it is called, which is why
``echo`` takes no argument too. Its calls cannot overlap, so it has no
"64 in flight" figure.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import msgpack

from ._procs import Workers, start_worker, use_uvloop
from ._stats import Figure, percentile

__all__ = ["ORIGINAL", "Case", "available", "echo", "run_case"]

_HEADER = struct.Struct(">I")
IN_FLIGHT = 64
PAYLOAD = b"\x00" * 64
ORIGINAL = "chaski 0.1a5"


@dataclass(frozen=True, slots=True)
class Case:
    subject: str
    calls: int  # sequential calls per round
    flight_calls: int  # calls per round with IN_FLIGHT outstanding
    rounds: int
    uvloop: bool = False
    deadline_s: float = 120.0


@dataclass(frozen=True, slots=True)
class Round:
    p50_us: float
    p99_us: float
    calls_per_s: float
    flight_calls_per_s: float


def run_case(case: Case) -> list[Figure]:
    with Workers(case.deadline_s) as workers:
        address_q, stop_q, result_q = workers.queue(), workers.queue(), workers.queue()
        workers.start(_server, case, address_q, stop_q)
        address = workers.get(address_q, "server address")
        workers.start(_client, case, address, result_q)
        rounds: list[Round] = workers.get(result_q, "client result")
        stop_q.put(True)

    subject = case.subject + ("+uvloop" if case.uvloop else "")

    def figure(case_name: str, metric: str, unit: str, values: list[float]) -> Figure:
        better = unit == "calls/s"
        return Figure("rpc", case_name, subject, metric, unit, tuple(values), better)

    figures = [
        figure("sequential", "p50", "us", [r.p50_us for r in rounds]),
        figure("sequential", "p99", "us", [r.p99_us for r in rounds]),
        figure("sequential", "calls/s", "calls/s", [r.calls_per_s for r in rounds]),
    ]
    if case.subject != ORIGINAL:
        figures.append(
            figure(
                f"{IN_FLIGHT} in flight",
                "calls/s",
                "calls/s",
                [r.flight_calls_per_s for r in rounds],
            )
        )
    return figures


def available(subject: str) -> str | None:
    """Why ``subject`` cannot be measured here, or None if it can."""
    module = {
        "pyro5": "Pyro5",
        "chaski": "chaski_actors.remote",
        ORIGINAL: "chaski.remote",
    }.get(subject)
    if module is None:
        return None
    # Looked up, not imported: importing the original's chaski.remote patches
    # asyncio for the whole process (nest_asyncio), so only its workers may.
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:
        found = False
    if not found:
        if subject == "chaski":
            return "chaski remote calls: chaski_actors.remote does not exist yet"
        package = "chaski-confluent==0.1a5" if subject == ORIGINAL else subject
        return f"{subject} is not installed (pip install '.[bench]' for {package})"
    return None


def _server(case: Case, address_q: Any, stop_q: Any) -> None:
    start_worker(f"{case.subject}-server")
    use_uvloop(case.uvloop)
    if case.subject == "pyro5":
        _pyro_server(address_q, stop_q)
    elif case.subject == ORIGINAL:
        _original_server(address_q, stop_q)
    elif case.subject == "asyncio":
        asyncio.run(_raw_server(address_q, stop_q))
    else:
        asyncio.run(_chaski_server(address_q, stop_q))


def _client(case: Case, address: Any, result_q: Any) -> None:
    start_worker(f"{case.subject}-client")
    use_uvloop(case.uvloop)
    if case.subject == "pyro5":
        result_q.put(_pyro_client(case, address))
    elif case.subject == ORIGINAL:
        _original_client(case, address, result_q)
    elif case.subject == "asyncio":
        result_q.put(asyncio.run(_raw_client(case, address)))
    else:
        result_q.put(asyncio.run(_chaski_client(case, address)))


async def _async_rounds(
    case: Case, call: Callable[[bytes], Awaitable[Any]]
) -> list[Round]:
    """The rounds of one case, for clients that call with ``await call(x)``."""
    rounds = []
    for _ in range(case.rounds + 1):
        times = []
        started = time.perf_counter()
        for _ in range(case.calls):
            t0 = time.perf_counter()
            await call(PAYLOAD)
            times.append(time.perf_counter() - t0)
        sequential = time.perf_counter() - started

        started = time.perf_counter()
        await _in_flight(call, case.flight_calls)
        flight = time.perf_counter() - started
        rounds.append(_round(case, times, sequential, flight))
    return rounds[1:]


async def _in_flight(call: Callable[[bytes], Awaitable[Any]], calls: int) -> None:
    """Make ``calls`` calls with IN_FLIGHT of them outstanding at any time."""
    semaphore = asyncio.Semaphore(IN_FLIGHT)

    async def one() -> None:
        async with semaphore:
            await call(PAYLOAD)

    await asyncio.gather(*(one() for _ in range(calls)))


def _round(case: Case, times: list[float], sequential: float, flight: float) -> Round:
    return Round(
        p50_us=percentile(times, 0.50) * 1e6,
        p99_us=percentile(times, 0.99) * 1e6,
        calls_per_s=case.calls / sequential,
        flight_calls_per_s=case.flight_calls / flight,
    )


# -- raw asyncio echo --------------------------------------------------------


class _Framed(asyncio.Protocol):
    """Length-prefixed msgpack frames in and out; ``on_frame`` gets each value."""

    def __init__(self, on_frame: Callable[[_Framed, Any], None]) -> None:
        self.on_frame = on_frame
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not a subclass of asyncio.Transport under uvloop.
        transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=1 << 20)
        self.transport = transport

    def send(self, value: Any) -> None:
        body = msgpack.packb(value)
        assert self.transport is not None
        self.transport.write(_HEADER.pack(len(body)) + body)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        offset, end = 0, len(buffer)
        while end - offset >= 4:
            (length,) = _HEADER.unpack_from(buffer, offset)
            stop = offset + 4 + length
            if stop > end:
                break
            self.on_frame(self, msgpack.unpackb(buffer[offset + 4 : stop]))
            offset = stop
        del buffer[:offset]


async def _raw_server(address_q: Any, stop_q: Any) -> None:
    loop = asyncio.get_running_loop()

    def echo(protocol: _Framed, value: Any) -> None:
        protocol.send(value)

    server = await loop.create_server(lambda: _Framed(echo), "127.0.0.1", 0)
    address_q.put(server.sockets[0].getsockname()[1])
    await loop.run_in_executor(None, stop_q.get)
    server.close()


async def _raw_client(case: Case, port: int) -> list[Round]:
    loop = asyncio.get_running_loop()
    waiting: dict[int, asyncio.Future[Any]] = {}

    def reply(_protocol: _Framed, value: Any) -> None:
        call_id, result = value
        waiting.pop(call_id).set_result(result)

    _t, protocol = await loop.create_connection(
        lambda: _Framed(reply), "127.0.0.1", port
    )
    ids = iter(range(1 << 62))

    async def call(payload: bytes) -> Any:
        call_id = next(ids)
        future = waiting[call_id] = loop.create_future()
        protocol.send([call_id, payload])
        return await future

    rounds = await _async_rounds(case, call)
    assert protocol.transport is not None
    protocol.transport.close()
    return rounds


# -- Pyro5 -------------------------------------------------------------------


def _pyro_server(address_q: Any, stop_q: Any) -> None:
    import Pyro5.api

    @Pyro5.api.expose
    class Echo:
        def echo(self, payload: Any) -> Any:
            return payload

    daemon = Pyro5.api.Daemon(host="127.0.0.1")
    address_q.put(str(daemon.register(Echo, "echo")))
    stopping = threading.Event()
    threading.Thread(target=lambda: (stop_q.get(), stopping.set()), daemon=True).start()
    daemon.requestLoop(loopCondition=lambda: not stopping.is_set())
    daemon.close()


def _pyro_client(case: Case, uri: str) -> list[Round]:
    import Pyro5.api

    rounds = []
    proxies = [Pyro5.api.Proxy(uri) for _ in range(IN_FLIGHT)]
    for proxy in proxies:
        proxy._pyroBind()
    for _ in range(case.rounds + 1):
        times = []
        proxies[0]._pyroClaimOwnership()
        started = time.perf_counter()
        for _ in range(case.calls):
            t0 = time.perf_counter()
            proxies[0].echo(PAYLOAD)
            times.append(time.perf_counter() - t0)
        sequential = time.perf_counter() - started

        share = case.flight_calls // IN_FLIGHT

        failures: list[BaseException] = []
        threads = [
            threading.Thread(target=_pyro_work, args=(p, share, failures))
            for p in proxies
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        flight = time.perf_counter() - started
        if failures:
            raise failures[0]
        rounds.append(
            _round(
                Case(case.subject, case.calls, share * IN_FLIGHT, case.rounds),
                times,
                sequential,
                flight,
            )
        )
    for proxy in proxies:
        proxy._pyroClaimOwnership()
        proxy._pyroRelease()
    return rounds[1:]


def _pyro_work(proxy: Any, calls: int, failures: list[BaseException]) -> None:
    # A Pyro5 proxy belongs to one thread at a time.
    proxy._pyroClaimOwnership()
    try:
        for _ in range(calls):
            proxy.echo(PAYLOAD)
    except BaseException as exc:
        failures.append(exc)


# -- chaski ------------------------------------------------------------------


class _Echo:
    def echo(self, payload: Any) -> Any:
        return payload


async def _chaski_server(address_q: Any, stop_q: Any) -> None:
    from chaski_actors import Node, Settings
    from chaski_actors.real import RealRuntime
    from chaski_actors.remote import Remote

    # The defaults admit 16 running calls per peer; the case wants 64.
    settings = Settings(remote_max_calls=IN_FLIGHT, remote_max_calls_per_peer=IN_FLIGHT)
    async with Node(RealRuntime(), "server", settings=settings) as node:
        Remote(node).register("echo", _Echo(), expose=["echo"])
        address_q.put(node.address[1])
        await asyncio.get_running_loop().run_in_executor(None, stop_q.get)


async def _chaski_client(case: Case, port: int) -> list[Round]:
    from chaski_actors import Node, Settings
    from chaski_actors.real import RealRuntime
    from chaski_actors.remote import Remote

    # A caller keeps remote_max_calls_per_peer calls in flight and queues the
    # rest (16 by default): without this, "64 in flight" measured 16.
    settings = Settings(remote_max_calls_per_peer=IN_FLIGHT)
    async with Node(RealRuntime(), "client", settings=settings) as node:
        remote = Remote(node)
        await node.connect("127.0.0.1", port)
        proxy = await remote.proxy("server", "echo")
        return await _async_rounds(case, proxy.echo)


# -- the original Chaski -----------------------------------------------------


def echo(payload: Any = None) -> Any:
    """The original Chaski's service: it is looked up in this module by name.

    The argument is optional because the original first calls the method
    without arguments (see the module's essay).
    """
    return payload


_ORIGINAL_SERVICE = __name__


async def _original_node() -> Any:
    from chaski.remote import ChaskiRemote

    node = ChaskiRemote(ip="127.0.0.1", port=0, available=[_ORIGINAL_SERVICE])
    # Its constructor starts the server as a task; wait until it listens.
    while node.server is None:
        await asyncio.sleep(0.01)
    return node


def _original_server(address_q: Any, stop_q: Any) -> None:
    async def serve() -> None:
        node = await _original_node()
        address_q.put(node.port)
        await asyncio.get_running_loop().run_in_executor(None, stop_q.get)

    # Its connection readers swallow cancellation and retry forever, so
    # asyncio.run would never finish cleaning up: leave the loop open and exit.
    asyncio.new_event_loop().run_until_complete(serve())
    address_q.close()
    address_q.join_thread()
    os._exit(0)


def _original_client(case: Case, port: int, result_q: Any) -> None:
    async def call() -> list[Round]:
        node = await _original_node()
        await node.connect("127.0.0.1", port)
        # A connection counts once the handshake is over.
        while not node.edges:
            await asyncio.sleep(0.01)
        # Its proxy runs each request to completion on this loop, nested.
        proxy = node.proxy(_ORIGINAL_SERVICE)
        if proxy is None:
            raise RuntimeError(f"the server does not offer {_ORIGINAL_SERVICE}")
        rounds = []
        for _ in range(case.rounds + 1):
            times = []
            started = time.perf_counter()
            for _ in range(case.calls):
                t0 = time.perf_counter()
                result = proxy.echo(PAYLOAD)
                times.append(time.perf_counter() - t0)
            sequential = time.perf_counter() - started
            if result != PAYLOAD:
                raise RuntimeError(f"echo returned {result!r}")
            rounds.append(_round(case, times, sequential, float("nan")))
        return rounds[1:]

    result_q.put(asyncio.new_event_loop().run_until_complete(call()))
    result_q.close()
    result_q.join_thread()
    os._exit(0)
