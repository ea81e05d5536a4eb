"""Mutual TLS for the real backend.

Both sides present a certificate and both verify the other's against the
node's root certificate: a server that asked for no client certificate would
let any process on the network in. Identity is the certificate's name, not
the host name, because nodes are found by discovery and their addresses
change; so ``check_hostname`` is off and the chain check is the gate. TLS 1.3
only: it has no renegotiation and one fewer round trip.

OpenSSL checks the chain and the validity window during the handshake.
Afterwards :func:`verified_identity` runs the backend-neutral check of
``chaski_actors.identity`` on the peer's certificate, the very code that the
simulated backend runs, which also reads the revocation list afresh; so a
revocation takes effect without restarting the node, and both backends
refuse exactly the same certificates. The price is that a revoked peer
completes the TLS handshake before it is dropped; it is never handed to the
node, so nothing it sends is read, but OpenSSL itself does not know the list.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time

from chaski_actors.errors import CertificateError, ConfigError
from chaski_actors.identity import load_certificate, load_trust, verify_certificate
from chaski_actors.runtime import TlsConfig

__all__ = ["client_context", "server_context", "verified_identity"]


def _base_context(purpose: int, tls: TlsConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_cert_chain(tls.certificate, tls.private_key)
        context.load_verify_locations(tls.ca_certificate)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files: {exc}") from exc
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    return _base_context(ssl.PROTOCOL_TLS_SERVER, tls)


def client_context(tls: TlsConfig) -> ssl.SSLContext:
    context = _base_context(ssl.PROTOCOL_TLS_CLIENT, tls)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def verified_identity(transport: asyncio.BaseTransport, tls: TlsConfig) -> str:
    """The peer's name, from its certificate, checked; CertificateError if bad."""
    ssl_object = transport.get_extra_info("ssl_object")
    der = None if ssl_object is None else ssl_object.getpeercert(binary_form=True)
    if not der:
        raise CertificateError("the peer presented no certificate")
    now = dt.datetime.fromtimestamp(time.time(), dt.UTC)
    return verify_certificate(load_certificate(der), load_trust(tls), now)
