"""Fetching the revocation list from the CA, on both backends."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from pki import NOW, PASSPHRASE

from chaski_actors import CertificateError, TlsConfig
from chaski_actors.ca import CertificateAuthority
from chaski_actors.enrolment import (
    TOKEN_BYTES,
    enrol,
    fetch_revocations,
    serve_enrolment,
)
from chaski_actors.identity import load_trust
from conftest import Backend

LATER = dt.datetime(2027, 6, 1, tzinfo=dt.UTC)


def test_a_node_fetches_new_revocations(backend: Backend, tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca", PASSPHRASE, now=NOW)
    ca.issue_files("c", now=NOW, days=3650)
    other = CertificateAuthority.create(tmp_path / "other", PASSPHRASE, now=NOW)

    async def main(net: Any) -> tuple[bool, bool, list[int], str]:
        runtime = net.runtime("a")
        token = ca.create_token(runtime.secret_bytes(TOKEN_BYTES), now=NOW)
        listener = await serve_enrolment(runtime, ca, runtime.host, 0)
        tls = await enrol(
            net.runtime("b"),
            listener.address,
            name="b",
            token=token,
            ca_fingerprint=ca.fingerprint,
            directory=tmp_path / "b",
        )
        unchanged = await fetch_revocations(net.runtime("b"), listener.address, tls)
        # Later than either clock's now, as the list written at enrolment is.
        ca.revoke("c", now=LATER)
        replaced = await fetch_revocations(net.runtime("b"), listener.address, tls)
        revocations = load_trust(tls).revocations
        assert revocations is not None
        serials = sorted(entry.serial_number for entry in revocations)

        # A list from another CA is refused, and the file is left alone.
        elsewhere = net.runtime("c")
        forged = await serve_enrolment(elsewhere, other, elsewhere.host, 0)
        with pytest.raises(CertificateError) as caught:
            await fetch_revocations(net.runtime("b"), forged.address, tls)
        await listener.aclose()
        await forged.aclose()
        return unchanged, replaced, serials, str(caught.value)

    unchanged, replaced, serials, error = backend.run(main)
    assert (unchanged, replaced, serials) == (False, True, [2])
    assert "not signed by our root" in error


def test_fetching_needs_a_list_file(tmp_path: Path) -> None:
    tls = TlsConfig("n.pem", "n.key", "ca.pem")
    from chaski_actors.errors import ConfigError
    from chaski_actors.sim.harness import run_sim
    from conftest import line_graph

    async def main(net: Any) -> None:
        with pytest.raises(ConfigError):
            await fetch_revocations(net.runtime("a"), ("b", 1), tls)

    run_sim(main, line_graph())
