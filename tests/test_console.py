"""The console of a local pipeline run (pipelines/console.py): its line formats, the key figure of
each step read from constructed task folders, the routing of a run's output into one log per step,
and that routing on KFP's real local runner with two tiny components. The whole DAG's console is
checked by tests/test_pipeline.py on its local run."""

import io
import json
import re
import threading
from pathlib import Path

from kfp import dsl, local

from pipelines.console import Console, StepLogs, clock, duration, progress_text, step_figure, step_line
from pipelines.local_run import captured, new_log_dir

KFP_LINE = "12:00:00.000 - INFO - "


def _task_and_event(line: str) -> tuple[str, str]:
    m = re.match(r"\[[ \d:]+\] (\S+) +(\S+)", line)
    return (m[1], m[2]) if m else ("", "")


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# --- line formats -------------------------------------------------------------------------------

def test_clock_and_duration_formats():
    assert clock(0) == " 0:00" and clock(75.9) == " 1:15" and clock(3725) == "1:02:05"
    assert duration(4.24) == "4.2s" and duration(187) == "3m07s" and duration(3720) == "1h02m"


def test_step_line_shape():
    assert step_line(0, "prepare-data", "started") == "[ 0:00] prepare-data         started"
    line = step_line(77, "train-model", "done", 72.4, "24 steps, held-out plain accuracy 0.562 → 0.594")
    assert line == "[ 1:17] train-model          done     1m12s  24 steps, held-out plain accuracy 0.562 → 0.594"
    assert step_line(3, "gate-model", "done", 0.2) == "[ 0:03] gate-model           done      0.2s"


def test_progress_text_reads_tqdm_lines_only():
    assert progress_text("    train amopo:  50%|█████     | 12/24 [00:03<00:03,  3.20step/s, loss=0.5]") \
        == "train amopo 12/24, 00:03 left"
    assert progress_text("generating (model):   0%|          | 0/16 [00:00<?, ?response/s]") \
        == "generating (model) 0/16"
    assert progress_text(" 40%|####      | 2/5 [00:01<00:02]") == "2/5, 00:02 left"
    assert progress_text("accuracy: 50% of pairs") is None and progress_text("") is None


# --- key figures from task folders --------------------------------------------------------------

def _task(folder: Path, params: dict | None = None, artifacts: dict | None = None) -> Path:
    """A task folder as KFP's local runner leaves it: executor_output.json; artifacts name →
    (metadata, {file: text}) get their own folders."""
    folder.mkdir(parents=True)
    out = {"parameterValues": params or {}, "artifacts": {}}
    for name, (metadata, files) in (artifacts or {}).items():
        uri = folder / name
        if files is None:
            uri.mkdir()
        elif isinstance(files, str):
            uri.write_text(files)
        else:
            uri.mkdir()
            for fname, text in files.items():
                (uri / fname).write_text(text)
        out["artifacts"][name] = {"artifacts": [{"name": name, "uri": str(uri), "metadata": metadata}]}
    (folder / "executor_output.json").write_text(json.dumps(out))
    return folder


def test_figures_of_prepare_train_and_evaluate(tmp_path):
    prep = _task(tmp_path / "prepare-data", {"Output": 8},
                 {"dataset": ({"train_pairs": 8.0, "eval_pairs": 4.0, "dimensions": ["a", "b", "c"]}, None)})
    assert step_figure("prepare-data", prep) == "8 train pairs, 4 held-out, 3 dimensions"
    loop = tmp_path / "for-loop-2-iteration-0"
    train = _task(loop / "train-model", {"Output": "run-id"},
                  {"model": ({"objective": "amopo", "steps": 24.0}, None),
                   "metrics": ({"heldout_base/accuracy/plain": 0.5625, "heldout_final/accuracy/plain": 0.59375,
                                "heldout_final/accuracy/mean_dimensions": 0.6}, None)})
    assert step_figure("train-model", train) == "amopo, 24 steps, held-out plain accuracy 0.562 → 0.594"
    flat = {"winrate/raw": 0.5625, "winrate/lc": 0.55, "pref_accuracy/plain": 0.625, "pref_base_accuracy/plain": 0.5,
            "steer/accuracy": 0.7, "steer_base/accuracy": 0.4}
    ev = _task(loop / "evaluate-model", {"Output": 0.6}, {"results": ({}, {"metrics.json": json.dumps(flat)})})
    assert step_figure("evaluate-model", ev) == ("amopo, win rate 0.562 (LC 0.550), plain accuracy 0.625 (base 0.500), "
                                                 "steer accuracy 0.700 (base 0.400)")


