#!/usr/bin/env python
"""Make a private certificate authority and one certificate for a Dask cluster.

Writes, into the output folder::

    ca.pem       the CA's certificate: every scheduler, worker and client trusts it
    ca-key.pem   the CA's private key: keep it off the cluster, it signs new certificates
    cert.pem     a certificate signed by the CA, valid as server and client
    key.pem      its private key

One certificate for the scheduler, the workers and the client is the simplest set-up
that makes every connection encrypted and mutually authenticated (a peer without a
certificate signed by this CA is refused). Run it again with another ``--name`` to give
the client its own certificate. Requires the ``cryptography`` package.

Example::

    python make_certs.py --out /etc/dask/tls --host scheduler.example.org --host 10.0.0.5
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os

__all__ = ["make_certs"]


def _name(common_name):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dclust"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path, key):
    from cryptography.hazmat.primitives import serialization

    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_cert(path, cert):
    from cryptography.hazmat.primitives import serialization

    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def make_certs(out, hosts=("127.0.0.1", "localhost"), *, name="dclust-cluster", days=365,
               ca=None):
    """Write a CA (unless ``ca`` is given) and a certificate for ``hosts`` into ``out``.

    Parameters
    ----------
    out : str
        Folder to write to (created if missing).
    hosts : sequence of str
        Host names and IP addresses the certificate is valid for (subject alternative
        names). Dask does not check host names by default; list them anyway.
    name : str
        Common name of the certificate; files are ``cert.pem``/``key.pem``, or
        ``<name>-cert.pem``/``<name>-key.pem`` when ``ca`` is given.
    days : int
        Validity in days.
    ca : tuple of str, optional
        ``(ca.pem, ca-key.pem)`` of an existing CA to sign with.

    Returns
    -------
    dict
        Paths: ``ca_file``, ``cert``, ``key`` (and ``ca_key`` for a new CA).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    os.makedirs(out, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start = now - datetime.timedelta(minutes=5)
    end = now + datetime.timedelta(days=days)
    paths = {}
    if ca is None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{name} CA")).issuer_name(_name(f"{name} CA"))
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        paths["ca_file"] = os.path.join(out, "ca.pem")
        paths["ca_key"] = os.path.join(out, "ca-key.pem")
        _write_cert(paths["ca_file"], ca_cert)
        _write_key(paths["ca_key"], ca_key)
        prefix = ""
    else:
        with open(ca[0], "rb") as f:
            ca_cert = x509.load_pem_x509_certificate(f.read())
        with open(ca[1], "rb") as f:
            ca_key = serialization.load_pem_private_key(f.read(), password=None)
        paths["ca_file"] = ca[0]
        prefix = f"{name}-"
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths["cert"] = os.path.join(out, f"{prefix}cert.pem")
    paths["key"] = os.path.join(out, f"{prefix}key.pem")
    _write_cert(paths["cert"], cert)
    _write_key(paths["key"], key)
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="tls", help="folder to write to (default: ./tls)")
    p.add_argument("--host", action="append", default=[],
                   help="host name or IP address the certificate is for (repeatable; "
                        "default: 127.0.0.1 and localhost)")
    p.add_argument("--name", default="dclust-cluster", help="common name of the certificate")
    p.add_argument("--days", type=int, default=365, help="validity in days (default: 365)")
    p.add_argument("--ca", nargs=2, metavar=("CA_PEM", "CA_KEY_PEM"),
                   help="sign with this existing CA instead of making a new one")
    args = p.parse_args(argv)
    paths = make_certs(args.out, args.host or ("127.0.0.1", "localhost"), name=args.name,
                       days=args.days, ca=tuple(args.ca) if args.ca else None)
    for k, v in paths.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
