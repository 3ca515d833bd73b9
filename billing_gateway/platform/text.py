"""Caller text that PostgreSQL can store: no NUL character, valid Unicode.

JSON may carry "\\u0000" and lone surrogates ("\\ud800"); PostgreSQL text refuses the first
and UTF-8 cannot encode the second, so either would fail at the database as a 500.
Found by schemathesis (tests/system/test_fuzz_openapi.py).
"""

from __future__ import annotations


def storage_problem(value: str) -> str | None:
    """Say why `value` cannot be stored, or None when it can."""
    if "\x00" in value:
        return "Must not contain the NUL character."
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "Must be valid Unicode (no lone surrogates)."
    return None
