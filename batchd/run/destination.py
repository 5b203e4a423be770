"""Where a run's outputs go, and the rule that no run replaces another run's outputs.

At start, a run id whose folder `<output>/<run_id>/` already holds outputs (a run this
state store no longer knows, e.g. state.db was deleted) is skipped for the next free one.
At finalize, the folder is claimed with the run's manifest (output.manifest); if another
run's outputs appeared there meanwhile, this run writes to `<run_id>.2/` (`.3/`, ...)
instead and says so.
"""

from __future__ import annotations

import logging

from batchd.output.manifest import (
    FREE,
    OWN,
    Manifest,
    occupied,
    ownership,
    started,
    write_manifest,
)
from batchd.run.services import Services
from batchd.state.base import Run
from batchd.storage.blobs import LocalBlobs, S3Blobs

log = logging.getLogger("batchd.destination")

MAX_SUFFIX = 1000


def output_taken(svc: Services, output: str, run_id: str) -> bool:
    """Does <output>/<run_id>/ already hold some run's outputs?"""
    return occupied(svc.output(output, run_id))


def claim(svc: Services, run: Run) -> tuple[Run, LocalBlobs | S3Blobs, Manifest]:
    """The run's output folder, claimed with a started manifest; never another run's."""
    name = run.output_name()
    for n in range(1, MAX_SUFFIX):
        candidate = name if n == 1 else f"{run.run_id}.{n}"
        out = svc.output(run.output, candidate)
        owner = ownership(out, run)
        if owner in (FREE, OWN):
            break
        log.warning(
            "run %s: %s already holds another run's outputs; not replacing them",
            run.run_id,
            out.uri(""),
        )
    else:  # pragma: no cover - a thousand foreign folders of one run id
        raise RuntimeError(f"no free output folder for run {run.run_id}")
    if candidate != name:
        log.warning("run %s: writing its outputs to %s instead", run.run_id, out.uri(""))
        run = svc.store.update_run(run.run_id, output_id=candidate)
    manifest = started(run)
    if owner == FREE:
        write_manifest(out, manifest)
    return run, out, manifest
