"""Helpers for tests that run real servers as subprocesses on 127.0.0.1."""
