"""Hostile input: fuzzing every protocol state machine, and a node as a whole.

Each machine is fed bytes or values that hypothesis makes up, and the rule is
the same for all of them: the documented ProtocolError is the only exception
that may come out. The example count is 100 by default, to keep the suite
fast; ``CHASKI_FUZZ_EXAMPLES=N`` runs N per test for a longer campaign.
"""

from __future__ import annotations

import ast
import datetime as dt
import os
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pki import Pki

from chaski_actors import Node, ProtocolError
from chaski_actors.codec import FrameDecoder, encode_frame
from chaski_actors.discovery import Announcement, Discovery, Routes, parse_routes
from chaski_actors.enrolment import (
    ENROLMENT_MAX_FRAME,
    ISSUED,
    REFUSED,
    REQUEST,
    EnrolmentClient,
    EnrolmentServer,
    ListClient,
)
from chaski_actors.files import Files
from chaski_actors.node import _publish_messages
from chaski_actors.protocol import (
    HELLO,
    PUB,
    SCHEMAS,
    SEQ,
    LinkProtocol,
    LinkState,
    check_numbered,
)
from chaski_actors.remote import Remote
from chaski_actors.session import Session
from chaski_actors.sim.harness import run_sim
from chaski_actors.streamer import Streams

EXAMPLES = int(os.environ.get("CHASKI_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Kinds that exist, and a few that do not.
kinds = st.sampled_from(sorted(SCHEMAS)) | st.integers(-3, 300)


small_ints = st.integers(-2, 40) | st.integers(-(2**63), 2**64 - 1)
# A strategy per field type of the schemas: a made-up value of the right
# type gets a frame past the schema check and into the node's handlers.
by_type: dict[type, st.SearchStrategy[Any]] = {
    str: st.sampled_from(["t", "a", "x", "b", ""]) | st.text(max_size=12),
    int: small_ints,
    float: st.floats(allow_nan=True),
    bool: st.booleans(),
    bytes: st.binary(max_size=40),
    list: st.lists(values, max_size=4),
    dict: st.dictionaries(st.text(max_size=8), values, max_size=4),
    object: values,
}


def _field(types: tuple[type, ...]) -> st.SearchStrategy[Any]:
    return st.one_of([by_type[t] for t in types])


@st.composite
def frame_values(draw: st.DrawFn, depth: int = 1) -> list[Any]:
    """One frame's value: mostly the right shape, with made-up fields."""
    kind = draw(kinds)
    schema = SCHEMAS.get(kind)
    if schema is not None and draw(st.integers(0, 4)):
        fields = [draw(_field(types)) for types in schema.fields]
        if kind == SEQ and depth:
            # A numbered frame: frames inside, sometimes well formed, with
            # numbers anywhere up to where an ack can no longer carry them.
            fields[0] = draw(small_ints | st.integers(2**64 - 8, 2**64 - 1))
            fields[2] = draw(st.lists(frame_values(depth=depth - 1), max_size=4))
    else:
        fields = draw(st.lists(values, max_size=7))
    return [kind, *fields]


def _encoded(value: list[Any]) -> bytes:
    try:
        return encode_frame(value)
    except ProtocolError:
        assume(False)
        raise


def frames() -> st.SearchStrategy[bytes]:
    """One well-framed frame, made of :func:`frame_values`."""
    return frame_values().map(_encoded)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return [piece for piece in pieces if piece]


stream_bytes = st.lists(frames() | st.binary(max_size=64), max_size=8).map(b"".join)
cuts = st.lists(st.integers(0, 10_000), max_size=6)


@FUZZ
@given(stream_bytes, cuts)
def test_frame_decoder(data: bytes, where: list[int]) -> None:
    decoder = FrameDecoder(max_frame_size=4096)
    try:
        for piece in chunked(data, where):
            decoder.feed(piece)
    except ProtocolError:
        pass


@FUZZ
@given(stream_bytes, cuts, st.booleans())
def test_link_protocol(data: bytes, where: list[int], greeted: bool) -> None:
    protocol = LinkProtocol(max_frame_size=4096)
    hello = protocol.encode(HELLO, "x", "id", "h", 1, [], {})
    if greeted:
        data = hello + data
    accepted = []
    for piece in chunked(data, where):
        got, error = protocol.receive_data(piece)
        accepted += got
        assert error is None or isinstance(error, ProtocolError)
        if error is not None:
            assert protocol.state is LinkState.CLOSED
            break
    # Nothing is handed on before the peer's hello.
    assert not accepted or accepted[0].kind == HELLO


@FUZZ
@given(st.lists(frame_values(), max_size=5))
def test_numbered_frames_inside(items: list[Any]) -> None:
    try:
        checked = check_numbered(items)
    except ProtocolError:
        return
    assert len(checked) == len(items) > 0
    assert all(frame.kind in SCHEMAS and frame.kind != SEQ for frame in checked)


@FUZZ
@given(st.lists(frame_values(), max_size=5))
def test_numbered_publishes_taken_in_one_pass(items: list[Any]) -> None:
    quick = _publish_messages(items, "peer", lambda: 1.0)
    try:
        checked = check_numbered(items)
    except ProtocolError:
        assert quick is None
        return
    # The node's one-pass reading of publishes accepts nothing the full
    # check refuses, and reads the same fields.
    if quick is not None:
        messages, mixed = quick
        assert [f.kind for f in checked] == [PUB] * len(messages)
        # The very objects, compared by identity: a NaN is not equal to itself.
        for message, frame in zip(messages, checked, strict=True):
            topic, data, _source, sent_at, _received_at = message
            assert frame.fields[0] is topic
            assert frame.fields[1] is data
            assert frame.fields[2] is sent_at
        assert all(m.source == "peer" and m.received_at == 1.0 for m in messages)
        assert mixed == (len({m.topic for m in messages}) > 1)


def test_numbered_frames_refuse_what_belongs_to_a_connection() -> None:
    pub = [PUB, "t", b"x", 0.0]
    assert [f.kind for f in check_numbered([pub, pub])] == [PUB, PUB]
    for items in (
        [],
        [pub, [SEQ, 1, 0, [pub]]],
        [[HELLO, "x", "id", "h", 1, [], {}]],
        [pub, "not a frame"],
        [[[PUB], "t", b"x", 0.0]],
        [[PUB, "t", b"x", True]],
        [[PUB, 5, b"x", 0.0]],
    ):
        with pytest.raises(ProtocolError):
            check_numbered(items)


def test_numbers_beyond_64_bits_are_refused() -> None:
    session = Session(4)
    assert session.accept(2**64 - 2, 2) == 2
    with pytest.raises(ProtocolError):
        session.accept(2**64 - 1, 2)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["ack", "seq", "resume"]), values)))
