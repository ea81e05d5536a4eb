"""Enrolment: how a new node gets its certificate over the network.

The CA prints a one-time token and its root's fingerprint; a person gives
both to the new node. The node then makes its own key (which never leaves
it) and asks the CA's enrolment service, over a plain TCP connection, for a
certificate. One request, one answer::

    node                                              CA
      | -- request: name, CSR, nonce, mac(token) ------> |
      | <-- issued: certificate, root, revocation list,  |
      |             mac(token) ------------------------- |
      |     or refused: reason ------------------------- |

The token is never sent. It is the key of an HMAC-SHA256 over each message,
so the service knows the request comes from a holder of a token it printed
(it tries each unused token, comparing in constant time) and the node knows
the answer comes from the service that printed its token. An eavesdropper
learns no token; a token used once is struck off, so a replayed request is
refused. The node also checks that the root it is given has the fingerprint
it was told, that the certificate is signed by that root, names the node and
holds the node's own public key. The certificate signing request (CSR) is
signed with the node's key, which proves that the requester holds it.

Both sides are sans-IO state machines, :class:`EnrolmentClient` and
:class:`EnrolmentServer`: bytes in, events out, bytes to send out. Frames use
the codec's envelope (msgpack arrays, length prefix, version byte, a small
size limit since certificates are small) and each kind has a fixed schema;
anything else is a :class:`ProtocolError`, the only exception that escapes
either machine. :func:`enrol` and :func:`serve_enrolment` drive them over a
runtime, so enrolment runs on both backends.

States, as data in :data:`CLIENT_STEPS` and :data:`SERVER_STEPS`::

    client: SENDING -> AWAITING_ANSWER -> ENROLLED | REFUSED
    server: AWAITING_REQUEST -> DECIDING -> ANSWERED
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from .ca import CertificateAuthority, parse_ip, private_key_pem, write_private
from .codec import ExtTypes, FrameDecoder, encode_frame
from .errors import (
    BrokenResourceError,
    CertificateError,
    ConfigError,
    ConnectError,
    ProtocolError,
)
from .identity import (
    Trust,
    check_name,
    check_revocation_list,
    fingerprint,
    load_certificate,
    load_trust,
    verify_certificate,
)
from .log import node_logger
from .runtime import Listener, Runtime, Stream, TlsConfig

__all__ = [
    "CLIENT_STEPS",
    "ENROLMENT_MAX_FRAME",
    "SERVER_STEPS",
    "ClientState",
    "EnrolmentClient",
    "EnrolmentServer",
    "Issued",
    "ListClient",
    "ListWanted",
    "Request",
    "ServerState",
    "enrol",
    "fetch_revocations",
    "serve_enrolment",
]

REQUEST: Final = 1  # name, CSR (DER), nonce, mac
ISSUED: Final = 2  # certificate (DER), root (DER), revocation list (PEM), mac
REFUSED: Final = 3  # reason
LIST_WANTED: Final = 4  # (nothing): "send me your revocation list"
LIST: Final = 5  # revocation list (PEM)

# Certificates and lists are a few hundred bytes each; 64 KiB leaves room
# for a revocation list of a thousand entries and bounds what a stranger
# can make the service buffer.
ENROLMENT_MAX_FRAME: Final = 64 * 1024
_NONCE: Final = 32
_MAC: Final = 32
# A person types the token; 16 bytes (32 hex digits) is beyond guessing.
TOKEN_BYTES: Final = 16

_SCHEMAS: Final[dict[int, tuple[str, tuple[type, ...]]]] = {
    REQUEST: ("request", (str, bytes, bytes, bytes)),
    ISSUED: ("issued", (bytes, bytes, bytes, bytes)),
    REFUSED: ("refused", (str,)),
    LIST_WANTED: ("list-wanted", ()),
    LIST: ("list", (bytes,)),
}
# Only the codec's plain msgpack types: enrolment needs no extension types,
# and a stranger's bytes should reach as little code as possible.
_NO_EXT: Final = ExtTypes(builtins=False)


class ClientState(enum.Enum):
    SENDING = "sending"
    AWAITING_ANSWER = "awaiting-answer"
    ENROLLED = "enrolled"
    REFUSED = "refused"


class ServerState(enum.Enum):
    AWAITING_REQUEST = "awaiting-request"
    DECIDING = "deciding"
    ANSWERED = "answered"


# (state, frame kind received) -> next state; any other pair is an error.
CLIENT_STEPS: Final = {
    (ClientState.AWAITING_ANSWER, ISSUED): ClientState.ENROLLED,
    (ClientState.AWAITING_ANSWER, REFUSED): ClientState.REFUSED,
}
SERVER_STEPS: Final = {
    (ServerState.AWAITING_REQUEST, REQUEST): ServerState.DECIDING,
    (ServerState.AWAITING_REQUEST, LIST_WANTED): ServerState.DECIDING,
}


@dataclass(frozen=True, slots=True)
class Request:
    """A request whose token checked out: who asks, for which key."""

    name: str
    public_key: ed25519.Ed25519PublicKey
    ips: tuple[str, ...]
    token: str


@dataclass(frozen=True, slots=True)
class ListWanted:
    """A node asks for the current revocation list (no token needed: the
    list is public, and signed, so it cannot be forged on the way)."""


@dataclass(frozen=True, slots=True)
class Issued:
    """What an enrolled node receives: all of it checked."""

    certificate: x509.Certificate
    root: x509.Certificate
    revocations: bytes


def _frame(kind: int, *fields: Any) -> bytes:
    return encode_frame(
        [kind, *fields], ext=_NO_EXT, max_frame_size=ENROLMENT_MAX_FRAME
    )


def _mac(token: str, label: bytes, *parts: bytes) -> bytes:
    message = hashlib.sha256()
    for part in (label, *parts):
        # Length-prefixed, so that no two different sequences of parts
        # produce the same message.
        message.update(len(part).to_bytes(4, "big") + part)
    return hmac.new(token.encode(), message.digest(), hashlib.sha256).digest()


class _Frames:
    """A decoder plus the schema check that both machines share."""

    def __init__(self) -> None:
        self._decoder = FrameDecoder(max_frame_size=ENROLMENT_MAX_FRAME, ext=_NO_EXT)

    def feed(self, data: bytes) -> list[tuple[int, tuple[Any, ...]]]:
        return [self._check(item) for item in self._decoder.feed(data)]

    @staticmethod
    def _check(item: object) -> tuple[int, tuple[Any, ...]]:
        if not isinstance(item, list) or not item or type(item[0]) is not int:
            raise ProtocolError("an enrolment frame must be [kind, fields...]")
        schema = _SCHEMAS.get(item[0])
        if schema is None:
            raise ProtocolError(f"unknown enrolment frame kind {item[0]!r}")
        name, types = schema
        fields = tuple(item[1:])
        if len(fields) != len(types) or not all(
            type(value) is kind for value, kind in zip(fields, types, strict=False)
        ):
            raise ProtocolError(f"malformed enrolment {name} frame")
        return item[0], fields


class EnrolmentClient:
    """The node's side; see the module essay.

    ``request()`` gives the bytes to send; feed what comes back to
    ``receive_data`` until it returns an :class:`Issued`. A refusal, a bad
    answer or anything that does not check out raises ProtocolError
    (CertificateError for a certificate that does not).
    """

    def __init__(
        self,
        name: str,
        key: ed25519.Ed25519PrivateKey,
        *,
        token: str,
        ca_fingerprint: str,
        nonce: bytes,
        ips: Sequence[str] = (),
    ) -> None:
        self.name = check_name(name)
        self.state = ClientState.SENDING
        self._key = key
        self._token = token
        self._pin = ca_fingerprint.replace(":", "").lower()
        self._nonce = nonce
        self._ips = tuple(ips)
        self._frames = _Frames()

    def __repr__(self) -> str:
        return f"<EnrolmentClient {self.name} {self.state.value}>"

    def request(self) -> bytes:
        if self.state is not ClientState.SENDING:
            raise ProtocolError(f"the request was already sent ({self.state.value})")
        csr = _signing_request(self.name, self._key, self._ips)
        mac = _mac(self._token, b"request", self.name.encode(), csr, self._nonce)
        self.state = ClientState.AWAITING_ANSWER
        return _frame(REQUEST, self.name, csr, self._nonce, mac)

    def receive_data(self, data: bytes, *, now: dt.datetime) -> Issued | None:
        try:
            frames = self._frames.feed(data)
            for kind, fields in frames:
                return self._answer(kind, fields, now)
        except ProtocolError:
            self.state = ClientState.REFUSED
            raise
        return None

    def _answer(self, kind: int, fields: tuple[Any, ...], now: dt.datetime) -> Issued:
        step = CLIENT_STEPS.get((self.state, kind))
        if step is None:
            raise ProtocolError(f"unexpected enrolment frame in {self.state.value}")
        self.state = step
        if kind == REFUSED:
            raise ProtocolError(f"the CA refused to enrol {self.name!r}: {fields[0]}")

        certificate_der, root_der, revocations, mac = fields
        expected = _mac(
            self._token, b"issued", self._nonce, certificate_der, root_der, revocations
        )
        if not hmac.compare_digest(expected, mac):
            raise ProtocolError("the answer is not from the CA that made the token")
        return self._check_issued(certificate_der, root_der, revocations, now)

    def _check_issued(
        self,
        certificate_der: bytes,
        root_der: bytes,
        revocations: bytes,
        now: dt.datetime,
    ) -> Issued:
        root = load_certificate(root_der)
        if fingerprint(root) != self._pin:
            raise CertificateError(
                f"the CA's root has fingerprint {fingerprint(root)}, "
                f"not the pinned {self._pin}"
            )
        certificate = load_certificate(certificate_der)
        verify_certificate(certificate, Trust(root), now, expected_name=self.name)
        own = self._key.public_key().public_bytes_raw()
        theirs = certificate.public_key()
        if (
            not isinstance(theirs, ed25519.Ed25519PublicKey)
            or theirs.public_bytes_raw() != own
        ):
            raise CertificateError("the certificate holds someone else's key")
        return Issued(certificate, root, revocations)


class EnrolmentServer:
    """The CA's side of one connection; see the module essay.

    ``receive_data`` returns a :class:`Request` once one has arrived and its
    token checked out against ``tokens``; the driver then calls ``issue``
    or ``refuse`` for the bytes of the answer. A request whose token does not
    check out is answered by ``receive_data`` raising ProtocolError, after
    which ``refusal()`` gives the bytes that tell the node.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        self.state = ServerState.AWAITING_REQUEST
        self._tokens = list(tokens)
        self._frames = _Frames()
        self._request: Request | None = None
        self._nonce = b""

    def __repr__(self) -> str:
        return f"<EnrolmentServer {self.state.value}>"

    def receive_data(self, data: bytes) -> Request | ListWanted | None:
        for kind, fields in self._frames.feed(data):
            step = SERVER_STEPS.get((self.state, kind))
            if step is None:
                raise ProtocolError(f"unexpected enrolment frame in {self.state.value}")
            self.state = step
            if kind == LIST_WANTED:
                return ListWanted()
            self._request = self._check_request(*fields)
            return self._request
        return None

    def revocation_list(self, pem: bytes) -> bytes:
        """The answer to :class:`ListWanted`: the CA's current list."""
        if self.state is not ServerState.DECIDING:
            raise ProtocolError(f"nothing to answer in {self.state.value}")
        self.state = ServerState.ANSWERED
        return _frame(LIST, pem)

    def _check_request(
        self, name: str, csr_der: bytes, nonce: bytes, mac: bytes
    ) -> Request:
        if len(nonce) != _NONCE or len(mac) != _MAC:
            raise ProtocolError("malformed enrolment request")
        self._nonce = nonce
        token = None
        for candidate in self._tokens:
            expected = _mac(candidate, b"request", name.encode(), csr_der, nonce)
            if hmac.compare_digest(expected, mac):
                token = candidate
        if token is None:
            raise ProtocolError("wrong or already used enrolment token")
        try:
            check_name(name)
            csr = x509.load_der_x509_csr(csr_der)
        except (ConfigError, ValueError) as exc:
            raise ProtocolError(f"bad enrolment request: {exc}") from exc
        key = csr.public_key()
        if not isinstance(key, ed25519.Ed25519PublicKey) or not csr.is_signature_valid:
            raise ProtocolError("the request is not signed by an Ed25519 key")
        if csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value != name:
            raise ProtocolError("the request's subject is not the name asked for")
        return Request(name, key, _requested_ips(csr), token)

    def issue(self, certificate: bytes, root: bytes, revocations: bytes) -> bytes:
        """The answer carrying a certificate (DER), the root (DER), the list."""
        request = self._decided()
        mac = _mac(
            request.token, b"issued", self._nonce, certificate, root, revocations
        )
        self.state = ServerState.ANSWERED
        return _frame(ISSUED, certificate, root, revocations, mac)

    def refuse(self, reason: str) -> bytes:
        self.state = ServerState.ANSWERED
        return _frame(REFUSED, reason)

    def _decided(self) -> Request:
        if self.state is not ServerState.DECIDING or self._request is None:
            raise ProtocolError(f"nothing to answer in {self.state.value}")
        return self._request


