"""Errors that carry enough context for a user to fix their input."""

from __future__ import annotations


class AmopoError(Exception):
    """Base class: the CLI prints these as one clear line and exits with status 2."""


class ConfigError(AmopoError):
    """A config file or flag is wrong."""


class DataError(AmopoError):
    """A data record is wrong. ``str()`` names the file, the line and the field."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None, reason: str | None = None):
        self.file, self.line, self.field = file, line, field
        self.reason = reason or message
        where = ":".join(str(p) for p in (file, line) if p is not None)
        if field:
            where = f"{where} field '{field}'" if where else f"field '{field}'"
        super().__init__(f"{where}: {message}" if where else message)


class ModelError(AmopoError):
    """A model name or path cannot be resolved or loaded."""


class SteeringError(AmopoError):
    """Requested dimension targets that the model's conditioning cannot express (HTTP 400)."""
