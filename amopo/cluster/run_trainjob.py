"""Create a TrainJob and follow it to its end: print the trainer pods' logs, raise on failure,
delete it when cancelled or out of time."""

from __future__ import annotations

import time
from typing import Callable

from amopo.cluster.errors import ClusterError
from amopo.cluster.kube import Terminated, api_error_text, find_condition, load_kube_client, sigterm_raises
from amopo.cluster.trainjob import GROUP, KIND, PLURAL, TRAINER_CONTAINER, TRAINER_JOB, VERSION

# Labels JobSet puts on every pod of the JobSet the Trainer creates under the TrainJob's name.
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
# Terminal condition types of a TrainJob (trainer.kubeflow.org/v1alpha1).
COMPLETE, FAILED, SUSPENDED = "Complete", "Failed", "Suspended"


def trainjob_outcome(obj: dict) -> tuple[str, dict] | None:
    """("Complete" | "Failed", condition) once a TrainJob's status says it ended, else None."""
    for kind in (FAILED, COMPLETE):
        cond = find_condition(obj, kind)
        if cond and cond.get("status") == "True":
            return kind, cond
    return None


# status.trainerStatus metrics shown in the progress line, under these labels, when the job reports them.
PROGRESS_METRICS = (("loss", "loss"), ("accuracy", "acc"), ("learning_rate", "lr"), ("tokens_per_s", "tok/s"))


def _duration(seconds: int) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def trainer_status_line(obj: dict) -> str | None:
    """``train: 42% · ~3m12s left · loss 0.61 · acc 0.73 · lr 1e-05 · tok/s 1234`` from a TrainJob's
    ``status.trainerStatus`` (what the training pods post under the Trainer's ``TrainJobStatus`` feature gate,
    :mod:`amopo.train.trainer_status`), or None when it has none. Without the known metrics, the first four."""
    status = ((obj or {}).get("status") or {}).get("trainerStatus")
    if not status:
        return None
    parts = []
    if status.get("progressPercentage") is not None:
        parts.append(f"{status['progressPercentage']}%")
    if status.get("estimatedRemainingSeconds") is not None:
        parts.append(f"~{_duration(status['estimatedRemainingSeconds'])} left")
    metrics = {m.get("name"): m.get("value") for m in status.get("metrics") or [] if m.get("name")}
    shown = [(label, metrics[name]) for name, label in PROGRESS_METRICS if name in metrics] or list(metrics.items())[:4]
    parts += [f"{label} {_short(value)}" for label, value in shown]
    return "train: " + " · ".join(parts) if parts else None


