"""Token log-probabilities: exact values from the model, and their OpenAI shapes.

Values. A prompt is scored by one forward pass over it alone (no padding, no cache):
logp_t = log_softmax(logits_{t-1})[x_t] in fp32, for t = 1 … L-1; the first token has no context
and gets null, as OpenAI's legacy API gives it. A generated token's value comes from the logits it
was chosen from, in fp32, before temperature or top-p: the model's own distribution, not the
sampling one. Every generated token is listed, the end-of-sequence token or the one that completed
a stop string included (its text is not in the reply); lm-eval's ``local-completions`` relies on
that: with ``echo`` and ``max_tokens: 1`` it drops the last entry as the generated one.

Shapes. ``/completions`` (legacy): ``choices[i].logprobs`` = {tokens, token_logprobs,
top_logprobs (one {token: logprob} object per position, the N most likely; null at the first
prompt token), text_offset}. ``text_offset`` counts characters of prompt + completion, as OpenAI
does, so without ``echo`` the completion's offsets start at the prompt's length. ``/chat/completions``:
``choices[0].logprobs.content`` = [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}].

A token's text is its own bytes (byte-level BPE and SentencePiece byte-fallback tokens are mapped
back to bytes) read as UTF-8; a token that is not valid UTF-8 on its own (part of a character) is
written ``bytes:\\xNN…``, OpenAI's convention, so that different tokens never share a name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Sequence

MAX_LOGPROBS = 20          # the most likely tokens a request may ask for per position (OpenAI chat's cap)
_SCORE_CHUNK = 256         # prompt positions whose fp32 log_softmax is held in memory at once
_OFFSET_WINDOW = 8         # tokens of left context decoded to find where a token's text starts


@dataclass
class TokenLogprob:
    """One position: the token there, its log-probability (None for a first prompt token), and the
    most likely tokens at that position as (token id, log-probability), most likely first."""
    token_id: int
    logprob: float | None
    top: list[tuple[int, float]] = field(default_factory=list)


def position_logprobs(logits, chosen: Sequence[int], top_n: Sequence[int]) -> list[TokenLogprob]:
    """Entries for rows of ``logits`` [rows, vocab]: ``chosen[r]``'s log-probability and the
    ``top_n[r]`` most likely tokens of row r (fp32 log_softmax)."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    index = torch.tensor(list(chosen), dtype=torch.long, device=logp.device)[:, None]
    values = logp.gather(1, index)[:, 0].tolist()
    k = min(max(top_n, default=0), logp.shape[-1])
    top_v, top_i = (logp.topk(k, dim=-1) if k else (None, None))
    top_v = top_v.tolist() if k else None
    top_i = top_i.tolist() if k else None
    out = []
    for r, (token, value) in enumerate(zip(chosen, values)):
        n = min(top_n[r], k)
        out.append(TokenLogprob(int(token), value, list(zip(top_i[r][:n], top_v[r][:n])) if n else []))
    return out


def score_prompt(model, ids: Sequence[int], top_n: int) -> list[TokenLogprob]:
    """Log-probabilities of every token of ``ids`` given the ones before it: one forward pass over
    the prompt alone; position 0 gets None."""
    import torch

    device = model.device
    x = torch.tensor([list(ids)], dtype=torch.long, device=device)
    with torch.inference_mode():
        logits = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False).logits[0]
    out = [TokenLogprob(int(ids[0]), None, [])]
    for start in range(0, len(ids) - 1, _SCORE_CHUNK):
        stop = min(start + _SCORE_CHUNK, len(ids) - 1)
        out += position_logprobs(logits[start:stop], ids[start + 1:stop + 1], [top_n] * (stop - start))
    return out


# --- token texts ------------------------------------------------------------------------------------

