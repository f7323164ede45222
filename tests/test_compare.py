"""`amopo compare` on constructed training and evaluation folders: the report's arithmetic (standard
errors, the within-noise rule, the best objective, tokens/s and wall time), its files, bad input, the
CLI, head-to-head judging with the tiny local judge, and the KFP component (plain and through the
local runner, fed by a ParallelFor's collected artifacts)."""

import json
import math
from pathlib import Path

import pytest
import yaml
from kfp import dsl

from amopo.cli import main
from amopo.compare import best_objective
from amopo.compare.compare import CompareConfig, compare
from amopo.compare.entries import pair_evaluations, parse_entry
from amopo.compare.training_stats import peak_memory, training_stats
from amopo.errors import ConfigError
from components.compare import compare_objectives
from tests.helpers.compare_components import fake_evaluate, fake_train

INSTRUCTIONS = ["Name a primary colour.", "What is two plus two?", "Say hello politely."]


def make_train(root: Path, name: str, loss: str, *, speeds=(50.0, 10.0, 20.0), seconds=(3.0, 1.0, 2.0),
               beta=None, metrics: dict | None = None) -> Path:
    folder = root / name / "train"
    (folder / "model").mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"objective": loss, "steps": len(speeds), **(metrics or {})}))
    (folder / "train_config.yaml").write_text(yaml.safe_dump({"objective": loss, "beta": beta, "base_model": "base",
                                                              "max_steps": len(speeds)}))
    (folder / "history.jsonl").write_text("".join(
        json.dumps({"step": i + 1, "loss": 0.5, "tokens_per_s": v, "seconds_per_step": s}) + "\n"
        for i, (v, s) in enumerate(zip(speeds, seconds))))
    return folder


def make_eval(root: Path, name: str, metrics: dict, *, answers: dict | None = None, config: dict | None = None) -> Path:
    folder = root / name / "eval"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if config is not None:
        (folder / "eval_config.yaml").write_text(yaml.safe_dump(config))
    if answers is not None:
        (folder / "outputs").mkdir()
        (folder / "outputs" / "model.jsonl").write_text("".join(
            json.dumps({"instruction": k, "output": v, "generator": name}) + "\n" for k, v in answers.items()))
    return folder


def eval_metrics(accuracy: float, pairs: int = 40, *, winrate=0.6, steer=False) -> dict:
    out = {"pref_accuracy/plain": accuracy, "pref_accuracy/pairs": float(pairs), "pref_margin/plain": 0.2,
           "winrate/raw": winrate, "winrate/raw_se": 0.05, "winrate/lc": winrate - 0.02, "winrate/lc_se": 0.06,
           "winrate/n": 16.0, "dimension/helpfulness/model": 3.5, "dimension/helpfulness/model_se": 0.2,
           "dimension/helpfulness/baseline": 3.0, "dimension/correctness/model": 3.2,
           "dimension/correctness/model_se": 0.25, "dimension/correctness/baseline": 3.1,
           "dimension/coherence/model": 4.0, "dimension/coherence/model_se": 0.1, "dimension/coherence/baseline": 3.9}
    if steer:
        out.update({"steer/accuracy": 0.5, "steer/accuracy_se": 0.1, "steer/mean_spearman": 0.3,
                    "steer/helpfulness/spearman": 0.3, "steer/helpfulness/spearman_se": 0.1})
    return out


@pytest.fixture
def three(tmp_path) -> list[str]:
    """amopo (with steerability), simpo and dpo folders; entries for --entry."""
    runs = {"amopo": (0.75, True), "simpo": (0.70, False), "dpo": (0.55, False)}
    return [f"{name}={make_train(tmp_path, name, name)},{make_eval(tmp_path, name, eval_metrics(acc, steer=steer))}"
            for name, (acc, steer) in runs.items()]


# --- arithmetic ---------------------------------------------------------------------------------------

