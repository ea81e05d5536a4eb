"""The certificate authority: a root, node certificates, revocations, tokens.

A CA lives in one directory, every file of which is written with mode 0600
(readable by its owner alone), atomically (written aside, then renamed), so
a crash never leaves half a key:

``ca.pem``    the root certificate; nodes trust what it signed
``ca.key``    the root's private key, encrypted with the CA's passphrase
``crl.pem``   the revocation list, signed by the root, rewritten on revoke
``ca.json``   the ledger: next serial number, who holds which serial, which
              serials are revoked, and the enrolment tokens not yet used
``NAME.pem``  a node's certificate, and ``NAME.key`` its (unencrypted) key,
              when the CA issued them locally with :meth:`issue_files`

Keys are Ed25519: generating one takes microseconds where RSA takes a good
fraction of a second, its signatures have a fixed size, and OpenSSL (so
Python's ``ssl`` module and every standard TLS tool) accepts it in TLS 1.3.

Serial numbers count up from 1 rather than being random. Random serials
defend against collision attacks on weak hashes, which Ed25519 does not use,
and a counter lets the ledger and the revocation list be read by a person.

Enrolment tokens are one-time secrets. They never cross the network: the
enrolment protocol (``chaski_actors.enrolment``) uses a token as the key of a
message authentication code, so the CA must keep the token itself, in the
ledger, which is why the ledger is as private as the key. A token is struck
off when it is redeemed, so it cannot be used twice. Tokens do not expire:
one that was printed and never used stays valid until it is redeemed, so a
CA operator who hands one out and changes their mind has to edit
``ca.json`` to strike it. The randomness for a
token comes from the caller (``Runtime.secret_bytes``), which keeps this
module free of any entropy source of its own.

Nothing here reads a clock either: every operation that stamps a time takes
``now``.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import ConfigError
from .identity import check_name, fingerprint, load_certificate

__all__ = ["DEFAULT_NODE_DAYS", "CertificateAuthority", "IssuedCertificate"]

# A node certificate lasts 90 days: short enough that a stolen key stops
# working on its own, long enough that renewing is a quarterly chore.
DEFAULT_NODE_DAYS = 90
# The root lasts ten years; replacing it means re-enrolling every node.
DEFAULT_ROOT_DAYS = 3650
# Certificates start five minutes in the past, so a node whose clock is a
# little behind the CA's does not refuse a certificate fresh from it.
_CLOCK_SKEW = dt.timedelta(minutes=5)
# Nodes do not refuse a stale list (a CA that is down must not stop the
# network), so next_update is informative; a year is what we announce.
_CRL_LIFETIME = dt.timedelta(days=365)


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate just issued, and its private key if the CA made it."""

    certificate: x509.Certificate
    private_key: ed25519.Ed25519PrivateKey | None

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def private_key_pem(self) -> bytes:
        if self.private_key is None:
            raise ConfigError("the node made its own key; the CA does not have it")
        return private_key_pem(self.private_key)


