"""Training configuration: every option settable in YAML (``--config``) and on the command line."""

from __future__ import annotations

from dataclasses import dataclass

from amopo.config import field
from amopo.errors import ConfigError
from amopo.models import EMBEDDED_SMOLLM2

LOSSES = ("amopo", "simpo", "dpo", "modpo")
WEIGHTINGS = ("gaussian", "mean", "uniform")
PRECISIONS = ("auto", "no", "bf16", "fp16")
ATTENTIONS = ("sdpa", "eager", "flash_attention_2", "flex_attention")
REFERENCES = ("auto", "precomputed", "copy", "adapter")
DEFAULT_BETA = {"amopo": 0.8, "simpo": 0.8, "dpo": 0.1, "modpo": 0.1}


@dataclass
class TrainConfig:
    data: str = field("", help="prepared data folder written by `amopo prepare`")
    base_model: str = field(EMBEDDED_SMOLLM2, help="base model: a Hugging Face folder or hub id")
    output: str = field("runs/train", help="output folder: checkpoints/, model/, metrics")

    objective: str = field("amopo", help="training objective: amopo | simpo | dpo | modpo")
    beta: float | None = field(None, help="β; default 0.8 for amopo/simpo, 0.1 for dpo/modpo")
    gamma: float = field(2.0, help="γ, the absolute reward margin of amopo/simpo")
    weighting: str = field("gaussian", help="AMoPO's dimension weights: gaussian | mean | uniform")
    flatten_softmax: bool = field(False, help="parity: softmax the weights over batch×K (released code)")
    accumulate_prefixes: bool = field(False, help="parity: accumulate dimension prefixes (released code)")
    sft_weight: float = field(0.0, help="weight of an SFT term on the chosen responses")
    modpo_weight: float = field(0.5, help="MODPO weight w_k in (0, 1] of the optimised preference; the other "
                                          "objectives share 1 − w_k")
    modpo_objective: str = field("helpfulness", help="MODPO: the dimension whose preference the pairs express "
                                                     "(HelpSteer2 pairs are chosen by helpfulness); never a "
                                                     "margin source")
    modpo_margin: list[str] | None = field(None, help="MODPO: dimensions whose score gaps give the margin of a "
                                                      "pair without reward_score, each weighted (1 − w_k)/count "
                                                      "(default: every scored dimension but modpo_objective)")
    reference: str = field("auto", help="dpo/modpo reference: precomputed (the initial policy's log-probs, one "
                                        "pass before training, cached with the tokenised data) | copy (a frozen "
                                        "copy of the initial policy) | adapter (LoRA disabled) | auto (precomputed "
                                        "when sharded with FSDP, adapter with --lora, else copy)")

    max_length: int = field(1024, help="cutoff: prompt + response tokens per sequence")
    epochs: float = field(3.0, help="passes over the training data (ignored when max_steps > 0)")
    max_steps: int = field(0, help="optimizer steps; 0 means derive from epochs")
    learning_rate: float = field(3e-7, help="peak learning rate (AdamW)")
    batch_size: int = field(1, help="pairs per process per micro-step")
    gradient_accumulation_steps: int = field(1, help="micro-steps per optimizer step")
    warmup_ratio: float = field(0.1, help="fraction of steps of linear warm-up before the cosine decay")
    weight_decay: float = field(0.0, help="AdamW weight decay")
    max_grad_norm: float = field(3.0, help="gradient clipping norm (0 disables)")
    seed: int = field(42, help="seed for data order, Gaussian draws and initialisation")
    mixed_precision: str = field("auto", help="auto (bf16 where supported) | no | bf16 | fp16")
    gradient_checkpointing: bool = field(False, help="recompute activations in backward to save memory")
    packing: bool = field(True, help="compute each prompt once for its chosen and rejected responses: one "
                                     "row [prompt | chosen | rejected] with a block attention mask, rows "
                                     "packed with little padding (exact; needs sdpa or eager attention, "
                                     "else the padded layout is used)")
    chunked_logprobs: bool = field(True, help="log-probs and probability statistics from the final hidden "
                                              "states and the output head in chunks, on response positions "
                                              "only, never materialising full-vocabulary logits (exact)")
    lean_activations: bool = field(True, help="SwiGLU MLPs and RMSNorms of Llama-style models keep fewer "
                                              "activations for backward, recomputing cheap elementwise ones "
                                              "(exact; about a third less activation memory)")
    logprob_chunk_rows: int = field(0, help="positions per chunk of the chunked log-softmax "
                                            "(0: about 16M logits per chunk)")
    attention: str = field("sdpa", help="attention kernel: sdpa | eager | flash_attention_2 (GPU, needs the "
                                        "flash-attn package; no block masks, so packing falls back to padding) "
                                        "| flex_attention (CUDA: a fused kernel that takes packing's block "
                                        "mask; torch has no flex_attention backward on CPU)")
    fsdp_config: str = field("", help="shard with FSDP2: an accelerate config YAML with `distributed_type: FSDP` "
                                      "and an `fsdp_config` section, e.g. the shipped configs/accelerate/fsdp.yaml (a "
                                      "relative path not found here is read from the project folder); empty: "
                                      "no sharding (data-parallel across processes)")
    dist_timeout_s: int = field(1800, help="timeout in seconds of one collective operation (NCCL/gloo) "
                                           "before the process group fails")
    compile: bool = field(False, help="torch.compile each transformer block (slow first steps)")
    lora: bool = field(False, help="train LoRA adapters (peft) instead of all weights")
    lora_r: int = field(16, help="LoRA rank")
    lora_alpha: int = field(32, help="LoRA alpha")
    lora_dropout: float = field(0.0, help="LoRA dropout")
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"],
                                           help="LoRA target modules")
    merge_lora: bool = field(True, help="write the final model with LoRA merged into the weights")

    save_every: int = field(0, help="checkpoint every N optimizer steps (0: none)")
    keep_checkpoints: int = field(2, help="how many recent checkpoints to keep")
    resume: bool = field(False, help="continue from the newest checkpoint in OUTPUT/checkpoints")
    eval_heldout: bool = field(True, help="held-out preference accuracy before and after training")
    heldout_max_pairs: int = field(0, help="cap on held-out pairs evaluated (0: all)")
    heldout_batch_size: int = field(4, help="pairs per forward pass in held-out evaluation")

    mlflow_tracking_uri: str | None = field(None, help="MLflow URI; default $MLFLOW_TRACKING_URI, "
                                                       "else a sqlite store in runs/mlflow")
    mlflow_experiment: str = field("amopo", help="MLflow experiment name")
    run_name: str | None = field(None, help="MLflow run name")
    log_every: int = field(1, help="log metrics every N optimizer steps")
    progress: bool = field(True, help="show a progress bar")

    def validate(self) -> None:
        def bad(msg: str) -> ConfigError:
            return ConfigError(f"train config: {msg}")
        if self.objective not in LOSSES:
            raise bad(f"objective '{self.objective}' is not one of {', '.join(LOSSES)}")
        if self.weighting not in WEIGHTINGS:
            raise bad(f"weighting '{self.weighting}' is not one of {', '.join(WEIGHTINGS)}")
        if self.mixed_precision not in PRECISIONS:
            raise bad(f"mixed_precision '{self.mixed_precision}' is not one of {', '.join(PRECISIONS)}")
        if self.attention not in ATTENTIONS:
            raise bad(f"attention '{self.attention}' is not one of {', '.join(ATTENTIONS)}")
        if self.reference not in REFERENCES:
            raise bad(f"reference '{self.reference}' is not one of {', '.join(REFERENCES)}")
        if self.reference == "adapter" and not self.lora:
            raise bad("reference 'adapter' needs --lora")
        for name in ("batch_size", "gradient_accumulation_steps", "max_length", "heldout_batch_size", "log_every", "dist_timeout_s"):
            if getattr(self, name) < 1:
                raise bad(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.logprob_chunk_rows < 0:
            raise bad(f"logprob_chunk_rows must be >= 0, got {self.logprob_chunk_rows}")
        if self.max_steps < 0 or self.save_every < 0 or self.heldout_max_pairs < 0:
            raise bad("max_steps, save_every and heldout_max_pairs must be >= 0")
        if self.max_steps == 0 and self.epochs <= 0:
            raise bad("set max_steps > 0 or epochs > 0")
        if not 0 < self.modpo_weight <= 1:
            raise bad(f"modpo_weight must be in (0, 1], got {self.modpo_weight}")
        if self.modpo_margin is not None and not self.modpo_margin:
            raise bad("modpo_margin: no dimension given (leave it unset for every scored one but modpo_objective)")
        if self.modpo_margin is not None and self.modpo_objective in self.modpo_margin:
            raise bad(f"modpo_margin names '{self.modpo_objective}', the objective being optimised "
                      "(modpo_objective); MODPO's margin must come from the other objectives")
        if self.learning_rate <= 0:
            raise bad(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise bad(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")

    @property
    def effective_beta(self) -> float:
        return self.beta if self.beta is not None else DEFAULT_BETA[self.objective]

    @property
    def conditioned(self) -> bool:
        """AMoPO trains on the K dimension-conditioned prompts; the baselines on the plain prompt."""
        return self.objective == "amopo"
