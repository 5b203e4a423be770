"""The judge metric (issue 18 point 2): strict verdict parsing, its settings, and a run whose
judge is a model on the OpenAI emulator (judge requests are batch work of the run, their cost
the guard's)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchd.config.settings import load_settings
from batchd.errors import BatchdError
from batchd.quality.verdicts import parse_verdict
from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("YES", True),
        ("no", False),
        ("  Yes\n", True),
        ('{"verdict": "yes"}', True),
        (' {"verdict":"NO"} ', False),
        ("YES.", None),
        ("Yes, it is as good", None),
        ("yes no", None),
        ("", None),
        ('{"verdict": "yes", "why": "same"}', None),
        ('{"verdict": true}', None),
        ('["yes"]', None),
        ('{"verdict": "maybe"}', None),
        ("ｙｅｓ", None),  # fullwidth letters are not the word
        ("[" * 5000, None),
        (None, None),
    ],
)
def test_verdicts_are_parsed_strictly(text: str | None, verdict: bool | None) -> None:
    assert parse_verdict(text) is verdict


@given(st.text())
def test_arbitrary_text_never_raises_and_only_exact_verdicts_count(text: str) -> None:
    got = parse_verdict(text)
    stripped = text.strip()
    exact = {"yes": True, "no": False}.get(stripped.lower()) if stripped.isascii() else None
    if exact is not None:
        assert got is exact
    elif got is not None:  # only the JSON form is left
        value = json.loads(stripped)
        assert list(value) == ["verdict"] and value["verdict"].lower() == ("yes" if got else "no")


@given(st.sampled_from(["yes", "no", "YES", "No"]), st.text(min_size=1))
def test_a_verdict_with_anything_more_is_unparsable(word: str, extra: str) -> None:
    if (word + extra).strip().lower() in ("yes", "no"):
        return  # only whitespace was added
    assert parse_verdict(word + extra) is None


GUARDED = """
[models.cheap]
targets = ["openai:gpt-5.4-nano"]
reference = "claude-haiku-4-5"

[models.cheap.quality]
shadow_fraction = 1.0
shadow_min = 1
metric = "judge"
judge = "{judge}"
min_agreement = 0.5
{extra}
"""


def _load(tmp_path: Path, **fmt: str) -> object:
    (tmp_path / "batchd.toml").write_text(GUARDED.format(**{"judge": "", "extra": "", **fmt}))
    return load_settings(environ={}, config_path=tmp_path / "batchd.toml")


def test_judge_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(BatchdError, match=r'metric = "judge" needs judge'):
        _load(tmp_path)
    with pytest.raises(BatchdError, match=r"judge_prompt must name \{reference\}"):
        _load(tmp_path, judge="gpt-5.4-mini", extra='judge_prompt = "{request} {answer}"')
    with pytest.raises(BatchdError, match=r"judge_prompt: only"):
        _load(tmp_path, judge="gpt-5.4-mini", extra='judge_prompt = "{request} {x}"')
    assert _load(tmp_path, judge="gpt-5.4-mini") is not None


def test_a_run_judged_by_a_model_on_the_emulator(
    batchd: Batchd, emulator: OpenAIBatchEmulator, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    (tmp_path / "batchd.toml").write_text(GUARDED.format(judge="gpt-5.4-mini", extra=""))
    # The judge answers {"verdict": "yes"} by its structured output; a request carrying the
    # emulator's [[schema:invalid]] marker makes the judge's answer break it: unparsable.
    lines = [
        chat(f"q{i}", f"question {i}" + (" [[schema:invalid]]" if i < 2 else ""), model="cheap")
        for i in range(6)
    ]
    proc = batchd.submit(write_jsonl(tmp_path / "a.jsonl", lines))
    assert proc.returncode == 0, proc.stderr
    rows = batchd.results()
    assert len(rows) == 6 and {r["model_used"] for r in rows} == {"gpt-5.4-nano"}
    judged = [r for r in emulator.requests_seen() if r["body"]["model"] == "gpt-5.4-mini"]
    assert len(judged) == 6 and all(r["custom_id"].startswith("xj") for r in judged)
    prompt = judged[0]["body"]["messages"][0]["content"]
    assert "question" in prompt and "echo: question" in prompt  # the request and both answers
    assert judged[0]["body"]["response_format"]["json_schema"]["name"] == "verdict"
    (q,) = pq.read_table(batchd.only_run_dir() / "quality.parquet").to_pylist()
    assert q["metric"] == "judge"
    assert (q["samples"], q["agreed"], q["unparsable_verdicts"], q["unscored"]) == (4, 4, 2, 0)
    # The judge's and the reference's answers are the guard's cost, never the lines'.
    row_cost = sum(r["cost_usd"] for r in rows)
    assert sum(c["cost_usd"] for c in batchd.costs()) == pytest.approx(row_cost)
    assert q["guard_cost_usd"] > 0
    report = batchd.run("report", rows[0]["run_id"])
    assert report.returncode == 0, report.stderr
    assert "unparsable" in report.stdout


def test_a_judge_batchd_cannot_send_to_stops_the_run_before_anything_is_bought(
    batchd: Batchd, emulator: OpenAIBatchEmulator, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    (tmp_path / "batchd.toml").write_text(GUARDED.format(judge="no-such-judge-model", extra=""))
    src = write_jsonl(tmp_path / "a.jsonl", [chat("q0", "question", model="cheap")])
    proc = batchd.submit(src)
    assert proc.returncode != 0
    assert "models.cheap.quality.judge = 'no-such-judge-model'" in proc.stderr
    assert emulator.requests_seen() == [] and claude.requests_seen() == []
