"""Objectives trained and evaluated side by side, compared on equal terms (`amopo compare`).

    compare.py        CompareConfig and compare(): the step, its outputs
    entries.py        LABEL=TRAIN_DIR,EVAL_DIR entries: reading and checking the folders; pairing
                      evaluation folders with training folders
    table.py          the metrics compared and each objective's values and standard errors
    training_stats.py tokens/s, wall time and peak memory from a training run's history
    ranking.py        the leader on a metric, the within-noise rule, best_objective()
    head_to_head.py   win rates between objectives, judged in both orders
    plots.py          grouped bars with standard errors, one judge-score radar per objective
    report.py         comparison.md and comparison.html
"""

from amopo.compare.ranking import Best, best_objective

__all__ = ["Best", "best_objective"]
