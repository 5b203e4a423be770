"""Quick checks of the Anthropic Message Batches emulator, driven through the real SDK."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import anthropic
import pytest
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from tests.emulators.anthropic_batch import AnthropicBatchEmulator, tokens

MODEL = "claude-haiku-4-5"
KEY = "sk-ant-test"


@pytest.fixture
def emu() -> Iterator[AnthropicBatchEmulator]:
    with AnthropicBatchEmulator() as emulator:
        yield emulator


@pytest.fixture
def client(emu: AnthropicBatchEmulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=emu.base_url, max_retries=0)


def req(custom_id: str, text: Any, max_tokens: int = 100, **params: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "params": {
            "model": MODEL,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": text}],
            **params,
        },
    }


def create(client: anthropic.Anthropic, requests: list[dict[str, Any]]) -> str:
    return client.messages.batches.create(requests=requests).id  # type: ignore[arg-type]


def run_to_end(client: anthropic.Anthropic, batch_id: str) -> MessageBatch:
    for _ in range(20):
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
    raise AssertionError("batch never ended")


def results(client: anthropic.Anthropic, batch_id: str) -> list[MessageBatchIndividualResponse]:
    return list(client.messages.batches.results(batch_id))


def by_id(items: list[MessageBatchIndividualResponse]) -> dict[str, Any]:
    return {item.custom_id: item.result for item in items}


def http(
    emu: AnthropicBatchEmulator,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        emu.base_url + path,
        data=data,
        method=method,
        headers={"content-type": "application/json", **(headers or {"x-api-key": KEY})},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


# ---------------------------------------------------------------------- auth and shapes


def test_auth(emu: AnthropicBatchEmulator) -> None:
    bad = anthropic.Anthropic(api_key="sk-ant-wrong", base_url=emu.base_url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        bad.messages.batches.list()
    assert info.value.type == "authentication_error"
    assert info.value.request_id is not None
    # The documented x-api-key header works too; no key at all is refused.
    status, headers, body = http(emu, "GET", "/v1/messages/batches")
    assert status == 200 and "request-id" in {k.lower() for k in headers}
    assert json.loads(body)["data"] == []
    status, _, body = http(emu, "GET", "/v1/messages/batches", headers={"x": "y"})
    assert status == 401
    assert json.loads(body) == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "x-api-key header is required"},
    }


def test_create_returns_documented_batch_object(
    emu: AnthropicBatchEmulator, client: anthropic.Anthropic
) -> None:
    raw = client.messages.batches.with_raw_response.create(
        requests=[req("a", "hi"), req("b", "there")]  # type: ignore[list-item]
    )
    obj = json.loads(raw.http_response.content)
    assert set(obj) == {
        "id", "type", "processing_status", "request_counts", "ended_at", "created_at",
        "expires_at", "archived_at", "cancel_initiated_at", "results_url",
    }  # fmt: skip
    assert obj["id"].startswith("msgbatch_") and obj["type"] == "message_batch"
    assert obj["processing_status"] == "in_progress"
    assert obj["request_counts"] == {
        "processing": 2, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0
    }  # fmt: skip
    assert obj["ended_at"] is None and obj["results_url"] is None
    batch = raw.parse()
    assert batch.expires_at - batch.created_at == timedelta(hours=24)
    assert emu.batches()[0]["id"] == batch.id
    assert emu.requests_seen() == [req("a", "hi"), req("b", "there")]


# ---------------------------------------------------------------------- lifecycle and results


def test_lifecycle_results_and_outcomes(
    emu: AnthropicBatchEmulator, client: anthropic.Anthropic
) -> None:
    requests = [
        req("ok", "hello world"),
        req("trunc", "one two three four five", max_tokens=3),
        req("stop", "alpha beta STOP gamma", stop_sequences=["STOP", "gamma"]),
        req("inv", "x [[errored:invalid]]"),
        req("ovl", "x [[errored:overloaded]]"),
        req("api", "x [[errored:api]]"),
        req("blocks", [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]),
        {
            "custom_id": "multi",
            "params": {
                "model": MODEL,
                "max_tokens": 50,
                "messages": [
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "reply"},
                    {"role": "user", "content": "last one"},
                ],
            },
        },
    ]
    batch_id = create(client, requests)
    ended = client.messages.batches.retrieve(batch_id)  # polls_per_step=1: one retrieve ends it
    assert ended.processing_status == "ended" and ended.ended_at is not None
    assert ended.results_url == f"{emu.base_url}/v1/messages/batches/{batch_id}/results"
    counts = ended.request_counts
    assert (counts.processing, counts.succeeded, counts.errored) == (0, 5, 3)
    items = results(client, batch_id)
    assert all(isinstance(i, MessageBatchIndividualResponse) for i in items)
    assert [i.custom_id for i in items] != [r["custom_id"] for r in requests]  # shuffled
    out = by_id(items)
    assert set(out) == {r["custom_id"] for r in requests}

    ok = out["ok"]
    assert ok.type == "succeeded"
    assert ok.message.content[0].text == "echo: hello world"
    assert ok.message.stop_reason == "end_turn" and ok.message.model == MODEL
    assert ok.message.id.startswith("msg_") and ok.message.role == "assistant"
    usage = ok.message.usage
    assert usage.input_tokens == tokens("hello world") and usage.output_tokens == 3
    assert usage.service_tier == "batch" and usage.cache_read_input_tokens == 0

    trunc = out["trunc"].message
    assert trunc.content[0].text == "echo: one two" and trunc.stop_reason == "max_tokens"
    assert trunc.usage.output_tokens == 3
    stop = out["stop"].message
    assert stop.content[0].text == "echo: alpha beta " and stop.stop_reason == "stop_sequence"
    assert stop.stop_sequence == "STOP"
    assert out["blocks"].message.content[0].text == "echo: a b"
    assert out["multi"].message.content[0].text == "echo: last one"
    assert out["multi"].message.usage.input_tokens == sum(
        tokens(s) for s in ("first", "reply", "last one")
    )
    for cid, kind in (("inv", "invalid_request_error"), ("ovl", "overloaded_error"),
                      ("api", "api_error")):  # fmt: skip
        result = out[cid]
        assert result.type == "errored"
        assert result.error.type == "error" and result.error.error.type == kind
    assert emu.results(batch_id)[0]["custom_id"] == "ok"  # input order


def test_polls_per_step_and_results_before_end() -> None:
    with AnthropicBatchEmulator(polls_per_step=4) as emu:
        client = anthropic.Anthropic(api_key=KEY, base_url=emu.base_url, max_retries=0)
        batch_id = create(client, [req("a", "x"), req("b", "y")])
        for _ in range(2):
            batch = client.messages.batches.retrieve(batch_id)
            assert batch.processing_status == "in_progress"
            assert batch.request_counts.processing == 2
        # results() retrieves first (poll 3): no results_url yet, the SDK refuses client-side.
        with pytest.raises(anthropic.AnthropicError, match="results_url"):
            client.messages.batches.results(batch_id)
        assert len(results(client, batch_id)) == 2  # its retrieve is poll 4: the batch ends


def test_results_endpoint_refuses_before_end(
    emu: AnthropicBatchEmulator, client: anthropic.Anthropic
) -> None:
    batch_id = create(client, [req("a", "x")])
    status, _, body = http(emu, "GET", f"/v1/messages/batches/{batch_id}/results")
    assert status == 404
    assert json.loads(body)["error"]["type"] == "not_found_error"
    assert "not available" in json.loads(body)["error"]["message"]


def test_manual_step_mode(emu: AnthropicBatchEmulator, client: anthropic.Anthropic) -> None:
    emu.set_step_mode(True)
    batch_id = create(client, [req("a", "x")])
    for _ in range(3):
        assert client.messages.batches.retrieve(batch_id).processing_status == "in_progress"
    emu.advance_all()
    assert client.messages.batches.retrieve(batch_id).processing_status == "ended"


# ---------------------------------------------------------------------- validation


BAD_CASES: list[tuple[Any, str]] = [
    ([], "at least 1 item"),
    ([req("a", "x"), req("a", "y")], "requests.1.custom_id: Duplicate custom_id 'a'"),
    ([req("a", "x"), req("bad id!", "y")], "requests.1.custom_id: String should match pattern"),
    ([req("x" * 65, "y")], "requests.0.custom_id"),
    ([{"custom_id": "a", "params": {"max_tokens": 5, "messages": []}}], "requests.0.params.model"),
    ([req("a", "x"), req("b", "y", max_tokens=0)], "requests.1.params.max_tokens"),
    ([{"custom_id": "a", "params": {"model": MODEL, "max_tokens": 5, "messages": []}}],
     "requests.0.params.messages"),
    ([req("a", "x", stream=True)], "stream is not supported in batches"),
    ([req("a", "x", system=[{"type": "image"}])], "requests.0.params.system.0"),
    ([{"custom_id": "a", "params": {"model": MODEL, "max_tokens": 5,
                                    "messages": [{"role": "system", "content": "x"}]}}],
     "requests.0.params.messages.0.role"),
    ([req("a", [{"type": "text", "text": str(i), "cache_control": {"type": "ephemeral"}}
                for i in range(5)])], "A maximum of 4 blocks with cache_control"),
]  # fmt: skip


@pytest.mark.parametrize(("requests", "needle"), BAD_CASES)
def test_validation_rejects_whole_batch(
    emu: AnthropicBatchEmulator, client: anthropic.Anthropic, requests: Any, needle: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.batches.create(requests=requests)
    assert info.value.type == "invalid_request_error"
    assert needle in str(info.value.api_message)
    assert emu.batches() == []


def test_size_and_count_limits(emu: AnthropicBatchEmulator, client: anthropic.Anthropic) -> None:
    emu.max_requests_per_batch = 2
    with pytest.raises(anthropic.BadRequestError, match="at most 2 items"):
        create(client, [req("a", "x"), req("b", "x"), req("c", "x")])
    emu.max_batch_bytes = 1000
    with pytest.raises(anthropic.RequestTooLargeError) as info:
        create(client, [req("a", "x" * 2000)])
    assert info.value.status_code == 413 and info.value.type == "request_too_large"
    assert emu.batches() == []


def test_async_params_validation_errors_the_request(
    emu: AnthropicBatchEmulator, client: anthropic.Anthropic
) -> None:
    emu.params_validation = "async"
    batch_id = create(client, [req("good", "x"), req("bad", "x", stream=True)])
    batch = run_to_end(client, batch_id)
    assert (batch.request_counts.succeeded, batch.request_counts.errored) == (1, 1)
    bad = by_id(results(client, batch_id))["bad"]
    assert bad.error.error.type == "invalid_request_error"
    assert "stream is not supported" in bad.error.error.message


# ---------------------------------------------------------------------- faults


def test_create_faults_retry_and_surface(emu: AnthropicBatchEmulator) -> None:
    retrying = anthropic.Anthropic(api_key=KEY, base_url=emu.base_url, max_retries=2)
    emu.faults.rate_limit_creates = 1
    emu.faults.overloaded_creates = 1
    assert create(retrying, [req("a", "x")]).startswith("msgbatch_")
    assert (emu.faults.rate_limit_creates, emu.faults.overloaded_creates) == (0, 0)
    assert len(emu.batches()) == 1

    plain = anthropic.Anthropic(api_key=KEY, base_url=emu.base_url, max_retries=0)
    emu.faults.rate_limit_creates = 1
    with pytest.raises(anthropic.RateLimitError) as info:
        create(plain, [req("a", "x")])
    assert info.value.type == "rate_limit_error"
    assert info.value.response.headers["retry-after"] == "1"
    assert info.value.response.headers["retry-after-ms"] == "50"
    emu.faults.overloaded_creates = 1
    with pytest.raises(anthropic.OverloadedError) as over:
        create(plain, [req("a", "x")])
    assert over.value.status_code == 529 and over.value.type == "overloaded_error"
    assert len(emu.batches()) == 1


def test_retrieve_faults_do_not_advance(
    emu: AnthropicBatchEmulator, client: anthropic.Anthropic
) -> None:
    batch_id = create(client, [req("a", "x")])
    emu.faults.rate_limit_retrieves = 1
    emu.faults.overloaded_retrieves = 1
    with pytest.raises(anthropic.RateLimitError):
        client.messages.batches.retrieve(batch_id)
    with pytest.raises(anthropic.OverloadedError):
        client.messages.batches.retrieve(batch_id)
    assert emu.batches()[0]["processing_status"] == "in_progress"
    assert client.messages.batches.retrieve(batch_id).processing_status == "ended"


def test_expire_fault(emu: AnthropicBatchEmulator, client: anthropic.Anthropic) -> None:
    emu.faults.expire_batches = 1
    batch_id = create(client, [req(f"r{i}", "x [[errored:api]]" if i == 1 else "x")
                               for i in range(5)])  # fmt: skip
    counts = run_to_end(client, batch_id).request_counts
    assert (counts.succeeded, counts.errored, counts.expired) == (1, 1, 3)
    out = by_id(results(client, batch_id))
    assert [out[f"r{i}"].type for i in range(5)] == [
        "succeeded", "errored", "expired", "expired", "expired"
    ]  # fmt: skip
    assert run_to_end(client, create(client, [req("z", "x")])).request_counts.succeeded == 1


def test_after_create_hook(emu: AnthropicBatchEmulator, client: anthropic.Anthropic) -> None:
    seen: list[dict[str, Any]] = []
    emu.faults.after_create = seen.append
    batch_id = create(client, [req("a", "x")])
    assert [b["id"] for b in seen] == [batch_id]
    assert seen[0]["processing_status"] == "in_progress"


# ---------------------------------------------------------------------- cancel and delete


def test_cancel_and_delete(emu: AnthropicBatchEmulator, client: anthropic.Anthropic) -> None:
    batch_id = create(client, [req(f"r{i}", "x") for i in range(5)])
    with pytest.raises(anthropic.BadRequestError, match="still processing"):
        client.messages.batches.delete(batch_id)
    canceling = client.messages.batches.cancel(batch_id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    again = client.messages.batches.cancel(batch_id)
    assert again.model_dump() == canceling.model_dump()
    ended = client.messages.batches.retrieve(batch_id)
    assert ended.processing_status == "ended"
    assert (ended.request_counts.succeeded, ended.request_counts.canceled) == (2, 3)
    out = by_id(results(client, batch_id))
    assert [out[f"r{i}"].type for i in range(5)] == ["succeeded"] * 2 + ["canceled"] * 3
    with pytest.raises(anthropic.BadRequestError, match="already ended"):
        client.messages.batches.cancel(batch_id)

    deleted = client.messages.batches.delete(batch_id)
    assert (deleted.id, deleted.type) == (batch_id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch_id)
    assert [b.id for b in client.messages.batches.list()] == []
    assert len(emu.batches()) == 1  # observation keeps deleted batches


def test_cancel_in_manual_mode(emu: AnthropicBatchEmulator, client: anthropic.Anthropic) -> None:
    emu.set_step_mode(True)
    batch_id = create(client, [req("a", "x"), req("b", "y")])
    client.messages.batches.cancel(batch_id)
    assert client.messages.batches.retrieve(batch_id).processing_status == "canceling"
    emu.advance_all()
    counts = client.messages.batches.retrieve(batch_id).request_counts
    assert (counts.succeeded, counts.canceled, counts.processing) == (1, 1, 0)


# ---------------------------------------------------------------------- list


def test_list_pagination(emu: AnthropicBatchEmulator, client: anthropic.Anthropic) -> None:
    ids = [create(client, [req("a", str(i))]) for i in range(5)]
    newest_first = list(reversed(ids))
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2] and page.has_more
    assert (page.first_id, page.last_id) == (newest_first[0], newest_first[1])
    assert [b.id for b in page] == newest_first  # auto-pagination via after_id
    assert [b.id for b in client.messages.batches.list()] == newest_first  # default limit 20
    older = client.messages.batches.list(after_id=newest_first[3])
    assert [b.id for b in older.data] == newest_first[4:] and not older.has_more
    newer = client.messages.batches.list(before_id=newest_first[4], limit=2)
    assert [b.id for b in newer.data] == newest_first[2:4] and newer.has_more
    assert [b.id for b in newer] == newest_first[2:4] + newest_first[:2]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.list(limit=1001)


# ---------------------------------------------------------------------- prompt caching


def cached_req(custom_id: str, system_text: str, user: str, ttl: str | None = None) -> Any:
    cache_control: dict[str, str] = {"type": "ephemeral"}
    if ttl is not None:
        cache_control["ttl"] = ttl
    return req(
        custom_id,
        user,
        system=[{"type": "text", "text": system_text, "cache_control": cache_control}],
    )


def test_prompt_caching() -> None:
    with AnthropicBatchEmulator(min_cache_tokens=100) as emu:
        client = anthropic.Anthropic(api_key=KEY, base_url=emu.base_url, max_retries=0)
        big = "s" * 800  # 201 tokens
        small = "t" * 40  # 11 tokens: below the minimum
        first = create(client, [
            cached_req("w", big, "q1"),
            cached_req("r", big, "q2"),
            cached_req("small", small, "q3"),
            cached_req("h", "h" * 800, "q4", ttl="1h"),
        ])  # fmt: skip
        run_to_end(client, first)
        out = {k: v.message.usage for k, v in by_id(results(client, first)).items()}
        prefix = tokens(big)
        assert out["w"].cache_creation_input_tokens == prefix
        assert out["w"].cache_creation is not None
        assert out["w"].cache_creation.ephemeral_5m_input_tokens == prefix
        assert out["w"].input_tokens == tokens("q1")
        assert out["r"].cache_read_input_tokens == prefix
        assert out["r"].cache_creation_input_tokens == 0
        assert out["small"].cache_creation_input_tokens == 0
        assert out["small"].input_tokens == tokens(small) + tokens("q3")
        assert out["h"].cache_creation is not None
        assert out["h"].cache_creation.ephemeral_1h_input_tokens == tokens("h" * 800)

        # A later batch reads the entry; another model does not share it.
        second = create(client, [
            cached_req("again", big, "q5"),
            {**cached_req("other", big, "q6"),
             "params": {**cached_req("other", big, "q6")["params"], "model": "claude-x"}},
        ])  # fmt: skip
        run_to_end(client, second)
        again = by_id(results(client, second))
        assert again["again"].message.usage.cache_read_input_tokens == prefix
        assert again["other"].message.usage.cache_creation_input_tokens == prefix


def test_synchronous_messages_api(emu: AnthropicBatchEmulator, client: anthropic.Anthropic) -> None:
    params: Any = req("x", "hello you", max_tokens=50)["params"]
    msg = client.messages.create(**params)
    assert msg.content[0].type == "text" and msg.content[0].text == "echo: hello you"
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens == 3
    emu.faults.rate_limit_messages = 1
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(**params)
    assert limited.value.response.headers["retry-after"] == "1"
    emu.faults.overloaded_messages = 1
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        client.messages.create(**params)
    assert overloaded.value.status_code == 529
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(**{**params, "max_tokens": 0})
    assert [c["status"] for c in emu.sync_calls] == [200, 429, 529, 400]
