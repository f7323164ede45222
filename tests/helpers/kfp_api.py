"""A stand-in for the Kubeflow Pipelines API server: it records every request (method, path, headers,
body) and answers the few calls ``kfp.Client.create_run_from_pipeline_package`` makes, over HTTP or,
given a certificate, HTTPS."""

from __future__ import annotations

import json
import ssl
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import parse_qs, urlparse


class Recorded(list):
    """The requests the server received, as dicts: method, path, query, headers (lower-case), body."""

    def bodies(self, method: str, path_prefix: str) -> list[dict]:
        return [r["body"] for r in self if r["method"] == method and r["path"].startswith(path_prefix)]


def _handler(recorded: Recorded):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _answer(self) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            recorded.append({"method": self.command, "path": url.path, "query": parse_qs(url.query),
                             "headers": {k.lower(): v for k, v in self.headers.items()},
                             "body": json.loads(raw) if raw else None})
            if url.path.endswith("/healthz"):
                body = {"multi_user": True}
            elif url.path.endswith("/experiments") and self.command == "GET":
                namespace = parse_qs(url.query).get("namespace", [""])[0]
                body = {"experiments": [{"experiment_id": "exp-1", "display_name": "found", "namespace": namespace}],
                        "total_size": 1}
            elif url.path.endswith("/runs") and self.command == "POST":
                body = {"run_id": "run-42", "display_name": "r", "experiment_id": "exp-1"}
            else:
                body = {}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

    return Handler


@contextmanager
def kfp_api(cert_file: str | None = None, key_file: str | None = None) -> Iterator[tuple[str, Recorded]]:
    """(base URL, recorded requests) of a server running for the duration of the block."""
    recorded = Recorded()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorded))
    scheme = "http"
    if cert_file:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}", recorded
    finally:
        server.shutdown()
        server.server_close()


def self_signed_certificate(folder) -> tuple[str, str]:
    """(certificate, key) files of a fresh self-signed certificate for 127.0.0.1, which is its own CA."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "server.crt", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)
