"""The planner through `batchd plan --json` and `submit`: aliases, deadlines, GPU capacity.

The vLLM backend is not in this tree: decisions for vLLM targets are checked through
`plan --json`, which never sends anything (HF_HUB_OFFLINE=1: nothing is downloaded).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchd.config.pricing import load_price_book
from batchd.config.settings import Settings, load_settings
from batchd.errors import BatchdError
from batchd.outcome import SUCCEEDED, Outcome
from batchd.planning.capacity import gpu_capacity_s
from batchd.planning.estimates import UNMEETABLE, Planner, TargetSet
from batchd.planning.observations import Observations, Observer, bytes_per_token_key, throughput_key
from batchd.planning.tokens import TokenCounter
from batchd.state.base import Chunk, Run
from batchd.state.sqlite_store import SqliteStore
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import API_KEY, Batchd, chat, write_jsonl

NOW = "2026-11-23T12:00:00Z"  # a Monday, noon UTC


def _config(tmp: Path, body: str) -> None:
    (tmp / "model").mkdir(exist_ok=True)
    (tmp / "batchd.toml").write_text(body)


VLLM = """
[backends.vllm]
model = "model"
served_model_name = "tiny"
reference_model = "gpt-5.4-nano"
gpu_hourly_usd = 2.0
admit_margin_s = 0
"""


def _plan(batchd: Batchd, src: Path, *args: str) -> dict[str, Any]:
    proc = batchd.run("plan", str(src), "--json", "--now", NOW, *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_alias_fills_gpu_with_biggest_savings_then_vendor(batchd: Batchd) -> None:
    # Reserved GPUs, always open, 1 token per GPU-second: 25 h = 90,000 GPU-s (tokens).
    _config(
        batchd.tmp,
        VLLM
        + """throughput_tokens_per_s = 1
[planner]
gpu_reserved = true
output_ratio = 1.0
[models.small]
targets = ["vllm:tiny", "openai:gpt-5.4-nano"]
""",
    )
    # 60 output-heavy requests (1000 output tokens, saving the most per GPU-second) and
    # 60 input-heavy ones (~1000 prompt tokens, 1 output token): not all fit.
    lines = [{"model": "small", "prompt": f"out {i:03d}", "max_tokens": 1000} for i in range(60)]
    lines += [
        {"model": "small", "prompt": f"in {i:03d} " + "x" * 4000, "max_tokens": 1}
        for i in range(60)
    ]
    plan = _plan(batchd, write_jsonl(batchd.tmp / "jobs.jsonl", lines), "--within", "25h")
    gpu, vendor = plan["targets"]["vllm:tiny"], plan["targets"]["openai:gpt-5.4-nano"]
    assert gpu["requests"] + vendor["requests"] == 120
    assert plan["gpu"]["capacity_s"] == pytest.approx(25 * 3600)
    assert plan["gpu"]["used_s"] <= plan["gpu"]["capacity_s"]
    # Every output-heavy request is on the GPU: the vendor got only 1-token replies...
    assert vendor["output_tokens"] == vendor["requests"] > 0
    # ...and the GPU was filled with input-heavy ones until the next did not fit.
    assert 60 < gpu["requests"] < 120
    per_input_heavy = (gpu["input_tokens"] + gpu["output_tokens"] - 60 * 1000) / (
        gpu["requests"] - 60
    )
    assert plan["gpu"]["capacity_s"] - plan["gpu"]["used_s"] < per_input_heavy + 60
    # Beyond the reserved GPUs, only the vendor part costs; the baseline is nano realtime.
    tot = plan["totals"]
    assert tot["marginal_cost_usd"] == pytest.approx(vendor["cost_usd"])
    assert tot["marginal_cost_usd"] < tot["all_vendor_usd"] < tot["baseline_usd"]


def test_on_demand_gpu_dearer_than_the_vendor_is_not_used(batchd: Batchd) -> None:
    _config(
        batchd.tmp,
        VLLM.replace("2.0", "50.0")
        + """throughput_tokens_per_s = 100
