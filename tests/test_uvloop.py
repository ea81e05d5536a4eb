"""The real backend on uvloop's event loop, which the runtime supports.

uvloop's transports are not asyncio's classes and schedule callbacks in
their own order, so what the rest of the suite shows on asyncio's loop is
shown again here on uvloop's: streams with back-pressure, datagrams,
mutual TLS, remote calls, and connections cut while messages flow.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pki import Pki

from chaski_actors import Node, Remote, Settings
from chaski_actors.real.harness import run_real
from chaski_actors.testing import eventually

uvloop = pytest.importorskip("uvloop")


class Counter:
    def __init__(self) -> None:
        self.value = 0

    def add(self, amount: int) -> int:
        self.value += amount
        return self.value


def test_messages_calls_and_pings_over_tls(pki: Pki) -> None:
    # A small send buffer makes the publisher wait for acknowledgements,
    # so back-pressure and the acknowledgement path both run.
    settings = Settings(send_buffer_frames=16, overflow="wait")
    count = 2000

    async def main(net: Any) -> tuple[list[int], list[int], int, str | None]:
        a = Node(net.runtime("a"), "a", settings=settings, tls=pki.tls("a"))
        b = Node(net.runtime("b"), "b", settings=settings, tls=pki.tls("b"))
        async with a, b:
            Remote(b).register("counter", Counter(), expose=["add"])
            await b.subscribe("t")
            await a.connect(*b.address)
            got: list[int] = []

            async def collect() -> None:
                while len(got) < count:
                    got.append((await b.receive()).data)

            collector = asyncio.create_task(collect())
            for i in range(count):
                await a.publish("t", i)
            await collector
            counter = await Remote(a).proxy("b", "counter")
            totals = [await counter.add(n) for n in (1, 2, 3)]
            rtts = await a.ping("b", 3) + await a.ping("b", 3, via="datagram")
            await eventually(a.runtime, lambda: "a" in b.links)
            return got, totals, len(rtts), b.links["a"].stream.peer_identity

    got, totals, pings, identity = run_real(
        main, limit=30.0, loop_factory=uvloop.new_event_loop
    )
    assert got == list(range(count))  # all of them, once, in order
    assert totals == [1, 3, 6]
    assert pings == 6
    assert identity == "a"