def test_figures_of_the_gate_and_after(tmp_path):
    passed = _task(tmp_path / "a" / "gate-model", {"Output": True}, {"decision": ({}, (
        "**gate: passed**\n\n- threshold pref_accuracy/pairs>=4 holds (pref_accuracy/pairs=32)\n"
        "- pref_accuracy/plain: 0.59 vs base model 0.56 (improvement +0.03, required ≥ 0 and > 0) beats the base model\n"))})
    assert step_figure("gate-model", passed) == "passed: pref_accuracy/plain: 0.59 vs base model 0.56 beats the base model"
    rejected = _task(tmp_path / "b" / "gate-model", {"Output": False}, {"decision": ({}, (
        "**gate: rejected**\n\n- threshold pref_accuracy/mean_dimensions>1.5 fails (pref_accuracy/mean_dimensions=1)\n"
        "- no comparison with the base model yet; pref_accuracy/plain=1\n"))})
    assert step_figure("gate-model", rejected) == \
        "rejected: threshold pref_accuracy/mean_dimensions>1.5 fails (pref_accuracy/mean_dimensions=1)"
    reg = _task(tmp_path / "register-model", {"version": 3, "model_uri": "models:/amopo/3", "storage_uri": "file:///x"})
    assert step_figure("register-model", reg) == "version 3 (models:/amopo/3)"
    dep = _task(tmp_path / "deploy-model", {"url": "http://127.0.0.1:5000", "model_name": "amopo"})
    assert step_figure("deploy-model", dep) == "http://127.0.0.1:5000"
    smoke = _task(tmp_path / "smoke-test-endpoint", {"Output": "A preference dataset records which of two answers "
                                                               "people prefer, for training."})
    assert step_figure("smoke-test-endpoint", smoke) == "reply 'A preference dataset records which of two answe…'"
    check = _task(tmp_path / "check-endpoint", {"Output": True},
                  {"result": ({"endpoint/amopo_facts_mc/acc": 0.45, "checkpoint/amopo_facts_mc/acc": 0.5,
                               "same_answers/amopo_facts_mc": 0.95}, None)})
    assert step_figure("check-endpoint", check) == \
        "scores as the checkpoint: amopo_facts_mc/acc 0.450 vs checkpoint 0.500"
    assert step_figure("check-endpoint", _task(tmp_path / "d" / "check-endpoint", {"Output": False})) \
        == "skipped (no tasks)"
    promo = _task(tmp_path / "promote-model", {"promoted": True, "champion_version": 3})
    assert step_figure("promote-model", promo) == "champion: version 3 (promoted)"
    kept = _task(tmp_path / "c" / "promote-model", {"promoted": False, "champion_version": 2})
    assert step_figure("promote-model", kept) == "champion unchanged: version 2"
    assert step_figure("clean-up", _task(tmp_path / "clean-up", {"Output": "SUCCEEDED"})) == "pipeline SUCCEEDED"


