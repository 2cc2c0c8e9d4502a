"""Certificates of the RKE2 stand-in (Python 3 stdlib + the node's ``openssl`` CLI).

Shipped in the stand-in's release tarball as ``share/rke2/mk8s_standin/certs.py``; it
runs on the test nodes.  What it models (rke2-docs security/certificates.md, k3s-io/k3s
pkg/daemons/control/deps/deps.go, pkg/cli/cert/cert.go):

* CAs (``rke2-server-ca@<unix time>`` and friends, EC P-256) are valid for 10 years and
  never renewed; the cluster's CAs travel in its bootstrap data.
* Leaf certificates are valid for 365 days and kept on disk across restarts.  At every
  start a leaf that is expired, within 120 days of expiry (``RENEW_DAYS``), issued by
  another CA or for other names is renewed: a new certificate for the *same* key.  A
  missing leaf (``rke2 certificate rotate`` deleted it) is made anew, key and all.
* ``rke2 certificate rotate`` (:func:`rotate`) copies ``server/tls`` to
  ``server/tls-<unix time>``, deletes the leaf certificates and keys (never a CA) and
  the agent's files (below) and says to restart; on an agent it backs the agent's files
  up to ``agent/tls-<unix time>`` and deletes them.  It does not refuse while RKE2 runs
  (k3s does not either: a running server keeps what it loaded until it restarts).
* Every node's agent (servers run one too) gets its certificates from the server at
  every start (:func:`agent_files`), into ``agent/``: the kubelet's serving and client
  certificates, signed at that request with the server's kubelet keys (so a restart
  renews them), the server's own kube-proxy and rke2-controller client certificates,
  and the two CAs.  Each certificate file holds the leaf, then its CA.

Test knob: ``MK8S_STANDIN_CERT_SECONDS`` (environment of the service, e.g. in
/etc/default/rke2-server) sets the validity of newly issued leaf certificates in
seconds instead of 365 days; zero or negative issues certificates that are already
expired (for tests of a cluster whose certificates expired while it was off).
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time

CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_DAYS = 120  # rke2-docs security/certificates.md (90 before the May 2025 releases)
CERT_SECONDS_KNOB = "MK8S_STANDIN_CERT_SECONDS"

_CNF = """\
[req]
distinguished_name = dn
[dn]
[ca]
default_ca = ca_default
[ca_default]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = no
[policy_any]
commonName = optional
organizationName = optional
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,digitalSignature,keyEncipherment,keyCertSign
subjectKeyIdentifier = hash
[serving]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
authorityKeyIdentifier = keyid
subjectAltName = @sans
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
[peer]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
authorityKeyIdentifier = keyid
subjectAltName = @sans
[sans]
"""
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_SAN = re.compile(r"[A-Za-z0-9.:*_-]+")


class CertError(Exception):
    pass


def _openssl(args: list[str], cwd: str) -> str:
    try:
        p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CertError(f"openssl {args[0]}: {e}") from None
    if p.returncode != 0:
        raise CertError(f"openssl {args[0]} failed: {p.stderr.strip()[-500:]}")
    return p.stdout


def _is_ip(s: str) -> bool:
    return bool(re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]*:[0-9a-fA-F:.]*", s))


def _cnf(d: str, sans: list[str]) -> None:
    lines = []
    for i, san in enumerate(sans, 1):
        # upstream: k3s-io/k3s pkg/daemons/control/deps/deps.go (addSANs: IP or DNS, unchecked); stricter [CONTRACT TL2]
        if not _SAN.fullmatch(san):
            raise CertError(f"invalid tls-san / address {san!r} for a certificate")
        lines.append(f"{'IP' if _is_ip(san) else 'DNS'}.{i} = {san}\n")
    with open(os.path.join(d, "openssl.cnf"), "w") as f:
        f.write(_CNF + "".join(lines))


def new_ca(name: str) -> tuple[str, str]:
    """A self-signed EC P-256 CA (certificate PEM, key PEM), like RKE2's ``NAME@<unix time>``."""
    with tempfile.TemporaryDirectory(prefix="rke2-tls-") as d:
        _cnf(d, [])
        _openssl(
            ["req", "-x509", "-new", *_EC, "-keyout", "ca.key", "-out", "ca.crt",
             "-days", str(CA_DAYS), "-subj", f"/CN={name}@{int(time.time())}",
             "-set_serial", "0x1" + secrets.token_hex(15), "-config", "openssl.cnf",
             "-extensions", "v3_ca"],
            d,
        )  # fmt: skip
        with open(os.path.join(d, "ca.crt")) as c, open(os.path.join(d, "ca.key")) as k:
            return c.read(), k.read()


