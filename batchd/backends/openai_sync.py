"""OpenAI calls, one per line (to the chunk's endpoint): the deadline guard's flex and
realtime tiers.

`service_tier: "flex"` is billed at the batch price and may answer 429 (no capacity: shed)
or be slow; the standard tier is billed at the list price. The SDK's own retries are off:
the guard retries within the deadline, honouring Retry-After.
"""

from __future__ import annotations

import fnmatch
import os
from typing import Any

import httpx

from batchd.backends.openai_batch import parse_output_line
from batchd.backends.sync_call import RATE_LIMITED, SERVER, SHED, TIMEOUT, SyncReply, retry_after_s
from batchd.config.settings import OpenAISettings
from batchd.errors import BatchdError
from batchd.requests import CHAT_URL

FLEX = "flex"
STANDARD = "default"


def has_flex(patterns: list[str], model: str) -> bool:
    """Does the model have the flex service tier (`openai.flex_models` patterns)?"""
    return any(fnmatch.fnmatchcase(model, p) for p in patterns)


class OpenAISync:
    def __init__(self, settings: OpenAISettings) -> None:
        self.settings = settings
        self._client: Any = None

    def has_flex(self, model: str) -> bool:
        return has_flex(self.settings.flex_models, model)

    @property
    def client(self) -> Any:
        if self._client is None:
            key = os.environ.get("OPENAI_API_KEY")
            if not key:
                raise BatchdError(
                    "OPENAI_API_KEY is not set, so the deadline guard cannot call OpenAI.",
                    "Export the key and submit again: the run resumes.",
                )
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(api_key=key, max_retries=0)
        return self._client

    async def send(
        self, body: dict[str, Any], flex: bool, timeout_s: float, url: str = CHAT_URL
    ) -> SyncReply:
        """One call to `url` (an OpenAI batch url, e.g. /v1/embeddings)."""
        import openai

        payload = {**body, "service_tier": FLEX if flex else STANDARD}
        try:
            resp = await self.client.post(
                url.removeprefix("/v1"),
                cast_to=httpx.Response,
                body=payload,
                options={"timeout": timeout_s, "max_retries": 0},
            )
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise BatchdError(
                f"OpenAI refused the API key (HTTP {exc.status_code}).",
                "Check OPENAI_API_KEY, then run the same `batchd submit` again.",
            ) from exc
        except openai.APITimeoutError as exc:
            return SyncReply(kind=TIMEOUT, detail=str(exc))
        except openai.APIStatusError as exc:
            code = exc.status_code
            if code == 429:
                wait = retry_after_s(exc.response.headers)
                return SyncReply(kind=SHED if flex else RATE_LIMITED, retry_after_s=wait)
            if code >= 500 or code in (408, 409):
                return SyncReply(kind=SERVER, detail=f"HTTP {code}")
            line = {"custom_id": "", "response": {"status_code": code, "body": exc.body or {}}}
            return SyncReply(outcome=_parse(line, body))
        except openai.APIConnectionError as exc:
            return SyncReply(kind=SERVER, detail=str(exc))
        line = {"custom_id": "", "response": {"status_code": 200, "body": resp.json()}}
        return SyncReply(outcome=_parse(line, body))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


def _parse(line: dict[str, Any], body: dict[str, Any]) -> Any:
    import msgspec

    _, outcome = parse_output_line(msgspec.json.encode(line), str(body.get("model", "")))
    outcome.retryable = False
    return outcome
