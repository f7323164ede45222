"""Evaluation of a model folder or a served model (`amopo evaluate`).

    evaluate.py          EvaluateConfig and evaluate(): the step, its outputs and MLflow logging
    generate.py          instruction sets; greedy answers from a local model, an endpoint, or a file
    endpoint.py          OpenAI-compatible chat client: URL forms, API key from env, retries, errors
    judges.py            LocalJudge (label-token log-probabilities) and EndpointJudge (reply text)
    judge_prompts.py     versioned judge prompt files (prompts/*_v1.yaml) and rubrics
    verdicts.py          reading verdicts and ratings out of reply text; garbage → None
    pairwise.py          judging every pair in both orders; position bias
    winrate.py           raw win rate, its standard error, discrete win rate
    lc_winrate.py        the length-controlled win rate (AlpacaEval 2's GLM)
    dimension_scores.py  per-dimension 1–5 ratings, means and model − baseline deltas
    heldout.py           held-out preference accuracy on a prepared folder (wraps preference.py)
    preference.py        held-out preference accuracy of a model on tokenized rows (also used in training)
    steerability.py      judged steerability: answers at requested low/middle/high levels, rated blind
    steer_accuracy.py    held-out steering accuracy: does the preference follow the requested level?
    steer_stats.py       slope, Spearman, their standard errors; binomial rate
    lm_eval_tasks.py     the lm-eval harness on shipped YAML tasks (tasks/) or registry tasks
    plots.py             dimension radar, win-rate bars, training curves, steerability
    report.py            metrics.json, the per-sample table, MLflow logging
    training_run.py      what the files beside a trained model folder say about its run
"""
