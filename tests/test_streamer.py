"""Streamers on both backends: iteration, flow control, drops, datagram topics."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any

import networkx as nx
import pytest

from chaski_actors import ConfigError, Node
from chaski_actors.streamer import Streams
from chaski_actors.testing import eventually
from conftest import Backend

A_B = 0.010  # one-way latency a-b in the test topology


async def pair(net: Any, stack: AsyncExitStack) -> tuple[Streams, Streams]:
    a = await stack.enter_async_context(Node(net.runtime("a"), "a"))
    b = await stack.enter_async_context(Node(net.runtime("b"), "b"))
    await a.connect(*b.address)
    await eventually(a.runtime, lambda: "a" in b.links)
    return Streams(a), Streams(b)


async def subscribed(producer: Streams, *topics: str) -> None:
    link = producer.node.links["b"]
    await eventually(producer.node.runtime, lambda: set(topics) <= link.topics)


def test_async_for_by_topic(backend: Backend) -> None:
    async def main(net: Any) -> tuple[list[tuple[str, int]], float, Any, str]:
        async with AsyncExitStack() as stack:
            producer, consumer = await pair(net, stack)
            got: list[tuple[str, int]] = []
            async with consumer.streamer("x", "y") as stream:
                await subscribed(producer, "x", "y")
                start = producer.node.runtime.now()
                for i in range(6):
                    await producer.publish("xyz"[i % 3], i)
                async for message in stream:
                    got.append((message.topic, message.data))
                    if message.data == 4:
                        break
                took = message.received_at - start
                text = repr(stream)
            # Leaving the block unsubscribes: the producer hears of it.
            await eventually(
                producer.node.runtime, lambda: not producer.node.links["b"].topics
            )
            return got, took, stream.statistics(), text

    got, took, stats, text = backend.run(main)
    assert got == [("x", 0), ("y", 1), ("x", 3), ("y", 4)]
    assert stats.state == "closed" and stats.received == 4 and stats.left_over == 0
    assert text == "<Streamer x,y open queued=0/256 left_over=0>"
    if backend.simulated:
        assert took == pytest.approx(A_B, abs=1e-12)


def test_receive_batch_takes_the_waiting_messages(backend: Backend) -> None:
    async def main(net: Any) -> list[list[int]]:
        async with AsyncExitStack() as stack:
            producer, consumer = await pair(net, stack)
            async with consumer.streamer("x") as stream:
                await subscribed(producer, "x")
                for i in range(5):
                    await producer.publish("x", i)
                await eventually(net.runtime("b"), lambda: len(stream.queue) == 5)
                first = [m.data for m in await stream.receive_batch(2)]
                rest = [m.data for m in await stream.receive_batch()]
            return [first, rest]

    assert backend.run(main) == [[0, 1], [2, 3, 4]]


def test_what_stays_queued_is_kept_and_logged(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    async def main(net: Any) -> tuple[list[int], Any, str]:
        async with AsyncExitStack() as stack:
            producer, consumer = await pair(net, stack)
            streamer = consumer.streamer("t")
            async with streamer as stream:
                await subscribed(producer, "t")
                for i in range(5):
                    await producer.publish("t", i)
                await eventually(producer.node.runtime, lambda: len(stream.queue) == 5)
                assert (await stream.receive()).data == 0
            # Closed and drained: the iterator ends at once.
            assert [m async for m in streamer] == []
            return (
                [m.data for m in streamer.left_over],
                streamer.statistics(),
                repr(streamer),
            )

    with caplog.at_level(logging.INFO, logger="chaski.node"):
        left, stats, text = backend.run(main)
    assert left == [1, 2, 3, 4] and stats.left_over == 4
    assert text == "<Streamer t closed queued=0/256 left_over=4>"
    assert "closed with 4 unread messages kept in left_over" in caplog.text


def test_a_slow_consumer_makes_the_producer_wait(backend: Backend) -> None:
    # Far more than the bound: 4000 messages of 16 KiB (64 MiB) for a queue
    # of 16. With flow control, the producer stalls once the queue and the
    # transport's buffers are full; without it, it would finish at once.
    count, size, bound = 4000, 16 * 1024, 16

    async def main(net: Any) -> tuple[int, int, list[int], Any]:
        async with AsyncExitStack() as stack:
            producer, consumer = await pair(net, stack)
            runtime = producer.node.runtime
            published = 0

            async def produce() -> None:
                nonlocal published
                for i in range(count):
                    await producer.publish("t", [i, b"x" * size])
                    published += 1

            async with consumer.streamer("t", maxsize=bound) as stream:
                await subscribed(producer, "t")
                task = runtime.spawn(produce(), name="producer")
                await eventually(runtime, stream.queue.full)
                # Give an unchecked producer the time to run away (this only
                # makes the test stricter; a fast machine cannot fail it).
                await runtime.sleep(0.2)
                stalled_at = published
                queued = len(stream.queue)
                order = [(await stream.receive()).data[0] for _ in range(count)]
                await task
                return stalled_at, queued, order, stream.statistics()

    stalled_at, queued, order, stats = backend.run(main)
    assert queued == bound
    assert order == list(range(count))
    assert stats.queue.dropped == 0 and stats.queue.maxsize == bound
    # Memory held back is bounded by the queue plus transport windows: on
    # sim, two 256 KiB windows and the reader's read-ahead; on real, the
    # kernel's socket buffers (a few MiB on loopback).
    in_flight_bytes = stalled_at * size
    if backend.simulated:
        # Measured: 48 messages (768 KiB).
        assert in_flight_bytes <= 2 * 1024 * 1024, stalled_at
    else:
        # Measured: about 650 messages (10 MiB) on Linux loopback.
        assert in_flight_bytes <= 32 * 1024 * 1024, stalled_at


@pytest.mark.parametrize("overflow", ["drop-newest", "drop-oldest"])
def test_a_drop_policy_never_makes_the_producer_wait(
    backend: Backend, overflow: Any
) -> None:
    count, bound = 1000, 8

    async def main(net: Any) -> tuple[list[int], Any]:
        async with AsyncExitStack() as stack:
            producer, consumer = await pair(net, stack)
            async with consumer.streamer("t", maxsize=bound, overflow=overflow) as s:
                await subscribed(producer, "t")
                for i in range(count):
                    await producer.publish("t", i)
                await eventually(
                    producer.node.runtime, lambda: s.statistics().received == count
                )
                return [(await s.receive()).data for _ in range(bound)], s.statistics()

    kept, stats = backend.run(main)
    expected = (
        range(bound) if overflow == "drop-newest" else range(count - bound, count)
    )
    assert kept == list(expected)
    assert stats.queue.dropped == count - bound


def test_one_streamer_per_topic(backend: Backend) -> None:
    async def main(net: Any) -> None:
        async with AsyncExitStack() as stack:
            _producer, consumer = await pair(net, stack)
            async with consumer.streamer("t"):
                with pytest.raises(ConfigError, match="already have an open streamer"):
                    async with consumer.streamer("t", "u"):
                        pass
            with pytest.raises(ConfigError, match="at least one topic"):
                consumer.streamer()
            async with consumer.streamer("t"):  # free again
                pass

    backend.run(main)


def lossy_graph() -> nx.Graph[str]:
    graph: nx.Graph[str] = nx.Graph()
    graph.add_edge("a", "b", latency=A_B, loss=0.3)
    return graph


def test_unreliable_topics_travel_as_datagrams(backend: Backend) -> None:
    count = 200

    async def main(net: Any) -> tuple[list[int], Any, Any]:
        async with AsyncExitStack() as stack:
            producer, consumer = await pair(net, stack)
            producer.declare_unreliable("telemetry")
            runtime = producer.node.runtime
            async with consumer.streamer("telemetry", maxsize=count) as stream:
                await subscribed(producer, "telemetry")
                for i in range(count):
                    await producer.publish("telemetry", i)
                    await runtime.sleep(0.001)
                if backend.simulated:
                    await runtime.sleep(1.0)  # virtual: everything has landed
                else:
                    await eventually(runtime, lambda: len(stream.queue) == count)
                with pytest.raises(ConfigError, match="datagram_max_size"):
                    await producer.publish("telemetry", b"x" * 5000)
                got = [m.data for m in stream.queue.drain()]
            assert repr(producer) == "<Streams a streamers=[] unreliable=['telemetry']>"
            return got, producer.statistics(), consumer.statistics()

    got, sent, heard = backend.run(main, graph=lossy_graph())
    assert sent.datagrams_sent == count and sent.datagrams_unsent == 1
    assert heard.datagrams_received == len(got)
    if backend.simulated:
        # A lossy link loses some; the gaps are counted, not hidden.
        assert 0.5 * count < len(got) < 0.9 * count
        assert heard.datagrams_missing == max(got) + 1 - len(got)
    else:
        assert sorted(got) == list(range(count))
        assert heard.datagrams_missing == 0
