"""S3 sources, outputs and workdir against moto in server mode (a real HTTP endpoint)."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batchd.config.settings import S3Settings
from batchd.storage.blobs import S3Blobs
from batchd.storage.s3 import S3
from tests.support.helpers import Batchd, chat
from tests.support.s3_server import CREDENTIALS, S3Server

MIB = 1024 * 1024


def _jsonl(lines: list[object]) -> bytes:
    return b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines)


def test_submit_from_s3_gz_to_s3_output_then_results_and_report(
    batchd: Batchd, s3_server: S3Server
) -> None:
    bucket = s3_server.new_bucket()
    client = s3_server.client()
    lines = [chat(f"q{i}", f"question {i}") for i in range(5)] + [b"{not json"]
    client.put_object(Bucket=bucket, Key="in/jobs.jsonl.gz", Body=gzip.compress(_jsonl(lines)))
    env = s3_server.env()
    proc = batchd.run(
        "submit", f"s3://{bucket}/in/jobs.jsonl.gz", "--output", f"s3://{bucket}/results/", **env
    )
    assert proc.returncode == 3, proc.stderr  # one invalid line: finished with failures
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    run_id = next(k.split("/")[1] for k in keys if k.endswith("results.parquet"))
    assert {f"results/{run_id}/results.parquet", f"results/{run_id}/costs.parquet"} <= keys
    body = client.get_object(Bucket=bucket, Key=f"results/{run_id}/results.parquet")["Body"]
    rows = pq.read_table(io.BytesIO(body.read())).to_pylist()
    assert [r["custom_id"] for r in rows] == [f"q{i}" for i in range(5)] + ["line-6"]
    assert [r["status"] for r in rows] == ["succeeded"] * 5 + ["invalid"]
    assert f"s3://{bucket}/results/{run_id}/results.parquet" in proc.stdout

    res = batchd.run("results", run_id, "--format", "jsonl", **env)
    assert res.returncode == 0, res.stderr
    assert [json.loads(x)["status"] for x in res.stdout.splitlines()].count("succeeded") == 5
    path = batchd.run("results", run_id, "--format", "path", **env)
    assert path.stdout.strip() == f"s3://{bucket}/results/{run_id}/results.parquet"
    report = batchd.run("report", run_id, **env)
    assert report.returncode == 0 and "gpt-5.4-nano" in report.stdout, report.stderr
    # Submitting the same S3 object again answers from the cache (known by ETag, not re-read).
    again = batchd.run(
        "submit", f"s3://{bucket}/in/jobs.jsonl.gz", "--output", f"s3://{bucket}/results/", **env
    )
    assert again.returncode == 3 and f"{run_id}-2" in again.stderr
    # No temp files are left behind, and the secret key is nowhere in output or state.
    assert not list((batchd.home / "tmp").glob(".s3-*"))
    secret = CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    for blob in (
        proc.stdout,
        proc.stderr,
        (batchd.home / "state.db").read_bytes().decode("latin1"),
    ):
        assert secret not in blob


def test_s3_errors_name_the_bucket_and_what_to_check(batchd: Batchd, s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    env = s3_server.env()
    missing_bucket = batchd.run("submit", "s3://no-such-bucket-x1/a.jsonl", **env)
    assert missing_bucket.returncode == 1
    assert "no-such-bucket-x1" in missing_bucket.stderr
    assert "Traceback" not in missing_bucket.stderr
    missing_key = batchd.run("submit", f"s3://{bucket}/nope.jsonl", **env)
    assert missing_key.returncode == 1
    assert (
        f"s3://{bucket}/nope.jsonl" in missing_key.stderr and "Check the key" in missing_key.stderr
    )
    no_creds = {
        "BATCHD_S3_ENDPOINT_URL": s3_server.url,
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SHARED_CREDENTIALS_FILE": str(batchd.tmp / "none"),
        "AWS_CONFIG_FILE": str(batchd.tmp / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env_wo = {k: v for k, v in batchd.env.items() if not k.startswith("AWS_")}
    proc = subprocess.run(
        batchd.argv("submit", f"s3://{bucket}/a.jsonl"),
        env={**env_wo, **{k: v for k, v in no_creds.items() if v}},
        cwd=batchd.tmp,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "No AWS credentials" in proc.stderr and "AWS_ACCESS_KEY_ID" in proc.stderr


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3:
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    return S3(S3Settings(endpoint_url=s3_server.url, multipart_chunk_bytes=5 * MIB))


def test_outputs_appear_only_complete_in_parts(s3: S3, s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    blobs = S3Blobs(s3, f"s3://{bucket}/out/run-1", tmp_path / "tmp")
    with blobs.writer("big.bin") as f:
        for i in range(12):
            f.write(bytes([i]) * MIB)  # 12 MiB: three 5 MiB parts
    head = s3.client.head_object(Bucket=bucket, Key="out/run-1/big.bin")
    assert head["ContentLength"] == 12 * MIB and head["ETag"].strip('"').endswith("-3")
    with pytest.raises(RuntimeError), blobs.writer("broken.bin") as f:
        f.write(b"x" * 7 * MIB)
        raise RuntimeError("the writer dies half-way")
    assert not blobs.exists("broken.bin")
    assert s3.uploads_in_progress(f"s3://{bucket}/") == set()
    assert blobs.list("") == ["big.bin"]
    assert not list((tmp_path / "tmp").iterdir())  # temp files gone either way


STREAM_SCRIPT = """
import sys, tracemalloc
from batchd.intake.lines import iter_lines
from batchd.storage.s3 import S3
from batchd.config.settings import S3Settings
s3 = S3(S3Settings(endpoint_url=sys.argv[1]))
tracemalloc.start()
n = 0
with s3.open(sys.argv[2], decompress=True) as f:
    for block in iter_lines(f):
        n += len(block)
print(n, tracemalloc.get_traced_memory()[1])
"""


def test_a_large_s3_source_streams_in_bounded_memory(
    s3: S3, s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = s3_server.new_bucket()
    line = json.dumps(chat("x", "y" * 200)).encode() + b"\n"
    n_lines = (64 * MIB) // len(line)
    big = tmp_path / "big.jsonl.gz"
    with gzip.open(big, "wb", compresslevel=1) as f:
        for _ in range(n_lines // 1000):
            f.write(line * 1000)
    s3.upload_file(big, f"s3://{bucket}/big.jsonl.gz")
    proc = subprocess.run(
        [sys.executable, "-c", STREAM_SCRIPT, s3_server.url, f"s3://{bucket}/big.jsonl.gz"],
        env={**os.environ, **CREDENTIALS},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    count, peak_bytes = map(int, proc.stdout.split())
    assert count == (n_lines // 1000) * 1000
    assert peak_bytes < 24 * MIB, peak_bytes  # 64 MiB of lines, never held whole
