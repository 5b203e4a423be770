"""The S3 drop folder against moto in server mode: racing watchers, bad files, uploads in
progress, and the coordinators' drop cron with an S3 workdir (real redis-server)."""

from __future__ import annotations

import gzip
import io
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from batchd.config.settings import load_settings
from batchd.run.services import open_services
from batchd.triggers.drop_folder import safe_name, watch_once
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat
from tests.support.s3_server import CREDENTIALS, S3Server
from tests.support.stack import Stack


def _jsonl(lines: list[Any]) -> bytes:
    return b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines)


def _keys(client: Any, bucket: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def _report(client: Any, bucket: str, key: str) -> dict[str, Any]:
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())  # type: ignore[no-any-return]


def _errors(client: Any, bucket: str, report: dict[str, Any]) -> set[str]:
    key = report["results"][len(f"s3://{bucket}/") :]
    rows = pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read()))
    return {r["error_message"] for r in rows.to_pylist()}


def _sent(emulator: OpenAIBatchEmulator) -> Counter[str]:
    return Counter(r["body"]["messages"][0]["content"] for r in emulator.requests_seen())


def test_two_racing_watchers_run_each_dropped_file_once(
    batchd: Batchd, s3_server: S3Server, emulator: OpenAIBatchEmulator
) -> None:
    bucket, client = s3_server.new_bucket(), s3_server.client()
    names = [f"drop-{i}.jsonl" for i in range(4)]
    for i, name in enumerate(names):
        lines = [chat(f"f{i}-{j}", f"file {i} line {j}") for j in range(3)]
        client.put_object(Bucket=bucket, Key=f"inbox/{name}", Body=_jsonl(lines))
    args = ("watch", f"s3://{bucket}/inbox/", "--output", f"s3://{bucket}/results/", "--once")
    env = s3_server.env()
    watchers = [batchd.popen(*args, **env) for _ in range(2)]
    outs = [w.communicate(timeout=120) for w in watchers]
    assert [w.returncode for w in watchers] == [0, 0], outs
    keys = _keys(client, bucket)
    assert {k for k in keys if k.startswith("inbox/done/")} == {
        f"inbox/done/{n}{suffix}" for n in names for suffix in ("", ".report.json")
    }
    assert not [k for k in keys if k.startswith(("inbox/processing/", "inbox/failed/"))]
    assert not [k for k in keys if k.startswith("inbox/drop-")]  # nothing left in the inbox
    run_ids = set()
    for i, name in enumerate(names):
        report = _report(client, bucket, f"inbox/done/{name}.report.json")
        assert report["counts"] == {"succeeded": 3} and report["outcome"] == "succeeded"
        assert report["source"] == f"s3://{bucket}/inbox/{name}" and report["cost_usd"] > 0
        results_key = report["results"][len(f"s3://{bucket}/") :]
        assert results_key in keys
        body = client.get_object(Bucket=bucket, Key=results_key)["Body"].read()
        rows = pq.read_table(io.BytesIO(body)).to_pylist()
        assert [r["custom_id"] for r in rows] == [f"f{i}-{j}" for j in range(3)]
        run_ids.add(report["run_id"])
    assert len(run_ids) == 4
    sent = _sent(emulator)
    assert len(sent) == 12 and set(sent.values()) == {1}, sent  # every line sent exactly once
    # Both watchers took part or one took all; either way each file has one run.
    assert sum(o[1].count("Started run") for o in outs) == 4


def test_bad_files_go_to_failed_with_the_reason_and_never_escape_the_inbox(
    batchd: Batchd, s3_server: S3Server
) -> None:
    bucket, client = s3_server.new_bucket(), s3_server.client()
    good = [chat("ok-1", "fine"), b"{broken json", chat("ok-2", "also fine")]
    drops: dict[str, bytes] = {
        "table.csv": b"id,prompt\n1,hello\n",
        "big.jsonl": _jsonl([chat(f"b{i}", "x" * 200) for i in range(20)]),
        "..sneaky.jsonl": _jsonl([chat("s", "s")]),
        "we ird;$(rm -rf).jsonl": _jsonl([chat("w", "w")]),
        "binary.jsonl.gz": b"\x1f\x8b\x08\x00garbage",
        "mixed.jsonl.gz": gzip.compress(_jsonl(good)),
    }
    for name, body in drops.items():
        client.put_object(Bucket=bucket, Key=f"inbox/{name}", Body=body)
    client.put_object(Bucket=bucket, Key="inbox/sub/../../escape.jsonl", Body=b"{}\n")
    proc = batchd.run(
        "watch",
        f"s3://{bucket}/inbox/",
        "--output",
        f"s3://{bucket}/results/",
        "--once",
        BATCHD_S3_MAX_DROP_BYTES="2000",
        **s3_server.env(),
    )
    assert proc.returncode == 0, proc.stderr
    keys = _keys(client, bucket)
    assert all(k.startswith(("inbox/", "results/")) for k in keys), keys

    def reason(name: str) -> str:
        return str(_report(client, bucket, f"inbox/failed/{name}.report.json")["error"])

    assert "not JSONL" in reason("table.csv") and "inbox/failed/table.csv" in keys
    assert "over the limit s3.max_drop_bytes=2,000" in reason("big.jsonl")
    assert "not JSONL" in reason("binary.jsonl.gz")
    for odd in ("..sneaky.jsonl", "we ird;$(rm -rf).jsonl"):
        safe = safe_name(odd)
        assert safe != odd and "/" not in safe and ".." not in safe
        assert "odd file name" in reason(safe) and f"inbox/failed/{safe}" in keys
    # A JSONL file with a bad line runs: the line is an `invalid` row, reported, not lost.
    mixed = _report(client, bucket, "inbox/done/mixed.jsonl.gz.report.json")
    assert mixed["counts"] == {"succeeded": 2, "invalid": 1}
    assert mixed["errors"] and mixed["outcome"] == "finished_with_failures"
    assert "inbox/sub/../../escape.jsonl" in keys  # not a direct child: never taken
    leftover = {k for k in keys if k.count("/") == 1 and k.startswith("inbox/")}
    assert leftover == set(), leftover


