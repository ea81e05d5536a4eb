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


def test_bursts_to_two_peers_survive_resets_of_either(backend: Backend) -> None:
    """Bursts to two subscribers share batches; resets of either lose nothing."""

    async def main(net: Any) -> tuple[list[list[int]], int]:
        a = await _started(net, "a")
        subscribers = [await _started(net, name) for name in ("b", "c")]
        for node in subscribers:
            await node.subscribe("t")
            await a.connect(*node.address)
        await eventually(
            a.runtime,
            lambda: (
                len(a.links) == 2
                and all("t" in link.topics for link in a.links.values())
            ),
        )

        async def cut_now_and_then() -> None:
            for n in range(6):
                await a.runtime.sleep(0.02)
                stream = subscribers[n % 2].links["a"].stream
                if stream is not None:
                    stream.abort()

        cutter = a.runtime.spawn(cut_now_and_then(), name="cutter")
        for i in range(600):
            await a.publish("t", i)
            if i % 20 == 19:
                await a.runtime.sleep(0.001)
        got: list[list[int]] = []
        for node in subscribers:
            received: list[int] = []
            while len(received) < 600:
                received += [m.data for m in await node.receive_batch()]
            got.append(received)
        await cutter
        reconnections = a.statistics().reconnections
        for node in (a, *subscribers):
            await node.stop()
        return got, reconnections

    got, reconnections = backend.run(main)
    assert got == [list(range(600)), list(range(600))]
    assert reconnections >= 1


def test_bursts_to_two_peers_under_drop_oldest_keep_order_and_count(
    backend: Backend,
) -> None:
    """A peer down under bursts: it gets the newest in order, the rest counted.

    The other peer, still up, gets everything.
    """
    settings = Settings(
        reconnect_jitter=0.0, overflow="drop-oldest", send_buffer_frames=50
    )

    async def main(net: Any) -> list[tuple[list[int], int]]:
        a = await _started(net, "a", settings)
        subscribers = [await _started(net, name, settings) for name in ("b", "c")]
        for node in subscribers:
            await node.subscribe("t")
            await a.connect(*node.address)
        await eventually(
            a.runtime,
            lambda: (
                len(a.links) == 2
                and all("t" in link.topics for link in a.links.values())
            ),
        )
        stream = subscribers[1].links["a"].stream
        assert stream is not None
        stream.abort()  # c's link goes down for a while; b's stays up
        for i in range(400):
            await a.publish("t", i)
            if i % 100 == 99:
                await a.runtime.sleep(0.001)
        results = []
        for node in subscribers:
            received: list[int] = []
            while not received or received[-1] != 399:
                received += [m.data for m in await node.receive_batch()]
            skipped = node.statistics().per_link[0].skipped
            results.append((received, skipped))
        for node in (a, *subscribers):
            await node.stop()
        return results

    (to_b, skipped_b), (to_c, skipped_c) = backend.run(main)
    assert (to_b, skipped_b) == (list(range(400)), 0)
    assert to_c == sorted(set(to_c)) and to_c[-1] == 399
    assert len(to_c) + skipped_c == 400


async def _started(net: Any, name: str, settings: Settings = STEADY) -> Node:
    node = Node(net.runtime(name), name, settings=settings)
    await node.start()
    return node


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


# -- discovery -----------------------------------------------------------------


def test_nodes_sharing_a_topic_pair_through_a_hub(backend: Backend) -> None:
    async def main(net: Any) -> tuple[list[str], list[str], Any, list[str]]:
        hub = Node(net.runtime("b"), "b", settings=STEADY)
        a = Node(net.runtime("a"), "a", settings=STEADY)
        c = Node(net.runtime("c"), "c", settings=STEADY)
        for node in (hub, a, c):
            await node.start()
        await c.subscribe("t")
        await c.connect(*hub.address)  # c announces before a is there
        await a.subscribe("t", "only-a")
        await a.connect(*hub.address)
        partners = await a.paired("t", timeout=5.0)
        await c.paired("t", timeout=5.0)
        await a.publish("t", "direct")
        message = await c.receive()
        result = partners, sorted(c.links), message.source, sorted(hub.links)
        for node in (a, c, hub):
            await node.stop()
        return result

    partners, c_links, source, hub_links = backend.run(main)
    assert partners == ["c"]
    assert c_links == ["a", "b"]
    assert source == "a"
    assert hub_links == ["a", "c"]