[models.small]
targets = ["vllm:tiny", "openai:gpt-5.4-nano"]
""",
    )
    src = write_jsonl(batchd.tmp / "j.jsonl", [{"model": "small", "prompt": "a", "max_tokens": 9}])
    plan = _plan(batchd, src)
    assert list(plan["targets"]) == ["openai:gpt-5.4-nano"]
    assert plan["totals"]["cost_usd"] == pytest.approx(plan["totals"]["all_vendor_usd"])
    assert plan["totals"]["marginal_cost_usd"] == pytest.approx(plan["totals"]["cost_usd"])


def test_windows_deadlines_and_unmeetable_requests(batchd: Batchd) -> None:
    # Off-peak 22:00-06:00 UTC on 2 GPUs; now is Monday noon.
    # Vendor batches planned to take their full 24 h window (the prior says minutes), and no
    # deadline guard fallback (it would plan the early lines to flex/realtime instead).
    _config(
        batchd.tmp,
        'fallback = "none"\n'
        + VLLM
        + """num_gpus = 2
windows = ["22:00-06:00"]
throughput_tokens_per_s = 2000
[planner]
turnaround_s = 86400
[models.small]
targets = ["vllm:tiny", "openai:gpt-5.4-nano"]
""",
    )
    lines = [
        # due before tonight's window and before a vendor batch counts as done: unmeetable
        {"model": "small", "prompt": "soon", "deadline": "2026-11-23T20:00:00Z"},
        # due at 23:00: only the first hour of the window can do it
        {"model": "small", "prompt": "tonight", "deadline": "2026-11-23T23:00:00Z"},
        # a vendor-only model due in 2 h: no target can finish it
        {"model": "gpt-5.4-nano", "prompt": "hurry", "deadline": "2026-11-23T14:00:00Z"},
        # the run's deadline (30 h): vendor or GPU
        {"model": "gpt-5.4-nano", "prompt": "relaxed"},
    ]
    plan = _plan(batchd, write_jsonl(batchd.tmp / "j.jsonl", lines), "--within", "30h")
    # One night (22:00-06:00) before 18:00 tomorrow, on 2 GPUs.
    assert plan["gpu"]["capacity_s"] == pytest.approx(8 * 3600 * 2)
    assert plan["deadline"] == "2026-11-24T18:00:00Z"
    assert plan["unmeetable"] == {"small": 1, "gpt-5.4-nano": 1}
    assert plan["targets"]["vllm:tiny"]["requests"] == 1
    assert plan["targets"]["openai:gpt-5.4-nano"]["requests"] == 1
    # A tighter run deadline: nothing meets 24 h vendor turnaround, the GPU still can.
    tight = _plan(batchd, write_jsonl(batchd.tmp / "t.jsonl", lines[1:2]), "--within", "12h")
    assert tight["targets"]["vllm:tiny"]["requests"] == 1 and not tight["unmeetable"]


def test_tight_capacity_sends_the_rest_to_the_vendor(batchd: Batchd) -> None:
    _config(
        batchd.tmp,
        VLLM
        + """windows = ["22:00-22:01"]
throughput_tokens_per_s = 10
[planner]
gpu_reserved = true
[models.small]
targets = ["vllm:tiny", "openai:gpt-5.4-nano"]
""",
    )
    lines = [{"model": "small", "prompt": f"p{i}", "max_tokens": 50} for i in range(40)]
    plan = _plan(batchd, write_jsonl(batchd.tmp / "j.jsonl", lines), "--within", "26h")
    assert plan["gpu"]["capacity_s"] == pytest.approx(60.0)  # one minute, one GPU
    assert plan["gpu"]["used_s"] <= 60.0
    assert 0 < plan["targets"]["vllm:tiny"]["requests"] < 40
    assert plan["totals"]["requests"] == 40 and not plan["unmeetable"]


def test_submit_alias_runs_on_cheapest_vendor_and_unmeetable_line_fails(batchd: Batchd) -> None:
    _config(
        batchd.tmp,
        """[models.cheap]