@pytest.fixture
def svc(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    settings = load_settings(
        environ={"BATCHD_HOME": str(tmp_path / "home"), **s3_server.env()},
        config_path=None,
    )
    s = open_services(settings)
    yield s
    s.close()


def test_a_file_still_being_uploaded_is_not_taken(svc: Any, s3_server: S3Server) -> None:
    bucket, client = s3_server.new_bucket(), s3_server.client()
    inbox = f"s3://{bucket}/inbox/"
    # A new file whose multipart upload is not complete: S3 does not list it yet.
    up = client.create_multipart_upload(Bucket=bucket, Key="inbox/new.jsonl")
    part = client.upload_part(
        Bucket=bucket,
        Key="inbox/new.jsonl",
        UploadId=up["UploadId"],
        PartNumber=1,
        Body=_jsonl([chat("n1", "new")]),
    )
    # A file being replaced: the old object is listed, but an upload to its key is under way.
    client.put_object(Bucket=bucket, Key="inbox/old.jsonl", Body=_jsonl([chat("o1", "old")]))
    up2 = client.create_multipart_upload(Bucket=bucket, Key="inbox/old.jsonl")
    assert watch_once(svc, inbox, f"s3://{bucket}/results/", {}) == []
    assert _keys(client, bucket) == {"inbox/old.jsonl"}
    client.complete_multipart_upload(
        Bucket=bucket,
        Key="inbox/new.jsonl",
        UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )
    client.abort_multipart_upload(Bucket=bucket, Key="inbox/old.jsonl", UploadId=up2["UploadId"])
    runs = watch_once(svc, inbox, f"s3://{bucket}/results/", {})
    assert sorted(r.options["drop"]["name"] for r in runs) == ["new.jsonl", "old.jsonl"]
    assert {k for k in _keys(client, bucket) if k.startswith("inbox/processing/")} == {
        "inbox/processing/new.jsonl",
        "inbox/processing/old.jsonl",
    }
    assert watch_once(svc, inbox, f"s3://{bucket}/results/", {}) == []  # claimed: not again


def test_a_restarted_watcher_resumes_what_a_killed_one_left_in_processing(
    svc: Any, s3_server: S3Server, batchd: Batchd
) -> None:
    bucket, client = s3_server.new_bucket(), s3_server.client()
    client.put_object(Bucket=bucket, Key="inbox/left.jsonl", Body=_jsonl([chat("l1", "left")]))
    # A watcher claims the file and starts its run, then dies before driving it.
    svc.settings.home = str(batchd.home)
    first = open_services(
        load_settings(environ={**s3_server.env(), "BATCHD_HOME": str(batchd.home)})
    )
    try:
        (run,) = watch_once(first, f"s3://{bucket}/inbox/", f"s3://{bucket}/results/", {})
    finally:
        first.close()
    assert _keys(client, bucket) == {"inbox/processing/left.jsonl"}
    proc = batchd.run("watch", f"s3://{bucket}/inbox/", "--once", **s3_server.env())
    assert proc.returncode == 0, proc.stderr
    assert f"Resuming run {run.run_id}" in proc.stderr
    report = _report(client, bucket, "inbox/done/left.jsonl.report.json")
    assert report["run_id"] == run.run_id and report["counts"] == {"succeeded": 1}


def test_coordinators_run_the_drop_folder_with_an_s3_workdir(
    tmp_path: Path, emulator: OpenAIBatchEmulator, s3_server: S3Server
) -> None:
    bucket, client = s3_server.new_bucket(), s3_server.client()
    stack = Stack(tmp_path, emulator)
    stack.env.update(
        s3_server.env(),
        BATCHD_WORKDIR=f"s3://{bucket}/work/",
        BATCHD_S3_INBOX=f"s3://{bucket}/inbox/",
        BATCHD_S3_INBOX_OUTPUT=f"s3://{bucket}/results/",
        BATCHD_S3_WATCH_INTERVAL_S="0.2",
    )
    try:
        for _ in range(2):  # two coordinators race for the same inbox through Redis claims
            stack.start_coordinator()
        for i in range(3):
            lines = [chat(f"d{i}-{j}", f"dist {i} line {j}") for j in range(2)]
            client.put_object(Bucket=bucket, Key=f"inbox/d{i}.jsonl", Body=_jsonl(lines))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            done = {k for k in _keys(client, bucket) if k.endswith(".report.json")}
            if len(done) == 3:
                break
            time.sleep(0.3)
        keys = _keys(client, bucket)
        assert {f"inbox/done/d{i}.jsonl.report.json" for i in range(3)} <= keys, sorted(keys)
        for i in range(3):
            report = _report(client, bucket, f"inbox/done/d{i}.jsonl.report.json")
            assert report["counts"] == {"succeeded": 2}, _errors(client, bucket, report)
            assert f"work/{report['run_id']}/lines.parquet" in keys  # bulk data on S3
            assert f"results/{report['run_id']}/results.parquet" in keys
        sent = _sent(emulator)
        assert len(sent) == 6 and set(sent.values()) == {1}, sent
        assert not (tmp_path / "work").exists()
    finally:
        stack.stop()