def private_key_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    """A node key as unencrypted PKCS#8 PEM: nodes start unattended."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    # The mode given to os.open is reduced by the umask; 0600 is what we want.
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


class CertificateAuthority:
    """A root key and its ledger in one directory; see the module essay.

    Create one with :meth:`create`, open an existing one with :meth:`open`.
    """

    def __init__(
        self,
        directory: Path,
        root: x509.Certificate,
        key: ed25519.Ed25519PrivateKey,
        ledger: dict[str, Any],
    ) -> None:
        self.directory = directory
        self.root = root
        self._key = key
        self._ledger = ledger

    def __repr__(self) -> str:
        return (
            f"<CertificateAuthority {self.directory} "
            f"issued={len(self._ledger['issued'])} "
            f"revoked={len(self._ledger['revoked'])} "
            f"tokens={len(self._ledger['tokens'])}>"
        )

    # -- creating and opening ------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: str | Path,
        passphrase: bytes,
        *,
        now: dt.datetime,
        name: str = "chaski-ca",
        days: int = DEFAULT_ROOT_DAYS,
    ) -> CertificateAuthority:
        """A new root in ``directory``; refuses to overwrite an existing one."""
        if not passphrase:
            raise ConfigError("the CA key needs a non-empty passphrase")
        directory = Path(directory)
        if (directory / "ca.key").exists():
            raise ConfigError(f"{directory} already holds a CA; refusing to replace it")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

        key = ed25519.Ed25519PrivateKey.generate()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        root = (
            _builder(subject, subject, key.public_key(), 1, start=now, days=days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
            .add_extension(_key_usage(signs_certificates=True), True)
            .sign(key, None)
        )
        ledger: dict[str, Any] = {
            "next_serial": 2,
            "issued": {},
            "revoked": {},
            "tokens": {},
        }
        encrypted = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )
        write_private(directory / "ca.key", encrypted)
        write_private(
            directory / "ca.pem", root.public_bytes(serialization.Encoding.PEM)
        )
        authority = cls(directory, root, key, ledger)
        authority._save(now)
        return authority

    @classmethod
    def open(cls, directory: str | Path, passphrase: bytes) -> CertificateAuthority:
        """The CA in ``directory``; ConfigError if absent or the passphrase is wrong."""
        directory = Path(directory)
        try:
            encrypted = (directory / "ca.key").read_bytes()
            root = load_certificate((directory / "ca.pem").read_bytes())
            ledger = json.loads((directory / "ca.json").read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"no usable CA in {directory}: {exc}") from exc
        try:
            key = serialization.load_pem_private_key(encrypted, passphrase)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"cannot unlock {directory / 'ca.key'}: wrong passphrase?"
            ) from exc
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ConfigError(f"{directory / 'ca.key'} is not an Ed25519 key")
        return cls(directory, root, key, ledger)

    @property
    def fingerprint(self) -> str:
        """The root's SHA-256 fingerprint, which enrolling nodes pin."""
        return fingerprint(self.root)

    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def revocation_pem(self) -> bytes:
        return (self.directory / "crl.pem").read_bytes()

    # -- issuing -------------------------------------------------------------

    def issue(
        self,
        name: str,
        *,
        now: dt.datetime,
        ips: Sequence[str] = (),
        days: int = DEFAULT_NODE_DAYS,
        public_key: ed25519.Ed25519PublicKey | None = None,
        valid_from: dt.datetime | None = None,
    ) -> IssuedCertificate:
        """A certificate for node ``name`` with ``ips`` among its alternative names.

        Without ``public_key`` the CA makes the node's key too. ``valid_from``
        backdates or postdates the window (tests use it for expired ones).
        """
        check_name(name)
        addresses = [parse_ip(text) for text in ips]
        private_key = None
        if public_key is None:
            private_key = ed25519.Ed25519PrivateKey.generate()
            public_key = private_key.public_key()

        serial = self._ledger["next_serial"]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        start = valid_from if valid_from is not None else now - _CLOCK_SKEW
        alternatives: list[x509.GeneralName] = [x509.DNSName(name)]
        alternatives += [x509.IPAddress(address) for address in addresses]
        certificate = (
            _builder(
                subject, self.root.subject, public_key, serial, start=start, days=days
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(_key_usage(signs_certificates=False), True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                False,
            )
            .add_extension(x509.SubjectAlternativeName(alternatives), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self._key.public_key()
                ),
                False,
            )
            .sign(self._key, None)
        )
        self._ledger["next_serial"] = serial + 1
        self._ledger["issued"][str(serial)] = name
        self._save(now)
        return IssuedCertificate(certificate, private_key)

    def issue_files(
        self,
        name: str,
        *,
        now: dt.datetime,
        ips: Sequence[str] = (),
        days: int = DEFAULT_NODE_DAYS,
    ) -> tuple[Path, Path]:
        """Issue for ``name`` and write ``NAME.pem`` and ``NAME.key`` here."""
        issued = self.issue(name, now=now, ips=ips, days=days)
        cert_path = self.directory / f"{name}.pem"
        key_path = self.directory / f"{name}.key"
        write_private(key_path, issued.private_key_pem())
        write_private(cert_path, issued.certificate_pem())
        return cert_path, key_path

    def renew(
        self, name: str, *, now: dt.datetime, days: int = DEFAULT_NODE_DAYS
    ) -> Path:
        """A fresh certificate for ``NAME.pem`` here, same key and addresses.

        The old certificate stays valid until it expires, so a node can keep
        running while the new one is copied to it.
        """
        check_name(name)
        path = self.directory / f"{name}.pem"
        try:
            old = load_certificate(path.read_bytes())
        except OSError as exc:
            raise ConfigError(f"nothing to renew: cannot read {path}") from exc
        public_key = old.public_key()
        if not isinstance(public_key, ed25519.Ed25519PublicKey):
            raise ConfigError(f"{path} does not hold an Ed25519 key")
        addresses = old.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.IPAddress)
        issued = self.issue(
            name,
            now=now,
            ips=[str(a) for a in addresses],
            days=days,
            public_key=public_key,
        )
        write_private(path, issued.certificate_pem())
        return path

    # -- revoking ------------------------------------------------------------

    def revoke(self, name: str, *, now: dt.datetime) -> list[int]:
        """Revoke every certificate issued to ``name``; the serials revoked."""
        check_name(name)
        serials = [
            int(serial)
            for serial, holder in self._ledger["issued"].items()
            if holder == name and serial not in self._ledger["revoked"]
        ]
        known = name in self._ledger["issued"].values()
        if not known:
            raise ConfigError(f"the CA never issued a certificate to {name!r}")
        stamp = now.isoformat()
        for serial in serials:
            self._ledger["revoked"][str(serial)] = stamp
        self._save(now)
        return serials

    def revoked(self) -> list[int]:
        return sorted(int(serial) for serial in self._ledger["revoked"])

    def holder(self, serial: int) -> str | None:
        name = self._ledger["issued"].get(str(serial))
        return name if isinstance(name, str) else None

    # -- enrolment tokens ----------------------------------------------------

    def create_token(self, secret: bytes, *, now: dt.datetime) -> str:
        """Record a one-time enrolment token made from ``secret`` and return it.

        ``secret`` must come from a secure source (``Runtime.secret_bytes``)
        and hold at least 16 bytes, so that guessing is hopeless.
        """
        if len(secret) < 16:
            raise ConfigError("an enrolment token needs at least 16 secret bytes")
        token = secret.hex()
        self._ledger["tokens"][token] = now.isoformat()
        self._save(now)
        return token

    def tokens(self) -> list[str]:
        """The tokens not yet redeemed, read afresh from the ledger file."""
        self._reload_tokens()
        return sorted(self._ledger["tokens"])

    def redeem_token(self, token: str, *, now: dt.datetime) -> bool:
        """True, once, for a token this CA created; False for any other."""
        match = None
        # Compare against every token in constant time, so the time taken
        # does not tell an attacker how much of a guess was right.
        for stored in self.tokens():
            if hmac.compare_digest(stored.encode(), token.encode()):
                match = stored
        if match is None:
            return False
        del self._ledger["tokens"][match]
        self._save(now)
        return True

    def _reload_tokens(self) -> None:
        # ``ca token`` may have added tokens while a server runs; the file
        # is the truth.
        try:
            stored = json.loads((self.directory / "ca.json").read_text())
        except (OSError, ValueError):
            return
        tokens = stored.get("tokens")
        if isinstance(tokens, dict):
            self._ledger["tokens"] = tokens

    # -- files ---------------------------------------------------------------

    def _save(self, now: dt.datetime) -> None:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.root.subject)
            .last_update(now - _CLOCK_SKEW)
            .next_update(now + _CRL_LIFETIME)
        )
        for serial, when in sorted(self._ledger["revoked"].items()):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial))
                .revocation_date(dt.datetime.fromisoformat(when))
                .build()
            )
        crl = builder.sign(self._key, None)
        write_private(
            self.directory / "crl.pem", crl.public_bytes(serialization.Encoding.PEM)
        )
        write_private(
            self.directory / "ca.json",
            json.dumps(self._ledger, indent=2, sort_keys=True).encode(),
        )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ed25519.Ed25519PublicKey,
    serial: int,
    *,
    start: dt.datetime,
    days: int,
) -> x509.CertificateBuilder:
    if days < 1:
        raise ConfigError(f"a certificate must last at least a day, got {days}")
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
    )


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise ConfigError(f"not an IP address: {text!r}") from exc
