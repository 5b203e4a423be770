"""The command line (`batchd ...`): a Typer app of thin commands over library calls.

Owns: argument parsing, help texts, exit codes, tables, the progress display and the plan
view. Split by group: `submit`, `dry_run` (plan), `runs` (status, results, report, cancel),
`triggers` (watch, jobs); `common` and `driving` are what the commands share.
May import: every other subpackage. Nothing imports `batchd.cli`.
"""

from batchd.cli.app import app, main

__all__ = ["app", "main"]
