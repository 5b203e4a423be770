"""Several inputs (embeddings) or prompts (completions) on one line: checks, the answers
spread over the row's columns, the vLLM parts joined back, and hostile values (hypothesis)
that never raise and always give one row."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchd.backends.input_lists import spread_answers
from batchd.backends.vllm.engine import Choice, GenRequest, GenResult
from batchd.backends.vllm.gather import Gather, join, lines_in, part_id
from batchd.backends.vllm.prompts import Refused, plan_of, prompts_of
from batchd.config.vllm_settings import EMBED, GENERATE
from batchd.core.endpoints import MAX_INPUT_ITEMS, check_body, inputs_of
from batchd.core.fields import Bad
from batchd.intake.line_sizes import max_tokens_of
from batchd.outcome import SUCCEEDED, Outcome
from batchd.output.openai_export import answer_body
from batchd.requests import COMPLETIONS, EMBEDDINGS, Request, parse_request
from tests.support.hostile import check_one_row_per_line, ingest_rows, open_test_services


def _outcome(answer: dict[str, Any]) -> Outcome:
    return Outcome(status=SUCCEEDED, response_json=json.dumps(answer), output_text="first")


def _line(body: dict[str, Any]) -> bytes:
    return msgspec.json.encode({"custom_id": "a", "body": body})


def test_limits_of_several_inputs() -> None:
    check_body(EMBEDDINGS, {"input": ["a", "b"]}, "")
    check_body(EMBEDDINGS, {"input": [[1, 2], [3]]}, "")
    check_body(COMPLETIONS, {"prompt": ["", "b"]}, "")  # an empty prompt is a prompt
    cases = [
        ({"input": ["x"] * (MAX_INPUT_ITEMS + 1)}, "too_many_inputs"),
        ({"input": [[1] * 2000] * 151}, "too_many_tokens"),  # 302,000 tokens together
        ({"input": ["a", [1, 2]]}, "bad_input"),  # strings and token arrays mixed
        ({"input": ["a", ""]}, "bad_input"),
        ({"input": [[1], []]}, "bad_input"),
    ]
    for body, kind in cases:
        with pytest.raises(Bad) as err:
            check_body(EMBEDDINGS, body, "body.")
        assert err.value.args[0] == kind, body
    assert inputs_of(EMBEDDINGS, {"input": ["a"]}) is None
    assert inputs_of(EMBEDDINGS, {"input": [1, 2]}) is None  # one token array
    assert inputs_of(COMPLETIONS, {"prompt": ["a", "b"]}) == ["a", "b"]
    line = {"model": "davinci-002", "endpoint": "completions", "prompt": ["a", "b", "c"]}
    parsed = parse_request({**line, "max_tokens": 7}, 1, "t")
    assert isinstance(parsed, Request) and max_tokens_of(parsed) == 21  # the cap per prompt


def test_answers_spread_in_input_order() -> None:
    emb = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
            {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]},
        ],
    }
    o = spread_answers(_outcome(emb), _line({"input": ["a", "b"]}))
    assert o.embeddings == [[1.0, 0.0], [0.0, 1.0]] and o.embedding is None
    one = spread_answers(_outcome(emb), _line({"input": "a"}))
    assert one.embeddings is None  # one input: the embedding column, as before
    texts = ["p0c0", "p0c1", "p1c0", "p1c1"]
    finish = ["stop", "stop", "length", "stop"]
    completion = {
        "object": "text_completion",
        "choices": [
            {"index": i, "text": t, "finish_reason": f}
            for i, (t, f) in enumerate(zip(texts, finish, strict=True))
        ],
    }
    o = spread_answers(_outcome(completion), _line({"prompt": ["a", "b"], "n": 2}))
    assert o.output_texts == ["p0c0", "p1c0"] and o.output_text is None
    assert o.finish_reason == "length"
    # the export builds OpenAI's shape from the columns when the vendor's answer is another
    row = {"embeddings": [[1.0], [2.0]], "input_tokens": 4, "line_no": 1, "run_id": "r"}
    body = answer_body(row, EMBEDDINGS, "float")
    assert [(d["index"], d["embedding"]) for d in body["data"]] == [(0, [1.0]), (1, [2.0])]
    row = {"output_texts": ["x", "y"], "finish_reason": "stop", "line_no": 1, "run_id": "r"}
    body = answer_body(row, COMPLETIONS, None)
    assert [(c["index"], c["text"]) for c in body["choices"]] == [(0, "x"), (1, "y")]


def _req(rid: str, on_done: Any) -> GenRequest:
    return GenRequest(request_id=rid, prompt="p", sampling={}, on_done=on_done)


def test_vllm_parts_join_back_in_order_and_a_failed_part_fails_the_line() -> None:
    ended: list[GenResult] = []
    gather = Gather(2, lambda _req, r: ended.append(r))
    second = GenResult(prompt_tokens=3, output_tokens=2, gpu_seconds=0.5)
    second.choices = [Choice(text="b", finish_reason="length", output_tokens=2)]
    first = GenResult(prompt_tokens=4, output_tokens=1, gpu_seconds=0.25)
    first.choices = [Choice(text="a", finish_reason="stop", output_tokens=1)]
    gather.on_part(_req(part_id("c/v", 1), gather.on_part), second)
    assert not ended  # waits for every part
    gather.on_part(_req(part_id("c/v", 0), gather.on_part), first)
    (r,) = ended
    assert [c.text for c in r.choices] == ["a", "b"]
    assert (r.prompt_tokens, r.output_tokens, r.gpu_seconds) == (7, 3, 0.75)
    vectors = join([GenResult(embedding=[1.0]), GenResult(embedding=[2.0])])
    assert vectors.vectors == [[1.0], [2.0]]
    failed = join([first, GenResult(error_type="engine_error", error_message="boom")])
    assert failed.error_type == "engine_error"
    reqs = [_req(part_id("c/v", 0), None), _req(part_id("c/v", 1), None), _req("c/w", None)]
    assert lines_in(reqs) == 2  # the parts of one line count once when withdrawn


_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=8),
)
_item = st.one_of(
    _scalar,
    st.lists(st.integers(-5, 2**33), max_size=4),
    st.dictionaries(st.text(max_size=3), _scalar, max_size=2),
)
HOSTILE = st.one_of(
    _scalar,
    st.lists(_item, max_size=6),
    st.lists(st.text(max_size=5), min_size=2, max_size=5),
    st.lists(st.lists(st.integers(0, 50_000), min_size=1, max_size=4), min_size=2, max_size=4),
)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = open_test_services(tmp_path_factory.mktemp("inputs"))
    yield s
    s.close()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(values=st.lists(st.tuples(st.booleans(), HOSTILE), min_size=1, max_size=8))
def test_hostile_inputs_and_prompts_never_raise_and_give_one_row_each(
    svc: Any, values: list[tuple[bool, Any]]
) -> None:
    lines = []
    for i, (embed, value) in enumerate(values):
        if embed:
            body = {"model": "text-embedding-3-small", "input": value}
            url = "/v1/embeddings"
        else:
            body = {"model": "gpt-3.5-turbo-instruct", "prompt": value, "n": 2}
            url = "/v1/completions"
        endpoint = EMBEDDINGS if embed else COMPLETIONS
        lines.append(
            json.dumps({"custom_id": f"r{i}", "method": "POST", "url": url, "body": body}).encode()
        )
        # the other stages a value may reach never raise anything but their refusal
        try:
            plan = plan_of(endpoint, body, EMBED if embed else GENERATE, "", "m")
            assert len(prompts_of(plan, body, None)) >= 1
        except Refused:
            pass
        inputs_of(endpoint, body)
        spread_answers(_outcome({"object": "list", "data": [{"index": "x"}]}), lines[-1])
    stats, rows, _ = ingest_rows(svc, b"\n".join(lines) + b"\n")
    check_one_row_per_line(stats, rows, len(lines))
    assert not [r for r in rows if r["error_type"] == "internal_error"], rows
