"""What fires once a run is finalized, keyed by the run option that asks for it.

Higher layers register their follow-up here (the drop folder: `batchd.triggers` registers
"drop", which moves the dropped file to done/ with its report), so the pipeline never
imports them. A run that asks for a follow-up nobody registered is an error, not a skip:
its finalize fails loudly and is retried, rather than leaving a file in processing/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from batchd.errors import BatchdError
from batchd.state.base import Run

if TYPE_CHECKING:
    from batchd.run.services import Services

FollowUp = Callable[["Services", Run], None]

_registered: dict[str, FollowUp] = {}

# The run options that ask for a follow-up, and the package that provides it.
PROVIDERS = {"drop": "batchd.triggers"}


def register(option: str, follow_up: FollowUp) -> None:
    _registered[option] = follow_up


def fire(svc: Services, run: Run) -> None:
    """Run the follow-up of every option of `run` that asks for one."""
    for option, provider in PROVIDERS.items():
        if not run.options.get(option):
            continue
        follow_up = _registered.get(option)
        if follow_up is None:
            raise BatchdError(
                f"Run {run.run_id} needs the {option!r} follow-up, which is not loaded.",
                f"Import {provider} in this process (the CLI and the coordinators do).",
            )
        follow_up(svc, run)
