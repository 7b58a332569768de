"""TLS for nodes and clients: the one place that builds `ssl.SSLContext`s.

The scheme is go-cowsql's (`app.SimpleTLSConfig`): one cluster certificate and key, shared
by every node and every client, is also the only CA. Both sides verify each other
(mutual TLS, TLS 1.2 or later); a client checks the server against the first DNS name of
the certificate, as go-cowsql's dial config does, so contexts built here interoperate with
``cowsql-demo --cert --key`` and the ``cowsql`` shell.

Make a cluster certificate with ``python -m cowsqlpy tls make-cert --out DIR`` (writes
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


def _write_pair(cert_path: str, key_path: str, cert: Any, key: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    for path in (cert_path, key_path):
        if os.path.exists(path):
            raise FileExistsError(17, "refusing to overwrite", path)
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


def _builder(cn: str, days: int) -> tuple[Any, Any]:
    """A certificate builder with subject CN `cn` and validity set; and that subject."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return subject, (
        x509.CertificateBuilder()
        .subject_name(subject)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def make_ca(
    out_dir: str | os.PathLike[str], *, name: str = "cowsql CA", days: int = 3650
) -> TLSConfig:
    """Write a CA certificate (``ca.crt``) and its key (``ca.key``, mode 0600) to
    `out_dir`, to sign node and client certificates with (`make_cert(ca=...)`); the
    returned `TLSConfig` names them. Keep ``ca.key`` off the nodes.

    :raises FileExistsError: either file exists already (never overwritten).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    os.makedirs(out_dir, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject, builder = _builder(name, days)
    cert = (
        builder.issuer_name(subject)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .sign(key, hashes.SHA256())
    )
    paths = os.path.join(out_dir, "ca.crt"), os.path.join(out_dir, "ca.key")
    _write_pair(*paths, cert, key)
    return TLSConfig(*paths)


def make_cert(
    out_dir: str | os.PathLike[str],
    *,
    names: Sequence[str] = (DEFAULT_NAME, "localhost"),
    ips: Sequence[str] = ("127.0.0.1", "::1"),
    days: int = 3650,
    ca: TLSConfig | None = None,
    cn: str | None = None,
) -> TLSConfig:
    """Write a certificate and its key (mode 0600) to `out_dir`; the first of `names` is
    what clients check. Returns the `TLSConfig` for them.

    Without `ca`: the self-signed cluster certificate of go-cowsql's scheme, its own CA
    (``cluster.crt``, ``cluster.key``). With `ca` (`make_ca`'s config: its ``cert`` and
    ``key``): a certificate that CA signs, with subject CN `cn` (what
    `cowsqlpy.rights.Rights` keys on), as ``<cn>.crt`` and ``<cn>.key``; the config's
    ``ca`` is the CA's certificate.

    :raises FileExistsError: either file exists already (never overwritten).
    :raises ValueError: no DNS name; `cn` without `ca` or the other way round.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if not names:
        raise ValueError("a certificate needs at least one DNS name (clients check the first)")
    if (ca is None) != (cn is None):
        raise ValueError("a certificate signed by a CA needs a cn, and a cn needs the ca")
    if cn is not None and (not cn or "/" in cn or cn.startswith(".")):
        raise ValueError(f"cn {cn!r} cannot name a file")
    os.makedirs(out_dir, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    subject, builder = _builder(cn or names[0], days)
    builder = builder.public_key(key.public_key())
    if ca is None:
        # Its own CA: every node and client trusts exactly this certificate.
        signer: Any = key
        builder = builder.issuer_name(subject).add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    else:
        with open(ca.cert, "rb") as f:
            issuer = x509.load_pem_x509_certificate(f.read())
        with open(ca.key, "rb") as f:
            signer = serialization.load_pem_private_key(f.read(), password=None)
        builder = builder.issuer_name(issuer.subject).add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        )
    cert = (
        builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(signer, hashes.SHA256())
    )
    base = cn or "cluster"
    cert_path = os.path.join(out_dir, f"{base}.crt")
    key_path = os.path.join(out_dir, f"{base}.key")
    _write_pair(cert_path, key_path, cert, key)
    return TLSConfig(cert_path, key_path, ca=None if ca is None else ca.cert)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cowsqlpy tls")
    sub = parser.add_subparsers(dest="command", required=True)
    mk = sub.add_parser(
        "make-cert",
        help="write a self-signed cluster certificate and key, or (--ca --cn) one a CA signs",
    )
    mk.add_argument("--out", required=True, help="directory for the .crt and .key")
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
    mk.add_argument(
        "--ca", metavar="DIR", help="sign with the CA make-ca wrote to DIR (ca.crt, ca.key)"
    )
    mk.add_argument(
        "--cn", help="subject CN with --ca (what --rights keys on); files CN.crt, CN.key"
    )
    mkca = sub.add_parser(
        "make-ca", help="write a CA (ca.crt, ca.key) to sign node and client certificates"
    )
    mkca.add_argument("--out", required=True, help="directory for ca.crt and ca.key")
    mkca.add_argument("--name", default="cowsql CA", help="the CA's subject CN")
    mkca.add_argument("--days", type=int, default=3650)
    args = parser.parse_args(argv)
    try:
        if args.command == "make-ca":
            config = make_ca(args.out, name=args.name, days=args.days)
        else:
            ca = None
            if args.ca:
                ca = TLSConfig(os.path.join(args.ca, "ca.crt"), os.path.join(args.ca, "ca.key"))
            config = make_cert(
                args.out,
                names=args.name or (DEFAULT_NAME, "localhost"),
                ips=args.ip or ("127.0.0.1", "::1"),
                days=args.days,
                ca=ca,
                cn=args.cn,
            )
    except (OSError, ValueError) as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
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
    "make_ca",
    "dns_names",
    "subject_cn",
]