targets = ["anthropic:claude-haiku-4-5", "openai:gpt-5.4-nano"]
reference = "claude-haiku-4-5"
[models.claude]
targets = ["anthropic:claude-sonnet-4-6", "anthropic:claude-haiku-4-5"]
""",
    )
    src = write_jsonl(
        batchd.tmp / "jobs.jsonl",
        [
            chat("a", "alpha", model="cheap", max_tokens=20),
            chat("d", "delta one", model="claude", max_tokens=20),
            chat("b", "beta", model="gpt-5.4-nano", max_tokens=20),
            {"id": "c", "model": "cheap", "prompt": "now!", "deadline": "2020-01-01T00:00:00Z"},
            chat("e", "epsilon two", model="claude", max_tokens=20),
            chat("f", "phi", model="cheap", max_tokens=20),
        ],
    )
    proc = batchd.submit(src)
    assert proc.returncode == 3, proc.stderr
    rows = {r["custom_id"]: r for r in batchd.results()}
    # Interleaved alias lines come back from the spool to the right target, answer intact.
    for cid, text, backend, model in [
        ("a", "alpha", "openai", "gpt-5.4-nano"),
        ("d", "delta one", "anthropic", "claude-haiku-4-5"),
        ("b", "beta", "openai", "gpt-5.4-nano"),
        ("e", "epsilon two", "anthropic", "claude-haiku-4-5"),
        ("f", "phi", "openai", "gpt-5.4-nano"),
    ]:
        r = rows[cid]
        assert (r["status"], r["output_text"], r["backend"]) == (
            "succeeded",
            f"echo: {text}",
            backend,
        )
        assert r["model_used"].startswith(model)
    assert rows["a"]["status"] == "succeeded"
    assert (rows["a"]["backend"], rows["a"]["model_requested"]) == ("openai", "cheap")
    assert rows["a"]["model_used"].startswith("gpt-5.4-nano")
    # Baseline: the alias's reference model (Haiku) at realtime list price.
    assert rows["a"]["baseline_cost_usd"] > 3 * rows["a"]["cost_usd"] > 0
    assert rows["c"]["status"] == "failed"
    assert rows["c"]["error_type"] == "deadline_unmeetable"
    assert "2020-01-01" in rows["c"]["error_message"] and "--within" in rows["c"]["error_message"]
    run_id = batchd.only_run_dir().name
    report = batchd.run("report", run_id)
    assert report.returncode == 0, report.stderr
    assert "planned against actual" in report.stdout
    assert "1 cheap requests were planned as unmeetable" in report.stdout


def test_token_ratio_learned_from_a_finished_run(batchd: Batchd) -> None:
    lines = [chat(f"r{i}", f"words {i} " * (i + 1), max_tokens=5) for i in range(12)]
    src = write_jsonl(batchd.tmp / "jobs.jsonl", lines)
    before = _plan(batchd, src, "--no-cache")["targets"]["openai:gpt-5.4-nano"]
    assert batchd.submit(src).returncode == 0
    actual = sum(r["input_tokens"] for r in batchd.results())
    after = _plan(batchd, src, "--no-cache")["targets"]["openai:gpt-5.4-nano"]
    # The default 4 bytes per token is far off for these lines; the learned ratio is not.
    assert abs(before["input_tokens"] - actual) > 0.3 * actual
    assert abs(after["input_tokens"] - actual) <= 12  # one token of rounding per request


# --- units --------------------------------------------------------------------------------


def _settings(tmp: Path, **env: str) -> Settings:
    empty = tmp / "empty.toml"
    empty.write_text("")
    return load_settings(environ=env, config_path=empty)


def test_alias_settings_are_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "b.toml"
    cfg.write_text('[models.x]\ntargets = ["vllm:tiny", "nosuch:model"]\n')
    with pytest.raises(BatchdError) as exc:
        load_settings(environ={}, config_path=cfg)
    assert "vllm:tiny" in exc.value.message and "nosuch:model" in exc.value.message
    s = _settings(tmp_path, BATCHD_PLANNER_GPU_RESERVED="true")
    assert s.planner.gpu_reserved is True


def test_capacity_counts_window_seconds_before_each_deadline(tmp_path: Path) -> None:
    s = _settings(
        tmp_path,
        BATCHD_VLLM_MODEL="m",
        BATCHD_VLLM_WINDOWS="22:00-06:00",
        BATCHD_VLLM_TIMEZONE="Europe/Berlin",
        BATCHD_VLLM_ADMIT_MARGIN_S="600",
    )
    now = 1795003200.0  # 2026-11-18T12:00Z, 13:00 in Berlin
    hours = 3600.0
    caps = gpu_capacity_s(s, now, np.array([now + 8 * hours, now + 10 * hours, now + 48 * hours]))
    # 21:00Z = 22:00 Berlin: nothing yet; 23:00Z: 1 h of window; 2 days: two nights less margin
    assert caps.tolist() == pytest.approx([0.0, hours, 2 * (8 * hours - 600)])


def test_tokenizer_counts_offline_and_falls_back(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        ["hello world again"], trainers.WordLevelTrainer(special_tokens=["[UNK]"])
    )
    tok.save(str(tmp_path / "tokenizer.json"))
    messages = [{"role": "user", "content": "hello world hello again"}]
    assert TokenCounter(str(tmp_path)).count(messages) == 4 + 4  # 4 words + role markers
    assert TokenCounter(str(tmp_path / "missing")).count(messages) == -1


def test_observer_measures_throughput_ratios_and_planner_uses_them(tmp_path: Path) -> None:
    gpu_chunk = Chunk(
        chunk_id="c1", run_id="r", backend="vllm", model="tiny", path="p", n_requests=2, n_bytes=0
    )
    vendor_chunk = Chunk(
        chunk_id="c2",
        run_id="r",
        backend="openai",
        model="gpt-5.4-nano",
        path="p",
        n_requests=2,
        n_bytes=800,
        est_max_tokens=200,
    )
    obs = Observer("H100")
    for _ in range(2):
        obs.add(
            gpu_chunk,
            Outcome(status=SUCCEEDED, input_tokens=300, output_tokens=700, gpu_seconds=0.5),
        )
        obs.add(vendor_chunk, Outcome(status=SUCCEEDED, input_tokens=50, output_tokens=25))
    store = SqliteStore(tmp_path / "s.db")
    store.add_observations(obs.sums())
    learned = Observations(store.observations())
    store.close()
    assert learned.tokens_per_gpu_s("tiny", "H100") == 2000.0
    assert learned.bytes_per_token("gpt-5.4-nano") == 8.0
    assert learned.output_ratio("gpt-5.4-nano") == 0.25
    assert throughput_key("tiny", "H100") in learned._sums and bytes_per_token_key("x") == "bpt|x"
    settings = _settings(tmp_path, BATCHD_VLLM_MODEL="tiny", BATCHD_VLLM_GPU_TYPE="H100")
    planner = Planner(settings, load_price_book(settings), learned, now=0.0)
    assert planner.tokens_per_gpu_s == 2000.0
    ts = TargetSet("gpt-5.4-nano", [("openai", "gpt-5.4-nano")], "gpt-5.4-nano")
    ts.add([800], 100, 1e12, b"k" * 16, -1)
    p = planner.price(ts)
    assert p.input_tokens[0, 0] == 100 and p.output_tokens[0, 0] == 25


def test_alias_target_on_another_openai_compatible_provider(
    batchd: Batchd, emulator: OpenAIBatchEmulator
) -> None:
    _config(
        batchd.tmp,
        f"""[providers.acme]
