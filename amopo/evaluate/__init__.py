"""Evaluation: held-out preference accuracy (more to come: lm-eval, pairwise judges, plots)."""
