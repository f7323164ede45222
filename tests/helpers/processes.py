"""Start a server subprocess on a free 127.0.0.1 port, wait for it to answer, stop it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(base: str, name: str) -> float:
    """The sum of the samples of Prometheus metric ``name`` (any labels, or the exact labelled name)
    on ``base``/metrics."""
    text = httpx.get(f"{base}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if re.match(rf"^{re.escape(name)}(\{{| )", line))


class Server:
    """A subprocess whose output goes to ``log``; ``stop()`` ends it by its own pid."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT):
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._fh, stderr=subprocess.STDOUT, cwd=cwd,
                                     env={**os.environ, **(env or {})})

    def wait_http(self, url: str, timeout_s: float = 180.0) -> None:
        """Poll ``url`` until it answers 200; fail with the log's tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{url} did not answer within {timeout_s:.0f}s:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        self._fh.flush()
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._fh.close()
        return self.proc.returncode


def start_mlflow_server(workdir: Path) -> tuple[Server, str]:
    """A real ``mlflow server`` (sqlite backend, proxied artifacts) on a free port; returns (server, uri)."""
    port = free_port()
    cmd = [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
           "--artifacts-destination", str(workdir / "artifacts")]
    # The job runner would start eight more processes; these tests do not need it.
    server = Server(cmd, workdir / "mlflow-server.log", env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    server.wait_http(uri + "/health")
    return server, uri


def start_amopo_server(model_dir: Path, workdir: Path, *args: str, env: dict[str, str] | None = None
                       ) -> tuple[Server, str]:
    """``amopo serve`` on a free port; returns (server, base URL) once it is ready."""
    port = free_port()
    cmd = [sys.executable, "-m", "amopo", "serve", "--model", str(model_dir), "--port", str(port), *args]
    server = Server(cmd, workdir / "amopo-serve.log", env=env)
    base = f"http://127.0.0.1:{port}"
    server.wait_http(base + "/v2/health/ready")
    return server, base
