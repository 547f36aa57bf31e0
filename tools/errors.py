"""One clear line for user errors: the subcommands' shared error handling."""

from __future__ import annotations

import sys


class UserError(Exception):
    """An error the user can fix: printed as one line, exit status ``code``."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 2) -> int:
    print(f"avparse: error: {message}", file=sys.stderr)
    return code