def _signing_request(
    name: str, key: ed25519.Ed25519PrivateKey, ips: Sequence[str]
) -> bytes:
    alternatives: list[x509.GeneralName] = [x509.DNSName(name)]
    alternatives += [x509.IPAddress(parse_ip(text)) for text in ips]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName(alternatives), False)
        .sign(key, None)
    )
    return csr.public_bytes(serialization.Encoding.DER)


def _requested_ips(csr: x509.CertificateSigningRequest) -> tuple[str, ...]:
    try:
        alternatives = csr.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except (x509.ExtensionNotFound, ValueError):
        return ()
    return tuple(str(a) for a in alternatives.get_values_for_type(x509.IPAddress))


class ListClient:
    """Asks the enrolment service for its revocation list, and checks it.

    The list must be signed by ``root``, the root the node already trusts;
    anything else raises ProtocolError (CertificateError for a bad list).
    """

    def __init__(self, root: x509.Certificate) -> None:
        self._root = root
        self._frames = _Frames()
        self.state = ClientState.SENDING

    def __repr__(self) -> str:
        return f"<ListClient {self.state.value}>"

    def request(self) -> bytes:
        if self.state is not ClientState.SENDING:
            raise ProtocolError(f"the request was already sent ({self.state.value})")
        self.state = ClientState.AWAITING_ANSWER
        return _frame(LIST_WANTED)

    def receive_data(self, data: bytes) -> x509.CertificateRevocationList | None:
        for kind, fields in self._frames.feed(data):
            if self.state is not ClientState.AWAITING_ANSWER or kind != LIST:
                self.state = ClientState.REFUSED
                raise ProtocolError(f"unexpected frame in {self.state.value}")
            self.state = ClientState.ENROLLED
            return self._check(fields[0])
        return None

    def _check(self, pem: bytes) -> x509.CertificateRevocationList:
        try:
            revocations = x509.load_pem_x509_crl(pem)
        except ValueError as exc:
            raise CertificateError(f"not a revocation list: {exc}") from exc
        # The same check that every handshake makes on the list.
        check_revocation_list(revocations, self._root)
        return revocations


