"""Quick checks of the OpenAI Batch emulator, driven through the real ``openai`` SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Final

import openai
import pytest

from tests.emulators.openai_batch import OpenAIBatchEmulator

MODEL = "gpt-4o-mini"
CHAT: Final = "/v1/chat/completions"


@pytest.fixture
def emu() -> Iterator[OpenAIBatchEmulator]:
    with OpenAIBatchEmulator() as emulator:
        yield emulator


@pytest.fixture
def client(emu: OpenAIBatchEmulator) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=emu.base_url, max_retries=0)


def line(custom_id: str, text: Any, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": MODEL, "messages": [{"role": "user", "content": text}], **body},
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in lines).encode()


def upload(client: openai.OpenAI, data: bytes, name: str = "in.jsonl") -> str:
    return client.files.create(file=(name, data), purpose="batch").id


def create(client: openai.OpenAI, lines: list[dict[str, Any]], **kw: Any) -> str:
    file_id = upload(client, jsonl(lines))
    return client.batches.create(
        input_file_id=file_id, endpoint=CHAT, completion_window="24h", **kw
    ).id


def run_to_end(client: openai.OpenAI, batch_id: str) -> openai.types.Batch:
    for _ in range(20):
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
    raise AssertionError("batch never finished")


def read_jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    text = client.files.content(file_id).text
    return [json.loads(x) for x in text.splitlines()]


def by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["custom_id"]: r for r in records}


def test_auth_required(emu: OpenAIBatchEmulator) -> None:
    bad = openai.OpenAI(api_key="sk-wrong", base_url=emu.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.batches.list()
    assert info.value.code == "invalid_api_key"
    assert info.value.type == "invalid_request_error"


def test_happy_path_lifecycle_and_outputs(emu: OpenAIBatchEmulator, client: openai.OpenAI) -> None:
    lines = [
        line("plain", "hello there world"),
        line("parts", [{"type": "text", "text": "multi"}, {"type": "text", "text": "part"}]),
        line("short", "one two three four five", max_completion_tokens=3),
        line("e400", "bad [[error:400]]"),
        line("e500", "boom [[error:500]]"),
        line("filter", "x [[finish:content_filter]]"),
    ]
    file_id = upload(client, jsonl(lines))
    batch = client.batches.create(
        input_file_id=file_id, endpoint=CHAT, completion_window="24h", metadata={"k": "v"}
    )
    assert batch.status == "validating" and batch.id.startswith("batch_")
    assert batch.expires_at == batch.created_at + 86400
    assert batch.output_file_id is None and batch.errors is None
    statuses = [client.batches.retrieve(batch.id).status for _ in range(3)]
    assert statuses == ["in_progress", "finalizing", "completed"]
    done = client.batches.retrieve(batch.id)
    assert done.completed_at and done.in_progress_at and done.finalizing_at
    assert done.request_counts is not None
    assert done.request_counts.model_dump() == {"total": 6, "completed": 4, "failed": 2}
    assert done.metadata == {"k": "v"} and done.model == MODEL

    out = by_id(read_jsonl(client, done.output_file_id))
    assert set(out) == {"plain", "parts", "short", "filter"}
    plain = out["plain"]["response"]
    assert plain["status_code"] == 200 and out["plain"]["error"] is None
    assert out["plain"]["id"].startswith("batch_req_") and plain["request_id"].startswith("req_")
    choice = plain["body"]["choices"][0]
    assert choice["message"]["content"] == "echo: hello there world"
    assert choice["finish_reason"] == "stop"
    usage = plain["body"]["usage"]
    assert usage["completion_tokens"] == 4
    assert usage["prompt_tokens"] == len("hello there world") // 4 + 4
    assert plain["body"]["model"] == MODEL and plain["body"]["object"] == "chat.completion"
    parts = out["parts"]["response"]["body"]["choices"][0]["message"]["content"]
    assert parts == "echo: multi part"
    short = out["short"]["response"]["body"]
    assert short["choices"][0]["message"]["content"] == "echo: one two"
    assert short["choices"][0]["finish_reason"] == "length"
    assert short["usage"]["completion_tokens"] == 3
    filt = out["filter"]["response"]["body"]["choices"][0]
    assert filt["finish_reason"] == "content_filter" and filt["message"]["content"] is None

    err = by_id(read_jsonl(client, done.error_file_id))
    assert err["e400"]["response"]["status_code"] == 400
    assert err["e400"]["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert err["e500"]["response"]["status_code"] == 500
    assert err["e500"]["response"]["body"]["error"]["type"] == "server_error"

    output_file = client.files.retrieve(done.output_file_id or "")
    assert output_file.purpose == "batch_output" and output_file.status == "processed"
    assert emu.requests_seen() == lines
    assert emu.batch_count_by_metadata("k") == {"v": 1}


def test_output_is_shuffled_and_deterministic() -> None:
    lines = [line(f"r{i}", f"line {i}") for i in range(12)]
    orders = []
    for _ in range(2):
        with OpenAIBatchEmulator(seed=7) as emu:
            client = openai.OpenAI(api_key="sk-test", base_url=emu.base_url, max_retries=0)
            done = run_to_end(client, create(client, lines))
            orders.append([r["custom_id"] for r in read_jsonl(client, done.output_file_id)])
    assert orders[0] == orders[1]
    assert sorted(orders[0]) == sorted(x["custom_id"] for x in lines)
    assert orders[0] != [x["custom_id"] for x in lines]


def test_all_failed_lines_give_only_error_file(client: openai.OpenAI) -> None:
    done = run_to_end(client, create(client, [line("a", "[[error:400]]")]))
    assert done.status == "completed"
    assert done.output_file_id is None and done.error_file_id is not None


@pytest.mark.parametrize(
    ("raw", "code", "line_no"),
    [
        (b'{"custom_id": "a"\n', "invalid_json_line", 1),
        (jsonl([line("a", "x"), line("a", "y")]), "duplicate_custom_id", 2),
        (jsonl([line("a", "x"), {**line("b", "y"), "url": "/v1/embeddings"}]), "invalid_url", 2),
        (jsonl([{**line("a", "x"), "method": "GET"}]), "invalid_method", 1),
        (
            jsonl([line("a", "x"), {**line("b", "y"), "body": {"model": "other", "messages": []}}]),
            "mismatched_model",
            2,
        ),
        (jsonl([{**line("a", "x"), "body": {"messages": []}}]), "missing_required_parameter", 1),
    ],
)
def test_validation_failures(client: openai.OpenAI, raw: bytes, code: str, line_no: int) -> None:
    file_id = upload(client, raw)
    batch = client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    failed = client.batches.retrieve(batch.id)
    assert failed.status == "failed" and failed.failed_at is not None
    assert failed.errors is not None and failed.errors.data
    assert failed.errors.data[0].code == code and failed.errors.data[0].line == line_no
    assert failed.output_file_id is None and failed.error_file_id is None


def test_too_many_lines_fails(emu: OpenAIBatchEmulator, client: openai.OpenAI) -> None:
    emu.max_requests_per_batch = 2
    done = run_to_end(client, create(client, [line(f"r{i}", "x") for i in range(3)]))
    assert done.status == "failed"


def test_fault_fail_validation(emu: OpenAIBatchEmulator, client: openai.OpenAI) -> None:
    emu.faults.fail_validation = 1
    first = run_to_end(client, create(client, [line("a", "x")]))
    assert first.status == "failed"
    assert first.errors is not None and first.errors.data
    assert first.errors.data[0].code == "invalid_request" and first.errors.data[0].line is None
    assert run_to_end(client, create(client, [line("a", "x")])).status == "completed"


def test_fault_expire(emu: OpenAIBatchEmulator, client: openai.OpenAI) -> None:
    emu.faults.expire_batches = 1
    done = run_to_end(client, create(client, [line(f"r{i}", "x") for i in range(5)]))
    assert done.status == "expired" and done.expired_at is not None
    assert {r["custom_id"] for r in read_jsonl(client, done.output_file_id)} == {"r0", "r1"}
    errs = read_jsonl(client, done.error_file_id)
    assert {r["custom_id"] for r in errs} == {"r2", "r3", "r4"}
    assert all(r["response"] is None and r["error"]["code"] == "batch_expired" for r in errs)
    assert done.request_counts is not None
    assert done.request_counts.model_dump() == {"total": 5, "completed": 2, "failed": 3}


def test_cancel_manual_mode(emu: OpenAIBatchEmulator, client: openai.OpenAI) -> None:
    emu.set_step_mode(manual=True)
    lines = [line(f"r{i}", "x") for i in range(4)]
    lines[0] = line("r0", "[[error:400]]")
    batch_id = create(client, lines)
    assert client.batches.retrieve(batch_id).status == "validating"  # no auto-advance
    emu.advance_all()
    assert client.batches.retrieve(batch_id).status == "in_progress"
    cancelling = client.batches.cancel(batch_id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    emu.advance_all()
    done = client.batches.retrieve(batch_id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    assert [r["custom_id"] for r in read_jsonl(client, done.output_file_id)] == ["r1"]
    assert [r["custom_id"] for r in read_jsonl(client, done.error_file_id)] == ["r0"]
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(batch_id)


def test_cancel_auto_mode_next_retrieve(client: openai.OpenAI) -> None:
    batch_id = create(client, [line("a", "x"), line("b", "y")])
    assert client.batches.cancel(batch_id).status == "cancelling"
    done = client.batches.retrieve(batch_id)
    assert done.status == "cancelled"
    assert [r["custom_id"] for r in read_jsonl(client, done.output_file_id)] == ["a"]


def test_polls_per_step() -> None:
    with OpenAIBatchEmulator(polls_per_step=2) as emu:
        client = openai.OpenAI(api_key="sk-test", base_url=emu.base_url, max_retries=0)
        batch_id = create(client, [line("a", "x")])
        seen = [client.batches.retrieve(batch_id).status for _ in range(6)]
    expected = ["validating", "in_progress", "in_progress", "finalizing", "finalizing", "completed"]
    assert seen == expected


def test_rate_limit_and_server_error_faults(
    emu: OpenAIBatchEmulator, client: openai.OpenAI
) -> None:
    file_id = upload(client, jsonl([line("a", "x")]))
    emu.faults.rate_limit_creates = 1
    with pytest.raises(openai.RateLimitError) as info:
        client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    assert info.value.response.headers["retry-after-ms"] == "50"
    assert info.value.response.headers["retry-after"] == "1"
    assert info.value.type == "rate_limit_exceeded"
    assert emu.batches() == []

    # The SDK's own retry honours retry-after-ms and succeeds.
    retrying = openai.OpenAI(api_key="sk-test", base_url=emu.base_url, max_retries=2)
    emu.faults.rate_limit_creates = 1
    batch = retrying.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    assert len(emu.batches()) == 1
    emu.faults.rate_limit_retrieves = 1
    assert retrying.batches.retrieve(batch.id).status == "in_progress"

    emu.faults.rate_limit_retrieves = 1
    with pytest.raises(openai.RateLimitError):
        client.batches.retrieve(batch.id)
    emu.faults.server_error_retrieves = 1
    with pytest.raises(openai.InternalServerError):
        client.batches.retrieve(batch.id)
    assert client.batches.retrieve(batch.id).status == "finalizing"  # faults did not advance


def test_create_retry_after_and_server_error_faults(
    emu: OpenAIBatchEmulator, client: openai.OpenAI
) -> None:
    file_id = upload(client, jsonl([line("a", "x")]))
    emu.faults.rate_limit_creates = 1
    emu.faults.create_retry_after_s = 4
    with pytest.raises(openai.RateLimitError) as info:
        client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    assert info.value.response.headers["retry-after"] == "4"
    assert "retry-after-ms" not in info.value.response.headers
    emu.faults.server_error_creates = 1
    with pytest.raises(openai.InternalServerError) as err:
        client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    assert err.value.type == "server_error"
    assert emu.batches() == []  # neither fault created anything
    client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    assert len(emu.batches()) == 1


def test_create_batch_request_checks(client: openai.OpenAI) -> None:
    batch_file = upload(client, jsonl([line("a", "x")]))
    other = client.files.create(file=("u.jsonl", b"{}\n"), purpose="user_data").id
    bad_calls: list[dict[str, Any]] = [
        {"input_file_id": batch_file, "endpoint": CHAT, "completion_window": "1h"},
        {"input_file_id": batch_file, "endpoint": "/v1/nope", "completion_window": "24h"},
        {"input_file_id": "file-missing", "endpoint": CHAT, "completion_window": "24h"},
        {"input_file_id": other, "endpoint": CHAT, "completion_window": "24h"},
        {"metadata": {f"k{i}": "v" for i in range(17)}},
        {"metadata": {"k" * 65: "v"}},
        {"metadata": {"k": "v" * 513}},
        {"metadata": {"k": 1}},
    ]
    for call in bad_calls:
        kwargs: dict[str, Any] = {
            "input_file_id": batch_file,
            "endpoint": CHAT,
            "completion_window": "24h",
            **call,
        }
        with pytest.raises(openai.BadRequestError) as info:
            client.batches.create(**kwargs)
        assert info.value.status_code == 400, call
    ok = client.batches.create(
        input_file_id=batch_file,
        endpoint=CHAT,
        completion_window="24h",
        metadata={f"k{i}": "v" * 512 for i in range(16)},
    )
    assert ok.status == "validating"


def test_files_endpoints(emu: OpenAIBatchEmulator, client: openai.OpenAI) -> None:
    data = jsonl([line("a", "x")])
    created = client.files.create(file=("in.jsonl", data), purpose="batch")
    assert created.id.startswith("file-") and created.bytes == len(data)
    assert created.filename == "in.jsonl" and created.purpose == "batch"
    assert client.files.retrieve(created.id).id == created.id
    assert client.files.content(created.id).content == data
    deleted = client.files.delete(created.id)
    assert deleted.deleted and deleted.id == created.id
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(created.id)
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("in.jsonl", data), purpose="bogus")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("in.txt", data), purpose="batch")
    emu.max_batch_file_bytes = 10
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("in.jsonl", data), purpose="batch")


def test_list_batches_pagination(emu: OpenAIBatchEmulator, client: openai.OpenAI) -> None:
    file_id = upload(client, jsonl([line("a", "x")]))
    ids = [
        client.batches.create(
            input_file_id=file_id,
            endpoint=CHAT,
            completion_window="24h",
            metadata={"batchd_chunk": str(i % 2)},
        ).id
        for i in range(5)
    ]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # auto-pagination
    last = client.batches.list(limit=100, after=ids[1])
    assert [b.id for b in last.data] == [ids[0]] and not last.has_more
    with pytest.raises(openai.BadRequestError):
        client.batches.list(limit=101)
    assert [b["id"] for b in emu.batches()] == ids
    assert emu.batch_count_by_metadata("batchd_chunk") == {"0": 3, "1": 2}
    assert len(emu.requests_seen()) == 5


def test_synchronous_chat_completions_with_the_flex_tier(
    emu: OpenAIBatchEmulator, client: openai.OpenAI
) -> None:
    msgs: Any = [{"role": "user", "content": "hi there"}]
    flex = client.chat.completions.create(model="gpt-5.4-nano", messages=msgs, service_tier="flex")
    assert flex.choices[0].message.content == "echo: hi there"
    assert flex.service_tier == "flex" and flex.usage is not None
    std = client.chat.completions.create(model=MODEL, messages=msgs)
    assert std.service_tier == "default"
    with pytest.raises(openai.BadRequestError):  # this model has no flex tier
        client.chat.completions.create(model=MODEL, messages=msgs, service_tier="flex")
    emu.faults.shed_flex = 1
    with pytest.raises(openai.RateLimitError) as shed:
        client.chat.completions.create(model="gpt-5.4-nano", messages=msgs, service_tier="flex")
    assert shed.value.code == "resource_unavailable"
    assert shed.value.response.headers["retry-after-ms"] == "50"
    emu.faults.rate_limit_chat = 1
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL, messages=msgs)
    emu.faults.server_error_chat = 1
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=MODEL, messages=msgs)
    assert [(c["tier"], c["status"]) for c in emu.sync_calls] == [
        ("flex", 200),
        ("default", 200),
        ("flex", 400),
        ("flex", 429),
        ("default", 429),
        ("default", 500),
    ]