def test_figures_of_the_comparison(tmp_path):
    plan = _task(tmp_path / "plan-objectives", {"Output": [{"label": "amopo"}, {"label": "simpo"}]})
    assert step_figure("plan-objectives", plan) == "objectives: amopo, simpo"
    comp = _task(tmp_path / "compare-objectives", {"Output": "simpo"},
                 {"comparison": ({"best": "simpo", "metric": "pref_accuracy/plain"}, None),
                  "metrics": ({"simpo/pref_accuracy/plain": 0.75, "amopo/pref_accuracy/plain": 0.5}, None)})
    assert step_figure("compare-objectives", comp) == "best: simpo on pref_accuracy/plain (0.750)"
    sel = _task(tmp_path / "select-best", {}, {"model": ({"comparison_best": "simpo", "compared": ["amopo", "simpo"]},
                                                         None)})
    assert step_figure("select-best", sel) == "simpo (of amopo, simpo)"


def test_a_missing_figure_is_omitted_never_an_error(tmp_path):
    assert step_figure("train-model", None) is None
    assert step_figure("train-model", tmp_path / "nowhere") is None            # no executor_output.json
    assert step_figure("some-new-step", _task(tmp_path / "some-new-step", {"Output": 1})) is None
    broken = tmp_path / "broken" / "gate-model"
    broken.mkdir(parents=True)
    (broken / "executor_output.json").write_text("{not json")
    assert step_figure("gate-model", broken) is None
    # a training without held-out measurements still shows what it has
    bare = _task(tmp_path / "bare" / "train-model", {}, {"model": ({"steps": 2}, None)})
    assert step_figure("train-model", bare) == "2 steps"
    assert step_figure("evaluate-model", _task(tmp_path / "bare" / "evaluate-model", {}, {"results": ({}, {})})) is None


# --- routing a run's output into step logs ------------------------------------------------------

def _kfp_task(out, task: str, body: list[str], status: str = "SUCCESS") -> None:
    """What the runner prints for one task (its format in kfp 2.17, colours included)."""
    out.write(f"{KFP_LINE}Executing task \x1b[96m'{task}'\x1b[0m\n{KFP_LINE}Streamed logs:\n\n")
    for line in body:
        out.write("    ")
        out.write(line + "\n")
    out.write("    \n\n")
    out.write(f"{KFP_LINE}Task \x1b[96m'{task}'\x1b[0m finished with status \x1b[92m{status}\x1b[0m\n")
    out.write(f"{KFP_LINE}Task \x1b[96m'{task}'\x1b[0m outputs:\n    Output: 8\n" + "-" * 80 + "\n")


def test_each_step_gets_its_log_and_two_console_lines(tmp_path):
    now, screen = FakeClock(), io.StringIO()
    root = tmp_path / "artifacts"
    _task(root / "amopo-run" / "prepare-data", {"Output": 8}, {"dataset": ({"eval_pairs": 4}, None)})
    logs = StepLogs(tmp_path / "logs", artifacts=root, console=Console(screen, tty=False, now=now), now=now)
    logs.write(f"{KFP_LINE}Running pipeline: \x1b[95m'amopo'\x1b[0m\n" + "-" * 80 + "\n")
    now.t = 1.0
    _kfp_task(logs, "prepare-data", ['[KFP Executor] Got executor_input:', '{"inputs": {}}',
                                     "FutureWarning: `foo` is deprecated", "prepared 8 train / 4 eval pairs"])
    now.t = 6.5
    logs.write(f"{KFP_LINE}Pipeline 'amopo' finished with status SUCCESS\n")
    logs.close()
    assert screen.getvalue().splitlines() == [
        "[ 0:01] prepare-data         started",
        "[ 0:01] prepare-data         done      0.0s  8 train pairs, 4 held-out"]
    step_log = (tmp_path / "logs" / "prepare-data.log").read_text()
    assert "Got executor_input" in step_log and "FutureWarning" in step_log and "outputs:" in step_log
    assert "\x1b[" not in step_log                                              # colours stay on screens
    pipeline_log = (tmp_path / "logs" / "pipeline.log").read_text()
    assert "Running pipeline: 'amopo'" in pipeline_log and "finished with status SUCCESS" in pipeline_log
    assert "Got executor_input" not in pipeline_log
    assert logs.steps["prepare-data"]["ok"] and logs.steps["prepare-data"]["log"].endswith("prepare-data.log")