def test_paired_times_out_without_a_partner(backend: Backend) -> None:
    async def main(net: Any) -> bool:
        async with Node(net.runtime("a"), "a") as a:
            await a.subscribe("lonely")
            with pytest.raises(TimeoutError):
                await a.paired("lonely", timeout=0.2)
            return True

    assert backend.run(main)


def test_propagation_reaches_a_subscriber_beyond_max_connections() -> None:
    # a - b - c in a line, each allowed one more link than it has: a and c
    # share a topic but cannot pair, so b (not subscribed) forwards.
    settings = STEADY.replace(max_connections=2, propagation_ttl=3)

    async def main(net: Any) -> tuple[list[Any], list[str], int]:
        a = Node(net.runtime("a"), "a", settings=settings.replace(max_connections=1))
        b = Node(net.runtime("b"), "b", settings=settings)
        c = Node(net.runtime("c"), "c", settings=settings.replace(max_connections=1))
        for node in (a, b, c):
            await node.start()
        await a.subscribe("t")
        await c.subscribe("t")
        await a.connect(*b.address)
        await c.connect(*b.address)
        await a.runtime.sleep(1.0)
        for i in range(3):
            await a.publish("t", i)
        got = [(await c.receive()) for _ in range(3)]
        return (
            [(m.data, m.source) for m in got],
            sorted(c.links),
            b.statistics().forwarded,
        )

    got, c_links, forwarded = Backend("sim").run(main)
    assert got == [(0, "a"), (1, "a"), (2, "a")]
    assert c_links == ["b"]
    assert forwarded == 3


def _overlay(n: int, seed: int) -> tuple[nx.Graph[str], list[tuple[str, str]]]:
    """A star-free random network: a random tree of hosts, plus who dials whom."""
    import random

    rng = random.Random(seed)
    graph: nx.Graph[str] = nx.Graph()
    names = [f"n{i:04d}" for i in range(n)]
    graph.add_node(names[0])
    dials = []
    for i in range(1, n):
        parent = names[rng.randrange(i)]
        graph.add_edge(names[i], parent, latency=0.005)
        dials.append((names[i], parent))
    return graph, dials


async def converge(
    net: Any, n: int, topics: int, seed: int, settings: Settings
) -> tuple[float, int, int]:
    """Start n nodes on a random tree overlay with random subscriptions.

    Returns the time until every pair sharing a topic is linked (or can
    reach each other through propagation), the pairs, and how many links.
    """
    import random

    rng = random.Random(seed)
    names = sorted(_overlay(n, seed)[0].nodes)
    nodes = {name: Node(net.runtime(name), name, settings=settings) for name in names}
    subscriptions: dict[str, list[str]] = {}
    for name in names:
        chosen = sorted(rng.sample([f"t{k}" for k in range(topics)], 1))
        subscriptions[name] = chosen
    start = net.now()
    _graph, dials = _overlay(n, seed)
    for node in nodes.values():
        await node.start()
    for name in names:
        await nodes[name].subscribe(*subscriptions[name])
    for name, parent in dials:
        await nodes[name].connect(*nodes[parent].address)

    by_topic: dict[str, list[str]] = {}
    for name in names:
        for topic in subscriptions[name]:
            by_topic.setdefault(topic, []).append(name)
    pairs = [
        (x, y)
        for members in by_topic.values()
        for i, x in enumerate(members)
        for y in members[i + 1 :]
    ]

    def converged() -> bool:
        return all(
            y in nodes[x].links and nodes[x].links[y].connected for x, y in pairs
        )

    await eventually(net.runtime(names[0]), converged, timeout=600, interval=0.1)
    took = net.now() - start
    links = sum(len(node.links) for node in nodes.values()) // 2
    for node in nodes.values():
        await node.stop()
    return took, len(pairs), links


