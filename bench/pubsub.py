"""Pub/sub throughput over loopback: chaski, raw asyncio and pyzmq.

One publisher process sends to 1 or more subscriber processes. Each case runs
in rounds over the same connections: a warm-up round, then the measured
ones. In a round the publisher sends ``messages`` messages as fast as it can;
every subscriber notes the clock when it has received the round's last one.
The round's rate is ``messages`` over the time from the first send to the
last subscriber's last receipt, so a rate counts each message once however
many subscribers it reaches. ``time.perf_counter`` is the system-wide
monotonic clock on Linux, so stamps from different processes compare.

Before the first round the publisher sends empty "warm" messages until every
subscriber has seen one: pyzmq drops what it publishes before a
subscription has arrived, and the same handshake is used for every subject
so that they all start alike.

The subjects:

``chaski``   a :class:`~chaski_actors.Node` per process on the real backend,
             ``publish`` to a topic, ``receive_batch`` from the inbox (what
             has arrived, as a list: the raw subscriber below, too, counts
             what each read brought without an ``await`` per message);
``asyncio``  the practical ceiling of pure-Python asyncio: length-prefixed
             msgpack frames ``[topic, payload]``, many frames per write, frames
             parsed out of large reads;
``pyzmq``    PUB/SUB with topic and payload in one frame, no high-water mark
             (so nothing is dropped and the count is exact);
``chaski 0.1a5``  the original Chaski (``chaski-confluent``), the baseline the
             project's performance targets are set against: a
             ``ChaskiStreamer`` per process, ``push`` to a topic, messages read
             from its ``message_stream``. Its publisher writes every message to
             every connection and each subscriber filters by topic, so fan-out
             works as it would in its users' programs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import struct
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import msgpack

from ._procs import Workers, start_worker, use_uvloop
from ._stats import Figure

__all__ = ["ORIGINAL", "Case", "available", "run_case"]

TOPIC = "t"
_T = TypeVar("_T")
# The subject name of the original Chaski, as its release is named on PyPI.
ORIGINAL = "chaski 0.1a5"
_HEADER = struct.Struct(">I")
# How many frames the raw publisher joins into one write: enough to make the
# per-write cost vanish, few enough that the first bytes leave early.
_BATCH = 256


@dataclass(frozen=True, slots=True)
class Case:
    subject: str
    size: int
    subscribers: int
    messages: int
    rounds: int  # measured rounds, after one warm-up round
    uvloop: bool = False
    deadline_s: float = 120.0

    @property
    def name(self) -> str:
        return f"{self.size} B, 1->{self.subscribers}"


def run_case(case: Case) -> list[Figure]:
    """Run one case in fresh processes; figures for msg/s and MB/s."""
    with Workers(case.deadline_s) as workers:
        ports_q, done_q, result_q = workers.queue(), workers.queue(), workers.queue()
        for index in range(case.subscribers):
            workers.start(_subscriber, case, index, ports_q, done_q)
        ports = dict(
            workers.get(ports_q, "subscriber port") for _ in range(case.subscribers)
        )
        workers.start(
            _publisher, case, [ports[i] for i in sorted(ports)], done_q, result_q
        )
        rates: list[float] = workers.get(result_q, "publisher result")

    subject = case.subject + ("+uvloop" if case.uvloop else "")
    return [
        Figure("pubsub", case.name, subject, "msg/s", "msg/s", tuple(rates)),
        Figure(
            "pubsub",
            case.name,
            subject,
            "MB/s",
            "MB/s (payload)",
            tuple(r * case.size / 1e6 for r in rates),
        ),
    ]


# -- the publisher's side, shared by all subjects ---------------------------


class _Rounds:
    """The publisher's bookkeeping: warm-up handshake, then timed rounds."""

    def __init__(self, case: Case, done_q: Any) -> None:
        self.case = case
        self.done_q = done_q
        self.payload = b"\x00" * case.size

    def all_warm(self, warm: set[int]) -> bool:
        while True:
            try:
                index, _round, _stamp = self.done_q.get_nowait()
            except Exception:  # queue.Empty; the module is not worth importing
                return len(warm) == self.case.subscribers
            warm.add(index)

    def round_end(self) -> float:
        """Wait (blocking) for every subscriber's end-of-round stamp."""
        stamps = [
            self.done_q.get(timeout=self.case.deadline_s)[2]
            for _ in range(self.case.subscribers)
        ]
        return max(stamps)

    def rate(self, started: float, ended: float) -> float:
        return self.case.messages / (ended - started)


def _publisher(case: Case, ports: list[int], done_q: Any, result_q: Any) -> None:
    start_worker(f"{case.subject}-publisher")
    use_uvloop(case.uvloop)
    if case.subject == "pyzmq":
        result_q.put(_zmq_publisher(case, ports, done_q))
    elif case.subject == "asyncio":
        result_q.put(asyncio.run(_raw_publisher(case, ports, done_q)))
    elif case.subject == ORIGINAL:
        result_q.put(_run_original(_original_publisher(case, ports, done_q)))
        _leave(result_q)
    else:
        result_q.put(asyncio.run(_chaski_publisher(case, ports, done_q)))


