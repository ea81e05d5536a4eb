"""Links that survive: sessions, keep-alive, reconnection, on both backends."""

from __future__ import annotations

from typing import Any

import networkx as nx
import pytest

from chaski_actors import Node, Settings
from chaski_actors.testing import eventually
from conftest import Backend

# No jitter, so that simulated reconnections happen at exact times.
STEADY = Settings(reconnect_jitter=0.0)


async def _pair(net: Any, settings: Settings = STEADY) -> tuple[Node, Node]:
    a = Node(net.runtime("a"), "a", settings=settings)
    b = Node(net.runtime("b"), "b", settings=settings)
    await a.start()
    await b.start()
    await b.subscribe("t")
    await a.connect(*b.address)
    await eventually(a.runtime, lambda: "a" in b.links)
    return a, b


def test_messages_survive_repeated_resets(backend: Backend) -> None:
    """Connections reset under a stream of publishes: once each, in order."""

    async def main(net: Any) -> tuple[list[int], int, int]:
        a, b = await _pair(net)
        got: list[int] = []

        async def cut_now_and_then() -> None:
            for _ in range(5):
                await a.runtime.sleep(0.03)
                stream = b.links["a"].stream
                if stream is not None:
                    stream.abort()

        cutter = a.runtime.spawn(cut_now_and_then(), name="cutter")
        for i in range(300):
            await a.publish("t", i)
            if i % 10 == 0:
                await a.runtime.sleep(0.001)
        while len(got) < 300:
            got.append((await b.receive()).data)
        await cutter
        await eventually(a.runtime, lambda: a.links["b"].session.unacked == 0)
        stats, b_stats = a.statistics(), b.statistics()
        await a.stop()
        await b.stop()
        return got, stats.reconnections, b_stats.per_link[0].duplicates

    got, reconnections, _duplicates = backend.run(main)
    assert got == list(range(300))
    assert reconnections >= 1


def test_a_partition_is_detected_by_silence_and_healed_without_loss() -> None:
    settings = STEADY.replace(keepalive_interval_s=0.5, dead_after_s=2.0)

    async def main(net: Any) -> tuple[float, float, list[int], Any]:
        a, b = await _pair(net, settings)
        await a.runtime.sleep(3.0)  # idle: only heartbeats flow
        cut_at = net.now()
        net.set_link("a", "b", up=False)
        for i in range(5):
            await a.publish("t", i)  # into a stalled stream, then the buffer
        await eventually(
            a.runtime, lambda: a.statistics().peers_declared_dead == 1, timeout=10
        )
        detected = net.now() - cut_at
        net.set_link("a", "b", up=True)
        healed_at = net.now()
        got = [(await b.receive()).data for _ in range(5)]
        resumed = net.now() - healed_at
        stats = a.statistics()
        await a.stop()
        await b.stop()
        return detected, resumed, got, stats

    graph: nx.Graph[str] = nx.Graph()
    graph.add_edge("a", "b", latency=0.010)
    detected, resumed, got, stats = Backend("sim").run(main, graph=graph)
    # The last heartbeat was heard at most one interval before the cut.
    assert 2.0 - 0.5 <= detected <= 2.0 + 1e-9
    assert got == [0, 1, 2, 3, 4]
    assert stats.reconnections == 1
    # The first reconnection attempt comes reconnect_initial_s after the
    # verdict; what remains is a connect and a handshake round trip, plus
    # the wait for the partition to be healed.
    assert resumed < 0.1 + 0.1


def test_drop_oldest_keeps_the_newest_and_counts_the_rest() -> None:
    settings = STEADY.replace(
        keepalive_interval_s=0.5,
        dead_after_s=1.0,
        send_buffer_frames=4,
        overflow="drop-oldest",
    )

    async def main(net: Any) -> tuple[list[int], Any, Any]:
        a, b = await _pair(net, settings)
        net.set_link("a", "b", up=False)
        for i in range(10):
            await a.publish("t", i)
        stats_while_cut = a.statistics()
        await a.runtime.sleep(1.5)
        net.set_link("a", "b", up=True)
        got = [(await b.receive()).data for _ in range(4)]
        await a.runtime.sleep(0.5)
        return got, stats_while_cut, b.statistics()

    graph: nx.Graph[str] = nx.Graph()
    graph.add_edge("a", "b", latency=0.010)
    got, a_stats, b_stats = Backend("sim").run(main, graph=graph)
    assert got == [6, 7, 8, 9]
    assert a_stats.send_buffer_dropped == 6
    assert b_stats.per_link[0].skipped == 6
    assert b_stats.inbox.size == 0


