"""The steering chat template (amopo.chat_template) against the Python path, token for token.

For a grid of conditioning specs (both prompt styles, accumulate_prefixes on and off, one or several
dimensions with their own scales, holistic ones included), targets (one, several, all, none, {}) and
chat shapes (one turn, a system turn, several turns, text parts), under three base templates (ChatML
with a system role, one that raises on a system turn, one that folds the system turn into the first
user turn): ``tokenizer.apply_chat_template(messages, dimension_targets=...)`` with the compiled
template gives the token ids of the base template over ``conditioned_messages``; bad targets stop
rendering with the message the server gives.
"""

from __future__ import annotations

import copy
import itertools
import json
import math

import pytest
from jinja2.exceptions import TemplateError

from amopo.chat_template import (BEGIN, TEMPLATE_FILE, base_template_of, compile_template, read_base_template,
                                 write_chat_template)
from amopo.data.dimensions import KNOWN, Dimension
from amopo.data.prompt_styles import STYLES
from amopo.data.prompts import CONDITIONING_FILE, conditioning_spec
from amopo.errors import SteeringError
from amopo.steering import conditioned_messages
from amopo.tiny import CHAT_TEMPLATE as CHATML

NO_SYSTEM = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
             "{{ bos_token }}{% for m in messages %}{{ '[' + m['role'] + '] ' + m['content'] + '\n' }}{% endfor %}"
             "{% if add_generation_prompt %}{{ '[assistant] ' }}{% endif %}")
# Folds a system turn into the first user turn (Llama-2 / Gemma style); starts with whitespace and a newline.
FOLDS = ("\n  {%- if messages[0]['role'] == 'system' -%}{%- set sys = messages[0]['content'] + '\n\n' -%}"
         "{%- set msgs = messages[1:] -%}{%- else -%}{%- set sys = '' -%}{%- set msgs = messages -%}{%- endif -%}"
         "{%- for m in msgs -%}{%- if loop.first and m['role'] == 'user' -%}{{ '<|im_start|>user\n' + sys + m['content'] }}"
         "{%- else -%}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] }}{%- endif -%}{{ '<|im_end|>\n' }}"
         "{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}")
# Leading text and leading indentation before a tag: trim_blocks / lstrip_blocks treat them as at the start.
BASES = {"chatml": CHATML, "no-system": NO_SYSTEM, "folds-system": FOLDS, "leading-newline": "\nhello " + CHATML,
         "indented-tag": "  " + CHATML}

CUSTOM = Dimension("tone_shift", -1.5, 2.5, "how far the tone moves, a scale of its own")
DIM_SETS = {"verbosity": [KNOWN["verbosity"]],
            "several": [KNOWN["helpfulness"], KNOWN["overall"], KNOWN["instruction_following"], CUSTOM]}
SPECS = {f"{style}-{dims}-{'acc' if acc else 'own'}": conditioning_spec(DIM_SETS[dims], accumulate=acc,
                                                                         style=STYLES[style])
         for style, dims, acc in itertools.product(STYLES, DIM_SETS, (False, True))}

CHATS = {
    "one-turn": [{"role": "user", "content": "Explain DNS."}],
    "system": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Explain DNS."}],
    "multi-turn": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"},
                   {"role": "user", "content": "Explain DNS."}],
    "text-parts": [{"role": "user", "content": [{"type": "text", "text": "Explain "}, {"type": "text", "text": "DNS."}]}],
}


def _targets(spec: dict) -> list[dict | None]:
    """One dimension at a time (every level on its scale, and a fraction), all together, none, {}."""
    dims = [Dimension.from_json(d) for d in spec["dimensions"]]
    out: list[dict | None] = [None, {}]
    for d in dims:
        if not d.scored:
            out.append({d.name: None})
            continue
        levels = list(range(math.ceil(d.low), math.floor(d.high) + 1)) + [d.low, d.high, (d.low + d.high) / 2 + 0.25]
        out += [{d.name: lv} for lv in levels]
    out.append({d.name: (d.high if d.scored else None) for d in reversed(dims)})   # the request's order is not the model's
    if len(dims) > 2:
        out.append({d.name: d.low for d in dims if d.scored})
    return out


@pytest.fixture(scope="module")
def tokenizers(tiny_tokenizer):
    """A copy of the tiny tokenizer per base template."""
    out = {}
    for name, template in BASES.items():
        tok = copy.deepcopy(tiny_tokenizer)
        tok.chat_template = template
        out[name] = tok
    return out