def test_session(events: list[tuple[str, Any]]) -> None:
    session = Session(4)
    for _ in range(3):
        session.push(b"frame")
    for event, value in events:
        number = value if type(value) is int else 0
        try:
            if event == "ack":
                session.acknowledge(number)
            elif event == "seq":
                session.accept(number, 1 + abs(number) % 3)
            else:
                session.resume(
                    continued=bool(value), peer_received=number, peer_base=number
                )
        except ProtocolError:
            pass


@FUZZ
@given(st.lists(st.tuples(st.text(max_size=4), st.integers(), st.integers())))
def test_discovery(announcements: list[tuple[str, int, int]]) -> None:
    discovery = Discovery("me", memory=8, ttl=4)
    for origin, ident, ttl in announcements:
        announcement = Announcement(origin, "id", "h", 1, ("t",), ident, ttl)
        new, relay = discovery.receive(announcement)
        if relay is not None:
            assert relay.ttl == ttl - 1 and new
        discovery.wants(announcement, ["t"], linked=False)


route_entries = st.lists(
    st.lists(st.text(max_size=2) | st.integers(-2, 40), min_size=5, max_size=7)
    | values,
    max_size=6,
)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["p", "q"]), st.booleans(), route_entries)))
def test_topic_routes(frames: list[tuple[str, bool, list[object]]]) -> None:
    routes = Routes("me", reach=8, capacity=4)
    routes.add_neighbour("p")
    routes.add_neighbour("q")
    for neighbour, whole, entries in frames:
        try:
            routes.receive(neighbour, whole, parse_routes(entries))
        except ProtocolError:
            continue
        out, _news = routes.flush()
        for _to, _whole, told in out:
            assert all(-1 <= entry[5] < 8 for entry in told)  # type: ignore[operator]
        assert routes.size() <= 8


@st.composite
def enrolment_frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from([REQUEST, ISSUED, REFUSED]) | st.integers(-2, 9))
    fields = draw(st.lists(st.binary(max_size=64) | values, max_size=5))
    try:
        return encode_frame([kind, *fields], max_frame_size=ENROLMENT_MAX_FRAME)
    except ProtocolError:
        assume(False)
        raise


enrolment_bytes = st.lists(enrolment_frames() | st.binary(max_size=48), max_size=4)


