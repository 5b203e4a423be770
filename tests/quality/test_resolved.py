"""Cost per resolved request: refusals and failures cost what they cost but resolve nothing;
costs.parquet and `batchd report` divide by the resolved requests, next to the baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.helpers import Batchd, chat, write_jsonl


def test_cost_per_resolved_request(batchd: Batchd, tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            chat("a", "first question"),
            chat("b", "second question"),
            chat("refused", "[[finish:content_filter]] please"),
            chat("broken", "[[error:400]]"),
        ],
    )
    proc = batchd.submit(src)
    assert proc.returncode == 3, proc.stderr  # finished with failures: the 400 line
    rows = {r["custom_id"]: r for r in batchd.results()}
    assert rows["refused"]["finish_reason"] == "content_filter"
    (cost,) = batchd.costs()
    assert cost["requests"] == 4 and cost["resolved"] == 2
    assert cost["cost_usd"] > 0
    assert cost["cost_per_resolved_usd"] == pytest.approx(cost["cost_usd"] / 2)
    assert cost["baseline_per_resolved_usd"] == pytest.approx(cost["baseline_cost_usd"] / 2)
    run_id = batchd.only_run_dir().name
    doc = json.loads(batchd.run("report", run_id, "--json").stdout)
    assert doc["totals"]["resolved"] == 2
    assert doc["totals"]["cost_per_resolved_usd"] == pytest.approx(cost["cost_usd"] / 2)
    text = batchd.run("report", run_id).stdout
    assert "cost per 1,000 resolved requests" in text and "2 of 4 resolved" in text, text
    assert max(len(line) for line in text.splitlines()) <= 80, text
