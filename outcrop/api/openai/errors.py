"""Translate OutcropError into OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``.

The type, status and code are the exception class's own (``openai_type`` / ``openai_status`` /
``openai_code`` in outcrop/errors.py), shared with the copy's worker.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from outcrop import errors


def openai_error(exc: errors.OutcropError) -> tuple[str, int, str | None]:
    """The OpenAI error type, HTTP status and code for ``exc``."""
    return exc.openai_type, exc.openai_status, errors.openai_error_body(exc)["error"]["code"]


def openai_error_response(exc: errors.OutcropError, request_id: str) -> JSONResponse:
    headers = {"x-request-id": request_id, **errors.retry_after_headers(exc)}
    return JSONResponse(errors.openai_error_body(exc), status_code=exc.openai_status, headers=headers)
