"""A real OCI registry for tests: Debian's ``docker-registry`` (CNCF distribution).

Started on a free port of a given listen address (``127.0.0.1`` by default; the test
hosts' bridge address works too), with TLS from a throwaway test CA (made with
``cryptography``) and basic auth from an htpasswd file (bcrypt, the only hash the
registry accepts). Storage is a plain directory, so a test can tamper with a blob
(:meth:`TestRegistry.blob_path`) and the registry serves the changed bytes.

Library use::

    with TestRegistry(tmp_path) as reg:
        reg.url            # https://127.0.0.1:PORT
        reg.host           # 127.0.0.1:PORT (what goes in an image reference)
        reg.ca_file        # PEM of the CA that signed the server certificate
        reg.username, reg.password
        reg.session()      # a requests.Session with CA and basic auth, for raw checks

Needs ``/usr/bin/docker-registry`` (``scripts/setup.sh`` installs it); tests using
:func:`registry_for_tests` skip without it unless ``MK8S_REQUIRE_REGISTRY=1`` (or
``MK8S_REQUIRE_HOSTS=1``, as scripts/test.sh sets it for root).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

BINARY_NAMES = ("docker-registry", "registry")
START_TIMEOUT = 20.0


def find_binary() -> str | None:
    """Path of the registry server binary, or None when it is not installed."""
    for name in BINARY_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port(address: str) -> int:
    """A port free on ``address`` right now (the registry binds it a moment later)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


# -- TLS ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TestCA:
    """A CA certificate (PEM) and its key, to sign server certificates."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    __test__ = False  # not a pytest test class

    @classmethod
    def create(cls, name: str = "mk8s test CA") -> TestCA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue_server(self, names: list[str]) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for a server known by ``names`` (IPs or DNS)."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem


# -- the registry ------------------------------------------------------------------------
class TestRegistry:
    """One ``docker-registry`` process with TLS and htpasswd auth, in ``workdir``."""

    __test__ = False

    def __init__(
        self,
        workdir: Path,
        *,
        address: str = "127.0.0.1",
        port: int | None = None,
        username: str = "mk8s",
        password: str | None = None,
        ca: TestCA | None = None,
        binary: str | None = None,
        token_auth: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.address = address
        self.port = port or free_port(address)
        self.username = username
        self.password = password or "pw-" + secrets.token_urlsafe(12)
        self.ca = ca or TestCA.create()
        self.binary = binary or find_binary()
        self.token_auth = token_auth  # auth.token settings instead of htpasswd
        self.proc: subprocess.Popen[bytes] | None = None
        self.storage = self.workdir / "storage"
        self.ca_file = self.workdir / "ca.pem"
        self.config_file = self.workdir / "config.yml"
        self.log_file = self.workdir / "registry.log"

    # -- addresses -------------------------------------------------------------------
    @property
    def host(self) -> str:
        """``address:port`` as it appears in image references."""
        addr = f"[{self.address}]" if ":" in self.address else self.address
        return f"{addr}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> TestRegistry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Write the config, start the server, wait until ``/v2/`` answers 401."""
        if self.binary is None:
            raise RuntimeError("docker-registry is not installed; run scripts/setup.sh")
        self._write_files()
        log = open(self.log_file, "ab")  # noqa: SIM115 (the process keeps it open)
        try:
            self.proc = subprocess.Popen(
                [self.binary, "serve", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        finally:
            log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        cert, key = self.ca.issue_server([self.address, "localhost"])
        self.ca_file.write_bytes(self.ca.pem())
        (self.workdir / "server.pem").write_bytes(cert)
        key_file = self.workdir / "server.key"
        key_file.write_bytes(key)
        key_file.chmod(0o600)
        hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=5))
        (self.workdir / "htpasswd").write_bytes(self.username.encode() + b":" + hashed + b"\n")
        self.config_file.write_text(yaml.safe_dump(self.config()))

    def config(self) -> dict[str, Any]:
        """The registry's configuration (distribution's config.yml)."""
        return {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": self.host,
                "secret": secrets.token_hex(16),
                "tls": {
                    "certificate": str(self.workdir / "server.pem"),
                    "key": str(self.workdir / "server.key"),
                },
            },
            "auth": (
                {"token": self.token_auth}
                if self.token_auth
                else {"htpasswd": {"realm": "mk8s-test", "path": str(self.workdir / "htpasswd")}}
            ),
        }

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited early:\n{self.log_tail()}")
            try:
                r = requests.get(f"{self.url}/v2/", verify=str(self.ca_file), timeout=2)
                if r.status_code == 401:
                    return
                last = f"HTTP {r.status_code}"
            except requests.RequestException as e:
                last = str(e)
            time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not answer ({last}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- for assertions --------------------------------------------------------------
    def session(self) -> requests.Session:
        """A session that trusts the test CA and sends the basic credentials."""
        s = requests.Session()
        s.verify = str(self.ca_file)
        s.auth = (self.username, self.password)
        s.trust_env = False
        return s

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (tamper with it here)."""
        algo, hex_ = digest.split(":", 1)
        return self.storage / "docker/registry/v2/blobs" / algo / hex_[:2] / hex_ / "data"

    def request_count(self, method: str, path_part: str = "") -> int:
        """How many access-log lines show ``method`` on a path containing ``path_part``."""
        needle = f'"{method} '
        return sum(
            1
            for line in self.log_file.read_text(errors="replace").splitlines()
            if needle in line and path_part in line and "HTTP/" in line
        )


@contextmanager
def registry_for_tests(workdir: Path, **kwargs: Any) -> Iterator[TestRegistry]:
    """A started :class:`TestRegistry`; skips when the binary is missing, but fails
    instead when ``MK8S_REQUIRE_REGISTRY=1`` or ``MK8S_REQUIRE_HOSTS=1`` (what
    scripts/test.sh sets as root, where setup.sh has installed it). Always stopped."""
    if find_binary() is None:
        msg = "docker-registry is not installed (scripts/setup.sh installs it)"
        if "1" in (os.environ.get("MK8S_REQUIRE_REGISTRY"), os.environ.get("MK8S_REQUIRE_HOSTS")):
            pytest.fail(msg)
        pytest.skip(msg)
    reg = TestRegistry(workdir, **kwargs)
    try:
        reg.start()
        yield reg
    finally:
        reg.stop()


# The fix mk8s names for a caFile that is not a PEM CA (pinned by the cluster tests).
CA_FIX = "caFile must be the PEM certificate(s) of the CA that signed the registry's certificate"


def pem_block(label: str, body: bytes = b"AAAA") -> bytes:
    """A PEM block of any label (a key, a CSR, garbage) for the caFile checks."""
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, body, label)
