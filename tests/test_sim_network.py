"""The simulated network model: paths, bandwidth, jitter, loss, stalls, resets."""

from __future__ import annotations

from random import Random
from typing import Any

import networkx as nx
import pytest

from chaski_actors import BrokenResourceError, ConfigError, ConnectError
from chaski_actors.runtime import Stream
from chaski_actors.sim import SimNetwork, parse_latency
from chaski_actors.sim.harness import run_sim


def pair(**edge: Any) -> nx.Graph[str]:
    graph: nx.Graph[str] = nx.Graph()
    graph.add_edge("a", "b", **edge)
    return graph


async def open_pair(net: SimNetwork) -> tuple[Stream, list[Stream]]:
    """A connected stream from a to b, and the list b's end lands in."""
    accepted: list[Stream] = []

    async def handler(stream: Stream) -> None:
        accepted.append(stream)

    b = net.runtime("b")
    listener = await b.listen("b", 9000, handler)
    client = await net.runtime("a").connect("b", 9000)
    await listener.aclose()
    return client, accepted


async def read_exactly(stream: Stream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive()
        assert chunk, "stream ended early"
        data += chunk
    return data


def test_connect_takes_one_round_trip() -> None:
    async def main(net: SimNetwork) -> float:
        await open_pair(net)
        return net.now()

    assert run_sim(main, pair(latency=0.05)) == pytest.approx(0.1, abs=1e-12)


def test_frames_take_the_lowest_latency_path() -> None:
    graph: nx.Graph[str] = nx.Graph()
    graph.add_edge("a", "b", latency=0.100)  # direct but slow
    graph.add_edge("a", "c", latency=0.010)
    graph.add_edge("c", "b", latency=0.015)

    async def main(net: SimNetwork) -> tuple[float, list[str]]:
        path = net.route("a", "b")
        assert path is not None
        return net.latency("a", "b"), [hop.target for hop in path]

    assert run_sim(main, graph) == (pytest.approx(0.025), ["c", "b"])


def test_bandwidth_serialises_frames_on_a_link() -> None:
    # 1 Mbit/s: a 1000-byte segment plus 40 bytes of headers takes 8.32 ms.
    async def main(net: SimNetwork) -> list[float]:
        client, accepted = await open_pair(net)
        start = net.now()
        for _ in range(3):
            await client.send(b"x" * 1000)
        server = accepted[0]
        arrivals = []
        for _ in range(3):
            await read_exactly(server, 1000)
            arrivals.append(net.now() - start)
        return arrivals

    arrivals = run_sim(main, pair(latency=0.01, bandwidth=1e6))
    serialise = 1040 * 8 / 1e6
    assert arrivals == pytest.approx(
        [0.01 + serialise, 0.01 + 2 * serialise, 0.01 + 3 * serialise], abs=1e-9
    )


def test_jitter_never_reorders_a_stream() -> None:
    async def main(net: SimNetwork) -> bytes:
        client, accepted = await open_pair(net)
        for i in range(200):
            await client.send(bytes([i]))
        return await read_exactly(accepted[0], 200)

    assert run_sim(main, pair(latency=0.01, jitter=0.05), seed=3) == bytes(range(200))


def test_loss_on_a_stream_shows_up_as_delay_not_loss() -> None:
    async def main(net: SimNetwork) -> tuple[bytes, int]:
        client, accepted = await open_pair(net)
        for i in range(100):
            await client.send(bytes([i]))
        data = await read_exactly(accepted[0], 100)
        return data, net.statistics().retransmissions

    data, retransmissions = run_sim(main, pair(latency=0.01, loss=0.3), seed=1)
    assert data == bytes(range(100))
    assert retransmissions > 0


def test_loss_on_datagrams_is_loss() -> None:
    async def main(net: SimNetwork) -> tuple[int, int]:
        receiver = await net.runtime("b").open_datagram("b", 5000)
        sender = await net.runtime("a").open_datagram("a", 5000)
        for _ in range(1000):
            sender.send(b"ping", ("b", 5000))
        await net.runtime("a").sleep(1.0)
        received = 0
        while receiver._queue:  # type: ignore[attr-defined]
            await receiver.receive()
            received += 1
        return received, net.statistics().datagrams_lost

    received, lost = run_sim(main, pair(latency=0.01, loss=0.2), seed=2)
    assert received + lost == 1000
    assert 150 < lost < 250


def test_a_cut_path_stalls_a_stream_until_it_heals() -> None:
    async def main(net: SimNetwork) -> tuple[float, bytes]:
        client, accepted = await open_pair(net)
        net.set_link("a", "b", up=False)
        await client.send(b"held")
        rt = net.runtime("a")
        rt.call_later(5.0, lambda: net.set_link("a", "b", up=True))
        start = net.now()
        data = await read_exactly(accepted[0], 4)
        return net.now() - start, data

    waited, data = run_sim(main, pair(latency=0.01))
    assert data == b"held"
    assert waited == pytest.approx(5.01, abs=1e-9)


class _Scripted(Random):
    """A generator whose ``random()`` replays given draws, so losses are exact."""

    def __init__(self, draws: list[float]) -> None:
        super().__init__(0)
        self._draws = iter(draws)

    def random(self) -> float:
        return next(self._draws)


def test_a_retransmitted_segment_does_not_hold_the_hops_after_the_loss() -> None:
    # a and d both reach c through b; only a-b loses. A segment of a's that
    # is lost three times arrives 0.2 + 0.4 + 0.8 s late, and d's segment,
    # sent just after over the shared hop b->c, is not queued behind it (it
    # was, for 12.6 s in a chaos run, until the delay left the hop's queue).
    graph: nx.Graph[str] = nx.Graph()
    graph.add_edge("a", "b", latency=0.01)
    graph.add_edge("d", "b", latency=0.01)
    graph.add_edge("b", "c", latency=0.01, bandwidth=1e6)

    async def main(net: SimNetwork) -> tuple[float, float, int]:
        accepted: list[Stream] = []

        async def handler(stream: Stream) -> None:
            accepted.append(stream)

        await net.runtime("c").listen("c", 9000, handler)
        from_a = await net.runtime("a").connect("c", 9000)
        from_d = await net.runtime("d").connect("c", 9000)
        net.set_link("a", "b", loss=0.5)
        net.rng = _Scripted([0.0, 0.0, 0.0, 0.9])
        start = net.now()
        await from_a.send(b"x" * 1000)
        await net.runtime("d").sleep(0.05)
        await from_d.send(b"y" * 1000)

        async def arrival(stream: Stream) -> float:
            await read_exactly(stream, 1000)
            return net.now() - start

        c = net.runtime("c")
        from_a_at, from_d_at = (c.spawn(arrival(s), name="read") for s in accepted)
        d_arrived = await from_d_at
        return d_arrived, await from_a_at, net.statistics().retransmissions

    d_arrived, a_arrived, retransmissions = run_sim(main, graph)
    serialise = 1040 * 8 / 1e6
    assert retransmissions == 3
    assert d_arrived == pytest.approx(0.05 + 0.02 + serialise, abs=1e-9)
    assert a_arrived == pytest.approx(0.02 + serialise + 1.4, abs=1e-9)


def test_connecting_across_a_partition_times_out() -> None:
    async def main(net: SimNetwork) -> float:
        net.set_link("a", "b", up=False)
        await net.runtime("b").listen("b", 9000, lambda s: s.aclose())
        with pytest.raises(ConnectError, match="timed out"):
            await net.runtime("a").connect("b", 9000)
        return net.now()

    # Retries after 1, 2 and 4 s, as a TCP stack would.
    assert run_sim(main, pair(latency=0.01)) == 7.0


def test_a_crash_resets_the_peer_when_it_next_sends() -> None:
    async def main(net: SimNetwork) -> tuple[str, float]:
        client, _accepted = await open_pair(net)
        net.crash("b")
        net.restart("b")
        start = net.now()
        await client.send(b"anyone?")
        with pytest.raises(BrokenResourceError) as info:
            await client.receive()
        return str(info.value), net.now() - start

    message, waited = run_sim(main, pair(latency=0.02))
    assert "reset" in message
    assert waited == pytest.approx(0.04, abs=1e-9)  # there and back


def test_a_full_window_makes_the_sender_wait() -> None:
    async def main(net: SimNetwork) -> tuple[int, int]:
        client, accepted = await open_pair(net)
        rt = net.runtime("a")
        sent = 0

        async def flood() -> None:
            nonlocal sent
            while True:
                await client.send(b"x" * 4096)
                sent += 4096

        task = rt.spawn(flood(), name="flood")
        await rt.sleep(1.0)
        stuck_at = sent
        await read_exactly(accepted[0], 64 * 4096)
        await rt.sleep(1.0)
        task.cancel()
        return stuck_at, sent

    stuck_at, later = run_sim(main, pair(latency=0.01))
    # The sender stopped near the window (256 KiB) until the reader drained.
    assert 256 * 1024 <= stuck_at < 256 * 1024 + 4096
    assert later >= stuck_at + 64 * 4096


@pytest.mark.parametrize(
    ("spec", "mean"),
    [
        (0.02, 0.02),
        ("0.02", 0.02),
        ({"dist": "uniform", "low": 0.01, "high": 0.03}, 0.02),
        ("normal(mean=0.02, sd=0.001)", 0.02),
        ("exponential(mean=0.01, base=0.01)", 0.02),
        ("pareto(scale=0.01, shape=2)", 0.02),
    ],
)
def test_latency_distributions_know_their_mean(spec: object, mean: float) -> None:
    latency = parse_latency(spec)
    assert latency.mean == pytest.approx(mean)
    rng = Random(1)
    samples = [latency.sample(rng) for _ in range(20_000)]
    assert all(s >= 0 for s in samples)
    assert sum(samples) / len(samples) == pytest.approx(mean, rel=0.1)


@pytest.mark.parametrize(
    "spec",
    [-1, "fast", {"dist": "zipf"}, "uniform(low=0.1)", "normal(mean=1, sd=1, x=2)"],
)
def test_bad_latencies_are_config_errors(spec: object) -> None:
    with pytest.raises(ConfigError, match="latency"):
        parse_latency(spec)


def test_bad_edges_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="loss must be below 1"):
        SimNetwork(pair(loss=1.0))
    with pytest.raises(ConfigError, match="bandwidth must be >= 0"):
        SimNetwork(pair(bandwidth=-5))
    with pytest.raises(ConfigError, match="no hosts"):
        SimNetwork(nx.Graph())