def test_discovery_converges_on_a_random_overlay() -> None:
    n = 40
    graph, _ = _overlay(n, seed=7)
    result = Backend("sim").run(
        lambda net: converge(net, n, topics=4, seed=7, settings=STEADY), graph=graph
    )
    took, pairs, links = result
    assert pairs > 100
    assert links >= pairs
    assert took < 120.0


def test_discovery_converges_on_both_backends(backend: Backend) -> None:
    n = 8
    graph, _ = _overlay(n, seed=3)
    took, pairs, links = backend.run(
        lambda net: converge(net, n, topics=2, seed=3, settings=STEADY), graph=graph
    )
    assert pairs >= 6
    assert links >= pairs
    if backend.simulated:
        assert took < 10.0


def test_a_restarted_node_is_news_to_discovery() -> None:
    from chaski_actors.discovery import Announcement, Discovery

    discovery = Discovery("b", memory=16, ttl=4)
    first_life = Announcement("a", "a-1", "a", 1, ("t",), 1, 4)
    second_life = Announcement("a", "a-9", "a", 1, ("t",), 1, 4)
    assert discovery.receive(first_life, ["t"])[0]
    assert not discovery.receive(first_life, ["t"])[0]
    # The restarted node counts its announcements from 1 again.
    assert discovery.receive(second_life, ["t"])[0]


def test_a_reconnected_peer_is_introduced_to_what_it_missed(backend: Backend) -> None:
    # c joins b while a's link to b is down: b cannot introduce them then,
    # and c's announcement dies at a's broken connection. When a comes back,
    # b introduces them, and a (the smaller name) dials c, long before the
    # periodic announcement (60 s here) would have paired them.
    settings = STEADY.replace(discovery_interval_s=60.0, reconnect_initial_s=1.0)

    async def main(net: Any) -> tuple[float, list[str], list[str]]:
        a, b, c = (Node(net.runtime(h), h, settings=settings) for h in "abc")
        for node in (a, b, c):
            await node.start()
            await node.subscribe("t")
        await a.connect(*b.address)
        await eventually(a.runtime, lambda: "a" in b.links)
        broken = b.links["a"].stream
        assert broken is not None
        cut_at = a.runtime.now()
        broken.abort()
        await eventually(a.runtime, lambda: not a.links["b"].connected)
        await c.connect(*b.address)
        await eventually(a.runtime, lambda: "c" in a.links, timeout=5.0)
        took = a.links["c"].opened_at - cut_at
        result = took, sorted(a.links), sorted(c.links)
        for node in (a, b, c):
            await node.stop()
        return result

    took, a_links, c_links = backend.run(main)
    assert a_links == ["b", "c"] and c_links == ["a", "b"]
    if backend.simulated:
        # The reset reaches a in 10 ms; a redials 1 s later: its connect
        # (20 ms) and hello (10 ms) reach b, which introduces c at once (10 ms
        # to a); then a's connect, hello and b's answer to c (60 + 30 + 30).
        assert took == pytest.approx(0.01 + 1.0 + 0.03 + 0.01 + 0.12, abs=1e-9)


def test_news_that_comes_during_a_failed_pairing_dial_is_acted_on() -> None:
    # a hears of c (b introduces them) while a partition keeps a from c:
    # a's dial fails at its connect timeout. c's own announcement reached a
    # meanwhile; a dials again at once on that news, now that the partition
    # has healed, instead of waiting for the periodic announcement (60 s).
    # Simulator only: on loopback a dial waits out a partition, it does not
    # lose its SYNs.
    settings = STEADY.replace(discovery_interval_s=60.0, connect_timeout_s=2.0)

    async def main(net: Any) -> tuple[float, int]:
        a, b, c = (Node(net.runtime(h), h, settings=settings) for h in "abc")
        for node in (a, b, c):
            await node.start()
            await node.subscribe("t")
        await a.connect(*b.address)
        await eventually(a.runtime, lambda: "a" in b.links)
        cut = net.partition(["a"], ["c"])
        start = net.now()
        a.runtime.call_later(1.5, lambda: net.heal(cut))
        await c.connect(*b.address)
        await eventually(a.runtime, lambda: "c" in a.links, timeout=5.0)
        took = a.links["c"].opened_at - start
        dials = a.statistics().discovery
        for node in (a, b, c):
            await node.stop()
        assert dials is not None
        return took, dials.dials

    took, dials = Backend("sim").run(main)
    assert dials == 2
    # b links c after 60 ms (connect and hello over 20 ms) and introduces it
    # to a (10 ms): a's SYNs at 0.07 and 1.07 s are cut, the timeout ends the
    # dial at 2.07 s; the second dial's connect and hellos take 120 ms.
    assert took == pytest.approx(0.07 + 2.0 + 0.12, abs=1e-9)


