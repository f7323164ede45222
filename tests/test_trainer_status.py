"""Training progress in the TrainJob's status (Kubeflow Trainer KEP-2779, feature gate TrainJobStatus).

The posting side against a local HTTPS server with a CA made here, playing the Trainer's status endpoint:
it checks the method and path, the bearer token, TLS with the given CA and the body's schema (written
below from the KEP and the TrainJob CRD); a real training run under the Trainer's variables posts
throttled progress and a final 100 %; a dead or silent endpoint neither fails nor slows training.
The reading side: run_trainjob against kmock prints a TrainJob's status.trainerStatus when it changes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import logging
import socket
import ssl
import threading
import time
from pathlib import Path

import jsonschema
import pytest

from amopo.train import loop as loop_lib
from amopo.train import trainer_status as ts
from amopo.train.trainer_status import TrainerStatusReporter
from tests.helpers.kube import api_client, until
from tests.helpers.training import train_config

NS, JOB = "team-a", "amopo-train-1"
STATUS_PATH = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs/{JOB}/status"
CRD = Path(__file__).resolve().parents[2] / "shared" / "crds" / "trainer.kubeflow.org_trainjobs.yaml"

# The request body: the Trainer's UpdateTrainJobStatusRequest as KEP-2779 gives it ("Control plane
# endpoint": {"trainerStatus": TrainJobTrainerStatus}), with the limits of the TrainJob CRD's
# status.trainerStatus (metrics maxItems 256, name/value 1..64 chars, lastUpdatedTime required).
BODY_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["trainerStatus"],
    "properties": {"trainerStatus": {
        "type": "object", "additionalProperties": False, "required": ["lastUpdatedTime"],
        "properties": {
            "progressPercentage": {"type": "integer", "minimum": 0, "maximum": 100},
            "estimatedRemainingSeconds": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
            "metrics": {"type": "array", "maxItems": 256, "items": {
                "type": "object", "additionalProperties": False, "required": ["name", "value"],
                "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 64},
                               "value": {"type": "string", "minLength": 1, "maxLength": 64}}}},
            "lastUpdatedTime": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$"},
        }}},
}


# --- a CA, a server certificate, and the endpoint ----------------------------------------------------

def _ca(folder: Path, name: str):
    """A self-signed CA: (key, certificate, path of its PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = folder / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def _server_cert(folder: Path, ca_key, ca_cert) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 signed by the CA: (certificate PEM, key PEM)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class StatusEndpoint:
    """The Trainer's status endpoint over HTTPS on 127.0.0.1: 200 for a POST to STATUS_PATH with a
    known bearer token and a body of BODY_SCHEMA, else 403/404/422. Every request is kept in
    ``requests`` as dict(at, path, token, body, code), before the answer, which waits ``delay_s``."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert, self.ca_path = _ca(folder, "trainer-ca")
        cert, key = _server_cert(folder, ca_key, ca_cert)
        self.tokens: set[str] = set()
        self.requests: list[dict] = []
        self.delay_s, self.closing = 0.0, threading.Event()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                auth = self.headers.get("Authorization", "")
                token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
                try:
                    payload = json.loads(body)
                    jsonschema.validate(payload, BODY_SCHEMA)
                    dt.datetime.fromisoformat(payload["trainerStatus"]["lastUpdatedTime"])
                    valid = self.headers.get("Content-Type") == "application/json"
                except (ValueError, jsonschema.ValidationError):
                    payload, valid = None, False
                code = (404 if self.path != STATUS_PATH else 403 if token not in endpoint.tokens
                        else 200 if valid else 422)
                endpoint.requests.append(dict(at=time.monotonic(), path=self.path, token=token, body=payload,
                                              code=code))
                endpoint.closing.wait(endpoint.delay_s)
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body if code == 200 else b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda *args: None   # a client that gave up (timed out) is no error here
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://localhost:{self.server.server_address[1]}{STATUS_PATH}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self) -> list[dict]:
        return [r for r in self.requests if r["code"] == 200]

    def close(self):
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint(tmp_path):
    server = StatusEndpoint(tmp_path / "endpoint")
    yield server
    server.close()


def _token_file(folder: Path, token: str) -> Path:
    path = folder / "token"
    path.write_text(token + "\n")
    return path


def _trainer_env(monkeypatch, url: str, ca: Path, token: Path) -> None:
    """The variables the Trainer's TrainJobStatus plugin injects (URL, and two file paths)."""
    monkeypatch.setenv(ts.ENV_URL, url)
    monkeypatch.setenv(ts.ENV_CA_CERT, str(ca))
    monkeypatch.setenv(ts.ENV_TOKEN, str(token))


class Timed:
    """Wraps the reporter's training-thread entry points: the reporters made, and the seconds spent in them."""

    def __init__(self, monkeypatch):
        self.reporters: list[TrainerStatusReporter] = []
        self.blocking_s, self.calls = 0.0, 0
        made = TrainerStatusReporter.from_env.__func__
        report, finish = TrainerStatusReporter.report, TrainerStatusReporter.finish

        def timed(fn):
            def wrapper(*args, **kw):
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kw)
                finally:
                    self.blocking_s += time.perf_counter() - t0
                    self.calls += 1
            return wrapper

        def from_env(cls, *args, **kw):
            reporter = made(cls, *args, **kw)
            if reporter is not None:
                self.reporters.append(reporter)
            return reporter

        monkeypatch.setattr(TrainerStatusReporter, "from_env", classmethod(timed(from_env)))
        monkeypatch.setattr(TrainerStatusReporter, "report", timed(report))
        monkeypatch.setattr(TrainerStatusReporter, "finish", timed(finish))

    def close(self):
        for reporter in self.reporters:
            reporter.close()