def _ids(tok, messages, template=None, **kw):
    return tok.apply_chat_template(messages, chat_template=template, add_generation_prompt=True, tokenize=True,
                                   return_dict=False, **kw)


def _render(tok, messages, template=None, **kw):
    try:
        return _ids(tok, messages, template, **kw)
    except TemplateError as exc:
        return ("error", str(exc))
    except TypeError as exc:   # a base template that cannot take text parts fails alike on both paths
        return ("base-error", str(exc))


def _python(spec, messages, targets):
    """The Python path's messages, with its SteeringError as the same comparable outcome."""
    try:
        return conditioned_messages(spec, messages, targets)
    except SteeringError as exc:
        return ("error", str(exc))


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("spec_name", SPECS)
def test_the_template_renders_the_python_paths_prompt_token_for_token(tokenizers, base, spec_name):
    tok, spec = tokenizers[base], SPECS[spec_name]
    template = compile_template(spec, BASES[base])
    compared = 0
    for chat_name, chat in CHATS.items():
        plain = _render(tok, chat)
        assert _render(tok, chat, template) == plain, chat_name   # no variable: the base template's prompt
        for targets in _targets(spec):
            steered = _python(spec, chat, targets)
            want = steered if steered[0] == "error" else _render(tok, steered)
            got = _render(tok, chat, template, dimension_targets=targets)
            assert got == want, (chat_name, targets)
            if targets is None or targets == {}:
                assert got == plain
            compared += 1
    assert compared > 20


def test_the_grid_steers_and_covers_the_system_turn_cases(tokenizers):
    """The comparisons above are not vacuous: the steered prompt differs from the plain one, the
    authors style adds its system turn, and a base template that refuses system turns refuses it."""
    chat = CHATS["one-turn"]
    for name, spec in SPECS.items():
        tok = tokenizers["chatml"]
        template = compile_template(spec, CHATML)
        target = {spec["dimensions"][0]["name"]: 1} if spec["dimensions"][0]["low"] is not None else \
            {spec["dimensions"][0]["name"]: None}
        text = tok.apply_chat_template(chat, chat_template=template, tokenize=False, dimension_targets=target)
        assert text != tok.apply_chat_template(chat, tokenize=False)
        assert ("<|im_start|>system" in text) == (spec["prompt_style"] == "authors"), name
        if spec["prompt_style"] == "authors":
            with pytest.raises(TemplateError, match="System role not supported"):
                tokenizers["no-system"].apply_chat_template(chat, chat_template=compile_template(spec, NO_SYSTEM),
                                                            tokenize=False, dimension_targets=target)


