"""TLS for nodes and clients: the one place that builds `ssl.SSLContext`s.

The scheme is go-cowsql's (`app.SimpleTLSConfig`): one cluster certificate and key, shared
by every node and every client, is also the only CA. Both sides verify each other
(mutual TLS, TLS 1.2 or later); a client checks the server against the first DNS name of
the certificate, as go-cowsql's dial config does, so contexts built here interoperate with
``cowsql-demo --cert --key`` and the ``cowsql`` shell.

Make a cluster certificate with ``python -m cowsqlpy.tls make-cert --out DIR`` (writes
``cluster.crt`` and ``cluster.key``), or with openssl as go-cowsql documents::

    openssl req -x509 -newkey rsa:4096 -sha256 -days 3650 -nodes \\
      -keyout cluster.key -out cluster.crt -subj "/CN=cowsql" \\
      -addext "subjectAltName=DNS:cowsql,IP:127.0.0.1"
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import ssl
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: the DNS name `make_cert` puts first; clients check servers against it
DEFAULT_NAME = "cowsql"


@dataclass(frozen=True)
class TLSConfig:
    """Where the cluster certificate lives.

    :param cert: PEM certificate (the cluster certificate).
    :param key: PEM private key of `cert`.
    :param ca: PEM CA bundle both sides trust; default: `cert` itself (go-cowsql's scheme).
    :param server_name: the name a client checks a server's certificate against; default:
        the first DNS name of `cert` (as go-cowsql's `SimpleDialTLSConfig`).
    """

    cert: str | os.PathLike[str]
    key: str | os.PathLike[str]
    ca: str | os.PathLike[str] | None = None
    server_name: str | None = None

    @property
    def ca_path(self) -> str:
        return os.fspath(self.ca if self.ca is not None else self.cert)

    def check_name(self) -> str:
        """The server name clients verify. :raises ValueError: `cert` has no DNS name."""
        if self.server_name:
            return self.server_name
        names = dns_names(self.cert)
        if not names:
            raise ValueError(
                f"{os.fspath(self.cert)} has no DNS subjectAltName (go-cowsql needs one)"
            )
        return names[0]


def dns_names(cert: str | os.PathLike[str]) -> list[str]:
    """The DNS subjectAltNames of a PEM certificate, in order."""
    from cryptography import x509  # imported here: the client imports this module

    with open(cert, "rb") as f:
        parsed = x509.load_pem_x509_certificate(f.read())
    try:
        san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.DNSName))


def subject_cn(peercert: Mapping[str, Any]) -> str | None:
    """The subject common name of a `getpeercert()` dict (what `cowsqlpy.rights.Rights` keys on)."""
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _base(purpose: int, config: TLSConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(os.fspath(config.cert), os.fspath(config.key))
    ctx.load_verify_locations(config.ca_path)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def make_server_context(config: TLSConfig) -> ssl.SSLContext:
    """Server side: present the cluster certificate, require and verify the peer's.

    :raises OSError/ssl.SSLError: unreadable or mismatched certificate and key.
    """
    return _base(ssl.PROTOCOL_TLS_SERVER, config)


def make_client_context(config: TLSConfig) -> ssl.SSLContext:
    """Client side: present the cluster certificate, verify the server's against the CA
    and `TLSConfig.check_name()` (pass that as ``server_hostname``)."""
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT, config)
    ctx.check_hostname = True
    return ctx


@dataclass(frozen=True)
class ClientTLS:
    """A client context with the name to check, built once per `TLSConfig`."""

    context: ssl.SSLContext
    server_name: str

    @classmethod
    def of(cls, config: TLSConfig) -> ClientTLS:
        return cls(make_client_context(config), config.check_name())


def client_tls(tls: TLSConfig | ClientTLS | None) -> ClientTLS | None:
    """A `ClientTLS` for a config (contexts are built once per client, not per connection)."""
    return ClientTLS.of(tls) if isinstance(tls, TLSConfig) else tls


# -- Certificates ---------------------------------------------------------------


def make_cert(
    out_dir: str | os.PathLike[str],
    *,
    names: Sequence[str] = (DEFAULT_NAME, "localhost"),
    ips: Sequence[str] = ("127.0.0.1", "::1"),
    days: int = 3650,
) -> TLSConfig:
    """Write a self-signed cluster certificate (``cluster.crt``) and its key
    (``cluster.key``, mode 0600) to `out_dir`; the first of `names` is what clients
    check. Returns the `TLSConfig` for them.

    :raises FileExistsError: either file exists already (never overwritten).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not names:
        raise ValueError("a cluster certificate needs at least one DNS name")
    os.makedirs(out_dir, exist_ok=True)
    cert_path = os.path.join(out_dir, "cluster.crt")
    key_path = os.path.join(out_dir, "cluster.key")
    for path in (cert_path, key_path):
        if os.path.exists(path):
            raise FileExistsError(17, "refusing to overwrite", path)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        # It is its own CA: every node and client trusts exactly this certificate.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return TLSConfig(cert_path, key_path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cowsqlpy.tls")
    sub = parser.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make-cert", help="write a self-signed cluster certificate and key")
    mk.add_argument("--out", required=True, help="directory for cluster.crt and cluster.key")
    mk.add_argument(
        "--name",
        action="append",
        default=None,
        help=f"DNS name (repeatable; the first is checked by clients; default {DEFAULT_NAME}, localhost)",
    )
    mk.add_argument(
        "--ip",
        action="append",
        default=None,
        help="IP address (repeatable; default 127.0.0.1, ::1)",
    )
    mk.add_argument("--days", type=int, default=3650)
    args = parser.parse_args(argv)
    try:
        config = make_cert(
            args.out,
            names=args.name or (DEFAULT_NAME, "localhost"),
            ips=args.ip or ("127.0.0.1", "::1"),
            days=args.days,
        )
    except (OSError, ValueError) as exc:
        print(f"make-cert: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {config.cert} and {config.key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "TLSConfig",
    "ClientTLS",
    "make_server_context",
    "make_client_context",
    "make_cert",
    "dns_names",
    "subject_cn",
]
