"""The quality guard with the real vLLM engine on the tiny model: its answers differ from
the reference's (the emulator's echo), so agreement is low, the gate closes, and the next
plan routes the alias's lines to its next target, probe lines to the reference.

Heavy (one engine start, in the `batchd submit` subprocess): run this file on its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import VLLM_TOML, Batchd, chat, write_jsonl

GUARD = """
[planner]
gpu_reserved = true

[models.small]
targets = ["vllm:tiny", "openai:gpt-5.4-nano"]
reference = "gpt-5.4-mini"

[models.small.quality]
shadow_fraction = 0.5
shadow_min = 6
metric = "normalized"
min_agreement = 0.6
"""


def test_tiny_model_disagrees_and_the_gate_closes(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tiny_model: Path, tmp_path: Path
) -> None:
    toml = GUARD + VLLM_TOML.format(model=tiny_model, checkpoint_every=4, max_num_seqs=8)
    (tmp_path / "batchd.toml").write_text(toml)
    lines = [chat(f"q{i}", f"tell me about {i}", model="small", max_tokens=8) for i in range(10)]
    src = write_jsonl(tmp_path / "in.jsonl", lines)
    proc = batchd.submit(src, "-q", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = batchd.results()
    assert {r["backend"] for r in rows} == {"vllm"}  # the user gets the routed answers
    assert all(r["status"] == "succeeded" for r in rows)
    assert len(emulator.batches()) == 1  # the shadow samples: one batch for the reference
    (q,) = pq.read_table(batchd.only_run_dir() / "quality.parquet").to_pylist()
    assert (q["alias"], q["target"], q["reference"]) == (
        "small",
        "vllm:tiny",
        "openai:gpt-5.4-mini",
    )
    assert q["samples"] >= 6 and q["agreed"] == 0  # random weights never echo the question
    assert q["ci_high"] < 0.6 and q["gated"] and not q["gated_in_run"]
    assert q["guard_cost_usd"] > 0
    assert sum(c["cost_usd"] for c in batchd.costs()) == sum(r["cost_usd"] for r in rows)
    report = batchd.run("report", batchd.only_run_dir().name)
    assert "gated for later runs" in report.stdout, report.stdout

    # The next plan: vllm:tiny is gated; nano takes the lines, the reference the probes.
    plan = batchd.run("plan", str(src), "--json", "--no-cache")
    assert plan.returncode == 0, plan.stderr[-3000:]
    doc = json.loads(plan.stdout)
    view = {t["target"]: t for t in doc["quality"][0]["targets"]}
    assert view["vllm:tiny"]["gated"] and not view["openai:gpt-5.4-nano"]["gated"]
    probes = view["vllm:tiny"]["guard_lines"]
    assert probes >= 6
    assert doc["targets"]["openai:gpt-5.4-mini"]["requests"] == probes
    assert doc["targets"]["openai:gpt-5.4-nano"]["requests"] == 10 - probes
    assert "vllm:tiny" not in doc["targets"]
    text = batchd.run("plan", str(src), "--no-cache")
    assert "vllm:tiny is gated" in text.stdout, text.stdout
