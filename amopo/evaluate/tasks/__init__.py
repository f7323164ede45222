"""lm-eval YAML tasks shipped with the project, over JSONL written by the project.

``amopo_arithmetic`` (generation, verifiable integer answers) and ``amopo_facts_mc`` (multiple
choice, 4 options). Point lm-eval at this folder with ``include_path`` (``lm_eval --include_path``).
"""