def validity() -> tuple[datetime.datetime, datetime.datetime]:
    """(notBefore, notAfter) of a leaf issued now: 365 days, or the test knob's seconds."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    raw = os.environ.get(CERT_SECONDS_KNOB, "")
    try:
        seconds = int(raw) if raw else LEAF_DAYS * 86400
    except ValueError:
        raise CertError(f"{CERT_SECONDS_KNOB}={raw!r} is not a number of seconds") from None
    end = now + datetime.timedelta(seconds=seconds)
    return min(now, end) - datetime.timedelta(hours=1), end


def sign(
    ca: tuple[str, str],
    subject: str,
    kind: str,
    sans: list[str] | None = None,
    key_pem: str = "",
) -> tuple[str, str]:
    """A certificate (PEM) signed by ``ca`` (certificate PEM, key PEM) and its key: a new
    EC key, or ``key_pem`` (a renewal keeps the key).  ``kind``: ``serving``
    (serverAuth, with ``sans``), ``client`` (clientAuth) or ``peer`` (both, with ``sans``)."""
    if kind not in ("serving", "client", "peer"):
        raise CertError(f"unknown certificate kind {kind!r}")
    start, end = validity()
    with tempfile.TemporaryDirectory(prefix="rke2-tls-") as d:
        _cnf(d, sans or [])
        for name, data in (("ca.crt", ca[0]), ("ca.key", ca[1]), ("leaf.key", key_pem)):
            if data:
                with open(
                    os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT, 0o600), "w"
                ) as f:
                    f.write(data)
        open(os.path.join(d, "index.txt"), "w").close()
        with open(os.path.join(d, "serial"), "w") as f:
            f.write("10" + secrets.token_hex(15) + "\n")
        key = ["-key", "leaf.key"] if key_pem else [*_EC, "-keyout", "leaf.key"]
        _openssl(["req", "-new", *key, "-out", "leaf.csr", "-subj", subject,
                  "-config", "openssl.cnf"], d)  # fmt: skip
        _openssl(
            ["ca", "-batch", "-config", "openssl.cnf", "-cert", "ca.crt", "-keyfile", "ca.key",
             "-in", "leaf.csr", "-out", "leaf.crt", "-notext", "-preserveDN",
             "-startdate", start.strftime("%Y%m%d%H%M%SZ"),
             "-enddate", end.strftime("%Y%m%d%H%M%SZ"),
             "-extfile", "openssl.cnf", "-extensions", kind],
            d,
        )  # fmt: skip
        with open(os.path.join(d, "leaf.crt")) as c, open(os.path.join(d, "leaf.key")) as k:
            return c.read(), k.read()


def describe(pem: str) -> tuple[str, float, list[str]]:
    """(issuer, notAfter as unix time, sorted subject alternative names) of a certificate."""
    with tempfile.TemporaryDirectory(prefix="rke2-tls-") as d:
        with open(os.path.join(d, "c.crt"), "w") as f:
            f.write(pem)
        out = _openssl(
            ["x509", "-in", "c.crt", "-noout", "-issuer", "-enddate", "-ext", "subjectAltName"], d
        )
    issuer = re.search(r"^issuer=\s*(.*)$", out, re.M)
    end = re.search(r"^notAfter=(.*)$", out, re.M)
    if not issuer or not end:
        raise CertError("cannot read a certificate's issuer and expiry")
    not_after = datetime.datetime.strptime(end.group(1).strip(), "%b %d %H:%M:%S %Y %Z")
    sans = re.findall(r"(?:DNS|IP Address):([^,\s]+)", out.split("Alternative Name", 1)[-1])
    return (
        issuer.group(1).replace(" = ", "=").strip(),
        not_after.replace(tzinfo=datetime.UTC).timestamp(),
        sorted(s.lower() for s in sans),
    )


# upstream: k3s-io/k3s pkg/daemons/control/deps/deps.go (a new CA regenerates the leaves it signs) [CONTRACT CR1]
def issued_by(crt: str, ca_pem: str) -> bool:
    """True when ``crt`` carries a signature of the CA ``ca_pem`` (not only its name: two
    CAs made in the same second share the ``...-ca@<unix time>`` name)."""
    with tempfile.TemporaryDirectory(prefix="rke2-tls-") as d:
        for name, pem in (("c.crt", crt), ("ca.crt", ca_pem)):
            with open(os.path.join(d, name), "w") as f:
                f.write(pem)
        try:
            _openssl(["verify", "-no_check_time", "-CAfile", "ca.crt", "c.crt"], d)
        except CertError:
            return False
    return True


def _subject_cn(pem: str) -> str:
    with tempfile.TemporaryDirectory(prefix="rke2-tls-") as d:
        with open(os.path.join(d, "c.crt"), "w") as f:
            f.write(pem)
        out = _openssl(["x509", "-in", "c.crt", "-noout", "-subject"], d)
    return out.split("=", 1)[1].replace(" = ", "=").strip()


def _norm_san(s: str) -> str:
    return s.lower() if not _is_ip(s) else s.lower().replace("::1", "0:0:0:0:0:0:0:1")


# upstream: rancher/rke2-docs docs/security/certificates.md (renewed within 120 days, same key) [CONTRACT CR1]
def ensure_leaf(
    crt_path: str,
    key_path: str,
    ca: tuple[str, str],
    subject: str,
    kind: str,
    sans: list[str] | None = None,
) -> tuple[str, str, str]:
    """The leaf at ``crt_path``/``key_path``: kept when issued by ``ca`` for ``sans`` with
    more than RENEW_DAYS left; renewed (same key) when not; made (new key) when missing.
    Returns (certificate PEM, key PEM, what was done: kept|renewed|created)."""
    crt = _read(crt_path)
    key = _read(key_path)
    action = "created"
    if crt and key:
        issuer, not_after, have = describe(crt)
        want = sorted(_norm_san(s) for s in dict.fromkeys(sans or []))
        fresh = not_after - time.time() > RENEW_DAYS * 86400
        same = issuer == _subject_cn(ca[0]) and sorted(map(_norm_san, have)) == want
        if fresh and same and issued_by(crt, ca[0]):
            return crt, key, "kept"
        action = "renewed"
    crt, key = sign(ca, subject, kind, sans, key_pem=key if crt and key else "")
    _write(key_path, key, 0o600)
    _write(crt_path, crt, 0o644)
    return crt, key, action


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _write(path: str, data: str, mode: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def ensure_key(path: str) -> str:
    """The EC P-256 key at ``path``, made (0600) when missing."""
    key = _read(path)
    if key:
        return key
    with tempfile.TemporaryDirectory(prefix="rke2-tls-") as d:
        _openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-out", "k.key"], d)  # fmt: skip
        key = _read(os.path.join(d, "k.key"))
    _write(path, key, 0o600)
    return key


# The agent's certificate files, fetched from the server at every start, and what
# ``rotate`` deletes for the agent services (kubelet, kube-proxy, rke2-controller).
AGENT_LEAVES = ("client-kubelet", "serving-kubelet", "client-kube-proxy", "client-rke2-controller")


# upstream: k3s-io/k3s pkg/agent/config/config.go (get: getServingCert, getNodeNamedHostFile, getHostFile at every start), pkg/server/handlers/handlers.go (ServingKubeletCert, ClientKubeletCert: signed per request with the server's kubelet keys) [CONTRACT CR3]
def agent_files(
    server_ca: tuple[str, str],
    client_ca: tuple[str, str],
    tls_dir: str,
    node: str,
    ips: list[str],
) -> dict[str, str]:
    """What a server hands a node's agent (file name in ``agent/`` -> PEM): the kubelet's
    serving certificate (CN the node, for its name, localhost, 127.0.0.1 and its
    addresses) and client certificate (``system:node:NODE`` in ``system:nodes``), both
    signed now with the server's ``serving-kubelet.key`` and ``client-kubelet.key``; the
    server's own kube-proxy and rke2-controller client certificates and keys; the CAs."""
    sk = ensure_key(os.path.join(tls_dir, "serving-kubelet.key"))
    ck = ensure_key(os.path.join(tls_dir, "client-kubelet.key"))
    sans = list(dict.fromkeys([node, "localhost", "127.0.0.1", *ips]))
    serving, _ = sign(server_ca, f"/CN={node}", "serving", sans, key_pem=sk)
    client, _ = sign(client_ca, f"/O=system:nodes/CN=system:node:{node}", "client", key_pem=ck)
    out = {
        "server-ca.crt": server_ca[0],
        "client-ca.crt": client_ca[0],
        "serving-kubelet.crt": serving + server_ca[0],
        "serving-kubelet.key": sk,
        "client-kubelet.crt": client + client_ca[0],
        "client-kubelet.key": ck,
    }
    for name in ("client-kube-proxy", "client-rke2-controller"):
        crt, key = (
            _read(os.path.join(tls_dir, f"{name}.crt")),
            _read(os.path.join(tls_dir, f"{name}.key")),
        )
        if not crt or not key:
            raise CertError(f"the server has no {name} certificate to hand out")
        out[f"{name}.crt"], out[f"{name}.key"] = crt + client_ca[0], key
    return out