# -- drivers -----------------------------------------------------------------


def _utc(runtime: Runtime) -> dt.datetime:
    return dt.datetime.fromtimestamp(runtime.wall_clock(), dt.UTC)


async def enrol(
    runtime: Runtime,
    address: tuple[str, int],
    *,
    name: str,
    token: str,
    ca_fingerprint: str,
    directory: str | Path,
    ips: Sequence[str] = (),
    timeout_s: float = 10.0,
) -> TlsConfig:
    """Enrol node ``name`` with the service at ``address``; write its files.

    Writes ``NAME.key``, ``NAME.pem``, ``ca.pem`` and ``crl.pem`` (0600) into
    ``directory`` and returns the :class:`TlsConfig` for them. Raises
    ConnectError if the service cannot be reached or answers nothing in time,
    ProtocolError if it refuses or its answer does not check out.
    """
    key = ed25519.Ed25519PrivateKey.generate()
    client = EnrolmentClient(
        name,
        key,
        token=token,
        ca_fingerprint=ca_fingerprint,
        nonce=runtime.secret_bytes(_NONCE),
        ips=ips,
    )
    try:
        async with runtime.timeout(timeout_s):
            stream = await runtime.connect(*address)
            try:
                issued = await _exchange(runtime, stream, client)
            finally:
                stream.abort()
    except TimeoutError as exc:
        raise ConnectError(f"no answer from the CA at {address} in time") from exc

    folder = Path(directory)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(folder / f"{name}.key", private_key_pem(key))
    pem = serialization.Encoding.PEM
    write_private(folder / f"{name}.pem", issued.certificate.public_bytes(pem))
    write_private(folder / "ca.pem", issued.root.public_bytes(pem))
    write_private(folder / "crl.pem", issued.revocations)
    return TlsConfig.from_directory(str(folder), name)


