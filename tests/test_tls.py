"""Mutual TLS on both backends: who may link, who is refused, and what it costs."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from pki import Pki

from chaski_actors import ConnectError, Node, TlsConfig
from chaski_actors.testing import eventually
from conftest import Backend

A_B = 0.010  # one-way latency a-b in the test topology


async def _refused(net: Any, server_tls: TlsConfig | None, client: Node) -> Any:
    """Connect ``client`` to a node "a"; the links each side is left with."""
    async with Node(net.runtime("a"), "a", tls=server_tls) as a, client:
        with pytest.raises(ConnectError) as caught:
            await client.connect(*a.address)
        await a.runtime.sleep(0.1)
        return sorted(a.links), sorted(client.links), str(caught.value)


def test_tls_link_carries_identities(backend: Backend, pki: Pki) -> None:
    async def main(net: Any) -> tuple[str, float, str | None, list[str]]:
        a = Node(net.runtime("a"), "a", tls=pki.tls("a"))
        b = Node(net.runtime("b"), "b", tls=pki.tls("b"))
        async with a, b:
            await b.subscribe("t")
            start = net.now()
            peer = await a.connect(*b.address)
            took = net.now() - start
            await eventually(a.runtime, lambda: "a" in b.links)
            await a.publish("t", "over TLS")
            message = await b.receive()
            return peer.name, took, b.links["a"].stream.peer_identity, [message.data]

    name, took, identity, data = backend.run(main)
    assert (name, identity, data) == ("b", "a", ["over TLS"])
    if backend.simulated:
        # TCP's handshake (one round trip), TLS 1.3's (one more), then the
        # server verifies the client half a trip later and only then says
        # hello, which takes the last half trip back: three round trips.
        assert took == pytest.approx(6 * A_B, abs=1e-12)


def test_plaintext_client_is_refused(backend: Backend, pki: Pki) -> None:
    async def main(net: Any) -> Any:
        return await _refused(net, pki.tls("a"), Node(net.runtime("b"), "b"))

    assert backend.run(main)[:2] == ([], [])


def test_tls_client_refuses_plaintext_server(backend: Backend, pki: Pki) -> None:
    async def main(net: Any) -> Any:
        return await _refused(net, None, Node(net.runtime("b"), "b", tls=pki.tls("b")))

    assert backend.run(main)[:2] == ([], [])


@pytest.mark.parametrize("who", ["stranger", "revoked", "expired"])
def test_bad_client_certificate_is_refused(
    backend: Backend, pki: Pki, who: str
) -> None:
    tls = pki.stranger("b") if who == "stranger" else pki.tls(who)
    name = "b" if who == "stranger" else who

    async def main(net: Any) -> Any:
        client = Node(net.runtime("b"), name, tls=tls)
        return await _refused(net, pki.tls("a"), client)

    assert backend.run(main)[:2] == ([], [])


@pytest.mark.parametrize("who", ["stranger", "revoked", "expired"])
def test_bad_server_certificate_is_refused(
    backend: Backend, pki: Pki, who: str
) -> None:
    tls = pki.stranger("a") if who == "stranger" else pki.tls(who)

    async def main(net: Any) -> Any:
        client = Node(net.runtime("b"), "b", tls=pki.tls("b"))
        return await _refused(net, tls, client)

    a_links, b_links, error = backend.run(main)
    assert (a_links, b_links) == ([], [])
    expected = {
        "stranger": "root's signature",
        "revoked": "was revoked",
        "expired": "expired at",
    }[who]
    assert expected in error or backend.kind == "real"


def test_hello_must_match_the_certificate(backend: Backend, pki: Pki) -> None:
    async def main(net: Any) -> tuple[list[str], list[str]]:
        # A valid certificate for "mallory", used by a node calling itself "b".
        a = Node(net.runtime("a"), "a", tls=pki.tls("a"))
        b = Node(net.runtime("b"), "b", tls=pki.tls("mallory"))
        async with a, b:
            # "a" says hello as soon as TLS is up, so "b" may briefly think it
            # is linked; "a" never is, and its reset ends "b"'s link.
            with contextlib.suppress(ConnectError):
                await b.connect(*a.address)
            await eventually(b.runtime, lambda: not b.links)
            await a.runtime.sleep(0.1)
            return sorted(a.links), sorted(b.links)

    assert backend.run(main) == ([], [])


def test_real_client_without_certificate_is_refused(pki: Pki) -> None:
    import asyncio
    import ssl

    from chaski_actors.real.harness import run_real

    async def main(net: Any) -> tuple[bytes, list[str]]:
        async with Node(net.runtime("a"), "a", tls=pki.tls("a")) as a:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.load_verify_locations(pki.tls("a").ca_certificate)
            reader, writer = await asyncio.open_connection(
                *a.address, ssl=context, server_hostname=""
            )
            try:
                data = await reader.read(100)
            except (ssl.SSLError, ConnectionError):
                data = b""
            writer.close()
            return data, sorted(a.links)

    assert run_real(main, limit=10.0) == (b"", [])


def test_sim_client_without_certificate_is_refused(pki: Pki) -> None:
    from chaski_actors.errors import BrokenResourceError
    from chaski_actors.sim.harness import run_sim
    from conftest import line_graph

    async def main(net: Any) -> tuple[str, float, list[str]]:
        async with Node(net.runtime("a"), "a", tls=pki.tls("a")) as a:
            stream = await net.runtime("b").connect(*a.address)
            hello = bytes([22, 3, 3, 0, 32]) + bytes(32)
            await stream.send(hello)
            await stream.receive()  # the server's flight
            await stream.send(bytes([22, 3, 3, 0, 4, 0, 0, 0, 0]))  # no certificate
            start = net.now()
            with pytest.raises(BrokenResourceError) as caught:
                while await stream.receive():
                    pass
            return str(caught.value), net.now() - start, sorted(a.links)

    error, took, links = run_sim(main, line_graph())
    assert error == "connection reset by peer"
    assert took == pytest.approx(2 * A_B, abs=1e-12)
    assert links == []


def test_revoked_node_cannot_rejoin_in_the_simulator(pki: Pki, tmp_path: Any) -> None:
    from pki import NOW, PASSPHRASE, _issue

    from chaski_actors.ca import CertificateAuthority
    from chaski_actors.sim.harness import run_sim
    from conftest import line_graph

    ca = CertificateAuthority.create(tmp_path, PASSPHRASE, now=NOW)
    for name in ("a", "b"):
        _issue(ca, name, NOW, 3650)

    async def main(net: Any) -> list[tuple[float, str]]:
        seen: list[tuple[float, str]] = []
        tls = {n: TlsConfig.from_directory(str(tmp_path), n) for n in ("a", "b")}
        async with Node(net.runtime("a"), "a", tls=tls["a"]) as a:
            b = Node(net.runtime("b"), "b", tls=tls["b"])
            await b.start()
            await b.connect(*a.address)
            seen.append((net.now(), f"linked {sorted(a.links)}"))

            ca.revoke("b", now=NOW)
            net.crash("b")
            net.restart("b")
            await a.runtime.sleep(1.0)
            b = Node(net.runtime("b"), "b", tls=tls["b"])
            await b.start()
            start = net.now()
            try:
                await b.connect(*a.address)
            except ConnectError as exc:
                seen.append((net.now() - start, str(exc)))
            await b.stop()
            seen.append((net.now(), f"a links {sorted(a.links)}"))
        return seen

    seen = run_sim(main, line_graph())
    assert seen[0][1] == "linked ['b']"
    # The rejoin dies when a's reset reaches b: TCP, TLS, b's flight to a,
    # and the reset back: two and a half trips after the TLS round trip.
    took, error = seen[1]
    assert error.startswith("b: handshake with a:")
    assert took == pytest.approx(6 * A_B, abs=1e-12)


def test_tls_runs_replay_in_the_simulator(pki: Pki) -> None:
    from chaski_actors.sim.harness import run_sim
    from conftest import line_graph

    async def main(net: Any) -> str:
        a = Node(net.runtime("a"), "a", tls=pki.tls("a"))
        async with a, Node(net.runtime("c"), "c", tls=pki.tls("c")) as c:
            await c.subscribe("t")
            await a.connect(*c.address)
            for i in range(20):
                await a.publish("t", i)
            for _ in range(20):
                await c.receive()
        return str(net.trace.digest())

    first, second = (
        run_sim(main, line_graph(), seed=3),
        run_sim(main, line_graph(), seed=3),
    )
    assert first == second
