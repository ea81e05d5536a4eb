"""Test certificates, made once per session: a CA, its nodes, and a stranger."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from chaski_actors.ca import CertificateAuthority, private_key_pem, write_private
from chaski_actors.runtime import TlsConfig

PASSPHRASE = b"correct horse battery staple"
# Valid from mid-2024 for ten years: covers the simulator's epoch (2025-01-01)
# and today's date on a real clock alike.
VALID_FROM = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
# Expired before either clock's "now".
EXPIRED_FROM = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
NOW = dt.datetime(2024, 6, 2, tzinfo=dt.UTC)
NODES = ("a", "b", "c", "mallory", "revoked")


class Pki:
    """Certificate files for the tests; ``tls(name)`` gives a node's config."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca_dir = root / "ca"
        self.other_dir = root / "other"
        self.ca = _authority(self.ca_dir, "chaski-test-ca")
        for name in NODES:
            _issue(self.ca, name, VALID_FROM, 3650)
        _issue(self.ca, "expired", EXPIRED_FROM, 30)
        self.ca.revoke("revoked", now=NOW)
        # Another CA, whose certificates name the same nodes.
        self.other = _authority(self.other_dir, "chaski-test-ca")
        for name in ("a", "b"):
            _issue(self.other, name, VALID_FROM, 3650)

    def tls(self, name: str, *, other_ca: bool = False) -> TlsConfig:
        directory = self.other_dir if other_ca else self.ca_dir
        return TlsConfig.from_directory(str(directory), name)

    def stranger(self, name: str) -> TlsConfig:
        """A node whose certificate comes from the other CA but who trusts ours."""
        own = self.tls(name, other_ca=True)
        return TlsConfig(
            certificate=own.certificate,
            private_key=own.private_key,
            ca_certificate=str(self.ca_dir / "ca.pem"),
        )


def _authority(directory: Path, name: str) -> CertificateAuthority:
    return CertificateAuthority.create(directory, PASSPHRASE, now=NOW, name=name)


def _issue(
    ca: CertificateAuthority, name: str, valid_from: dt.datetime, days: int
) -> None:
    issued = ca.issue(
        name, now=NOW, ips=["127.0.0.1"], valid_from=valid_from, days=days
    )
    assert issued.private_key is not None
    write_private(ca.directory / f"{name}.key", private_key_pem(issued.private_key))
    write_private(ca.directory / f"{name}.pem", issued.certificate_pem())
