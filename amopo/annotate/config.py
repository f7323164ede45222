"""``AnnotateConfig``: the options of ``amopo annotate`` (YAML keys and CLI flags alike)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from amopo.config import field
from amopo.data.dimensions import KNOWN, Dimension
from amopo.data.readers import DEFAULT_MAX_CHARS
from amopo.errors import ConfigError
from amopo.models import EMBEDDED_SMOLLM2

FORMATS = ("helpsteer2", "amopo")
OUTPUT_SUFFIXES = {"helpsteer2": (".jsonl", ".parquet"), "amopo": (".jsonl",)}


@dataclass
class AnnotateConfig:
    data_source: str = field("", help="Data to annotate: raw HelpSteer2 rows (.jsonl/.jsonl.gz/.parquet or a hub name "
                                "'owner/name[:split]') or AMoPO records (.jsonl)")
    output: str = field("", help="Annotated data file in the same format (.jsonl, or .parquet for helpsteer2); "
                                 "replaced atomically")
    data_format: str = field("helpsteer2", help="Input format: helpsteer2 (one row per prompt/response) or amopo "
                                           "(prompt/chosen/rejected records)")
    dimension: str = field("instruction_following", help="Dimension the judge scores, on its registry scale "
                                                         "(instruction_following 1-5; HelpSteer2 attributes 0-4); "
                                                         "responses that already score it are kept as they are")
    judge: str = field(EMBEDDED_SMOLLM2, help="judge: a local Hugging Face model (scores by the probabilities of "
                                              "the level tokens; the expected level is rounded to the nearest "
                                              "level, halves up) or an OpenAI-compatible endpoint URL")
    judge_model_name: str | None = field(None, help="served model name at the judge endpoint; unset: the first one it lists")
    judge_api_key_env: str | None = field(None, help="environment variable holding the judge endpoint's API key")
    prompts: str = field("v1", help="rubric prompt: a shipped version (v1) or a YAML file of your own")
    judge_top_k: int = field(20, help="local judge: a verdict is unparseable unless a level token is among "
                                      "its top_k next tokens")
    judge_batch_size: int = field(4, help="local judge: prompts per forward pass")
    judge_max_tokens: int = field(16, help="endpoint judge: reply length limit in tokens")
    concurrency: int = field(4, help="endpoint judge: parallel requests")
    retries: int = field(3, help="endpoint judge: retries (with exponential back-off) of a failed request")
    timeout: float = field(120.0, help="endpoint judge: seconds before a request times out")
    max_answer_chars: int = field(6000, help="responses are cut to this many characters (marked) inside the "
                                             "judge prompt")
    chunk_size: int = field(32, help="verdicts asked per judge call; the cache is written after each call")
    cache: str | None = field(None, help="answer cache (JSONL; default: OUTPUT.annotate-cache.jsonl beside the "
                                         "output); a rerun asks only what it does not hold")
    max_chars: int = field(DEFAULT_MAX_CHARS, help="Longest prompt or response accepted, in characters")
    progress: bool = field(True, help="show a progress bar")

    def validate(self) -> None:
        for name in ("data_source", "output"):
            if not str(getattr(self, name)).strip():
                raise ConfigError(f"option '{name}': a file is needed")
        if self.data_format not in FORMATS:
            raise ConfigError(f"option 'data_format': expected one of {', '.join(FORMATS)}, got {self.data_format!r}")
        self.scored_dimension()
        for name in ("judge_top_k", "judge_batch_size", "judge_max_tokens", "concurrency", "chunk_size", "max_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"option '{name}': expected a positive integer, got {getattr(self, name)}")
        if self.retries < 0 or self.timeout <= 0:
            raise ConfigError(f"options 'retries' >= 0 and 'timeout' > 0 expected, got {self.retries} and "
                              f"{self.timeout}")
        suffixes = OUTPUT_SUFFIXES[self.data_format]
        if Path(self.output).suffix.lower() not in suffixes:
            raise ConfigError(f"option 'output': {self.output} must end in {' or '.join(suffixes)} for the "
                              f"{self.data_format} format")
        if Path(self.output).expanduser().resolve() == Path(self.data_source).expanduser().resolve():
            raise ConfigError(f"option 'output': {self.output} is the input file; write the annotated data "
                              "to a new file")

    def scored_dimension(self) -> Dimension:
        """The registry's entry for ``dimension``; ConfigError when it is unknown or holistic."""
        dim = KNOWN.get(self.dimension)
        if dim is None or not dim.scored:
            scored = ", ".join(name for name, d in KNOWN.items() if d.scored)
            why = "is holistic (it has no score)" if dim is not None else "is not a known dimension"
            raise ConfigError(f"option 'dimension': '{self.dimension}' {why}; a judge can score: {scored}")
        return dim

    def cache_path(self) -> Path:
        out = Path(self.output).expanduser()
        return Path(self.cache).expanduser() if self.cache else out.with_name(out.name + ".annotate-cache.jsonl")

    def report_path(self) -> Path:
        out = Path(self.output).expanduser()
        return out.with_name(out.name + ".annotate-report.json")
