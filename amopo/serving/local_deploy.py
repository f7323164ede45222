"""A local deployment: `amopo serve` as a background process on 127.0.0.1, recorded in a state file.

    start_local_server(model, state_file, …) → {"url", "pid", "log_path", "model", "model_name"}
    stop_local_server(state_file)            → True when a recorded server was stopped

The state file (JSON) is what lets a later, separate process (a pipeline's clean-up step, a user)
find and stop the server. The server outlives the process that started it: its own session, its
output in ``log_path``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from amopo.errors import AmopoError


class DeployError(AmopoError):
    """The model server did not start or did not become ready."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _ready(url: str, model_name: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/models/{model_name}", timeout=2.0) as resp:
            return resp.status == 200 and json.loads(resp.read()).get("ready") is True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def start_local_server(model: str, state_file: str | Path, *, model_name: str = "amopo", port: int = 0,
                       tracking_uri: str | None = None, timeout_s: float = 300.0,
                       extra_args: list[str] | tuple[str, ...] = ()) -> dict:
    """Start ``amopo serve --model MODEL`` on 127.0.0.1 (a free port when ``port`` is 0), wait until the
    model reports ready, write and return the state. A server already recorded in ``state_file`` is
    stopped first, so re-running a deployment replaces it."""
    state_path = Path(state_file)
    stop_local_server(state_path)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = state_path.with_suffix(".log")
    cmd = [sys.executable, "-m", "amopo", "serve", "--model", model, "--model-name", model_name,
           "--host", "127.0.0.1", "--port", str(port), *extra_args]
    if tracking_uri:
        cmd += ["--mlflow-tracking-uri", tracking_uri]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while not _ready(url, model_name):
        if proc.poll() is not None:
            raise DeployError(f"amopo serve exited with status {proc.returncode} before it was ready; "
                              f"log {log_path}:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            _terminate(proc.pid)
            raise DeployError(f"amopo serve was not ready on {url} within {timeout_s:.0f} s; "
                              f"log {log_path}:\n{_tail(log_path)}")
        time.sleep(0.5)
    state = {"url": url, "pid": proc.pid, "log_path": str(log_path), "model": model, "model_name": model_name}
    tmp = state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(state_path)
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _terminate(pid: int, timeout_s: float = 20.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)      # reaps it when this process is its parent
        except ChildProcessError:
            pass
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)


def stop_local_server(state_file: str | Path) -> bool:
    """Stop the server recorded in ``state_file`` (if it still runs) and remove the record."""
    path = Path(state_file)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    pid = int(state.get("pid", 0))
    running = pid > 0 and _alive(pid)
    if running:
        _terminate(pid)
    path.unlink(missing_ok=True)
    return running
