"""User-facing errors.

Every error a user can cause by their input is an :class:`LlmfbnError`: the command line
prints its message (no traceback) and exits non-zero. Messages say what was expected,
what was found and what to do.
"""

from __future__ import annotations


class LlmfbnError(Exception):
    """An error in the user's input or environment, with a message meant for them."""

    def __init__(self, message: str, *, expected: str | None = None,
                 found: str | None = None, todo: str | None = None):
        parts = [message.rstrip(".") + "."]
        if expected:
            parts.append(f"Expected: {expected}.")
        if found:
            parts.append(f"Found: {found}.")
        if todo:
            parts.append(f"What to do: {todo}.")
        super().__init__("\n  ".join(parts))