def test_wait_holds_the_publisher_until_the_link_is_back() -> None:
    settings = STEADY.replace(
        keepalive_interval_s=0.5, dead_after_s=1.0, send_buffer_frames=2
    )

    async def main(net: Any) -> tuple[float, list[int]]:
        a, b = await _pair(net, settings)
        net.set_link("a", "b", up=False)
        start = net.now()

        def heal() -> None:
            net.set_link("a", "b", up=True)

        a.runtime.call_later(3.0, heal)
        for i in range(3):
            await a.publish("t", i)  # the third waits for an acknowledgement
        waited = net.now() - start
        got = [(await b.receive()).data for _ in range(3)]
        return waited, got

    graph: nx.Graph[str] = nx.Graph()
    graph.add_edge("a", "b", latency=0.010)
    waited, got = Backend("sim").run(main, graph=graph)
    assert got == [0, 1, 2]
    assert waited > 3.0


def test_a_restarted_peer_gets_what_was_unacknowledged() -> None:
    settings = STEADY.replace(keepalive_interval_s=0.5, dead_after_s=1.0)

    async def main(net: Any) -> tuple[list[int], int]:
        a, b = await _pair(net, settings)
        port = b.address[1]
        net.crash("b")
        for i in range(3):
            await a.publish("t", i)
        await a.runtime.sleep(2.0)
        net.restart("b")
        b2 = Node(net.runtime("b"), "b", settings=settings, port=port)
        await b2.start()
        await b2.subscribe("t")
        got = [(await b2.receive()).data for _ in range(3)]
        return got, a.statistics().reconnections

    graph: nx.Graph[str] = nx.Graph()
    graph.add_edge("a", "b", latency=0.010)
    got, reconnections = Backend("sim").run(main, graph=graph)
    assert got == [0, 1, 2]
    assert reconnections == 1


def test_reconnection_gives_up_after_the_attempt_limit() -> None:
    settings = STEADY.replace(
        keepalive_interval_s=0.5,
        dead_after_s=1.0,
        reconnect_attempts=3,
        reconnect_initial_s=0.5,
        connect_timeout_s=0.5,
    )

    async def main(net: Any) -> tuple[list[str], Any]:
        a, _b = await _pair(net, settings)
        net.crash("b")
        await a.publish("t", "lost")
        await eventually(a.runtime, lambda: not a.links, timeout=60)
        return sorted(a.links), a.statistics()

    graph: nx.Graph[str] = nx.Graph()
    graph.add_edge("a", "b", latency=0.010)
    links, stats = Backend("sim").run(main, graph=graph)
    assert links == []
    assert stats.sessions_lost == 1 and stats.frames_abandoned == 1


def test_ping_keeps_a_smoothed_estimate_over_both_transports(
    backend: Backend,
) -> None:
    async def main(net: Any) -> tuple[list[float], list[float], Any]:
        a, b = await _pair(net)
        in_band = await a.ping("b", count=3)
        over_udp = await a.ping("b", count=3, via="datagram")
        stats = a.statistics().per_link[0]
        summary = a.links["b"].rtts.summary()
        await a.stop()
        await b.stop()
        return in_band, over_udp, (stats, summary)

    in_band, over_udp, (stats, summary) = backend.run(main)
    assert stats.rtt_samples == 6 and summary.count == 6
    assert stats.srtt is not None and stats.rttvar is not None
    if backend.simulated:
        assert in_band == pytest.approx([0.020] * 3, abs=1e-12)
        assert over_udp == pytest.approx([0.020] * 3, abs=1e-12)
        assert stats.srtt == pytest.approx(0.020, abs=1e-12)
        assert summary.p99 == pytest.approx(0.020, abs=1e-12)
