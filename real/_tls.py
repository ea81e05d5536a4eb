"""Mutual TLS contexts for the real backend.

Both sides present a certificate and both verify the other's against the
node's root certificate: a server that asked for no client certificate would
let any process on the network in. Identity is the certificate's common
name, not the host name, because nodes are found by discovery and their
addresses change; so ``check_hostname`` is off and the chain check is the
gate. TLS 1.3 only: it has no renegotiation and one fewer round trip.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from chaski_actors.errors import ConfigError
from chaski_actors.runtime import TlsConfig


def _base_context(purpose: int, tls: TlsConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_cert_chain(tls.certificate, tls.private_key)
        context.load_verify_locations(tls.ca_certificate)
        if tls.revocation_list is not None:
            context.load_verify_locations(tls.revocation_list)
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
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


def peer_name(transport: asyncio.BaseTransport) -> str | None:
    """The common name of the peer's verified certificate, if any."""
    cert: Any = transport.get_extra_info("peercert")
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
