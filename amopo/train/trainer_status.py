"""Training progress in the TrainJob's own status: Kubeflow Trainer KEP-2779, feature gate ``TrainJobStatus``.

With the gate on, the Trainer injects into every trainer container (plugin ``TrainJobStatus``,
kubeflow/trainer pkg/runtime/framework/plugins/trainjobstatus; KEP
docs/proposals/2779-trainjob-progress/README.md):

    KUBEFLOW_TRAINER_SERVER_URL      the whole endpoint URL, path included:
        https://<controller-manager service>:<port>/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs/{name}/status
    KUBEFLOW_TRAINER_SERVER_CA_CERT  a path: /var/run/secrets/kubeflow/trainer/ca.crt (the CA of the endpoint's TLS)
    KUBEFLOW_TRAINER_SERVER_TOKEN    a path: /var/run/secrets/kubeflow/trainer/token (a projected service
                                     account token, rotated hourly: read afresh for every request)

Contract of :class:`TrainerStatusReporter`, made by :meth:`TrainerStatusReporter.from_env` on rank 0:

* without ``KUBEFLOW_TRAINER_SERVER_URL`` there is no reporter (``None``) and nothing happens;
* :meth:`~TrainerStatusReporter.report` (every step) and :meth:`~TrainerStatusReporter.finish` (once, at
  the end: 100 %) only store the step and the metrics dict for a background thread and return; they never
  touch the network, never raise, never wait;
* the thread sends ``POST <URL>`` with ``Authorization: Bearer <token>``, ``Content-Type: application/json``,
  over TLS verified with the given CA (the system's CAs when the CA variable is unset), a
  :data:`TIMEOUT_S` timeout, one request at a time, the next no sooner than :data:`MIN_INTERVAL_S` (5 s,
  the Trainer's rate) after the end of the last, with the latest step; only the final 100 % post goes at once;
* a failed request (refused, timed out, TLS, an HTTP error) is logged once as a warning (later ones at
  debug, a recovery at info); the next try waits an exponential back-off from :data:`MIN_INTERVAL_S`
  doubling to :data:`MAX_BACKOFF_S`;
* at interpreter exit the final post is given up to :data:`FLUSH_S` to go out (:meth:`close`).

Body (the Trainer's ``UpdateTrainJobStatusRequest``; it lands in the TrainJob's ``status.trainerStatus``)::

    {"trainerStatus": {
        "progressPercentage": 42,              # int 0..100; 99 at most until the final post
        "estimatedRemainingSeconds": 192,      # int >= 0, from this run's mean seconds per step
        "metrics": [{"name": "loss", "value": "0.61"}, ...],   # <= 256; name and value strings of 1..64 chars
        "lastUpdatedTime": "2026-01-23T10:30:45Z"}}             # RFC 3339, UTC, required

Metrics: the training loop's dict as it is (``loss``, ``accuracy/<dimension>``, ``lr``, ``tokens_per_s``,
``grad_norm``, ...), plus ``accuracy`` (the mean of ``accuracy/*``, the reward accuracy), ``step`` and
``total_steps``; the headline ones first, values as ``%.6g``.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone

ENV_URL = "KUBEFLOW_TRAINER_SERVER_URL"
ENV_CA_CERT = "KUBEFLOW_TRAINER_SERVER_CA_CERT"
ENV_TOKEN = "KUBEFLOW_TRAINER_SERVER_TOKEN"

MIN_INTERVAL_S = 5.0     # at most one request per 5 s (as the Kubeflow SDK's update_trainjob_status)
TIMEOUT_S = 5.0          # one request's connect/read timeout
MAX_BACKOFF_S = 300.0    # the cap of the back-off after failures
FLUSH_S = 10.0           # how long the process's exit waits for the final post
MAX_METRICS = 256        # the CRD's maxItems
MAX_CHARS = 64           # the CRD's maxLength of a metric's name and value
HEADLINE = ("loss", "accuracy", "learning_rate", "tokens_per_s", "grad_norm", "epoch", "step", "total_steps")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Snapshot:
    step: int
    total_steps: int
    metrics: dict
    at: float           # time.monotonic() when the training thread handed it over
    final: bool = False


def metric_list(metrics: dict) -> list[dict[str, str]]:
    """The KEP's ``metrics``: ``[{"name", "value"}]`` with string values, the headline names first,
    at most :data:`MAX_METRICS`; names or values longer than :data:`MAX_CHARS` are left out."""
    values = dict(metrics)
    accs = [v for k, v in values.items() if k.startswith("accuracy/") and isinstance(v, (int, float))]
    if accs and "accuracy" not in values:
        values["accuracy"] = sum(accs) / len(accs)
    names = [k for k in HEADLINE if k in values] + sorted(k for k in values if k not in HEADLINE)
    out = []
    for name in names:
        v = values[name]
        text = format(v, ".6g") if isinstance(v, float) else str(v)
        if 1 <= len(name) <= MAX_CHARS and 1 <= len(text) <= MAX_CHARS:
            out.append({"name": name, "value": text})
    return out[:MAX_METRICS]


class TrainerStatusReporter:
    """Posts training progress to the Trainer's status endpoint from a background thread; see the module."""

    def __init__(self, url: str, ca_cert: str | None, token_path: str | None, *, start_step: int = 0,
                 interval_s: float | None = None, timeout_s: float | None = None):
        self.url, self.ca_cert, self.token_path = url, ca_cert, token_path
        self.interval_s = MIN_INTERVAL_S if interval_s is None else interval_s
        self.timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
        self.start_step, self.started = start_step, time.monotonic()
        self.posts = self.failures = 0
        self._failing = False
        self._backoff = self.interval_s
        self._next_at = 0.0                      # monotonic time before which the thread sends nothing
        self._pending: _Snapshot | None = None
        self._last_metrics: dict = {}
        self._sent_final = self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="trainer-status", daemon=True)
        self._thread.start()
        atexit.register(self.close, FLUSH_S)

    @classmethod
    def from_env(cls, env=None, *, start_step: int = 0) -> "TrainerStatusReporter | None":
        """A reporter when ``KUBEFLOW_TRAINER_SERVER_URL`` is set (the Trainer's ``TrainJobStatus`` gate), else None."""
        env = os.environ if env is None else env
        url = env.get(ENV_URL)
        if not url:
            return None
        return cls(url, env.get(ENV_CA_CERT) or None, env.get(ENV_TOKEN) or None, start_step=start_step,
                   interval_s=MIN_INTERVAL_S, timeout_s=TIMEOUT_S)

    # -------------------------------------------------------------- the training thread

    def report(self, step: int, total_steps: int, metrics: dict) -> None:
        """Hand over this step's metrics; returns at once (the thread posts the latest when allowed)."""
        self._last_metrics = metrics
        self._hand_over(_Snapshot(step, total_steps, metrics, time.monotonic()))

    def finish(self, step: int, total_steps: int, metrics: dict | None = None) -> None:
        """Hand over the final 100 % post; returns at once (it goes out now, or by :meth:`close` at exit)."""
        self._hand_over(_Snapshot(step, total_steps, self._last_metrics if metrics is None else metrics,
                                  time.monotonic(), final=True))

    def _hand_over(self, snap: _Snapshot) -> None:
        with self._cond:
            if self._closing or (self._pending is not None and self._pending.final):
                return
            self._pending = snap
            self._cond.notify()

    def close(self, wait_s: float = 0.0) -> None:
        """Stop the thread, letting a pending final post go out within ``wait_s`` seconds."""
        atexit.unregister(self.close)
        with self._cond:
            self._closing = True
            if self._pending is not None and not self._pending.final:
                self._pending = None
            self._cond.notify()
        if wait_s > 0:
            self._thread.join(wait_s)

    # -------------------------------------------------------------- the posting thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    snap = self._pending
                    if snap is None:
                        if self._closing:
                            return
                        self._cond.wait()
                        continue
                    # The final post goes at once, unless it follows a failure and the process is not ending.
                    delay = 0.0 if snap.final and (self._closing or not self._failing) else \
                        self._next_at - time.monotonic()
                    if delay <= 0:
                        break
                    self._cond.wait(delay)
                self._pending = None
            ok = self._post(self.body(snap))
            with self._cond:   # the interval counts from the end of a request: requests are >= interval apart
                if ok:
                    self._backoff, self._next_at = self.interval_s, time.monotonic() + self.interval_s
                else:
                    self._next_at = time.monotonic() + self._backoff
                    self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
            if snap.final:
                return

    def body(self, snap: _Snapshot) -> dict:
        """The request body for ``snap`` (the module's schema)."""
        done = max(0, snap.step - self.start_step)
        left = max(0, snap.total_steps - snap.step)
        status: dict = {}
        if snap.final:
            status.update(progressPercentage=100, estimatedRemainingSeconds=0)
        else:
            status["progressPercentage"] = min(99, max(0, int(100 * snap.step / max(1, snap.total_steps))))
            if done:
                eta = (snap.at - self.started) / done * left
                if math.isfinite(eta):
                    status["estimatedRemainingSeconds"] = min(int(round(eta)), 2**31 - 1)   # an int32
        status["metrics"] = metric_list({**snap.metrics, "step": snap.step, "total_steps": snap.total_steps})
        status["lastUpdatedTime"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"trainerStatus": status}

    def _post(self, body: dict) -> bool:
        try:
            with open(self.token_path or "", encoding="utf-8") as fh:   # rotated by the kubelet: read each time
                token = fh.read().strip()
            context = ssl.create_default_context(cafile=self.ca_cert)
            request = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST", headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=context) as response:
                response.read()
        except Exception as exc:  # noqa: BLE001 - no failure of a status post reaches training
            self.failures += 1
            if not self._failing:
                log.warning("Kubeflow Trainer status: POST %s failed (%s: %s); training goes on, retrying with "
                            "back-off and without further warnings", self.url, type(exc).__name__, exc)
            else:
                log.debug("Kubeflow Trainer status: POST failed again (%s: %s)", type(exc).__name__, exc)
            self._failing = True
            return False
        self.posts += 1
        if self._failing:
            log.info("Kubeflow Trainer status: posting works again")
        self._failing = False
        return True
