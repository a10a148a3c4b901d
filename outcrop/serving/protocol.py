"""Typed wire messages between the router and copies (the copy contract's parts the router reads)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Lenient(BaseModel):
    # Copies may be vLLM, SGLang or Outcrop's worker: read what we need, keep the rest.
    model_config = ConfigDict(extra="allow")


class CopyErrorBody(_Lenient):
    message: str = ""
    type: str | None = None
    param: str | None = None
    code: Any = None


class CopyErrorResponse(_Lenient):
    """OpenAI's error object, as a copy answers a failed request (or sends as an SSE event)."""

    error: CopyErrorBody

    @classmethod
    def parse(cls, payload: Any) -> CopyErrorResponse | None:
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            try:
                return cls.model_validate(payload)
            except ValueError:
                return None
        if isinstance(payload, dict):  # some servers' flat shapes: {"message"}, FastAPI's {"detail"}
            for key in ("message", "detail"):
                if isinstance(payload.get(key), str):
                    return cls(error=CopyErrorBody(message=payload[key]))
        return None


class CopyHealth(_Lenient):
    """``GET /health`` of Outcrop's worker; other servers may answer an empty body."""

    status: str | None = None
    model: str | None = None
    detail: str | None = None