BAD = [
    ({"helpfulness": 3}, "unknown dimension(s) helpfulness"),
    ({"verbosity": 7, "colour": 1, "Apple": 2}, "unknown dimension(s) Apple, colour"),
    ({"verbosity": 7}, "level 7 is not a number from 0 to 4"),
    ({"verbosity": -0.5}, "level -0.5 is not a number from 0 to 4"),
    ({"verbosity": "low"}, "level 'low' is not a number from 0 to 4"),
    ({"verbosity": True}, "level True is not a number"),
    ({"verbosity": None}, "level None is not a number"),
    ({"verbosity": [1]}, "level [1] is not a number"),
    ({"verbosity": float("nan")}, "level nan is not a number"),
    ({"overall": 3}, "dimension 'overall' is holistic and takes no level (use null)"),
    ("verbosity", "must be an object of dimension → level (e.g. {\"verbosity\": 1}), got str"),
    ([{"verbosity": 1}], "got list"),
    (3, "got int"),
    (2.5, "got float"),
    (True, "got bool"),
]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("targets, expected", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_targets_raise_the_servers_message(tokenizers, style, targets, expected):
    spec = conditioning_spec([KNOWN["verbosity"], KNOWN["overall"]], style=STYLES[style])
    tok = tokenizers["chatml"]
    with pytest.raises(SteeringError) as py:
        conditioned_messages(spec, CHATS["one-turn"], targets)
    with pytest.raises(TemplateError) as tpl:
        tok.apply_chat_template(CHATS["one-turn"], chat_template=compile_template(spec, CHATML), tokenize=False,
                                dimension_targets=targets)
    assert str(tpl.value) == str(py.value)
    assert expected in str(tpl.value)
    assert "this model steers: verbosity (0 to 4); overall (holistic: null)" in str(tpl.value) \
        or "must be an object" in str(tpl.value)


@pytest.mark.parametrize("messages, expected", [
    ([{"role": "system", "content": "be short"}], "dimension_targets steer the last user message, and there is none"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
     "messages[0].content: only text (a string or text parts) can be steered"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": 5}],
     "messages[2].content: only text"),
])
def test_messages_that_cannot_be_steered_raise_the_servers_message(tokenizers, messages, expected):
    spec = SPECS["amopo-verbosity-own"]
    with pytest.raises(SteeringError) as py:
        conditioned_messages(spec, messages, {"verbosity": 1})
    with pytest.raises(TemplateError) as tpl:
        tokenizers["chatml"].apply_chat_template(messages, chat_template=compile_template(spec, CHATML),
                                                 tokenize=False, dimension_targets={"verbosity": 1})
    assert str(tpl.value) == str(py.value)
    assert expected in str(tpl.value)


def test_wording_with_jinja_and_quote_characters_survives(tokenizers):
    spec = conditioning_spec([Dimension("x_y", 0, 1, "uses {{ braces }}, {% tags %}, 'quotes', \"dq\", \\ and ü 😀")])
    tok = tokenizers["chatml"]
    got = _ids(tok, CHATS["system"], compile_template(spec, CHATML), dimension_targets={"x_y": 1})
    assert got == _ids(tok, conditioned_messages(spec, CHATS["system"], {"x_y": 1}))


def test_compiling_again_replaces_the_steering_part_only():
    a, b = SPECS["amopo-verbosity-own"], SPECS["authors-several-acc"]
    once = compile_template(a, CHATML)
    assert once.startswith(BEGIN) and base_template_of(once) == CHATML
    assert compile_template(b, once) == compile_template(b, CHATML)
    with pytest.raises(SteeringError, match="no end marker"):
        base_template_of(BEGIN + "{{ x }}")


def _folder(tmp_path, tiny_tokenizer, spec):
    tiny_tokenizer.save_pretrained(str(tmp_path))
    if spec is not None:
        (tmp_path / CONDITIONING_FILE).write_text(json.dumps(spec))
    return tmp_path


def test_an_existing_folder_gets_the_template_and_transformers_loads_it(tmp_path, tiny_tokenizer):
    from transformers import AutoTokenizer

    spec = SPECS["authors-several-own"]
    folder = _folder(tmp_path, tiny_tokenizer, spec)
    assert (folder / TEMPLATE_FILE).exists()   # what transformers 5 writes
    path = write_chat_template(folder)
    assert path == folder / TEMPLATE_FILE and read_base_template(folder).startswith(BEGIN)
    assert write_chat_template(folder).read_text() == path.read_text()   # idempotent
    tok = AutoTokenizer.from_pretrained(str(folder))
    targets = {"helpfulness": 2, "tone_shift": -1}
    for chat in CHATS.values():
        assert tok.apply_chat_template(chat, add_generation_prompt=True, dimension_targets=targets, tokenize=True,
                                       return_dict=False) == \
            _ids(tiny_tokenizer, conditioned_messages(spec, chat, targets))
        if isinstance(chat[-1]["content"], str):   # ChatML here takes string content only
            assert _ids(tok, chat) == _ids(tiny_tokenizer, chat)


def test_a_template_in_tokenizer_config_is_moved_to_the_jinja_file(tmp_path, tiny_tokenizer):
    folder = _folder(tmp_path, tiny_tokenizer, SPECS["amopo-verbosity-own"])
    (folder / TEMPLATE_FILE).unlink()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = CHATML
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    write_chat_template(folder)
    assert "chat_template" not in json.loads((folder / "tokenizer_config.json").read_text())
    assert base_template_of((folder / TEMPLATE_FILE).read_text()) == CHATML


def test_folders_without_a_spec_or_a_template(tmp_path, tiny_tokenizer):
    plain = _folder(tmp_path / "plain", tiny_tokenizer, None)
    before = (plain / TEMPLATE_FILE).read_text()
    assert write_chat_template(plain) is None and (plain / TEMPLATE_FILE).read_text() == before
    bare = _folder(tmp_path / "bare", tiny_tokenizer, SPECS["amopo-verbosity-own"])
    (bare / TEMPLATE_FILE).unlink()
    with pytest.raises(SteeringError, match="has no chat template"):
        write_chat_template(bare)
    with pytest.raises(SteeringError, match="not a model folder"):
        write_chat_template(tmp_path / "missing")
