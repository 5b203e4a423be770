"""The one domain exception type: the CLI turns it into one red line and exit 1."""

from __future__ import annotations


class BatchdError(Exception):
    """An error the user can act on: `message` says what went wrong, `hint` what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()
