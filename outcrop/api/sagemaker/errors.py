"""Translate OutcropError into SageMaker's wire errors (control plane and runtime).

Control plane (JSON 1.1): status + ``{"__type": Name, "message"}`` + ``x-amzn-ErrorType``; botocore's
JSON parser reads the code from ``__type``. Unknown resources are ``ValidationException`` there
("Could not find endpoint ..."), as SageMaker answers.

Runtime (REST-JSON): status + ``x-amzn-ErrorType`` + ``{"Message"}``; botocore raises
``client.exceptions.<Name>`` and fills the modelled members (``ModelError``'s ``OriginalStatusCode``,
``OriginalMessage``) from the body.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from outcrop import errors

JSON_11 = "application/x-amz-json-1.1"

# class -> (SageMaker exception name, HTTP status). Subclasses not listed use their parent's entry;
# tests/api/test_sagemaker_errors.py asserts every class resolves, and runtime names exist in botocore.
CONTROL_ERRORS: dict[type[errors.OutcropError], tuple[str, int]] = {
    errors.OutcropError: ("InternalFailure", 500),
    errors.InvalidRequestError: ("ValidationException", 400),
    errors.ModelValidationError: ("ValidationException", 400),
    errors.NotFoundError: ("ValidationException", 400),
    errors.ConflictError: ("ResourceInUse", 400),
    errors.QuotaExceededError: ("ResourceLimitExceeded", 400),
    errors.AuthenticationError: ("UnrecognizedClientException", 403),
    errors.AccessDeniedError: ("AccessDeniedException", 400),
    errors.ThrottlingError: ("ThrottlingException", 400),
    errors.ModelNotReadyError: ("ThrottlingException", 400),
    errors.ModelTimeoutError: ("InternalFailure", 500),
    errors.ModelFailedError: ("InternalFailure", 500),
    errors.ServiceUnavailableError: ("ServiceUnavailable", 503),
    errors.ConfigError: ("InternalFailure", 500),
    errors.InternalError: ("InternalFailure", 500),
}
RUNTIME_ERRORS: dict[type[errors.OutcropError], tuple[str, int]] = {
    errors.OutcropError: ("InternalFailure", 500),
    errors.InvalidRequestError: ("ValidationError", 400),
    errors.ModelValidationError: ("ValidationError", 400),
    errors.NotFoundError: ("ValidationError", 400),
    errors.ConflictError: ("ValidationError", 400),
    errors.QuotaExceededError: ("ValidationError", 400),
    errors.AuthenticationError: ("UnrecognizedClientException", 403),
    errors.AccessDeniedError: ("AccessDeniedException", 403),
    # Not in the runtime model, but in botocore's list of throttling codes, so boto3 backs off.
    errors.ThrottlingError: ("ThrottlingException", 400),
    errors.ModelNotReadyError: ("ModelNotReadyException", 429),
    errors.ModelTimeoutError: ("ModelError", 424),
    errors.ModelFailedError: ("ModelError", 424),
    errors.ServiceUnavailableError: ("ServiceUnavailable", 503),
    errors.ConfigError: ("InternalFailure", 500),
    errors.InternalError: ("InternalFailure", 500),
}


def _lookup(
    table: dict[type[errors.OutcropError], tuple[str, int]], exc: errors.OutcropError
) -> tuple[str, int]:
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]  # type: ignore[index]
    return table[errors.OutcropError]


def control_error(exc: errors.OutcropError) -> tuple[str, int]:
    return _lookup(CONTROL_ERRORS, exc)


def runtime_error(exc: errors.OutcropError) -> tuple[str, int]:
    return _lookup(RUNTIME_ERRORS, exc)


def _headers(name: str, request_id: str, exc: errors.OutcropError) -> dict[str, str]:
    headers = {"x-amzn-ErrorType": f"{name}:", "x-amzn-RequestId": request_id}
    retry_after = getattr(exc, "retry_after_seconds", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return headers


def control_error_response(exc: errors.OutcropError, request_id: str) -> JSONResponse:
    name, status = control_error(exc)
    return JSONResponse(
        {"__type": name, "message": exc.message},
        status_code=status,
        headers=_headers(name, request_id, exc),
        media_type=JSON_11,
    )


def runtime_error_response(exc: errors.OutcropError, request_id: str) -> JSONResponse:
    name, status = runtime_error(exc)
    body: dict[str, Any] = {"Message": exc.message}
    if name == "ModelError":
        original = getattr(
            exc, "original_status_code", 408 if isinstance(exc, errors.ModelTimeoutError) else 500
        )
        body["OriginalStatusCode"] = original
        body["OriginalMessage"] = exc.message
    return JSONResponse(body, status_code=status, headers=_headers(name, request_id, exc))