def _subscriber(case: Case, index: int, ports_q: Any, done_q: Any) -> None:
    start_worker(f"{case.subject}-subscriber")
    use_uvloop(case.uvloop)
    counter = _Counter(case, index, done_q)
    if case.subject == "pyzmq":
        _zmq_subscriber(counter, ports_q)
    elif case.subject == "asyncio":
        asyncio.run(_raw_subscriber(counter, ports_q))
    elif case.subject == ORIGINAL:
        _run_original(_original_subscriber(counter, ports_q))
        _leave(done_q)
    else:
        asyncio.run(_chaski_subscriber(counter, ports_q))


class _Counter:
    """The subscriber's bookkeeping: says when it is warm and when a round ends."""

    def __init__(self, case: Case, index: int, done_q: Any) -> None:
        self.index = index
        self.done_q = done_q
        self.per_round = case.messages
        self.rounds = case.rounds + 1
        self.count = 0
        self.round = 0
        self.warm = False

    @property
    def finished(self) -> bool:
        return self.round >= self.rounds

    def got(self, size: int) -> None:
        if size == 0:
            if not self.warm:
                self.warm = True
                self.done_q.put((self.index, -1, 0.0))
            return
        self.count += 1
        if self.count == self.per_round:
            self.done_q.put((self.index, self.round, time.perf_counter()))
            self.count = 0
            self.round += 1


# -- chaski ------------------------------------------------------------------


async def _chaski_publisher(case: Case, ports: list[int], done_q: Any) -> list[float]:
    from chaski_actors import Node
    from chaski_actors.real import RealRuntime

    rounds = _Rounds(case, done_q)
    loop = asyncio.get_running_loop()
    async with Node(RealRuntime(), "pub") as node:
        for port in ports:
            await node.connect("127.0.0.1", port)
        warm: set[int] = set()
        while not rounds.all_warm(warm):
            await node.publish(TOPIC, b"")
            await asyncio.sleep(0.002)

        rates = []
        for _ in range(case.rounds + 1):
            started = time.perf_counter()
            for _ in range(case.messages):
                await node.publish(TOPIC, rounds.payload)
            ended = await loop.run_in_executor(None, rounds.round_end)
            rates.append(rounds.rate(started, ended))
    return rates[1:]


async def _chaski_subscriber(counter: _Counter, ports_q: Any) -> None:
    from chaski_actors import Node
    from chaski_actors.real import RealRuntime

    async with Node(RealRuntime(), f"sub{counter.index}") as node:
        await node.subscribe(TOPIC)
        ports_q.put((counter.index, node.address[1]))
        while not counter.finished:
            for message in await node.receive_batch():
                counter.got(len(message.data))


# -- raw asyncio -------------------------------------------------------------


class _RawProtocol(asyncio.Protocol):
    """Write-side flow control, and (for subscribers) frame parsing."""

    def __init__(self, counter: _Counter | None = None) -> None:
        self.counter = counter
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.resumed: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not a subclass of asyncio.Transport under uvloop.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport

    def pause_writing(self) -> None:
        self.resumed = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)
        self.resumed = None

    def data_received(self, data: bytes) -> None:
        assert self.counter is not None
        buffer = self.buffer
        buffer += data
        offset, end = 0, len(buffer)
        with memoryview(buffer) as view:
            while end - offset >= 4:
                (length,) = _HEADER.unpack_from(buffer, offset)
                stop = offset + 4 + length
                if stop > end:
                    break
                _topic, payload = msgpack.unpackb(view[offset + 4 : stop])
                self.counter.got(len(payload))
                offset = stop
        del buffer[:offset]


def _raw_frame(payload: bytes) -> bytes:
    body = msgpack.packb([TOPIC, payload])
    return _HEADER.pack(len(body)) + body


async def _raw_publisher(case: Case, ports: list[int], done_q: Any) -> list[float]:
    loop = asyncio.get_running_loop()
    peers = []
    for port in ports:
        _t, protocol = await loop.create_connection(_RawProtocol, "127.0.0.1", port)
        peers.append(protocol)

    async def write(frames: list[bytes]) -> None:
        data = b"".join(frames)
        for peer in peers:
            assert peer.transport is not None
            peer.transport.write(data)
        for peer in peers:
            if peer.resumed is not None:
                await peer.resumed

    rounds = _Rounds(case, done_q)
    warm: set[int] = set()
    while not rounds.all_warm(warm):
        await write([_raw_frame(b"")])
        await asyncio.sleep(0.002)

    rates = []
    for _ in range(case.rounds + 1):
        started = time.perf_counter()
        batch: list[bytes] = []
        for _ in range(case.messages):
            # Encoded per message, as a real application would.
            batch.append(_raw_frame(rounds.payload))
            if len(batch) >= _BATCH:
                await write(batch)
                batch = []
        if batch:
            await write(batch)
        ended = await loop.run_in_executor(None, rounds.round_end)
        rates.append(rounds.rate(started, ended))
    for peer in peers:
        assert peer.transport is not None
        peer.transport.close()
    return rates[1:]


