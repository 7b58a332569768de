"""A test CA that signs node and client certificates (what `cowsqlpy.rights` keys on)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cowsqlpy.tls import TLSConfig


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_pki(base: Path, cns: Iterable[str]) -> dict[str, TLSConfig]:
    """A CA (``base/ca.crt``) and one certificate per CN it signs, each with DNS:cowsql
    (the name clients check) and 127.0.0.1; the `TLSConfig` of each, keyed by CN."""
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
    for cn in cns:
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
