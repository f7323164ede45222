"""`amopo pipeline run --local --values FILE`: the file's parameters, under --param; the local runner
itself is replaced by a recorder here (tests/test_pipeline.py runs it for real)."""

import pytest


def _run(monkeypatch, capsys, argv):
    import pipelines.local_run as local_run
    from pipelines.cli import main

    seen = []
    monkeypatch.setattr(local_run, "run_local", lambda params, **kw: seen.append(params) or {})
    monkeypatch.setattr(local_run, "print_summary", lambda summary: None)
    return main(argv), seen, capsys.readouterr().err


def test_run_takes_the_values_files_parameters_under_the_flags(tmp_path, monkeypatch, capsys):
    values = tmp_path / "v.yaml"
    values.write_text("run: {experiment: ignored-here}\n"
                      "parameters: {max_steps: 8, learning_rate: 3e-4, train_options: {sft_weight: 0.5}}\n")
    rc, seen, _ = _run(monkeypatch, capsys, ["run", "--local", "--values", str(values), "--param", "max_steps=2"])
    assert rc == 0 and seen == [{"max_steps": 2, "learning_rate": 3e-4, "train_options": {"sft_weight": 0.5}}]


@pytest.mark.parametrize("text, words", [
    ("parameters: {max_stepz: 8}\n", "parameters.max_stepz: not a pipeline parameter"),
    ("parameters: {max_steps: eight}\n", "expected int"),
])
def test_a_bad_values_file_stops_the_run_naming_the_key(tmp_path, monkeypatch, capsys, text, words):
    values = tmp_path / "v.yaml"
    values.write_text(text)
    rc, seen, err = _run(monkeypatch, capsys, ["run", "--local", "--values", str(values)])
    assert rc == 2 and seen == [] and words in err and str(values) in err