@FUZZ
@given(enrolment_bytes.map(b"".join), cuts)
def test_enrolment_server(data: bytes, where: list[int]) -> None:
    server = EnrolmentServer(["00" * 16])
    try:
        for piece in chunked(data, where):
            server.receive_data(piece)
    except ProtocolError:
        pass


_KEY = ed25519.Ed25519PrivateKey.generate()


@FUZZ
@given(enrolment_bytes.map(b"".join), cuts)
def test_enrolment_client(data: bytes, where: list[int]) -> None:
    client = EnrolmentClient(
        "n", _KEY, token="00" * 16, ca_fingerprint="ab" * 32, nonce=bytes(32)
    )
    client.request()
    try:
        for piece in chunked(data, where):
            assert client.receive_data(piece, now=NOW) is None
    except ProtocolError:
        pass


@FUZZ
@given(enrolment_bytes.map(b"".join), cuts)
def test_list_client(pki: Pki, data: bytes, where: list[int]) -> None:
    client = ListClient(pki.ca.root)
    client.request()
    try:
        for piece in chunked(data, where):
            client.receive_data(piece)
    except ProtocolError:
        pass


# -- a whole node --------------------------------------------------------------


@settings(
    max_examples=max(EXAMPLES // 4, 10),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(frames(), min_size=1, max_size=12), st.booleans())
def test_a_node_survives_any_frames(sent: list[bytes], greeted: bool) -> None:
    """After any frames from a peer, the node has crashed no task and still works."""
    graph: nx.Graph[str] = nx.Graph()
    graph.add_edge("a", "x", latency=0.001)
    graph.add_edge("a", "b", latency=0.001)

    async def main(net: Any) -> tuple[list[Any], str]:
        async with Node(net.runtime("a"), "a") as a, Node(net.runtime("b"), "b") as b:
            Remote(a)
            Streams(a)
            Files(a)
            await a.subscribe("t")
            raw = await net.runtime("x").connect(*a.address)
            if greeted:
                await raw.send(encode_frame([HELLO, "x", "id", "x", 1, ["t"], {}]))
            for frame in sent:
                await raw.send(frame)
            await a.runtime.sleep(1.0)
            raw.abort()
            peer = await b.connect(*a.address)
            await b.ping("a")
            return list(net.kernel.crashes), peer.name

    crashes, name = run_sim(main, graph, limit=600.0)
    assert (crashes, name) == ([], "a")


# -- the simulated TLS handshake ---------------------------------------------------

tls_records = st.lists(
    st.tuples(st.sampled_from([22, 23, 0]), st.binary(max_size=200)).map(
        lambda kb: bytes([kb[0], 3, 3]) + len(kb[1]).to_bytes(2, "big") + kb[1]
    )
    | st.binary(max_size=40),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=max(EXAMPLES // 4, 10),
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(tls_records)
def test_a_tls_node_survives_any_handshake(pki: Pki, records: list[bytes]) -> None:
    """Made-up TLS records: the node refuses them, crashes nothing, still works."""
    graph: nx.Graph[str] = nx.Graph()
    graph.add_edge("a", "x", latency=0.001)
    graph.add_edge("a", "b", latency=0.001)

    async def main(net: Any) -> tuple[list[Any], str, list[str]]:
        a = Node(net.runtime("a"), "a", tls=pki.tls("a"))
        async with a, Node(net.runtime("b"), "b", tls=pki.tls("b")) as b:
            raw = await net.runtime("x").connect(*a.address)
            for record in records:
                await raw.send(record)
            await a.runtime.sleep(0.1)
            raw.abort()
            peer = await b.connect(*a.address)
            return list(net.kernel.crashes), peer.name, sorted(a.links)

    crashes, name, links = run_sim(main, graph, limit=600.0)
    assert (crashes, name, links) == ([], "a", ["b"])


# -- no code from the network ----------------------------------------------------


def test_no_eval_exec_or_pickle_anywhere() -> None:
    """Nothing in the package can turn received bytes into code."""
    root = Path(__file__).resolve().parent.parent
    banned_calls = {"eval", "exec", "compile", "__import__"}
    banned_modules = {"pickle", "cPickle", "dill", "marshal", "shelve", "jsonpickle"}
    found = []
    for folder in ("chaski_actors", "sim", "real"):
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in banned_calls
                ):
                    found.append(f"{path.name}:{node.lineno} calls {node.func.id}")
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                found += [
                    f"{path.name}:{node.lineno} imports {name}"
                    for name in names
                    if name.split(".")[0] in banned_modules
                ]
    assert found == []
