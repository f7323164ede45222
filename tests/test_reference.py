"""The frozen reference of DPO / MODPO (amopo/train/reference.py): the precomputed sums follow the
rows when pairs dropped for length leave gaps in ``id``, and every reference runs under the policy's
autocast, so at step 0 the policy-minus-reference log-ratios are exactly zero and ``copy`` and
``precomputed`` agree bit for bit on the same batches."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from amopo.train.loop import set_up, train
from tests.helpers.records import answer_pairs, write_jsonl
from tests.helpers.training import train_config

# At this cutoff the pair with the long prompt (record 2) does not fit even with its user text cut to
# tokenize.MIN_USER_TOKENS, while the others fit with shortened responses (measured on the tiny
# tokenizer: conditioned prompts of 94 tokens, the cut long one of over 100).
GAP_MAX_LENGTH = 100


@pytest.fixture(scope="module")
def gapped(tmp_path_factory) -> Path:
    """A prepared folder whose 8 training pairs lose record 2 for length at GAP_MAX_LENGTH."""
    from amopo.data.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("gapped")
    records = answer_pairs(8)
    records[2]["prompt"] = "Question 2: " + " ".join(["what is the value of the water and the cat"] * 10) + "?"
    prepare(PrepareConfig(data_source=str(write_jsonl(root / "train.jsonl", records)),
                          eval_source=str(write_jsonl(root / "eval.jsonl", answer_pairs(4, offset=100))),
                          output=str(root / "data")), echo=None)
    return root / "data"


@contextmanager
def _session(cfg):
    """The trainer set up as for step 0 (no step taken), its MLflow run ended afterwards."""
    session = set_up(cfg)
    try:
        yield session
    finally:
        session.run.end()
        session.accelerator.end_training()


def _reference_table(session) -> torch.Tensor:
    """[rows, 2] reference log-probs (chosen, rejected) of every training row, asked of the session's
    reference in batches of heldout_batch_size laid out as micro_step lays them out."""
    from amopo.train.batching import collate
    from amopo.train.forward import supports_block_mask
    from amopo.train.packing import collate_packed

    cfg, rows, device = session.cfg, session.rows, session.accelerator.device
    packed = cfg.packing and supports_block_mask(session.model)
    parts = []
    for start in range(0, len(rows), cfg.heldout_batch_size):
        chunk = rows[start:start + cfg.heldout_batch_size]
        batch = (collate_packed if packed else collate)(chunk, False, session.tokenizer.pad_token_id)
        logp = session.reference_logps(chunk, {n: t.to(device) for n, t in batch.items()})
        parts.append(torch.stack([logp[:len(chunk)], logp[len(chunk):]], dim=1).float().cpu())
    return torch.cat(parts)


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def test_precomputed_reference_covers_a_split_with_a_dropped_pair(gapped, tiny_model_dir, mlflow_uri, tmp_path):
    common = dict(objective="dpo", max_length=GAP_MAX_LENGTH, mixed_precision="no")
    with _session(train_config(gapped, tiny_model_dir, tmp_path / "copy", mlflow_uri, reference="copy",
                               **common)) as s:
        ids = [row["id"] for row in s.rows]
        assert 2 not in ids and len(ids) == 7 and max(ids) == 7   # one pair dropped, a gap in id
        copied = _reference_table(s)
    with _session(train_config(gapped, tiny_model_dir, tmp_path / "pre", mlflow_uri, reference="precomputed",
                               **common)) as s:
        precomputed = _reference_table(s)
    # The same batches through the same weights: the sums agree exactly, row for row.
    assert torch.equal(precomputed, copied), (precomputed - copied).abs().max()

    # Training reads the cache back; at step 1 the policy is the reference, so the implicit rewards
    # vanish (up to fp32 rounding: the training batches are laid out unlike the precomputing ones).
    summary = train(train_config(gapped, tiny_model_dir, tmp_path / "run", mlflow_uri, reference="precomputed",
                                 max_steps=3, **common))
    assert summary["reference"] == "precomputed" and summary["train_pairs"] == 7
    first = _history(tmp_path / "run")[0]
    assert first["rewards/chosen/plain"] == pytest.approx(0.0, abs=1e-5)
    assert first["rewards/rejected/plain"] == pytest.approx(0.0, abs=1e-5)


def test_copy_reference_gives_zero_log_ratios_at_step_0_under_bf16(prepared, tiny_model_dir, mlflow_uri, tmp_path):
    summary = train(train_config(prepared, tiny_model_dir, tmp_path / "run", mlflow_uri, objective="dpo",
                                 reference="copy", mixed_precision="bf16", max_steps=1))
    assert (summary["mixed_precision"], summary["reference"]) == ("bf16", "copy")
    first = _history(tmp_path / "run")[0]
    # Policy and reference are the same weights through the same bf16 autocast on the same batch.
    assert first["rewards/chosen/plain"] == 0.0
    assert first["rewards/rejected/plain"] == 0.0
    assert first["margin/plain"] == 0.0


def test_copy_and_precomputed_references_agree_under_bf16(prepared, tiny_model_dir, mlflow_uri, tmp_path):
    common = dict(objective="dpo", mixed_precision="bf16")
    with _session(train_config(prepared, tiny_model_dir, tmp_path / "copy", mlflow_uri, reference="copy",
                               **common)) as s:
        copied = _reference_table(s)
    with _session(train_config(prepared, tiny_model_dir, tmp_path / "pre", mlflow_uri, reference="precomputed",
                               **common)) as s:
        precomputed = _reference_table(s)
    # Exact, not within a bf16 tolerance: both run the initial weights under the same autocast on the
    # same batches (a bf16 copy against an fp32 one would differ by about 2⁻⁸ relative per matmul).
    assert torch.equal(precomputed, copied), (precomputed - copied).abs().max()
