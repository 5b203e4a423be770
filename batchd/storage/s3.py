"""S3 access: one boto3 client per process, streamed reads, multipart writes, clear errors.

Credentials come from boto3's standard chain only (environment, shared config/profile,
instance or task role); batchd never stores them. `[s3] endpoint_url` points the client
at an S3-compatible store (MinIO, R2, moto). Every S3 failure becomes a BatchdError that
names the bucket and key and says what to check.
"""

from __future__ import annotations

import gzip
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from batchd.config.settings import S3Settings
from batchd.errors import BatchdError

SCHEME = "s3://"
_GZIP_MAGIC = b"\x1f\x8b"


def is_s3(uri: str) -> bool:
    return uri.startswith(SCHEME)


def split(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> ("bucket", "some/key")."""
    if not is_s3(uri):
        raise BatchdError(f"{uri!r} is not an s3:// URI.", "Write it as s3://bucket/key.")
    bucket, _, key = uri[len(SCHEME) :].partition("/")
    if not bucket:
        raise BatchdError(f"{uri!r} names no bucket.", "Write it as s3://bucket/key.")
    return bucket, key


def join(base: str, *parts: str) -> str:
    """Join a local path or an s3:// prefix with relative parts (no Path() on URIs)."""
    if not is_s3(base):
        return str(Path(base).joinpath(*parts))
    out = base.rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out


def explain(exc: BaseException, uri: str, action: str) -> BatchdError:
    """Turn a boto3/botocore failure into one line that says what to check."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return BatchdError(
            f"No AWS credentials to {action} {uri}.",
            "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or run where an "
            "instance/task role provides them.",
        )
    if isinstance(exc, EndpointConnectionError):
        return BatchdError(
            f"Cannot reach the S3 endpoint to {action} {uri} ({exc}).",
            "Check the network and BATCHD_S3_ENDPOINT_URL / BATCHD_S3_REGION.",
        )
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        bucket = split(uri)[0] if is_s3(uri) else uri
        if code == "NoSuchBucket":
            return BatchdError(
                f"S3 bucket {bucket} does not exist ({action} {uri}).",
                "Check the bucket name, BATCHD_S3_REGION and BATCHD_S3_ENDPOINT_URL.",
            )
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return BatchdError(
                f"No S3 object {uri}.", "Check the key (`aws s3 ls` the prefix) and the bucket."
            )
        if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "301") or status == 301:
            return BatchdError(
                f"S3 bucket {bucket} is in another region ({action} {uri}).",
                "Set BATCHD_S3_REGION (or AWS_REGION) to the bucket's region.",
            )
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
            return BatchdError(
                f"S3 refused the credentials to {action} {uri} ({code}).",
                "Check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or the "
                "profile in use.",
            )
        if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
            return BatchdError(
                f"Access denied to {action} {uri}.",
                "Check that the credentials' IAM policy allows it (s3:GetObject, s3:PutObject, "
                "s3:ListBucket, s3:DeleteObject on this bucket and prefix).",
            )
        return BatchdError(
            f"S3 failed to {action} {uri}: {code or status} {err.get('Message', '')}.".strip(),
            "Check the bucket, credentials, permissions and region.",
        )
    return BatchdError(f"S3 failed to {action} {uri}: {exc}.", "Check the endpoint and retry.")


class _Prefixed(io.RawIOBase):
    """A readable stream: some bytes already read (to sniff the format), then the rest."""

    def __init__(self, head: bytes, body: Any) -> None:
        self._head = head
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf)
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


class S3:
    """A boto3 S3 client (thread-safe) plus the few operations batchd needs."""

    def __init__(self, settings: S3Settings) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.settings = settings
        session = boto3.session.Session()
        self.client: Any = session.client(
            "s3",
            endpoint_url=settings.endpoint_url or None,
            region_name=settings.region or None,
            config=Config(retries={"max_attempts": settings.max_attempts, "mode": "standard"}),
        )
        chunk = settings.multipart_chunk_bytes
        self.transfer = TransferConfig(
            multipart_threshold=chunk, multipart_chunksize=chunk, max_concurrency=4
        )

    def _call(self, uri: str, action: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except BatchdError:
            raise
        except Exception as exc:
            raise explain(exc, uri, action) from exc

    def head(self, uri: str) -> dict[str, Any] | None:
        """The object's metadata (ContentLength, ETag, ...), or None when there is none."""
        from botocore.exceptions import ClientError

        bucket, key = split(uri)
        try:
            return cast(dict[str, Any], self.client.head_object(Bucket=bucket, Key=key))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise explain(exc, uri, "read") from exc
        except Exception as exc:
            raise explain(exc, uri, "read") from exc

    def open(self, uri: str, decompress: bool = False) -> BinaryIO:
        """Stream the object (never whole in memory); gzip is undone when `decompress`."""
        bucket, key = split(uri)
        resp = self._call(uri, "read", self.client.get_object, Bucket=bucket, Key=key)
        body = resp["Body"]
        if not decompress:
            return cast(BinaryIO, io.BufferedReader(_Prefixed(b"", body), 1 << 20))
        head = body.read(2)
        raw = io.BufferedReader(_Prefixed(head, body), 1 << 20)
        if key.endswith(".gz") or head == _GZIP_MAGIC:
            return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb"))
        return cast(BinaryIO, raw)

    def read_range(self, uri: str, n_bytes: int) -> bytes:
        bucket, key = split(uri)
        resp = self._call(
            uri, "read", self.client.get_object, Bucket=bucket, Key=key, Range=f"bytes=0-{n_bytes}"
        )
        return cast(bytes, resp["Body"].read())

    def upload_file(self, path: Path, uri: str) -> None:
        """Upload in parts (multipart above the chunk size): the object appears complete or not
        at all; a failed upload is aborted, so no parts linger."""
        bucket, key = split(uri)
        self._call(
            uri,
            "write",
            self.client.upload_file,
            Filename=str(path),
            Bucket=bucket,
            Key=key,
            Config=self.transfer,
        )

    def download_file(self, uri: str, path: Path) -> None:
        bucket, key = split(uri)
        self._call(
            uri,
            "read",
            self.client.download_file,
            Bucket=bucket,
            Key=key,
            Filename=str(path),
            Config=self.transfer,
        )

    def put_bytes(self, uri: str, data: bytes, content_type: str = "") -> None:
        bucket, key = split(uri)
        extra = {"ContentType": content_type} if content_type else {}
        self._call(uri, "write", self.client.put_object, Bucket=bucket, Key=key, Body=data, **extra)

    def copy(self, src_uri: str, dst_uri: str, if_match: str = "") -> None:
        """Server-side copy (multipart for big objects); `if_match` pins the source ETag."""
        sb, sk = split(src_uri)
        db, dk = split(dst_uri)
        extra = {"CopySourceIfMatch": if_match} if if_match else {}
        self._call(
            src_uri,
            "copy",
            self.client.copy,
            CopySource={"Bucket": sb, "Key": sk},
            Bucket=db,
            Key=dk,
            ExtraArgs=extra,
            Config=self.transfer,
        )

    def delete(self, uri: str) -> None:
        bucket, key = split(uri)
        self._call(uri, "delete", self.client.delete_object, Bucket=bucket, Key=key)

    def move(self, src_uri: str, dst_uri: str, if_match: str = "") -> None:
        self.copy(src_uri, dst_uri, if_match)
        self.delete(src_uri)

    def list(self, prefix_uri: str, delimiter: str = "") -> Iterator[dict[str, Any]]:
        """Objects under the prefix (only its direct children with delimiter='/')."""
        bucket, prefix = split(prefix_uri)
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, Delimiter=delimiter
        )
        try:
            for page in pages:
                yield from page.get("Contents", [])
        except BatchdError:
            raise
        except Exception as exc:
            raise explain(exc, prefix_uri, "list") from exc

    def uploads_in_progress(self, prefix_uri: str) -> set[str]:
        """Keys with a multipart upload started and not completed (a file still being written)."""
        bucket, prefix = split(prefix_uri)
        resp = self._call(
            prefix_uri, "list", self.client.list_multipart_uploads, Bucket=bucket, Prefix=prefix
        )
        return {u["Key"] for u in resp.get("Uploads", [])}

    def delete_prefix(self, prefix_uri: str) -> None:
        bucket, _ = split(prefix_uri)
        keys = [{"Key": o["Key"]} for o in self.list(prefix_uri)]
        for i in range(0, len(keys), 1000):
            self._call(
                prefix_uri,
                "delete",
                self.client.delete_objects,
                Bucket=bucket,
                Delete={"Objects": keys[i : i + 1000], "Quiet": True},
            )


_clients: dict[bytes, S3] = {}
_lock = threading.Lock()


def s3_for(settings: S3Settings) -> S3:
    """One client per S3 settings in this process (boto3 clients are thread-safe)."""
    import msgspec

    key = msgspec.json.encode(settings)
    with _lock:
        if key not in _clients:
            _clients[key] = S3(settings)
        return _clients[key]