def test_tokens_per_s_leaves_out_the_warm_up_step_and_wall_time_sums_every_step():
    history = [{"step": 1, "tokens_per_s": 50.0, "seconds_per_step": 3.0},
               {"step": 2, "tokens_per_s": 10.0, "seconds_per_step": 1.0},
               {"step": 3, "tokens_per_s": 20.0, "seconds_per_step": 2.0}]
    stats = training_stats(history, {})
    assert stats["train/tokens_per_s"] == pytest.approx(15.0)
    assert stats["train/tokens_per_s_se"] == pytest.approx(math.sqrt(50.0) / math.sqrt(2))  # sd(10, 20)/√2
    assert stats["train/wall_s"] == pytest.approx(6.0)
    assert stats["train/warmup_steps_excluded"] == 1 and stats["train/steps"] == 3
    assert "train/peak_memory_bytes" not in stats
    one = training_stats(history[:1], {})
    assert one["train/tokens_per_s"] == 50.0 and one["train/warmup_steps_excluded"] == 0
    assert math.isnan(one["train/tokens_per_s_se"])


def test_peak_memory_is_read_where_recorded_and_absent_otherwise():
    assert peak_memory({}, [{"step": 1}]) is None
    assert peak_memory({"peak_memory_bytes": 2.0e9}, []) == 2.0e9
    assert peak_memory({}, [{"peak_memory_bytes": 1.0}, {"peak_memory_bytes": 3.0}]) == 3.0


def _comparison(**values) -> dict:
    """A comparison with ``label=(value, se)`` for metric m."""
    out = {"objectives": list(values)}
    for label, (value, se) in values.items():
        if value is not None:
            out[f"{label}/m"] = value
        if se is not None:
            out[f"{label}/m_se"] = se
    return out


def test_within_noise_is_a_lead_under_two_standard_errors_of_the_difference():
    far = best_objective(_comparison(a=(0.70, 0.03), b=(0.60, 0.03)), "m")
    assert (far.label, far.second) == ("a", "b")
    assert far.lead == pytest.approx(0.10) and far.noise == pytest.approx(2 * math.sqrt(2 * 0.03 ** 2))
    assert far.within_noise is False and "beyond noise" in far.reason
    near = best_objective(_comparison(a=(0.65, 0.03), b=(0.70, 0.03)), "m")
    assert near.label == "b" and near.within_noise is True and "within noise" in near.reason
    unknown = best_objective(_comparison(a=(0.7, None), b=(0.6, 0.03)), "m")
    assert unknown.label == "a" and unknown.within_noise is None


def test_best_objective_breaks_ties_deterministically_and_excludes_objectives_without_the_metric():
    assert best_objective(_comparison(a=(0.7, 0.05), b=(0.7, 0.03)), "m").label == "b"   # smaller se
    assert best_objective(_comparison(b=(0.7, 0.03), a=(0.7, 0.03)), "m").label == "a"   # then by label
    lower = best_objective(_comparison(a=(5.0, 1.0), b=(3.0, 1.0)), "m", higher_is_better=False)
    assert lower.label == "b" and lower.ranking == ["b", "a"]
    best = best_objective(_comparison(a=(None, None), b=(0.6, 0.1)), "m")
    assert best.label == "b" and best.second is None and "no m in the comparison" in best.excluded["a"]
    none = best_objective(_comparison(a=(None, None)), "m")
    assert none.label is None and "no objective has m" in none.reason


def test_entries_parse_labels_up_to_the_last_equals_sign():
    assert parse_entry("amopo:weighting=uniform=runs/u/t,runs/u/e") == ("amopo:weighting=uniform", Path("runs/u/t"),
                                                                       Path("runs/u/e"))
    for bad in ("amopo", "amopo=only_one_dir", "=t,e", "a=t,e,x", "a/b=t,e"):
        with pytest.raises(ConfigError, match="compare: entry"):
            parse_entry(bad)


# --- the report ---------------------------------------------------------------------------------------

