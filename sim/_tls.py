"""A simulated TLS 1.3 handshake: the same round trips and the same checks.

The simulator does not encrypt, but a node configured with certificates must
meet, under ``sim``, every refusal it would meet under ``real``, and pay the
same time to connect. So a TLS connection in the simulator runs this
exchange over the simulated stream, after the TCP handshake::

    client                                    server
      | -- hello: client nonce -------------------> |
      | <-- hello, certificate, signature --------- |  server nonce; the
      |                                             |  signature covers the
      |                                             |  client's nonce
      | -- certificate, signature ----------------> |  covers the server's
      |                                             |  nonce
      connect() returns                     handler starts

as TLS 1.3 with client certificates does: the client may send data after
one round trip, and the server learns who the client is half a round trip
later. Each message is a record with TLS's own five-byte header (type 22,
version 3.3, length), and carries DER certificates and Ed25519 signatures of
their real sizes, so bandwidth is charged as on a real network, and a
plaintext peer is refused for the same reason as on a real one: the first
bytes are not what it expects.

The signatures prove that each side holds the key of the certificate it
shows; the certificate itself is checked with
:func:`chaski_actors.identity.verify_certificate`, the code that the real
backend runs after OpenSSL's handshake.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from chaski_actors.errors import CertificateError, ConfigError, ProtocolError
from chaski_actors.identity import load_certificate, load_trust, verify_certificate
from chaski_actors.runtime import Stream, TlsConfig

__all__ = ["client_handshake", "server_handshake"]

_HANDSHAKE: Final = 22
_HEADER: Final = 5
# TLS's own limit on a record's body.
_MAX_RECORD: Final = 16384
_NONCE: Final = 32
# Bytes that a real TLS 1.3 flight carries besides certificates and
# signatures (key shares, extensions, finished messages), measured roughly
# with OpenSSL 3 and Ed25519 keys. Charged so that the sizes are realistic.
_CLIENT_HELLO_EXTRA: Final = 220
_SERVER_FLIGHT_EXTRA: Final = 180
_CLIENT_FLIGHT_EXTRA: Final = 60

_SERVER_CONTEXT: Final = b"chaski simulated TLS 1.3, server signature\x00"
_CLIENT_CONTEXT: Final = b"chaski simulated TLS 1.3, client signature\x00"


class _Credentials:
    def __init__(self, tls: TlsConfig) -> None:
        try:
            self.certificate_der = load_certificate(
                Path(tls.certificate).read_bytes()
            ).public_bytes(serialization.Encoding.DER)
            key = serialization.load_pem_private_key(
                Path(tls.private_key).read_bytes(), None
            )
        except (OSError, ValueError, TypeError, CertificateError) as exc:
            raise ConfigError(f"cannot load TLS files: {exc}") from exc
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ConfigError("the simulated TLS handshake needs an Ed25519 key")
        self.key = key


async def client_handshake(
    stream: Stream, tls: TlsConfig, nonce: bytes, now: dt.datetime
) -> tuple[str, bytes]:
    """Run the client side; the server's verified name and any bytes after."""
    own = _Credentials(tls)
    await stream.send(_record(nonce + bytes(_CLIENT_HELLO_EXTRA)))

    reader = _RecordReader(stream)
    body = await reader.next()
    server_nonce, rest = body[:_NONCE], body[_NONCE:]
    certificate, signature, _ = _split_certificate(rest)
    name = _check(certificate, signature, _SERVER_CONTEXT + nonce, tls, now)

    proof = own.key.sign(_CLIENT_CONTEXT + server_nonce)
    await stream.send(
        _record(_certificate_part(own.certificate_der, proof, _CLIENT_FLIGHT_EXTRA))
    )
    return name, reader.leftover()


async def server_handshake(
    stream: Stream, tls: TlsConfig, nonce: bytes, now: dt.datetime
) -> tuple[str, bytes]:
    """Run the server side; the client's verified name and any bytes after."""
    own = _Credentials(tls)
    reader = _RecordReader(stream)
    hello = await reader.next()
    client_nonce = hello[:_NONCE]
    if len(client_nonce) != _NONCE:
        raise ProtocolError("the TLS client hello is too short")

    proof = own.key.sign(_SERVER_CONTEXT + client_nonce)
    await stream.send(
        _record(
            nonce + _certificate_part(own.certificate_der, proof, _SERVER_FLIGHT_EXTRA)
        )
    )

    certificate, signature, _ = _split_certificate(await reader.next())
    if not certificate:
        raise CertificateError("the peer presented no client certificate")
    name = _check(certificate, signature, _CLIENT_CONTEXT + nonce, tls, now)
    return name, reader.leftover()


def _check(
    der: bytes, signature: bytes, signed: bytes, tls: TlsConfig, now: dt.datetime
) -> str:
    if not der:
        raise CertificateError("the peer presented no certificate")
    certificate = load_certificate(der)
    name = verify_certificate(certificate, load_trust(tls), now)
    key = certificate.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise CertificateError(f"certificate for {name!r} holds no Ed25519 key")
    try:
        key.verify(signature, signed)
    except InvalidSignature as exc:
        raise CertificateError(f"the peer does not hold the key of {name!r}") from exc
    return name


def _record(body: bytes) -> bytes:
    if len(body) > _MAX_RECORD:
        raise ConfigError(f"a certificate of {len(body)} bytes is too large")
    return bytes([_HANDSHAKE, 3, 3]) + len(body).to_bytes(2, "big") + body


def _certificate_part(der: bytes, signature: bytes, padding: int) -> bytes:
    return (
        len(der).to_bytes(2, "big")
        + der
        + len(signature).to_bytes(2, "big")
        + signature
        + bytes(padding)
    )


def _split_certificate(body: bytes) -> tuple[bytes, bytes, bytes]:
    """(certificate DER, signature, the rest), or ProtocolError if cut short."""
    if len(body) < 2:
        raise ProtocolError("a TLS certificate message is cut short")
    size = int.from_bytes(body[:2], "big")
    der, body = body[2 : 2 + size], body[2 + size :]
    if len(der) != size or len(body) < 2:
        raise ProtocolError("a TLS certificate message is cut short")
    size = int.from_bytes(body[:2], "big")
    signature, rest = body[2 : 2 + size], body[2 + size :]
    if len(signature) != size:
        raise ProtocolError("a TLS certificate message is cut short")
    return der, signature, rest


class _RecordReader:
    """Reads handshake records off a stream, keeping what follows them."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> bytes:
        while True:
            if len(self._buffer) >= _HEADER:
                kind, major = self._buffer[0], self._buffer[1]
                if kind != _HANDSHAKE or major != 3:
                    raise ProtocolError("the peer does not speak TLS")
                size = int.from_bytes(self._buffer[3:5], "big")
                if size > _MAX_RECORD:
                    raise ProtocolError(f"a TLS record of {size} bytes is too long")
                if len(self._buffer) >= _HEADER + size:
                    body = bytes(self._buffer[_HEADER : _HEADER + size])
                    del self._buffer[: _HEADER + size]
                    return body
            data = await self._stream.receive(65536)
            if not data:
                raise ProtocolError("the peer closed the connection during TLS")
            self._buffer += data

    def leftover(self) -> bytes:
        return bytes(self._buffer)
