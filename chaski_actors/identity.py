"""Who a peer is: checking a node certificate, the same way on both backends.

A node's identity is its name, carried in its certificate twice: as the
subject's common name and as a DNS name among the subject alternative names
(the second is what standard TLS tools look at). A certificate proves that
name only if all of these hold, and :func:`verify_certificate` checks them
in this order, refusing with :class:`CertificateError` at the first that
fails:

1. **chain**: the certificate names our root as issuer and carries the
   root's signature. There is one level below the root and no intermediates,
   so the chain is one link long;
2. **validity window**: the time now (the runtime's wall clock, so virtual
   under ``sim``) lies between ``not_valid_before`` and ``not_valid_after``,
   for the certificate and for the root;
3. **role**: the certificate is not a CA certificate, so a node cannot sign
   certificates for others;
4. **revocation**: its serial number is not on the revocation list, and the
   list itself carries the root's signature (a forged list could otherwise
   un-revoke a node);
5. **name**: the common name is a valid node name and the same name is in
   the alternative names; when the caller expects a given name, it is that one.

Under ``real`` OpenSSL has already checked the chain and the window during the
TLS handshake; this check runs afterwards anyway, because it is the one that
also runs under ``sim`` and the one that reads the revocation list. The list
is read from its file at every check, so a revocation reaches running nodes
as soon as the new list is copied to them, without a restart.

Nothing here does I/O besides reading the trust files, and nothing reads a
clock: callers pass ``now``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from .errors import CertificateError, ConfigError
from .runtime import TlsConfig

__all__ = [
    "NAME_PATTERN",
    "Trust",
    "check_name",
    "check_revocation_list",
    "fingerprint",
    "load_certificate",
    "load_trust",
    "name_of",
    "verify_certificate",
]

# Node names become file names (D/NAME.pem) and DNS names in certificates, so
# they are kept to characters that are safe in both; 64 is the limit of a
# certificate's common name.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(name: str) -> str:
    """``name`` if it may be a node's certificate name; ConfigError if not."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise ConfigError(
            f"invalid node name {name!r}: use 1 to 64 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class Trust:
    """A root certificate and the revocation list it signed, if any."""

    root: x509.Certificate
    revocations: x509.CertificateRevocationList | None = None

    def __repr__(self) -> str:
        revoked = 0 if self.revocations is None else len(self.revocations)
        return f"<Trust root={fingerprint(self.root)[:16]} revoked={revoked}>"


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the DER form, as lowercase hex: what ``openssl x509
    -fingerprint -sha256`` prints, without the colons."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def load_certificate(data: bytes) -> x509.Certificate:
    """A certificate from PEM or DER bytes; CertificateError if neither."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"not a certificate: {exc}") from exc


def load_trust(tls: TlsConfig) -> Trust:
    """Read the root and the revocation list named by ``tls``.

    A revocation list path that does not exist yet counts as an empty list,
    so a node can be configured with the path before anything is revoked.
    """
    try:
        root = load_certificate(Path(tls.ca_certificate).read_bytes())
        revocations = None
        if tls.revocation_list is not None:
            path = Path(tls.revocation_list)
            if path.exists():
                revocations = x509.load_pem_x509_crl(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the TLS trust files: {exc}") from exc
    return Trust(root, revocations)


def name_of(certificate: x509.Certificate) -> str | None:
    """The certificate's common name, or None if it has none."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        return None
    value = names[0].value
    return value if isinstance(value, str) else None


def verify_certificate(
    certificate: x509.Certificate,
    trust: Trust,
    now: dt.datetime,
    *,
    expected_name: str | None = None,
) -> str:
    """The verified node name in ``certificate``; see the module essay."""
    _check_chain(certificate, trust.root)
    for which, cert in (("certificate", certificate), ("root", trust.root)):
        if now < cert.not_valid_before_utc:
            raise CertificateError(
                f"{which} {name_of(cert)!r} is not valid before "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
            )
        if now > cert.not_valid_after_utc:
            raise CertificateError(
                f"{which} {name_of(cert)!r} expired at "
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
            )
    if _is_ca(certificate):
        raise CertificateError("a CA certificate cannot identify a node")
    _check_revocation(certificate, trust)
    return _check_identity(certificate, expected_name)


def _check_chain(certificate: x509.Certificate, root: x509.Certificate) -> None:
    if certificate.issuer != root.subject:
        raise CertificateError(
            f"certificate was issued by {certificate.issuer.rfc4514_string()!r}, "
            f"not by our root {root.subject.rfc4514_string()!r}"
        )
    try:
        certificate.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateError(
            "certificate does not carry our root's signature"
        ) from exc


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(
            x509.BasicConstraints
        )
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _check_revocation(certificate: x509.Certificate, trust: Trust) -> None:
    revocations = trust.revocations
    if revocations is None:
        return
    check_revocation_list(revocations, trust.root)
    entry = revocations.get_revoked_certificate_by_serial_number(
        certificate.serial_number
    )
    if entry is not None:
        raise CertificateError(
            f"certificate {name_of(certificate)!r} (serial "
            f"{certificate.serial_number}) was revoked at "
            f"{entry.revocation_date_utc:%Y-%m-%d %H:%M:%S} UTC"
        )


def check_revocation_list(
    revocations: x509.CertificateRevocationList, root: x509.Certificate
) -> None:
    """CertificateError unless ``revocations`` was issued and signed by ``root``."""
    if revocations.issuer != root.subject or not revocations.is_signature_valid(
        root.public_key()  # type: ignore[arg-type]
    ):
        raise CertificateError("the revocation list is not signed by our root")


def _check_identity(certificate: x509.Certificate, expected: str | None) -> str:
    name = name_of(certificate)
    if name is None or NAME_PATTERN.fullmatch(name) is None:
        raise CertificateError(f"certificate has no valid node name: {name!r}")
    try:
        alternatives = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        alternatives = []
    if name not in alternatives:
        raise CertificateError(
            f"certificate for {name!r} lacks the name in its alternative names"
        )
    if expected is not None and name != expected:
        raise CertificateError(f"certificate is for {name!r}, expected {expected!r}")
    return name