def test_a_burst_of_segments_is_read_in_one_piece_within_max_bytes() -> None:
    async def main(net: SimNetwork) -> list[bytes]:
        client, accepted = await open_pair(net)
        for part in (b"abc", b"defg", b"hi"):
            await client.send(part)
        await net.runtime("a").sleep(1.0)  # all three have arrived
        server = accepted[0]
        # One read takes what fits; a segment that does not fit is split.
        return [await server.receive(5), await server.receive()]

    assert run_sim(main, pair(latency=0.01)) == [b"abcde", b"fghi"]


def test_consume_reads_in_order_and_holds_back_while_on_data_waits() -> None:
    async def main(net: SimNetwork) -> tuple[Any, ...]:
        client, accepted = await open_pair(net)
        rt = net.runtime("b")
        seen: list[tuple[float, bytes]] = []
        ended: list[tuple[float, BaseException | None]] = []
        gate = rt.create_future()

        async def on_data(data: bytes) -> bool:
            seen.append((round(rt.now(), 6), data))
            if data == b"wait":
                await gate
            return True

        async def on_end(exc: BaseException | None) -> None:
            ended.append((round(rt.now(), 6), exc))

        reader = accepted[0].consume(rt, on_data, on_end, name="read")
        for data in (b"one", b"wait", b"two", b"three"):
            await client.send(data)
            await rt.sleep(0.1)
        held = list(seen)
        gate.set_result(None)
        await rt.sleep(0.1)
        await client.aclose()
        await rt.sleep(0.1)
        return held, seen, ended, reader.done()

    held, seen, ended, done = run_sim(main, pair(latency=0.01))
    # Each piece is read the moment it arrives; what arrives while a call
    # waits is read, in one piece, when that call is over.
    assert held == [(0.03, b"one"), (0.13, b"wait")]
    assert seen == [*held, (0.42, b"twothree")]
    assert ended == [(0.53, None)]
    assert done


def test_consume_stops_when_cancelled_or_when_its_host_crashes() -> None:
    async def main(net: SimNetwork) -> tuple[list[bytes], list[str]]:
        seen: list[bytes] = []
        ended: list[str] = []

        async def on_data(data: bytes) -> bool:
            seen.append(data)
            return True

        async def on_end(exc: BaseException | None) -> None:
            ended.append(repr(exc))

        for stop in ("cancel", "crash"):
            client, accepted = await open_pair(net)
            rt = net.runtime("b")
            reader = accepted[0].consume(rt, on_data, on_end, name="read")
            await client.send(stop.encode())
            await net.runtime("a").sleep(0.1)
            if stop == "cancel":
                assert reader.cancel()
            else:
                net.crash("b")
            await client.send(b"after " + stop.encode())
            await client.aclose()
            await net.runtime("a").sleep(0.1)
            assert reader.done()
        return seen, ended

    seen, ended = run_sim(main, pair(latency=0.01))
    assert seen == [b"cancel", b"crash"]
    assert ended == []
