"""Judges: compare two answers, or rate one answer on one dimension.

Two kinds, one interface (``compare(items)``, ``rate(items)`` → list of ``Verdict``):

- ``LocalJudge``: a local Hugging Face causal LM that decides by the log-probabilities of the
  label tokens as the first token of its reply (AlpacaEval's "weighted" annotators do the same with
  an API's logprobs). For labels ℓ_1 … ℓ_m with token sets T_j ("A" and " A" when each is one
  token):
      q_j = Σ_{t ∈ T_j} π(t | prompt),   P(ℓ_j) = q_j / Σ_k q_k
  pairwise: value = P(first label) = P(first answer better);
  rating:   value = Σ_j v_j P(ℓ_j), the expected score (v_j the label's number).
  A verdict is unparseable when no label token is among the judge's ``top_k`` most likely next
  tokens: the judge was not answering the question.
- ``EndpointJudge``: any OpenAI-compatible chat endpoint, greedy; the reply text is parsed by
  ``amopo.evaluate.verdicts`` (unparseable → ``None``).

Answers longer than ``max_answer_chars`` are cut (and marked) before they enter a judge prompt.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

from amopo.errors import ConfigError
from amopo.evaluate.judge_prompts import JudgePrompt, PromptSet
from amopo.evaluate.verdicts import parse_pairwise, parse_rating

TRUNCATION_MARK = " [...]"


@dataclass(frozen=True)
class Verdict:
    value: float | None   # pairwise: P(first answer better); rating: the score; None: unparseable
    raw: str              # the reply (endpoint) or the label probabilities (local)


def cut(text: str, max_chars: int) -> str:
    return text if max_chars <= 0 or len(text) <= max_chars else text[:max_chars] + TRUNCATION_MARK


def pairwise_messages(prompts: PromptSet, instruction: str, first: str, second: str, max_chars: int) -> list[dict]:
    return prompts.pairwise.messages(instruction=instruction, output_a=cut(first, max_chars),
                                     output_b=cut(second, max_chars))


def rating_messages(prompts: PromptSet, instruction: str, output: str, dimension: str, max_chars: int) -> list[dict]:
    return prompts.rating.messages(instruction=instruction, output=cut(output, max_chars),
                                   dimension=dimension.replace("_", " "), rubric=prompts.rubric(dimension))


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="verdict", disable=not progress, leave=False)


class LocalJudge:
    """A local causal LM judging by label-token probabilities (see the module docstring)."""

    def __init__(self, model_name: str, prompts: PromptSet, *, top_k: int = 20, batch_size: int = 4,
                 max_answer_chars: int = 3000, progress: bool = True):
        from amopo.models import load_model, load_tokenizer

        self.name = model_name
        self.prompts = prompts
        self.top_k = top_k
        self.batch_size = batch_size
        self.max_answer_chars = max_answer_chars
        self.progress = progress
        self.tokenizer = load_tokenizer(model_name)
        self.tokenizer.padding_side = "left"
        import torch

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_model(model_name).eval().to(self.device)
        self._pair_ids = self._label_ids(prompts.pairwise)
        self._rating_ids = self._label_ids(prompts.rating)
        self._rating_values = [float(v) for v in prompts.rating.labels]

    @property
    def identity(self) -> dict:
        return {"judge": self.name, "judge_kind": "local-logprobs", "judge_top_k": self.top_k}

    def _label_ids(self, prompt: JudgePrompt) -> list[list[int]]:
        """Per label, the ids of its one-token spellings (bare and after a space)."""
        out: list[list[int]] = []
        for label in prompt.labels:
            ids = {enc[0] for variant in (label, " " + label)
                   if len(enc := self.tokenizer.encode(variant, add_special_tokens=False)) == 1}
            if not ids:
                raise ConfigError(f"judge {self.name}: label '{label}' of prompt '{prompt.name}' is not a single "
                                  "token for its tokenizer")
            out.append(sorted(ids))
        flat = [i for ids in out for i in ids]
        if len(flat) != len(set(flat)):
            raise ConfigError(f"judge {self.name}: labels of prompt '{prompt.name}' share tokens")
        return out

    def _render(self, messages: list[dict]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        text = "\n\n".join(m["content"] for m in messages)
        return (self.tokenizer.bos_token or "") + f"User: {text}\nAssistant: "

    def _label_distributions(self, conversations: list[list[dict]], label_ids: list[list[int]],
                             desc: str) -> list[tuple[list[float], bool, float]]:
        """For each conversation: P over the labels (renormalised), whether any label token was
        among the top_k next tokens, and the probability mass the labels hold together."""
        import torch

        wanted = {i for ids in label_ids for i in ids}
        texts = [self._render(c) for c in conversations]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        out: list = [None] * len(texts)
        with _bar(len(texts), desc, self.progress) as bar, torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                                     add_special_tokens=False).to(self.device)
                # Only the last position's distribution is needed: skip the LM head elsewhere.
                logits = self.model(**enc, logits_to_keep=1).logits[:, -1, :].float()
                logprobs = torch.log_softmax(logits, dim=-1)
                top = logprobs.topk(min(self.top_k, logprobs.shape[-1]), dim=-1).indices
                for row, i in enumerate(idx):
                    per_label = torch.stack([torch.logsumexp(logprobs[row, ids], dim=0) for ids in label_ids])
                    probs = torch.softmax(per_label, dim=0).tolist()
                    in_top_k = bool(wanted & set(top[row].tolist()))
                    out[i] = (probs, in_top_k, float(per_label.exp().sum()))
                bar.update(len(idx))
        return out

    def compare(self, items: Sequence[tuple[str, str, str]], desc: str = "judging pairs") -> list[Verdict]:
        """items: (instruction, first answer, second answer) → P(first better) per item."""
        conversations = [pairwise_messages(self.prompts, i, a, b, self.max_answer_chars) for i, a, b in items]
        labels = self.prompts.pairwise.labels
        verdicts = []
        for probs, ok, mass in self._label_distributions(conversations, self._pair_ids, desc):
            raw = " ".join(f"P({label})={p:.4f}" for label, p in zip(labels, probs)) + f" mass={mass:.4f}"
            verdicts.append(Verdict(probs[0] if ok else None, raw))
        return verdicts

    def rate(self, items: Sequence[tuple[str, str, str]], desc: str = "rating answers") -> list[Verdict]:
        """items: (instruction, answer, dimension) → expected score per item."""
        conversations = [rating_messages(self.prompts, i, o, d, self.max_answer_chars) for i, o, d in items]
        verdicts = []
        for probs, ok, mass in self._label_distributions(conversations, self._rating_ids, desc):
            score = sum(v * p for v, p in zip(self._rating_values, probs))
            raw = " ".join(f"P({label})={p:.4f}" for label, p in zip(self.prompts.rating.labels, probs))
            verdicts.append(Verdict(score if ok else None, f"{raw} mass={mass:.4f}"))
        return verdicts

    def close(self) -> None:
        self.model = None


class EndpointJudge:
    """An OpenAI-compatible chat model judging by its reply text (greedy)."""

    def __init__(self, endpoint, prompts: PromptSet, *, max_tokens: int = 16, concurrency: int = 4,
                 max_answer_chars: int = 3000, progress: bool = True):
        self.endpoint = endpoint
        self.prompts = prompts
        self.max_tokens = max_tokens
        self.concurrency = max(1, concurrency)
        self.max_answer_chars = max_answer_chars
        self.progress = progress

    @property
    def identity(self) -> dict:
        return {"judge": self.endpoint.model, "judge_kind": "endpoint", "judge_url": self.endpoint.base,
                "judge_max_tokens": self.max_tokens}

    def _ask(self, conversations: list[list[dict]], desc: str) -> list[str]:
        with _bar(len(conversations), desc, self.progress) as bar, ThreadPoolExecutor(self.concurrency) as pool:
            def one(messages):
                reply = self.endpoint.chat(messages, max_tokens=self.max_tokens, temperature=0.0)
                bar.update(1)
                return reply
            return list(pool.map(one, conversations))

    def compare(self, items: Sequence[tuple[str, str, str]], desc: str = "judging pairs") -> list[Verdict]:
        conversations = [pairwise_messages(self.prompts, i, a, b, self.max_answer_chars) for i, a, b in items]
        labels = self.prompts.pairwise.labels
        return [Verdict(parse_pairwise(reply, labels), reply) for reply in self._ask(conversations, desc)]

    def rate(self, items: Sequence[tuple[str, str, str]], desc: str = "rating answers") -> list[Verdict]:
        conversations = [rating_messages(self.prompts, i, o, d, self.max_answer_chars) for i, o, d in items]
        labels = self.prompts.rating.labels
        return [Verdict(parse_rating(reply, labels), reply) for reply in self._ask(conversations, desc)]

    def close(self) -> None:
        pass