def _short(value) -> str:
    """A metric's value with 4 significant digits when it is a number, else as it is."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.0f}" if abs(number) >= 1000 else f"{number:.4g}"


class PodLogFollower:
    """Prints new log lines of the trainer pods of one TrainJob at each ``poll()``.

    Lines are fetched with timestamps and only those newer than the last printed one (per pod)
    are shown, each prefixed by the pod's name. Pods that do not exist yet, or whose container has
    not started, are skipped silently; log errors never fail the job.
    """

    def __init__(self, core_api, namespace: str, job_name: str, log: Callable[[str], None]):
        self.core, self.namespace, self.log = core_api, namespace, log
        self.selector = f"{JOBSET_NAME_LABEL}={job_name},{REPLICATED_JOB_LABEL}={TRAINER_JOB}"
        self.last: dict[str, str] = {}

    def poll(self) -> None:
        from kubernetes.client import ApiException

        try:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items
        except ApiException:
            return
        for pod in sorted(pods, key=lambda p: p.metadata.name):
            name = pod.metadata.name
            try:
                text = self.core.read_namespaced_pod_log(name, self.namespace, container=TRAINER_CONTAINER,
                                                         timestamps=True)
            except ApiException:
                continue
            last = self.last.get(name, "")
            for line in (text or "").splitlines():
                stamp, _, message = line.partition(" ")
                # RFC 3339 timestamps with a fixed-width fraction order as strings.
                if stamp > last:
                    self.log(f"[{name}] {message}")
                    self.last[name] = last = stamp


def run_trainjob(manifest: dict, *, api_client=None, timeout_s: float = 24 * 3600, poll_s: float = 10.0,
                 log: Callable[[str], None] = print, follow_logs: bool = True) -> dict:
    """Create the TrainJob ``manifest`` and wait until it completes.

    Every ``poll_s`` seconds the TrainJob is read and (``follow_logs``) new log lines of its trainer
    pods (selected by the JobSet labels ``jobset.sigs.k8s.io/jobset-name=<name>`` and
    ``replicatedjob-name=node``) are passed to ``log``. Ends when a status condition of type
    ``Complete`` or ``Failed`` is True (the Trainer's terminal conditions). When the TrainJob carries
    ``status.trainerStatus`` (the Trainer's ``TrainJobStatus`` feature gate; the training posts it), its
    progress line (:func:`trainer_status_line`) is logged whenever it changes.

    Returns ``{"name", "namespace", "condition": "Complete", "reason", "message", "duration_s"}``.
    Raises ClusterError: when creating fails (e.g. it already exists); on ``Failed``, with the
    condition's reason and message (the TrainJob is kept for inspection); after ``timeout_s``
    (the TrainJob is deleted). On KeyboardInterrupt or SIGTERM (main thread) the TrainJob is deleted
    and the interrupt re-raised, or a ClusterError raised for SIGTERM.
    ``api_client``: a ``kubernetes.client.ApiClient``; default :func:`load_kube_client`.
    """
    from kubernetes import client
    from kubernetes.client import ApiException

    api_client = api_client or load_kube_client()
    objects, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    name = manifest["metadata"]["name"]
    namespace = manifest["metadata"].get("namespace") or "default"
    where = f"{KIND} {namespace}/{name}"
    try:
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    except ApiException as exc:
        raise ClusterError(f"{where}: create failed ({api_error_text(exc)})", kind=KIND, namespace=namespace,
                           name=name) from None
    start = time.monotonic()
    follower = PodLogFollower(core, namespace, name, log) if follow_logs else None

    def delete(why: str) -> None:
        try:
            objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                    propagation_policy="Foreground")
            log(f"{where}: deleted ({why})")
        except ApiException as exc:
            if exc.status != 404:
                log(f"{where}: could not delete ({api_error_text(exc)}); delete it by hand")

    with sigterm_raises():
        try:
            log(f"{where}: created; waiting for it to complete")
            suspended_logged, progress = False, None
            while True:
                try:
                    obj = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
                except ApiException as exc:
                    if exc.status == 404:
                        raise ClusterError(f"{where}: disappeared while running (deleted by someone else?)",
                                           kind=KIND, namespace=namespace, name=name) from None
                    obj = None  # a transient API error: try again at the next poll
                if follower is not None:
                    follower.poll()
                line = trainer_status_line(obj) if obj else None
                if line is not None and line != progress:
                    log(f"{where}: {line}")
                    progress = line
                outcome = trainjob_outcome(obj) if obj else None
                elapsed = time.monotonic() - start
                if outcome is not None:
                    kind, cond = outcome
                    reason, message = cond.get("reason") or "", cond.get("message") or ""
                    if kind == FAILED:
                        raise ClusterError(f"{where} failed after {elapsed:.0f}s: {reason}: {message}".rstrip(": "),
                                           kind=KIND, namespace=namespace, name=name, reason=reason,
                                           message=message)
                    log(f"{where}: {kind} after {elapsed:.0f}s")
                    return {"name": name, "namespace": namespace, "condition": kind, "reason": reason,
                            "message": message, "duration_s": round(elapsed, 3)}
                suspended = obj and find_condition(obj, SUSPENDED)
                if suspended and suspended.get("status") == "True" and not suspended_logged:
                    log(f"{where}: suspended ({suspended.get('reason', '')}); waiting for it to be admitted")
                    suspended_logged = True
                if elapsed >= timeout_s:
                    delete(f"no Complete or Failed condition within {timeout_s:.0f}s")
                    raise ClusterError(f"{where}: timed out after {timeout_s:.0f}s without completing; "
                                       "the TrainJob was deleted", kind=KIND, namespace=namespace, name=name,
                                       reason="Timeout")
                time.sleep(min(poll_s, max(0.0, timeout_s - elapsed)))
        except KeyboardInterrupt:
            delete("cancelled")
            raise
        except Terminated:
            delete("SIGTERM")
            raise ClusterError(f"{where}: cancelled by SIGTERM; the TrainJob was deleted", kind=KIND,
                               namespace=namespace, name=name, reason="Cancelled") from None
