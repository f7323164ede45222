"""The promotion gate: its decisions as a pure function, and `amopo promote` on the embedded sqlite store."""

from __future__ import annotations

import pytest

from amopo.errors import ConfigError
from amopo.registry import RegistryError
from amopo.registry.gate import DEFAULT_METRIC, Threshold, base_metric, decide, decide_against_base, parse_threshold
from helpers.registry import make_training_output, write_eval_metrics

METRIC = "pref_accuracy/plain"   # the default: held-out accuracy on the plain prompt


# --- thresholds -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("winrate/lc>=0.5", Threshold("winrate/lc", ">=", 0.5)),
    (" dimension/verbosity/delta <= 1e-3 ", Threshold("dimension/verbosity/delta", "<=", 0.001)),
    ("a>0", Threshold("a", ">", 0.0)),
    ("a<-2", Threshold("a", "<", -2.0)),
])
def test_parse_threshold(text, expected):
    assert parse_threshold(text) == expected


@pytest.mark.parametrize("text", ["winrate", "a=>1", "a>=x", ">=1", "a>=1>=2", "", "a>=nan"])
def test_parse_threshold_rejects_malformed(text):
    with pytest.raises(ConfigError, match="gate threshold"):
        parse_threshold(text)


# --- decisions ------------------------------------------------------------------------------------

def test_first_model_is_promoted_when_thresholds_hold():
    d = decide({METRIC: 0.6, "winrate/lc": 0.55}, None, thresholds=[parse_threshold("winrate/lc>=0.5")])
    assert d.promote
    assert any("no champion" in r for r in d.reasons)


def test_first_model_is_rejected_when_a_threshold_fails():
    d = decide({METRIC: 0.9, "winrate/lc": 0.4}, None, thresholds=[parse_threshold("winrate/lc>=0.5")])
    assert not d.promote
    assert any("winrate/lc>=0.5 fails" in r for r in d.reasons)


def test_threshold_on_a_missing_metric_rejects():
    d = decide({METRIC: 0.9}, None, thresholds=[parse_threshold("winrate/lc>=0.5")])
    assert not d.promote
    assert any("no metric 'winrate/lc'" in r for r in d.reasons)


def test_upper_bound_threshold():
    t = [parse_threshold("dimension/verbosity/delta<=0.2")]
    assert decide({METRIC: 0.7, "dimension/verbosity/delta": 0.1}, None, thresholds=t).promote
    assert not decide({METRIC: 0.7, "dimension/verbosity/delta": 0.3}, None, thresholds=t).promote


def test_candidate_must_beat_the_champion_by_the_margin():
    champion = {METRIC: 0.60}
    assert decide({METRIC: 0.66}, champion, min_improvement=0.05).promote
    rejected = decide({METRIC: 0.63}, champion, min_improvement=0.05)
    assert not rejected.promote
    assert any("does not beat" in r for r in rejected.reasons)


def test_a_tie_never_beats_the_champion():
    assert not decide({METRIC: 0.6}, {METRIC: 0.6}, min_improvement=0.0).promote
    assert decide({METRIC: 0.6001}, {METRIC: 0.6}, min_improvement=0.0).promote


def test_thresholds_still_apply_when_the_champion_is_beaten():
    d = decide({METRIC: 0.9, "winrate/lc": 0.1}, {METRIC: 0.5}, thresholds=[parse_threshold("winrate/lc>=0.5")])
    assert not d.promote


def test_lower_is_better():
    assert decide({"loss": 0.4}, {"loss": 0.5}, metric="loss", higher_is_better=False).promote
    assert not decide({"loss": 0.6}, {"loss": 0.5}, metric="loss", higher_is_better=False).promote


def test_the_default_metric_is_plain_prompt_accuracy():
    # pref_accuracy/<dimension> shows the chosen response's score in the prompt: it measures steering.
    assert DEFAULT_METRIC == METRIC
    d = decide({METRIC: 0.6, "pref_accuracy/mean_dimensions": 0.9}, {METRIC: 0.7, "pref_accuracy/mean_dimensions": 0.5})
    assert not d.promote and any(r.startswith(f"{METRIC}: 0.6 vs champion 0.7") for r in d.reasons)


def test_steering_metrics_gate_as_thresholds_and_against_the_base():
    t = [parse_threshold("steer/verbosity/accuracy>=0.6")]
    assert t[0] == Threshold("steer/verbosity/accuracy", ">=", 0.6)
    assert decide({METRIC: 0.7, "steer/verbosity/accuracy": 0.65}, None, thresholds=t).promote
    failed = decide({METRIC: 0.7, "steer/verbosity/accuracy": 0.5}, None, thresholds=t)
    assert not failed.promote and "threshold steer/verbosity/accuracy>=0.6 fails (steer/verbosity/accuracy=0.5)" \
        in failed.reasons
    assert base_metric("pref_accuracy/plain") == "pref_base_accuracy/plain"
    assert base_metric("steer/instruction_following/accuracy") == "steer_base/instruction_following/accuracy"
    metrics = {METRIC: 0.6, "pref_base_accuracy/plain": 0.55, "steer/instruction_following/accuracy": 0.4,
               "steer_base/instruction_following/accuracy": 0.25}
    assert decide_against_base(metrics).promote
    assert decide_against_base(metrics, metric="steer/instruction_following/accuracy", min_improvement=0.1).promote
    assert not decide_against_base(metrics, metric="steer/instruction_following/accuracy", min_improvement=0.2).promote