async def _raw_subscriber(counter: _Counter, ports_q: Any) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _RawProtocol(counter), "127.0.0.1", 0)
    ports_q.put((counter.index, server.sockets[0].getsockname()[1]))
    while not counter.finished:
        await asyncio.sleep(0.005)
    server.close()


# -- pyzmq -------------------------------------------------------------------


def _zmq_publisher(case: Case, ports: list[int], done_q: Any) -> list[float]:
    import zmq

    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    socket.setsockopt(zmq.SNDHWM, 0)
    for port in ports:
        socket.connect(f"tcp://127.0.0.1:{port}")
    topic = TOPIC.encode()

    rounds = _Rounds(case, done_q)
    warm: set[int] = set()
    while not rounds.all_warm(warm):
        socket.send(topic)
        time.sleep(0.002)

    rates = []
    for _ in range(case.rounds + 1):
        started = time.perf_counter()
        for _ in range(case.messages):
            socket.send(topic + rounds.payload)
        ended = rounds.round_end()
        rates.append(rounds.rate(started, ended))
    socket.close(linger=0)
    context.term()
    return rates[1:]


def _zmq_subscriber(counter: _Counter, ports_q: Any) -> None:
    import zmq

    context = zmq.Context()
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.RCVHWM, 0)
    socket.setsockopt(zmq.SUBSCRIBE, TOPIC.encode())
    socket.bind("tcp://127.0.0.1:*")
    endpoint = socket.getsockopt(zmq.LAST_ENDPOINT).decode()
    ports_q.put((counter.index, int(endpoint.rsplit(":", 1)[1])))
    skip = len(TOPIC)
    while not counter.finished:
        counter.got(len(socket.recv()) - skip)
    socket.close(linger=0)
    context.term()


# -- the original Chaski -----------------------------------------------------

# Room for the 1->8 case: the original refuses connections beyond 5 by default.
_ORIGINAL_CONNECTIONS = 16


async def _original_node(name: str, subscriptions: list[str]) -> Any:
    """A running ``ChaskiStreamer`` on a free loopback port."""
    from chaski.streamer import ChaskiStreamer

    node = ChaskiStreamer(
        ip="127.0.0.1",
        port=0,
        name=name,
        subscriptions=subscriptions,
        max_connections=_ORIGINAL_CONNECTIONS,
    )
    # Its constructor starts the server as a task; wait until it listens.
    while node.server is None:
        await asyncio.sleep(0.01)
    return node


def _run_original(work: Coroutine[Any, Any, _T]) -> _T:
    """Run ``work`` on a loop that is never closed: see :func:`_leave`."""
    return asyncio.new_event_loop().run_until_complete(work)


def _leave(*queues: Any) -> None:
    """End an original Chaski's worker once ``queues`` have been flushed.

    Its connection readers catch every exception, cancellation included, and
    retry forever, so ``asyncio.run`` would wait on them at the end for good.
    """
    for q in queues:
        q.close()
        q.join_thread()
    os._exit(0)


async def _original_stop(node: Any) -> None:
    # Its stop can wait on peers that are gone; the process ends regardless.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(node.stop(), timeout=2.0)


async def _original_publisher(case: Case, ports: list[int], done_q: Any) -> list[float]:
    rounds = _Rounds(case, done_q)
    loop = asyncio.get_running_loop()
    node = await _original_node("pub", [])
    for port in ports:
        await node.connect("127.0.0.1", port)
    # A connection counts once the handshake is over; pushes go nowhere before.
    while len(node.edges) < len(ports):
        await asyncio.sleep(0.01)
    warm: set[int] = set()
    while not rounds.all_warm(warm):
        await node.push(TOPIC, b"")
        await asyncio.sleep(0.002)

    rates = []
    for _ in range(case.rounds + 1):
        started = time.perf_counter()
        for _ in range(case.messages):
            await node.push(TOPIC, rounds.payload)
        ended = await loop.run_in_executor(None, rounds.round_end)
        rates.append(rounds.rate(started, ended))
    await _original_stop(node)
    return rates[1:]


async def _original_subscriber(counter: _Counter, ports_q: Any) -> None:
    node = await _original_node(f"sub{counter.index}", [TOPIC])
    ports_q.put((counter.index, node.port))
    async for message in node.message_stream():
        counter.got(len(message.data))
        if counter.finished:
            break
    await _original_stop(node)


def available(subject: str) -> str | None:
    """Why ``subject`` cannot run here, or None if it can."""
    modules: dict[str, str] = {
        "pyzmq": "zmq",
        "uvloop": "uvloop",
        ORIGINAL: "chaski.streamer",
    }
    module = modules.get(subject)
    if module is None:
        return None
    # Looked up, not imported: the original's modules patch asyncio when
    # imported, which must happen only in the worker processes that run it.
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:
        found = False
    if not found:
        package = "chaski-confluent==0.1a5" if subject == ORIGINAL else subject
        return f"{subject} is not installed (pip install '.[bench]' for {package})"
    return None