base_url = "{emulator.base_url}"
api_key_env = "ACME_KEY"
[prices."acme-llm"]
vendor = "acme"
input_per_mtok = 0.01
output_per_mtok = 0.02
[models.cheap]
targets = ["openai:gpt-5.4-nano", "acme:acme-llm"]
""",
    )
    src = write_jsonl(batchd.tmp / "jobs.jsonl", [chat("a", "alpha", model="cheap")])
    plan = _plan(batchd, src)
    assert list(plan["targets"]) == ["acme:acme-llm"]
    proc = batchd.submit(src, ACME_KEY=API_KEY, OPENAI_API_KEY="")
    assert proc.returncode == 0, proc.stderr
    (row,) = batchd.results()
    assert (row["backend"], row["model_used"], row["status"]) == ("acme", "acme-llm", "succeeded")
    assert row["baseline_cost_usd"] > row["cost_usd"] > 0  # baseline: gpt-5.4-nano realtime


@st.composite
def _requests(draw: st.DrawFn) -> list[tuple[int, int, int, float]]:
    """(alias number, line bytes, max_tokens, deadline hours from now) per request."""
    n = draw(st.integers(1, 40))
    return [
        (
            draw(st.integers(0, 2)),
            draw(st.integers(50, 40_000)),
            draw(st.sampled_from([0, 16, 256, 2048])),
            draw(st.sampled_from([2.0, 11.0, 23.0, 25.0, 40.0, 70.0])),
        )
        for _ in range(n)
    ]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(reqs=_requests(), reserved=st.booleans())
def test_plan_properties(
    tmp_path: Path, reqs: list[tuple[int, int, int, float]], reserved: bool
) -> None:
    """Capacity before every deadline, deadlines and the all-vendor cost hold for any workload."""
    s = _settings(
        tmp_path,
        BATCHD_VLLM_MODEL="tiny",
        BATCHD_VLLM_WINDOWS="22:00-23:30,sat 10:00-12:00",
        BATCHD_VLLM_THROUGHPUT_TOKENS_PER_S="300",
        BATCHD_VLLM_GPU_HOURLY_USD="0.05",
        BATCHD_PLANNER_GPU_RESERVED=str(reserved).lower(),
    )
    now = 1795003200.0
    sets = [
        TargetSet("a", [("vllm", "tiny"), ("openai", "gpt-5.4-nano")], "gpt-5.4-nano"),
        TargetSet("b", [("openai", "gpt-5.4-mini"), ("vllm", "tiny")], "gpt-5.4-mini"),
        TargetSet("c", [("openai", "gpt-5.4-nano")], "gpt-5.4-nano"),
    ]
    for alias, n_bytes, max_tokens, hours in reqs:
        ts = sets[alias]
        ts.add([n_bytes] * len(ts.targets), max_tokens, now + hours * 3600, b"k" * 16, -1)
    planner = Planner(s, load_price_book(s), Observations(), now)
    priced = planner.decide(sets)
    on_gpu_s, on_gpu_deadline = [], []
    for ts in sets:
        if not len(ts):
            continue
        p = priced[ts.name]
        deadline = np.frombuffer(ts.deadline_at, dtype=np.float64)
        vendor_cols = [j for j, (b, _) in enumerate(ts.targets) if b != "vllm"]
        cheapest_vendor = p.cost_usd[:, vendor_cols].min(axis=1)
        for i, j in enumerate(ts.choice.tolist()):
            if j == UNMEETABLE:
                assert not np.isfinite(cheapest_vendor[i])  # a vendor in time was available
                continue
            backend = ts.targets[j][0]
            if backend == "vllm":
                on_gpu_s.append(p.gpu_s[i])
                on_gpu_deadline.append(deadline[i])
                marginal = p.gpu_marginal_usd[i]
                assert marginal <= cheapest_vendor[i]  # never dearer than its cheapest vendor
            else:
                in_time = deadline[i] >= planner.ready_at(*ts.targets[j])
                assert in_time or p.sync[i, j]  # a batch in time, else planned synchronously
                assert p.cost_usd[i, j] == cheapest_vendor[i]
    if on_gpu_s:
        used_s, due = np.array(on_gpu_s), np.array(on_gpu_deadline)
        cap = gpu_capacity_s(s, now, np.unique(due))
        for d, c in zip(np.unique(due), cap, strict=True):
            assert used_s[due <= d].sum() <= c + 1e-6  # GPU time before each deadline fits


def test_alias_target_served_by_another_vendor_is_an_invalid_line(batchd: Batchd) -> None:
    _config(batchd.tmp, '[models.mixed]\ntargets = ["openai:claude-haiku-4-5"]\n')
    src = write_jsonl(batchd.tmp / "j.jsonl", [{"model": "mixed", "prompt": "x"}])
    plan = _plan(batchd, src)
    assert plan["stats"]["invalid_by_type"] == {"bad_alias": 1} and not plan["targets"]


def test_gpu_work_queued_by_other_runs_comes_off_the_capacity(batchd: Batchd) -> None:
    _config(
        batchd.tmp, VLLM + 'windows = ["22:00-23:00"]\n[models.small]\ntargets = ["vllm:tiny"]\n'
    )
    src = write_jsonl(batchd.tmp / "j.jsonl", [{"model": "small", "prompt": "x", "max_tokens": 5}])
    assert _plan(batchd, src, "--within", "20h")["gpu"]["capacity_s"] == pytest.approx(3600)
    store = SqliteStore(batchd.home / "state.db")
    store.create_run(Run(run_id="other", base_id="o", source="/s", output="/o", options={}))
    queued = Chunk(
        chunk_id="other-c1",
        run_id="other",
        backend="vllm",
        model="tiny",
        path="p",
        n_requests=9,
        n_bytes=9,
        est_gpu_s=3000.0,
    )
    store.add_chunks([queued])
    store.close()
    plan = _plan(batchd, src, "--within", "20h")
    assert plan["gpu"]["committed_s"] == 3000.0
    assert plan["gpu"]["capacity_s"] == pytest.approx(600)


def test_far_deadlines_count_capacity_up_to_the_horizon(tmp_path: Path) -> None:
    s = _settings(tmp_path, BATCHD_VLLM_MODEL="m", BATCHD_VLLM_WINDOWS="sun 00:00-01:00")
    caps = gpu_capacity_s(s, 0.0, np.array([1e12, np.inf]))
    assert caps.tolist() == pytest.approx([13 * 3600 - 13 * 300] * 2)  # 13 Sundays, less margins


def test_an_earlier_duplicate_deadline_binds_its_leader(batchd: Batchd) -> None:
    # On-demand GPU time costs more than the vendor: alone, the request goes to the vendor.
    _config(
        batchd.tmp,
        'fallback = "none"\n'  # the GPU, not the guard's flex tier, for the early follower
        + VLLM.replace("2.0", "500.0")
        + """windows = ["22:00-23:30"]
throughput_tokens_per_s = 100
[planner]
turnaround_s = 86400
[models.small]
targets = ["vllm:tiny", "openai:gpt-5.4-nano"]
""",
    )
    leader = {"id": "a", "model": "small", "prompt": "same", "max_tokens": 9}
    alone = _plan(batchd, write_jsonl(batchd.tmp / "a.jsonl", [leader]), "--within", "30h")
    assert list(alone["targets"]) == ["openai:gpt-5.4-nano"]
    # The same request again, due tonight at 23:00: only tonight's GPU window can answer both.
    follower = {**leader, "id": "b", "deadline": "2026-11-23T23:00:00Z"}
    both = _plan(batchd, write_jsonl(batchd.tmp / "b.jsonl", [leader, follower]), "--within", "30h")
    assert both["stats"]["in_run_duplicates"] == 1
    assert list(both["targets"]) == ["vllm:tiny"] and not both["unmeetable"]
