"""Vendor batch turnaround as data: the probes' prior, then measurements, settings override."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchd.config.pricing import load_price_book
from batchd.config.settings import Settings, load_settings
from batchd.outcome import SUCCEEDED, Outcome
from batchd.planning.estimates import UNMEETABLE, Planner, TargetSet
from batchd.planning.observations import Observations, Observer
from batchd.planning.turnaround import MIN_MEASURED, PRIOR_S, measured_s, prior_s, turnaround_s
from batchd.state.base import Chunk
from batchd.state.sqlite_store import SqliteStore
from tests.support.helpers import Batchd, chat, write_jsonl

NOW = 1_795_003_200.0


def _settings(tmp: Path, **env: str) -> Settings:
    empty = tmp / "empty.toml"
    empty.write_text("")
    return load_settings(environ=env, config_path=empty)


def _ended_chunk(i: int, took_s: float, model: str = "gpt-5.4-nano") -> Chunk:
    return Chunk(
        chunk_id=f"r-c{i}",
        run_id="r",
        backend="openai",
        model=model,
        path="p",
        n_requests=2,
        n_bytes=200,
        vendor_status="completed",
        submitted_at=NOW,
        ended_at=NOW + took_s,
    )


def _observe(store: SqliteStore, chunks: list[Chunk]) -> None:
    observer = Observer("")
    for c in chunks:
        observer.add(c, Outcome(status=SUCCEEDED, input_tokens=10, output_tokens=5))
    store.add_observations(observer.sums())


def test_prior_percentiles_follow_the_probes() -> None:
    p50, p90, p99 = PRIOR_S["openai"]
    assert prior_s("openai", 90) == p90 == pytest.approx(34 * 60 + 52)
    assert prior_s("openai", 50) == p50 and prior_s("openai", 99.9) == p99
    assert p50 < prior_s("openai", 70) < p90  # linear between the probe points
    assert prior_s("acme", 90) is None


def test_prior_until_three_batches_measured_then_the_measurements(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    store = SqliteStore(tmp_path / "state.db")
    took, source = turnaround_s(s, store.observations(), "openai", "gpt-5.4-nano")
    assert (took, source) == (PRIOR_S["openai"][1], "prior")
    _observe(store, [_ended_chunk(1, 40.0), _ended_chunk(2, 50.0)])
    assert turnaround_s(s, store.observations(), "openai", "gpt-5.4-nano")[1] == "prior"
    _observe(store, [_ended_chunk(3, 60.0)])
    took, source = turnaround_s(s, store.observations(), "openai", "gpt-5.4-nano")
    assert source == f"measured ({MIN_MEASURED} batches)"
    assert 60.0 <= took <= 60.0 * 1.26  # the p90 bucket's upper edge
    # Another model of the same vendor still plans with the prior.
    assert turnaround_s(s, store.observations(), "openai", "gpt-5.4-mini")[1] == "prior"
    # Lines and tokens per batch are recorded with each turnaround.
    obs = store.observations()
    assert obs["turnlines|openai|gpt-5.4-nano"] == (6.0, 3.0)
    assert obs["turntok|openai|gpt-5.4-nano"] == (45.0, 3.0)
    store.close()


def test_percentile_of_the_measurements(tmp_path: Path) -> None:
    observer = Observer("")
    chunks = [_ended_chunk(i, 30.0) for i in range(9)] + [_ended_chunk(9, 5000.0)]
    for c in chunks:
        observer.add(c, Outcome(status=SUCCEEDED, input_tokens=1, output_tokens=1))
    sums = observer.sums()
    p90, n = measured_s(sums, "openai", "gpt-5.4-nano", 90)
    p99, _ = measured_s(sums, "openai", "gpt-5.4-nano", 99)
    assert n == 10
    assert 30.0 <= p90 < 40.0  # 9 of 10 batches took 30 s
    assert 5000.0 <= p99 < 6300.0  # the tail


def test_cancelled_and_guarded_batches_are_not_timed() -> None:
    observer = Observer("")
    cut = _ended_chunk(1, 5.0)
    cut.cancel_reason = "guard"
    cancelled = _ended_chunk(2, 5.0)
    cancelled.vendor_status = "cancelled"
    for c in (cut, cancelled):
        observer.add(c, Outcome(status=SUCCEEDED, input_tokens=1, output_tokens=1))
    assert not [k for k in observer.sums() if k.startswith("turn|")]


def test_settings_override_and_vendor_window_without_prior(tmp_path: Path) -> None:
    s = _settings(tmp_path, BATCHD_PLANNER_TURNAROUND_S="5")
    assert turnaround_s(s, {}, "openai", "gpt-5.4-nano") == (5.0, "settings")
    s = _settings(tmp_path, BATCHD_PLANNER_VENDOR_WINDOW_H="3")
    assert turnaround_s(s, {}, "acme", "acme-llm") == (3 * 3600.0, "vendor_window_h")
    s = _settings(tmp_path, BATCHD_PLANNER_TURNAROUND_PERCENTILE="50")
    assert turnaround_s(s, {}, "anthropic", "claude-haiku-4-5") == (120.0, "prior")


def test_planner_uses_the_turnaround_per_target(tmp_path: Path) -> None:
    s = _settings(tmp_path, BATCHD_FALLBACK="none")
    ts = TargetSet("x", [("openai", "gpt-5.4-nano")], "gpt-5.4-nano")
    ts.add([100], 16, NOW + 20 * 60, b"k" * 16, -1)  # due in 20 min: OpenAI p90 is 35 min
    ts.add([100], 16, NOW + 12 * 3600, b"j" * 16, -1)  # due in 12 h
    claude = TargetSet("y", [("anthropic", "claude-haiku-4-5")], "claude-haiku-4-5")
    claude.add([100], 16, NOW + 20 * 60, b"c" * 16, -1)  # Anthropic p90 is under 5 min
    Planner(s, load_price_book(s), Observations(), NOW).decide([ts, claude])
    assert ts.choice.tolist() == [UNMEETABLE, 0]
    assert claude.choice.tolist() == [0]


def test_submit_within_12h_runs_the_vendor_lines(batchd: Batchd) -> None:
    """The first example of `batchd submit --help` failed every vendor line before."""
    src = write_jsonl(batchd.tmp / "j.jsonl", [chat(f"w{i}", f"word {i}") for i in range(3)])
    proc = batchd.submit(src, "--within", "12h")
    assert proc.returncode == 0, proc.stderr
    rows = batchd.results()
    assert [r["status"] for r in rows] == ["succeeded"] * 3
    store = SqliteStore(batchd.home / "state.db")
    turn = {k: v for k, v in store.observations().items() if k.startswith("turn|openai|")}
    store.close()
    assert sum(den for _, den in turn.values()) == 1  # one batch, timed