def write_agent_files(agent_dir: str, files: dict[str, str]) -> None:
    """The agent's files as k3s writes them (0600 each)."""
    for name, data in sorted(files.items()):
        if "/" in name or name.startswith("."):
            raise CertError(f"bad agent file name {name!r}")
        _write(os.path.join(agent_dir, name), data, 0o600)


def is_leaf(name: str) -> bool:
    """A certificate or key ``rotate`` deletes: not a CA, not the service-account key
    (k3s pkg/cli/cert/cert.go rotateAllCerts keeps ``-ca`` and ``service.key``)."""
    return name.endswith((".crt", ".key")) and "-ca" not in name and name != "service.key"


# upstream: k3s-io/k3s pkg/cli/cert/cert.go (rotate, backupCertificates), pkg/util/services/services.go (Agent, All) [CONTRACT CR2]
def rotate(server_dir: str, agent_dir: str) -> tuple[str, list[str]]:
    """``rke2 certificate rotate``: back up ``server/tls`` to ``server/tls-<unix time>``
    (an agent: to ``agent/tls-<unix time>``) with the agent's certificate files, then
    delete every leaf certificate and key there and the agent's files, so the next start
    makes new ones.  Returns (backup dir, deleted files)."""
    tls = os.path.join(server_dir, "tls")
    stamp = f"tls-{int(time.time())}"
    is_server = os.path.isdir(tls)
    backup = os.path.join(server_dir if is_server else agent_dir, stamp)
    if is_server:
        shutil.copytree(tls, backup, dirs_exist_ok=True)
    else:
        os.makedirs(backup, mode=0o700, exist_ok=True)
    agent = [
        os.path.join(agent_dir, f"{n}.{ext}")
        for n in AGENT_LEAVES
        for ext in ("crt", "key")
        if os.path.isfile(os.path.join(agent_dir, f"{n}.{ext}"))
    ]
    for f in agent:
        shutil.copy2(f, os.path.join(backup, os.path.basename(f)))
    deleted = []
    for root in [tls] if is_server else []:
        for d, _, files in os.walk(root):
            for f in sorted(files):
                if is_leaf(f):
                    os.unlink(os.path.join(d, f))
                    deleted.append(os.path.join(d, f))
    for f in agent:
        os.unlink(f)
        deleted.append(f)
    return backup, deleted
