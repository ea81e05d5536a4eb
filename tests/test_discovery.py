"""Discovery: topic routes, floods over the overlay, the trickle schedule,
and convergence at a thousand nodes (see chaski_actors.discovery)."""

from __future__ import annotations

import itertools
from typing import Any

import networkx as nx
import pytest
from test_links import STEADY, _overlay, converge

from chaski_actors import Node
from conftest import Backend

# Simulated seconds to convergence, exact (virtual time), measured once.
SEEK_TOOK = 1.38
THOUSAND_TOOK = 20.98


def _line(n: int) -> nx.Graph[str]:
    graph: nx.Graph[str] = nx.Graph()
    for i in range(1, n):
        graph.add_edge(f"n{i - 1:02d}", f"n{i:02d}", latency=0.005)
    return graph


def test_members_farther_apart_than_the_ttl_pair_through_topic_routes(
    backend: Backend,
) -> None:
    # A line of twelve: the two ends share a topic, eleven hops apart, far
    # beyond the default ttl of 2 and with no member between them. Floods
    # cannot bring them together; the topic route does. n11 learns that n00
    # is the topic's smallest member, seeks it, and n00 dials.
    graph = _line(12)

    async def main(net: Any) -> tuple[list[str], int, int, float]:
        names = sorted(graph.nodes)
        nodes = {name: Node(net.runtime(name), name, settings=STEADY) for name in names}
        for node in nodes.values():
            await node.start()
        start = net.now()
        for name in ("n00", "n11"):
            await nodes[name].subscribe("t")
        for before, name in itertools.pairwise(names):
            await nodes[name].connect(*nodes[before].address)
        partners = await nodes["n11"].paired("t", timeout=20.0)
        took = net.now() - start
        seeks = nodes["n11"].discovery.statistics().seeks
        dials = nodes["n00"].discovery.statistics().dials
        for node in nodes.values():
            await node.stop()
        return partners, seeks, dials, took

    partners, seeks, dials, took = backend.run(main, graph=graph)
    assert partners == ["n00"]
    assert (seeks, dials) == (1, 1)
    if backend.simulated:
        assert took == pytest.approx(SEEK_TOOK, abs=1e-9)


def test_announcements_keep_to_the_overlay() -> None:
    # a, b and c join through a hub and pair on "t". A later announcement
    # of a reaches b once, through the hub: the a-b pairing link does not
    # carry floods (partners are introduced instead).
    async def main(net: Any) -> tuple[int, int]:
        hub = Node(net.runtime("b"), "hub", settings=STEADY)
        others = [Node(net.runtime(h), h, settings=STEADY) for h in ("a", "c")]
        await hub.start()
        for node in others:
            await node.start()
            await node.subscribe("t")
            await node.connect(*hub.address)
        a, c = others
        await a.paired("t", timeout=5.0)
        await net.runtime("a").sleep(5.0)
        before = c.discovery.statistics()
        await a.subscribe("u")
        await net.runtime("a").sleep(2.0)
        after = c.discovery.statistics()
        for node in (a, c, hub):
            await node.stop()
        return after.received - before.received, after.duplicates - before.duplicates

    assert Backend("sim").run(main) == (1, 0)


def test_periodic_announcements_slow_down_while_nothing_changes() -> None:
    async def main(net: Any) -> list[int]:
        a = Node(net.runtime("a"), "a", settings=STEADY)
        b = Node(net.runtime("b"), "b", settings=STEADY)
        for node in (a, b):
            await node.start()
        await a.subscribe("t")
        await a.connect(*b.address)
        counts = []
        # Announced at once, then 30, 60, 120, 240, 240 s apart (8 x 30 s cap).
        for at in (0.5, 30.5, 90.5, 210.5, 450.5, 690.5, 929.5):
            await a.runtime.sleep(at - a.runtime.now())
            counts.append(a.discovery.statistics().announced)
        for node in (a, b):
            await node.stop()
        return counts

    assert Backend("sim").run(main) == [1, 2, 3, 4, 5, 6, 6]


def test_trickle_doubles_up_to_its_limit_and_resets() -> None:
    from chaski_actors.discovery import Trickle

    trickle = Trickle(30.0)
    assert [trickle.next_wait() for _ in range(5)] == [30.0, 60.0, 120.0, 240.0, 240.0]
    trickle.reset()
    assert trickle.next_wait() == 30.0


def test_topic_routes_name_the_smallest_member_with_split_horizon() -> None:
    from chaski_actors.discovery import Route, Routes, parse_routes

    # b sits between a (overlay neighbour) and c (overlay neighbour).
    b = Routes("b", reach=3, capacity=2)
    b.set_own(Route("b", "b-1", "hb", 1, 0), ["t"])
    b.add_neighbour("a")
    b.add_neighbour("c")
    out, news = b.flush()
    mine = ["t", "b", "b-1", "hb", 1, 0]
    assert out == [("a", True, [mine]), ("c", True, [mine])]
    assert news == {}
    # a knows of "a0", smaller than b, one hop beyond it.
    b.receive("a", False, parse_routes([["t", "a0", "id", "h", 9, 1]]))
    out, news = b.flush()
    # c hears of a0 at 3 hops; a is not told back what it said (split horizon).
    assert out == [("c", False, [["t", "a0", "id", "h", 9, 2]])]
    assert news == {"t": Route("a0", "id", "h", 9, 2)}
    assert b.via("t", "a0") == "a"
    # The link to a0 closed: at the next flush a0 is news again (seek anew).
    b.forget_member("a0")
    assert b.flush() == ([], {"t": Route("a0", "id", "h", 9, 2)})
    # Past the reach: a route of 3 hops is not passed on further.
    b.receive("a", False, parse_routes([["u", "z", "id", "h", 9, 2]]))
    assert b.flush()[0] == []
    # Capacity: a third topic from a is dropped and counted.
    b.receive("a", False, parse_routes([["v", "z", "id", "h", 9, 0]]))
    assert b.dropped == 1
    # a leaves the overlay: its routes are withdrawn from c.
    b.remove_neighbour("a")
    out, _news = b.flush()
    assert out == [("c", False, [["t", "b", "b-1", "hb", 1, 0]])]
    assert b.size() == 0


@pytest.mark.parametrize(
    "entry",
    [
        ["t", "m", "id", "h", 1],
        ["", "m", "id", "h", 1, 0],
        ["t", "m", "id", "h", 1.5, 0],
        ["t", "", "id", "h", 1, 0],
        ["t", "m", "id", "h", True, 0],
        "t",
    ],
)
def test_a_malformed_route_entry_is_a_protocol_error(entry: Any) -> None:
    from chaski_actors.discovery import parse_routes
    from chaski_actors.errors import ProtocolError

    with pytest.raises(ProtocolError):
        parse_routes([entry])


def test_discovery_converges_at_a_thousand_nodes_with_the_defaults() -> None:
    # Convergence is promised up to N = 1000 in sim: a random tree of 1000
    # hosts, each node in one of 100 topics (about ten members each, mostly
    # more than the default ttl of 2 hops apart). Keep-alives are slowed, as in
    # bench/bench_links.py, because they are most of an idle network's
    # events and play no part here; every discovery setting is the default.
    n = 1000
    graph, _ = _overlay(n, seed=5)
    settings = STEADY.replace(keepalive_interval_s=5.0, dead_after_s=15.0)
    took, pairs, links = Backend("sim").run(
        lambda net: converge(net, n, topics=100, seed=5, settings=settings),
        graph=graph,
    )
    assert pairs > 4000
    assert links >= pairs
    assert took == pytest.approx(THOUSAND_TOOK, abs=1e-9)
