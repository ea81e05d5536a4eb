"""Real sockets: live TCP connections cut by a proxy while messages flow."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from chaski_actors import Node, Settings
from chaski_actors.real.harness import run_real
from chaski_actors.testing import eventually


class CuttingProxy:
    """A TCP relay on 127.0.0.1 that can reset every connection it carries."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.cuts = 0
        self.connections = 0
        self._live: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._live += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.transport.abort()

    def cut(self) -> None:
        """Reset every live connection, as a crashed middlebox would."""
        live, self._live = self._live, []
        for writer in live:
            writer.transport.abort()
        self.cuts += 1

    async def aclose(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pumps):
            task.cancel()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_cut_connections_lose_and_duplicate_nothing(loop: str) -> None:
    loop_factory = None
    if loop == "uvloop":
        loop_factory = pytest.importorskip("uvloop").new_event_loop
    settings = Settings(
        reconnect_initial_s=0.01, reconnect_max_s=0.05, send_buffer_frames=4096
    )
    count = 3000

    async def main(net: Any) -> tuple[list[int], int, int]:
        a = Node(net.runtime("a"), "a", settings=settings)
        b = Node(net.runtime("b"), "b", settings=settings)
        await a.start()
        await b.start()
        await b.subscribe("t")
        proxy = CuttingProxy(b.address)
        await a.connect(*await proxy.start())

        async def cut_repeatedly() -> None:
            for _ in range(8):
                await asyncio.sleep(0.02)
                proxy.cut()

        cutter = asyncio.create_task(cut_repeatedly())
        got: list[int] = []

        async def collect() -> None:
            while len(got) < count:
                got.append((await b.receive()).data)

        collector = asyncio.create_task(collect())
        for i in range(count):
            await a.publish("t", i)
            if i % 50 == 0:
                await asyncio.sleep(0.002)  # let the cuts land mid-stream
        await cutter
        await collector
        await eventually(a.runtime, lambda: a.links["b"].session.unacked == 0)
        reconnections = a.statistics().reconnections
        await proxy.aclose()
        await a.stop()
        await b.stop()
        return got, reconnections, proxy.cuts

    got, reconnections, cuts = run_real(main, limit=30.0, loop_factory=loop_factory)
    assert got == list(range(count))  # no loss, no duplicate, in order
    assert cuts >= 8
    assert reconnections >= 3