def test_the_side_that_dialled_the_current_connection_reconnects() -> None:
    # b dialled a; b crashes and comes back as a new life on its port, and a
    # dials it onto the link it kept waiting for b's old life. When that
    # connection breaks, a (its dialler) must redial: the new b accepted it
    # and waits, so a link still marked "accepted" on a would wait too.
    settings = STEADY.replace(keepalive_interval_s=0.5, dead_after_s=1.0)

    async def main(net: Any) -> tuple[str, float]:
        a = Node(net.runtime("a"), "a", settings=settings)
        b = Node(net.runtime("b"), "b", settings=settings)
        await a.start()
        await b.start()
        port = b.address[1]
        await b.connect(*a.address)
        await eventually(a.runtime, lambda: "b" in a.links)
        net.crash("b")
        await eventually(a.runtime, lambda: a.links["b"].state == "waiting")
        net.restart("b")
        b2 = Node(net.runtime("b"), "b", settings=settings, port=port)
        await b2.start()
        await a.connect("b", port)
        broken = b2.links["a"].stream
        assert broken is not None
        cut_at = net.now()
        broken.abort()
        await eventually(a.runtime, lambda: not a.links["b"].connected)
        await eventually(a.runtime, lambda: a.links["b"].connected, timeout=10.0)
        took = a.links["b"].last_heard - cut_at
        state = a.links["b"].state
        await a.stop()
        await b2.stop()
        return state, took

    graph: nx.Graph[str] = nx.Graph()
    graph.add_edge("a", "b", latency=0.010)
    state, took = Backend("sim").run(main, graph=graph)
    assert state == "open"
    # The reset reaches a after 10 ms and a redials reconnect_initial_s later:
    # a connect and the two hellos, two round trips.
    assert took == pytest.approx(0.01 + STEADY.reconnect_initial_s + 0.04, abs=1e-9)


def test_two_nodes_that_dial_each_other_at_once_keep_one_live_link(
    backend: Backend,
) -> None:
    # In the simulator the dials cross exactly: each end accepts the other's
    # connection before its own is answered. Each used to refuse its own
    # dial, so both connections died and both links, made by accepting,
    # waited for a redial that never came.
    async def main(net: Any) -> tuple[str, str, Any, float]:
        a = Node(net.runtime("a"), "a", settings=STEADY)
        b = Node(net.runtime("b"), "b", settings=STEADY)
        for node in (a, b):
            await node.start()
            await node.subscribe("t")
        start = net.now()
        dials = [
            a.runtime.spawn(a.connect(*b.address), name="a-dials"),
            b.runtime.spawn(b.connect(*a.address), name="b-dials"),
        ]
        for dial in dials:
            await dial
        await a.publish("t", "hello")
        message = await b.receive()
        took = net.now() - start
        await a.runtime.sleep(0.5)
        states = a.links["b"].state, b.links["a"].state
        await a.stop()
        await b.stop()
        return *states, message.data, took

    a_state, b_state, data, took = backend.run(main)
    assert (a_state, b_state, data) == ("open", "open", "hello")
    if backend.simulated:
        # The connects (20 ms) and hellos (10 ms) cross; at 40 ms a keeps its
        # own dial and drops the one it accepted, whose reset ends b's dial at
        # 50 ms; then a's publish takes 10 ms.
        assert took == pytest.approx(0.06, abs=1e-9)
