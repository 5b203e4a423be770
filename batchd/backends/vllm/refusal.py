"""Refused: a request this model cannot run, with the reason a row (or line) carries."""

from __future__ import annotations


class Refused(Exception):
    """The request cannot run on this model; the message says why."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
