"""When links acknowledge: late when nobody waits, at once when someone may."""

from __future__ import annotations

from typing import Any

import pytest

from chaski_actors import Node, Settings
from chaski_actors.protocol import HELLO, LinkProtocol
from chaski_actors.pytest_plugin import default_graph
from chaski_actors.sim.harness import run_sim
from chaski_actors.testing import eventually
from conftest import Backend

A_B = 0.010  # one-way latency a-b in the test topology

# No heartbeats within these tests, so that every bare acknowledgement seen
# is one the ack rules sent.
QUIET = Settings(keepalive_interval_s=30.0, dead_after_s=100.0)


async def _linked(
    net: Any, a_settings: Settings, b_settings: Settings
) -> tuple[Node, Node]:
    a = Node(net.runtime("a"), "a", settings=a_settings)
    b = Node(net.runtime("b"), "b", settings=b_settings)
    await a.start()
    await b.start()
    await a.subscribe("to-a")
    await b.subscribe("to-b")
    await a.connect(*b.address)
    await eventually(
        a.runtime, lambda: "a" in b.links and "to-a" in b.links["a"].topics
    )
    # Let the setup's own frames be acknowledged.
    await a.runtime.sleep(2 * QUIET.ack_delay_s)
    return a, b


def test_a_lone_frame_is_acknowledged_after_the_delay(backend: Backend) -> None:
    """One message, no traffic back: one bare ACK, ack_delay_s after it arrived."""
    delay = QUIET.ack_delay_s

    async def main(net: Any) -> tuple[int, int, int]:
        a, b = await _linked(net, QUIET, QUIET)
        a_link, b_link = a.links["b"], b.links["a"]
        sent_before = b_link.frames_out
        await a.publish("to-b", "hello")
        await b.receive()
        if backend.kind == "sim":
            # Arrives after A_B, acknowledged delay later, heard A_B after that.
            await a.runtime.sleep(A_B + delay - 0.001)
            before = a_link.session.unacked
            await a.runtime.sleep(0.002)
            after = a_link.session.unacked
        else:
            before = 1
            await eventually(a.runtime, lambda: a_link.session.unacked == 0)
            after = 0
        acks = b_link.frames_out - sent_before
        await a.stop()
        await b.stop()
        return before, after, acks

    before, after, acks = backend.run(main)
    assert (before, after) == (1, 0)
    assert acks == 1


def test_traffic_both_ways_carries_the_acknowledgements() -> None:
    """Two nodes publishing to each other at 10 Hz send no bare ACK between.

    Each message is acknowledged by the next one going the other way, 50 ms
    later, well within ack_delay_s; only the very last is left for a bare
    ACK.
    """

    async def main(net: Any) -> tuple[int, int, int, int]:
        a, b = await _linked(net, QUIET, QUIET)
        a_out, b_out = a.links["b"].frames_out, b.links["a"].frames_out

        async def publish(node: Node, topic: str, phase: float) -> None:
            await node.runtime.sleep(phase)
            for i in range(20):
                await node.publish(topic, i)
                await node.runtime.sleep(0.1)

        tasks = [
            a.runtime.spawn(publish(a, "to-b", 0.0), name="pa"),
            b.runtime.spawn(publish(b, "to-a", 0.05), name="pb"),
        ]
        for task in tasks:
            await task
        await a.runtime.sleep(1.0)
        got = (a.statistics().delivered, b.statistics().delivered)
        counts = (a.links["b"].frames_out - a_out, b.links["a"].frames_out - b_out)
        await a.stop()
        await b.stop()
        return (*got, *counts)

    got_a, got_b, frames_a, frames_b = run_sim(main, default_graph())
    assert (got_a, got_b) == (20, 20)
    # 20 numbered frames each. a's last message is acknowledged by b's last,
    # 50 ms later; b's last, with nothing going back, by a bare ACK.
    assert (frames_a, frames_b) == (21, 20)


def test_a_small_send_buffer_on_the_peer_is_acknowledged_at_once(
    backend: Backend,
) -> None:
    """A sender under 'wait' with a small buffer does not wait on the ack timer.

    Its hello tells the receiver how small its buffer is, and the receiver
    acknowledges when a quarter of it has arrived, not after ack_delay_s
    (an hour here).
    """
    slow_acks = QUIET.replace(ack_delay_s=3600.0)
    small = slow_acks.replace(send_buffer_frames=4, overflow="wait")

    async def main(net: Any) -> tuple[list[int], float]:
        a, b = await _linked(net, small, slow_acks)
        started = a.runtime.now()
        for i in range(40):
            await a.publish("to-b", i)
        got = [(await b.receive()).data for _ in range(40)]
        took = a.runtime.now() - started
        await a.stop()
        await b.stop()
        return got, took

    got, took = backend.run(main)
    assert got == list(range(40))
    # Forty messages, four in flight at most, 20 ms per round trip: about
    # 0.2 s in the simulation. Stalling on the timer would take hours.
    assert took < 60.0
    if backend.kind == "sim":
        assert took < 0.5


@pytest.mark.parametrize("buffer", [-1, "many", True, 2.5])
def test_a_hello_with_a_bad_buffer_is_refused(backend: Backend, buffer: Any) -> None:
    async def main(net: Any) -> tuple[int, list[str]]:
        async with Node(net.runtime("a"), "a") as a:
            raw = await net.runtime("c").connect(*a.address)
            hello = LinkProtocol().encode(
                HELLO, "x", "id", "x", 1, [], {"buffer": buffer}
            )
            await raw.send(hello)
            await eventually(a.runtime, lambda: a.statistics().protocol_errors == 1)
            return a.statistics().protocol_errors, sorted(a.links)

    assert backend.run(main) == (1, [])
