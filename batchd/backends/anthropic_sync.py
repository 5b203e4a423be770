"""Claude through the Messages API, one call per line: the deadline guard's realtime tier.

Billed at the list price. The SDK's own retries are off: the guard retries within the
deadline, honouring Retry-After on 429 and backing off on 5xx / 529 (overloaded).
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

from batchd.backends.anthropic_batch import parse_result
from batchd.backends.sync_call import RATE_LIMITED, SERVER, TIMEOUT, SyncReply, retry_after_s
from batchd.config.settings import AnthropicSettings
from batchd.errors import BatchdError
from batchd.outcome import FAILED, Outcome


class AnthropicSync:
    def __init__(self, settings: AnthropicSettings) -> None:
        self.settings = settings
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            if not os.environ.get("ANTHROPIC_API_KEY"):
                raise BatchdError(
                    "ANTHROPIC_API_KEY is not set, so the deadline guard cannot call Claude.",
                    "Export the key and submit again: the run resumes.",
                )
            from anthropic import AsyncAnthropic

            self._client = AsyncAnthropic(max_retries=0)
        return self._client

    async def send(self, params: dict[str, Any], timeout_s: float) -> SyncReply:
        import anthropic
        from anthropic.types import Message

        try:
            resp = await self.client.post(
                "/v1/messages",
                cast_to=Message,
                body=params,
                options={"timeout": timeout_s, "max_retries": 0},
            )
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
            raise BatchdError(
                f"Anthropic refused the API key (HTTP {exc.status_code}).",
                "Check ANTHROPIC_API_KEY, then run the same `batchd submit` again.",
            ) from exc
        except anthropic.APITimeoutError as exc:
            return SyncReply(kind=TIMEOUT, detail=str(exc))
        except anthropic.APIStatusError as exc:
            code = exc.status_code
            if code == 429:
                return SyncReply(
                    kind=RATE_LIMITED, retry_after_s=retry_after_s(exc.response.headers)
                )
            if code >= 500 or code in (408, 409):
                return SyncReply(kind=SERVER, detail=f"HTTP {code}")
            err = (exc.body or {}).get("error", {}) if isinstance(exc.body, dict) else {}
            return SyncReply(
                outcome=Outcome(
                    status=FAILED,
                    error_type=str(err.get("type") or "invalid_request_error"),
                    error_message=f"HTTP {code}: {err.get('message') or exc.message}",
                )
            )
        except anthropic.APIConnectionError as exc:
            return SyncReply(kind=SERVER, detail=str(exc))
        message = resp
        model = str(params.get("model", ""))
        return SyncReply(
            outcome=parse_result(SimpleNamespace(type="succeeded", message=message), model)
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