def test_progress_updates_in_place_on_a_terminal():
    now, screen = FakeClock(), io.StringIO()
    console = Console(screen, tty=True, now=now)
    console.step("train-model", "started")
    for step in range(1, 4):
        now.t = step * 1.0
        console.progress("train-model", f"train amopo {step}/3")
    console.step("train-model", "done", 3.0, "3 steps")
    text = screen.getvalue()
    assert text.count("\n") == 2                                                # two real lines, the rest in place
    assert "\r[ 0:02] train-model          train amopo 2/3\x1b[K" in text
    assert text.endswith("\r\x1b[K[ 0:03] train-model          done      3.0s  3 steps\n")


def test_progress_on_a_plain_log_is_an_occasional_line(tmp_path):
    now, screen = FakeClock(), io.StringIO()
    logs = StepLogs(tmp_path / "logs", artifacts=tmp_path, console=Console(screen, tty=False, plain_every=30, now=now),
                    now=now)
    body = [f"train amopo: {s * 10:3d}%|##        | {s}/10 [00:{s:02d}<00:{10 - s:02d},  1.0step/s]" for s in range(1, 11)]

    class Ticking(list):     # each printed line takes 10 s
        def __iter__(self):
            for line in list.__iter__(self):
                now.t += 10
                yield line

    _kfp_task(logs, "train-model", Ticking(body))
    logs.close()
    lines = screen.getvalue().splitlines()
    assert "\r" not in screen.getvalue()
    assert lines[0].endswith("train-model          started") and lines[-1].startswith("[ 1:40] train-model          done")
    progress = lines[1:-1]
    assert progress == ["[ 0:30] train-model          train amopo 3/10, 00:07 left",
                        "[ 1:00] train-model          train amopo 6/10, 00:04 left",
                        "[ 1:30] train-model          train amopo 9/10, 00:01 left"]
    assert (tmp_path / "logs" / "train-model.log").read_text().count("train amopo:") == 10


def test_a_failed_step_shows_its_last_lines_and_its_log(tmp_path):
    screen = io.StringIO()
    logs = StepLogs(tmp_path / "logs", artifacts=tmp_path, console=Console(screen, tty=False))
    _kfp_task(logs, "train-model", ["Traceback (most recent call last):", '  File "x.py", line 1, in <module>',
                                    "amopo.errors.ConfigError: lr must be > 0"], status="FAILURE")
    logs.close()
    lines = screen.getvalue().splitlines()
    assert "train-model          FAILED" in lines[1] and f"log: {tmp_path / 'logs' / 'train-model.log'}" in lines[1]
    assert lines[-1] == "    | amopo.errors.ConfigError: lr must be > 0"
    assert logs.steps["train-model"]["ok"] is False


def test_a_task_run_twice_gets_a_numbered_log_and_verbose_echoes_everything(tmp_path):
    screen, echo = io.StringIO(), io.StringIO()
    logs = StepLogs(tmp_path / "logs", artifacts=tmp_path, console=Console(screen, tty=False), echo=echo)
    _kfp_task(logs, "train-model", ["objective one"])
    _kfp_task(logs, "train-model", ["objective two"])
    logs.close()
    assert "objective one" in (tmp_path / "logs" / "train-model.log").read_text()
    assert "objective two" in (tmp_path / "logs" / "train-model.2.log").read_text()
    assert [_task_and_event(line)[0] for line in screen.getvalue().splitlines()] == \
        ["train-model"] * 2 + ["train-model.2"] * 2
    assert "\x1b[96m'train-model'\x1b[0m" in echo.getvalue() and "    objective two" in echo.getvalue()


