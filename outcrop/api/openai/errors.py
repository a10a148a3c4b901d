"""Translate OutcropError into OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from outcrop import errors

# class -> (OpenAI error type, HTTP status, code). Subclasses not listed use their parent's entry.
OPENAI_ERRORS: dict[type[errors.OutcropError], tuple[str, int, str | None]] = {
    errors.OutcropError: ("server_error", 500, None),
    errors.InvalidRequestError: ("invalid_request_error", 400, None),
    errors.ContextLengthError: ("invalid_request_error", 400, "context_length_exceeded"),
    errors.ModelNotChatCapableError: ("invalid_request_error", 400, "model_not_chat_capable"),
    errors.ModelValidationError: ("invalid_request_error", 400, "model_invalid"),
    errors.NotFoundError: ("invalid_request_error", 404, "model_not_found"),
    errors.ConflictError: ("invalid_request_error", 409, "conflict"),
    errors.QuotaExceededError: ("insufficient_quota", 429, "quota_exceeded"),
    errors.AuthenticationError: ("authentication_error", 401, "invalid_api_key"),
    errors.InvalidSignatureError: ("authentication_error", 401, "invalid_api_key"),
    errors.UnrecognizedClientError: ("authentication_error", 401, "invalid_api_key"),
    errors.AccessDeniedError: ("permission_error", 403, None),
    errors.ThrottlingError: ("rate_limit_error", 429, "rate_limit_exceeded"),
    errors.ModelNotReadyError: ("server_error", 503, "model_not_ready"),
    errors.ModelTimeoutError: ("timeout_error", 504, "model_timeout"),
    errors.ModelFailedError: ("server_error", 502, "model_error"),
    errors.ServiceUnavailableError: ("server_error", 503, "overloaded"),
    errors.ConfigError: ("server_error", 500, None),
    errors.InternalError: ("server_error", 500, None),
}


def openai_error(exc: errors.OutcropError) -> tuple[str, int, str | None]:
    for cls in type(exc).__mro__:
        if cls in OPENAI_ERRORS:
            return OPENAI_ERRORS[cls]  # type: ignore[index]
    return OPENAI_ERRORS[errors.OutcropError]


def openai_error_response(exc: errors.OutcropError, request_id: str) -> JSONResponse:
    kind, status, code = openai_error(exc)
    body = {"error": {"message": exc.message, "type": kind, "param": exc.fields.get("param"), "code": code}}
    headers = {"x-request-id": request_id}
    retry_after = getattr(exc, "retry_after_seconds", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return JSONResponse(body, status_code=status, headers=headers)
