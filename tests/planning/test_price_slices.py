"""One-vendor-target sets are priced in slices as they fill (Planner.fold_part): the plan,
its estimates and its failed rows are those of pricing everything at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from batchd.config.settings import load_settings
from batchd.planning.chunking import Chunker
from batchd.run.services import Services, open_services

NOW = 1_900_000_000.0
MODELS = ("gpt-4o-mini", "gpt-5.4-nano")


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    s = open_services(load_settings(environ={"BATCHD_HOME": str(tmp_path / "home")}))
    yield s
    s.close()


def plan(svc: Services, out: Path, price_slice: int | None) -> tuple[Chunker, dict[str, bytes]]:
    out.mkdir()

    def open_file(rel: str) -> BinaryIO:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("wb")

    chunker = Chunker(
        "r1",
        svc.settings,
        svc.prices,
        svc.backends,
        open_file,
        run_deadline_at=NOW + 72 * 3600,
        router=svc.router,
        now=NOW,
    )
    if price_slice is not None:
        chunker.planner.price_slice = price_slice
    for i in range(40):
        model = MODELS[i % 2]
        # every fifth is due in 10 s: no target can finish it (a failed row at finish)
        deadline = NOW + 10 if i % 5 == 0 else NOW + 3600 * (1 + i % 7) * 24
        line = b'{"custom_id":"%d","body":{"x":"%s"}}\n' % (i, b"y" * (i * 13 % 97))
        key = i.to_bytes(16, "little")
        chunker.add("openai", model, line, 10 + i * 7, deadline, key)
    chunker.finish()
    files = sorted(p for p in out.rglob("*") if p.is_file())
    return chunker, {str(p.relative_to(out)): p.read_bytes() for p in files}


def numbers(c: Chunker) -> dict[str, Any]:
    return {
        "estimates": {k: v for k, v in sorted(c.estimates.items())},
        "summary": c.summary,
        "chunks": [(x.backend, x.model, x.n_requests, x.n_bytes, x.state) for x in c.chunks],
    }


def test_slices_price_as_one(svc: Services, tmp_path: Path) -> None:
    whole, whole_files = plan(svc, tmp_path / "whole", None)
    sliced, sliced_files = plan(svc, tmp_path / "sliced", 3)
    assert sliced_files == whole_files  # chunk files and the failed rows' part, byte for byte
    assert any(k.endswith(".parts") for k in whole_files)  # the unmeetable ones are there
    a, b = numbers(whole), numbers(sliced)
    assert b["chunks"] == a["chunks"]
    assert b["summary"].unmeetable == a["summary"].unmeetable == {MODELS[0]: 4, MODELS[1]: 4}
    assert list(b["estimates"]) == list(a["estimates"])
    for target, est in a["estimates"].items():
        got = b["estimates"][target]
        assert got.requests == est.requests == 16
        assert (got.input_tokens, got.output_tokens) == (est.input_tokens, est.output_tokens)
        assert got.cost_usd == pytest.approx(est.cost_usd, rel=1e-12)
        assert got.guard_worst_usd == pytest.approx(est.guard_worst_usd, rel=1e-12)
        assert got.baseline_usd == pytest.approx(est.baseline_usd, rel=1e-12)
    assert b["summary"].all_vendor_usd == pytest.approx(a["summary"].all_vendor_usd, rel=1e-12)
    # the sliced sets kept one slice at most of their per-request arrays
    for _, ts in sliced._sets.values():
        assert ts.base > 0 and len(ts) < 3
