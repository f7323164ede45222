"""The console of a local pipeline run: one line per step as it starts and as it ends (elapsed time
and the step's key figure), one progress line while a step reports progress, and everything the steps
and KFP print in one log file per step.

Where the output comes from (kfp 2.17): KFP's local runner prints all of it on the parent's
``sys.stdout``. Each task's subprocess (stderr merged into stdout) is re-printed line by line with
``print`` (``kfp.local.subprocess_task_handler.run_local_subprocess``), and the runner's own messages
go through a logging handler that it builds on ``sys.stdout`` around every task
(``kfp.local.logging_utils.local_logger_context``). So :class:`StepLogs`, put in place of
``sys.stdout`` (and ``sys.stderr``, for warnings of this process) for the length of the run, sees every
line; the runner's "Executing task 'NAME'" and "Task 'NAME' finished with status S" lines delimit the
steps. Nothing of KFP is patched; if its wording ever changes, the lines still reach ``pipeline.log``
and only the step lines go missing.
"""

from __future__ import annotations

import collections
import io
import json
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, TextIO

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
STARTED = re.compile(r"Executing task '([^']+)'")
FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
RULE = re.compile(r"^-{20,}$")   # the runner's horizontal line after each task
# a tqdm line: "desc:  50%|█████     | 12/24 [00:03<00:03,  3.2step/s, loss=0.5]"
TQDM = re.compile(r"^\s*(?:(?P<desc>[^|]*?):\s*)?(?P<pct>\d{1,3})%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)"
                  r"(?:\s*\[[^<\]]*<(?P<left>[^,\]]*))?")
TASK_WIDTH = 20
TAIL_LINES = 8


# ---------------------------------------------------------------------------------------------------
# the line formats

def clock(seconds: float) -> str:
    """Time since the run started: ``m:ss`` (``h:mm:ss`` from an hour on)."""
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:2d}:{s % 60:02d}"


def duration(seconds: float) -> str:
    """A step's elapsed time: ``4.2s``, ``3m07s``, ``1h02m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def step_line(at: float, task: str, event: str, took: float | None = None, figure: str | None = None) -> str:
    """``[ 1:17] train-model          done    1m12s  24 steps, held-out plain accuracy 0.562 → 0.594``."""
    line = f"[{clock(at)}] {task:<{TASK_WIDTH}} {event:<7}"
    if took is not None:
        line += f" {duration(took):>6}"
    if figure:
        line += f"  {figure}"
    return line.rstrip()


def progress_text(line: str) -> str | None:
    """A tqdm line → ``train amopo 12/24, 00:03 left``; None for any other line."""
    m = TQDM.match(line)
    if not m:
        return None
    text = f"{m['desc'].strip() + ' ' if m['desc'] and m['desc'].strip() else ''}{m['n']}/{m['total']}"
    left = (m["left"] or "").strip()
    return text + (f", {left} left" if left and "?" not in left else "")


# ---------------------------------------------------------------------------------------------------
# the key figure of each step, from what the runner left in its task folder

def read_task(folder: Path) -> dict:
    """A task folder's executor_output.json → {"params": output parameters, "artifacts": name → path,
    "metadata": name → artifact metadata}; empty when the task wrote none."""
    record = Path(folder) / "executor_output.json"
    data = json.loads(record.read_text()) if record.is_file() else {}
    first = {name: (entry.get("artifacts") or [{}])[0] for name, entry in (data.get("artifacts") or {}).items()}
    return {"params": data.get("parameterValues") or {},
            "artifacts": {name: a.get("uri") for name, a in first.items()},
            "metadata": {name: a.get("metadata") or {} for name, a in first.items()}}


def gate_reasons(decision_file: str | Path | None) -> list[str]:
    """The reasons of a gate's Markdown decision (its "- " lines)."""
    if not decision_file or not Path(decision_file).is_file():
        return []
    lines = Path(decision_file).read_text(encoding="utf-8").splitlines()
    return [line[2:] for line in lines if line.startswith("- ")]


def _count(value) -> str:
    return str(int(value))