def test_compare_writes_the_comparison_its_reports_and_figures(tmp_path, three):
    out = tmp_path / "cmp"
    summary = compare(CompareConfig(entries=three, output=str(out), head_to_head=False, progress=False))
    flat = json.loads((out / "comparison.json").read_text())
    assert flat["objectives"] == ["amopo", "simpo", "dpo"]
    assert flat["amopo/pref_accuracy/plain_se"] == pytest.approx(math.sqrt(0.75 * 0.25 / 40))
    assert flat["dpo/winrate/lc_se"] == 0.06 and flat["simpo/dimension/helpfulness/model_se"] == 0.2
    assert flat["amopo/train/tokens_per_s"] == pytest.approx(15.0) and flat["amopo/train/wall_s"] == 6.0
    assert flat["dpo/train/beta"] == 0.1 and flat["amopo/train/beta"] == 0.8   # the objectives' defaults
    # amopo leads simpo by 5 points; 2·√(se₁² + se₂²) ≈ 19.8 points: within noise
    assert summary["best"] == flat["best"] == "amopo"
    assert flat["leader/pref_accuracy/plain/second"] == "simpo"
    assert flat["leader/pref_accuracy/plain/within_noise"] is True
    assert flat["leader/train/wall_s/higher_is_better"] is False
    assert "steer/accuracy" in flat["dpo/absent"] and "steer/accuracy" not in flat["amopo/absent"]
    assert "train/peak_memory_bytes" in flat["amopo/absent"]
    assert any("peak memory: absent" in n for n in flat["notes"])
    assert flat["h2h/skipped/all"] == "turned off (--no-head-to-head)"

    md = (out / "comparison.md").read_text()
    assert "| metric | amopo | simpo | dpo | best | lead over 2nd | within noise |" in md
    assert ("| held-out accuracy (plain prompt) ↑ | 75.0% ± 6.8 | 70.0% ± 7.2 | 55.0% ± 7.9 | amopo | 5.0 pts "
            "| yes |") in md
    assert "steering accuracy (held-out pairs) ↑ | 50.0% ± 10.0 | — | — | amopo | — | n/a (one objective) |" in md
    assert "lead < 2·√(se₁² + se₂²)" in md
    html = (out / "comparison.html").read_text()
    assert "<table>" in html and html.count("<img") == 4     # bars + a radar per objective
    assert {p.name for p in out.glob("*.png")} == {"comparison_bars.png", "radar_0_amopo.png", "radar_1_simpo.png",
                                                    "radar_2_dpo.png"}
    assert (out / "compare_config.yaml").is_file()


def test_no_steerability_columns_when_no_evaluation_measured_it(tmp_path):
    entries = [f"{n}={make_train(tmp_path, n, n)},{make_eval(tmp_path, n, eval_metrics(0.6))}"
               for n in ("simpo", "dpo")]
    compare(CompareConfig(entries=entries, output=str(tmp_path / "cmp"), head_to_head=False, progress=False))
    flat = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert not any("steer" in k for k in flat) and not any(m.startswith("steer") for m in flat["dpo/absent"])
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert not any(line.startswith(("| steer", "| steering")) for line in md.splitlines())


