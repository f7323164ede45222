"""`amopo register` and models:/ resolution, on the embedded sqlite store and on a real `mlflow server`."""

from __future__ import annotations

import json

import pytest

from amopo.registry import RegistryError
from helpers.processes import free_port, start_mlflow_server
from helpers.registry import make_training_output, write_eval_metrics

EVAL = dict(pref_accuracy__plain=0.7, pref_accuracy__mean_dimensions=0.7, winrate__lc=0.55,
            dimension__helpfulness__delta=0.1)


def _register(train_dir, uri, name, evals=None, **kw) -> dict:
    from amopo.registry.register import RegisterConfig, register

    return register(RegisterConfig(train_dir=str(train_dir), eval_metrics=str(evals) if evals else None,
                                   registered_model_name=name, mlflow_tracking_uri=uri, **kw))


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(uri, registry_uri=uri)


def _local(uri: str):
    from pathlib import Path
    from urllib.parse import urlparse

    return Path(urlparse(uri).path)


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory, tiny_model_dir):
    """A sqlite store holding one registration of the tiny model; returns (uri, train_dir, evals, summary)."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    train_dir = make_training_output(root / "train", tiny_model_dir)
    evals = write_eval_metrics(root / "eval" / "metrics.json", **EVAL)
    return uri, train_dir, evals, _register(train_dir, uri, "tiny", evals)


def test_register_creates_a_challenger_with_lineage_and_metric_tags(sqlite_store):
    uri, _, _, summary = sqlite_store
    assert summary["version"] == 1 and not summary["reused"]
    mv = _client(uri).get_model_version_by_alias("tiny", "challenger")
    assert str(mv.version) == "1"
    tags = mv.tags
    assert tags["amopo.training_run_id"] == "train-run-1"
    assert tags["amopo.base_model"] == "embedded:smollm2-135m-instruct"
    assert tags["amopo.objective"] == "amopo"
    # Training summary flattened with "/", eval metrics as they are.
    assert float(tags["metric.heldout_final/accuracy/overall"]) == 0.75
    assert float(tags["metric.pref_accuracy/mean_dimensions"]) == 0.7
    assert float(tags["metric.dimension/helpfulness/delta"]) == 0.1
    assert not any(k.startswith("metric.") and "model_dir" in k for k in tags)
    run = _client(uri).get_run(mv.run_id)
    assert run.data.metrics["winrate/lc"] == 0.55 and run.info.status == "FINISHED"


def test_one_artifact_path_holds_the_exact_hf_folder(sqlite_store, tiny_model_dir):
    _, _, _, summary = sqlite_store
    folder = _local(summary["hf_artifact_uri"])
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
    assert (folder.parent / "MLmodel").is_file()   # MLflow's transformers flavour beside it


def test_models_uri_resolves_to_the_hf_folder(sqlite_store, tmp_path):
    from amopo.models import load_model, load_tokenizer
    from amopo.registry.resolve import download_hf_folder, hf_artifact_uri

    uri, _, _, summary = sqlite_store
    assert hf_artifact_uri("models:/tiny@challenger", uri) == summary["hf_artifact_uri"]
    assert hf_artifact_uri("models:/tiny/1", uri) == summary["hf_artifact_uri"]
    local = download_hf_folder("models:/tiny@challenger", uri, cache_root=tmp_path)
    assert local.parent == tmp_path / "tiny" and local.name.startswith("1-")
    assert load_model(str(local)).config.vocab_size == len(load_tokenizer(str(local)))
    assert download_hf_folder("models:/tiny@challenger", uri, cache_root=tmp_path) == local   # cached


def test_version_1_of_another_store_is_never_served_from_the_cache(sqlite_store, tmp_path, tiny_model_dir):
    from amopo.registry.resolve import download_hf_folder

    uri, _, _, _ = sqlite_store
    other_uri = f"sqlite:///{tmp_path / 'other.db'}"
    other = make_training_output(tmp_path / "train", tiny_model_dir)
    (other / "model" / "config.json").write_text(
        (other / "model" / "config.json").read_text().replace('"rms_norm_eps"', '"note": "other", "rms_norm_eps"'))
    _register(other, other_uri, "tiny", write_eval_metrics(tmp_path / "eval" / "metrics.json", **EVAL))
    first = download_hf_folder("models:/tiny/1", uri, cache_root=tmp_path / "cache")
    second = download_hf_folder("models:/tiny/1", other_uri, cache_root=tmp_path / "cache")
    assert first != second and '"note": "other"' in (second / "config.json").read_text()
    assert '"note"' not in (first / "config.json").read_text()


def test_serve_resolves_models_uris(sqlite_store, tmp_path, monkeypatch):
    from pathlib import Path

    from amopo.serving.errors import ServingError
    from amopo.serving.server import resolve_model_dir

    uri, _, _, _ = sqlite_store
    monkeypatch.setenv("AMOPO_CACHE", str(tmp_path))
    local = Path(resolve_model_dir("models:/tiny@challenger", uri))
    assert local.is_relative_to(tmp_path) and (local / "model.safetensors").is_file()
    with pytest.raises(ServingError, match="no alias 'nope'"):
        resolve_model_dir("models:/tiny@nope", uri)


@pytest.mark.parametrize("bad", ["models:/", "models:/a@", "models:/a/b", "runs:/x/model"])
def test_malformed_models_uris(bad):
    from amopo.registry.resolve import parse_models_uri

    with pytest.raises(RegistryError, match="expected models:/NAME@ALIAS"):
        parse_models_uri(bad)


@pytest.mark.slow
def test_pyfunc_loads_the_registered_model(sqlite_store):
    import mlflow

    uri, _, _, _ = sqlite_store
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/tiny@challenger")
    out = model.predict(["hello the"], params={"max_new_tokens": 3})
    assert isinstance(out, list) and len(out) == 1 and isinstance(out[0], str)


def test_registering_again_reuses_the_version(sqlite_store):
    uri, train_dir, evals, first = sqlite_store
    again = _register(train_dir, uri, "tiny", evals)
    assert again["reused"] and again["version"] == first["version"]
    assert len(_client(uri).search_model_versions("name='tiny'")) == 1


@pytest.mark.parametrize("breakage, message", [
    ("no_model", "no such model folder"),
    ("bin_weights", "no \\*.safetensors weights"),
    ("no_tokenizer", "no tokenizer files"),
    ("eval_not_number", "key 'winrate/lc' must be a finite number"),
    ("eval_not_json", "not valid JSON"),
])
def test_bad_inputs_fail_before_anything_is_registered(sqlite_store, tmp_path, tiny_model_dir, breakage, message):
    uri = sqlite_store[0]
    train_dir = make_training_output(tmp_path / "train", tiny_model_dir)
    evals = write_eval_metrics(tmp_path / "eval.json", **EVAL)
    model = train_dir / "model"
    if breakage == "no_model":
        import shutil
        shutil.rmtree(model)
    elif breakage == "bin_weights":
        (model / "model.safetensors").rename(model / "pytorch_model.bin")
    elif breakage == "no_tokenizer":
        (model / "tokenizer.json").unlink()
        (model / "tokenizer_config.json").unlink()
    elif breakage == "eval_not_number":
        evals.write_text(json.dumps({"winrate/lc": "high"}))
    else:
        evals.write_text("{not json")
    with pytest.raises(RegistryError, match=message):
        _register(train_dir, uri, "broken", evals)
    assert _client(uri).search_registered_models("name='broken'") == []


def test_a_failure_after_the_version_exists_rolls_it_back(sqlite_store, tmp_path, tiny_model_dir):
    # MLflow refuses the reserved alias "latest" only when it is set, i.e. after the version was created.
    uri = sqlite_store[0]
    train_dir = make_training_output(tmp_path / "train", tiny_model_dir)
    with pytest.raises(RegistryError, match="nothing was registered"):
        _register(train_dir, uri, "rollback", alias="latest")
    assert _client(uri).search_registered_models("name='rollback'") == []
    runs = _client(uri).search_runs([_client(uri).get_experiment_by_name("amopo-registry").experiment_id],
                                    "tags.mlflow.runName = 'register-rollback'")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_unreachable_server_is_retried_then_fails_clearly(tiny_model_dir, tmp_path):
    train_dir = make_training_output(tmp_path / "train", tiny_model_dir)
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RegistryError, match=r"cannot reach the MLflow server at .* after 3 attempt\(s\)"):
        _register(train_dir, dead, "tiny", connect_attempts=3, connect_backoff_s=0.05)


def test_register_cli(sqlite_store, capsys):
    from amopo.cli import main

    uri, train_dir, evals, first = sqlite_store
    assert main(["register", "--train-dir", str(train_dir), "--eval-metrics", str(evals.parent),
                 "--registered-model-name", "tiny", "--mlflow-tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert f"hf_artifact_uri: {first['hf_artifact_uri']}" in out
    assert main(["register", "--train-dir", str(train_dir / "nope"), "--mlflow-tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such training output folder" in err and len(err.splitlines()) == 1


# --- a real `mlflow server` over HTTP (sqlite backend, proxied artifacts) -------------------------

@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield uri
    server.stop()


@pytest.mark.slow
def test_round_trip_and_gate_over_http(mlflow_server, tiny_model_dir, tmp_path):
    from amopo.registry.promote import PromoteConfig, promote
    from amopo.registry.resolve import download_hf_folder, hf_artifact_uri

    uri = mlflow_server
    train_dir = make_training_output(tmp_path / "train", tiny_model_dir)
    good = write_eval_metrics(tmp_path / "good.json", **EVAL)
    first = _register(train_dir, uri, "served", good)
    assert first["hf_artifact_uri"].startswith("mlflow-artifacts:/")
    local = download_hf_folder("models:/served@challenger", uri, cache_root=tmp_path / "cache")
    assert (local / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    assert (local / "tokenizer.json").is_file()

    gate = PromoteConfig(registered_model_name="served", mlflow_tracking_uri=uri, gate_thresholds=["winrate/lc>=0.5"])
    assert promote(gate)["promoted"]    # the first model
    assert hf_artifact_uri("models:/served@champion", uri) == first["hf_artifact_uri"]

    worse = write_eval_metrics(tmp_path / "worse.json", **{**EVAL, "pref_accuracy__plain": 0.6})
    second = _register(train_dir, uri, "served", worse)
    assert second["version"] == first["version"] + 1
    decision = promote(gate)
    assert not decision["promoted"] and decision["champion_version"] == first["version"]
    tags = _client(uri).get_model_version("served", str(second["version"])).tags
    assert tags["amopo.gate.decision"] == "rejected"
    assert _register(train_dir, uri, "served", worse)["reused"]


# --- every candidate of a comparison -----------------------------------------------------------------

def _comparison(root, objectives, best):
    root.mkdir(parents=True, exist_ok=True)
    (root / "comparison.json").write_text(json.dumps({"objectives": objectives, "best": best,
                                                      "leader/pref_accuracy/plain/within_noise": True}))
    (root / "comparison.md").write_text("# Objectives compared\n")
    return root


def test_every_candidate_registers_tagged_and_the_challenger_reuses_its_version(sqlite_store, tmp_path, tiny_model_dir):
    from amopo.errors import ConfigError
    from amopo.registry.candidates import register_candidates

    uri = sqlite_store[0]
    labels, trains, evals = ["simpo", "dpo"], [], []
    for label, acc in zip(labels, (0.6, 0.8)):
        trains.append(make_training_output(tmp_path / label, tiny_model_dir, final_accuracy=acc, loss=label,
                                           run_id=f"run-{label}"))
        evals.append(write_eval_metrics(tmp_path / f"eval-{label}" / "metrics.json", pref_accuracy__plain=acc).parent)
        (evals[-1] / "report.json").write_text(json.dumps({"model": str(trains[-1] / "model")}))
    comparison = _comparison(tmp_path / "comparison", labels, "dpo")
    done = register_candidates(labels, trains, list(reversed(evals)), comparison, name="cands", tracking_uri=uri)
    assert [(d["label"], d["version"], d["reused"]) for d in done] == [("simpo", 1, False), ("dpo", 2, False)]
    client = _client(uri)
    assert client.get_registered_model("cands").aliases == {}          # no alias moved
    for d, role in zip(done, ("candidate", "best")):
        tags = client.get_model_version("cands", str(d["version"])).tags
        assert tags["amopo.comparison.label"] == d["label"] and tags["amopo.comparison.role"] == role
        assert tags["amopo.comparison.best"] == "dpo" and tags["amopo.comparison.objectives"] == "simpo,dpo"
        assert tags["amopo.comparison.within_noise.pref_accuracy/plain"] == "True"
    # each version holds its own evaluation (paired by the model evaluated, not by order)
    assert client.get_model_version("cands", "1").tags["metric.pref_accuracy/plain"] == "0.6"

    # the gate's registration of the best finds that version and gives it the alias
    challenger = _register(trains[1], uri, "cands", evals[1] / "metrics.json", comparison=str(comparison),
                           comparison_label="dpo")
    assert (challenger["version"], challenger["reused"]) == (2, True)
    assert client.get_registered_model("cands").aliases in ({"challenger": "2"}, {"challenger": 2})
    assert len(client.search_model_versions("name='cands'")) == 2

    with pytest.raises(ConfigError, match=r"'ppo' is not one of the objectives compared \(simpo, dpo\)"):
        _register(trains[0], uri, "cands", evals[0] / "metrics.json", comparison=str(comparison),
                  comparison_label="ppo")
    with pytest.raises(ConfigError, match="3 labels for 2 training folders"):
        register_candidates([*labels, "amopo"], trains, evals, comparison, name="cands", tracking_uri=uri)
