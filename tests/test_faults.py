"""Faults in the simulator: partitions, crashes, loss, each at a simulated time.

These are simulator semantics, so they run on ``sim`` only. Timings are
exact: the line a --10 ms-- b --20 ms-- c puts 30 ms between a and c.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import networkx as nx
import pytest

from chaski_actors import BrokenResourceError, ConfigError, ConnectError
from chaski_actors.faults import Fault
from chaski_actors.runtime import Stream
from chaski_actors.sim import SimNetwork
from chaski_actors.sim.faults import FaultTimeline
from chaski_actors.sim.harness import run_sim
from conftest import line_graph


async def open_stream(net: SimNetwork, src: str, dst: str) -> tuple[Stream, Stream]:
    """A connected stream from ``src`` to ``dst``: (client end, server end)."""
    accepted: list[Stream] = []

    async def handler(stream: Stream) -> None:
        accepted.append(stream)

    listener = await net.runtime(dst).listen(dst, 9000, handler)
    client = await net.runtime(src).connect(dst, 9000)
    await listener.aclose()
    return client, accepted[0]


async def read_exactly(stream: Stream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive()
        assert chunk, "stream ended early"
        data += chunk
    return data


def run_with_window(
    main: Callable[[SimNetwork], Coroutine[Any, Any, Any]],
    graph: nx.Graph[str],
    window: int,
) -> Any:
    network = SimNetwork(graph, window=window)
    task = network.spawn(main(network), name="main")
    network.run(until=60.0)
    assert task.done()
    return task.result()


def test_a_partition_stalls_a_stream_and_healing_resumes_it_intact() -> None:
    async def main(net: SimNetwork) -> tuple[bytes, float]:
        client, server = await open_stream(net, "a", "c")
        timeline = FaultTimeline(net)
        start = net.now()
        timeline.schedule(
            [Fault(start + 1.0, "partition", ("a",), ("c",), duration_s=2.0)]
        )
        rt = net.runtime("a")
        await rt.sleep(1.5)
        for i in range(50):
            await client.send(bytes([i]))
        data = await read_exactly(server, 50)
        return data, net.now() - start

    data, waited = run_sim(main, line_graph())
    assert data == bytes(range(50))
    # Nothing moves until the partition heals at 3 s; then one trip of 30 ms.
    assert waited == pytest.approx(3.030, abs=1e-9)


def test_a_partition_separates_hosts_not_the_wires_between_them() -> None:
    # a and b are on the same side; c is cut off, though a's path runs via b.
    async def main(net: SimNetwork) -> tuple[bool, bool, bool]:
        net.partition(["c"])
        return (
            net.route("a", "b") is not None,
            net.route("a", "c") is None,
            net.route("c", "b") is None,
        )

    assert run_sim(main, line_graph()) == (True, True, True)


def test_a_one_way_partition_cuts_one_direction_of_datagrams() -> None:
    async def main(net: SimNetwork) -> tuple[int, int]:
        at_a = await net.runtime("a").open_datagram("a", 5000)
        at_c = await net.runtime("c").open_datagram("c", 5000)
        net.partition(["a"], ["c"], one_way=True)
        for _ in range(10):
            at_a.send(b"a to c", ("c", 5000))
            at_c.send(b"c to a", ("a", 5000))
        await net.runtime("a").sleep(1.0)
        return len(at_a._queue), len(at_c._queue)  # type: ignore[attr-defined]

    reached_a, reached_c = run_sim(main, line_graph())
    assert (reached_a, reached_c) == (10, 0)


def test_a_one_way_partition_stalls_one_direction_of_a_stream() -> None:
    async def main(net: SimNetwork) -> tuple[float, bytes, bytes]:
        client, server = await open_stream(net, "a", "c")
        start = net.now()
        handle = net.partition(["a"], ["c"], one_way=True)
        net.runtime("a").call_later(2.0, lambda: net.heal(handle))
        await client.send(b"held")
        await server.send(b"flows")
        flows = await read_exactly(client, 5)
        flowed_after = net.now() - start
        held = await read_exactly(server, 4)
        return flowed_after, flows, held + f" {net.now() - start:.3f}".encode()

    flowed_after, flows, held = run_sim(main, line_graph())
    assert flowed_after == pytest.approx(0.030, abs=1e-9)
    assert flows == b"flows"
    assert held == b"held 2.030"


def test_a_one_way_partition_holds_back_acknowledgements() -> None:
    # c's data reaches a, but a's acknowledgements cannot reach c: c's
    # window fills and its writes wait until the partition heals.
    async def main(net: SimNetwork) -> tuple[int, float]:
        client, server = await open_stream(net, "a", "c")
        rt = net.runtime("c")
        start = net.now()
        handle = net.partition(["a"], ["c"], one_way=True)
        rt.call_later(5.0, lambda: net.heal(handle))
        sent = 0

        async def reader() -> None:
            while await client.receive():
                pass

        net.runtime("a").spawn(reader(), name="reader")
        while sent < 4000:
            await server.send(b"x" * 100)
            sent += 100
        return sent, net.now() - start

    sent, waited = run_with_window(main, line_graph(), window=1000)
    assert sent == 4000
    # The first window's worth went at once; the second waited for the heal
    # at 5 s, then each further window for a trip of 30 ms.
    assert waited == pytest.approx(5.060, abs=1e-9)


def test_connecting_across_a_one_way_partition_times_out() -> None:
    # The request gets through, the answer cannot: to the client it is lost.
    async def main(net: SimNetwork) -> float:
        await net.runtime("a").listen("a", 9000, lambda s: s.aclose())
        net.partition(["a"], ["c"], one_way=True)
        start = net.now()
        with pytest.raises(ConnectError, match="timed out"):
            await net.runtime("c").connect("a", 9000)
        return net.now() - start

    assert run_sim(main, line_graph()) == 7.0


def test_a_crash_and_restart_call_the_scenario_hooks() -> None:
    seen: list[tuple[str, str, float]] = []

    async def main(net: SimNetwork) -> list[tuple[str, str, float]]:
        timeline = FaultTimeline(
            net,
            on_crash=lambda host: seen.append(("crash", host, net.now())),
            on_restart=lambda host: seen.append(("restart", host, net.now())),
        )
        timeline.schedule(
            [
                Fault(1.0, "crash", ("b",), duration_s=2.5),
                Fault(2.0, "crash", ("b",)),  # already down: nothing happens
                Fault(5.0, "crash", ("c",)),
                Fault(6.0, "restart", ("c",)),
            ]
        )
        assert timeline.pending == 5
        await net.runtime("a").sleep(10.0)
        assert timeline.pending == 0
        return seen

    assert run_sim(main, line_graph()) == [
        ("crash", "b", 1.0),
        ("restart", "b", 3.5),
        ("crash", "c", 5.0),
        ("restart", "c", 6.0),
    ]


def test_a_crash_resets_a_peer_even_if_the_first_reset_is_lost() -> None:
    # c restarts behind a one-way partition: a's segment reaches it, but the
    # reset cannot come back. After the heal, a's next segment draws another.
    async def main(net: SimNetwork) -> tuple[str, float]:
        client, _server = await open_stream(net, "a", "c")
        handle = net.partition(["c"], ["a"], one_way=True)
        net.crash("c")
        net.restart("c")
        rt = net.runtime("a")
        await client.send(b"anyone?")
        await rt.sleep(1.0)
        net.heal(handle)
        start = net.now()
        await client.send(b"still there?")
        with pytest.raises(BrokenResourceError) as info:
            await client.receive()
        return str(info.value), net.now() - start

    message, waited = run_sim(main, line_graph())
    assert "reset" in message
    assert waited == pytest.approx(0.060, abs=1e-9)


def test_degrading_a_link_delays_streams_and_loses_datagrams_then_heals() -> None:
    graph: nx.Graph[str] = nx.Graph()
    graph.add_edge("a", "b", latency=0.010)

    async def main(net: SimNetwork) -> tuple[bytes, int, int, int, float]:
        client, server = await open_stream(net, "a", "b")
        receiver = await net.runtime("b").open_datagram("b", 5000)
        sender = await net.runtime("a").open_datagram("a", 5000)
        timeline = FaultTimeline(net)
        start = net.now()
        timeline.schedule(
            [Fault(start, "degrade", link=("a", "b"), loss=0.3, duration_s=10.0)]
        )
        await net.runtime("a").sleep(0.0)
        for i in range(100):
            await client.send(bytes([i]))
            sender.send(b"ping", ("b", 5000))
        data = await read_exactly(server, 100)
        await net.runtime("a").sleep(11.0)
        stats = net.statistics()
        received = len(receiver._queue)  # type: ignore[attr-defined]
        return (
            data,
            stats.retransmissions,
            received,
            stats.datagrams_lost,
            (net.link("a", "b").loss + net.link("b", "a").loss),
        )

    data, retransmissions, received, lost, loss_after = run_sim(main, graph, seed=4)
    assert data == bytes(range(100))
    assert retransmissions > 0
    assert received + lost == 100
    assert 15 < lost < 45
    assert loss_after == 0.0


def test_overlapping_faults_leave_the_network_as_it_was() -> None:
    async def main(net: SimNetwork) -> list[bool]:
        timeline = FaultTimeline(net)
        timeline.schedule(
            [
                Fault(1.0, "partition", ("a",), duration_s=3.0),
                Fault(2.0, "partition", ("a",), ("c",), one_way=True),
                Fault(1.0, "degrade", link=("b", "c"), latency_s=0.5, duration_s=2),
                Fault(2.0, "degrade", link=("b", "c"), latency_s=0.9, duration_s=4),
            ]
        )
        rt = net.runtime("b")
        await rt.sleep(5.0)
        one_way_left = [net.blocked("a", "c"), net.blocked("c", "a")]
        timeline.apply(Fault(5.0, "heal"))
        await rt.sleep(2.0)
        return [
            *one_way_left,
            net.blocked("a", "c"),
            net.link("b", "c").latency.mean == 0.020,
        ]

    assert run_sim(main, line_graph()) == [True, False, False, True]


def test_faults_naming_unknown_hosts_or_links_are_refused() -> None:
    async def main(net: SimNetwork) -> list[str]:
        timeline = FaultTimeline(net)
        errors = []
        for fault in (
            Fault(1.0, "crash", ("z",)),
            Fault(1.0, "partition", ("a",), ("y",)),
            Fault(1.0, "link_down", link=("a", "c")),
        ):
            with pytest.raises(ConfigError) as info:
                timeline.schedule([fault])
            errors.append(str(info.value))
        assert timeline.pending == 0
        return errors

    errors = run_sim(main, line_graph())
    assert "no host(s) ['z']" in errors[0]
    assert "no host(s) ['y']" in errors[1]
    assert "no such link" in errors[2]
