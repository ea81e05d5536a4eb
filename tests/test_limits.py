"""Limits that hold under attack, on both backends.

Each test plays a hostile peer over a raw stream: one that says nothing, one
that announces a huge frame, one that opens more connections than allowed,
one that floods a node that does not read, one that talks before its hello.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pki import Pki

from chaski_actors import BrokenResourceError, Node, Settings, Stream
from chaski_actors.codec import PROTOCOL_VERSION
from chaski_actors.protocol import HELLO, PING, PUB, SUB, LinkProtocol
from chaski_actors.testing import eventually
from conftest import Backend

A_C = 0.030  # one-way latency a-c in the test topology


async def _until_closed(stream: Stream) -> bytes:
    """Everything the peer sends until it closes or resets the connection."""
    received = b""
    try:
        while data := await stream.receive():
            received += data
    except BrokenResourceError:
        pass
    return received


def _hello(protocol: LinkProtocol, name: str = "x") -> bytes:
    return protocol.encode(HELLO, name, "id", "x", 1, [], {})


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "tls"])
def test_silent_peer_is_dropped(backend: Backend, pki: Pki, secure: bool) -> None:
    tls = dataclasses.replace(pki.tls("a"), handshake_timeout_s=0.5) if secure else None
    settings = Settings().replace(handshake_timeout_s=0.5)

    async def main(net: Any) -> tuple[float, bytes, list[str]]:
        async with Node(net.runtime("a"), "a", settings=settings, tls=tls) as a:
            raw = await net.runtime("c").connect(*a.address)
            start = net.now()
            received = await _until_closed(raw)
            return net.now() - start, received, sorted(a.links)

    waited, received, links = backend.run(main)
    assert (received, links) == (b"", [])
    if backend.simulated:
        # Accepted half a round trip before connect() returned; the reset
        # takes half a round trip back.
        assert waited == pytest.approx(0.5, abs=1e-9)
    else:
        assert 0.4 < waited < 5.0


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "tls"])
def test_connection_limit_counts_unfinished_handshakes(
    backend: Backend, pki: Pki, secure: bool
) -> None:
    tls = dataclasses.replace(pki.tls("a"), handshake_timeout_s=1.0) if secure else None
    settings = Settings().replace(max_connections=2, handshake_timeout_s=1.0)

    async def main(net: Any) -> tuple[float, int, str]:
        async with Node(net.runtime("a"), "a", settings=settings, tls=tls) as a:
            silent = [await net.runtime("c").connect(*a.address) for _ in range(2)]
            start = net.now()
            third = await net.runtime("c").connect(*a.address)
            await _until_closed(third)
            refused_after = net.now() - start
            refused = a._listener.refused if a._listener else -1
            # The silent ones time out and free their slots for a real peer.
            for stream in silent:
                await _until_closed(stream)
            b_tls = pki.tls("b") if secure else None
            async with Node(net.runtime("b"), "b", tls=b_tls) as b:
                peer = await b.connect(*a.address)
            return refused_after, refused, peer.name

    refused_after, refused, name = backend.run(main)
    assert (refused, name) == (1, "a")
    if backend.simulated:
        # Reset on arrival: the connect's round trip, nothing more.
        assert refused_after == pytest.approx(2 * A_C, abs=1e-9)
    else:
        assert refused_after < 0.5


def test_oversized_frame_is_refused_from_its_header(backend: Backend) -> None:
    settings = Settings()

    async def main(net: Any) -> tuple[list[str], int]:
        async with Node(net.runtime("a"), "a", settings=settings) as a:
            raw = await net.runtime("c").connect(*a.address)
            await raw.send(_hello(LinkProtocol()))
            await eventually(a.runtime, lambda: "x" in a.links)
            # Announce one byte more than the limit, and never send the body.
            size = settings.max_frame_size + 1
            await raw.send(size.to_bytes(4, "big") + bytes([PROTOCOL_VERSION]))
            await eventually(a.runtime, lambda: not a.links)
            await _until_closed(raw)
            return sorted(a.links), a.statistics().protocol_errors

    assert backend.run(main) == ([], 1)


def test_nothing_before_the_hello_is_acted_on(backend: Backend) -> None:
    async def main(net: Any) -> tuple[bytes, list[str], int]:
        async with Node(net.runtime("a"), "a") as a:
            raw = await net.runtime("c").connect(*a.address)
            protocol = LinkProtocol()
            # A ping wants a pong, a sub changes routing: neither may happen.
            await raw.send(protocol.encode(PING, 1, 0.0) + protocol.encode(SUB, "t"))
            await raw.send(_hello(protocol))
            received = await _until_closed(raw)
            return received, sorted(a.links), a.statistics().protocol_errors

    assert backend.run(main) == (b"", [], 1)


def test_a_flood_is_held_back_by_a_bounded_queue(backend: Backend) -> None:
    settings = Settings().replace(inbox_size=4, overflow="wait")
    frame_size = 1024
    # Far more than any buffer on the way should hold.
    attempt = 64 * 1024 * 1024

    async def main(net: Any) -> tuple[int, int]:
        sent = 0
        async with Node(net.runtime("a"), "a", settings=settings) as a:
            await a.subscribe("t")
            raw = await net.runtime("c").connect(*a.address)
            protocol = LinkProtocol()
            await raw.send(_hello(protocol))
            frame = protocol.encode(PUB, "t", bytes(frame_size), 0.0)

            async def flood() -> None:
                nonlocal sent
                while sent < attempt:
                    await raw.send(frame)
                    sent += len(frame)

            task = net.runtime("c").spawn(flood(), name="flood")
            # A window of observation, not a synchronisation: the bound below
            # only gets easier to meet on a slower machine.
            await a.runtime.sleep(1.0)
            task.cancel()
            raw.abort()
            return sent, len(a.inbox)

    sent, queued = backend.run(main)
    assert queued == 4
    if backend.simulated:
        # The node reads one chunk (256 KiB) and parks on the full inbox;
        # the stream's window (256 KiB) holds the rest.
        assert sent <= 600 * 1024
    else:
        # Socket buffers on loopback grow to a few MiB, and the node stops
        # reading at 1 MiB unread.
        assert sent <= 16 * 1024 * 1024


def test_a_bad_frame_that_came_with_the_hello_drops_the_link(backend: Backend) -> None:
    """Found by fuzzing: an acknowledgement of nothing, in the hello's packet."""

    async def main(net: Any) -> tuple[list[str], int, str]:
        async with Node(net.runtime("a"), "a") as a, Node(net.runtime("b"), "b") as b:
            raw = await net.runtime("c").connect(*a.address)
            ack_of_nothing = bytes.fromhex("0000000401920901")  # [ACK, 1]
            await raw.send(_hello(LinkProtocol()) + ack_of_nothing)
            await _until_closed(raw)
            await eventually(a.runtime, lambda: a.statistics().protocol_errors == 1)
            peer = await b.connect(*a.address)
            return sorted(a.links), a.statistics().protocol_errors, peer.name

    assert backend.run(main) == (["b"], 1, "a")


def test_an_announcement_with_a_bad_topic_drops_the_link(backend: Backend) -> None:
    """Found by fuzzing: a list among an announcement's topics."""
    from chaski_actors.codec import encode_frame
    from chaski_actors.protocol import SCHEMAS

    announce = next(kind for kind, s in SCHEMAS.items() if s.name == "announce")

    async def main(net: Any) -> tuple[list[str], int]:
        async with Node(net.runtime("a"), "a") as a:
            raw = await net.runtime("c").connect(*a.address)
            await raw.send(_hello(LinkProtocol()))
            await eventually(a.runtime, lambda: "x" in a.links)
            bad = encode_frame([announce, "t", "t", "t", 0, [[]], 0, 0])
            await raw.send(bad)
            await _until_closed(raw)
            await eventually(a.runtime, lambda: a.statistics().protocol_errors == 1)
            return sorted(a.links), a.statistics().protocol_errors

    assert backend.run(main) == ([], 1)