def test_length_steerability_and_side_effects_get_rows_miscalibration_lower_is_better(tmp_path):
    steer = {"a": {"steer/verbosity/length_spearman": 0.9, "steer/verbosity/length_spearman_se": 0.05,
                   "steer/verbosity/miscalibration": 0.5, "steer/verbosity/miscalibration_se": 0.1,
                   "steer/side_effect/verbosity/helpfulness": -0.25, "steer/side_effect/verbosity/helpfulness_se": 0.1},
             "b": {"steer/verbosity/length_spearman": 0.1, "steer/verbosity/length_spearman_se": 0.05,
                   "steer/verbosity/miscalibration": 1.5, "steer/verbosity/miscalibration_se": 0.1,
                   "steer/side_effect/verbosity/helpfulness": 0.5, "steer/side_effect/verbosity/helpfulness_se": 0.1}}
    entries = [f"{n}={make_train(tmp_path, n, 'amopo')},{make_eval(tmp_path, n, {**eval_metrics(0.6), **m})}"
               for n, m in steer.items()]
    compare(CompareConfig(entries=entries, output=str(tmp_path / "cmp"), head_to_head=False, progress=False))
    flat = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert flat["a/steer/verbosity/miscalibration_se"] == 0.1
    assert flat["leader/steer/verbosity/miscalibration/higher_is_better"] is False
    assert flat["leader/steer/verbosity/miscalibration/best"] == "a"          # 0.5 levels off beats 1.5
    assert flat["leader/steer/verbosity/length_spearman/best"] == "a"
    assert flat["leader/steer/side_effect/verbosity/helpfulness/best"] == "b"  # a's helpfulness fell
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    rows = {line.split(" | ")[0]: line for line in md.splitlines() if line.startswith("| steer")
            or line.startswith("| side effect")}
    assert set(rows) == {"| steer verbosity: length spearman ↑", "| steer verbosity: miscalibration ↓",
                         "| side effect of steering verbosity on helpfulness (rating, high − low) ↑"}


def test_unequal_settings_are_noted(tmp_path):
    entries = [f"dpo={make_train(tmp_path, 'dpo', 'dpo', speeds=(1.0, 2.0))},"
               f"{make_eval(tmp_path, 'dpo', eval_metrics(0.6))}",
               f"simpo={make_train(tmp_path, 'simpo', 'simpo')},{make_eval(tmp_path, 'simpo', eval_metrics(0.6))}"]
    compare(CompareConfig(entries=entries, output=str(tmp_path / "cmp"), head_to_head=False, progress=False))
    notes = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["notes"]
    assert "not on equal terms: training setting max_steps differs (dpo=2, simpo=3)" in notes


def test_evaluations_pair_with_the_training_whose_model_they_evaluated(tmp_path):
    trains = [make_train(tmp_path, n, n) for n in ("a", "b")]
    evals = [make_eval(tmp_path, n, {}) for n in ("a", "b")]
    for t, e in zip(trains, reversed(evals)):
        (e / "report.json").write_text(json.dumps({"model": str(t / "model")}))
    assert pair_evaluations(trains, evals) == list(reversed(evals))
    (evals[0] / "report.json").unlink()
    assert pair_evaluations(trains, evals) == evals   # not one to one: the given order


# --- bad input and the CLI ----------------------------------------------------------------------------

