"""The judge metric's batch work: once every chunk of a run is collected, the pairs of
aliases whose quality metric is `judge` get one judge request each (quality/judging.py),
written as chunks of the run: dispatched, collected, resumed and run by the coordinators
like the others, at the batch price. Their answers are the guard's (finalize scores them,
`quality.measure`), never a row's. The chunks are added once: their ids are fixed, and a run
that has them never adds them again.
"""

from __future__ import annotations

import logging

from batchd.errors import BatchdError
from batchd.intake.decode import key_of
from batchd.planning.gate import PROBE_TAG
from batchd.planning.routing import Route, RouteError
from batchd.planning.shadows import PAIRS_PATH, Pair, read_pairs
from batchd.quality.judging import judge_request, request_text
from batchd.run.answer_index import succeeded_texts
from batchd.run.services import Services
from batchd.state.base import Chunk, Run
from batchd.storage.chunk_outcomes import chunk_lines

log = logging.getLogger("batchd.judge")


def judge_chunk_id(run_id: str, n: int) -> str:
    return f"{run_id}-judge{n}"


def add_judge_work(svc: Services, run: Run, chunks: list[Chunk]) -> bool:
    """Add the run's judge chunks (True), or False when it needs none or has them."""
    blobs = svc.blobs(run.run_id)
    if any(c.chunk_id.startswith(f"{run.run_id}-judge") for c in chunks):
        return False
    if run.cancel_requested or not blobs.exists(PAIRS_PATH):
        return False
    pairs = [p for p in read_pairs(blobs.read_bytes(PAIRS_PATH)).pairs if _judge_of(svc, p)]
    if not pairs:
        return False
    sides = {k for p in pairs for k in (p.key, p.key + p.tag)}
    answers = succeeded_texts(svc, run, chunks, sides)
    requests = _requests(svc, run, chunks, sides)
    by_model: dict[tuple[str, str], list[bytes]] = {}
    for p in pairs:
        routed_key, ref_key = (
            (p.key + p.tag, p.key) if p.tag == PROBE_TAG else (p.key, p.key + p.tag)
        )
        routed, ref = answers.get(routed_key), answers.get(ref_key)
        asked = requests.get(p.key) or requests.get(p.key + p.tag)
        if routed is None or ref is None or asked is None:
            continue  # a side failed: unscored at finalize
        q = svc.settings.models[p.alias].quality
        assert q is not None
        route = svc.router.route(q.judge)
        if not isinstance(route, Route):
            log.warning(
                "quality guard: judge %r of %r is not one model; unscored", q.judge, p.alias
            )
            continue
        r = judge_request(q, route.model, p.key, asked, ref, routed)
        line = svc.router.backend(route.backend).encode_line(r.custom_id, r) + b"\n"
        by_model.setdefault((route.backend, route.model), []).append(line)
    new = []
    for n, ((backend, model), lines) in enumerate(sorted(by_model.items()), 1):
        chunk_id = judge_chunk_id(run.run_id, n)
        path = f"chunks/{chunk_id}.jsonl"
        with blobs.writer(path) as out:
            for line in lines:
                out.write(line)
        new.append(
            Chunk(
                chunk_id=chunk_id,
                run_id=run.run_id,
                backend=backend,
                model=model,
                path=path,
                n_requests=len(lines),
                n_bytes=sum(map(len, lines)),
                deadline_at=run.deadline_at,
            )
        )
    if not new:
        return False
    svc.store.add_chunks(new)
    log.info("run %s: %d judge requests added", run.run_id, sum(c.n_requests for c in new))
    return True


def judge_backends(svc: Services, run: Run) -> set[str]:
    """The backends this run's judge requests will need (checked before anything is sent)."""
    if not svc.blobs(run.run_id).exists(PAIRS_PATH):
        return set()
    needed = set()
    for name, alias in svc.settings.models.items():
        q = alias.quality
        if q is None or q.metric != "judge":
            continue
        route = svc.router.route(q.judge)
        if not isinstance(route, Route):
            why = route.message if isinstance(route, RouteError) else "it is an alias"
            raise BatchdError(
                f"models.{name}.quality.judge = {q.judge!r} cannot be sent to: {why}.",
                "Name one model batchd can send to as the judge, then resume; nothing was sent.",
            )
        needed.add(route.backend)
    return needed


def _judge_of(svc: Services, p: Pair) -> bool:
    alias = svc.settings.models.get(p.alias)
    return alias is not None and alias.quality is not None and alias.quality.metric == "judge"


def _requests(svc: Services, run: Run, chunks: list[Chunk], keys: set[bytes]) -> dict[bytes, str]:
    """The request of each of `keys`, from the chunk files (kept until finalize)."""
    blobs = svc.blobs(run.run_id)
    found: dict[bytes, str] = {}
    for c in chunks:
        if c.attempt == 0 or not blobs.exists(c.path):
            continue  # the planner's failed rows: no lines
        with blobs.open(c.path) as src:
            for vid, line in chunk_lines(src):
                k = key_of(vid)
                if k in keys and k not in found:
                    found[k] = request_text(line)
    return found