def _score(value) -> str:
    return f"{float(value):.3f}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _numbers(task: dict) -> dict:
    """Every metric the task reported: its artifacts' numeric metadata and a results/metrics.json."""
    flat = {k: v for meta in task["metadata"].values() for k, v in meta.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for uri in task["artifacts"].values():
        if uri and Path(uri, "metrics.json").is_file():
            flat.update(json.loads(Path(uri, "metrics.json").read_text()))
    return flat


def _vs(label: str, value, other, word: str) -> str | None:
    """``label 0.594 (base 0.562)`` or ``label 0.562 → 0.594`` (word "→"); None without ``value``."""
    if value is None:
        return None
    if other is None:
        return f"{label} {_score(value)}"
    if word == "→":
        return f"{label} {_score(other)} → {_score(value)}"
    return f"{label} {_score(value)} ({word} {_score(other)})"


def _labels(items) -> list[str]:
    return [str((i.get("label") or i.get("objective")) if isinstance(i, dict) else i) for i in items or []]


def _plan(task: dict, folder: Path) -> list:
    labels = _labels(task["params"].get("Output"))
    return [bool(labels) and f"objectives: {', '.join(labels)}"]


def _annotate(task: dict, folder: Path) -> list:
    meta, scored = task["metadata"].get("annotated", {}), task["params"].get("Output")
    if not meta.get("dimension"):
        return ["skipped (no annotate_dimension)"]
    return [f"{meta['dimension']}: {_count(scored)} responses scored",
            meta.get("unparseable") and f"{_count(meta['unparseable'])} unparseable"]


def _prepare(task: dict, folder: Path) -> list:
    meta = task["metadata"].get("dataset", {})
    pairs = task["params"].get("Output", meta.get("train_pairs"))
    held, dims = meta.get("eval_pairs"), meta.get("dimensions")
    return [pairs is not None and f"{_count(pairs)} train pairs", held is not None and f"{_count(held)} held-out",
            bool(dims) and f"{len(dims)} dimensions"]


def _train(task: dict, folder: Path) -> list:
    flat, meta = _numbers(task), task["metadata"].get("model", {})
    return [meta.get("objective"), meta.get("steps") is not None and f"{_count(meta['steps'])} steps",
            _vs("held-out plain accuracy", flat.get("heldout_final/accuracy/plain"),
                flat.get("heldout_base/accuracy/plain"), "→")]


def _evaluate(task: dict, folder: Path) -> list:
    flat = _numbers(task)
    trained = read_task(folder.parent / "train-model")     # the training it evaluated, beside it
    win = flat.get("winrate/raw")
    return [trained["metadata"].get("model", {}).get("objective"),
            win is not None and f"win rate {_score(win)}"
            + (f" (LC {_score(flat['winrate/lc'])})" if flat.get("winrate/lc") is not None else ""),
            _vs("plain accuracy", flat.get("pref_accuracy/plain"), flat.get("pref_base_accuracy/plain"), "base"),
            _vs("steer accuracy", flat.get("steer/accuracy"), flat.get("steer_base/accuracy"), "base")]


def _compare(task: dict, folder: Path) -> list:
    best, meta = task["params"].get("Output"), task["metadata"].get("comparison", {})
    if not best:
        return ["no objective has the metric" if best == "" else None]
    metric, value = meta.get("metric"), _numbers(task).get(f"{best}/{meta.get('metric')}")
    return [f"best: {best}" + (f" on {metric}" if metric else "")
            + (f" ({_score(value)})" if value is not None else "")]


def _select(task: dict, folder: Path) -> list:
    meta = task["metadata"].get("model", {})
    best, compared = meta.get("comparison_best"), _labels(meta.get("compared"))
    return [best and f"{best}" + (f" (of {', '.join(compared)})" if len(compared) > 1 else "")]


def _gate(task: dict, folder: Path) -> list:
    passed = task["params"].get("Output")
    if passed is None:
        return []
    reasons = gate_reasons(task["artifacts"].get("decision"))
    failing = [r for r in reasons if " fails" in r or r.startswith("no ")] if not passed else []
    why = re.sub(r"\s*\(improvement [^)]*\)", "", (failing or reasons[-1:] or [""])[0])   # the arithmetic: in the log
    return [("passed" if passed else "rejected") + (f": {_clip(why, 100)}" if why else "")]


def _register(task: dict, folder: Path) -> list:
    version, uri = task["params"].get("version"), task["params"].get("model_uri")
    return [version is not None and f"version {_count(version)}" + (f" ({uri})" if uri else "")]


def _candidates(task: dict, folder: Path) -> list:
    done = task["params"].get("Output")
    if done is None:
        return []
    pairs = [item.rpartition("=") for item in done.split(",") if item]
    return ["registered " + ", ".join(f"{label} as version {v}" for label, _, v in pairs) if pairs else "off"]


def _deploy(task: dict, folder: Path) -> list:
    return [task["params"].get("url")]


def _smoke(task: dict, folder: Path) -> list:
    reply = task["params"].get("Output")
    return [reply is not None and f"reply {_clip(reply, 48)!r}"]


def _check_endpoint(task: dict, folder: Path) -> list:
    checked, flat = task["params"].get("Output"), _numbers(task)
    if checked is None:
        return []
    if not checked:
        return ["skipped (no tasks)"]
    pairs = [f"{key[len('endpoint/'):]} {_score(v)} vs checkpoint {_score(flat[f'checkpoint/{key[9:]}'])}"
             for key, v in sorted(flat.items()) if key.startswith("endpoint/") and f"checkpoint/{key[9:]}" in flat]
    return ["scores as the checkpoint" + (f": {'; '.join(pairs[:2])}" if pairs else "")]


def _promote(task: dict, folder: Path) -> list:
    promoted, champion = task["params"].get("promoted"), task["params"].get("champion_version")
    if promoted is None:
        return []
    if promoted:
        return [f"champion: version {_count(champion)} (promoted)"]
    return ["champion unchanged" + (f": version {_count(champion)}" if champion else " (none yet)")]


def _clean_up(task: dict, folder: Path) -> list:
    return [task["params"].get("Output") and f"pipeline {task['params']['Output']}"]


FIGURES: dict[str, Callable[[dict, Path], list]] = {
    "annotate-data": _annotate, "prepare-data": _prepare, "plan-objectives": _plan, "train-model": _train,
    "evaluate-model": _evaluate, "compare-objectives": _compare, "select-best": _select,
    "register-candidates": _candidates, "gate-model": _gate, "register-model": _register,
    "deploy-model": _deploy, "smoke-test-endpoint": _smoke, "check-endpoint": _check_endpoint,
    "promote-model": _promote, "clean-up": _clean_up,
}


def step_figure(task: str, folder: Path | None) -> str | None:
    """The key figure of a finished step from its task folder; None when there is none to show (an
    unknown step, a missing or unreadable output: never an error)."""
    figure = FIGURES.get(re.sub(r"-\d+$", "", task))
    if figure is None or folder is None:
        return None
    try:
        parts = [str(p) for p in figure(read_task(folder), Path(folder)) if p]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None
    return ", ".join(parts) or None


# ---------------------------------------------------------------------------------------------------
# the console and the per-step logs

class Console:
    """Step lines on ``stream``; on a terminal one progress line updated in place, elsewhere (CI logs)
    a plain progress line at most every ``plain_every`` seconds per step."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None, plain_every: float = 30.0,
                 now: Callable[[], float] = time.monotonic):
        self.stream, self.now, self.plain_every = stream, now, plain_every
        if tty is None:
            try:
                tty = stream.isatty()
            except (AttributeError, ValueError):
                tty = False
        self.tty = tty
        self.t0 = now()
        self._shown = False            # a progress line is on screen (terminal only)
        self._last_drawn = -1e9

    def print(self, text: str) -> None:
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def step(self, task: str, event: str, took: float | None = None, figure: str | None = None) -> None:
        self.print(step_line(self.now() - self.t0, task, event, took, figure))
        # a terminal shows progress at once; a plain log only once a step has run plain_every seconds
        self._last_drawn = -1e9 if self.tty else self.now()

    def progress(self, task: str, text: str) -> None:
        at = self.now()
        if self.tty:
            if at - self._last_drawn < 0.2:
                return
            width = shutil.get_terminal_size((100, 24)).columns - 1
            self.stream.write("\r" + step_line(at - self.t0, task, text)[:width] + "\x1b[K")
            self.stream.flush()
            self._shown = True
        else:
            if at - self._last_drawn < self.plain_every:
                return
            self.stream.write(step_line(at - self.t0, task, text) + "\n")
            self.stream.flush()
        self._last_drawn = at

    def _clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self._shown = False


class _Stream:
    """What one thread of the runner is printing: KFP runs the iterations of a ParallelFor in worker
    threads, each task's lines entirely in its own thread."""

    def __init__(self):
        self.pending = ""
        self.task: str | None = None       # the runner's name of the task, e.g. train-model
        self.label = ""                    # its name on the console and its log: train-model, train-model.2, ...
        self.file: TextIO | None = None
        self.started = 0.0
        self.done = False
        self.progress = "running"
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)


