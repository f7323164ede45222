"""Shared fixtures: a tiny offline model (Llama + byte-level BPE with a ChatML template)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny model folder built once per test session, offline."""
    from amopo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """A prepared data folder: 16 training and 8 held-out pairs of :func:`answer_pairs`."""
    from amopo.data.prepare import PrepareConfig, prepare
    from tests.helpers.records import answer_pairs, write_jsonl

    root = tmp_path_factory.mktemp("prepared")
    train_file = write_jsonl(root / "train.jsonl", answer_pairs(16))
    eval_file = write_jsonl(root / "eval.jsonl", answer_pairs(8, offset=100))
    prepare(PrepareConfig(data_source=str(train_file), eval_source=str(eval_file), output=str(root / "data")))
    return root / "data"


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="session")
def image() -> str:
    """The project's image, built once per session with scripts/build_image.sh's code (tag amopo:VERSION;
    its id, digest and size recorded in build/image.json). Used by tests/test_image.py and
    tests/test_cluster_guide.py."""
    from amopo.image.build import build, project_version

    result = build(tag=f"amopo:{project_version()}", record=ROOT / "build" / "image.json")
    return result["tag"]