async def _exchange(
    runtime: Runtime, stream: Stream, client: EnrolmentClient
) -> Issued:
    await stream.send(client.request())
    while True:
        data = await stream.receive(ENROLMENT_MAX_FRAME)
        if not data:
            raise BrokenResourceError("the CA closed the connection without answer")
        issued = client.receive_data(data, now=_utc(runtime))
        if issued is not None:
            return issued


async def serve_enrolment(
    runtime: Runtime,
    authority: CertificateAuthority,
    host: str,
    port: int,
    *,
    timeout_s: float = 10.0,
    max_connections: int = 16,
) -> Listener:
    """Answer enrolment requests on ``(host, port)`` until the listener closes.

    A connection that has not sent a whole request within ``timeout_s`` is
    dropped; at most ``max_connections`` are served at once (arbitrary: a CA
    enrols people's nodes, not a crowd).
    """
    log = node_logger("security", runtime, "ca")

    async def handle(stream: Stream) -> None:
        server = EnrolmentServer(authority.tokens())
        peer = "{}:{}".format(*stream.peer_address)
        try:
            async with runtime.timeout(timeout_s):
                answer = await _decide(runtime, stream, server, authority)
            await stream.send(answer)
            await stream.aclose()
        except ProtocolError as exc:
            log.warning("refused enrolment from %s: %s", peer, exc)
            await _send_refusal(stream, server, str(exc))
        except (TimeoutError, BrokenResourceError) as exc:
            log.info("dropped enrolment connection from %s: %r", peer, exc)
            stream.abort()

    return await runtime.listen(host, port, handle, max_connections=max_connections)