def test_tasks_printing_from_two_threads_at_once_keep_their_own_logs(tmp_path):
    logs = StepLogs(tmp_path / "logs", artifacts=tmp_path)
    barrier = threading.Barrier(2)

    def task(name: str) -> None:
        barrier.wait()
        _kfp_task(logs, name, [f"line {i} of {name}" for i in range(200)])

    threads = [threading.Thread(target=task, args=(n,)) for n in ("train-model", "evaluate-model")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logs.close()
    for name, other in (("train-model", "evaluate-model"), ("evaluate-model", "train-model")):
        text = (tmp_path / "logs" / f"{name}.log").read_text()
        assert text.count(f"of {name}") == 200 and f"of {other}" not in text


def test_new_log_dirs_never_collide_and_latest_points_at_the_newest(tmp_path):
    first, second = new_log_dir(tmp_path), new_log_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    assert (tmp_path / "latest").resolve() == second.resolve()


# --- on KFP's real local runner ----------------------------------------------------------------

@dsl.component(base_image="python:3.11", install_kfp_package=False)
def echo_step(n: int, fail: bool) -> int:
    import sys
    import warnings

    print(f"step {n} says hello")
    warnings.warn("a library's deprecation chatter", FutureWarning)
    sys.stderr.write("work:  50%|#####     | 1/2 [00:01<00:01,  1.00it/s]\n")
    if fail:
        raise ValueError(f"step {n} cannot go on")
    return n + 1


@dsl.pipeline(name="console-check")
def two_steps(fail: bool = False) -> int:
    first = echo_step(n=1, fail=False)
    return echo_step(n=first.output, fail=fail).output


def _run_tiny(tmp_path: Path, *, fail: bool) -> tuple[str, StepLogs, Exception | None]:
    screen = io.StringIO()
    logs = StepLogs(tmp_path / "logs", artifacts=tmp_path / "root", console=Console(screen, tty=False))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    error = None
    try:
        with captured(logs, verbose=False):
            two_steps(fail=fail)
    except RuntimeError as exc:
        error = exc
    finally:
        logs.close()
    return screen.getvalue(), logs, error


def test_the_real_local_runner_prints_two_lines_per_step_and_logs_the_rest(tmp_path, capfd):
    screen, logs, error = _run_tiny(tmp_path, fail=False)
    assert error is None
    lines = screen.splitlines()
    assert [_task_and_event(line) for line in lines] == [("echo-step", "started"), ("echo-step", "done"),
                                                         ("echo-step-2", "started"), ("echo-step-2", "done")]
    text = (tmp_path / "logs" / "echo-step-2.log").read_text()
    assert "step 2 says hello" in text and "deprecation chatter" in text and "Got executor_input" in text
    assert "step 1 says hello" in (tmp_path / "logs" / "echo-step.log").read_text()
    leaked = capfd.readouterr()
    assert "hello" not in leaked.out + leaked.err and "executor_input" not in leaked.out + leaked.err
    assert set(logs.steps) == {"echo-step", "echo-step-2"}


def test_the_real_local_runner_failing_step_shows_its_error(tmp_path):
    screen, logs, error = _run_tiny(tmp_path, fail=True)
    assert error is not None and "finished with status" in str(error)
    failed = [line for line in screen.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "echo-step-2" in failed[0] and "echo-step-2.log" in failed[0]
    assert "    | ValueError: step 2 cannot go on" in screen.splitlines()
    assert "ValueError: step 2 cannot go on" in (tmp_path / "logs" / "echo-step-2.log").read_text()
    assert logs.steps["echo-step-2"]["ok"] is False


def test_the_wall_time_line_gives_each_steps_share_largest_first():
    from pipelines.local_run import time_shares

    line = time_shares(600.0, {"train-model": 300.0, "evaluate-model": 150.0, "gate-model": 3.0, "plan": 6.0})
    assert line == "10m00s: train-model 50%, evaluate-model 25%, 2 more 2%"


def test_amopo_help_lists_every_subcommand_pipeline_included():
    from amopo.cli import STEPS, build_parser

    text = build_parser().format_help()
    assert all(name in text for name in [*STEPS, "pipeline"])
