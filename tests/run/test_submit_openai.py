"""`batchd submit` end to end, embedded mode, against the OpenAI Batch emulator (real SDK)."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import API_KEY, Batchd, chat, write_jsonl


def _mixed_file(path: Path) -> Path:
    return write_jsonl(
        path,
        [
            chat("a", "alpha one", max_tokens=50),
            {
                "custom_id": "b",
                "params": {
                    "model": "gpt-5.4-mini",
                    "max_tokens": 40,
                    "system": "be brief",
                    "messages": [{"role": "user", "content": "beta two"}],
                },
            },
            {
                "id": "c",
                "model": "gpt-5.4-nano",
                "prompt": "alpha one",
                "max_tokens": 50,
                "metadata": {"tenant": "default", "tags": {"team": "x"}},
            },
            "not json at all",
            {"id": "d", "model": "gpt-5.4-nano", "messages": []},
            chat("a", "duplicate id"),
            {"id": "e", "model": "no-such-model", "prompt": "hi"},
            {"model": "gpt-5.4-mini", "prompt": "gamma three", "max_tokens": 30},
        ],
    )


def test_mixed_file_one_row_per_line_in_order(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    src = _mixed_file(tmp_path / "jobs.jsonl")
    proc = batchd.submit(src, "--export", "openai-jsonl")
    assert proc.returncode == 3, proc.stderr  # finished, with invalid lines
    rows = batchd.results()
    assert [r["line_no"] for r in rows] == list(range(1, 9))
    by_id = {(r["line_no"]): r for r in rows}
    assert [r["custom_id"] for r in rows] == ["a", "b", "c", "line-4", "d", "a", "e", "line-8"]
    # Answers map back to the right lines although the vendor shuffles its output.
    assert by_id[1]["output_text"] == "echo: alpha one"
    assert by_id[2]["output_text"] == "echo: beta two"
    assert by_id[8]["output_text"] == "echo: gamma three"
    # Line 3 is line 1's request in the native format: answered in run, not sent twice.
    assert by_id[3]["cache"] == "in_run" and by_id[3]["output_text"] == "echo: alpha one"
    assert by_id[3]["cost_usd"] == 0 and by_id[1]["cost_usd"] > 0
    assert by_id[3]["tags"] == [("team", "x")]
    assert by_id[3]["request_key"] == by_id[1]["request_key"]
    statuses = {n: r["status"] for n, r in by_id.items()}
    assert statuses == {
        1: "succeeded",
        2: "succeeded",
        3: "succeeded",
        4: "invalid",
        5: "invalid",
        6: "invalid",
        7: "invalid",
        8: "succeeded",
    }
    assert by_id[4]["error_type"] == "invalid_json"
    assert by_id[5]["error_type"] == "missing_messages"
    assert by_id[6]["error_type"] == "duplicate_custom_id"
    assert by_id[7]["error_type"] == "unknown_model"
    assert "price book" in by_id[7]["error_message"] and "[prices." in by_id[7]["error_message"]
    # One vendor batch per model; each unique request sent once.
    assert sorted(b["model"] for b in emulator.batches()) == ["gpt-5.4-mini", "gpt-5.4-nano"]
    assert len(emulator.requests_seen()) == 3
    # Tokens and costs: batch price is half the realtime list price for these rows.
    r1 = by_id[1]
    assert r1["input_tokens"] > 0 and r1["output_tokens"] == 3
    assert r1["cost_usd"] == pytest.approx(r1["baseline_cost_usd"] / 2)
    assert r1["backend"] == "openai" and r1["model_used"] == "gpt-5.4-nano"
    assert r1["submitted_at"] is not None and r1["completed_at"] is not None
    # costs.parquet sums equal the sums over results.parquet.
    costs = batchd.costs()
    for col in ("cost_usd", "baseline_cost_usd"):
        assert sum(c[col] for c in costs) == pytest.approx(sum(r[col] for r in rows))
    for col in ("input_tokens", "output_tokens"):
        assert sum(c[col] for c in costs) == sum(r[col] for r in rows)
    assert sum(c["requests"] for c in costs) == len(rows)
    assert sum(c["in_run_hits"] for c in costs) == 1
    # The OpenAI-format export has one line per input line, keyed by custom_id.
    export = [
        json.loads(x)
        for x in (batchd.only_run_dir() / "results.openai.jsonl").read_text().splitlines()
    ]
    assert [e["custom_id"] for e in export] == [r["custom_id"] for r in rows]
    assert export[0]["response"]["status_code"] == 200
    assert export[0]["response"]["body"]["choices"][0]["message"]["content"] == "echo: alpha one"
    # An invalid line as OpenAI writes a refused request: HTTP 400 with body.error.
    assert export[3]["error"] is None and export[3]["response"]["status_code"] == 400
    assert export[3]["response"]["body"]["error"]["code"] == "invalid_json"


def test_all_lines_succeeded_exits_zero_and_second_run_is_all_cache(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "ok.jsonl", [chat(f"r{i}", f"question {i}") for i in range(5)])
    first = batchd.submit(src)
    assert first.returncode == 0, first.stderr
    assert len(emulator.batches()) == 1
    second = batchd.submit(src)
    assert second.returncode == 0, second.stderr
    assert len(emulator.batches()) == 1  # no vendor call at all
    runs = batchd.run_dirs()
    assert len(runs) == 2
    rows = batchd.results(runs[1] if runs[1].name.endswith("-2") else runs[0])
    assert {r["cache"] for r in rows} == {"exact"}
    assert {r["status"] for r in rows} == {"succeeded"}
    assert all(r["cost_usd"] == 0 and r["baseline_cost_usd"] > 0 for r in rows)
    assert rows[2]["output_text"] == "echo: question 2"


def test_cache_is_tenant_scoped_and_opt_outs_are_sent(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    first = write_jsonl(
        tmp_path / "one.jsonl",
        [
            {"id": "x", "model": "gpt-5.4-nano", "prompt": "shared", "metadata": {"tenant": "t1"}},
        ],
    )
    assert batchd.submit(first).returncode == 0
    second = write_jsonl(
        tmp_path / "two.jsonl",
        [
            {
                "id": "same-tenant",
                "model": "gpt-5.4-nano",
                "prompt": "shared",
                "metadata": {"tenant": "t1"},
            },
            {
                "id": "other-tenant",
                "model": "gpt-5.4-nano",
                "prompt": "shared",
                "metadata": {"tenant": "t2"},
            },
            {
                "id": "opt-out",
                "model": "gpt-5.4-nano",
                "prompt": "shared",
                "metadata": {"tenant": "t1"},
                "cache": False,
            },
        ],
    )
    assert batchd.submit(second).returncode == 0
    run = next(
        d
        for d in batchd.run_dirs()
        if (d / "results.parquet").exists() and batchd.results(d)[0]["custom_id"] == "same-tenant"
    )
    caches = {r["custom_id"]: r["cache"] for r in batchd.results(run)}
    assert caches == {"same-tenant": "exact", "other-tenant": "none", "opt-out": "none"}
    assert len(emulator.requests_seen()) == 3  # first run 1, then t2 and the opt-out
    # --no-cache: nothing read from the cache.
    third = write_jsonl(
        tmp_path / "three.jsonl",
        [
            {
                "id": "again",
                "model": "gpt-5.4-nano",
                "prompt": "shared",
                "metadata": {"tenant": "t1"},
            },
        ],
    )
    assert batchd.submit(third, "--no-cache").returncode == 0
    assert len(emulator.requests_seen()) == 4


def test_chunks_respect_line_and_byte_limits(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    lines = [chat(f"n{i}", f"nano {i}") for i in range(7)]
    lines += [chat(f"m{i}", f"mini {i}", model="gpt-5.4-mini") for i in range(2)]
    src = write_jsonl(tmp_path / "many.jsonl", lines)
    proc = batchd.submit(src, BATCHD_OPENAI_MAX_LINES_PER_CHUNK="3")
    assert proc.returncode == 0, proc.stderr
    sizes = sorted((b["model"], b["request_counts"]["total"]) for b in emulator.batches())
    assert sizes == [
        ("gpt-5.4-mini", 2),
        ("gpt-5.4-nano", 1),
        ("gpt-5.4-nano", 3),
        ("gpt-5.4-nano", 3),
    ]
    assert len(batchd.results()) == 9


def test_chunks_respect_byte_limit(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(
        tmp_path / "big.jsonl",
        [chat(f"b{i}", "x" * 300 + str(i)) for i in range(4)]
        + [chat(f"c{i}", "y" * 300 + str(i)) for i in range(2)],
    )
    proc = batchd.submit(src, BATCHD_OPENAI_MAX_BYTES_PER_CHUNK="1000")
    assert proc.returncode == 0, proc.stderr
    counts = [b["request_counts"]["total"] for b in emulator.batches()]
    assert sum(counts) == 6 and max(counts) <= 2 and len(counts) == 3


def test_expired_batch_keeps_done_lines_and_resubmits_the_rest(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.faults.expire_batches = 1
    src = write_jsonl(tmp_path / "exp.jsonl", [chat(f"e{i}", f"item {i}") for i in range(6)])
    proc = batchd.submit(src)
    assert proc.returncode == 0, proc.stderr
    rows = batchd.results()
    assert {r["status"] for r in rows} == {"succeeded"}
    batches = emulator.batches()
    assert len(batches) == 2
    assert batches[0]["status"] == "expired" and batches[1]["request_counts"]["total"] == 3
    # Never resubmit a line that succeeded: three lines sent once, three sent twice.
    sent = Counter(r["custom_id"] for r in emulator.requests_seen())
    assert sorted(sent.values()) == [1, 1, 1, 2, 2, 2]


def test_expired_lines_do_not_use_up_attempts(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    # Issue 16: lines a vendor expired unprocessed are not billed, so they are resubmitted
    # even with no attempt left (this test asserted they ended `expired` before).
    emulator.faults.expire_batches = 1
    lines = [chat(f"e{i}", f"item {i}") for i in range(4)] + [chat("x", "[[error:500]] boom")]
    src = write_jsonl(tmp_path / "exp.jsonl", lines)
    proc = batchd.submit(src, BATCHD_MAX_ATTEMPTS="1")
    assert proc.returncode == 3, proc.stderr
    statuses = {r["custom_id"]: r["status"] for r in batchd.results()}
    assert statuses == {
        "e0": "succeeded",
        "e1": "succeeded",
        "e2": "succeeded",
        "e3": "succeeded",
        "x": "failed",
    }  # a real 5xx used the one attempt
    assert len(emulator.batches()) == 2


_text_to_id = {
    "fine": "ok",
    "[[error:400]] nope": "bad",
    "[[error:500]] boom": "flaky",
    "one two three four five six": "long",
    "[[finish:content_filter]] hmm": "filtered",
}


def test_per_line_errors_and_finishes(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(
        tmp_path / "err.jsonl",
        [
            chat("ok", "fine"),
            chat("bad", "[[error:400]] nope"),
            chat("flaky", "[[error:500]] boom"),
            chat("long", "one two three four five six", max_tokens=2),
            chat("filtered", "[[finish:content_filter]] hmm"),
        ],
    )
    proc = batchd.submit(src, BATCHD_MAX_ATTEMPTS="3")
    assert proc.returncode == 3
    rows = {r["custom_id"]: r for r in batchd.results()}
    assert rows["ok"]["status"] == "succeeded"
    assert rows["bad"]["status"] == "failed" and "400" in rows["bad"]["error_message"]
    assert rows["flaky"]["status"] == "failed" and "500" in rows["flaky"]["error_message"]
    assert rows["long"]["status"] == "succeeded" and rows["long"]["finish_reason"] == "length"
    assert rows["filtered"]["finish_reason"] == "content_filter"
    sent = Counter(
        _text_to_id[r["body"]["messages"][-1]["content"]] for r in emulator.requests_seen()
    )
    # 5xx is retried up to max_attempts; 4xx, length and content_filter never are.
    assert sent == {"ok": 1, "bad": 1, "flaky": 3, "long": 1, "filtered": 1}


def test_completed_batch_without_output_file(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(
        tmp_path / "allbad.jsonl", [chat(f"x{i}", f"[[error:400]] {i}") for i in range(3)]
    )
    proc = batchd.submit(src)
    assert proc.returncode == 3, proc.stderr
    batch = emulator.batches()[0]
    assert batch["output_file_id"] is None and batch["error_file_id"]
    assert [r["status"] for r in batchd.results()] == ["failed"] * 3


def test_batch_failed_at_validation_ends_lines_failed(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.faults.fail_validation = 1
    src = write_jsonl(tmp_path / "v.jsonl", [chat(f"v{i}", f"q {i}") for i in range(2)])
    proc = batchd.submit(src)
    assert proc.returncode == 3
    rows = batchd.results()
    assert {r["status"] for r in rows} == {"failed"}
    assert {r["error_type"] for r in rows} == {"batch_failed"}
    assert all(r["error_message"] for r in rows)


def test_transient_http_errors_are_retried(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.faults.rate_limit_creates = 2
    emulator.faults.rate_limit_retrieves = 2
    emulator.faults.server_error_retrieves = 4
    src = write_jsonl(tmp_path / "t.jsonl", [chat(f"t{i}", f"q {i}") for i in range(3)])
    proc = batchd.submit(src)
    assert proc.returncode == 0, proc.stderr
    assert len(emulator.batches()) == 1
    assert emulator.faults.rate_limit_creates == 0 and emulator.faults.server_error_retrieves == 0


def test_gzip_input(batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for i in range(3):
            f.write(json.dumps(chat(f"g{i}", f"zipped {i}")) + "\n")
    proc = batchd.submit(path)
    assert proc.returncode == 0, proc.stderr
    assert [r["output_text"] for r in batchd.results()] == [f"echo: zipped {i}" for i in range(3)]


def test_missing_api_key_names_the_variable(batchd: Batchd, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "k.jsonl", [chat("k", "hello")])
    proc = batchd.submit(src, OPENAI_API_KEY="")
    assert proc.returncode == 1
    assert "OPENAI_API_KEY" in proc.stderr and "Traceback" not in proc.stderr


def test_wrong_api_key_is_one_red_line(batchd: Batchd, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "k.jsonl", [chat("k", "hello")])
    proc = batchd.submit(src, OPENAI_API_KEY="sk-wrong")
    assert proc.returncode == 1
    assert "OPENAI_API_KEY" in proc.stderr and "Traceback" not in proc.stderr
    assert "sk-wrong" not in proc.stderr


def test_secrets_never_written(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    src = _mixed_file(tmp_path / "jobs.jsonl")
    proc = batchd.submit(src, "--export", "openai-jsonl", BATCHD_DEBUG="1")
    assert proc.returncode == 3
    assert API_KEY not in proc.stdout + proc.stderr
    for path in [*batchd.home.rglob("*"), *batchd.out.rglob("*")]:
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path


def test_plan_sends_nothing_and_needs_no_key(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    src = _mixed_file(tmp_path / "jobs.jsonl")
    proc = batchd.run("plan", str(src), OPENAI_API_KEY="")
    assert proc.returncode == 0, proc.stderr
    assert emulator.batches() == [] and emulator.requests_seen() == []
    assert "8 lines read" in proc.stdout
    assert "unique requests 3" in proc.stdout and "in-run duplicates 1" in proc.stdout
    assert "invalid 4" in proc.stdout
    assert "openai:gpt-5.4-nano" in proc.stdout and "openai:gpt-5.4-mini" in proc.stdout


def test_status_results_report(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "s.jsonl", [chat(f"s{i}", f"q {i}") for i in range(3)])
    assert batchd.submit(src).returncode == 0
    run_id = batchd.only_run_dir().name
    status = batchd.run("status", run_id)
    assert status.returncode == 0 and "succeeded 3" in status.stdout
    listing = batchd.run("status")
    assert run_id in listing.stdout
    res = batchd.run("results", run_id, "--format", "jsonl")
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["custom_id"] for r in rows] == ["s0", "s1", "s2"]
    rep = batchd.run("report", run_id)
    assert rep.returncode == 0 and "gpt-5.4-nano" in rep.stdout and "saved" in rep.stdout
    missing = batchd.run("status", "run-nope")
    assert missing.returncode == 1 and "batchd status" in missing.stderr


@pytest.mark.parametrize("command", ["submit", "plan", "status", "results", "report", "cancel"])
def test_help(batchd: Batchd, command: str) -> None:
    proc = batchd.run(command, "--help")
    assert proc.returncode == 0 and "Usage" in proc.stdout


def test_a_step_that_keeps_failing_ends_its_lines_failed(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.faults.corrupt_outputs = 1  # collect fails every time it reads this batch
    src = write_jsonl(tmp_path / "c.jsonl", [chat(f"c{i}", f"q {i}") for i in range(3)])
    proc = batchd.submit(src, BATCHD_MAX_STEP_FAILURES="3", BATCHD_STEP_RETRY_BASE_S="0.05")
    assert proc.returncode == 3, proc.stderr
    rows = batchd.results()
    assert [r["status"] for r in rows] == ["failed"] * 3
    assert {r["error_type"] for r in rows} == {"step_failed"}
    assert all("gave up after 3 failed attempts" in r["error_message"] for r in rows)
    assert "DecodeError" in rows[0]["error_message"]
    assert "Traceback" not in proc.stderr
