"""Client certificates mapped to rights: with a CA that signs a node certificate and a
client certificate, `Front(admin=...)` lets only the node's do admin requests and CONNECT."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cowsqlpy import protocol as P
from cowsqlpy.client import SyncClient
from cowsqlpy.errors import OperationalError
from cowsqlpy.front import Front
from cowsqlpy.node import engine_features
from cowsqlpy.tls import TLSConfig, make_client_context, subject_cn

from .conftest import GuardedNode
from .raw import Raw, frame, is_refusal, text, u64


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _make_pki(base: Path) -> dict[str, TLSConfig]:
    """A CA and two certificates it signs: CN=node and CN=reader (both DNS:cowsql)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (base / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out = {}
    for cn in ("node", "reader"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("cowsql")]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        (base / f"{cn}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (base / f"{cn}.key").write_bytes(_pem_key(key))
        out[cn] = TLSConfig(base / f"{cn}.crt", base / f"{cn}.key", ca=base / "ca.crt")
    return out


def test_admin_requests_need_the_admin_certificate(
    guarded_factory: Callable[..., GuardedNode], tmp_path: Path
) -> None:
    pki = _make_pki(tmp_path)
    node = guarded_factory(tls=pki["node"])
    # Rebuild the front with rights: only CN=node is admin.
    node.front.stop()
    node.front = Front(
        node.address,
        node.engine_address,
        engine_features(),
        tls=pki["node"],
        admin=lambda cert: subject_cn(cert) == "node",
    )
    node.front.start()
    reader = pki["reader"]
    with Raw(node.address, context=make_client_context(reader), server_name="cowsql") as raw:
        assert raw.call(frame(P.OPEN, text("r") + u64(0) + text("volatile")))[0] == P.DB  # type: ignore[index]
        assert raw.call(frame(P.QUERY_SQL, u64(0) + text("SELECT 1")))[0] == P.ROWS  # type: ignore[index]
        for request in (
            frame(P.DUMP, text("r")),
            frame(P.WEIGHT, u64(3)),
            frame(P.REMOVE, u64(5)),
            frame(P.ADD, u64(9) + text("127.0.0.1:1")),
            frame(P.TRANSFER, u64(0)),
            frame(P.ASSIGN, u64(9) + u64(P.SPARE)),
        ):
            assert is_refusal(raw.call(request))
    with Raw(node.address, context=make_client_context(reader), server_name="cowsql") as raw:
        assert (
            raw.call(frame(P.CONNECT, u64(1) + text("127.0.0.1:1"))) is None
        )  # no Raft for readers
    with SyncClient([node.address], tls=reader) as client:
        with pytest.raises(OperationalError, match="admin"):
            client.weight(node.address, 2)
    with SyncClient([node.address], tls=pki["node"]) as admin:
        admin.weight(node.address, 2)
        assert admin.describe(node.address).weight == 2


def test_admin_rights_need_tls() -> None:
    with pytest.raises(ValueError, match="tls"):
        Front("127.0.0.1:0", "127.0.0.1:1", engine_features(), admin=lambda cert: True)
