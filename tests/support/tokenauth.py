"""A Docker-style token service for the test registry (what Docker Hub and ghcr.io do).

The registry answers 401 with ``WWW-Authenticate: Bearer realm=...,service=...,
scope=...``; the client fetches a JWT from the realm (with basic credentials, or none
for anonymous pulls) and retries with ``Authorization: Bearer``. Tokens are ES256 JWTs
whose ``x5c`` header carries a self-signed certificate that the registry trusts
(``auth.token.rootcertbundle``). The service listens with TLS from the registry's CA.

    issuer = TokenService(workdir, ca, users={"u": "pw"}, anonymous_pull=["pub/app"])
    with issuer:
        reg = TestRegistry(dir, ca=ca, token_auth=issuer.registry_config())
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import secrets
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.support.registry import TestCA

SERVICE = "mk8s-test-registry"
ISSUER = "mk8s-test-token-service"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """Issues tokens to ``users`` (name -> password); ``anonymous_pull`` repositories
    may be pulled without credentials. ``requests`` counts token requests."""

    def __init__(
        self,
        workdir: Path,
        ca: TestCA,
        users: dict[str, str],
        anonymous_pull: list[str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users = users
        self.anonymous_pull = set(anonymous_pull or [])
        self.requests = 0
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = self._signing_cert()
        self.bundle = self.workdir / "token-signer.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        cert, key = ca.issue_server(["127.0.0.1"])
        (self.workdir / "tls.pem").write_bytes(cert)
        (self.workdir / "tls.key").write_bytes(key)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.workdir / "tls.pem", self.workdir / "tls.key")
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.realm = f"https://127.0.0.1:{self.server.server_address[1]}/token"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> TokenService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def registry_config(self) -> dict[str, Any]:
        """The ``auth.token`` section of the registry's config."""
        return {
            "realm": self.realm,
            "service": SERVICE,
            "issuer": ISSUER,
            "rootcertbundle": str(self.bundle),
        }

    def _signing_cert(self) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mk8s token signer")])
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def token(self, subject: str, scopes: list[str]) -> str:
        """A signed JWT granting ``scopes`` (``repository:NAME:ACTIONS``) to ``subject``."""
        access = []
        for scope in scopes:
            kind, rest = scope.split(":", 1)
            name, _, actions = rest.rpartition(":")
            allowed = [a for a in actions.split(",") if subject or name in self.anonymous_pull]
            if not subject:
                allowed = [a for a in allowed if a == "pull"]
            access.append({"type": kind, "name": name, "actions": allowed})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        r, s = decode_dss_signature(
            self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _handler(svc: TokenService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def handle(self) -> None:
            with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
                super().handle()

        def do_GET(self) -> None:
            svc.requests += 1
            query = parse_qs(urlsplit(self.path).query)
            subject = ""
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                if svc.users.get(user) != password:
                    return self._send(401, {"details": "incorrect username or password"})
                subject = user
            if query.get("service") != [SERVICE]:
                return self._send(400, {"details": "unknown service"})
            token = svc.token(subject, query.get("scope", []))
            self._send(200, {"token": token, "access_token": token, "expires_in": 300})

        def _send(self, status: int, doc: dict[str, Any]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
