"""Translate OutcropError into Bedrock's wire error: status + ``x-amzn-ErrorType`` + ``{"message"}``.

botocore reads the code from the ``x-amzn-ErrorType`` header and raises
``client.exceptions.<Name>`` (see ../shared/reference/bedrock-wire.md, "Error mapping"). The
name and status are the exception class's own (``bedrock_name`` / ``bedrock_status`` in
outcrop/errors.py); tests/api/test_error_mapping.py checks them against botocore's models.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from outcrop import errors


def bedrock_error(exc: errors.OutcropError) -> tuple[str, int]:
    """The Bedrock exception name and HTTP status for ``exc``."""
    return exc.bedrock_name, exc.bedrock_status


def bedrock_error_response(exc: errors.OutcropError, request_id: str) -> JSONResponse:
    body: dict[str, object] = {"message": exc.message}
    headers = {
        "x-amzn-ErrorType": f"{exc.bedrock_name}:",
        "x-amzn-RequestId": request_id,
        **errors.retry_after_headers(exc),
    }
    if isinstance(exc, errors.ModelFailedError):
        body["originalStatusCode"] = exc.original_status_code
        body["resourceName"] = exc.model_id
    return JSONResponse(body, status_code=exc.bedrock_status, headers=headers)
