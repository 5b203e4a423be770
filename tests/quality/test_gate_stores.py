"""The gate carried across runs in both stores: a run's measured agreement goes into the
observations store (SQLite embedded, a real redis-server distributed), and a later plan,
in a fresh process's services, stops routing the alias to the gated target: its lines go
to the next target, probe lines to the reference (each also to the gated target)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchd.config.settings import Settings, load_settings
from batchd.outcome import SUCCEEDED, Outcome
from batchd.planning.gate import PROBE_TAG, SHADOW_TAG
from batchd.planning.shadows import Pair, PairsFile
from batchd.quality.measure import measure
from batchd.run.pipeline import plan_file
from batchd.run.services import Services, open_services
from tests.support.helpers import chat, write_jsonl

TOML = """
[models.cheap]
targets = ["openai:gpt-5.4-nano", "anthropic:claude-haiku-4-5"]
reference = "gpt-5.4-mini"

[models.cheap.quality]
shadow_fraction = 0.1
shadow_min = 2
metric = "normalized"
min_agreement = 0.8
"""
NANO, HAIKU, MINI = "openai:gpt-5.4-nano", "anthropic:claude-haiku-4-5", "openai:gpt-5.4-mini"


def _services(tmp: Path, redis_url: str) -> Services:
    (tmp / "batchd.toml").write_text(TOML)
    cli = {"home": str(tmp / "home"), "redis_url": redis_url or None}
    return open_services(load_settings(cli, environ={}, config_path=tmp / "batchd.toml"))


def _measured_run(svc: Services, agree: int, disagree: int) -> None:
    """What finalize does with one run's pairs: score them, add the sums to the store."""
    pairs, outcomes = [], {}
    for i in range(agree + disagree):
        key = i.to_bytes(16, "big")
        pairs.append(Pair(key, SHADOW_TAG, "cheap", NANO, MINI))
        outcomes[key] = Outcome(status=SUCCEEDED, output_text=f"Answer {i}.")
        reference = f"answer {i}" if i < agree else f"something else entirely {i}"
        outcomes[key + SHADOW_TAG] = Outcome(
            status=SUCCEEDED, output_text=reference, cost_usd=0.001
        )
    table, sums = measure(
        "r1",
        PairsFile(gated={}, pairs=pairs),
        lambda keys: {k: outcomes[k] for k in keys if k in outcomes},
        svc.settings,
        {},
    )
    (row,) = table.to_pylist()
    assert (row["samples"], row["agreed"]) == (agree + disagree, agree)
    assert row["guard_cost_usd"] == pytest.approx(0.001 * (agree + disagree))
    svc.store.add_observations(sums)


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_gate_closes_and_reopens_across_runs(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue("redis_url") if store == "redis" else ""
    src = write_jsonl(
        tmp_path / "lines.jsonl",
        [chat(f"l{i}", f"line {i}", model="cheap", max_tokens=50) for i in range(40)],
    )
    svc = _services(tmp_path, url)
    try:
        open_plan = plan_file(svc, str(src), {"no_cache": True})
        assert set(open_plan.estimates) == {NANO}  # the cheapest target takes every line
        assert open_plan.quality[0]["targets"][0]["gated"] is False
        _measured_run(svc, agree=2, disagree=28)  # run 1: agreement 2/30, interval < 0.8
    finally:
        svc.close()

    svc = _services(tmp_path, url)  # a later run, another process: the store carries it
    try:
        gated = plan_file(svc, str(src), {"no_cache": True})
        view = {t["target"]: t for t in gated.quality[0]["targets"]}
        assert view[NANO]["gated"] and view[NANO]["samples"] == 30
        assert view[NANO]["ci_high"] < 0.8 and not view[HAIKU]["gated"]
        assert view[MINI]["reference"]
        probes = view[NANO]["guard_lines"]
        assert probes >= 2  # probe lines: a shadow_fraction share, at least shadow_min
        assert gated.estimates[MINI].requests == probes  # the reference answers the probes
        assert gated.estimates[HAIKU].requests == 40 - probes  # the next target: the rest
        assert NANO not in gated.estimates  # no line's answer comes from the gated target
        # the probe lines go to the gated target as well (as chunks of the plan)
        assert sum(c.n_requests for c in gated.chunks if c.model == "gpt-5.4-nano") == probes

        _measured_run(svc, agree=400, disagree=0)  # probes agree again: the interval recovers
    finally:
        svc.close()
    svc = _services(tmp_path, url)
    try:
        reopened = plan_file(svc, str(src), {"no_cache": True})
        assert set(reopened.estimates) == {NANO}
        assert reopened.quality[0]["targets"][0]["gated"] is False
    finally:
        svc.close()


def test_probe_pairs_compare_the_gated_target_with_the_reference() -> None:
    """A probe's row got the reference's answer (key); the gated target's is key + tag."""
    key = b"k" * 16
    outcomes = {
        key: Outcome(status=SUCCEEDED, output_text="Paris", cost_usd=0.01),
        key + PROBE_TAG: Outcome(status=SUCCEEDED, output_text="paris!", cost_usd=0.002),
    }
    table, sums = measure(
        "r",
        PairsFile(gated={"cheap": [NANO]}, pairs=[Pair(key, PROBE_TAG, "cheap", NANO, MINI)]),
        lambda keys: {k: outcomes[k] for k in keys if k in outcomes},
        Settings(),
        {},
    )
    (row,) = table.to_pylist()
    assert (row["samples"], row["agreed"], row["probes"], row["gated_in_run"]) == (1, 1, 1, True)
    assert row["guard_cost_usd"] == pytest.approx(0.002)  # the extra line: the probe
    assert sums == {f"qual|cheap|{NANO}|normalized": (1.0, 1.0)}
