"""Preference data: readers, validation, pair building, dimension prompts, tokenisation."""