@pytest.mark.parametrize("case, message", [
    ("malformed", "compare: entry 'amopo=just_one' is malformed; expected LABEL=TRAIN_DIR,EVAL_DIR"),
    ("no_train", "compare: dpo: training folder {root}/nowhere does not exist"),
    ("no_eval_metrics", "compare: {root}/dpo/eval/metrics.json: missing; the evaluation folder of dpo has no "
                        "metrics.json"),
    ("duplicate", "compare: label 'amopo' is given twice"),
    ("none", "compare: needs at least one entry"),
    ("swapped", "compare: dpo: the label names objective 'dpo' but its training folder {root}/amopo/train trained "
                "'amopo'"),
    ("metric", "compare: --metric 'pref_acuracy/plain' is in no objective's comparison"),
    ("output", "compare: {root}/taken: exists and is not an earlier comparison"),
])
def test_bad_input_gets_one_line_naming_what_and_where(tmp_path, three, capsys, case, message):
    amopo, simpo, dpo = three
    args = {"malformed": ["amopo=just_one", simpo], "no_train": [amopo, f"dpo={tmp_path}/nowhere,{tmp_path}"],
            "no_eval_metrics": [amopo, dpo], "duplicate": [amopo, amopo], "none": [],
            "swapped": [amopo, f"dpo={tmp_path}/amopo/train,{tmp_path}/dpo/eval"]}.get(case, [amopo, dpo])
    if case == "no_eval_metrics":
        (tmp_path / "dpo" / "eval" / "metrics.json").unlink()
    extra = ["--metric", "pref_acuracy/plain"] if case == "metric" else []
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "precious.txt").write_text("keep me")
    output = tmp_path / ("taken" if case == "output" else "cmp")
    argv = ["compare", *sum((["--entry", e] for e in args), []), "--output", str(output), "--no-head-to-head", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message.format(root=tmp_path) in err
    assert not (tmp_path / "cmp").exists() and (tmp_path / "taken" / "precious.txt").read_text() == "keep me"


def test_cli_compares_end_to_end_and_replaces_an_earlier_comparison(tmp_path, three, capsys):
    fast = f"dpo={make_train(tmp_path / 'fast', 'dpo', 'dpo', seconds=(1.0, 1.0, 1.0))},{tmp_path}/dpo/eval"
    out = tmp_path / "cmp"
    argv = ["compare", "--entry", three[0], "--entry", three[1], fast, "--output", str(out), "--no-head-to-head",
            "--metric", "train/wall_s", "--no-progress"]
    assert main(argv) == 0
    assert "compare: Best objective on train/wall_s: dpo" in capsys.readouterr().out
    flat = json.loads((out / "comparison.json").read_text())
    assert flat["objectives"] == ["amopo", "simpo", "dpo"] and flat["metric"] == "train/wall_s"
    assert flat["best"] == "dpo" and flat["dpo/train/wall_s"] == 3.0     # lower is better for wall time
    assert best_objective(out, "train/wall_s", higher_is_better=False).label == "dpo"
    assert best_objective(out).label == "amopo"                          # held-out accuracy, read from the folder
    assert main(argv) == 0 and (out / "comparison.md").is_file()


# --- head-to-head with the tiny local judge -----------------------------------------------------------

def test_head_to_head_judges_every_pair_in_both_orders_with_the_evaluations_judge(tmp_path, tiny_model_dir):
    judge = {"judge": str(tiny_model_dir), "judge_top_k": 10_000, "judge_prompts": "v1"}
    answers = {"amopo": {t: f"A careful answer to: {t}" for t in INSTRUCTIONS},
               "dpo": {**{t: "ok" for t in INSTRUCTIONS}, "An instruction amopo never saw.": "x"}}
    entries = [f"{n}={make_train(tmp_path, n, n)},{make_eval(tmp_path, n, eval_metrics(0.6), answers=a, config=judge)}"
               for n, a in answers.items()]
    entries.append(f"simpo={make_train(tmp_path, 'simpo', 'simpo')},"
                   f"{make_eval(tmp_path, 'simpo', eval_metrics(0.6), config=judge)}")
    out = tmp_path / "cmp"
    compare(CompareConfig(entries=entries, output=str(out), progress=False))
    flat = json.loads((out / "comparison.json").read_text())
    assert flat["h2h/judge"] == str(tiny_model_dir)
    assert flat["h2h/amopo/dpo/n"] == 3 and flat["h2h/amopo/dpo/unparseable"] == 0
    rate, se = flat["h2h/amopo/dpo/winrate"], flat["h2h/amopo/dpo/winrate_se"]
    assert 0.0 <= rate <= 1.0 and flat["h2h/amopo/dpo/within_noise"] is (abs(rate - 0.5) < 2 * se)
    assert "no outputs/model.jsonl" in flat["h2h/skipped/simpo"]
    rows = [json.loads(line) for line in (out / "head_to_head.jsonl").read_text().splitlines()]
    assert [r["instruction"] for r in rows] == INSTRUCTIONS
    assert all(r["verdict_a_first"] is not None and r["verdict_b_first"] is not None for r in rows)
    assert "Head-to-head" in (out / "comparison.md").read_text()


def test_head_to_head_is_skipped_when_the_evaluations_used_different_judges(tmp_path):
    entries = [f"{n}={make_train(tmp_path, n, n)},"
               f"{make_eval(tmp_path, n, eval_metrics(0.6), answers={'q': n}, config={'judge': f'judge-{n}'})}"
               for n in ("simpo", "dpo")]
    compare(CompareConfig(entries=entries, output=str(tmp_path / "cmp"), progress=False))
    flat = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert "different judges" in flat["h2h/skipped/all"] and not any(k.startswith("h2h/simpo") for k in flat)


# --- the component ------------------------------------------------------------------------------------

def _artifact(cls, path: Path, metadata: dict | None = None):
    return cls(name=path.name, uri=str(path), metadata=metadata or {})


def test_component_pairs_collected_artifacts_and_returns_the_best_label(tmp_path):
    trains = [make_train(tmp_path, n, n) for n in ("simpo", "dpo")]
    evals = [make_eval(tmp_path, n, eval_metrics(acc)) for n, acc in (("simpo", 0.6), ("dpo", 0.7))]
    for t, e in zip(trains, evals):
        (e / "report.json").write_text(json.dumps({"model": str(t / "model")}))
    outs = {name: _artifact(cls, tmp_path / name) for name, cls in
            (("comparison", dsl.Artifact), ("metrics", dsl.Metrics), ("report", dsl.HTML))}
    best = compare_objectives.python_func(
        trainings=[_artifact(dsl.Model, t, {"objective": t.parent.name}) for t in trains],
        evaluations=[_artifact(dsl.Artifact, e) for e in reversed(evals)],   # matched by the model evaluated
        labels=[{"label": "simpo", "objective": "simpo"}, {"objective": "dpo"}], metric="pref_accuracy/plain",
        judge="", judge_model_name="", head_to_head=False, head_to_head_instructions=0.0,
        compare_options={"progress": False}, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        mlflow_experiment="compare", **outs)
    assert best == "dpo" and outs["comparison"].metadata["best"] == "dpo"
    assert outs["metrics"].metadata["dpo/pref_accuracy/plain"] == 0.7
    assert "<table>" in (tmp_path / "report").read_text()


@dsl.pipeline(name="compare-collected")
def _compare_pipeline(objectives: list, mlflow_uri: str) -> str:
    """Train and evaluate stand-ins in a ParallelFor, compared on their collected artifacts."""
    with dsl.ParallelFor(objectives, parallelism=1) as item:
        trained = fake_train(objective=item.objective)
        evaluated = fake_evaluate(model=trained.outputs["model"], accuracy=item.accuracy)
    return compare_objectives(trainings=dsl.Collected(trained.outputs["model"]),
                              evaluations=dsl.Collected(evaluated.outputs["results"]), labels=objectives,
                              metric="pref_accuracy/plain", judge="", judge_model_name="", head_to_head=False,
                              head_to_head_instructions=0, compare_options={"progress": False},
                              mlflow_tracking_uri=mlflow_uri, mlflow_experiment="compare").outputs["Output"]


@pytest.mark.slow
def test_component_runs_in_the_local_runner_on_a_parallel_for_s_collected_artifacts(tmp_path):
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)
    objectives = [{"label": "amopo", "objective": "amopo", "accuracy": 0.6},
                  {"label": "amopo:weighting=uniform", "objective": "amopo", "accuracy": 0.8},
                  {"label": "dpo", "objective": "dpo", "accuracy": 0.7}]
    assert _compare_pipeline(objectives=objectives, mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").output \
        == "amopo:weighting=uniform"
    (comparison,) = tmp_path.glob("root/*/compare-objectives/comparison/comparison.json")
    flat = json.loads(comparison.read_text())
    assert flat["objectives"] == ["amopo", "amopo:weighting=uniform", "dpo"]
    assert flat["dpo/pref_accuracy/plain"] == 0.7 and flat["amopo/train/tokens_per_s"] == 200.0


# --- planning, selection and the MLflow parent run ---------------------------------------------------

def test_plan_gives_each_entry_its_objective_defaults_and_options():
    from amopo.compare.plan import plan_objectives

    plan = plan_objectives("amopo,simpo:learning_rate=5e-5,dpo,amopo:weighting=uniform:beta=1.5", objective="amopo",
                           learning_rate=1e-4, beta=-1.0, train_options={"lora": False})
    assert [p["label"] for p in plan] == ["amopo", "simpo:learning_rate=5e-5", "dpo", "amopo:weighting=uniform:beta=1.5"]
    assert [p["objective"] for p in plan] == ["amopo", "simpo", "dpo", "amopo"]
    assert [p["learning_rate"] for p in plan] == [1e-4, 5e-5, 1e-4, 1e-4]
    assert [p["beta"] for p in plan] == [-1.0, -1.0, -1.0, 1.5]
    assert plan[3]["train_options"] == {"lora": False, "weighting": "uniform"}
    assert plan_objectives("", objective="dpo", learning_rate=1e-4, beta=-1.0) == [
        {"label": "dpo", "objective": "dpo", "learning_rate": 1e-4, "beta": -1.0, "train_options": {}}]


@pytest.mark.parametrize("spec, words", [
    ("amopo,ppo", "'ppo' is not one of amopo, simpo, dpo, modpo"),
    ("amopo,amopo", "amopo listed twice"),
    ("amopo:weighting", "'weighting' is not KEY=VALUE"),
    ("amopo:colour=red", "unknown option 'colour'"),
    ("simpo:max_steps=9", "'max_steps' is the same for every entry"),
    ("simpo:learning_rate=fast", "learning_rate must be a number, got 'fast'"),
])
def test_plan_refuses_bad_entries_naming_them(spec, words):
    from amopo.compare.plan import plan_objectives

    with pytest.raises(ConfigError, match=words):
        plan_objectives(spec, objective="amopo", learning_rate=1e-4, beta=-1.0)


def test_select_takes_the_best_entrys_folders(tmp_path):
    from amopo.compare.select import select_best

    trains = [make_train(tmp_path, n, n) for n in ("simpo", "dpo")]
    evals = [make_eval(tmp_path, n, eval_metrics(0.5)) for n in ("simpo", "dpo")]
    for t, e in zip(trains, evals):
        (e / "report.json").write_text(json.dumps({"model": str(t / "model")}))
    assert select_best(["simpo", "dpo"], trains, list(reversed(evals)), "dpo") == (trains[1], evals[1])
    with pytest.raises(ConfigError, match="found none with the metric"):
        select_best(["simpo", "dpo"], trains, evals, "")
    with pytest.raises(ConfigError, match="'amopo' is not one of simpo, dpo"):
        select_best(["simpo", "dpo"], trains, evals, "amopo")


def test_the_comparison_is_a_parent_run_with_the_trainings_as_children(tmp_path):
    import mlflow

    from amopo.compare.tracking import log_comparison

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("runs", artifact_location=(tmp_path / "artifacts").as_uri())
    children = [client.create_run(experiment).info.run_id for _ in range(2)]
    trains = []
    for name, child in zip(("amopo", "amopo:weighting=uniform"), children):
        folder = tmp_path / name.replace(":", "_") / "train"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"mlflow_run_id": child}))
        trains.append(folder)
    report = tmp_path / "comparison"
    report.mkdir()
    (report / "comparison.json").write_text(json.dumps({"best": "amopo", "amopo:weighting=uniform/x": 0.5}))
    (report / "comparison.md").write_text("| table |")
    parent = log_comparison(report, trains, ["amopo", "amopo:weighting=uniform"], tracking_uri=uri,
                            experiment="runs")
    for child in children:
        assert client.get_run(child).data.tags["mlflow.parentRunId"] == parent
    run = client.get_run(parent)
    assert run.data.tags["amopo.best"] == "amopo"
    assert run.data.metrics["amopo:weighting_uniform/x"] == 0.5
    assert {a.path for a in client.list_artifacts(parent, "comparison")} == {"comparison/comparison.json",
                                                                             "comparison/comparison.md"}
