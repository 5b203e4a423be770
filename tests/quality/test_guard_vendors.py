"""The quality guard end to end on the vendor emulators: two vendor models that agree (the
routed openai model and the alias's Claude reference both answer "echo: ..."), so the gate
stays open; shadow lines cost the guard, never the lines."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl

GUARDED = """
[models.cheap]
targets = ["openai:gpt-5.4-nano"]
reference = "claude-haiku-4-5"

[models.cheap.quality]
shadow_fraction = 0.3
shadow_min = 3
metric = "{metric}"
min_agreement = 0.5
"""


def _lines(n: int) -> list[dict[str, object]]:
    return [chat(f"q{i}", f"question number {i}", model="cheap", max_tokens=20) for i in range(n)]


def test_two_vendors_that_agree_keep_the_gate_open(
    batchd: Batchd, emulator: OpenAIBatchEmulator, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    (tmp_path / "batchd.toml").write_text(GUARDED.format(metric="normalized"))
    src = write_jsonl(tmp_path / "a.jsonl", _lines(12))
    proc = batchd.submit(src)
    assert proc.returncode == 0, proc.stderr
    rows = batchd.results()
    assert len(rows) == 12
    # The user gets the routed answer; the reference's answers are the guard's, not rows.
    assert {(r["backend"], r["model_used"]) for r in rows} == {("openai", "gpt-5.4-nano")}
    assert all(r["output_text"] == f"echo: question number {r['custom_id'][1:]}" for r in rows)
    shadows = claude.requests_seen()
    assert 3 <= len(shadows) < 12  # shadow_min at least, a sample, not every line
    assert all(s["custom_id"].startswith("xs") for s in shadows)
    assert {s["params"]["model"] for s in shadows} == {"claude-haiku-4-5"}
    (q,) = pq.read_table(batchd.only_run_dir() / "quality.parquet").to_pylist()
    assert (q["alias"], q["target"], q["reference"], q["metric"]) == (
        "cheap",
        "openai:gpt-5.4-nano",
        "anthropic:claude-haiku-4-5",
        "normalized",
    )
    assert q["samples"] == q["agreed"] == len(shadows) and q["unscored"] == 0
    assert q["agreement"] == 1.0 and q["ci_high"] == 1.0 and 0 < q["ci_low"] < 1
    assert not q["gated"] and not q["gated_in_run"]
    assert q["guard_cost_usd"] > 0
    costs = batchd.costs()
    assert {c["backend"] for c in costs} == {"openai"}  # the guard's lines are not the lines'
    assert abs(sum(c["cost_usd"] for c in costs) - sum(r["cost_usd"] for r in rows)) < 1e-12

    # A second run of other lines: the running figure adds up in the observations store.
    first = batchd.only_run_dir()
    src2 = write_jsonl(tmp_path / "b.jsonl", [chat("z", "another", model="cheap")])
    proc = batchd.submit(src2)
    assert proc.returncode == 0, proc.stderr
    (run2,) = [d for d in batchd.run_dirs() if d != first]
    (q2,) = pq.read_table(run2 / "quality.parquet").to_pylist()
    assert q2["samples"] == 1  # shadow_min tops up to the one line the run has
    assert q2["total_samples"] == q["samples"] + 1 and not q2["gated"]
    report = batchd.run("report", run2.name, "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["quality"][0]["target"] == "openai:gpt-5.4-nano"

    plan = batchd.run("plan", str(src), "--json", "--no-cache")
    assert plan.returncode == 0, plan.stderr
    (alias,) = json.loads(plan.stdout)["quality"]
    nano, ref = alias["targets"]
    assert (nano["target"], nano["gated"], nano["samples"]) == (
        "openai:gpt-5.4-nano",
        False,
        q2["total_samples"],
    )
    assert ref["reference"] and ref["target"] == "anthropic:claude-haiku-4-5"
    assert nano["guard_lines"] == len(shadows)  # the same lines as the first run: by key
    text = batchd.run("report", run2.name)
    assert "quality guard" in text.stdout and "open" in text.stdout, text.stdout