async def _decide(
    runtime: Runtime,
    stream: Stream,
    server: EnrolmentServer,
    authority: CertificateAuthority,
) -> bytes:
    request = None
    while request is None:
        data = await stream.receive(ENROLMENT_MAX_FRAME)
        if not data:
            raise BrokenResourceError("closed before a whole request arrived")
        request = server.receive_data(data)
    if isinstance(request, ListWanted):
        return server.revocation_list(authority.revocation_pem())
    now = _utc(runtime)
    if not authority.redeem_token(request.token, now=now):
        # Another connection redeemed the same token a moment ago.
        raise ProtocolError("wrong or already used enrolment token")
    issued = authority.issue(
        request.name, now=now, ips=request.ips, public_key=request.public_key
    )
    der = serialization.Encoding.DER
    node_logger("security", runtime, "ca").info(
        "enrolled %s (serial %s)", request.name, issued.certificate.serial_number
    )
    return server.issue(
        issued.certificate.public_bytes(der),
        authority.root.public_bytes(der),
        authority.revocation_pem(),
    )


async def _send_refusal(stream: Stream, server: EnrolmentServer, reason: str) -> None:
    try:
        await stream.send(server.refuse(reason))
        await stream.aclose()
    except BrokenResourceError:
        stream.abort()


async def fetch_revocations(
    runtime: Runtime,
    address: tuple[str, int],
    tls: TlsConfig,
    *,
    timeout_s: float = 10.0,
) -> bool:
    """Fetch the CA's revocation list into ``tls.revocation_list``.

    The list must be signed by ``tls.ca_certificate`` and no older than the
    one in place (an attacker replaying an old list must not un-revoke a
    node). Returns whether the file was replaced.
    """
    if tls.revocation_list is None:
        raise ConfigError("this TLS configuration names no revocation list file")
    client = ListClient(load_trust(tls).root)
    try:
        async with runtime.timeout(timeout_s):
            stream = await runtime.connect(*address)
            try:
                await stream.send(client.request())
                fresh = None
                while fresh is None:
                    data = await stream.receive(ENROLMENT_MAX_FRAME)
                    if not data:
                        raise BrokenResourceError("the CA closed without answer")
                    fresh = client.receive_data(data)
            finally:
                stream.abort()
    except TimeoutError as exc:
        raise ConnectError(f"no answer from the CA at {address} in time") from exc

    current = load_trust(tls).revocations
    if current is not None and fresh.last_update_utc < current.last_update_utc:
        raise CertificateError("the CA sent a list older than the one in place")
    pem = fresh.public_bytes(serialization.Encoding.PEM)
    if current is not None and current.public_bytes(serialization.Encoding.PEM) == pem:
        return False
    write_private(Path(tls.revocation_list), pem)
    return True