def test_missing_primary_metric_rejects():
    assert not decide({"other": 1.0}, None).promote
    d = decide({METRIC: 0.9}, {"other": 1.0})
    assert not d.promote
    assert any("champion has no" in r for r in d.reasons)


# --- `amopo promote` on the embedded sqlite store -------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model_dir):
    """A sqlite tracking URI and a function registering the tiny model with given eval metrics."""
    from amopo.registry.register import RegisterConfig, register

    root = tmp_path_factory.mktemp("gate")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    train_dir = make_training_output(root / "train", tiny_model_dir)

    def add(name: str, tag: str, **metrics) -> int:
        evals = write_eval_metrics(root / f"eval-{name}-{tag}.json", **metrics)
        return register(RegisterConfig(train_dir=str(train_dir), eval_metrics=str(evals), registered_model_name=name,
                                       mlflow_tracking_uri=uri))["version"]

    return uri, add


def _promote(uri: str, name: str, **kw) -> dict:
    from amopo.registry.promote import PromoteConfig, promote

    return promote(PromoteConfig(registered_model_name=name, mlflow_tracking_uri=uri, **kw))


def _tags(uri: str, name: str, version: int) -> dict:
    from mlflow import MlflowClient

    return MlflowClient(uri, registry_uri=uri).get_model_version(name, str(version)).tags


def _champion(uri: str, name: str) -> int | None:
    from mlflow import MlflowClient

    aliases = MlflowClient(uri, registry_uri=uri).get_registered_model(name).aliases
    return int(aliases["champion"]) if "champion" in aliases else None


@pytest.mark.slow
def test_promotion_sequence(store):
    uri, add = store
    gate = dict(gate_min_improvement=0.02, gate_thresholds=["winrate/lc>=0.5"])

    v1 = add("seq", "1", pref_accuracy__plain=0.60, winrate__lc=0.55)
    first = _promote(uri, "seq", **gate)
    assert first["promoted"] and _champion(uri, "seq") == v1
    assert _tags(uri, "seq", v1)["amopo.gate.decision"] == "promoted"

    v2 = add("seq", "2", pref_accuracy__plain=0.70, winrate__lc=0.60)
    assert _promote(uri, "seq", **gate)["promoted"]
    assert _champion(uri, "seq") == v2

    v3 = add("seq", "3", pref_accuracy__plain=0.71, winrate__lc=0.60)   # +0.01 < margin
    third = _promote(uri, "seq", **gate)
    assert not third["promoted"] and third["champion_version"] == v2
    tags = _tags(uri, "seq", v3)
    assert tags["amopo.gate.decision"] == "rejected"
    assert "does not beat" in tags["amopo.gate.reasons"]
    assert tags["amopo.gate.compared_with"] == str(v2)

    v4 = add("seq", "4", pref_accuracy__plain=0.90, winrate__lc=0.40)   # beats, fails threshold
    fourth = _promote(uri, "seq", **gate)
    assert not fourth["promoted"] and _champion(uri, "seq") == v2
    assert "winrate/lc>=0.5 fails" in _tags(uri, "seq", v4)["amopo.gate.reasons"]

    # An explicit --version: v3 against champion v2 with no margin now passes.
    assert _promote(uri, "seq", version=v3, gate_thresholds=["winrate/lc>=0.5"])["promoted"]
    assert _champion(uri, "seq") == v3
    again = _promote(uri, "seq", version=v3)
    assert not again["promoted"] and "already" in again["reasons"][0]


@pytest.mark.slow
def test_first_model_failing_thresholds_gets_no_champion(store):
    uri, add = store
    v1 = add("nochamp", "1", pref_accuracy__plain=0.9, winrate__lc=0.2)
    result = _promote(uri, "nochamp", gate_thresholds=["winrate/lc>=0.5"])
    assert not result["promoted"] and result["champion_version"] is None
    assert _champion(uri, "nochamp") is None
    assert _tags(uri, "nochamp", v1)["amopo.gate.decision"] == "rejected"


def test_promote_names_what_is_missing(store):
    uri, _ = store
    with pytest.raises(RegistryError, match="no registered model named 'ghost'"):
        _promote(uri, "ghost")


@pytest.mark.slow
def test_promote_cli(store, capsys):
    from amopo.cli import main

    uri, add = store
    add("cli", "1", pref_accuracy__plain=0.5, winrate__lc=0.9)
    assert main(["promote", "--registered-model-name", "cli", "--mlflow-tracking-uri", uri, "--gate-thresholds", "winrate/lc>=0.95"]) == 0
    assert "not promoted" in capsys.readouterr().out
    assert _champion(uri, "cli") is None
    assert main(["promote", "--registered-model-name", "cli", "--mlflow-tracking-uri", uri, "--gate-thresholds", "winrate/lc>=0.5"]) == 0
    assert _champion(uri, "cli") == 1
    assert main(["promote", "--registered-model-name", "cli", "--mlflow-tracking-uri", uri, "--gate-thresholds", "winrate>0.5>"]) == 2
    assert "gate threshold" in capsys.readouterr().err
