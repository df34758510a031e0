"""User-facing errors: each names the file, the key and what would be valid.

The CLI turns them into a message and exit code 2, never a traceback.
"""
from __future__ import annotations

import difflib


class ConfigError(Exception):
    """One problem in a suite file (or a --set override), located as precisely as we can."""

    def __init__(self, file: str, key: str, message: str, line: int | None = None):
        super().__init__(message)
        self.file, self.key, self.message, self.line = file, key, message, line

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class SuiteErrors(Exception):
    """All problems found in one suite, so a user fixes them in one pass."""

    def __init__(self, errors: list[ConfigError]):
        super().__init__("\n".join(map(str, errors)))
        self.errors = errors


class UserError(Exception):
    """Bad input outside a suite file (missing results folder, data, weights): exit 2."""


def short(value: object, most: int = 60) -> str:
    """A value as a message quotes it: its repr, cut to `most` characters with the full length said."""
    text = repr(value)
    size = len(value) if isinstance(value, str) else len(text)
    return text if len(text) <= most else f"{text[:most]}… ({size:,} characters)"


def unknown(kind: str, name: object, valid) -> str:
    """'unknown mode 'frozn' (did you mean 'frozen'?); valid: frozen, scratch, unfrozen'."""
    valid = sorted(valid)
    close = difflib.get_close_matches(str(name)[:200], valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown {kind} {short(str(name))}{hint}; valid: {', '.join(valid)}"