@pytest.fixture
def timed(monkeypatch):
    record = Timed(monkeypatch)
    yield record
    record.close()


@pytest.fixture
def slow_steps(monkeypatch):
    """Each optimizer step takes at least 0.25 s more, so that a short run spans several posts."""
    step = loop_lib._optimizer_step

    def slower(s):
        time.sleep(0.25)
        return step(s)

    monkeypatch.setattr(loop_lib, "_optimizer_step", slower)


def _wait(predicate, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _metrics(body: dict) -> dict[str, str]:
    return {m["name"]: m["value"] for m in body["trainerStatus"]["metrics"]}


# --- the posting side --------------------------------------------------------------------------------

def test_without_the_trainers_variables_there_is_no_reporter(monkeypatch):
    for name in (ts.ENV_URL, ts.ENV_CA_CERT, ts.ENV_TOKEN):
        monkeypatch.delenv(name, raising=False)
    assert TrainerStatusReporter.from_env() is None
    assert ts.MIN_INTERVAL_S == 5.0   # the Trainer's rate: one post per 5 s


def test_posts_at_most_every_5_s_with_a_fresh_token_then_100_at_once(endpoint, tmp_path):
    """The default interval, timed for real: reports every 20 ms give two posts 5 s apart;
    the token file is re-read for each post (the kubelet rotates it); the final post does not wait."""
    endpoint.tokens = {"token-1", "token-2"}
    token = _token_file(tmp_path, "token-1")
    reporter = TrainerStatusReporter.from_env({ts.ENV_URL: endpoint.url, ts.ENV_CA_CERT: str(endpoint.ca_path),
                                               ts.ENV_TOKEN: str(token)})
    try:
        t0, step = time.monotonic(), 0
        while len(endpoint.requests) < 2 and time.monotonic() - t0 < 9:
            step += 1
            reporter.report(step, 1000, {"loss": 0.7 - step / 10000, "accuracy/plain": 0.5, "learning_rate": 1e-5,
                                         "tokens_per_s": 1234.5})
            if step == 10:
                token.write_text("token-2\n")
            time.sleep(0.02)
        reporter.finish(step, step)
        _wait(lambda: len(endpoint.requests) >= 3)
    finally:
        reporter.close()
    first, second, final = endpoint.requests
    assert [r["code"] for r in endpoint.requests] == [200, 200, 200]
    assert [r["token"] for r in endpoint.requests] == ["token-1", "token-2", "token-2"]
    assert second["at"] - first["at"] >= 5.0
    assert final["at"] - second["at"] < 5.0
    assert first["body"]["trainerStatus"]["progressPercentage"] == 0
    assert 0 < second["body"]["trainerStatus"]["progressPercentage"] < 100
    assert second["body"]["trainerStatus"]["estimatedRemainingSeconds"] > 0
    assert final["body"]["trainerStatus"]["progressPercentage"] == 100
    assert final["body"]["trainerStatus"]["estimatedRemainingSeconds"] == 0
    names = [m["name"] for m in second["body"]["trainerStatus"]["metrics"]]
    assert names[:4] == ["loss", "accuracy", "learning_rate", "tokens_per_s"]   # the headline first; accuracy the mean
    assert _metrics(final["body"])["step"] == _metrics(final["body"])["total_steps"] == str(step)


def test_a_training_run_posts_throttled_progress_and_a_final_100(endpoint, tmp_path, monkeypatch, timed,
                                                                 slow_steps, prepared, tiny_model_dir, mlflow_uri):
    """A real (tiny) training run under the Trainer's variables, the interval lowered to 1 s."""
    monkeypatch.setattr(ts, "MIN_INTERVAL_S", 1.0)
    endpoint.tokens = {"projected-sa-token"}
    _trainer_env(monkeypatch, endpoint.url, endpoint.ca_path, _token_file(tmp_path, "projected-sa-token"))
    summary = loop_lib.train(train_config(prepared, tiny_model_dir, tmp_path / "run", mlflow_uri, max_steps=12))
    assert summary["steps"] == 12
    _wait(lambda: any(r["body"] and r["body"]["trainerStatus"].get("progressPercentage") == 100
                      for r in endpoint.requests))
    requests = endpoint.requests
    assert all(r["code"] == 200 for r in requests), [(r["code"], r["path"], r["token"]) for r in requests]
    assert len(requests) >= 3 and len(timed.reporters) == 1
    *progress, final = [r["body"]["trainerStatus"] for r in requests]
    times = [r["at"] for r in requests[:-1]]
    assert all(b - a >= 1.0 for a, b in zip(times, times[1:])), times   # throttled; the final may come sooner
    percents = [p["progressPercentage"] for p in progress]
    assert percents == sorted(percents) and all(0 < p < 100 for p in percents)
    assert all(p["estimatedRemainingSeconds"] >= 0 for p in progress)
    assert final["progressPercentage"] == 100 and final["estimatedRemainingSeconds"] == 0
    last = _metrics(requests[-1]["body"])
    assert last["step"] == last["total_steps"] == "12"
    assert {"loss", "accuracy", "learning_rate", "tokens_per_s", "grad_norm"} <= last.keys()
    assert float(last["loss"]) > 0 and float(last["tokens_per_s"]) > 0
    history = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert float(last["loss"]) == pytest.approx(json.loads(history[-1])["loss"], rel=1e-5)


def test_the_endpoint_is_trusted_only_through_the_given_ca(endpoint, tmp_path, caplog):
    """A CA other than the endpoint's: TLS fails, nothing reaches the handler, one warning says so."""
    _, _, other_ca = _ca(tmp_path, "some-other-ca")
    endpoint.tokens = {"t"}
    reporter = TrainerStatusReporter(endpoint.url, str(other_ca), str(_token_file(tmp_path, "t")), interval_s=0.05)
    try:
        with caplog.at_level(logging.DEBUG, logger=ts.__name__):
            for step in range(1, 30):
                reporter.report(step, 30, {"loss": 1.0})
                time.sleep(0.02)
            _wait(lambda: reporter.failures >= 2)
    finally:
        reporter.close()
    assert endpoint.requests == [] and reporter.posts == 0
    warnings = [r for r in caplog.records if r.name == ts.__name__ and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "CERTIFICATE_VERIFY_FAILED" in warnings[0].getMessage()


def _refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"https://127.0.0.1:{port}{STATUS_PATH}"


class Silent:
    """Accepts connections and never answers (a hung endpoint: the TLS handshake never completes)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.held: list[socket.socket] = []
        self.url = f"https://127.0.0.1:{self.sock.getsockname()[1]}{STATUS_PATH}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.mark.parametrize("dead", ["nothing-listening", "never-answers", "answers-after-30-s"])
def test_a_dead_endpoint_neither_fails_nor_slows_training(dead, request, tmp_path, monkeypatch, caplog, timed,
                                                          slow_steps, prepared, tiny_model_dir, mlflow_uri):
    """Training completes; the reporter's calls on the training thread take < 0.5 s in all; the failure is
    logged once however often it is retried (nothing listening: back-off from a lowered 0.2 s interval;
    never answers (no TLS handshake) or answers a request after 30 s: each try waits out the 5 s timeout,
    off the training thread)."""
    monkeypatch.setattr(ts, "MIN_INTERVAL_S", 0.2)
    silent = Silent() if dead == "never-answers" else None
    if dead == "answers-after-30-s":
        slow = request.getfixturevalue("endpoint")
        slow.tokens, slow.delay_s = {"t"}, 30.0
        url, ca = slow.url, slow.ca_path
    else:
        url = silent.url if silent else _refused_url()
        ca = tmp_path / "ca.crt"
        _ca(tmp_path, "ca")[2].rename(ca)
    _trainer_env(monkeypatch, url, ca, _token_file(tmp_path, "t"))
    try:
        with caplog.at_level(logging.DEBUG, logger=ts.__name__):
            summary = loop_lib.train(train_config(prepared, tiny_model_dir, tmp_path / "run", mlflow_uri,
                                                  max_steps=8))
            (reporter,) = timed.reporters
            if dead == "nothing-listening":
                _wait(lambda: reporter.failures >= 3)
            else:
                _wait(lambda: reporter.failures >= 1, timeout_s=ts.TIMEOUT_S + 5)
    finally:
        timed.close()
        if silent:
            silent.close()
    assert summary["steps"] == 8 and (tmp_path / "run" / "model" / "config.json").is_file()
    assert timed.calls == 1 + 8 + 1   # from_env, one report per step, finish
    assert timed.blocking_s < 0.5, timed.blocking_s
    assert reporter.posts == 0
    warnings = [r for r in caplog.records if r.name == ts.__name__ and r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert url in warnings[0].getMessage() and "training goes on" in warnings[0].getMessage()


def test_metric_names_and_values_fit_the_crd(tmp_path):
    many = {f"m{i:03d}": float(i) for i in range(300)} | {"x" * 65: 1.0, "loss": 0.5, "text": "y" * 65}
    metrics = ts.metric_list(many)
    assert len(metrics) == 256 and metrics[0] == {"name": "loss", "value": "0.5"}
    assert all(1 <= len(m["name"]) <= 64 and 1 <= len(m["value"]) <= 64 for m in metrics)


@pytest.mark.skipif(not CRD.is_file(), reason=f"{CRD} not found (../shared is only beside the project in CI)")
def test_the_schema_here_has_the_crds_limits():
    import yaml

    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    crd_status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["trainerStatus"]
    ours = BODY_SCHEMA["properties"]["trainerStatus"]
    assert set(crd_status["properties"]) == set(ours["properties"])
    assert crd_status["properties"]["metrics"]["maxItems"] == ours["properties"]["metrics"]["maxItems"]
    for field in ("name", "value"):
        crd_field = crd_status["properties"]["metrics"]["items"]["properties"][field]
        our_field = ours["properties"]["metrics"]["items"]["properties"][field]
        assert (crd_field["minLength"], crd_field["maxLength"]) == (our_field["minLength"], our_field["maxLength"])
    pct = crd_status["properties"]["progressPercentage"]
    assert (pct["minimum"], pct["maximum"]) == (0, 100)


# --- the reading side --------------------------------------------------------------------------------

async def _set_status(kmock, name: str, status: dict) -> None:
    """Write the TrainJob's status through the API, as the Trainer's status server does."""
    url = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs/{name}/status"
    async with kmock.patch(url, json={"status": status},
                           headers={"Content-Type": "application/merge-patch+json"}) as resp:
        assert resp.status == 200, await resp.text()


@pytest.mark.asyncio
async def test_run_trainjob_prints_the_trainer_status_when_it_changes(kmock):
    from amopo.cluster import run_trainjob, trainjob_manifest
    from tests.helpers.kube import stored

    name = "amopo-progress"
    manifest = trainjob_manifest(name, NS, "img", ["--data", "/d"], num_nodes=1, gpus_per_node=0)
    logs: list[str] = []
    task = asyncio.create_task(asyncio.to_thread(run_trainjob, manifest, api_client=api_client(kmock),
                                                 log=logs.append, timeout_s=30, poll_s=0.05, follow_logs=False))
    await until(lambda: stored(kmock, "trainjobs", NS, name) is not None)

    def status(pct, eta, loss, when):
        return {"trainerStatus": {"progressPercentage": pct, "estimatedRemainingSeconds": eta, "metrics": [
            {"name": "loss", "value": loss}, {"name": "accuracy", "value": "0.734"}, {"name": "learning_rate", "value": "1e-05"},
            {"name": "tokens_per_s", "value": "1234.56"}, {"name": "grad_norm", "value": "2.1"}],
            "lastUpdatedTime": when}}

    where = f"TrainJob {NS}/{name}"
    await _set_status(kmock, name, status(42, 192, "0.6123", "2026-01-01T00:00:05Z"))
    await until(lambda: any("42%" in line for line in logs))
    # Only the time changes: nothing new is printed.
    await _set_status(kmock, name, status(42, 192, "0.6123", "2026-01-01T00:00:10Z"))
    await asyncio.sleep(0.3)
    await _set_status(kmock, name, status(100, 0, "0.5", "2026-01-01T00:00:15Z"))
    await until(lambda: any("100%" in line for line in logs))
    await _set_status(kmock, name, {"conditions": [{"type": "Complete", "status": "True", "reason": "JobsCompleted",
                                                    "message": "", "lastTransitionTime": "2026-01-01T00:00:20Z"}]})
    result = await task
    assert result["condition"] == "Complete"
    progress = [line for line in logs if "train:" in line]
    assert progress == [f"{where}: train: 42% · ~3m12s left · loss 0.6123 · acc 0.734 · lr 1e-05 · tok/s 1235",
                        f"{where}: train: 100% · ~0s left · loss 0.5 · acc 0.734 · lr 1e-05 · tok/s 1235"]