def _byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet: one printable character per byte value (character → byte)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class TokenTexts:
    """Bytes, names and text offsets of a tokenizer's tokens."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.special |= set((getattr(tokenizer, "added_tokens_decoder", None) or {}).keys())
        self.kind = self._kind(tokenizer)
        self.alphabet = _byte_level_alphabet() if self.kind == "byte_level" else {}

    @staticmethod
    def _kind(tokenizer) -> str:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        try:
            decoder = json.dumps(json.loads(backend.to_str()).get("decoder")) if backend is not None else ""
        except (AttributeError, ValueError, TypeError):
            decoder = ""
        if '"ByteLevel"' in decoder:
            return "byte_level"
        if "\u2581" in decoder or '"ByteFallback"' in decoder or '"Metaspace"' in decoder:
            return "sentencepiece"
        return "decode"

    def token_bytes(self, token_id: int) -> bytes:
        piece = self.tokenizer.convert_ids_to_tokens(int(token_id))
        if piece is None:
            return b""
        if token_id in self.special:
            return piece.encode("utf-8")
        if self.kind == "byte_level" and all(c in self.alphabet for c in piece):
            return bytes(self.alphabet[c] for c in piece)
        if self.kind == "sentencepiece":
            byte = _BYTE_TOKEN.match(piece)
            return bytes([int(byte.group(1), 16)]) if byte else piece.replace("\u2581", " ").encode("utf-8")
        return self.tokenizer.decode([int(token_id)]).encode("utf-8")

    def name(self, token_id: int) -> tuple[str, bytes]:
        """(the token's name, its bytes): the bytes as UTF-8, or ``bytes:\\xNN…`` when they are not."""
        raw = self.token_bytes(token_id)
        try:
            return raw.decode("utf-8"), raw
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw), raw

    def offsets(self, ids: Sequence[int], start: int = 0) -> list[int]:
        """Where each token's text starts in ``start`` + the decoded text of ``ids`` (characters).

        Incremental: the text a token adds is measured against a few tokens of left context, so
        leading-space and multi-byte characters split over tokens come out as in the whole text.
        """
        decode = self.tokenizer.decode
        out, position = [], start
        for i in range(len(ids)):
            out.append(position)
            left = max(0, i - _OFFSET_WINDOW)
            added = len(decode(list(ids[left:i + 1]), skip_special_tokens=True)) - \
                len(decode(list(ids[left:i]), skip_special_tokens=True))
            position += max(0, added)
        return out


# --- the OpenAI shapes ---------------------------------------------------------------------------

def completion_logprobs(texts: TokenTexts, prompt: list[TokenLogprob] | None, generated: list[TokenLogprob],
                        prompt_ids: Sequence[int], prompt_chars: int):
    """``choices[i].logprobs`` of a legacy completion: the prompt's entries (``echo``) then the
    generated ones; offsets count prompt + completion characters (``prompt_chars`` = the prompt's)."""
    from openai.types.completion_choice import Logprobs

    entries = list(prompt or []) + list(generated)
    offsets = (texts.offsets(prompt_ids) if prompt else []) + \
        texts.offsets([e.token_id for e in generated], start=prompt_chars)
    tokens, values, tops = [], [], []
    for entry in entries:
        tokens.append(texts.name(entry.token_id)[0])
        values.append(entry.logprob)
        tops.append(None if entry.logprob is None else {texts.name(t)[0]: v for t, v in entry.top})
    # null entries are not in the type's List[float]; they are in OpenAI's answers: construct
    return Logprobs.model_construct(tokens=tokens, token_logprobs=values, top_logprobs=tops, text_offset=offsets)


def chat_logprobs(texts: TokenTexts, generated: list[TokenLogprob]):
    """``choices[0].logprobs`` of a chat completion."""
    from openai.types.chat.chat_completion import ChoiceLogprobs
    from openai.types.chat.chat_completion_token_logprob import ChatCompletionTokenLogprob, TopLogprob

    def named(token_id: int) -> dict:
        name, raw = texts.name(token_id)
        return {"token": name, "bytes": list(raw)}

    return ChoiceLogprobs(content=[
        ChatCompletionTokenLogprob(**named(e.token_id), logprob=e.logprob,
                                   top_logprobs=[TopLogprob(**named(t), logprob=v) for t, v in e.top])
        for e in generated], refusal=None)
