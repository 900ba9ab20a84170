"""The one base for bad-input errors, and the one way to print them.

Scope: ``UserError`` (every module's error type subclasses it: bad prompts, settings, checkpoints,
traces, data files) and ``one_line`` (the first line of an exception's message, or its type name
when it has none). The CLI and the app catch ``UserError`` only and show ``one_line(e)``; anything
else is a bug and keeps its traceback. Not here: the error types themselves, which live beside the
code that raises them.
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad input: reported in one line, never as a traceback; nothing has been changed."""


def one_line(e: BaseException) -> str:
    """The first non-empty line of ``str(e)``, or the exception's type name."""
    for line in str(e).strip().splitlines():
        if line.strip():
            return line.strip()
    return type(e).__name__
