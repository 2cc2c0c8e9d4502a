"""Time passing for certificates: make every leaf certificate of a stopped test node
expired, as a year powered off would leave it (same key, same names, same issuer, a
validity that ended a day ago), signed by the cluster's own CA keys.

The stand-in renews certificates at a start (CONTRACT CR1) and its test knob
``MK8S_STANDIN_CERT_SECONDS`` only shapes new ones; a cluster whose certificates
expired while it was off is made here, on the node's files, with ``cryptography``.
"""

from __future__ import annotations

import datetime
import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.hosts import Host

TLS = "/var/lib/rancher/rke2/server/tls"
AGENT = "/var/lib/rancher/rke2/agent"
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", re.S)


def cluster_cas(server: Host) -> dict[x509.Name, ec.EllipticCurvePrivateKey]:
    """Each CA's subject -> its key, from a server's server/tls (and tls/etcd)."""
    out: dict[x509.Name, ec.EllipticCurvePrivateKey] = {}
    for crt in [*server.path(TLS).glob("*-ca.crt"), *server.path(f"{TLS}/etcd").glob("*-ca.crt")]:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        key = serialization.load_pem_private_key(crt.with_suffix(".key").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        out[cert.subject] = key
    return out


def expire(cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """``cert`` again, with a validity that ended a day ago."""
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=400))
        .not_valid_after(now - datetime.timedelta(days=1))
    )
    for ext in cert.extensions:
        b = b.add_extension(ext.value, ext.critical)
    return b.sign(ca_key, hashes.SHA256())


def files(h: Host) -> list[str]:
    """The node's certificate files (paths on the node)."""
    out = []
    for d in (TLS, f"{TLS}/etcd", AGENT):
        if h.path(d).is_dir():
            out += [f"{d}/{f.name}" for f in sorted(h.path(d).glob("*.crt"))]
    return out


def expire_node(h: Host, cas: dict[x509.Name, ec.EllipticCurvePrivateKey]) -> int:
    """Every leaf certificate file of ``h`` made expired (its first certificate; the CA
    after it in the file is kept), written on the node; the number of files changed."""
    changed = 0
    for f in files(h):
        blocks = _PEM.findall(h.path(f).read_text())
        if not blocks:
            continue
        cert = x509.load_pem_x509_certificate(blocks[0].encode())
        try:
            if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                continue
        except x509.ExtensionNotFound:
            pass
        old = expire(cert, cas[cert.issuer]).public_bytes(serialization.Encoding.PEM).decode()
        h.run(["sh", "-c", 'cat > "$1.tmp" && chmod --reference="$1" "$1.tmp" && mv "$1.tmp" "$1"',
               "expire", f], input=old + "".join(blocks[1:]), check=True)  # fmt: skip
        changed += 1
    return changed


__all__ = ["cluster_cas", "expire", "expire_node", "files"]
