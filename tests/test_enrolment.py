"""Network enrolment with a one-time token, on both backends."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path
from typing import Any

import pytest
from pki import NOW, PASSPHRASE

from chaski_actors import CertificateError, Node, ProtocolError
from chaski_actors.ca import CertificateAuthority
from chaski_actors.enrolment import TOKEN_BYTES, enrol, serve_enrolment
from chaski_actors.testing import eventually
from conftest import Backend

A_B = 0.010  # one-way latency a-b in the test topology


def _authority(directory: Path) -> CertificateAuthority:
    ca = CertificateAuthority.create(directory / "ca", PASSPHRASE, now=NOW)
    ca.issue_files("a", now=NOW, days=3650)
    return ca


def test_enrolled_node_links_over_tls(backend: Backend, tmp_path: Path) -> None:
    ca = _authority(tmp_path)
    node_dir = tmp_path / "b"

    async def main(net: Any) -> tuple[float, list[str]]:
        runtime = net.runtime("a")
        token = ca.create_token(runtime.secret_bytes(TOKEN_BYTES), now=NOW)
        listener = await serve_enrolment(runtime, ca, runtime.host, 0)
        start = net.now()
        tls = await enrol(
            net.runtime("b"),
            listener.address,
            name="b",
            token=token,
            ca_fingerprint=ca.fingerprint,
            directory=node_dir,
            ips=["127.0.0.1"],
        )
        took = net.now() - start
        await listener.aclose()

        a_tls = type(tls).from_directory(str(ca.directory), "a")
        a = Node(runtime, "a", tls=a_tls)
        async with a, Node(net.runtime("b"), "b", tls=tls) as b:
            await b.connect(*a.address)
            await eventually(runtime, lambda: "b" in a.links)
            return took, sorted(a.links)

    took, links = backend.run(main)
    assert links == ["b"]
    if backend.simulated:
        # A round trip to connect, one for the request and its answer.
        assert took == pytest.approx(4 * A_B, abs=1e-12)
    files = sorted(p.name for p in node_dir.iterdir())
    assert files == ["b.key", "b.pem", "ca.pem", "crl.pem"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in node_dir.iterdir())
    assert ca.tokens() == []


def test_wrong_and_reused_tokens_are_refused(backend: Backend, tmp_path: Path) -> None:
    ca = _authority(tmp_path)

    async def main(net: Any) -> list[str]:
        runtime = net.runtime("a")
        token = ca.create_token(runtime.secret_bytes(TOKEN_BYTES), now=NOW)
        listener = await serve_enrolment(runtime, ca, runtime.host, 0)
        errors = []
        attempts = [("b", "00" * TOKEN_BYTES), ("b", token), ("c", token)]
        for name, offered in attempts:
            try:
                await enrol(
                    net.runtime("b"),
                    listener.address,
                    name=name,
                    token=offered,
                    ca_fingerprint=ca.fingerprint,
                    directory=tmp_path / name,
                )
                errors.append("enrolled")
            except ProtocolError as exc:
                errors.append(str(exc))
        await listener.aclose()
        return errors

    wrong, right, reused = backend.run(main)
    assert "wrong or already used enrolment token" in wrong
    assert right == "enrolled"
    assert "wrong or already used enrolment token" in reused
    assert not (tmp_path / "c").exists()


def test_node_refuses_a_ca_with_another_fingerprint(
    backend: Backend, tmp_path: Path
) -> None:
    ca = _authority(tmp_path)

    async def main(net: Any) -> str:
        runtime = net.runtime("a")
        token = ca.create_token(runtime.secret_bytes(TOKEN_BYTES), now=NOW)
        listener = await serve_enrolment(runtime, ca, runtime.host, 0)
        with pytest.raises(CertificateError) as caught:
            await enrol(
                net.runtime("b"),
                listener.address,
                name="b",
                token=token,
                ca_fingerprint="ab" * 32,
                directory=tmp_path / "b",
            )
        await listener.aclose()
        return str(caught.value)

    assert "not the pinned" in backend.run(main)
    assert not (tmp_path / "b").exists()


def test_ca_files_are_private_and_the_key_is_encrypted(tmp_path: Path) -> None:
    ca = _authority(tmp_path)
    for path in ca.directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert b"ENCRYPTED PRIVATE KEY" in (ca.directory / "ca.key").read_bytes()
    with pytest.raises(Exception, match="wrong passphrase"):
        CertificateAuthority.open(ca.directory, b"not it")
    again = CertificateAuthority.open(ca.directory, PASSPHRASE)
    assert again.fingerprint == ca.fingerprint


def test_renew_keeps_the_key_and_revoke_lists_every_serial(tmp_path: Path) -> None:
    ca = _authority(tmp_path)
    old = (ca.directory / "a.pem").read_bytes()
    later = NOW + dt.timedelta(days=60)
    ca.renew("a", now=later)
    new = (ca.directory / "a.pem").read_bytes()
    assert new != old
    assert ca.revoke("a", now=later) == [2, 3]
    assert ca.revoked() == [2, 3]


def test_client_refuses_answers_that_do_not_check_out(tmp_path: Path) -> None:
    """Sans-IO: a forged answer, and a certificate for someone else's key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from chaski_actors.codec import encode_frame
    from chaski_actors.enrolment import ISSUED, EnrolmentClient, EnrolmentServer

    ca = _authority(tmp_path)
    token = ca.create_token(bytes(range(16)), now=NOW)
    key = ed25519.Ed25519PrivateKey.generate()

    def client() -> EnrolmentClient:
        return EnrolmentClient(
            "b", key, token=token, ca_fingerprint=ca.fingerprint, nonce=bytes(32)
        )

    der = serialization.Encoding.DER
    root = ca.root.public_bytes(der)
    crl = ca.revocation_pem()

    # Right shape, but the MAC is not keyed with the token.
    forged = client()
    issued = ca.issue("b", now=NOW, public_key=key.public_key())
    cert = issued.certificate.public_bytes(der)
    forged.request()
    with pytest.raises(ProtocolError, match="not from the CA"):
        forged.receive_data(encode_frame([ISSUED, cert, root, crl, bytes(32)]), now=NOW)

    # A genuine service, but it certifies another key under our name.
    honest = client()
    server = EnrolmentServer([token])
    request = server.receive_data(honest.request())
    assert request is not None
    stranger = ed25519.Ed25519PrivateKey.generate().public_key()
    other = ca.issue("b", now=NOW, public_key=stranger).certificate.public_bytes(der)
    with pytest.raises(CertificateError, match="someone else's key"):
        honest.receive_data(server.issue(other, root, crl), now=NOW)
