"""AMoPO objectives: response log-prob statistics, adaptive weights, and preference losses."""

from amopo.objectives.logprobs import SeqStats, average_logprob, response_token_stats
from amopo.objectives.losses import (amopo_loss, dpo_loss, implicit_rewards, modpo_loss, sft_loss,
                                     simpo_loss)
from amopo.objectives.weights import (WEIGHT_METHODS, adaptive_weights, example_noise,
                                      gaussian_weights, mean_weights, uniform_weights)

__all__ = [
    "SeqStats", "response_token_stats", "average_logprob",
    "simpo_loss", "amopo_loss", "dpo_loss", "modpo_loss", "sft_loss", "implicit_rewards",
    "WEIGHT_METHODS", "adaptive_weights", "example_noise", "gaussian_weights", "mean_weights",
    "uniform_weights",
]