class StepLogs(io.TextIOBase):
    """A text stream that files each line of a local run under the step that printed it
    (``log_dir/<step>.log``; the runner's lines outside the steps go to ``log_dir/pipeline.log``) and
    tells ``console`` when steps start, progress and end. A task that runs more than once (one per
    ParallelFor iteration) is ``<task>.2``, ``<task>.3``, ... from its second run on. ``echo``: also
    copy every line there unchanged (``--verbose``). ``artifacts``: the runner's pipeline root, where
    a finished step's task folder (and so its key figure) is found."""

    def __init__(self, log_dir: Path, *, artifacts: Path, console: Console | None = None,
                 echo: TextIO | None = None, now: Callable[[], float] = time.monotonic):
        super().__init__()
        self.log_dir, self.artifacts = Path(log_dir), Path(artifacts)
        self.console, self.echo, self.now = console, echo, now
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._pipeline_log = (self.log_dir / "pipeline.log").open("a", encoding="utf-8")
        self._streams: dict[int, _Stream] = {}
        self._lock = threading.RLock()
        self._runs: collections.Counter[str] = collections.Counter()
        self.steps: dict[str, dict] = {}     # label → {"log", "ok", "seconds", "figure"}

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            stream = self._streams.setdefault(threading.get_ident(), _Stream())
            stream.pending += text
            *lines, stream.pending = stream.pending.split("\n")
            for line in lines:
                self._line(stream, line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            for f in [*(s.file for s in self._streams.values()), self._pipeline_log, self.echo]:
                if f is not None and not getattr(f, "closed", False):
                    f.flush()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            for stream in self._streams.values():
                if stream.pending:
                    self._line(stream, stream.pending)
                    stream.pending = ""
                self._end_task(stream)
            self._pipeline_log.close()
            super().close()

    def log_path(self, label: str) -> Path:
        return self.log_dir / f"{label}.log"

    def _line(self, stream: _Stream, raw: str) -> None:
        if self.echo is not None:
            self.echo.write(raw + "\n")
        line = ANSI.sub("", raw).rstrip("\r")
        started = STARTED.search(line)
        if started:
            self._begin_task(stream, started[1])
        (stream.file or self._pipeline_log).write(line + "\n")
        if stream.task is None:
            return
        finished = FINISHED.search(line)
        if finished and finished[1] == stream.task:
            self._finish(stream, finished[2] == "SUCCESS")
        elif RULE.match(line):
            self._end_task(stream)
        elif not stream.done:
            if line.strip() and line.strip(" ^~"):        # not blank, not a traceback's ^^^^ marker
                stream.tail.append(line.removeprefix("    ").rstrip())   # without the runner's indent
            bar = TQDM.match(line)
            if bar:
                stream.progress = progress_text(line)
            elif len(line) > 4 and not line.strip():      # a closing bar blanks its line (tqdm leave=False)
                stream.progress = "running"
            if self.console is not None:
                self.console.progress(stream.label, stream.progress)
            if bar and bar["n"] == bar["total"]:          # a finished bar is shown once, then not any more
                stream.progress = "running"

    def _begin_task(self, stream: _Stream, task: str) -> None:
        self._end_task(stream)
        self._runs[task] += 1
        n = self._runs[task]
        stream.task, stream.label = task, task if n == 1 else f"{task}.{n}"
        stream.started, stream.done, stream.progress = self.now(), False, "running"
        stream.tail.clear()
        stream.file = self.log_path(stream.label).open("a", encoding="utf-8")
        if self.console is not None:
            self.console.step(stream.label, "started")

    def _finish(self, stream: _Stream, ok: bool) -> None:
        took, log = self.now() - stream.started, self.log_path(stream.label)
        figure = step_figure(stream.task, self._task_folder(stream.task)) if ok else f"log: {log}"
        stream.done = True
        self.steps[stream.label] = {"log": str(log), "ok": ok, "seconds": took, "figure": figure}
        if self.console is not None:
            self.console.step(stream.label, "done" if ok else "FAILED", took, figure)
            if not ok:
                for line in stream.tail:
                    self.console.print(f"    | {line}")

    def _end_task(self, stream: _Stream) -> None:
        if stream.file is not None:
            stream.file.close()
        stream.task, stream.file = None, None

    def _task_folder(self, task: str) -> Path | None:
        """The newest folder of ``task`` under the pipeline root (RUN/TASK, or RUN/LOOP-ITERATION/TASK
        inside a ParallelFor): the one this step has just written."""
        records = [p for depth in ("*", "*/*", "*/*/*")
                   for p in self.artifacts.glob(f"{depth}/{task}/executor_output.json")]
        return max(records, key=lambda p: p.stat().st_mtime).parent if records else None
