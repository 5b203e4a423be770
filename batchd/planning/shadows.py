"""The quality guard in the plan: gated targets, probe lines and shadow samples.

Before the planner decides, `block` closes each alias's gated targets (and its reserve
reference column, unless gated targets leave it the lines) and sends probe lines to the
reference. After it decides, `extras` names for each request the extra lines to write: a
shadow sample (the reference's answer under the request key + SHADOW_TAG) or a probe (a
gated target's answer under key + PROBE_TAG). `Pair` records what finalize compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from batchd.planning.estimates import TargetSet
from batchd.planning.gate import (
    PROBE_TAG,
    SHADOW_TAG,
    Sums,
    is_gated,
    measured,
    pick,
    scores,
    wilson,
)
from batchd.planning.routing import Choice, Router
from batchd.requests import KEY_BYTES

PAIRS_PATH = "chunks/quality-pairs.msgpack"  # what finalize compares; removed with the chunks
_ID_PREFIX = b'{"custom_id":"'


class Pair(msgspec.Struct, array_like=True, gc=False):
    key: bytes  # the line's request key; the extra answer is under key + tag
    tag: bytes  # SHADOW_TAG: key holds the routed answer; PROBE_TAG: key holds the reference's
    alias: str
    target: str  # backend:model compared with the reference
    reference: str


class PairsFile(msgspec.Struct, kw_only=True):
    gated: dict[str, list[str]]  # alias -> targets gated when this run was planned
    pairs: list[Pair]


@dataclass
class _Guarded:
    choice: Choice
    gated: list[int]
    probe: npt.NDArray[np.bool_]
    score: npt.NDArray[np.float64]
    extras: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)


def target_name(target: tuple[str, str]) -> str:
    return f"{target[0]}:{target[1]}"


class Guard:
    """The quality guard of one plan (every guarded alias in it)."""

    def __init__(self, sums: Sums) -> None:
        self._sums = sums
        self._sets: dict[str, _Guarded] = {}
        self.pairs: list[Pair] = []

    def gated(self) -> dict[str, list[str]]:
        return {name: [_name(g, j) for j in g.gated] for name, g in self._sets.items() if g.gated}

    def measured(self, alias: str, target: str, metric: str) -> tuple[int, int]:
        return measured(self._sums, alias, target, metric)

    def before(self, sets: list[TargetSet], router: Router) -> None:
        for ts in sets:
            choice = router.route(ts.name)
            if isinstance(choice, Choice) and choice.quality is not None:
                self.block(ts, choice)

    def after(self, sets: list[TargetSet]) -> None:
        for ts in sets:
            self.plan_extras(ts)

    def block(self, ts: TargetSet, choice: Choice) -> None:
        """Close gated targets and the reserve reference (rows: ts.blocked) before decide."""
        q = choice.quality
        if q is None or not len(ts):
            return
        n, t = len(ts), len(ts.targets)
        supported = np.frombuffer(ts.line_bytes, dtype=np.int64).reshape(n, t) > 0
        gated = [
            j
            for j, target in enumerate(ts.targets)
            if j != choice.ref_col
            and is_gated(
                *measured(self._sums, ts.name, target_name(target), q.metric), q.min_agreement
            )
        ]
        score = scores(bytes(ts.keys), KEY_BYTES)
        blocked = np.zeros((n, t), dtype=bool)
        blocked[:, gated] = True
        probe = np.zeros(n, dtype=bool)
        if gated:  # a shadow_fraction share (at least shadow_min) served by the reference
            probe = pick(score, q.shadow_fraction, q.shadow_min) & supported[:, choice.ref_col]
            blocked[probe] = True
            blocked[probe, choice.ref_col] = False
        if choice.reserve:
            others = [j for j in range(t) if j != choice.ref_col and j not in gated]
            has_other = supported[:, others].any(axis=1) if others else np.zeros(n, bool)
            blocked[has_other & ~probe, choice.ref_col] = True
        ts.blocked = blocked
        self._sets[ts.name] = _Guarded(choice, gated, probe, score)

    def plan_extras(self, ts: TargetSet) -> None:
        """After decide: the shadow and probe lines of each request, and their pairs."""
        g = self._sets.get(ts.name)
        if g is None:
            return
        q, ref = g.choice.quality, g.choice.ref_col
        assert q is not None
        n, t = len(ts), len(ts.targets)
        supported = np.frombuffer(ts.line_bytes, dtype=np.int64).reshape(n, t) > 0
        ref_name = target_name(ts.targets[ref])
        for i in np.flatnonzero(g.probe & (ts.choice == ref)).tolist():
            for j in g.gated:
                if supported[i, j]:
                    self._add(g, ts, i, j, PROBE_TAG, target_name(ts.targets[j]), ref_name)
        for j in range(t):
            rows = np.flatnonzero((ts.choice == j) & ~g.probe & supported[:, ref])
            if j == ref or not rows.size:
                continue
            chosen = rows[pick(g.score[rows], q.shadow_fraction, q.shadow_min)]
            for i in chosen.tolist():
                self._add(g, ts, i, ref, SHADOW_TAG, target_name(ts.targets[j]), ref_name)

    def _add(
        self, g: _Guarded, ts: TargetSet, i: int, col: int, tag: bytes, target: str, ref: str
    ) -> None:
        key = bytes(ts.keys[i * KEY_BYTES : (i + 1) * KEY_BYTES])
        g.extras.setdefault(i, []).append((col, tag))
        self.pairs.append(Pair(key, tag, ts.name, target, ref))

    def extras(self, name: str, i: int) -> list[tuple[int, bytes]]:
        """(target column, tag) of each extra line of request `i` of target set `name`."""
        g = self._sets.get(name)
        return g.extras.get(i, []) if g is not None and g.extras else []

    def counts(self) -> dict[str, dict[str, int]]:
        """alias -> target -> guard lines (shadows and probes) this plan sends."""
        out: dict[str, dict[str, int]] = {}
        for p in self.pairs:
            per = out.setdefault(p.alias, {})
            per[p.target] = per.get(p.target, 0) + 1
        return out

    def view(self, router: Router, aliases: list[str]) -> list[dict[str, Any]]:
        """Each guarded alias's targets: measured agreement, gate state, this plan's lines."""
        counts = self.counts()
        out = []
        for alias in aliases:
            choice = router.route(alias)
            if not isinstance(choice, Choice) or choice.quality is None:
                continue
            q = choice.quality
            targets = []
            for j, r in enumerate(choice.targets):
                name = f"{r.backend}:{r.model}"
                agreed, n = self.measured(alias, name, q.metric)
                lo, hi = wilson(agreed, n)
                is_ref = j == choice.ref_col
                targets.append(
                    {
                        "target": name,
                        "reference": is_ref,
                        "samples": n,
                        "agreed": agreed,
                        "agreement": agreed / n if n else None,
                        "ci_low": lo,
                        "ci_high": hi,
                        "gated": not is_ref and is_gated(agreed, n, q.min_agreement),
                        "guard_lines": counts.get(alias, {}).get(name, 0),
                    }
                )
            out.append(
                {
                    "alias": alias,
                    "metric": q.metric,
                    "min_agreement": q.min_agreement,
                    "shadow_fraction": q.shadow_fraction,
                    "targets": targets,
                }
            )
        return out

    def encoded(self) -> bytes:
        return msgspec.msgpack.encode(PairsFile(gated=self.gated(), pairs=self.pairs))


def _name(g: _Guarded, j: int) -> str:
    return f"{g.choice.targets[j].backend}:{g.choice.targets[j].model}"


def read_pairs(data: bytes) -> PairsFile:
    return msgspec.msgpack.decode(data, type=PairsFile)


def retag(line: bytes, key: bytes, tag: bytes) -> bytes:
    """A chunk line sent under the id of key + tag (never cached: the id starts with x)."""
    if not line.startswith(_ID_PREFIX):
        raise ValueError("chunk line does not start with its custom_id")
    end = line.index(b'"', len(_ID_PREFIX))
    old = line[len(_ID_PREFIX) : end]
    if old.removeprefix(b"x") != key.hex().encode():
        raise ValueError("chunk line's custom_id is not its request key")
    return _ID_PREFIX + b"x" + tag + key.hex().encode() + line[end:]
